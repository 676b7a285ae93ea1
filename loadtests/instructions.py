"""CPU instructions per request of the router, counted by valgrind: a figure the machine's noise cannot move.

Timings on a shared machine swing by a fifth between identical runs; the number of
instructions the router executes per request does not. This runs the router under
valgrind's callgrind twice, for N and for 2N requests to a fast nginx backend (keep-alive
connections, 1 KiB POSTs, key auth), and prints the difference divided by N: the cost of
one request without the start-up. User-space instructions only: the kernel's share (the
socket calls, the same for any proxy) is not counted. Use it to compare changes to the
data plane; `bench.py` says what they are worth in requests per second.

    python loadtests/instructions.py [--requests 2000] [--connections 16] [--variant router] [--json]

valgrind, nginx and wrk are installed with apt-get (as root) when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench import KEY, backend_conf, find_tools, free_port, wait_port
from harness import apt_install, router_config

VARIANTS = {"router": {"ROUTER_ACCESS_LOG": "on", "ROUTER_METRICS": "true"},
            "router-bare": {"ROUTER_ACCESS_LOG": "off", "ROUTER_METRICS": "false"}}


def find_valgrind() -> str:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        apt_install("valgrind")
        valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("instructions: needs valgrind (apt-get install valgrind)")
    return valgrind


def drive(port: int, requests: int, connections: int, body_bytes: int = 1024) -> int:
    """`requests` POSTs over `connections` keep-alive connections; returns how many were not 200."""
    request = (b"POST /api/v1/endpoint/bench/score HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (KEY.encode(), body_bytes,
                                                                               b"x" * body_bytes))
    failed = [0] * connections

    def one(i: int, count: int) -> None:
        left = count
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s, s.makefile("rb") as answers:
                while left:
                    s.sendall(request)
                    failed[i] += b" 200 " not in answers.readline()
                    length = 0
                    while (line := answers.readline()) not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line[15:])
                    answers.read(length)
                    left -= 1
        except OSError:  # the connection failed: this request and the ones not sent count as failed
            failed[i] += left

    share = [requests // connections + (i < requests % connections) for i in range(connections)]
    threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(share)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(failed)


def count(valgrind: str, config: Path, env: dict[str, str], requests: int, connections: int, workdir: Path) -> int:
    """Instructions the router executed, start to exit, serving `requests`."""
    port, log = free_port(), workdir / "callgrind.log"
    router = subprocess.Popen(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", f"--log-file={log}", sys.executable,
         "-m", "router.cli", "serve", "--config", str(config), "--allow-insecure-connections", "--host",
         "127.0.0.1", "--port", str(port), "--admin-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        wait_port(port, timeout=120)
        failed = drive(port, requests, connections)
        if failed:
            sys.exit(f"instructions: {failed} of {requests} requests failed")
    finally:
        router.send_signal(signal.SIGTERM)
        router.wait(timeout=120)
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        sys.exit(f"instructions: no count from valgrind:\n{log.read_text()[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="N: the runs serve N and 2N requests")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--variant", choices=sorted(VARIANTS), action="append",
                        help="only this router variant (repeatable; default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    valgrind = find_valgrind()
    nginx, _ = find_tools()
    workdir = Path(tempfile.mkdtemp(prefix="router-instructions-"))
    backend_port = free_port()
    backend = backend_conf(workdir, backend_port)
    nginx_proc = subprocess.Popen([nginx, "-c", str(backend), "-p", str(workdir)])
    try:
        wait_port(backend_port)
        config = workdir / "router.yaml"
        config.write_text(router_config([f"http://127.0.0.1:{backend_port}"], KEY))
        per_request = {}
        for name in args.variant or VARIANTS:
            env = VARIANTS[name]
            once = count(valgrind, config, env, args.requests, args.connections, workdir)
            twice = count(valgrind, config, env, 2 * args.requests, args.connections, workdir)
            per_request[name] = (twice - once) / args.requests
    finally:
        nginx_proc.send_signal(signal.SIGTERM)
        nginx_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    telemetry = (per_request["router"] / per_request["router-bare"] - 1) if len(per_request) == 2 else None
    if args.json:
        print(json.dumps({"instructions_per_request": per_request, "telemetry_cost": telemetry}))
        return 0
    for name, value in per_request.items():
        print(f"{name:<12} {value:>10,.0f} instructions per request")
    if telemetry is not None:
        print(f"cost of metrics and the access log: {telemetry:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
