"""`make loadtest`: locust against the demo setup on loopback, a report, and a picture.

Starts the demo's setup (two sample-model replicas each for deployments blue and
green, the router with the bundled config and a fresh key), then:
  1. one headless locust run (loadtests/locustfile.py, `--users` users for `--run-time`
     seconds): locust's HTML report and CSVs in loadtests/out/ (locust.html, locust_*.csv);
  2. concurrency steps (1, 2, 4, ... users, `--step-time` seconds each): throughput and
     p50/p99 latency per step in concurrency.csv, plotted in concurrency.png;
  3. the router's /metrics after all that, in metrics.txt.
It exits 1 if a call failed. Everything it starts is stopped; each run is bounded in time.

    python loadtests/loadtest.py [--run-time 15] [--users 16] [--steps 1,2,4,8,16,32] [--step-time 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

from harness import start

from router.demo import REPLICAS, write_config

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"


class Setup:
    """Sample models and the router, as the demo runs them, as child processes."""

    def __init__(self, workdir: Path, model_latency_ms: float) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.key = secrets.token_urlsafe(24)
        urls = {}
        for name in REPLICAS:
            proc, ready = start([sys.executable, "-m", "router.sample_model", "--port", "0",
                                 "--name", name.replace("_", "-"), "--latency-ms", str(model_latency_ms)])
            self.procs.append(proc)
            urls[name] = f"http://127.0.0.1:{ready['port']}"
        config = write_config(workdir, urls, self.key)
        router, ready = start([sys.executable, "-m", "router.cli", "serve", "--config", str(config),
                               "--allow-insecure-connections", "--host", "127.0.0.1", "--port", "0",
                               "--admin-port", "0", "--access-log", "off"])
        self.procs.append(router)
        self.url = f"http://127.0.0.1:{ready['port']}"
        self.admin_url = f"http://127.0.0.1:{ready['admin_port']}"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_locust(setup: Setup, users: int, seconds: float, prefix: Path, *, html: Path | None = None,
               log: IO[str] | None = None) -> int:
    """One headless locust run; its CSVs at `prefix`_*.csv; its exit code (non-zero: a call failed)."""
    args = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", setup.url,
            "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds:g}s",
            "--stop-timeout", "5", "--csv", str(prefix), "--only-summary"]
    if html is not None:
        args += ["--html", str(html)]
    env = {**os.environ, "ROUTER_KEY": setup.key, "ROUTER_ENDPOINT": "demo", "ROUTER_DEPLOYMENT": "green"}
    return subprocess.run(args, env=env, stdout=log, stderr=subprocess.STDOUT if log else None,
                          timeout=seconds + 60).returncode


def aggregated(prefix: Path) -> dict[str, str]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")


def plot(steps: list[dict[str, float]], path: Path, setup: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [s["users"] for s in steps]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5))
    top.plot(users, [s["rps"] for s in steps], marker="o", color="tab:blue")
    top.set_ylabel("throughput (requests/s)")
    top.set_ylim(bottom=0)
    top.set_title(f"inference-router: throughput and latency against concurrency\n{setup}", fontsize=10)
    bottom.plot(users, [s["p50_ms"] for s in steps], marker="o", label="p50", color="tab:green")
    bottom.plot(users, [s["p99_ms"] for s in steps], marker="o", label="p99", color="tab:red")
    bottom.set_ylabel("latency (ms)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("concurrent users (each sends its next call when the last is answered)")
    bottom.set_xscale("log", base=2)
    bottom.set_xticks(users, [str(int(u)) for u in users])
    bottom.legend()
    for axes in (top, bottom):
        axes.grid(True, alpha=0.3)
    failures = sum(s["failures"] for s in steps)
    figure.text(0.99, 0.01, f"{failures:.0f} failed calls", ha="right", fontsize=8, color="gray")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "out", help="where reports go (loadtests/out)")
    parser.add_argument("--run-time", type=float, default=15, help="seconds of the main run")
    parser.add_argument("--users", type=int, default=16, help="users in the main run")
    parser.add_argument("--steps", default="1,2,4,8,16,32", help="users at each concurrency step")
    parser.add_argument("--step-time", type=float, default=5, help="seconds per concurrency step")
    parser.add_argument("--model-latency-ms", type=float, default=5, help="the sample models' latency")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory(prefix="router-loadtest-") as tmp:
        setup = Setup(Path(tmp), args.model_latency_ms)
        try:
            with open(out / "locust.log", "w") as log:
                print(f"locust: {args.users} users for {args.run_time:g} s against {setup.url}", flush=True)
                failed |= run_locust(setup, args.users, args.run_time, out / "locust", html=out / "locust.html",
                                     log=log) != 0
                steps = []
                for users in (int(u) for u in args.steps.split(",")):
                    code = run_locust(setup, users, args.step_time, Path(tmp) / f"step{users}", log=log)
                    row = aggregated(Path(tmp) / f"step{users}")
                    steps.append({"users": users, "rps": float(row["Requests/s"]), "p50_ms": float(row["50%"]),
                                  "p99_ms": float(row["99%"]), "requests": float(row["Request Count"]),
                                  "failures": float(row["Failure Count"])})
                    failed |= code != 0
                    print(f"  {users:>3} users: {steps[-1]['rps']:7.0f} req/s  p50 {steps[-1]['p50_ms']:5.0f} ms  "
                          f"p99 {steps[-1]['p99_ms']:5.0f} ms  failures {steps[-1]['failures']:.0f}", flush=True)
            with open(out / "concurrency.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(steps[0]))
                writer.writeheader()
                writer.writerows(steps)
            plot(steps, out / "concurrency.png", f"demo setup (blue 90 %, green 10 %, 2 sample-model replicas each, "
                 f"{args.model_latency_ms:g} ms), router and locust on {os.cpu_count()} cores")
            with urllib.request.urlopen(f"{setup.admin_url}/metrics", timeout=10) as response:
                (out / "metrics.txt").write_bytes(response.read())
        finally:
            setup.stop()
    main_run = aggregated(out / "locust")
    print(f"main run: {main_run['Request Count']} calls, {main_run['Failure Count']} failed, "
          f"{float(main_run['Requests/s']):.0f} req/s; reports in {out} ({time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
