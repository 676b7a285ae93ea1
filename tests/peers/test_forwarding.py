"""The forwarded request's budgets: what is left travels, rounded down, and a bad header is named."""

from __future__ import annotations

import pytest

from router.errors import BadRequest
from router.peers.forwarding import ForwardedRequest


def test_the_budgets_left_travel_in_whole_milliseconds_rounded_down() -> None:
    sent = ForwardedRequest.budgets_left("mnist", "models/blue", now=10.0, queue_deadline=10.2506,
                                         request_deadline=14.9999)
    assert (sent.queue_budget_ms, sent.request_budget_ms) == (250, 4999)
    assert ForwardedRequest.from_headers(dict(sent.headers())) == sent
    spent = ForwardedRequest.budgets_left("mnist", "models/blue", now=20.0, queue_deadline=19.0,
                                          request_deadline=19.5)
    assert (spent.queue_budget_ms, spent.request_budget_ms) == (0, 0)  # never negative: answered at once


@pytest.mark.parametrize(("change", "named"), [
    ({b"x-peer-hop": b"2"}, "x-peer-hop: a request is forwarded once at most"),
    ({b"x-peer-queue-ms": b"-5"}, "x-peer-queue-ms: expected whole milliseconds"),
    ({b"x-peer-request-ms": b"1e3"}, "x-peer-request-ms: expected whole milliseconds"),
    ({b"x-peer-request-ms": b"\xb2"}, "x-peer-request-ms: expected whole milliseconds"),  # latin-1 '²'
    ({b"x-peer-deployment": b"blue"}, "x-peer-deployment: expected namespace/name"),
])
def test_a_bad_forwarded_request_is_refused_naming_the_header(change: dict[bytes, bytes], named: str) -> None:
    headers = {**dict(ForwardedRequest("mnist", "models/blue", 100, 5000).headers()), **change}
    with pytest.raises(BadRequest, match=named):
        ForwardedRequest.from_headers(headers)


def test_a_missing_header_is_named() -> None:
    headers = dict(ForwardedRequest("mnist", "models/blue", 100, 5000).headers())
    del headers[b"x-peer-request-ms"]
    with pytest.raises(BadRequest, match="needs x-peer-request-ms"):
        ForwardedRequest.from_headers(headers)
