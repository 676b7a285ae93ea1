"""SIGTERM under steady keep-alive traffic: no request fails, those in flight finish, exit 0.

The test plays the load balancer too: it stops sending new requests half a second after
/readyz fails (well within the drain delay), as a load balancer that has noticed would.
The clients are ordinary keep-alive clients: they close a connection whose answer says
`connection: close`, and, as RFC 9112 §9.3.1 lets them, send a request again on a new
connection when a reused one closed before any byte of the answer (counted: `retries`).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import SampleModel
from tests.routing import Config, RouterProcess, connect, read_all, start_router

DRAIN_DELAY = 1.5
SLOW_MS = 1500  # a request started late in the drain delay, still running when the listener closes


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    closing_answers: int = 0  # answers that said `connection: close`
    finished_at: list[float] = field(default_factory=list)


class KeepAliveClient:
    """One keep-alive connection at a time, reopened when the router closes it."""

    def __init__(self, router: RouterProcess, tally: Tally) -> None:
        self.router, self.tally = router, tally
        self.conn: http.client.HTTPConnection | None = None

    def score(self, query: str = "") -> None:
        for attempt in range(2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.router.port, timeout=10)
            try:
                self.conn.request("POST", f"/api/v1/endpoint/demo/score{query}", body=b'{"x": 1}',
                                  headers={**self.router.auth, "content-type": "application/json"})
                answer = self.conn.getresponse()
                body = answer.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
                self.close()
                if reused and attempt == 0 and not isinstance(exc, ConnectionResetError | TimeoutError):
                    with self.tally.lock:
                        self.tally.retries += 1
                    continue  # closed while idle, before the request reached it: send it again
                self._failed(f"{type(exc).__name__}: {exc}")
                return
            except OSError as exc:
                self.close()
                self._failed(f"{type(exc).__name__}: {exc}")
                return
            with self.tally.lock:
                if answer.status == 200:
                    self.tally.ok += 1
                    self.tally.finished_at.append(time.monotonic())
                else:
                    self.tally.failures.append(f"{answer.status} {body[:200]!r}")
                if answer.will_close:
                    self.tally.closing_answers += 1
            if answer.will_close:
                self.close()
            return

    def _failed(self, what: str) -> None:
        with self.tally.lock:
            self.tally.failures.append(what)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def score(conn: http.client.HTTPConnection, router: RouterProcess) -> http.client.HTTPResponse:
    """A scoring request on `conn`, and its answer, read whole."""
    conn.request("POST", "/api/v1/endpoint/demo/score", body=b"{}", headers=router.auth)
    answer = conn.getresponse()
    answer.read()
    return answer


def used_keep_alive_connection(router: RouterProcess) -> http.client.HTTPConnection:
    """A keep-alive connection that carried one request, answered and kept open."""
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    answer = score(conn, router)
    assert answer.status == 200 and not answer.will_close
    return conn


def test_sigterm_under_keep_alive_traffic_loses_no_request(
        tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    model = sample_model_factory("--latency-ms", "10")
    config = Config().deployment("blue", [model.url], weight=100, concurrency=32, queue_wait_ms=5000)
    router = start_router(tmp_path, config, "--drain-delay", str(DRAIN_DELAY), "--drain-timeout", "20")
    tally, stop_sending = Tally(), threading.Event()

    def steady() -> None:
        client = KeepAliveClient(router, tally)
        deadline = time.monotonic() + 30
        while not stop_sending.is_set() and time.monotonic() < deadline:
            client.score()
        client.close()

    try:
        # An idle keep-alive connection, used once before SIGTERM and never again.
        idle = used_keep_alive_connection(router)
        assert idle.sock is not None
        idle_socket: socket.socket = idle.sock

        clients = [threading.Thread(target=steady, name=f"client-{i}") for i in range(6)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        assert tally.ok > 0 and not tally.failures, tally.failures

        sigterm = time.monotonic()
        router.process.terminate()
        # /readyz fails at once, while scoring goes on
        for _ in range(100):
            if httpx.get(f"{router.admin_url}/readyz", timeout=2).status_code == 503:
                break
            time.sleep(0.01)
        assert time.monotonic() - sigterm < 0.5, "/readyz still ready"
        time.sleep(0.5 - (time.monotonic() - sigterm))
        stop_sending.set()  # the load balancer has moved every client elsewhere

        slow = threading.Thread(target=lambda: KeepAliveClient(router, tally).score(f"?latency_ms={SLOW_MS}"))
        time.sleep(DRAIN_DELAY - 0.5 - (time.monotonic() - sigterm))  # just before the listener closes
        slow.start()
        for thread in clients:
            thread.join(15)

        # the idle connection is closed once the drain delay is over, without an answer
        assert idle_socket.recv(1) == b""
        assert time.monotonic() - sigterm >= DRAIN_DELAY - 0.1
        idle.close()

        assert router.process.wait(DRAIN_DELAY + SLOW_MS / 1000 + 5) == 0
        exited = time.monotonic()
        slow.join(5)
        assert not slow.is_alive()
    finally:
        stop_sending.set()
        router.stop()

    assert tally.failures == [], tally.failures
    assert tally.retries == 0  # every client was told to close: none met a connection closed under it
    assert tally.closing_answers >= 6  # each client's first answer after SIGTERM said so
    # the slow request was in flight when the listener closed, and it finished
    assert max(tally.finished_at) > sigterm + DRAIN_DELAY + 0.3
    # the router exited once its last connection closed, long before the 20 s drain timeout
    assert exited - sigterm < DRAIN_DELAY + SLOW_MS / 1000 + 3
    assert router.process.events_named("stopped")


@pytest.mark.parametrize("split", [len(b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: t\r\n"), len(b"PO")],
                         ids=["in the headers", "in the method"])
def test_a_request_half_received_when_the_drain_closes_idle_connections_is_answered(
        tmp_path: Path, sample_model_factory: Callable[..., SampleModel], split: int) -> None:
    model = sample_model_factory()
    router = start_router(tmp_path, Config().deployment("blue", [model.url], weight=100), "--drain-delay", "0.3")
    request = (b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
               b"Authorization: Bearer " + router.key.encode() + b"\r\n\r\n{}")
    try:
        conn = connect(router.port, timeout=10)
        conn.sendall(request[:split])  # a head, half sent
        time.sleep(0.2)
        router.process.terminate()
        time.sleep(0.6)  # past the drain delay: the listener is closed and idle connections too
        conn.sendall(request[split:])
        answer = read_all(conn)
        conn.close()
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 200 ") and b"connection: close" in head, answer
        assert router.process.wait(10) == 0
    finally:
        router.stop()


def test_with_no_drain_delay_an_idle_connection_still_gets_an_answer_to_a_request_sent_at_sigterm(
        tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    model = sample_model_factory()
    router = start_router(tmp_path, Config().deployment("blue", [model.url], weight=100))  # --drain-delay 0
    try:
        idle = used_keep_alive_connection(router)
        router.process.terminate()
        time.sleep(0.3)  # a request on its way as the drain begins: before, it met a closed connection
        answer = score(idle, router)
        assert answer.status == 200 and answer.will_close  # answered, and told to close
        idle.close()
        assert router.process.wait(10) == 0
    finally:
        router.stop()
