"""Locust load test of one endpoint: score calls, pinned score calls and swagger calls, weighted.

Point it at any router, local or in a cluster (see README, "Load tests"):

    ROUTER_KEY=... locust -f loadtests/locustfile.py --host https://router.example.com \\
        --headless --users 32 --spawn-rate 8 --run-time 2m --html report.html

Environment (all optional but the key):
    ROUTER_KEY           the endpoint's primaryKey or secondaryKey (or an aml_token token)
    ROUTER_ENDPOINT      endpoint name (demo)
    ROUTER_DEPLOYMENT    deployment pinned by the pinned calls, `azureml-model-deployment` (green)
    LOAD_WEIGHTS         weights of score, pinned and swagger calls (8,1,1); 0 leaves a call out
    LOAD_PAYLOAD_BYTES   size of each score call's JSON body in bytes (1024, at least 16)
    LOAD_WAIT_MS         pause between one user's calls in milliseconds (0: as fast as answers come)
    LOAD_CA_FILE         CA bundle that signed the router's certificate (https hosts; default: the system's)
    LOAD_INSECURE        1: do not verify the router's certificate (a dev certificate without its CA)

A call fails unless the router answers 200, names the deployment that answered in
`azureml-model-deployment` (the pinned one for pinned calls), and a swagger call
returns a swagger document.
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Any

from locust import FastHttpUser, constant, task

KEY = os.environ.get("ROUTER_KEY", "")
ENDPOINT = os.environ.get("ROUTER_ENDPOINT", "demo")
PINNED = os.environ.get("ROUTER_DEPLOYMENT", "green")
SCORE_WEIGHT, PINNED_WEIGHT, SWAGGER_WEIGHT = (int(w) for w in os.environ.get("LOAD_WEIGHTS", "8,1,1").split(","))
PAYLOAD_BYTES = max(16, int(os.environ.get("LOAD_PAYLOAD_BYTES", "1024")))
WAIT_S = float(os.environ.get("LOAD_WAIT_MS", "0")) / 1000
CA_FILE = os.environ.get("LOAD_CA_FILE") or None
INSECURE = os.environ.get("LOAD_INSECURE", "") in ("1", "true", "yes")


def payload(size: int) -> bytes:
    """A JSON body of exactly `size` bytes: {"data": "xxx..."}."""
    body = json.dumps({"data": "x" * (size - 12)}).encode()
    assert len(body) == size
    return body


def verified_context(cafile: str | None = None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=CA_FILE or cafile)


class ScoringUser(FastHttpUser):
    wait_time = constant(WAIT_S)
    insecure = INSECURE
    ssl_context_factory = None if INSECURE else staticmethod(verified_context)
    network_timeout = connection_timeout = 30.0

    def on_start(self) -> None:
        if not KEY:
            raise RuntimeError("set ROUTER_KEY to the endpoint's key")
        self.auth = {"Authorization": f"Bearer {KEY}"}
        self.score_path = f"/api/v1/endpoint/{ENDPOINT}/score"
        self.body = payload(PAYLOAD_BYTES)

    def _score(self, name: str, headers: dict[str, str], expected: str | None) -> None:
        with self.client.post(self.score_path, data=self.body, name=name, catch_response=True,
                              headers={**self.auth, "Content-Type": "application/json", **headers}) as response:
            answered_by = response.headers.get("azureml-model-deployment") if response.headers else None
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
            elif not answered_by or (expected is not None and answered_by != expected):
                response.failure(f"answered by {answered_by!r}, expected {expected or 'a deployment'}")

    @task(SCORE_WEIGHT)
    def score(self) -> None:
        self._score("score", {}, None)

    @task(PINNED_WEIGHT)
    def pinned(self) -> None:
        self._score(f"score pinned to {PINNED}", {"azureml-model-deployment": PINNED}, PINNED)

    @task(SWAGGER_WEIGHT)
    def swagger(self) -> None:
        with self.client.get(f"/api/v1/endpoint/{ENDPOINT}/swagger.json", headers=self.auth, name="swagger",
                             catch_response=True) as response:
            document: Any = response.json() if response.status_code == 200 else None
            if not isinstance(document, dict) or "swagger" not in document:
                response.failure(f"status {response.status_code}: not a swagger document")
