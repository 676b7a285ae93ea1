"""The metrics module without sockets: histogram buckets, the scrape-time collector, the rare-event metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from router import metrics
from router.access_log import AccessLog
from router.balancing.table import RoutingTable
from router.discovery.documents import load_yaml
from router.front.mirror import MirrorGate
from router.front.telemetry import Telemetry
from router.metrics import BUCKETS, Durations, RequestStats, RouterCollector, exposition
from tests.routing import Config


@dataclass
class Clock:
    now: float = 100.0

    def time(self) -> float:
        return self.now


@dataclass
class Plane:
    table: RoutingTable
    loop: Clock = field(default_factory=Clock)
    connections: set[object] = field(default_factory=set)
    mirrors: MirrorGate = field(default_factory=MirrorGate)
    telemetry: Telemetry = field(default_factory=lambda: Telemetry(metrics=False, access_log=AccessLog()))
    proxy_rejections: dict[str, int] = field(default_factory=lambda: {"untrusted": 0, "malformed": 0, "timeout": 0})


@dataclass
class Source:
    reloads: int = 0
    rejections: int = 0


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    durations = Durations()
    for seconds in (0.0, 0.001, 0.0011, 0.3, 300.0, 301.0):
        durations.observe(seconds)
    cumulative = dict(durations.cumulative())
    assert len(cumulative) == len(BUCKETS) + 1
    assert cumulative["0.001"] == 2 and cumulative["0.0025"] == 3 and cumulative["0.5"] == 4
    assert cumulative["300"] == 5 and cumulative["+Inf"] == 6
    assert abs(durations.sum - 601.3021) < 1e-9
    assert repr(durations) == "<Durations count=6 sum=601.302>"


def table(config: Config, previous: RoutingTable | None = None) -> RoutingTable:
    return RoutingTable.build(load_yaml(config.yaml(), origin="test"), previous)


def test_the_collector_reads_replicas_in_flight_queues_mirrors_and_reloads_at_scrape_time() -> None:
    config = Config().deployment("blue", ["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"],
                                 weight=100).deployment("green", ["http://127.0.0.1:7004"])
    plane = Plane(table(config))
    blue = plane.table.endpoints["demo"].deployments["blue"].balancer
    first, second, _ = blue.replicas
    for _ in range(3):
        first.fail(plane.loop.now, may_eject=True)  # ejected for a second
    second.in_flight = 2
    blue.enqueue(object())
    plane.mirrors.sent, plane.mirrors.dropped, plane.mirrors.in_flight = 5, 1, 1
    plane.connections.update({object(), object()})
    plane.proxy_rejections["malformed"] = 6
    assert plane.telemetry.access_log is not None
    plane.telemetry.access_log.refused, plane.telemetry.access_log.failed = 3, 2
    stats = RequestStats()
    route = stats.route("demo", "blue")
    route.codes[200] = 7
    route.rejections["overload"] = 2
    route.retries = 1
    route.duration.observe(0.2)
    collector = RouterCollector(stats, lambda: plane, Source(reloads=3, rejections=4))

    got = samples(exposition(collector))

    def value(name: str, **labels: str) -> Any:
        return got.get((f"inference_router_{name}", tuple(sorted(labels.items()))))

    assert value("replicas", endpoint="demo", deployment="blue", state="ready") == 2
    assert value("replicas", endpoint="demo", deployment="blue", state="ejected") == 1
    assert value("replicas", endpoint="demo", deployment="green", state="ready") == 1
    assert value("in_flight", endpoint="demo", deployment="blue") == 2
    assert value("queue_length", endpoint="demo", deployment="blue") == 1
    assert value("queue_length", endpoint="demo", deployment="green") == 0
    assert value("mirror_requests_total", result="sent") == 5 and value("mirror_requests_total", result="dropped") == 1
    assert value("mirror_in_flight") == 1 and value("client_connections") == 2
    assert value("access_log_dropped_lines_total") == 5
    assert value("proxy_protocol_rejections_total", reason="malformed") == 6
    assert value("proxy_protocol_rejections_total", reason="timeout") == 0
    assert value("config_reloads_total") == 3 and value("config_rejections_total") == 4
    assert value("requests_total", endpoint="demo", deployment="blue", code="200") == 7
    assert value("rejections_total", endpoint="demo", deployment="blue", reason="overload") == 2
    assert value("retries_total", endpoint="demo", deployment="blue") == 1
    assert value("request_duration_seconds_bucket", endpoint="demo", deployment="blue", le="0.25") == 1
    assert value("request_duration_seconds_count", endpoint="demo", deployment="blue") == 1
    assert value("upstream_duration_seconds_count", endpoint="demo", deployment="blue") is None  # none observed

    plane.loop.now += 2  # the ejection is over: the same replica counts as ready again
    got = samples(exposition(collector))
    assert value("replicas", endpoint="demo", deployment="blue", state="ejected") == 0

    plane.table = table(Config().deployment("green", ["http://127.0.0.1:7004"], weight=100), plane.table)
    got = samples(exposition(collector))
    assert value("replicas", endpoint="demo", deployment="blue", state="ready") is None  # gone with the table
    assert value("requests_total", endpoint="demo", deployment="blue", code="200") == 7  # counts stay


def test_rare_events_from_discovery_and_tls() -> None:
    before = samples(exposition())
    assert not any(name == "inference_router_tls_certificate_expiry_timestamp_seconds" for name, _ in before)
    metrics.watch_restarted("OnlineEndpoint")
    metrics.watch_restarted("OnlineEndpoint")
    metrics.synced(1_700_000_000.0)
    metrics.set_certificate_expiry(1_800_000_000.0)
    got = samples(exposition())
    restarts = ("inference_router_discovery_watch_restarts_total", (("resource", "OnlineEndpoint"),))
    assert got[restarts] == before.get(restarts, 0) + 2
    assert got[("inference_router_discovery_last_sync_timestamp_seconds", ())] == 1_700_000_000.0
    assert got[("inference_router_tls_certificate_expiry_timestamp_seconds", ())] == 1_800_000_000.0
    assert got[("process_cpu_seconds_total", ())] > 0
    assert not any(name.endswith("_created") for name, _ in got)
