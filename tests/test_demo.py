"""`inference-router demo`: the smoke run end to end, and its bundled config."""

from __future__ import annotations

import sys
from pathlib import Path

from router.demo import REPLICAS, write_config
from router.discovery.documents import load_file
from tests.helpers import ManagedProcess


def test_smoke_run_passes() -> None:
    process = ManagedProcess([sys.executable, "-m", "router.cli", "demo", "--smoke", "--port", "0",
                              "--admin-port", "0"])
    try:
        code = process.wait(60)
    finally:
        process.stop()
    output = process.output()
    assert code == 0, output
    assert "smoke test passed" in output
    assert "FAIL" not in output
    names = [e["event"] for e in process.events]
    assert "listening" in names and "stopped" in names


def test_the_bundled_config_renders_into_valid_resources(tmp_path: Path) -> None:
    urls = {name: f"http://127.0.0.1:{7001 + i}" for i, name in enumerate(REPLICAS)}
    path = write_config(tmp_path, urls, "fQ9wE3rT7yU1iO5pA2sD6fG0hJ4kL8zX")
    assert path.parent == tmp_path

    resources = load_file(path)
    assert [e.name for e in resources.endpoints] == ["demo"]
    endpoint = resources.endpoints[0]
    assert endpoint.auth_mode == "key"
    assert dict(endpoint.traffic) == {"blue": 90, "green": 10}
    deployments = {d.name: d for d in resources.deployments}
    assert set(deployments) == {"blue", "green"}
    assert deployments["blue"].urls == (urls["blue_0"], urls["blue_1"])
    assert deployments["green"].urls == (urls["green_0"], urls["green_1"])
    assert all(d.endpoint_name == "demo" for d in deployments.values())
    [secret] = resources.secrets
    assert secret.name == endpoint.keys_secret_ref
    assert secret.data["primaryKey"] == "fQ9wE3rT7yU1iO5pA2sD6fG0hJ4kL8zX"
    assert secret.data["secondaryKey"] and secret.data["secondaryKey"] != "fQ9wE3rT7yU1iO5pA2sD6fG0hJ4kL8zX"
