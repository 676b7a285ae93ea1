"""Run the router as a real process in tests, with configs built from a few arguments.

    config = Config(key="primary-key-0123456789").deployment("blue", [model.url], weight=100)
    router = start_router(tmp_path, config)
    httpx.post(router.score_url("demo"), headers=router.auth, ...)

Raw sockets, for what an HTTP client would hide or refuse to send:

    answer = exchange(router.port, b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\n...")
    assert status_of(answer) == 400
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from tests.helpers import BackgroundLoop, ManagedProcess, start_process


@dataclass
class Config:
    """An endpoint's documents: its deployments, traffic and keys."""

    endpoint: str = "demo"
    key: str = "primary-key-0123456789"
    secondary_key: str = "secondary-key-0123456789"
    auth_mode: str = "key"
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)
    mirror: dict[str, int] = field(default_factory=dict)
    extra_documents: list[dict[str, Any]] = field(default_factory=list)

    def deployment(self, name: str, urls: list[str], *, weight: int = 0, timeout_ms: int = 5000,
                   concurrency: int = 1, queue_wait_ms: int = 500, scoring_route: str = "/score") -> Config:
        self.deployments[name] = {
            "endpointName": self.endpoint,
            "backend": {"urls": list(urls)},
            "scoringRoute": scoring_route,
            "requestSettings": {"requestTimeoutMs": timeout_ms,
                                "maxConcurrentRequestsPerInstance": concurrency,
                                "maxQueueWaitMs": queue_wait_ms},
        }
        self.traffic[name] = weight
        return self

    def documents(self) -> list[dict[str, Any]]:
        api = "inference-router.dev/v1alpha1"
        spec: dict[str, Any] = {"authMode": self.auth_mode, "keysSecretRef": f"{self.endpoint}-keys",
                                "traffic": dict(self.traffic)}
        if self.mirror:
            spec["mirrorTraffic"] = dict(self.mirror)
        docs: list[dict[str, Any]] = [
            {"apiVersion": api, "kind": "OnlineEndpoint", "metadata": {"name": self.endpoint}, "spec": spec}]
        docs += [{"apiVersion": api, "kind": "OnlineDeployment", "metadata": {"name": name}, "spec": dep}
                 for name, dep in self.deployments.items()]
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{self.endpoint}-keys"},
                     "stringData": {"primaryKey": self.key, "secondaryKey": self.secondary_key}})
        return docs + self.extra_documents

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.documents(), sort_keys=False)


def token_endpoint_documents(url: str, signing_key: str) -> list[dict[str, Any]]:
    """Documents of an aml_token endpoint `secure` (deployment `tok` at `url`) signing with `signing_key`."""
    api = "inference-router.dev/v1alpha1"
    return [
        {"apiVersion": api, "kind": "OnlineEndpoint", "metadata": {"name": "secure"},
         "spec": {"authMode": "aml_token", "keysSecretRef": "secure-keys", "traffic": {"tok": 100}}},
        {"apiVersion": api, "kind": "OnlineDeployment", "metadata": {"name": "tok"},
         "spec": {"endpointName": "secure", "backend": {"urls": [url]}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "secure-keys"},
         "stringData": {"primaryKey": "secure-primary-key-0123", "tokenSigningKey": signing_key}},
    ]


@dataclass
class RouterProcess:
    process: ManagedProcess
    port: int
    admin_port: int
    config_path: Path
    key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def score_url(self, endpoint: str = "demo", query: str = "") -> str:
        return f"{self.url}/api/v1/endpoint/{endpoint}/score" + (f"?{query}" if query else "")

    def write_config(self, text: str, *, atomic: bool = True) -> None:
        """Replace the config file: by rename (as editors and ConfigMaps do) or in place."""
        if atomic:
            tmp = self.config_path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.config_path)
        else:
            with open(self.config_path, "w") as f:
                f.write(text)

    def stop(self) -> int:
        return self.process.stop()


def start_router(directory: Path, config: Config | str, *extra: str,
                 env: dict[str, str] | None = None) -> RouterProcess:
    path = directory / "router.yaml"
    path.write_text(config if isinstance(config, str) else config.yaml())
    process = start_process([sys.executable, "-m", "router.cli", "serve", "--config", str(path),
                             "--allow-insecure-connections", "--host", "127.0.0.1", "--port", "0",
                             "--admin-port", "0", "--config-poll-interval", "0.2", *extra], env=env)
    ready = process.ready
    key = config.key if isinstance(config, Config) else ""
    return RouterProcess(process, ready["port"], ready["admin_port"], path, key)


@dataclass
class StartedModel:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_sample_model(*args: str) -> StartedModel:
    """A sample model for fixtures wider than one test (stop it with `.process.stop()`)."""
    process = start_process([sys.executable, "-m", "router.sample_model", "--port", "0", *args])
    return StartedModel(process, process.ready["port"])


@contextlib.contextmanager
def router_before_sample_model(directory: Path, *flags: str,
                               extra_documents: Callable[[str], list[dict[str, Any]]] | None = None,
                               **deployment: Any) -> Iterator[RouterProcess]:
    """A router started with `flags` before a sample model `m`: endpoint demo, whose one deployment `main`
    (`deployment`: its settings, as Config.deployment takes them) takes all traffic, and the documents
    `extra_documents(model_url)`. Both are stopped on exit."""
    model = start_sample_model("--name", "m")
    try:
        config = Config().deployment("main", [model.url], weight=100, **deployment)
        if extra_documents is not None:
            config.extra_documents = extra_documents(model.url)
        router = start_router(directory, config, *flags)
        try:
            yield router
        finally:
            router.stop()
    finally:
        model.process.stop()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> float:
    """Seconds until `predicate()` is true; AssertionError naming `what` after `timeout`."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


class HasPort(Protocol):
    port: int


class Traffic(BackgroundLoop):
    """Steady keep-alive requests to one endpoint in a thread, bounded in time; every answer is kept."""

    join_s = 15.0

    def __init__(self, router: HasPort, endpoint: str, key: str, limit_s: float = 80, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.router, self.endpoint, self.key, self.host = router, endpoint, key, host
        self.answers: list[tuple[float, int, str]] = []  # time, status, model name
        self.failures: list[str] = []
        self._deadline = time.monotonic() + limit_s

    @classmethod
    @contextlib.contextmanager
    def clients(cls, count: int, router: HasPort, endpoint: str, key: str, limit_s: float = 80
                ) -> Iterator[list[Traffic]]:
        """`count` of them at once (a demand of `count`: one request at a time each), for the length of the block."""
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(cls(router, endpoint, key, limit_s)) for _ in range(count)]

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        path = f"/api/v1/endpoint/{self.endpoint}/score"
        conn = http.client.HTTPConnection(self.host, self.router.port, timeout=10)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn.request("POST", path, body=b"{}", headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.router.port, timeout=10)
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


# -- raw sockets --------------------------------------------------------------------------------

def connect(port: int, timeout: float | None = 5, source: str | None = None) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` (from address `source`), each call on it bounded by `timeout` s."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def read_all(sock: socket.socket, quiet_after: float | None = None) -> bytes:
    """All `sock` receives until the peer closes it; with `quiet_after`, a reset or that long a silence end it too."""
    if quiet_after is not None:
        sock.settimeout(quiet_after)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        if quiet_after is None:
            raise
    return b"".join(chunks)


def exchange(port: int, data: bytes, timeout: float = 5, *, source: str | None = None, quiet_ok: bool = False) -> bytes:
    """`data` sent on a new connection; all it receives until closed (`quiet_ok`: or reset, or `timeout` s silent)."""
    with connect(port, timeout, source) as sock:
        sock.sendall(data)
        return read_all(sock, timeout if quiet_ok else None)


def read_until(sock: socket.socket, done: Callable[[bytes], bool], received: bytes = b"") -> bytes:
    """`received` and what `sock` receives after it, until `done` of it all; AssertionError if closed before."""
    while not done(received):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        received += chunk
    return received


def answer_complete(data: bytes) -> bool:
    """Whether `data` holds an answer's whole head and its whole Content-Length body."""
    head, found, body = data.partition(b"\r\n\r\n")
    return bool(found) and len(body) >= int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])


def status_of(answer: bytes) -> int:
    """The status code of the answer `answer` begins with; 0 when it does not begin with one."""
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def statuses(answer: bytes) -> list[int]:
    """The status codes of every answer in `answer`, in their order."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening while in use: connections to it are refused, and no other
    process can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def listening_port() -> Iterator[int]:
    """A loopback port with a listener on it while in use, as a router already running holds it: a server
    binding it fails."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def one_shot_replica(answer: bytes, seen: list[bytes] | None = None) -> Iterator[str]:
    """The URL of a replica that reads one request (kept in `seen`), writes `answer` and closes the connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        request = conn.recv(65536)
        if seen is not None:
            seen.append(request)
        if answer:
            conn.sendall(answer)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join(5)
        listener.close()
