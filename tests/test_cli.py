"""`inference-router serve` as a real process: refusals exit 2 and say why; SIGTERM drains and exits 0."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.helpers import run_to_exit, start_process
from tests.routing import Config, connect, listening_port, start_router, start_sample_model

SERVE = [sys.executable, "-m", "router.cli", "serve"]
LOOPBACK = ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"]


@pytest.fixture(autouse=True)
def no_router_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The children inherit the environment: only what a test sets may count."""
    for name in [n for n in os.environ if n.startswith("ROUTER_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(Config().deployment("blue", ["http://127.0.0.1:9"], weight=100).yaml())
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port with a listener on it."""
    with listening_port() as port:
        yield port


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> tuple[int, str]:
    return run_to_exit([*SERVE, *args], env=env, timeout=timeout)


def test_without_tls_or_insecure_it_refuses_and_says_what_to_set(config_file: Path) -> None:
    code, output = run("--config", str(config_file), *LOOPBACK)
    assert code == 2, output
    assert "--allow-insecure-connections" in output
    assert "listening" not in output


def test_an_invalid_config_names_the_document_and_field(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(Config().deployment("blue", ["http://127.0.0.1:9"], weight=50).yaml())
    code, output = run("--config", str(path), "--allow-insecure-connections", *LOOPBACK)
    assert code == 2, output
    assert "OnlineEndpoint default/demo" in output
    assert "spec.traffic" in output and "50" in output
    assert "listening" not in output


def test_an_unreadable_config_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nosuch.yaml"
    code, output = run("--config", str(missing), "--allow-insecure-connections", *LOOPBACK)
    assert code == 2, output
    assert str(missing) in output


def test_serve_needs_a_config_file() -> None:
    code, output = run("--allow-insecure-connections", *LOOPBACK)
    assert code == 2, output
    assert "--config" in output


def test_starts_with_the_environment_variable_and_drains_on_sigterm(config_file: Path) -> None:
    process = start_process([*SERVE, "--config", str(config_file), *LOOPBACK],
                            env={"ROUTER_ALLOW_INSECURE_CONNECTIONS": "true"})
    try:
        ready = process.ready
        assert ready["host"] == "127.0.0.1"
        assert isinstance(ready["port"], int) and ready["port"] > 0
        assert isinstance(ready["admin_port"], int) and ready["admin_port"] not in (0, ready["port"])
        with connect(ready["port"]):
            pass  # the scoring port accepts connections
    finally:
        code = process.stop()
    assert code == 0, process.output()
    names = [e["event"] for e in process.events]
    assert "draining" in names and "stopped" in names
    assert names.index("listening") < names.index("draining") < names.index("stopped")


@pytest.mark.parametrize("which", ["--port", "--admin-port"])
def test_a_port_in_use_is_refused(config_file: Path, busy_port: int, which: str) -> None:
    ports = {"--port": "0", "--admin-port": "0", which: str(busy_port)}
    code, output = run("--config", str(config_file), "--allow-insecure-connections", "--host", "127.0.0.1",
                       *(item for pair in ports.items() for item in pair))
    assert code == 2, output
    assert f"cannot listen on 127.0.0.1:{busy_port}" in output


def test_a_share_of_a_missing_deployment_is_said_and_the_others_take_the_traffic(tmp_path: Path) -> None:
    """As in a cluster: the file is served, and the share naming a deployment it lacks is not routed."""
    model = start_sample_model("--name", "blue-0")
    try:
        config = Config().deployment("blue", [model.url], weight=90)
        config.traffic["green"] = 10
        router = start_router(tmp_path, config)
        try:
            [unrouted] = router.process.events_named("config.unrouted")
            assert unrouted["notes"] == ["OnlineEndpoint default/demo: spec.traffic.green: no OnlineDeployment "
                                         "'green' in namespace 'default'; its 10% is not routed"]
            for _ in range(3):
                answer = httpx.post(router.score_url(), headers=router.auth, json={}, timeout=10)
                assert answer.status_code == 200 and answer.headers["azureml-model-deployment"] == "blue"
        finally:
            assert router.stop() == 0
    finally:
        model.process.stop()


def test_token_prints_json_or_with_raw_the_bare_token(tmp_path: Path) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text(Config(endpoint="secure", auth_mode="aml_token")
                    .deployment("blue", ["http://127.0.0.1:9"], weight=100).yaml())
    token = [sys.executable, "-m", "router.cli", "token", "--endpoint", "secure", "--config", str(path)]
    code, output = run_to_exit(token)
    assert code == 0, output
    assert set(json.loads(output)) == {"accessToken", "expiryTimeUtc", "refreshAfterTimeUtc"}
    code, output = run_to_exit([*token, "--raw", "--ttl", "30m"])
    assert code == 0, output
    claims = jwt.decode(output.strip(), options={"verify_signature": False})
    assert output == output.strip() and claims["aud"] == "secure" and claims["exp"] - claims["iat"] == 1800
