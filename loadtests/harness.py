"""What the load tests share: a router config for one endpoint, and child processes that say they listen.

The scripts in this folder run as `python loadtests/<script>.py`, so they import this module as `harness`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from typing import Any


def apt_install(*packages: str) -> None:
    """Install Debian `packages` with apt-get, when running as root on a machine that has it."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def router_config(urls: list[str], key: str, *, endpoint: str = "bench", deployment: str = "main",
                  timeout_ms: int = 10000, concurrency: int = 64, queue_wait_ms: int = 1000) -> str:
    """The resources of one endpoint with one deployment on `urls`, opened by `key`."""
    backend = ", ".join(f'"{url}"' for url in urls)
    return f"""
apiVersion: inference-router.dev/v1alpha1
kind: OnlineEndpoint
metadata: {{name: {endpoint}}}
spec: {{authMode: key, keysSecretRef: {endpoint}-keys, traffic: {{{deployment}: 100}}}}
---
apiVersion: inference-router.dev/v1alpha1
kind: OnlineDeployment
metadata: {{name: {deployment}}}
spec:
  endpointName: {endpoint}
  backend: {{urls: [{backend}]}}
  requestSettings: {{requestTimeoutMs: {timeout_ms}, maxConcurrentRequestsPerInstance: {concurrency},
                    maxQueueWaitMs: {queue_wait_ms}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {endpoint}-keys}}
stringData: {{primaryKey: {key}}}
"""


def start(args: list[str], timeout: float = 20) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `args`; return once it prints `{"event": "listening", ...}`. Both pipes are read until the
    process ends, so its output can never fill a pipe and stall it."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    for pipe in (proc.stdout, proc.stderr):
        threading.Thread(target=lambda p=pipe: [lines.put(line) for line in p], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "listening":
                return proc, event
    proc.kill()
    raise RuntimeError(f"{args} did not start")
