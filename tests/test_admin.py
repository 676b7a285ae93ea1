"""The admin port serves /healthz and /readyz; the scoring port never does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import SampleModel
from tests.routing import Config, RouterProcess, start_router


def start(tmp_path: Path, sample_model_factory: Callable[..., SampleModel], *extra: str) -> RouterProcess:
    model = sample_model_factory("--name", "blue-0")
    return start_router(tmp_path, Config().deployment("blue", [model.url], weight=100), *extra)


@pytest.fixture
def router(tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> Iterator[RouterProcess]:
    running = start(tmp_path, sample_model_factory)
    yield running
    running.stop()


def test_health_and_readiness_on_the_admin_port(router: RouterProcess) -> None:
    r = httpx.get(f"{router.admin_url}/healthz", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(f"{router.admin_url}/readyz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_admin_paths_are_not_served_on_the_scoring_port(router: RouterProcess) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        r = httpx.get(f"{router.url}{path}", timeout=5)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"] == "application/json"
        error = r.json()["error"]
        assert error["code"] == "NotFound" and error["requestId"] == r.headers["x-request-id"]


def test_the_scoring_api_is_not_served_on_the_admin_port(router: RouterProcess) -> None:
    assert httpx.post(router.score_url(), headers=router.auth, json={}, timeout=5).status_code == 200
    r = httpx.post(f"{router.admin_url}/api/v1/endpoint/demo/score", headers=router.auth, json={}, timeout=5)
    assert r.status_code == 404
    assert "azureml-model-deployment" not in r.headers


def test_not_ready_while_draining(tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    router = start(tmp_path, sample_model_factory, "--drain-delay", "1.5")
    try:
        assert httpx.get(f"{router.admin_url}/readyz", timeout=5).status_code == 200
        router.process.terminate()
        router.process.wait_for_event("draining", timeout=10)
        r = httpx.get(f"{router.admin_url}/readyz", timeout=5)  # within the 1.5 s drain delay
        assert r.status_code == 503 and r.json()["status"] == "not ready"
        assert httpx.get(f"{router.admin_url}/healthz", timeout=5).status_code == 200  # alive, though
        assert router.process.wait(15) == 0
    finally:
        router.stop()
