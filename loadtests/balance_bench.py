"""Balancing benchmark: one replica ten times slower than the other, least_loaded against round_robin.

Two sample-model replicas (fast: `--fast-ms`, slow: ten times that) sit behind the
router, one request at a time each (`maxConcurrentRequestsPerInstance: 1`). Client
threads send requests back to back; for each policy the run prints the share of
requests the fast replica served and the p50 and p99 latency, then the ratio of
round_robin's p99 to least_loaded's. Both policies are measured in the same run.

    python loadtests/balance_bench.py [--clients 4] [--requests 60] [--fast-ms 10] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import router_config, start

KEY = "balance-bench-key-0123"


def drive(port: int, clients: int, requests: int) -> list[tuple[float, str]]:
    results: list[tuple[float, str]] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(requests):
            started = time.perf_counter()
            conn.request("POST", "/api/v1/endpoint/bench/score", body=b"{}",
                         headers={"Authorization": f"Bearer {KEY}"})
            response = conn.getresponse()
            body = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {body}")
            mine.append(((time.perf_counter() - started) * 1000, body["name"]))
        conn.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def measure(policy: str, fast: str, slow: str, args: argparse.Namespace, workdir: Path) -> dict:
    path = workdir / f"{policy}.yaml"
    path.write_text(router_config([fast, slow], KEY, timeout_ms=30000, concurrency=1, queue_wait_ms=20000))
    router, ready = start([sys.executable, "-m", "router.cli", "serve", "--config", str(path),
                           "--allow-insecure-connections", "--host", "127.0.0.1", "--port", "0",
                           "--admin-port", "0", "--balancing-policy", policy])
    try:
        drive(ready["port"], 1, 5)  # warm up: connections and first latency samples
        results = drive(ready["port"], args.clients, args.requests)
    finally:
        router.send_signal(signal.SIGTERM)
        router.wait(10)
    latencies = sorted(ms for ms, _ in results)
    return {"policy": policy, "requests": len(results),
            "fast_share": sum(1 for _, name in results if name == "fast") / len(results),
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=60, help="per client")
    parser.add_argument("--fast-ms", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = []
    try:
        urls = {}
        for name, latency in (("fast", args.fast_ms), ("slow", args.fast_ms * 10)):
            proc, ready = start([sys.executable, "-m", "router.sample_model", "--port", "0", "--name", name,
                                 "--latency-ms", str(latency)])
            models.append(proc)
            urls[name] = f"http://127.0.0.1:{ready['port']}"
        with tempfile.TemporaryDirectory() as tmp:
            runs = [measure(policy, urls["fast"], urls["slow"], args, Path(tmp))
                    for policy in ("least_loaded", "round_robin")]
    finally:
        for proc in models:
            proc.send_signal(signal.SIGTERM)
        for proc in models:
            proc.wait(10)
    ratio = runs[1]["p99_ms"] / runs[0]["p99_ms"]
    if args.json:
        print(json.dumps({"runs": runs, "p99 round_robin/least_loaded": ratio}))
        return 0
    print(f"{args.clients} clients x {args.requests} requests; fast {args.fast_ms:g} ms, slow {args.fast_ms * 10:g} ms")
    print(f"{'policy':<13} {'fast share':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for run in runs:
        print(f"{run['policy']:<13} {run['fast_share']:>10.2f} {run['p50_ms']:>8.1f} {run['p99_ms']:>8.1f}")
    print(f"p99 round_robin/least_loaded: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
