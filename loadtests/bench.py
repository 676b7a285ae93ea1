"""Data-plane benchmark: the router against nginx as a reverse proxy, in one run.

It finds (or installs, as root with apt-get) nginx and wrk, starts a fast nginx
backend, and measures with wrk (1 KiB POSTs, 16 connections by default):
  direct  the backend itself
  nginx   nginx as a reverse proxy with upstream keep-alive
  router  `inference-router serve` with key auth on, metrics and the access log as in production
          (`--access-log on|off|sample=F`); then router-nolog (access log off) and router-bare
          (metrics off too), in turns (`--rounds`, medians): the differences are what metrics and
          the access log cost
Each proxy runs as one process pinned to core 1; wrk and the backend share core 0.
It prints requests/s, p50, p99 and the proxy's CPU microseconds per request (read
from /proc: steadier than throughput on a shared machine), then the ratios. The
machine is shared and noisy, so only ratios measured in the same run mean anything.

    python loadtests/bench.py [--duration 10] [--connections 16] [--body-bytes 1024] [--access-log on] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import apt_install, router_config

KEY = "bench-key-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float | None
    errors: int


def find_tools() -> tuple[str, str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    wrk = shutil.which("wrk")
    if nginx is None or wrk is None:
        apt_install("nginx-light", "wrk")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        wrk = shutil.which("wrk")
    if nginx is None or wrk is None or not os.path.exists(nginx):
        sys.exit("bench: needs nginx and wrk (apt-get install nginx-light wrk)")
    return nginx, wrk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def nginx_conf(workdir: Path, name: str, port: int, body: str) -> Path:
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {workdir}/{name}.pid;
error_log {workdir}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/{name}-body; proxy_temp_path {workdir}/{name}-proxy;
  fastcgi_temp_path {workdir}/{name}-fcgi; uwsgi_temp_path {workdir}/{name}-uwsgi;
  scgi_temp_path {workdir}/{name}-scgi;
  keepalive_requests 1000000;
  {body}
}}
""")
    return conf


def backend_conf(workdir: Path, port: int) -> Path:
    """A fast nginx backend: every request gets a small JSON answer."""
    return nginx_conf(workdir, "backend", port, f"""
  server {{ listen 127.0.0.1:{port} reuseport; location / {{
      default_type application/json; return 200 '{{"ok": true}}'; }} }}""")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_latency(text: str, percentile: str) -> float:
    m = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(wrk: str, url: str, args: argparse.Namespace, script: Path, duration: float,
            proxy_pid: int | None, name: str) -> Result:
    cmd = ["taskset", "-c", "0", wrk, "-t1", f"-c{args.connections}", f"-d{max(1, round(duration))}s", "--latency",
           "-s", str(script), url]
    before = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    cpu = (after - before) * 1e6 / total if proxy_pid and total else None
    return Result(name, rps, parse_latency(out, "50"), parse_latency(out, "99"), cpu, errors)


def median(runs: list[Result]) -> Result:
    """Each figure's median over the runs of one target (errors: their sum)."""
    mid = statistics.median
    cpu = [r.cpu_us_per_req for r in runs if r.cpu_us_per_req is not None]
    return Result(runs[0].name, mid(r.rps for r in runs), mid(r.p50_ms for r in runs), mid(r.p99_ms for r in runs),
                  mid(cpu) if cpu else None, sum(r.errors for r in runs))


def measure(args: argparse.Namespace) -> list[Result]:
    nginx, wrk = find_tools()
    workdir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        script = workdir / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {args.body_bytes})\n'
                          f'wrk.headers["Content-Type"] = "application/json"\n'
                          f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
        backend_port, nginx_port = free_port(), free_port()
        backend = backend_conf(workdir, backend_port)
        proxy = nginx_conf(workdir, "proxy", nginx_port, f"""
  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx_port}; location / {{
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")
        config = workdir / "router.yaml"
        config.write_text(router_config([f"http://127.0.0.1:{backend_port}"], KEY))
        procs.append(subprocess.Popen(["taskset", "-c", "0", nginx, "-c", str(backend), "-p", str(workdir)]))
        wait_port(backend_port)
        nginx_proc = subprocess.Popen(["taskset", "-c", "1", nginx, "-c", str(proxy), "-p", str(workdir)])
        procs.append(nginx_proc)
        targets = [("direct", f"http://127.0.0.1:{backend_port}/score", None),
                   ("nginx", f"http://127.0.0.1:{nginx_port}/score", nginx_proc.pid)]
        for name, telemetry in (("router", {"ROUTER_ACCESS_LOG": args.access_log, "ROUTER_METRICS": "true"}),
                                ("router-nolog", {"ROUTER_ACCESS_LOG": "off", "ROUTER_METRICS": "true"}),
                                ("router-bare", {"ROUTER_ACCESS_LOG": "off", "ROUTER_METRICS": "false"})):
            router_port = free_port()
            router_proc = subprocess.Popen(  # access log lines to /dev/null: formatted and written all the same
                ["taskset", "-c", "1", sys.executable, "-m", "router.cli", "serve", "--config", str(config),
                 "--allow-insecure-connections", "--host", "127.0.0.1", "--port", str(router_port),
                 "--admin-port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, **telemetry})
            procs.append(router_proc)
            wait_port(router_port)
            targets.append((name, f"http://127.0.0.1:{router_port}/api/v1/endpoint/bench/score", router_proc.pid))
        wait_port(nginx_port)
        results = {}
        for name, url, pid in targets:  # warm up every path first, then measure
            run_wrk(wrk, url, args, script, args.warmup, pid, name)
        for name, url, pid in targets[:2]:
            results[name] = run_wrk(wrk, url, args, script, args.duration, pid, name)
        # the router variants take turns, in a rotating order, so noise on the shared machine hits them alike
        turns: dict[str, list[Result]] = {}
        variants = targets[2:]
        for turn in range(args.rounds):
            for name, url, pid in variants[turn % 3:] + variants[:turn % 3]:
                turns.setdefault(name, []).append(run_wrk(wrk, url, args, script, args.duration / args.rounds, pid,
                                                          name))
        results.update((name, median(runs)) for name, runs in turns.items())
        return [results[n] for n, _, _ in targets]
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--access-log", default="on", help="the router's access log: on, off or sample=F")
    parser.add_argument("--rounds", type=int, default=5, help="turns of the router variants (medians reported)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = measure(args)
    by_name = {r.name: r for r in results}
    ratios = {"router/nginx": by_name["router"].rps / by_name["nginx"].rps,
              "router/direct": by_name["router"].rps / by_name["direct"].rps}
    if by_name["router"].cpu_us_per_req and by_name["nginx"].cpu_us_per_req:
        ratios["cpu router/nginx"] = by_name["router"].cpu_us_per_req / by_name["nginx"].cpu_us_per_req
    cpu = {r.name: r.cpu_us_per_req or float("nan") for r in results}
    costs = {"metrics (cpu/req)": cpu["router-nolog"] / cpu["router-bare"] - 1,
             f"access log {args.access_log} (cpu/req)": cpu["router"] / cpu["router-nolog"] - 1,
             "both (cpu/req)": cpu["router"] / cpu["router-bare"] - 1,
             "both (req/s)": 1 - by_name["router"].rps / by_name["router-bare"].rps}
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "ratios": ratios, "costs": costs}))
        return 0
    print(f"{args.body_bytes} B POSTs, {args.connections} connections, {args.duration:g} s each")
    print(f"{'target':<12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'errors':>7}")
    for r in results:
        used = f"{r.cpu_us_per_req:.1f}" if r.cpu_us_per_req else "-"
        print(f"{r.name:<12} {r.rps:>10.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {used:>11} {r.errors:>7}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    for name, value in costs.items():
        print(f"cost of {name}: {value:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
