"""Tokens for `aml_token` endpoints against a real router: the key derived from `primaryKey` is salted per
endpoint, a lifetime over 24 hours (or no `iat`) is refused, and a bad lifetime is a clear error."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from router import tokens
from router.errors import ConfigError
from tests.routing import Config, RouterProcess, start_router, start_sample_model

PRIMARY = "shared-primary-key-Qw3Er5Ty7Ui9Op"
API = "inference-router.dev/v1alpha1"


def token_endpoints(url: str) -> list[dict[str, Any]]:
    """Two token endpoints with one Secret, and no tokenSigningKey: each signs with a key derived from primaryKey."""
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shared-keys"},
                                   "stringData": {"primaryKey": PRIMARY}}]
    for name in ("alpha", "beta"):
        docs += [{"apiVersion": API, "kind": "OnlineEndpoint", "metadata": {"name": name},
                  "spec": {"authMode": "aml_token", "keysSecretRef": "shared-keys", "traffic": {f"{name}-d": 100}}},
                 {"apiVersion": API, "kind": "OnlineDeployment", "metadata": {"name": f"{name}-d"},
                  "spec": {"endpointName": name, "backend": {"urls": [url]}}}]
    return docs


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    model = start_sample_model("--name", "m")
    config = Config().deployment("main", [model.url], weight=100)
    config.extra_documents = token_endpoints(model.url)
    running = start_router(tmp_path_factory.mktemp("tokens"), config)
    yield running
    running.stop()
    model.process.stop()


def score(router: RouterProcess, endpoint: str, token: str) -> httpx.Response:
    return httpx.post(router.score_url(endpoint), headers={"Authorization": f"Bearer {token}"}, content=b"{}",
                      timeout=5)


def signed(key: bytes, audience: str, **claims: Any) -> str:
    now = int(time.time())
    base = {"iss": tokens.ISSUER, "aud": audience, "iat": now, "nbf": now, "exp": now + 600}
    return jwt.encode({k: v for k, v in {**base, **claims}.items() if v is not None}, key, algorithm="HS256")


def cli_token(router: RouterProcess, endpoint: str, ttl: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", "token", "--endpoint", endpoint, "--config",
                           str(router.config_path), "--ttl", ttl], capture_output=True, text=True, timeout=30)


def test_tokens_signed_with_the_derived_key_open_their_endpoint_only(router: RouterProcess) -> None:
    issued = httpx.post(f"{router.admin_url}/token/alpha?ttl=10m",
                        headers={"Authorization": f"Bearer {PRIMARY}"}, timeout=5)
    assert issued.status_code == 200, issued.text
    assert score(router, "alpha", issued.json()["accessToken"]).status_code == 200
    cli = cli_token(router, "beta", "1h")  # the CLI derives the same key from the file
    assert cli.returncode == 0, cli.stderr
    assert score(router, "beta", json.loads(cli.stdout)["accessToken"]).status_code == 200
    assert score(router, "beta", issued.json()["accessToken"]).status_code == 401


def test_the_derived_key_is_salted_per_endpoint_and_not_the_old_hmac(router: RouterProcess) -> None:
    alpha_key = tokens.signing_key({"primaryKey": PRIMARY}, "default", "alpha")
    assert alpha_key is not None
    # one primaryKey, two endpoints: a token alpha's key signs for beta does not open beta
    assert score(router, "alpha", signed(alpha_key, "alpha")).status_code == 200
    r = score(router, "beta", signed(alpha_key, "beta"))
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid key or token"
    # the fast, unsalted derivation of earlier versions signs nothing any more
    old = hmac.new(PRIMARY.encode(), b"inference-router token signing", hashlib.sha256).digest()
    assert score(router, "alpha", signed(old, "alpha")).status_code == 401


def test_a_lifetime_over_a_day_or_no_iat_is_refused(router: RouterProcess) -> None:
    key = tokens.signing_key({"primaryKey": PRIMARY}, "default", "alpha")
    assert key is not None
    now = int(time.time())
    assert score(router, "alpha", signed(key, "alpha", exp=now + 24 * 3600)).status_code == 200
    r = score(router, "alpha", signed(key, "alpha", exp=now + 24 * 3600 + 1))
    assert r.status_code == 401 and "lifetime" in r.json()["error"]["message"]
    r = score(router, "alpha", signed(key, "alpha", exp=now + 5 * 365 * 86400))
    assert r.status_code == 401 and "over 24 hours" in r.json()["error"]["message"]
    assert score(router, "alpha", signed(key, "alpha", iat=None)).status_code == 401
    # a number as text: PyJWT lets it through, the lifetime check must not fail on it (it was a 500)
    r = score(router, "alpha", signed(key, "alpha", iat=str(now)))
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid key or token"


def test_a_token_endpoint_answers_a_stranger_as_an_unknown_endpoint_does(router: RouterProcess) -> None:
    answers = [score(router, name, "not-a-token-0123456789") for name in ("alpha", "nosuch")]
    assert [r.status_code for r in answers] == [401, 401]
    assert answers[0].json()["error"]["message"] == answers[1].json()["error"]["message"] == "invalid key or token"


@pytest.mark.parametrize(("ttl", "message"), [
    ("9" * 5000, "--ttl: must be from 1 minute to 24 hours, got '99999999999999999...'"),
    ("25h", "--ttl: must be from 1 minute to 24 hours, got '25h'"),
    ("1 week", "--ttl: expected a duration like 30m, 1h or 3600, got '1 week'"),
])
def test_the_cli_refuses_a_bad_ttl_clearly(router: RouterProcess, ttl: str, message: str) -> None:
    cli = cli_token(router, "alpha", ttl)
    assert cli.returncode == 2 and message in cli.stderr and "Traceback" not in cli.stderr
    assert cli.stdout == ""


@pytest.mark.parametrize(("text", "seconds"), [("60", 60), ("30m", 1800), (" 1H ", 3600), ("24h", 86400),
                                               ("0001h", 3600), ("1d", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["59", "1441m", "2d", "0", "1" + "0" * 4400, "", "-1h", "1.5h"])
def test_bad_durations_name_the_setting(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        tokens.parse_ttl(text, "ttl (query parameter)")
    (problem,) = refused.value.problems
    assert problem.startswith("ttl (query parameter): ") and len(problem) < 120
