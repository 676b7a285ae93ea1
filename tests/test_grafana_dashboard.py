"""The Grafana dashboard asks only for metrics a real router exports, and shows every one of the router's own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.routing import Config, start_router
from tests.scrape import scrape

DASHBOARD = Path(__file__).resolve().parents[1] / "manifests" / "grafana" / "inference-router.json"
# PromQL words the dashboard may use besides metric names
PROMQL = {"sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "time", "and", "or",
          "unless", "bool", "label_values"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def queries(dashboard: dict) -> list[str]:
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    found += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def names_in(expr: str) -> set[str]:
    """The identifiers of a PromQL expression that are neither labels, strings, durations nor variables."""
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"label_values\(([^,)]*),[^)]*\)", r"\1", expr)  # label_values(metric, label)
    expr = re.sub(r"\$\w+", "", expr)
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL


def test_every_expression_uses_exported_metrics_and_every_router_metric_is_shown(sample_model_factory,
                                                                                 tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "inference-router" and dashboard["panels"]
    model = sample_model_factory()
    router = start_router(tmp_path, Config().deployment("blue", [model.url], weight=100))
    try:
        assert httpx.post(router.score_url(), headers=router.auth, content=b"{}", timeout=10).status_code == 200
        families = scrape(router).families
    finally:
        router.stop()
    exported = {name + suffix for name, kind in families.items() for suffix in SUFFIXES.get(kind, ("",))}
    used: set[str] = set()
    for expr in queries(dashboard):
        names = names_in(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} asks for {sorted(names - exported)}, which the router does not export"
        used |= names
    ours = {name for name in families if name.startswith("inference_router_")}
    shown = {name for name in ours if any(u.startswith(name) for u in used)}
    assert shown == ours, f"not on the dashboard: {sorted(ours - shown)}"
    assert len(ours) >= 17


def test_the_expression_reader_finds_metrics_and_nothing_else() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, deployment) (rate(inference_router_queue_wait_seconds_bucket'
            '{job=~"$job", deployment=~"a|b"}[$__rate_interval]))) / on (x) time() - up')
    assert names_in(expr) == {"inference_router_queue_wait_seconds_bucket", "up"}
    assert names_in('label_values(inference_router_requests_total{job=~"$job"}, endpoint)') == {
        "inference_router_requests_total"}
