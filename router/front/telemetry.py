"""What the data plane reports when a request ends: metrics, an access log line, a span.

`Telemetry.ended` runs once per exchange, on the hot path, so it does the least it can:
it adds to the counters of the request's (endpoint, deployment), found once per
routing table, and appends one tuple to a list when the access log or the span export
wants the request. Access-log lines are formatted at the end of the loop turn (after
the answers are sent) and handed to the log, which writes them in batches (see
`AccessLog`); `run` flushes it and exports spans every `interval`, and `close` once more
at shutdown.

How requests end, and what is counted (`status`): the answer completed (the model's
status); the router answered with its own error (its status; a rejection, with a
reason); an answer already under way was cut (the status sent, and a rejection:
timeout or upstream); the client went away first (499, no rejection).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from time import perf_counter
from typing import TYPE_CHECKING, Any

from router.access_log import AccessLog, Record
from router.errors import RouterError
from router.metrics import BUCKETS, NO_REPLICA, REASONS, RequestStats, RouteStats
from router.tracing import SpanExport

if TYPE_CHECKING:
    from router.balancing.table import DeploymentRoute
    from router.front.exchange import Exchange
    from router.settings import RouterSettings

CLIENT_CLOSED = 499  # nginx's code for a client that went away before its answer was complete
_ROUTES = {b"POST": "/api/v1/endpoint/{endpoint}/score", b"GET": "/api/v1/endpoint/{endpoint}/swagger.json"}


class Telemetry:
    def __init__(self, *, metrics: bool = True, access_log: AccessLog | None = None, spans: SpanExport | None = None,
                 interval: float = 0.1) -> None:
        self.metrics = metrics  # off only to measure what counting costs (loadtests/bench.py)
        self.stats = RequestStats()
        self.access_log = access_log
        self.spans = spans
        self.interval = interval
        self.records: list[Record] = []  # for the access log: this loop turn's, formatted at its end
        self.span_records: list[Record] = []

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> Telemetry:
        spans = SpanExport(settings.trace_export) if settings.trace_export != "off" else None
        return cls(metrics=settings.metrics, access_log=AccessLog.from_setting(settings.access_log),
                   spans=spans)

    # -- the hot path -------------------------------------------------------------------------
    def ended(self, ex: Exchange, status: int, error: RouterError | None = None) -> None:
        """`ex` ended with `status` (the router's own `error`, if it answered or cut the answer)."""
        now = perf_counter()
        total = now - ex.started
        route = ex.deployment
        if self.metrics:  # Durations.observe, written out: this runs for every request
            stats = route.stats if route is not None else None
            if stats is None:
                stats = self._route_stats(ex, route)
            codes = stats.codes
            codes[status] = codes.get(status, 0) + 1
            if error is not None:
                _reject(stats, error, no_replica=route is not None and not route.balancer.replicas)
            durations = stats.duration
            durations.counts[bisect_left(BUCKETS, total)] += 1
            durations.sum += total
            if ex.attempts:
                durations = stats.queue_wait
                durations.counts[bisect_left(BUCKETS, ex.queued)] += 1
                durations.sum += ex.queued
                durations, upstream = stats.upstream, now - ex.admitted_at
                durations.counts[bisect_left(BUCKETS, upstream)] += 1
                durations.sum += upstream
                if ex.attempts > 1:
                    stats.retries += ex.attempts - 1
        log, spans = self.access_log, self.spans
        if log is not None or spans is not None:
            head = ex.head
            logged = log is not None and (log.sample >= 1.0 or log.keeps(status))
            traced = spans is not None and head.traceparent[53:55] != b"00"
            if logged or traced:
                attempted = ex.attempts > 0
                record = (now, head.request_id, head.client_request_id, head.traceparent, head.method,
                          route.spec.endpoint_name if route is not None else _endpoint_named(ex),
                          route.name if route is not None else "", ex.tried[-1].url if ex.tried else "", status,
                          ex.body_bytes, ex.bytes_out, ex.queued if attempted else -1.0,
                          now - ex.admitted_at if attempted else -1.0, total, max(0, ex.attempts - 1),
                          error.code if error is not None else "", ex.client.peer_host, head.caller_traceparent)
                if logged:
                    if not self.records:  # the first of this turn: format them all when the turn ends
                        ex.client.front.loop.call_soon(self._format)
                    self.records.append(record)
                if traced:
                    self.span_records.append(record)

    def replica_failed(self, ex: Exchange, kind: str) -> None:
        """A replica failed `ex`: `connect` (counts towards its ejection) or `answer` (invalid, cut, too big)."""
        if self.metrics:
            route = ex.deployment
            stats = route.stats if route is not None else None
            if stats is None:
                stats = self._route_stats(ex, route)
            stats.replica_failures[kind] = stats.replica_failures.get(kind, 0) + 1

    def refused(self, error: RouterError, request_id: bytes, peer: bytes) -> None:
        """A request refused before it was read whole (malformed, over a limit, too many connections)."""
        if self.metrics:
            stats = self.stats.route("", "")
            stats.codes[error.status] = stats.codes.get(error.status, 0) + 1
            _reject(stats, error)
        if self.access_log is not None:
            if not self.records:
                asyncio.get_running_loop().call_soon(self._format)
            self.records.append((perf_counter(), request_id, b"", b"", b"", "", "", "", error.status, 0, 0, -1.0,
                                 -1.0, 0.0, 0, error.code, peer, b""))

    def _route_stats(self, ex: Exchange, route: DeploymentRoute | None) -> RouteStats:
        if route is not None:  # found once per route (a new table has new routes), kept on the route
            stats = route.stats = self.stats.route(route.spec.endpoint_name, route.name)
            return stats
        return self.stats.route(_endpoint_named(ex), "")

    # -- off the hot path ---------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()

    def _format(self) -> None:
        """Format the access-log lines of the requests that ended in this loop turn: after the answers
        are flushed, a few at a time, never a whole interval's batch at once (that pause would show
        in the tail latency)."""
        records, self.records = self.records, []
        if records and self.access_log is not None:
            self.access_log.write_lines(self.access_log.format(records, time.time() - perf_counter()), len(records))

    def flush(self) -> None:
        self._format()
        if self.access_log is not None:
            self.access_log.flush()
        if self.span_records and self.spans is not None:
            records, self.span_records = self.span_records, []
            offset = time.time() - perf_counter()
            self.spans.export(_span(r, offset) for r in records)

    def close(self) -> None:
        self.flush()
        if self.access_log is not None:
            self.access_log.close()
        if self.spans is not None:
            with contextlib.suppress(Exception):  # an unreachable collector must not hold up the exit
                self.spans.shutdown()

    def __repr__(self) -> str:
        return (f"<Telemetry metrics={self.metrics} access_log={self.access_log!r} "
                f"spans={self.spans is not None} pending={len(self.records)}>")


def _reject(stats: RouteStats, error: RouterError, no_replica: bool = False) -> None:
    """One more rejection, by the reason of the router's own `error`."""
    reason = NO_REPLICA if error.status == 503 and no_replica else REASONS.get(error.status, "other")
    stats.rejections[reason] = stats.rejections.get(reason, 0) + 1


def _endpoint_named(ex: Exchange) -> str:
    """No deployment was chosen: the endpoint, if the URL names one that exists (labels stay bounded)."""
    hit = ex.client.front.table.paths.get(ex.head.target)
    return hit[0].name if hit is not None else ""


def _span(r: Record, offset: float) -> tuple[bytes, bytes, int, int, str, dict[str, Any], bool]:
    end = r[0] + offset
    attributes: dict[str, Any] = {"http.request.method": r[4].decode("latin-1"), "http.response.status_code": r[8],
                                  "inference_router.request_id": r[1].decode("latin-1")}
    for key, value in (("endpoint", r[5]), ("deployment", r[6]), ("replica", r[7]), ("error", r[15])):
        if value:
            attributes["inference_router." + key] = value
    if r[14]:
        attributes["inference_router.retries"] = r[14]
    name = f"{r[4].decode('latin-1')} {_ROUTES.get(r[4], 'unknown route')}"
    return r[3], r[17], int((end - r[13]) * 1e9), int(end * 1e9), name, attributes, r[8] >= 500 or bool(r[15])
