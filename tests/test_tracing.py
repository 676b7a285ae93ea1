"""W3C traceparent: the router's span for every request, unit by unit and through a real router."""

from __future__ import annotations

import importlib.util
import itertools
import re
import time
from pathlib import Path

import httpx
import pytest

from router import tracing
from router.errors import ConfigError
from router.front.scoring import RequestHead, new_request_id
from router.tracing import SpanExport, parent_span_id
from tests.routing import Config, start_router

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")
CALLER = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def traceparent(incoming: bytes) -> bytes:
    """What the router sends upstream for a request that came with `incoming`."""
    return tracing.traceparent(incoming, new_request_id()[24:])


def test_a_request_without_traceparent_starts_a_new_trace() -> None:
    sent = {traceparent(b"") for _ in range(1000)}
    assert len(sent) == 1000
    assert len({s[3:35] for s in sent}) == 1000 and len({s[36:52] for s in sent}) == 1000
    lows = [int(traceparent(b"")[19:35], 16) for _ in range(100)]  # where ratio samplers decide: random
    assert len(set(lows)) == 100 and sum(b - a == 1 for a, b in itertools.pairwise(lows)) < 5
    assert sum(low < 2**63 for low in lows) in range(20, 81)
    for s in sent:
        m = TRACEPARENT.fullmatch(s.decode())
        assert m and m[1] != "0" * 32 and m[2] != "0" * 16
        assert m[3] == "00"  # not sampled: nothing is recorded while export is off


def test_the_routers_span_ids_are_random_not_a_serial_number() -> None:
    spans = sorted(int(RequestHead(b"POST", b"/score", [], True).traceparent[40:52], 16) for _ in range(100))
    # before: a serial number per process, so the next span was the last plus one (it told the request rate)
    assert max(b - a for a, b in itertools.pairwise(spans)) > 1000


def test_a_valid_traceparent_is_continued_with_the_routers_span() -> None:
    sent = traceparent(CALLER)
    assert sent[:36] == CALLER[:36] and sent[52:] == CALLER[52:]  # trace id and flags kept
    assert sent[36:52] != CALLER[36:52] and len(sent) == 55
    assert traceparent(CALLER) != sent  # a new span per request
    assert parent_span_id(CALLER, sent) == CALLER[36:52]
    assert traceparent(CALLER[:-2] + b"00")[53:] == b"00"
    assert traceparent(b" " + CALLER + b" ")[:36] == CALLER[:36]  # optional whitespace around the value


@pytest.mark.parametrize("caller", [
    b"00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
    b"00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent id
    b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # version 00 has no more fields
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",  # short parent id
    b"garbage",
])
def test_an_invalid_traceparent_starts_a_new_trace(caller: bytes) -> None:
    sent = traceparent(caller)
    assert TRACEPARENT.fullmatch(sent.decode()) and sent[3:35] != caller[3:35]
    assert parent_span_id(caller, sent) == b""


def test_a_later_version_is_read_as_version_00() -> None:
    caller = b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more-fields"
    sent = traceparent(caller)
    assert sent.startswith(b"00-0af7651916cd43dd8448eb211c80319c-") and sent.endswith(b"-01") and len(sent) == 55


def test_span_export_needs_a_known_exporter_and_the_optional_sdk() -> None:
    with pytest.raises(ConfigError, match="trace_export"):
        SpanExport("jaeger")
    if importlib.util.find_spec("opentelemetry") is None:
        with pytest.raises(ConfigError, match=r"pip install -e '\.\[otel\]'"):
            SpanExport("console")
        assert tracing.new_trace_flags == b"00"
    else:  # the extra is installed here: export starts and new traces are sampled while it runs
        export = SpanExport("console")
        assert tracing.new_trace_flags == b"01"
        export.shutdown()
        assert tracing.new_trace_flags == b"00"


def test_the_model_gets_the_routers_span_and_the_access_log_names_the_trace(sample_model_factory,
                                                                            tmp_path: Path) -> None:
    model = sample_model_factory()
    router = start_router(tmp_path, Config().deployment("blue", [model.url], weight=100))
    try:
        with httpx.Client(timeout=10, headers=router.auth) as client:
            fresh = [client.post(router.score_url(), content=b"{}").json()["headers"] for _ in range(2)]
            continued = client.post(router.score_url(), content=b"{}",
                                    headers={"traceparent": CALLER.decode()}).json()
            invalid = client.post(router.score_url(), content=b"{}", headers={"traceparent": "nope"}).json()
        sent = [h["traceparent"] for h in fresh]
        assert all(TRACEPARENT.fullmatch(s) for s in sent) and sent[0][3:35] != sent[1][3:35]
        got = continued["headers"]["traceparent"]
        assert got[:36] == CALLER[:36].decode() and got[36:52] != CALLER[36:52].decode() and got.endswith("-01")
        assert TRACEPARENT.fullmatch(invalid["headers"]["traceparent"])
        assert invalid["headers"]["traceparent"][3:35] not in {s[3:35] for s in sent}
        deadline = time.monotonic() + 5
        while len(router.process.events_named("access")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        logged = [line["trace_id"] for line in router.process.events_named("access")]
        assert logged == [sent[0][3:35], sent[1][3:35], CALLER[3:35].decode(), invalid["headers"]["traceparent"][3:35]]
    finally:
        router.stop()
