"""--proxy-protocol on the plain scoring listener, through raw sockets against a real router (issue 16).

The test plays the load balancer: it connects from 127.0.0.1 (the trusted proxy) and sends a PROXY
header before the client's HTTP, as AWS NLB or HAProxy would. The sample model echoes the
X-Forwarded-For it got; the access log and the per-client limit must see the header's address too.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_headers import INET6, LOCAL, inet, tlv, v2
from tests.routing import (
    Config,
    RouterProcess,
    StartedModel,
    answer_complete,
    connect,
    exchange,
    read_all,
    read_until,
    start_router,
    start_sample_model,
    status_of,
    wait_until,
)
from tests.scrape import open_connections, proxy_rejections

KEY = "primary-key-0123456789"
PROXIED = ("--proxy-protocol", "--trusted-proxies", "127.0.0.1")


def request(*, close: bool = True, request_id: str = "") -> bytes:
    return (b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
            + (b"\r\nx-ms-client-request-id: " + request_id.encode() if request_id else b"")
            + (b"\r\nConnection: close" if close else b"") + b"\r\nContent-Length: 2\r\n\r\n{}")


def v1(client: str, port: int = 51000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    server = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {server} {port} 8080\r\n".encode()


def echoed(answer: bytes) -> dict[str, Any]:
    """The request headers the sample model saw, from its answer."""
    assert status_of(answer) == 200, answer[:300]
    return json.loads(answer.partition(b"\r\n\r\n")[2])["headers"]


def access_line(router: RouterProcess, client_request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((line for line in router.process.events_named("access")
                     if line["client_request_id"] == client_request_id), None)

    wait_until(find, 5, f"the access-log line of {client_request_id}")
    line = find()
    assert line is not None
    return line


def closed_without_answer(sock: Any, within: float) -> float:
    """Seconds until the router closed `sock` (a reset counts), asserting it sent nothing."""
    started = time.monotonic()
    assert read_all(sock, quiet_after=within) == b""
    took = time.monotonic() - started
    assert took < within, "still open"
    return took


@pytest.fixture(scope="module")
def model() -> Iterator[StartedModel]:
    started = start_sample_model("--name", "m")
    yield started
    started.process.stop()


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, model: StartedModel) -> Iterator[RouterProcess]:
    config = Config(key=KEY).deployment("main", [model.url], weight=100, concurrency=4)
    r = start_router(tmp_path_factory.mktemp("proxied"), config, *PROXIED, "--header-timeout", "1")
    yield r
    r.stop()


def test_a_v1_header_gives_the_client_address_to_the_model_and_the_access_log(router: RouterProcess) -> None:
    answer = exchange(router.port, v1("203.0.113.7") + request(request_id="pp-v1"))
    assert echoed(answer)["x-forwarded-for"] == "203.0.113.7"  # before: a 400, the header read as HTTP
    line = access_line(router, "pp-v1")
    assert line["client"] == "203.0.113.7" and line["status"] == 200


def test_a_v2_header_sent_a_few_bytes_at_a_time_then_keep_alive_requests(router: RouterProcess) -> None:
    # with a TLV, as AWS sends its VPC endpoint id: skipped, and not read as the client's bytes
    header = v2(addresses=inet("2001:db8::5", "::1", 40000, 8080), family=INET6, tlvs=tlv(0xEA, b"\x01vpce-0a1b2c"))
    with connect(router.port) as sock:
        for at in range(0, len(header), 7):  # the header in pieces, each read alone
            sock.sendall(header[at:at + 7])
            time.sleep(0.02)
        for _ in range(2):  # the header is the connection's, not a request's
            sock.sendall(request(close=False))
            answer = read_until(sock, answer_complete)
            assert echoed(answer)["x-forwarded-for"] == "2001:db8::5"


@pytest.mark.parametrize("header", [v2(command=LOCAL), b"PROXY UNKNOWN\r\n"], ids=["v2 LOCAL", "v1 UNKNOWN"])
def test_a_header_without_a_client_is_served_with_the_proxys_own_address(router: RouterProcess,
                                                                          header: bytes) -> None:
    # a load balancer's health check through the listener: it is not turned away
    assert echoed(exchange(router.port, header + request()))["x-forwarded-for"] == "127.0.0.1"


def test_refusals_are_closed_without_an_answer_and_counted(router: RouterProcess) -> None:
    before = proxy_rejections(router)
    assert set(before) == {"untrusted", "malformed", "timeout"}
    with connect(router.port, source="127.0.0.3") as sock:  # not a trusted proxy: its header is not believed
        with contextlib.suppress(ConnectionError):
            sock.sendall(v1("203.0.113.8") + request())
        closed_without_answer(sock, 3)
    with connect(router.port) as sock:  # no header at all: HTTP straight to a listener that expects one
        sock.sendall(request())
        closed_without_answer(sock, 3)
    with connect(router.port) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 51000 99999\r\n" + request())  # a port over 65535
        closed_without_answer(sock, 3)
    with connect(router.port) as sock:  # a header that stops coming: closed after --header-timeout (1 s)
        sock.sendall(b"PROXY TCP4 203.0.1")
        assert 0.8 < closed_without_answer(sock, 4) < 2.5
    with connect(router.port):  # a TCP health check: connected and closed, nothing sent; not counted
        pass
    assert status_of(exchange(router.port, v1("203.0.113.10") + request())) == 200
    time.sleep(0.2)
    after = proxy_rejections(router)
    assert {reason: after[reason] - before[reason] for reason in after} == {
        "untrusted": 1, "malformed": 2, "timeout": 1}
    reasons = [event["reason"] for event in router.process.events_named("proxy_protocol.rejected")]
    assert {"untrusted", "malformed", "timeout"} <= set(reasons)


def test_without_the_setting_a_proxy_header_is_a_bad_request_as_before(tmp_path: Path, model: StartedModel) -> None:
    router = start_router(tmp_path, Config(key=KEY).deployment("main", [model.url], weight=100),
                          "--trusted-proxies", "127.0.0.1")
    try:
        assert status_of(exchange(router.port, v1("203.0.113.7") + request())) == 400
        assert proxy_rejections(router) == {"untrusted": 0, "malformed": 0, "timeout": 0}
    finally:
        router.stop()


def test_the_per_client_limit_and_the_connection_limit_see_the_header(tmp_path: Path, model: StartedModel) -> None:
    router = start_router(tmp_path, Config(key=KEY).deployment("main", [model.url], weight=100, concurrency=4),
                          *PROXIED, "--max-connections", "5", "--max-connections-per-client", "2")
    try:
        held = []
        for _ in range(2):
            held.append(connect(router.port))
            held[-1].sendall(v1("198.51.100.1"))
        wait_until(lambda: open_connections(router) == 2, 5, "two connections counted")
        # before, every connection came from the load balancer, a trusted proxy: never limited
        answer = exchange(router.port, v1("198.51.100.1") + request(), quiet_ok=True)
        assert status_of(answer) == 503 and b"from this address" in answer
        assert status_of(exchange(router.port, v1("198.51.100.2") + request(), quiet_ok=True)) == 200
        silent = [connect(router.port) for _ in range(3)]  # their headers still to come: they hold places too
        time.sleep(0.3)
        answer = exchange(router.port, v1("198.51.100.3") + request(), quiet_ok=True)
        assert status_of(answer) == 503 and b"too many open connections" in answer
        for sock in silent:
            sock.close()
        wait_until(lambda: status_of(exchange(router.port, v1("198.51.100.3") + request(), quiet_ok=True)) == 200,
                   5, "served once the silent connections are gone")
        for sock in held:
            sock.close()
    finally:
        router.stop()


def test_the_drain_closes_connections_still_waiting_for_their_header(tmp_path: Path, model: StartedModel) -> None:
    router = start_router(tmp_path, Config(key=KEY).deployment("main", [model.url], weight=100),
                          *PROXIED, "--drain-delay", "0.3")
    try:
        waiting = connect(router.port, timeout=10)
        waiting.sendall(b"PROXY TCP4 ")  # (--header-timeout is 10 s)
        busy = connect(router.port, timeout=10)
        whole = v1("203.0.113.20") + request()
        busy.sendall(whole[:-10])  # its header read, its request half sent
        time.sleep(0.2)
        router.process.terminate()
        assert closed_without_answer(waiting, 3) < 2.5
        busy.sendall(whole[-10:])
        answer = read_all(busy)
        assert echoed(answer)["x-forwarded-for"] == "203.0.113.20" and b"connection: close" in answer.lower()
        assert router.process.wait(10) == 0
        for sock in (waiting, busy):
            sock.close()
    finally:
        router.stop()
