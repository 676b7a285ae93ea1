"""Shared fixtures."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import ManagedProcess, SampleModel, start_process
from tests.routing import closed_port


@pytest.fixture
def sample_model_factory() -> Iterator[Callable[..., SampleModel]]:
    """`start("--name", "blue", "--latency-ms", "20")` starts a sample model on a free port.

    Every model started is stopped at teardown (SIGTERM to all first, then each is awaited).
    """
    started: list[ManagedProcess] = []

    def start(*args: str) -> SampleModel:
        command = [sys.executable, "-m", "router.sample_model", "--port", "0", *args]
        process = start_process(command, ready_event="listening")
        started.append(process)
        return SampleModel(process=process, port=int(process.ready["port"]), name=str(process.ready["name"]))

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.stop()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port where connections are refused, for the whole test (see `tests.routing.closed_port`)."""
    with closed_port() as port:
        yield port
