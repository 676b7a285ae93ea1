"""Prometheus metrics: every name defined here, counted cheaply, rendered when scraped.

Three kinds of numbers, each kept where it costs least:
- Per request (counts by code, rejections, retries, durations): updated on the data
  plane's hot path. prometheus_client's `Counter.inc` and `Histogram.observe` take a
  lock and walk the buckets in Python (about 1 and 2 µs each here), which would cost a
  fast proxy more than ten percent; so the hot path adds to plain integers in one
  `RouteStats` per (endpoint, deployment), found once per routing table, and
  `RouterCollector` turns them into metric families at scrape time.
- State that already lives elsewhere (replicas ready and ejected, requests in flight,
  queue lengths, mirror copies, config reloads, open connections, PROXY protocol
  refusals): read at scrape time
  from the routing table and the sources, never updated per request.
- Rare events from other parts (discovery watch restarts and syncs, the TLS
  certificate's expiry): plain prometheus_client metrics, set through the functions
  at the bottom of this module.

Labels are bounded: endpoint and deployment names from the routing table ("" when a
request matched none), status codes, a fixed set of reasons; never a request id, a
path or a client address. prometheus_client is imported only here.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from router.balancing.table import RoutingTable

PREFIX = "inference_router_"
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
# seconds: a millisecond to five minutes (the longest requestTimeoutMs)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_LE = (*(f"{b:g}" for b in BUCKETS), "+Inf")

# Why the router itself ended a request, by the status it answered with.
REASONS: Mapping[int, str] = {400: "bad_request", 401: "auth", 403: "auth", 404: "not_found", 405: "bad_request",
                              408: "limit", 413: "limit", 414: "limit", 429: "limit", 431: "limit",
                              501: "bad_request", 502: "upstream", 503: "overload", 504: "timeout"}
NO_REPLICA = "no_replica"  # a 503 because the deployment has no replica at all, not because all are busy

prometheus_client.disable_created_metrics()  # the *_created series double every counter for little use
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...


class Durations:
    """A histogram's state without locks: counts per bucket (not cumulative) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1  # bucket i: BUCKETS[i-1] < seconds <= BUCKETS[i]
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        total = 0
        buckets: list[tuple[str, float]] = []
        for le, count in zip(_LE, self.counts, strict=True):
            total += count
            buckets.append((le, total))
        return buckets

    def __repr__(self) -> str:
        return f"<Durations count={sum(self.counts)} sum={self.sum:.3f}>"


class RouteStats:
    """What the requests to one (endpoint, deployment) came to; updated by the data plane."""

    __slots__ = ("codes", "duration", "queue_wait", "rejections", "replica_failures", "retries", "upstream")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.rejections: dict[str, int] = {}
        self.replica_failures: dict[str, int] = {}  # by kind: connect, answer
        self.retries = 0
        self.duration = Durations()  # start of the request to its end
        self.upstream = Durations()  # the last attempt's dispatch to a replica to the end
        self.queue_wait = Durations()  # start to the first admission to a replica

    def __repr__(self) -> str:
        return f"<RouteStats codes={self.codes} rejections={self.rejections} retries={self.retries}>"


class RequestStats:
    """Every `RouteStats`, by (endpoint, deployment); they live as long as the process."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteStats] = {}

    def route(self, endpoint: str, deployment: str) -> RouteStats:
        stats = self.routes.get((endpoint, deployment))
        if stats is None:
            stats = self.routes[endpoint, deployment] = RouteStats()
        return stats


class Plane(Protocol):
    """What the collector reads from the data plane at scrape time."""

    @property
    def table(self) -> RoutingTable: ...

    @property
    def connections(self) -> Any: ...  # a sized collection

    @property
    def mirrors(self) -> Any: ...  # .sent, .dropped, .in_flight

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def telemetry(self) -> Any: ...  # .access_log (None when off): .dropped

    @property
    def proxy_rejections(self) -> Mapping[str, int]: ...  # by reason


class RouterCollector:
    """The router's own metric families, built from its live state when /metrics is scraped."""

    def __init__(self, stats: RequestStats, plane: Callable[[], Plane | None], source: object) -> None:
        self.stats = stats
        self.plane = plane
        self.source = source  # a config source: `reloads` and `rejections` counts, where it keeps them

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        plane = self.plane()
        if plane is not None:
            yield from self._deployments(plane)
            mirrors = plane.mirrors
            copies = CounterMetricFamily(PREFIX + "mirror_requests", "Mirror copies of live requests, by result: "
                                         "sent to the shadow deployment or dropped (no free slot, too big, "
                                         "too many under way)", labels=["result"])
            copies.add_metric(["sent"], mirrors.sent)
            copies.add_metric(["dropped"], mirrors.dropped)
            yield copies
            yield GaugeMetricFamily(PREFIX + "mirror_in_flight", "Mirror copies under way", value=mirrors.in_flight)
            yield GaugeMetricFamily(PREFIX + "client_connections", "Open client connections",
                                    value=len(plane.connections))
            proxy = CounterMetricFamily(PREFIX + "proxy_protocol_rejections", "Connections closed before their "
                                        "PROXY protocol header was read (--proxy-protocol), by reason: untrusted "
                                        "(not from --trusted-proxies), malformed, timeout", labels=["reason"])
            for reason, count in plane.proxy_rejections.items():
                proxy.add_metric([reason], count)
            yield proxy
            log = plane.telemetry.access_log
            yield CounterMetricFamily(PREFIX + "access_log_dropped_lines", "Access-log lines never written: the "
                                      "reader of the log fell too far behind, or the stream failed",
                                      value=log.dropped if log is not None else 0)
        yield CounterMetricFamily(PREFIX + "config_reloads", "Configuration changes applied after the first",
                                  value=getattr(self.source, "reloads", 0))
        yield CounterMetricFamily(PREFIX + "config_rejections", "Configuration changes or resources rejected "
                                  "as invalid (the last good state kept serving)",
                                  value=getattr(self.source, "rejections", 0))

    def _requests(self) -> Iterator[Metric]:
        labels = ["endpoint", "deployment"]
        requests = CounterMetricFamily(PREFIX + "requests", "Requests ended, by endpoint, deployment and the "
                                       "status the client got (499: the client went away first)",
                                       labels=[*labels, "code"])
        rejections = CounterMetricFamily(PREFIX + "rejections", "Requests the router ended with its own error, "
                                         "by reason", labels=[*labels, "reason"])
        retries = CounterMetricFamily(PREFIX + "retries", "Requests sent again to another replica after a "
                                      "connection failure", labels=labels)
        failures = CounterMetricFamily(PREFIX + "replica_failures", "Replica failures, retried or not, by kind: "
                                       "connect (counts towards ejection) or answer (invalid, cut, too large)",
                                       labels=[*labels, "kind"])
        durations = {name: HistogramMetricFamily(PREFIX + name, text, labels=labels) for name, text in (
            ("request_duration_seconds", "Time from a request's head to the end of its answer"),
            ("upstream_duration_seconds", "Time from dispatch to a replica (the last attempt) to the end "
                                          "of the answer"),
            ("queue_wait_seconds", "Time from a request's head to its admission to a replica"))}
        for (endpoint, deployment), stats in list(self.stats.routes.items()):
            names = [endpoint, deployment]
            for code, count in sorted(stats.codes.items()):
                requests.add_metric([*names, str(code)], count)
            for reason, count in sorted(stats.rejections.items()):
                rejections.add_metric([*names, reason], count)
            retries.add_metric(names, stats.retries)
            for kind, count in sorted(stats.replica_failures.items()):
                failures.add_metric([*names, kind], count)
            for family, state in ((durations["request_duration_seconds"], stats.duration),
                                  (durations["upstream_duration_seconds"], stats.upstream),
                                  (durations["queue_wait_seconds"], stats.queue_wait)):
                if any(state.counts):
                    family.add_metric(names, state.cumulative(), state.sum)
        yield requests
        yield rejections
        yield retries
        yield failures
        yield from durations.values()

    def _deployments(self, plane: Plane) -> Iterator[Metric]:
        labels = ["endpoint", "deployment"]
        in_flight = GaugeMetricFamily(PREFIX + "in_flight", "Requests (and mirror copies) holding a replica slot",
                                      labels=labels)
        queued = GaugeMetricFamily(PREFIX + "queue_length", "Requests waiting for a free replica slot",
                                   labels=labels)
        replicas = GaugeMetricFamily(PREFIX + "replicas", "Replicas by state: ready, or ejected after "
                                     "connection failures", labels=[*labels, "state"])
        now = plane.loop.time()
        for endpoint in plane.table.endpoints.values():
            for deployment in endpoint.deployments.values():
                names = [endpoint.name, deployment.name]
                balancer = deployment.balancer
                ejected = sum(1 for r in balancer.replicas if r.ejected(now))
                in_flight.add_metric(names, sum(r.in_flight for r in balancer.replicas))
                queued.add_metric(names, len(balancer.queue))
                replicas.add_metric([*names, "ready"], len(balancer.replicas) - ejected)
                replicas.add_metric([*names, "ejected"], ejected)
        yield in_flight
        yield queued
        yield replicas


class _Scrape:
    """The process-wide registry and one router's collector, rendered together."""

    def __init__(self, collector: RouterCollector | None) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        if self.collector is not None:
            yield from self.collector.collect()


def exposition(collector: RouterCollector | None = None) -> bytes:
    """The text format of every metric, for GET /metrics (content type `CONTENT_TYPE`)."""
    return prometheus_client.generate_latest(_Scrape(collector))


# -- rare events, reported by other parts of the router ------------------------------------

_WATCH_RESTARTS = Counter(PREFIX + "discovery_watch_restarts", "Kubernetes watches started again (expired, "
                          "dropped or failed), by resource", ["resource"], registry=REGISTRY)
_STATUS_WRITE_FAILURES = Counter(PREFIX + "discovery_status_write_failures", "Status writes the API server "
                                 "refused or did not answer, by resource kind", ["resource"], registry=REGISTRY)
_LAST_SYNC = Gauge(PREFIX + "discovery_last_sync_timestamp_seconds", "When a state from the configuration "
                   "source was last applied (Unix time)", registry=REGISTRY)

_AUTOSCALE_DESIRED = Gauge(PREFIX + "autoscale_desired_replicas", "The size the autoscaler set (or, in local mode, "
                           "would set) for a deployment", ["namespace", "deployment"], registry=REGISTRY)
_AUTOSCALE_UTILIZATION = Gauge(PREFIX + "autoscale_utilization", "Demand over the stable window, in percent of "
                               "the deployment's current capacity", ["namespace", "deployment"], registry=REGISTRY)


class _CertificateExpiry:
    """The serving certificate's notAfter; no sample until one is known (0 would read as expired)."""

    expiry: float | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(PREFIX + "tls_certificate_expiry_timestamp_seconds",
                                   "When the served TLS certificate expires (Unix time)")
        if self.expiry is not None:
            family.add_metric([], self.expiry)
        yield family


_CERTIFICATE = _CertificateExpiry()
REGISTRY.register(_CERTIFICATE)


def watch_restarted(resource: str) -> None:
    """A Kubernetes watch on `resource` (a kind, e.g. "OnlineEndpoint") was started again."""
    _WATCH_RESTARTS.labels(resource).inc()


def status_write_failed(resource: str) -> None:
    """A status write on an object of kind `resource` failed (it is retried with its own backoff)."""
    _STATUS_WRITE_FAILURES.labels(resource).inc()


def synced(timestamp: float | None = None) -> None:
    """A state from the configuration source (file or cluster) was applied, now or at `timestamp`."""
    _LAST_SYNC.set(time.time() if timestamp is None else timestamp)


def set_certificate_expiry(timestamp: float) -> None:
    """The certificate now served expires at `timestamp` (Unix time); call at start and on each rotation."""
    _CERTIFICATE.expiry = timestamp


@functools.cache
def _peer_gauges() -> tuple[Gauge, Gauge]:
    """Registered on first use: a router without peers exports no peer families at all."""
    return (Gauge(PREFIX + "peers", "Other routers this one may share slots with, by state: member (in the "
                  "split), joining (alive, not in the split yet), leaving (draining)", ["state"], registry=REGISTRY),
            Gauge(PREFIX + "peer_owned_slots", "Replica slots this router may start requests on, by deployment "
                  "(several routers: its share of the deployment's slots)", ["deployment"], registry=REGISTRY))


def peers(states: Mapping[str, int], owned_slots: Mapping[str, int]) -> None:
    """The peer group's view, after each of its ticks (with --peers or --peer-service only)."""
    by_state, owned = _peer_gauges()
    for state, count in states.items():
        by_state.labels(state).set(count)
    owned.clear()
    for deployment, count in owned_slots.items():
        owned.labels(deployment).set(count)


def autoscale_decided(namespace: str, deployment: str, desired: int, utilization: float) -> None:
    """The autoscaler's latest decision for a deployment."""
    _AUTOSCALE_DESIRED.labels(namespace, deployment).set(desired)
    _AUTOSCALE_UTILIZATION.labels(namespace, deployment).set(utilization)


def autoscale_forget(namespace: str, deployment: str) -> None:
    """A deployment is no longer autoscaled (or no longer exists): no more samples for it."""
    for gauge in (_AUTOSCALE_DESIRED, _AUTOSCALE_UTILIZATION):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, deployment)
