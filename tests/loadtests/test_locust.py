"""The locustfile against a real router and sample models: 10 seconds headless, not one failed call."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.routing import Config, start_router
from tests.scrape import scrape

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"


def test_ten_seconds_of_locust_without_a_failure(sample_model_factory, tmp_path: Path) -> None:
    blue, green = (sample_model_factory("--name", name, "--latency-ms", "2") for name in ("blue", "green"))
    router = start_router(tmp_path, Config().deployment("blue", [blue.url], weight=90, concurrency=4)
                          .deployment("green", [green.url], weight=10, concurrency=4), "--access-log", "off")
    env = {**os.environ, "ROUTER_KEY": router.key, "ROUTER_ENDPOINT": "demo", "ROUTER_DEPLOYMENT": "green",
           "LOAD_PAYLOAD_BYTES": "2048", "LOAD_WEIGHTS": "6,2,2"}
    try:
        run = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host",
                              router.url, "--users", "4", "--spawn-rate", "4", "--run-time", "10s",
                              "--stop-timeout", "3", "--csv", str(tmp_path / "run"), "--only-summary"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        with open(tmp_path / "run_stats.csv", newline="") as f:
            rows = {row["Name"]: row for row in csv.DictReader(f)}
        assert set(rows) == {"score", "score pinned to green", "swagger", "Aggregated"}
        for name, row in rows.items():
            assert int(row["Request Count"]) > 20 and int(row["Failure Count"]) == 0, (name, row)
        requests = scrape(router).series("inference_router_requests_total", "endpoint", "deployment", "code")
        assert set(requests) <= {("demo", "blue", "200"), ("demo", "green", "200")}, requests
        # every call locust counted reached the router (it stops counting a little before its users stop)
        called = int(rows["Aggregated"]["Request Count"])
        assert called <= sum(requests.values()) <= called * 1.2
        assert requests[("demo", "green", "200")] >= int(rows["score pinned to green"]["Request Count"])
    finally:
        router.stop()
