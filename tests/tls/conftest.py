"""Fixtures for the TLS tests: a dev PKI, a sample model, and routers serving TLS as real processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ManagedProcess, start_process
from tests.routing import Config, StartedModel, start_sample_model
from tests.tls.pki import Pki, new_pki

SERVE = [sys.executable, "-m", "router.cli", "serve"]
LOOPBACK = ["--host", "127.0.0.1", "--tls-port", "0", "--admin-port", "0", "--config-poll-interval", "0.2"]


@pytest.fixture(autouse=True)
def no_router_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The routers started here inherit the environment: only what a test sets may count."""
    for name in [n for n in os.environ if n.startswith("ROUTER_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return new_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def model() -> Iterator[StartedModel]:
    started = start_sample_model("--name", "blue-0")
    yield started
    started.process.stop()


@dataclass
class TlsRouter:
    process: ManagedProcess
    tls_port: int
    port: int | None  # plain HTTP, with --allow-insecure-connections
    config_path: Path
    key: str = Config.key

    def url(self, path: str = "/api/v1/endpoint/demo/score") -> str:
        return f"https://127.0.0.1:{self.tls_port}{path}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.process.ready['admin_port']}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def config_for(model: StartedModel) -> Config:
    return Config().deployment("blue", [model.url], weight=100)


def start_tls_router(directory: Path, config: Config | str, *args: str,
                     env: dict[str, str] | None = None) -> TlsRouter:
    path = directory / "router.yaml"
    path.write_text(config if isinstance(config, str) else config.yaml())
    process = start_process([*SERVE, "--config", str(path), *LOOPBACK, *args], env=env)
    ready = process.ready
    return TlsRouter(process, ready["tls_port"], ready.get("port"), path)
