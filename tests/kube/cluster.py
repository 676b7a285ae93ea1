"""Objects as the API server holds them, a router process pointed at the fake API server, and traffic.

    api.create("onlineendpoints", endpoint("demo", {"blue": 100}))
    api.create("endpointslices", endpoint_slice("demo-blue-0", "demo-blue", model.port))
    router = start_kube_router(kubeconfig)
    router.wait_ready()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import ManagedProcess, start_process
from tests.routing import Traffic, wait_until  # noqa: F401  (used by the kube tests through this module)

API = "inference-router.dev/v1alpha1"


async def until(predicate: Callable[[], object], timeout: float = 5) -> float:
    """Wait on the event loop until `predicate()` holds; how long it took (AssertionError after `timeout`)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """`work` as a task for the length of the block, cancelled and awaited at its end."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
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


def seed_demo(api_server: Any, key: str, port: int | None = None) -> None:
    """Endpoint demo (primary key `key`), its deployment blue on Service demo-blue and, given a port, one
    ready replica, created in the fake API server."""
    api_server.create("secrets", secret("demo-keys", primaryKey=key))
    api_server.create("onlineendpoints", endpoint("demo", {"blue": 100}))
    api_server.create("onlinedeployments", deployment("blue", "demo", "demo-blue"))
    if port is not None:
        api_server.create("endpointslices", endpoint_slice("demo-blue-0", "demo-blue", port))


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


def start_kube_router(kubeconfig: Path, *extra: str, loopback_replicas: bool = True) -> KubeRouter:
    """A router on the fake cluster; its replicas run on 127.0.0.1 too, so it admits loopback ones unless told."""
    loopback = ["--allow-loopback-replicas"] if loopback_replicas else []
    process = start_process([sys.executable, "-m", "router.cli", "serve", "--kubernetes", "--kubeconfig",
                             str(kubeconfig), "--allow-insecure-connections", *loopback, "--host", "127.0.0.1",
                             "--port", "0", "--admin-port", "0", *extra], timeout=30)
    return KubeRouter(process, int(process.ready["port"]), int(process.ready["admin_port"]))


