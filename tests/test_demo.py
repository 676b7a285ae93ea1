"""`inference-router demo`: the smoke run end to end, and its bundled config."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.demo import REPLICAS, _port, write_config
from router.discovery.documents import load_file
from router.errors import ConfigError
from tests.helpers import ManagedProcess, run_to_exit
from tests.routing import listening_port

DEMO = [sys.executable, "-m", "router.cli", "demo"]


@pytest.fixture
def busy_ports() -> Iterator[tuple[int, int]]:
    """Two ports with a listener on each, as a demo already running holds them."""
    with listening_port() as one, listening_port() as two:
        yield one, two


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


def test_smoke_takes_free_ports_so_it_runs_next_to_a_serving_demo(busy_ports: tuple[int, int]) -> None:
    """The ports a demo would take (ROUTER_PORT, ROUTER_ADMIN_PORT) are in use: the smoke run does not mind."""
    port, admin_port = busy_ports
    code, output = run_to_exit([*DEMO, "--smoke"], timeout=60,
                               env={"ROUTER_PORT": str(port), "ROUTER_ADMIN_PORT": str(admin_port)})
    assert code == 0, output
    assert "smoke test passed" in output
    [used] = re.findall(r"smoke test against http://127\.0\.0\.1:(\d+)", output)
    assert int(used) not in (port, 8080)  # neither the variable's port nor the default one


def test_a_port_in_use_is_refused_cleanly_as_serve_does(busy_ports: tuple[int, int]) -> None:
    port, _ = busy_ports
    code, output = run_to_exit([*DEMO, "--smoke", "--port", str(port), "--admin-port", "0"], timeout=60)
    assert code == 2, output
    assert f"inference-router: cannot start:\n  cannot listen on 127.0.0.1:{port}" in output
    assert "Traceback" not in output


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


def test_a_serving_demo_takes_the_serve_variables_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_ADMIN_PORT", raising=False)
    monkeypatch.setenv("ROUTER_PORT", "8123")
    assert _port(None, "port", smoke=False) == 8123
    assert _port(None, "admin_port", smoke=False) == 9090  # unset: the serve setting's default
    assert _port(7000, "port", smoke=False) == 7000 and _port(None, "port", smoke=True) == 0
    monkeypatch.setenv("ROUTER_PORT", "eighty")
    with pytest.raises(ConfigError) as caught:
        _port(None, "port", smoke=False)
    assert caught.value.problems == ["ROUTER_PORT: expected an integer from 0 to 65535, got 'eighty'"]
