"""`inference-router demo`: sample models and the router on loopback, no cluster needed.

Starts two sample-model replicas per deployment (blue, green) as child processes,
writes the bundled config with their addresses and a fresh key, and runs the router
in this process. With `--smoke` it sends a few checked requests and exits 0 or 1; it
takes free ports then, so it also runs next to a demo that is serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import tempfile
from importlib import resources
from pathlib import Path
from string import Template
from typing import cast

import httpx
import uvloop

from router import logs
from router.discovery.file import FileSource
from router.errors import ConfigError
from router.server import RouterServer
from router.settings import RouterSettings, spec

REPLICAS = ("blue_0", "blue_1", "green_0", "green_1")


async def start_model(name: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "sample-model", "--port", "0", "--name", name,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    try:
        port = json.loads(line)["port"]
    except (ValueError, KeyError):
        proc.kill()
        raise RuntimeError(f"sample model {name} did not start: {line!r}") from None
    return proc, f"http://127.0.0.1:{port}"


def write_config(directory: Path, urls: dict[str, str], key: str) -> Path:
    template = Template(resources.files("router").joinpath("data/demo.yaml").read_text())
    path = directory / "demo.yaml"
    path.write_text(template.substitute(urls, key=key, secondary_key=secrets.token_urlsafe(24)))
    return path


async def smoke(base: str, key: str) -> bool:
    """A score call, a pinned call, a 401 and a 404: True only if all answer as they should."""
    score = f"{base}/api/v1/endpoint/demo/score"
    auth = {"Authorization": f"Bearer {key}"}
    body = {"data": [[1.0, 2.0, 3.0]]}
    checks: list[tuple[str, bool, str]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(score, json=body, headers=auth)
        checks.append(("score call", r.status_code == 200 and r.headers.get("azureml-model-deployment")
                       in ("blue", "green"), f"{r.status_code} {r.headers.get('azureml-model-deployment')}"))
        r = await client.post(score, json=body, headers={**auth, "azureml-model-deployment": "green"})
        checks.append(("pinned call", r.status_code == 200 and r.json().get("name", "").startswith("green")
                       and r.headers.get("azureml-model-deployment") == "green", f"{r.status_code}"))
        r = await client.post(score, json=body, headers={"Authorization": "Bearer wrong-key"})
        checks.append(("wrong key gets 401", r.status_code == 401 and "requestId" in r.json()["error"],
                       f"{r.status_code}"))
        r = await client.post(f"{base}/api/v1/endpoint/nosuch/score", json=body, headers=auth)
        checks.append(("unknown endpoint gets 404", r.status_code == 404, f"{r.status_code}"))
    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name} ({detail})")
    return all(ok for _, ok, _ in checks)


async def _demo(args: argparse.Namespace) -> int:
    key = secrets.token_urlsafe(24)
    models: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="inference-router-demo-") as tmp:
        try:
            urls = {}
            for name in REPLICAS:
                proc, urls[name] = await start_model(name.replace("_", "-"))
                models.append(proc)
            config = write_config(Path(tmp), urls, key)
            settings = RouterSettings(allow_insecure_connections=True, host="127.0.0.1",
                                      port=_port(args.port, "port", smoke=args.smoke),
                                      admin_port=_port(args.admin_port, "admin_port", smoke=args.smoke),
                                      debug_endpoints=True)  # all on loopback
            settings.check()
            server = RouterServer(settings, FileSource(config))
            task = asyncio.create_task(server.run(), name="router")
            started = asyncio.create_task(server.started.wait())
            await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            base = f"http://127.0.0.1:{server.ports['port']}"
            if args.smoke:
                print(f"smoke test against {base}")
                ok = await smoke(base, key)
                print("smoke test passed" if ok else "smoke test FAILED")
                server.stop()
                await task
                return 0 if ok else 1
            print(f"""
inference-router demo: endpoint 'demo', deployments blue (90 %) and green (10 %), 2 replicas each
  config (edit it, the router reloads): {config}
  admin: http://127.0.0.1:{server.ports['admin_port']}/readyz
  key:   {key}
  paste into the shell you run the examples in:  export KEY={key}

  curl -s -X POST {base}/api/v1/endpoint/demo/score \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"data": [[1.0, 2.0, 3.0]]}}'

  pin a deployment with -H "azureml-model-deployment: green"; stop with Ctrl-C
""", flush=True)
            return await task
        finally:
            for proc in models:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            for proc in models:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=10)


def _port(given: int | None, name: str, *, smoke: bool) -> int:
    """A port given as a flag; else any free one for a smoke run; else the serve setting's variable or default."""
    if given is not None:
        return given
    if smoke:
        return 0
    port = spec(name)
    try:
        value = port.from_environ(os.environ)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    return cast(int, port.default if value is None else value)


def run(args: argparse.Namespace) -> int:
    try:
        return uvloop.run(_demo(args))
    except ConfigError as exc:  # a port in use, say: the same clean refusal as `serve`
        logs.event("start.refused", level=logging.ERROR, problems=exc.problems)
        print("inference-router: " + "\n  ".join(["cannot start:", *exc.problems]), file=sys.stderr)
        return 2
