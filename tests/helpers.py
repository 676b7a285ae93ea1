"""Run the project's commands as real subprocesses in tests.

`start_process(args)` starts a process with stdout and stderr piped, reads both in background threads
(so the pipes never fill), keeps every line, parses the JSON ones as events and returns once the ready
event (`{"event": "listening", ...}` by default) has appeared. `stop_process` sends SIGTERM by PID,
waits, kills if needed and returns the exit code.

    model = start_process([sys.executable, "-m", "router.sample_model", "--port", "0"])
    port = model.ready["port"]
    ...
    assert model.stop() == 0
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_LIVE: set[ManagedProcess] = set()  # not yet stopped: stopped at interpreter exit if a test forgot to
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for process in leftovers:
        process.stop(timeout=5)


class BackgroundLoop:
    """`_run` in a daemon thread for the length of a `with` block: leaving the block sets `_stop`, which
    `_run` watches, and waits up to `join_s` for the thread to end."""

    join_s = 5.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.join_s)

    def _run(self) -> None:
        raise NotImplementedError


class ProcessError(RuntimeError):
    """The process exited, or did not say what was awaited in time; the message holds its output."""


class ManagedProcess:
    """A subprocess whose stdout and stderr lines are collected; JSON object lines are also events."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        read_stdout: bool = True,
    ) -> None:
        self.args = list(args)
        self.lines: list[str] = []  # every line of both streams, in arrival order
        self.events: list[dict[str, Any]] = []  # the lines that are JSON objects, parsed
        self.ready: dict[str, Any] = {}  # the event start_process waited for
        self._cond = threading.Condition()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd if cwd is not None else PROJECT_ROOT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(stream, label), name=f"pid{self.proc.pid}-{label}")
            for stream, label in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr"))
            if read_stdout or label == "stderr"  # unread, stdout is a pipe that fills up: a stalled reader
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: IO[str] | None, label: str) -> None:
        if stream is None:
            return
        with stream:
            for raw in stream:
                line = raw.rstrip("\r\n")
                event = _parse_event(line)
                with self._cond:
                    self.lines.append(line)
                    if event is not None:
                        self.events.append(event)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _streams_closed(self) -> bool:
        return not any(reader.is_alive() for reader in self._readers)

    def output(self) -> str:
        """Everything the process has written so far, one line each."""
        with self._cond:
            return "\n".join(self.lines)

    def events_named(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == event]

    def wait_for_event(
        self,
        event: str,
        timeout: float = 15.0,
        *,
        where: Callable[[dict[str, Any]], bool] | None = None,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event named `event` (and matching `where`) among events[after:], waiting for it.

        Raises ProcessError, with the output so far, if the process exits without it or time runs out.
        Pass `after=len(p.events)` to wait only for a new one.
        """
        deadline = time.monotonic() + timeout

        def find() -> dict[str, Any] | None:
            for candidate in self.events[after:]:
                if candidate.get("event") == event and (where is None or where(candidate)):
                    return candidate
            return None

        exited_at: float | None = None
        with self._cond:
            while True:
                found = find()
                if found is not None:
                    return found
                # Both streams at EOF: nothing more can come (the process exited or closed them).
                if self._streams_closed():
                    break
                # Exited, but a child of it may hold the pipes open: give the readers a second to drain.
                if exited_at is None and self.proc.poll() is not None:
                    exited_at = time.monotonic()
                if exited_at is not None and time.monotonic() - exited_at > 1.0:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        code = self.proc.poll()
        if code is None and self._streams_closed():  # closed at exit, likely not yet reaped
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(1.0)
        state = "timed out" if code is None else f"exited with code {code}"
        raise ProcessError(
            f"{self.args!r} {state} before event {event!r} (waited {timeout:g}s); output:\n{self.output()}"
        )

    def terminate(self) -> None:
        """Send SIGTERM by PID without waiting (to stop several processes at once); see stop()."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM by PID, wait up to `timeout`, then SIGKILL; returns the exit code. Idempotent."""
        code = _terminate(self.proc, timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return code

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit by itself (no signal); returns the exit code, all output read."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return code

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as `(popen, ready_event)` too."""
        return iter((self.proc, self.ready))


@dataclass(frozen=True)
class SampleModel:
    """A running `python -m router.sample_model` on 127.0.0.1 (see the `sample_model_factory` fixture)."""

    process: ManagedProcess
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _parse_event(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def run_to_exit(args: Sequence[str], *, timeout: float = 20,
                env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run `args` until it exits by itself (stopped after `timeout`); its exit code and all its output."""
    process = ManagedProcess(args, env=env)
    try:
        code = process.wait(timeout)
    finally:
        process.stop()
    return code, process.output()


def start_process(
    args: Sequence[str],
    *,
    ready_event: str = "listening",
    timeout: float = 15,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    read_stdout: bool = True,
) -> ManagedProcess:
    """Start `args` and return once it prints a JSON line with `"event": ready_event` (in `.ready`).

    If the process exits first or `timeout` passes, it is stopped and ProcessError carries its output.
    """
    process = ManagedProcess(args, env=env, cwd=cwd, read_stdout=read_stdout)
    try:
        process.ready = process.wait_for_event(ready_event, timeout)
    except BaseException:
        process.stop()
        raise
    return process


def stop_process(proc: ManagedProcess | subprocess.Popen[Any], timeout: float = 10) -> int:
    """SIGTERM by PID, wait up to `timeout`, SIGKILL if still running; returns the exit code."""
    if isinstance(proc, ManagedProcess):
        return proc.stop(timeout)
    return _terminate(proc, timeout)


def _terminate(proc: subprocess.Popen[Any], timeout: float) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
