"""The shape of a forwarded request: what one router tells another when it hands a request over.

Not wired into the data plane yet. When a router has no free slot of its own for a request's
deployment, it sends the request, once, to the member that said it has the most free slots
(`PeerGroup.forward_target`), on that router's peer port:

    <method> /peer/v1/forward<original path and query> HTTP/1.1
    authorization: Bearer <the peers' key>      (the client's own credential stays behind: it was checked)
    x-peer-endpoint: <endpoint>                  x-peer-deployment: <namespace>/<deployment> (already chosen)
    x-peer-queue-ms: <queue budget left>         x-peer-request-ms: <request budget left>
    x-peer-hop: 1
    ... the request's other headers as the first router would send them upstream (x-request-id,
    traceparent, X-Forwarded-*), and its body, streamed

The receiving router takes it on its own slots only (never a second hop), queues it at most the
queue budget left, ends it within the request budget left, and answers as it would a client: the
model's answer, or its own 502, 503 with Retry-After, or 504. The first router relays that answer
unchanged, so statuses mean what they mean with one router. If the peer cannot be reached before a
byte of the request went out, the first router queues the request itself, within what is left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from router.errors import BadRequest

PATH_PREFIX = b"/peer/v1/forward"
_ENDPOINT, _DEPLOYMENT = b"x-peer-endpoint", b"x-peer-deployment"
_QUEUE, _REQUEST, _HOP = b"x-peer-queue-ms", b"x-peer-request-ms", b"x-peer-hop"
HEADERS = (_ENDPOINT, _DEPLOYMENT, _QUEUE, _REQUEST, _HOP)


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """What travels with a forwarded request besides its own head and body."""

    endpoint: str
    deployment: str  # namespace/name
    queue_budget_ms: int  # how much longer it may wait for a slot
    request_budget_ms: int  # how much longer it may take in all

    @classmethod
    def budgets_left(cls, endpoint: str, deployment: str, *, now: float, queue_deadline: float,
                     request_deadline: float) -> ForwardedRequest:
        """From the first router's deadlines (seconds, its own clock): what is left, in whole ms (rounded down)."""
        return cls(endpoint, deployment, max(0, math.floor((queue_deadline - now) * 1000)),
                   max(0, math.floor((request_deadline - now) * 1000)))

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(_ENDPOINT, self.endpoint.encode()), (_DEPLOYMENT, self.deployment.encode()),
                (_QUEUE, str(self.queue_budget_ms).encode()), (_REQUEST, str(self.request_budget_ms).encode()),
                (_HOP, b"1")]

    @classmethod
    def from_headers(cls, headers: Mapping[bytes, bytes]) -> ForwardedRequest:
        """The receiving side: a BadRequest names the header that is missing or wrong."""
        values = {}
        for name in HEADERS:
            value = headers.get(name)
            if value is None:
                raise BadRequest(f"a forwarded request needs {name.decode()}")
            values[name] = value.decode("latin-1")
        if values[_HOP] != "1":
            raise BadRequest("x-peer-hop: a request is forwarded once at most")
        budgets = []
        for name in (_QUEUE, _REQUEST):
            if not (values[name].isascii() and values[name].isdigit()):  # int() refuses some other digits
                raise BadRequest(f"{name.decode()}: expected whole milliseconds, got {values[name]!r}")
            budgets.append(int(values[name]))
        if "/" not in values[_DEPLOYMENT]:
            raise BadRequest(f"x-peer-deployment: expected namespace/name, got {values[_DEPLOYMENT]!r}")
        return cls(values[_ENDPOINT], values[_DEPLOYMENT], budgets[0], budgets[1])
