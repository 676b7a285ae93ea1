"""Mirror copies through a real router: each one leaves the in-flight count exactly once, however it ends."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

from tests.routing import Config, RouterProcess, closed_port, connect, one_shot_replica, start_router
from tests.scrape import Scrape, scrape, wait_for

SCORE = "/api/v1/endpoint/demo/score"
IN_FLIGHT = "inference_router_mirror_in_flight"


def post(router: RouterProcess, body: bytes = b"{}", query: str = "") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=15)
    try:
        conn.request("POST", SCORE + (f"?{query}" if query else ""), body=body, headers=router.auth)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def send_head(router: RouterProcess, query: str, content_length: int, body: bytes) -> socket.socket:
    """A request whose body is `body` of `content_length` bytes, sent on a socket left open."""
    s = connect(router.port, timeout=15)
    s.sendall(f"POST {SCORE}?{query} HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {router.key}\r\n"
              f"Content-Length: {content_length}\r\n\r\n".encode() + body)
    return s


def copies(metrics: Scrape) -> tuple[float | None, float | None, float | None]:
    """In flight, sent, dropped."""
    return (metrics.value(IN_FLIGHT), metrics.value("inference_router_mirror_requests_total", result="sent"),
            metrics.value("inference_router_mirror_requests_total", result="dropped"))


def settled(router: RouterProcess, sent: int, dropped: int) -> None:
    """Every copy is over, and the totals are these; the count stays at zero (never goes below)."""
    assert copies(wait_for(router, lambda m: copies(m) == (0, sent, dropped))) == (0, sent, dropped)
    time.sleep(0.2)
    assert copies(scrape(router)) == (0, sent, dropped)


def test_the_in_flight_count_of_copies_returns_to_zero_however_they_end(sample_model_factory,
                                                                        tmp_path: Path) -> None:
    live = sample_model_factory("--name", "live")
    shadow = sample_model_factory("--name", "shadow")
    hung = sample_model_factory("--name", "hung", "--latency-ms", "6000")
    config = (Config().deployment("live", [live.url], weight=100, concurrency=8)
              .deployment("shadow", [shadow.url], concurrency=4))
    config.mirror = {"shadow": 50}  # every second request, exactly: pairs of requests make one copy each
    router = start_router(tmp_path, config)

    def shadow_at(url: str, **settings: int) -> None:
        config.deployment("shadow", [url], **settings)
        after = len(router.process.events)
        router.write_config(config.yaml())
        router.process.wait_for_event("config.reloaded", after=after, timeout=5)

    try:
        # answered
        assert [post(router) for _ in range(4)] == [200] * 4
        settled(router, sent=2, dropped=0)

        # the copy is too big (and dropped), or the live client goes away before its body is complete
        assert [post(router, b"x" * (1024 * 1024 + 1)) for _ in range(2)] == [200] * 2
        for s in [send_head(router, "", 10, b"{}") for _ in range(2)]:
            s.close()
        settled(router, sent=2, dropped=2)

        # the mirror's replica refuses connections; then the live client of the failed copy goes away
        with closed_port() as port:
            shadow_at(f"http://127.0.0.1:{port}")
            assert [post(router) for _ in range(2)] == [200] * 2
            clients = [send_head(router, "latency_ms=500", 2, b"{}") for _ in range(2)]
            settled(router, sent=2, dropped=2)  # the failed copy is counted out (neither sent nor dropped)
            for s in clients:
                s.close()
            settled(router, sent=2, dropped=2)  # its client leaving does not count it out again

        # the mirror's replica hangs up on the copy it was sent
        with one_shot_replica(b"") as hanging_up:
            shadow_at(hanging_up)
            assert [post(router) for _ in range(2)] == [200] * 2
            settled(router, sent=3, dropped=2)

        # the mirror's replica is too slow for its timeout; a copy that finds its one slot taken is dropped
        shadow_at(hung.url, timeout_ms=2000, concurrency=1)  # the four posts take far less than 2 s
        assert [post(router) for _ in range(4)] == [200] * 4
        settled(router, sent=4, dropped=3)

        # a copy under way whose live client goes away goes on, and ends
        shadow_at(shadow.url)
        clients = [send_head(router, "latency_ms=300", 2, b"{}") for _ in range(2)]
        assert wait_for(router, lambda m: m.value(IN_FLIGHT) == 1).value(IN_FLIGHT) == 1  # the copy is under way
        for s in clients:
            s.close()
        settled(router, sent=5, dropped=3)
    finally:
        router.stop()
