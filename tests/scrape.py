"""Read a real router's /metrics in tests: parsed with prometheus_client's own parser.

    metrics = scrape(router)
    metrics.series("inference_router_requests_total", "endpoint", "deployment", "code")
    # {("demo", "blue", "200"): 4.0, ...}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.routing import RouterProcess


class HasAdmin(Protocol):
    @property
    def admin_url(self) -> str: ...


@dataclass
class Scrape:
    samples: list[tuple[str, dict[str, str], float]]  # sample name, labels, value
    families: dict[str, str]  # every family exported (even one without samples yet) → its type

    def series(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """The samples named `name`, keyed by the values of `labels` (in that order)."""
        found = {}
        for sample, values, value in self.samples:
            if sample == name:
                assert set(values) == set(labels), f"{name} has labels {sorted(values)}, not {sorted(labels)}"
                found[tuple(values[label] for label in labels)] = value
        return found

    def value(self, name: str, **labels: str) -> float | None:
        for sample, values, value in self.samples:
            if sample == name and values == labels:
                return value
        return None


def scrape(router: HasAdmin) -> Scrape:
    response = httpx.get(f"{router.admin_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples, families = [], {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = family.type
        samples.extend((s.name, dict(s.labels), s.value) for s in family.samples)
    return Scrape(samples, families)


def wait_for(router: RouterProcess, check: Callable[[Scrape], bool], timeout: float = 10) -> Scrape:
    """Scrape until `check` holds (state that changes while traffic is in flight); the last scrape if never."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = scrape(router)
        if check(metrics) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.02)


def open_connections(router: RouterProcess) -> float:
    """The client connections the router counts open."""
    return scrape(router).value("inference_router_client_connections") or 0.0


def proxy_rejections(router: HasAdmin) -> dict[str, float]:
    """Connections closed for their PROXY protocol header, by reason."""
    series = scrape(router).series("inference_router_proxy_protocol_rejections_total", "reason")
    return {reason: value for (reason,), value in series.items()}
