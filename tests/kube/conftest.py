"""A fake API server per test, and a kubeconfig that points the unmodified client at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.fake_apiserver import FakeApiServer


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:  # bookmarks about once a minute, as a real server sends them
        yield server


@pytest.fixture
def kubeconfig(api_server: FakeApiServer, tmp_path: Path) -> Path:
    return api_server.kubeconfig(tmp_path / "kubeconfig")
