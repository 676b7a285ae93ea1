"""Objects as the API server holds them, a router process pointed at the fake API server, and traffic.

    api.create("onlineendpoints", endpoint("demo", {"blue": 100}))
    api.create("endpointslices", endpoint_slice("demo-blue-0", "demo-blue", model.port))
    router = start_kube_router(kubeconfig)
    router.wait_ready()
"""

from __future__ import annotations

import base64
import http.client
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import ManagedProcess, start_process

API = "inference-router.dev/v1alpha1"
Obj = dict[str, Any]


def endpoint(name: str, traffic: dict[str, int], *, keys: str | None = None, namespace: str = "default",
             **spec: Any) -> Obj:
    return {"apiVersion": API, "kind": "OnlineEndpoint", "metadata": {"name": name, "namespace": namespace},
            "spec": {"authMode": "key", "keysSecretRef": keys or f"{name}-keys", "traffic": traffic, **spec}}


def deployment(name: str, endpoint_name: str, service: str, *, port: int | str = "http",
               namespace: str = "default", timeout_ms: int = 5000) -> Obj:
    return {"apiVersion": API, "kind": "OnlineDeployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"endpointName": endpoint_name, "backend": {"service": {"name": service, "port": port}},
                     "scoringRoute": "/score",
                     "requestSettings": {"requestTimeoutMs": timeout_ms, "maxConcurrentRequestsPerInstance": 8,
                                         "maxQueueWaitMs": 2000}}}


def endpoint_slice(name: str, service: str, port: int, *, address: str = "127.0.0.1", ready: bool = True,
                   terminating: bool = False, namespace: str = "default", port_name: str = "http") -> Obj:
    """One slice with one endpoint: replicas on one host differ by port, and a slice has one port set."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv6" if ":" in address else "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address],
                           "conditions": {"ready": ready, "serving": ready, "terminating": terminating}}]}


def secret(name: str, *, namespace: str = "default", **keys: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> float:
    """Seconds until `predicate()` is true; AssertionError naming `what` after `timeout`."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


@dataclass
class KubeRouter:
    process: ManagedProcess
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def score_url(self, endpoint: str) -> str:
        return f"{self.url}/api/v1/endpoint/{endpoint}/score"

    def ready(self) -> bool:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=5).status_code == 200

    def wait_ready(self, timeout: float = 10) -> float:
        return wait_until(self.ready, timeout, "/readyz answers 200", interval=0.05)

    def score(self, endpoint: str, key: str, **headers: str) -> httpx.Response:
        return httpx.post(self.score_url(endpoint), content=b"{}", timeout=10,
                          headers={"Authorization": f"Bearer {key}", **headers})

    def stop(self) -> int:
        return self.process.stop()


def start_kube_router(kubeconfig: Path, *extra: str) -> KubeRouter:
    process = start_process([sys.executable, "-m", "router.cli", "serve", "--kubernetes", "--kubeconfig",
                             str(kubeconfig), "--allow-insecure-connections", "--host", "127.0.0.1",
                             "--port", "0", "--admin-port", "0", *extra], timeout=30)
    return KubeRouter(process, int(process.ready["port"]), int(process.ready["admin_port"]))


class Traffic:
    """Steady keep-alive requests to one endpoint in a thread, bounded in time; every answer is kept."""

    def __init__(self, router: KubeRouter, endpoint: str, key: str, limit_s: float = 80) -> None:
        self.router, self.endpoint, self.key = router, endpoint, key
        self.answers: list[tuple[float, int, str]] = []  # time, status, model name
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        path = f"/api/v1/endpoint/{self.endpoint}/score"
        conn = http.client.HTTPConnection("127.0.0.1", self.router.port, timeout=10)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn.request("POST", path, body=b"{}", headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.router.port, timeout=10)
                continue
            name = body.split(b'"name": "', 1)[-1].split(b'"', 1)[0].decode()
            self.answers.append((time.monotonic(), response.status, name))
            if response.status != 200:
                self.failures.append(f"{response.status} {body[:200]!r}")
            time.sleep(0.005)
        conn.close()

    def wait_for(self, predicate: Callable[[str], bool], since: float, timeout: float = 5) -> float:
        """Seconds from `since` until an answer from a model matching `predicate`."""
        def seen() -> bool:
            return any(at >= since and predicate(name) for at, _, name in list(self.answers))
        wait_until(seen, timeout, f"an answer matching the predicate; last: {self.answers[-3:]}")
        return min(at for at, _, name in list(self.answers) if at >= since and predicate(name)) - since

    def names_after(self, since: float) -> set[str]:
        return {name for at, _, name in list(self.answers) if at >= since}

    def wait_only(self, names: set[str], since: float, timeout: float = 5, window: float = 0.3) -> float:
        """Seconds from `since` to the last answer from another model, once answers over a `window`
        all come from `names` (0 when every answer since then did)."""
        def settled() -> bool:
            now = time.monotonic()
            recent = self.names_after(now - window)
            return now - since >= window and bool(recent) and recent <= names
        wait_until(settled, timeout, f"answers only from {sorted(names)}; last: {self.answers[-3:]}")
        others = [at for at, _, name in list(self.answers) if at >= since and name not in names]
        return max(others) - since if others else 0.0
