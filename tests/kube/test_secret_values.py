"""A Secret of the cluster that the router refuses is reported by key and problem, never by value
(`kubernetes.rejected`); tests/test_secret_values.py covers local mode."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.kube.cluster import seed_demo, start_kube_router
from tests.kube.fake_apiserver import FakeApiServer

MARKER = "Zq8MRKv"
KEY = "demo-primary-key-Lk4Jh7Gf2Ds9Ap1Z"


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_rejected_secret_is_reported_without_its_values(api_server: FakeApiServer, kubeconfig: Path) -> None:
    seed_demo(api_server, KEY)
    router = start_kube_router(kubeconfig)
    try:
        router.wait_ready()
        for value in (encoded(MARKER), encoded(f"<{MARKER}-your-key-here>"), f"Pl41nT3xt-{MARKER}!"):
            after = len(router.process.events)
            api_server.patch("secrets", "demo-keys", {"data": {"primaryKey": value}})
            router.process.wait_for_event("kubernetes.rejected", timeout=10, after=after)
    finally:
        router.stop()
    output = router.process.output()
    assert "data.primaryKey: must be at least 16 characters" in output and "data.primaryKey: must be base64" in output
    assert "data.primaryKey: looks like a placeholder" in output
    assert MARKER not in output
