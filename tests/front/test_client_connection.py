"""The client connection under clients that misbehave (issues 13 and 20), through a real router process.

Trailers over the header limits, a client that stops reading, a pipeline behind a closing connection,
refusals of uploads not yet read, slow senders after a refusal, many connections from one address, and
the router's own pauses that are not the client's to pay for.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.front.replicas import RecordingReplica
from tests.routing import (
    Config,
    RouterProcess,
    connect,
    exchange,
    read_all,
    read_until,
    router_before_sample_model,
    start_router,
    status_of,
    statuses,
    wait_until,
)
from tests.scrape import open_connections

KEY = "primary-key-0123456789"


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with router_before_sample_model(tmp_path_factory.mktemp("client"), "--max-header-bytes", "16384",
                                    "--max-header-count", "100", "--body-timeout", "2", concurrency=4) as r:
        yield r


def req(query: str = "", body: bytes = b"{}", key: str = KEY, extra: str = "") -> bytes:
    return (f"POST /api/v1/endpoint/demo/score{'?' + query if query else ''} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def chunked(query: str = "", extra: str = "") -> bytes:
    return req(query, b"", extra=extra).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")


# -- 13.1: trailers count against the header limits -------------------------------------------------

def test_a_trailer_over_the_header_limit_gets_431_and_a_close(router: RouterProcess) -> None:
    with connect(router.port, timeout=10) as s:  # a 1 MiB trailer: before the fix, read whole, dropped, and 200
        s.sendall(chunked() + b"2\r\n{}\r\n0\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        answer = read_all(s, quiet_after=5)
    assert status_of(answer) == 431, answer[:200]
    assert b"connection: close" in answer.lower()
    with connect(router.port) as s:  # the same, with many small trailers
        s.sendall(chunked() + b"2\r\n{}\r\n0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(200)) + b"\r\n")
        assert statuses(read_all(s, quiet_after=5)) == [431]
    assert httpx.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200


def test_trailers_within_the_limits_are_still_dropped_and_the_request_served(router: RouterProcess) -> None:
    with connect(router.port) as s:
        s.sendall(chunked(extra="Connection: close\r\n") + b"2\r\n{}\r\n0\r\nX-Checksum: " + b"a" * 8000
                  + b"\r\n\r\n")
        assert statuses(read_all(s, quiet_after=5)) == [200]


# -- 13.3: nothing is started on a connection that is closing -----------------------------------------

def test_a_pipelined_request_behind_a_refusal_that_closes_never_reaches_the_model(tmp_path: Path) -> None:
    with RecordingReplica() as replica:
        router = start_router(tmp_path, Config(key=KEY).deployment("main", [replica.url], weight=100),
                              "--max-request-body-bytes", "65536")
        try:
            with connect(router.port, timeout=10) as s:
                too_big = chunked() + b"%x\r\n" % 70000 + b"y" * 70000 + b"\r\n0\r\n\r\n"
                s.sendall(req(query="marker=A") + too_big + req(query="marker=C"))
                got = statuses(read_all(s, quiet_after=5))
            assert got == [200, 413]
            time.sleep(0.3)
            assert not [line for line in replica.lines if b"marker=C" in line], replica.lines
        finally:
            router.stop()


# -- 13.4: refusals reach a client still uploading (lingering close) ------------------------------------

@pytest.mark.parametrize("attempt", range(3))
def test_a_refused_upload_gets_its_answer_not_a_reset(router: RouterProcess, attempt: int) -> None:
    request = urllib.request.Request(router.score_url(), data=b"x" * (8 * 1024 * 1024), method="POST",
                                     headers={"Authorization": "Bearer wrong-key-0123456789"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["requestId"]


def test_an_upload_over_the_limit_gets_413_with_its_answer(router: RouterProcess) -> None:
    with connect(router.port, timeout=10) as s:
        s.sendall(req(body=b"").replace(b"Content-Length: 0", b"Content-Length: 209715200"))  # over 100 MiB
        for _ in range(64):
            s.sendall(b"y" * 65536)  # the whole body, after the router has answered
        answer = read_all(s, quiet_after=5)
    assert status_of(answer) == 413


# -- 20.2: the rest of an unwanted body is read for a bounded time, however it trickles ---------------

def test_a_body_trickling_after_a_refusal_does_not_hold_the_connection(router: RouterProcess) -> None:
    with connect(router.port, timeout=10) as s:
        s.sendall(req(key="wrong-key-0123456789", body=b"").replace(b"Content-Length: 0", b"Content-Length: 1000"))
        answer = read_until(s, lambda got: b"\r\n\r\n" in got)
        assert status_of(answer) == 401
        started, closed_after = time.monotonic(), None
        s.settimeout(0.5)
        while time.monotonic() - started < 8:  # one byte every half second: each within --body-timeout
            try:
                s.send(b"z")
                if s.recv(65536) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None and closed_after < 4.5, closed_after


# -- 13.2: a client that stops reading is aborted after --send-timeout ------------------------------------

@contextlib.contextmanager
def small_buffered_client(tmp_path: Path, answer_size: int) -> Iterator[tuple[RouterProcess, socket.socket]]:
    """A router with --send-timeout 1 before a replica answering `answer_size` bytes, and a client with a
    small receive buffer whose request was sent."""
    with RecordingReplica(answer_size=answer_size) as replica:
        router = start_router(tmp_path, Config(key=KEY).deployment("main", [replica.url], weight=100),
                              "--send-timeout", "1")
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(10)
                s.connect(("127.0.0.1", router.port))
                s.sendall(req())
                yield router, s
        finally:
            router.stop()


def test_a_client_that_stops_reading_is_aborted_and_counted_out(tmp_path: Path) -> None:
    with small_buffered_client(tmp_path, 32 * 1024 * 1024) as (router, s):
        assert s.recv(200)  # then reads no more
        wait_until(lambda: open_connections(router) == 1, 5, "the connection counted")
        waited = wait_until(lambda: open_connections(router) == 0, 10, "the stalled connection aborted")
        assert waited < 6
        assert router.process.events_named("client.stalled")
        s.close()
        assert httpx.post(router.score_url(), headers=router.auth, content=b"{}",
                          timeout=5).status_code == 200


def test_a_slow_reader_whose_output_moves_is_not_aborted(tmp_path: Path) -> None:
    with small_buffered_client(tmp_path, 4 * 1024 * 1024) as (_, s):
        received, started = 0, time.monotonic()
        while received < 4 * 1024 * 1024 and time.monotonic() - started < 30:
            chunk = s.recv(65536)
            assert chunk, f"closed after {received} bytes"
            received += len(chunk)
            time.sleep(0.002)  # about 2 s for the whole answer, more than the send timeout
        assert received >= 4 * 1024 * 1024


# -- 20.1: a client that does not read its answers holds at most its buffers -----------------------------

def rss_kib(router: RouterProcess) -> int:
    with open(f"/proc/{router.process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_pipelined_requests_never_read_do_not_grow_memory(tmp_path: Path) -> None:
    # (the access log off: what it keeps for a reader that falls behind is bounded on its own)
    with router_before_sample_model(tmp_path, "--access-log", "off") as router:
        pipeline_and_never_read(router)


def pipeline_and_never_read(router: RouterProcess) -> None:
    before = rss_kib(router)
    sockets, sent = [], 0
    try:
        for _ in range(4):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", router.port))
            s.setblocking(False)
            sockets.append(s)
        data = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" * 4096  # 404s, each 5 times its size
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            progress = False
            for s in list(sockets):
                try:
                    sent += s.send(data)
                    progress = True
                except BlockingIOError:
                    pass
                except OSError:  # closed by the router: a pipeline too deep
                    s.close()
                    sockets.remove(s)
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    s.connect(("127.0.0.1", router.port))
                    s.setblocking(False)
                    sockets.append(s)
            if not progress:
                time.sleep(0.01)
        grown = rss_kib(router) - before
    finally:
        for s in sockets:
            s.close()
    # before the fix every connection kept every 404 in memory: tens of MiB for this much
    assert grown < 12 * 1024, f"{grown} KiB more after {sent} bytes sent"
    assert httpx.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200


def test_an_error_to_a_request_without_a_body_keeps_the_connection(router: RouterProcess) -> None:
    with connect(router.port) as s:  # no Content-Length, no chunks: no body (RFC 9112 §6.3), nothing left to read
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + req(extra="Connection: close\r\n"))
        assert statuses(read_all(s, quiet_after=5)) == [404, 404, 200]


# -- 20.2: connections per client address --------------------------------------------------------------

def test_connections_from_one_address_are_limited_and_others_still_get_in(tmp_path: Path) -> None:
    with router_before_sample_model(tmp_path, "--max-connections", "30") as router:  # 3 per address by default: a tenth
        held = [connect(router.port) for _ in range(3)]
        wait_until(lambda: open_connections(router) == 3, 5, "three connections counted")
        answer = exchange(router.port, req(extra="Connection: close\r\n"), quiet_ok=True)
        assert status_of(answer) == 503 and b"from this address" in answer
        assert b"retry-after: 1" in answer.lower()
        other = exchange(router.port, req(extra="Connection: close\r\n"), source="127.0.0.3", quiet_ok=True)
        assert status_of(other) == 200
        held[0].sendall(req())
        assert status_of(held[0].recv(65536)) == 200  # the connections held are unaffected
        held.pop().close()
        wait_until(lambda: open_connections(router) == 2, 5, "a connection counted out")
        assert status_of(exchange(router.port, req(extra="Connection: close\r\n"), quiet_ok=True)) == 200
        for s in held:
            s.close()


# -- 13.11: only the time the client is responsible for counts -------------------------------------------

def test_time_the_router_did_not_read_is_not_counted_against_the_body_timeout(tmp_path: Path) -> None:
    with router_before_sample_model(tmp_path, "--body-timeout", "2", concurrency=1, queue_wait_ms=8000) as router:
        blocker = threading.Thread(target=lambda: httpx.post(router.score_url(query="latency_ms=3500"),
                                                             headers=router.auth, content=b"{}", timeout=10))
        blocker.start()  # holds the only slot for 3.5 s
        time.sleep(0.3)
        body = b"q" * (256 * 1024 + 102)
        with connect(router.port, timeout=10) as s:
            # more than the router keeps while a request waits for a slot: it reads no more until then
            s.sendall(req(body=body, extra="Connection: close\r\n")[:-2])
            blocker.join()
            time.sleep(1.2)  # within the body timeout of reading resuming, long after the last byte read
            s.sendall(body[-2:])
            answer = read_all(s, quiet_after=10)
        assert statuses(answer) == [200], answer[:300]


def test_a_timeout_acts_within_a_tenth_of_its_length_not_a_second_late(tmp_path: Path) -> None:
    late: list[float] = []

    def half_a_head() -> None:
        with connect(router.port, timeout=5) as s:
            s.sendall(b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            answer = read_all(s, quiet_after=4)
            assert status_of(answer) == 408
            late.append(time.monotonic() - started - 1.0)

    # three heads started a third of a second apart: a once-a-second sweep is late for some of them
    with router_before_sample_model(tmp_path, "--header-timeout", "1") as router:
        threads = [threading.Thread(target=half_a_head) for _ in range(3)]
        for thread in threads:
            thread.start()
            time.sleep(0.33)
        for thread in threads:
            thread.join(10)
        assert len(late) == 3 and max(late) < 0.3, late
