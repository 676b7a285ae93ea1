"""The admin port: /healthz and /readyz (never on the scoring port), where it binds, what it shows, and
how `POST /token` answers callers without a key."""
from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from router.admin import FAILED_ATTEMPTS, FAILED_WINDOW_S, FailedAttempts
from tests.helpers import SampleModel
from tests.routing import Config, RouterProcess, start_router, start_sample_model, token_endpoint_documents

SECURE_KEY = "secure-primary-key-0123"


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


# -- who can reach it, and what it shows ----------------------------------------------------------

def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_the_admin_port_binds_loopback_unless_told_otherwise(
        tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    router = start(tmp_path, sample_model_factory, "--host", "127.0.0.2")  # scoring on another address
    try:
        assert router.process.ready["admin_host"] == "127.0.0.1"
        assert reachable("127.0.0.1", router.admin_port)
        assert not reachable("127.0.0.2", router.admin_port)  # not where the scoring port is
    finally:
        router.stop()
    router = start(tmp_path, sample_model_factory, "--admin-host", "127.0.0.3, 127.0.0.4")  # as the chart: two
    try:
        assert not reachable("127.0.0.1", router.admin_port)
        for host in ("127.0.0.3", "127.0.0.4"):
            assert httpx.get(f"http://{host}:{router.admin_port}/healthz", timeout=5).status_code == 200
    finally:
        router.stop()


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, str]:
    """The scoring port's error shape, with the request id also in `x-request-id`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert str(uuid.UUID(error["requestId"])) == error["requestId"] == r.headers["x-request-id"]
    return error


def test_debug_endpoints_are_off_unless_asked_for(
        router: RouterProcess, tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    assert_error(httpx.get(f"{router.admin_url}/debug/deployments", timeout=5), 404, "NotFound")
    debug = start(tmp_path, sample_model_factory, "--debug-endpoints")
    try:
        state = httpx.get(f"{debug.admin_url}/debug/deployments", timeout=5).json()
        assert list(state) == ["default/blue"]
    finally:
        debug.stop()


def test_admin_errors_have_the_scoring_error_shape(router: RouterProcess) -> None:
    assert_error(httpx.get(f"{router.admin_url}/nosuch", timeout=5), 404, "NotFound")
    r = httpx.get(f"{router.admin_url}/token/demo", timeout=5)
    assert_error(r, 405, "MethodNotAllowed")
    assert r.headers["allow"] == "POST"
    first = assert_error(httpx.post(f"{router.admin_url}/token/demo", timeout=5), 401, "Unauthorized")
    second = assert_error(httpx.post(f"{router.admin_url}/token/demo", timeout=5), 401, "Unauthorized")
    assert first["requestId"] != second["requestId"]


# -- POST /token ------------------------------------------------------------------------------

SIGNING = "token-signing-key-Vb3Nm7Qw1Er5Ty9U"


@pytest.fixture(scope="module")
def token_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    model = start_sample_model("--name", "m")
    config = Config().deployment("main", [model.url], weight=100)
    config.extra_documents = token_endpoint_documents(model.url, SIGNING)
    running = start_router(tmp_path_factory.mktemp("tokens"), config)
    yield running
    running.stop()
    model.process.stop()


def token(router: RouterProcess, endpoint: str, key: str | None, query: str = "",
          source: str = "127.0.0.1") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=5) as client:
        return client.post(f"{router.admin_url}/token/{endpoint}{query}", headers=headers)


def test_an_unknown_endpoint_is_answered_as_a_wrong_key(token_router: RouterProcess) -> None:
    answers = [token(token_router, endpoint, key, source="127.0.0.4") for endpoint, key in (
        ("nosuch", SECURE_KEY), ("secure", "wrong-key-Tg5Hy6Ju7Ki8Lo9Pq0Wa"), ("nosuch", None), ("secure", None))]
    errors = [assert_error(r, 401, "Unauthorized") for r in answers]
    assert errors[0]["message"] == errors[1]["message"] and errors[2]["message"] == errors[3]["message"]
    assert {k for r in answers for k in r.headers} == {k for k in answers[1].headers}
    assert token(token_router, "secure", SECURE_KEY, source="127.0.0.4").status_code == 200


def test_failed_attempts_are_limited_per_client(token_router: RouterProcess) -> None:
    for _ in range(FAILED_ATTEMPTS):
        assert token(token_router, "secure", "guess-Tg5Hy6Ju7Ki8Lo9Pq0Wa", source="127.0.0.5").status_code == 401
    r = token(token_router, "secure", "guess-Tg5Hy6Ju7Ki8Lo9Pq0Wa", source="127.0.0.5")
    error = assert_error(r, 429, "TooManyRequests")
    assert 1 <= int(r.headers["retry-after"]) <= FAILED_WINDOW_S and "try again in" in error["message"]
    # the right key waits too (a guesser must not learn it hit), and other clients do not wait
    assert token(token_router, "secure", SECURE_KEY, source="127.0.0.5").status_code == 429
    assert token(token_router, "nosuch", SECURE_KEY, source="127.0.0.5").status_code == 429
    assert token(token_router, "secure", SECURE_KEY, source="127.0.0.6").status_code == 200


@pytest.mark.parametrize(("ttl", "message"), [
    ("9" * 5000, "ttl (query parameter): must be from 1 minute to 24 hours"),
    ("99999999999999999999h", "ttl (query parameter): must be from 1 minute to 24 hours"),
    ("25h", "ttl (query parameter): must be from 1 minute to 24 hours, got '25h'"),
    ("soon", "ttl (query parameter): expected a duration like 30m, 1h or 3600, got 'soon'"),
])
def test_a_bad_ttl_is_a_400_naming_the_query_parameter(token_router: RouterProcess, ttl: str, message: str) -> None:
    r = token(token_router, "secure", SECURE_KEY, f"?ttl={ttl}", source="127.0.0.7")
    error = assert_error(r, 400, "BadRequest")
    assert error["message"].startswith(message) and len(error["message"]) < 200
    assert "Traceback" not in token_router.process.output()


def test_failed_attempts_slide_and_stay_bounded() -> None:
    attempts = FailedAttempts(limit=3, window=60)
    for t in (0.0, 10.0, 20.0):
        assert attempts.wait("a", t) == 0
        attempts.failed("a", t)
    assert attempts.wait("a", 30.0) == 30.0  # until the failure at 0 is a minute old
    assert attempts.wait("b", 30.0) == 0
    assert attempts.wait("a", 60.0) == 0  # one slot free again: one more try
    attempts.failed("a", 60.0)
    assert attempts.wait("a", 61.0) == 9.0
    for n in range(10_050):
        attempts.failed(f"10.0.{n // 256}.{n % 256}", 100.0)
    assert repr(attempts) == "<FailedAttempts 10000 clients, 3 per 60 s>"
