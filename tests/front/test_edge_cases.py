"""Edge cases of the exchange state machine, each once a defect found in review, through real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.routing import (
    Config,
    RouterProcess,
    connect,
    read_all,
    read_until,
    router_before_sample_model,
    start_router,
    statuses,
)

KEY = "primary-key-0123456789"


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with router_before_sample_model(tmp_path_factory.mktemp("edges"), "--max-request-body-bytes", "65536",
                                    "--body-timeout", "2", concurrency=1, queue_wait_ms=300) as r:
        yield r


def req(query: str = "", body: bytes = b"{}", key: str = KEY, method: str = "POST", extra: str = "") -> bytes:
    return (f"{method} /api/v1/endpoint/demo/score{'?' + query if query else ''} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_an_unwanted_upload_does_not_leave_the_connection_stuck(router: RouterProcess) -> None:
    blocker = threading.Thread(target=lambda: httpx.post(router.score_url(query="latency_ms=3000"),
                                                         headers=router.auth, content=b"{}", timeout=10))
    blocker.start()  # takes the only slot
    time.sleep(0.3)
    with connect(router.port) as s:
        s.sendall(req(body=b"").replace(b"Content-Length: 0", b"Content-Length: 60000"))
        sent = 0
        s.settimeout(0.05)
        answer = b""
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            try:
                if sent < 60000:
                    sent += s.send(b"x" * 4096)
                answer += s.recv(65536)
            except (TimeoutError, BlockingIOError):
                pass
        assert statuses(answer)[:1] == [503]
        s.sendall(b"x" * (60000 - sent))
        rest = read_all(s, quiet_after=5)
    blocker.join()
    assert statuses(rest) == []  # the rest of the unwanted upload was dropped, never read as a request
    assert httpx.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200


def test_a_pipelined_body_arriving_after_its_head_is_read(router: RouterProcess) -> None:
    with connect(router.port) as s:
        s.sendall(req(query="latency_ms=200") + req(body=b"").replace(b"Content-Length: 0", b"Content-Length: 2")
                  .replace(b"Host: x", b"Host: x\r\nConnection: close"))
        time.sleep(0.4)
        s.sendall(b"{}")
        assert statuses(read_all(s, quiet_after=10)) == [200, 200]


def test_a_pipelined_request_over_the_body_limit_is_refused_in_its_turn(router: RouterProcess) -> None:
    with connect(router.port) as s:
        s.sendall(req(query="latency_ms=100") + req(body=b"y" * 70000, extra="Connection: close\r\n"))
        assert statuses(read_all(s, quiet_after=10)) == [200, 413]


def test_many_failing_pipelined_requests_are_answered_without_recursion(router: RouterProcess) -> None:
    with connect(router.port) as s:
        s.sendall(req(query="latency_ms=100") + req(key="wrong") * 600)
        got = statuses(read_all(s, quiet_after=10))
    assert got[0] == 200 and len(got) > 60 and set(got[1:]) == {401}  # then closed: too deep a pipeline
    assert "RecursionError" not in router.process.output() and "Traceback" not in router.process.output()
    assert httpx.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200


def test_trailers_of_a_chunked_body_are_dropped_and_the_next_request_starts_clean(router: RouterProcess) -> None:
    chunked = req(body=b"").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    trailers = b"2\r\n{}\r\n0\r\nX-Checksum: abc\r\nAuthorization: Bearer wrong\r\n\r\n"
    with connect(router.port) as s:
        s.sendall(chunked + trailers)
        first = read_until(s, lambda got: b"\r\n\r\n" in got)
        s.sendall(req(extra="Connection: close\r\n"))
        answers = read_all(s, quiet_after=10)
    assert statuses(first) == [200] and statuses(answers) == [200]
    with connect(router.port) as s:  # the same, pipelined: the trailers and the next head in one read
        s.sendall(chunked + trailers + req(extra="Connection: close\r\n"))
        assert statuses(read_all(s, quiet_after=10)) == [200, 200]


def test_garbage_after_a_valid_request_waits_for_its_answer(router: RouterProcess) -> None:
    with connect(router.port) as s:
        s.sendall(req(query="latency_ms=200") + b"NOT HTTP\r\n\r\n")
        answer = read_all(s, quiet_after=10)
    assert statuses(answer) == [200, 400]


def test_errors_to_head_requests_have_no_body(router: RouterProcess) -> None:
    with connect(router.port) as s:
        s.sendall(req(method="HEAD", body=b"") + req(extra="Connection: close\r\n"))
        answer = read_all(s, quiet_after=10)
    assert statuses(answer) == [405, 200]
    _, _, rest = answer.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200")  # nothing between the 405's head and the next answer


def test_surplus_bytes_from_a_replica_never_reach_another_client(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def replica() -> None:  # answers every request with a second, unasked-for answer glued on
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    def serve(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            while conn.recv(65536):
                time.sleep(0.05)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                             b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nx-smuggled: 1\r\n\r\nSTOLEN!")
        except OSError:
            pass

    thread = threading.Thread(target=replica, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    router = start_router(tmp_path, Config(key=KEY).deployment("main", [url], weight=100, concurrency=1,
                                                               queue_wait_ms=2000))
    try:
        results = []

        def client() -> None:
            with httpx.Client(timeout=10) as c:
                for _ in range(5):
                    r = c.post(router.score_url(), headers=router.auth, content=b"{}")
                    results.append((r.status_code, r.text, "x-smuggled" in r.headers))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 15
        assert all(r == (200, "ok", False) for r in results), results
    finally:
        router.stop()
        stop.set()
        thread.join(2)
        listener.close()
