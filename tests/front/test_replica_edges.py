"""The exchange with replicas (issue 13): latency samples, pooling, ejection, statuses, answer headers.

Through a real router process, against sample models or replicas on raw sockets that answer as each
case needs.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from pathlib import Path

import httpx

from router.proxy.upstream import ConnectionPool
from tests.front.replicas import RecordingReplica
from tests.routing import (
    Config,
    RouterProcess,
    closed_port,
    connect,
    one_shot_replica,
    read_all,
    start_router,
    status_of,
)
from tests.scrape import scrape

KEY = "primary-key-0123456789"


def req(query: str = "", body: bytes = b"{}", extra: str = "") -> bytes:
    return (f"POST /api/v1/endpoint/demo/score{'?' + query if query else ''} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def replica_state(router: RouterProcess) -> list[dict]:
    deployments = httpx.get(f"{router.admin_url}/debug/deployments", timeout=5).json()
    return [replica for deployment in deployments.values() for replica in deployment["replicas"]]


# -- 13.5: the replica's latency is its own, not its client's -------------------------------------------

def test_a_slow_upload_does_not_set_the_replicas_latency(tmp_path: Path, sample_model_factory) -> None:
    model = sample_model_factory("--name", "m")
    router = start_router(tmp_path, Config(key=KEY).deployment("main", [model.url], weight=100),
                          "--debug-endpoints")
    try:
        for _ in range(3):
            assert httpx.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200
        with connect(router.port, timeout=10) as s:  # a 10-byte body that takes 2 s to arrive
            s.sendall(req(body=b"0123456789", extra="Connection: close\r\n")[:-5])
            time.sleep(2)
            s.sendall(b"56789")
            assert status_of(read_all(s)) == 200
        [replica] = replica_state(router)
        assert replica["latency_ms"] < 500, replica  # before: 2000 and more
    finally:
        router.stop()


# -- 13.7: a connection goes back to the pool only with nothing of its request still buffered ------------

def test_a_connection_with_request_bytes_still_unsent_is_not_fit_for_the_pool() -> None:
    async def main() -> None:
        with socket.socket() as listener:  # a replica that takes the connection and reads nothing yet
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            pool = ConnectionPool("127.0.0.1", listener.getsockname()[1])
            conn = await pool.connect()
            accepted, _ = listener.accept()
            conn.write(b"x" * (8 * 1024 * 1024))  # a request body the replica has not read
            await asyncio.sleep(0.05)  # the write leaves at the end of the loop turn (corked)
            assert conn.writing_paused and not conn.drained()  # before: pooled like this
            def read_it_all() -> None:
                got = 0
                while got < 8 * 1024 * 1024:
                    got += len(accepted.recv(1 << 20))

            reader = threading.Thread(target=read_it_all)
            reader.start()
            for _ in range(200):
                if conn.drained():
                    break
                await asyncio.sleep(0.02)
            assert conn.drained() and not conn.writing_paused  # all of it sent: fit for the next request
            conn.close()
            reader.join(5)
            accepted.close()

    asyncio.run(main())


# -- 13.8: only failures to connect eject a replica ------------------------------------------------------

def poison_or_ok(head: bytes) -> bytes:
    if b"poison" in head.split(b"\r\n")[0]:
        return b"this is not HTTP\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def test_invalid_answers_do_not_eject_a_replica_and_are_counted(tmp_path: Path) -> None:
    with RecordingReplica(poison_or_ok) as one, RecordingReplica(poison_or_ok) as other:
        router = start_router(tmp_path, Config(key=KEY).deployment("main", [one.url, other.url], weight=100,
                                                                   concurrency=4), "--debug-endpoints")
        try:
            with httpx.Client(timeout=5) as client:
                for _ in range(8):
                    r = client.post(router.score_url(query="poison=1"), headers=router.auth, content=b"{}")
                    assert r.status_code == 502
                    assert "127.0.0.1" not in r.text and "Errno" not in r.text  # 20.7: no address, no errno
            assert not router.process.events_named("replica.ejected")
            assert not any(replica["ejected"] for replica in replica_state(router))
            failures = scrape(router).value("inference_router_replica_failures_total", endpoint="demo",
                                            deployment="main", kind="answer")
            assert failures == 8
            assert router.process.events_named("replica.failed")[0]["reason"].startswith("127.0.0.1:")
        finally:
            router.stop()


def test_failures_to_connect_still_eject(tmp_path: Path, sample_model_factory) -> None:
    model = sample_model_factory("--name", "m")
    with closed_port() as port:
        router = start_router(tmp_path, Config(key=KEY).deployment("main", [f"http://127.0.0.1:{port}", model.url],
                                                                   weight=100, concurrency=4))
        try:
            with httpx.Client(timeout=5) as client:
                for _ in range(8):  # each retried on the model, once refused
                    assert client.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200
            router.process.wait_for_event("replica.ejected", timeout=5)
            assert scrape(router).value("inference_router_replica_failures_total", endpoint="demo",
                                        deployment="main", kind="connect") >= 3
        finally:
            router.stop()


# -- 13.9: statuses as the README's table says -------------------------------------------------------------

def test_a_request_that_never_got_a_slot_gets_503_even_when_its_timeout_comes_first(
        tmp_path: Path, sample_model_factory) -> None:
    model = sample_model_factory("--name", "m")
    config = Config(key=KEY).deployment("main", [model.url], weight=100, concurrency=1, queue_wait_ms=3000)
    router = start_router(tmp_path, config)
    try:
        blocker = threading.Thread(target=lambda: httpx.post(router.score_url(query="latency_ms=2500"),
                                                             headers=router.auth, content=b"{}", timeout=10))
        blocker.start()  # holds the only slot
        time.sleep(0.3)
        after = len(router.process.events)
        router.write_config(Config(key=KEY).deployment("main", [model.url], weight=100, concurrency=1,
                                                       timeout_ms=300, queue_wait_ms=3000).yaml())
        router.process.wait_for_event("config.reloaded", timeout=5, after=after)
        r = httpx.post(router.score_url(), headers=router.auth, content=b"{}", timeout=5)
        blocker.join()
        assert r.status_code == 503 and "retry-after" in r.headers, (r.status_code, r.text)
    finally:
        router.stop()


def test_a_retry_that_finds_no_slot_gets_the_failure_not_at_capacity(tmp_path: Path, sample_model_factory) -> None:
    model = sample_model_factory("--name", "m")
    with closed_port() as port:
        config = Config(key=KEY).deployment("main", [f"http://127.0.0.1:{port}", model.url], weight=100,
                                            concurrency=1, queue_wait_ms=400)
        router = start_router(tmp_path, config)
        try:
            blocker = threading.Thread(target=lambda: httpx.post(router.score_url(query="latency_ms=2000"),
                                                                 headers=router.auth, content=b"{}", timeout=10))
            blocker.start()  # the model's only slot (after a refused try, if it went to the closed port first)
            time.sleep(0.5)
            r = httpx.post(router.score_url(), headers=router.auth, content=b"{}", timeout=5)
            blocker.join()
            assert r.status_code == 502, (r.status_code, r.text)  # before: 503 "at capacity"
            assert str(port) not in r.text
        finally:
            router.stop()


# -- 13.10: the replica's connection-scoped headers and transfer codings -----------------------------------

def raw_answer(tmp_path: Path, answer: bytes, request: bytes = b"") -> bytes:
    with one_shot_replica(answer) as url:
        router = start_router(tmp_path, Config(key=KEY).deployment("main", [url], weight=100))
        try:
            with connect(router.port, timeout=10) as s:
                s.sendall(request or req(extra="Connection: close\r\n"))
                return read_all(s, quiet_after=5)
        finally:
            router.stop()


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, body = out + body[:size], body[size + 2:]


def test_headers_the_replicas_connection_header_names_are_removed(tmp_path: Path) -> None:
    answer = raw_answer(tmp_path, b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: s3\r\n"
                                  b"X-Kept: yes\r\ncontent-length: 2\r\n\r\nok")
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert status_of(answer) == 200 and b"x-kept: yes" in head
    assert b"x-hop-secret" not in head


def test_a_connection_header_naming_the_framing_keeps_the_framing(tmp_path: Path) -> None:
    # removing Content-Length because Connection names it would leave an unframed body on a kept connection
    answer = raw_answer(tmp_path, b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Content-Length\r\n"
                                  b"content-length: 5\r\n\r\nhello")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 200 and b"content-length: 5" in head.lower() and body == b"hello"


def test_a_gzip_transfer_coding_ending_with_the_connection_reaches_the_client_intact(tmp_path: Path) -> None:
    payload = gzip.compress(b'{"result": [1, 2, 3]}' * 50)
    answer = raw_answer(tmp_path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + payload)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 200, answer[:300]  # before: 502 (read as chunked, then cut)
    assert b"transfer-encoding: gzip, chunked" in head.lower()
    assert gzip.decompress(dechunk(body)) == b'{"result": [1, 2, 3]}' * 50


def test_a_gzip_chunked_answer_keeps_its_coding(tmp_path: Path) -> None:
    payload = gzip.compress(b"hello " * 100)
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    answer = raw_answer(tmp_path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 200
    assert b"transfer-encoding: gzip, chunked" in head.lower()  # before: chunked only, a corrupt body
    assert gzip.decompress(dechunk(body)) == b"hello " * 100


def test_a_transfer_coding_an_http10_client_cannot_read_is_a_502(tmp_path: Path) -> None:
    payload = gzip.compress(b"hello")
    request = req().replace(b"HTTP/1.1", b"HTTP/1.0")
    answer = raw_answer(tmp_path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + payload, request)
    assert status_of(answer) == 502


def test_identity_is_no_coding(tmp_path: Path) -> None:
    answer = raw_answer(tmp_path, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nplain")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 200 and b"transfer-encoding: chunked" in head.lower()
    assert dechunk(body) == b"plain"

