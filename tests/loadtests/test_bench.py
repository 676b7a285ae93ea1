"""The benchmark runs end to end (briefly) and reports every target and ratio.

Speed itself is judged by reading the benchmark's ratios, never asserted here: the
machine is shared and a timed assertion would be noise.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "loadtests" / "bench.py"


def test_bench_measures_direct_nginx_and_router() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--duration", "1", "--warmup", "1", "--rounds", "1", "--json"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == {"direct", "nginx", "router", "router-nolog", "router-bare"}
    for result in results.values():
        assert result["rps"] > 100, result
        assert result["errors"] == 0, result
        assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert results["router"]["cpu_us_per_req"] > 0 and results["nginx"]["cpu_us_per_req"] > 0
    assert set(report["ratios"]) >= {"router/nginx", "router/direct"}
    assert len(report["costs"]) == 4 and all(math.isfinite(cost) for cost in report["costs"].values())


@pytest.mark.timeout(660)  # valgrind is slow on a busy machine: the run's own limit, not the suite's 120 s
def test_instructions_per_request_are_counted() -> None:
    script = BENCH.with_name("instructions.py")
    out = subprocess.run([sys.executable, str(script), "--requests", "100", "--variant", "router", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # a request takes some tens of thousands of instructions: far from zero, far from the start-up's billion
    assert 20_000 < report["instructions_per_request"]["router"] < 2_000_000, report
    assert report["telemetry_cost"] is None
