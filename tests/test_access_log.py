"""Access log lines: their JSON, the on/off/sample setting, and batched writing."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import access_log
from router.access_log import WRITE_BYTES, AccessLog, Record, parse_mode
from router.errors import ConfigError, Unauthorized
from router.front.telemetry import Telemetry
from tests.helpers import ManagedProcess, run_to_exit, start_process
from tests.routing import Config, start_sample_model

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def record(status: int = 200, **changes: object) -> Record:
    fields: dict[str, object] = dict(
        end=10.0, request_id=b"8f1c2e3a-0000-4000-8000-000000000001", client_request_id=b"", traceparent=TRACEPARENT,
        method=b"POST", endpoint="mnist", deployment="blue", replica="http://10.0.0.5:5001", status=status,
        bytes_in=1024, bytes_out=57, queue=0.0001, upstream=0.0031, total=0.0034, retries=0, error="",
        client=b"10.1.2.3", caller=b"")
    fields.update(changes)
    return tuple(fields.values())  # type: ignore[return-value]


def test_a_line_is_one_json_object_with_every_field() -> None:
    line = AccessLog().format([record()], 1_700_000_000.0)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "time": 1_700_000_010.0, "event": "access", "request_id": "8f1c2e3a-0000-4000-8000-000000000001",
        "client_request_id": None, "trace_id": "0af7651916cd43dd8448eb211c80319c", "client": "10.1.2.3",
        "method": "POST", "endpoint": "mnist", "deployment": "blue", "replica": "http://10.0.0.5:5001",
        "status": 200, "bytes_in": 1024, "bytes_out": 57, "queue_ms": 0.1, "upstream_ms": 3.1, "total_ms": 3.4,
        "retries": 0, "error": None}


def test_what_did_not_happen_is_null_and_odd_values_are_escaped() -> None:
    line = json.loads(AccessLog().format([record(401, endpoint="", deployment="", replica="", queue=-1.0,
                                                 upstream=-1.0, error="Unauthorized",
                                                 client_request_id=b'a"b\\c\x01\xff', traceparent=b"",
                                                 method=b"")], 0.0))
    assert line["client_request_id"] == 'a"b\\c\x01\xff'
    assert (line["endpoint"], line["deployment"], line["replica"], line["queue_ms"], line["upstream_ms"]) == (
        None, None, None, None, None)
    assert (line["trace_id"], line["method"], line["error"]) == (None, None, "Unauthorized")


@pytest.mark.parametrize(("mode", "share"), [("on", 1.0), ("OFF", 0.0), ("sample=0.1", 0.1), ("sample=1", 1.0)])
def test_modes(mode: str, share: float) -> None:
    assert parse_mode(mode) == share


@pytest.mark.parametrize("mode", ["sample=0", "sample=1.5", "sample=x", "sometimes", ""])
def test_bad_modes_are_refused_with_the_setting_named(mode: str) -> None:
    with pytest.raises(ConfigError, match="access_log"):
        parse_mode(mode)


def test_sampling_keeps_a_share_of_successes_and_every_error() -> None:
    log = AccessLog(0.2)
    kept = sum(log.keeps(200) for _ in range(20_000))
    assert 3_400 < kept < 4_600
    assert all(log.keeps(status) for status in (400, 401, 499, 503, 504) for _ in range(100))
    assert AccessLog.from_setting("off") is None


class CountingStream(io.BytesIO):
    """A stream that counts its `write` calls."""

    writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


def test_a_batch_is_written_in_one_piece() -> None:
    out = CountingStream()
    log = AccessLog(1.0, out)
    log.write_lines(log.format([record(end=9.5), record(503, error="ServiceUnavailable")], 0.0), 2)
    log.write_lines(log.format([record(201)], 0.0), 1)  # another loop turn's lines: the same batch
    log.close()
    assert out.writes == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["status"] for line in lines] == [200, 503, 201]
    assert [line["time"] for line in lines][:2] == [10.0, 10.0]  # one loop turn's lines share its time
    assert repr(log) == "<AccessLog sample=1 lines=3 dropped=0>"


def test_a_stalled_pipe_never_blocks_the_writer_and_loses_only_what_is_over_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "MAX_QUEUED_BYTES", 2 * access_log.WRITE_BYTES)
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 65536)
    os.set_blocking(w, False)  # as the router opens stdout when it is a pipe
    with open(r, "rb") as reader, open(w, "wb", buffering=0) as pipe:
        log = AccessLog(1.0, pipe)
        line = log.format([record()], 0.0)
        for _ in range(400):  # 400 lines of ~450 bytes: the pipe holds 64 KiB, the bound 64 KiB more
            log.write_lines(line, 1)
        in_pipe = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) // len(line)
        assert log.waiting and in_pipe // 2 < log.lines <= in_pipe  # whole lines in pieces of at most PIPE_BUF
        assert 0 < log.refused == 400 - log.lines - log.waiting and log.dropped == log.refused
        got = os.read(reader.fileno(), 1 << 20)  # the reader wakes up: what waited goes at close
        log.close()
        got += os.read(reader.fileno(), 1 << 20)
    assert got.count(b"\n") == log.lines == 400 - log.refused
    assert all(json.loads(line)["status"] == 200 for line in got.splitlines())  # no line cut or mixed


def test_stdout_as_a_pipe_is_written_without_blocking_and_stays_blocking_itself() -> None:
    child = ("import os, sys, time\n"
             "from router import access_log\n"
             "from router.access_log import AccessLog\n"
             "access_log.MAX_QUEUED_BYTES = 100_000\n"
             "log = AccessLog()\n"
             "line = b'x' * 400 + b'\\n'\n"
             "started = time.monotonic()\n"
             "for _ in range(2000):\n"  # 800 KB into a pipe nobody reads yet
             "    log.write_lines(line * 10, 10)\n"
             "print(round(time.monotonic() - started), os.get_blocking(1), log.refused > 0, file=sys.stderr)\n"
             "log.close(timeout=0)\n")
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[1])
    try:
        process.wait(timeout=30)  # stdout unread meanwhile: the pipe stays full
        assert process.stderr is not None
        err = process.stderr.read()
    finally:
        process.kill()
        process.communicate()
    assert err.split() == [b"0", b"True", b"True"], err  # at once; fd 1 itself still blocking; lines dropped


def test_no_stdout_counts_the_lines_as_failed_and_logs_it_once() -> None:
    child = ("import sys\n"
             "from router import logs\n"
             "from router.access_log import AccessLog\n"
             "logs.setup()\n"
             "sys.stdout = None\n"
             "log = AccessLog()\n"
             "log.write_lines(b'a\\n', 1)\n"
             "log.flush()\n"
             "log.write_lines(b'b\\n', 1)\n"
             "log.flush()\n"
             "print(log.failed, log.lines, file=sys.stderr)\n")
    process = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=30,
                             cwd=Path(__file__).resolve().parents[1])
    err = process.stderr.decode()
    assert process.returncode == 0 and err.splitlines()[-1] == "2 0", err
    assert err.count("access_log.failed") == 1


def test_a_failing_stream_loses_its_lines_counted_and_the_log_goes_on() -> None:
    class Broken(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    log = AccessLog(1.0, Broken())
    log.write_lines(log.format([record(), record()], 0.0), 2)
    log.close()
    assert (log.lines, log.failed, log.dropped) == (0, 2, 2)


def test_a_router_whose_log_reader_stalls_keeps_answering(tmp_path: Path) -> None:
    model = start_sample_model("--name", "m")
    config = tmp_path / "router.yaml"
    config.write_text(Config().deployment("blue", [model.url], weight=100, concurrency=4).yaml())
    router = start_process([sys.executable, "-m", "router.cli", "serve", "--config", str(config),
                            "--allow-insecure-connections", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0"],
                           read_stdout=False)  # its stdout is a pipe nobody reads: full after ~150 lines
    try:
        url = f"http://127.0.0.1:{router.ready['port']}/api/v1/endpoint/demo/score"
        with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {Config.key}"}) as client:
            codes = [client.post(url, content=b"{}").status_code for _ in range(600)]  # ~270 KB of lines
        assert codes == [200] * 600
    finally:
        router.stop()
        model.process.stop()


def test_a_router_refuses_to_start_with_a_bad_access_log_setting(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(Config().yaml())
    serve = [sys.executable, "-m", "router.cli", "serve", "--config", str(config), "--allow-insecure-connections",
             "--port", "0", "--admin-port", "0"]
    code, output = run_to_exit([*serve, "--access-log", "sometimes"], timeout=30)
    assert code == 2
    assert "argument --access-log: expected on, off or sample=F with 0 < F <= 1, got 'sometimes'" in output
    process = ManagedProcess(serve, env={"ROUTER_ACCESS_LOG": "sometimes"})
    assert process.wait(30) == 2
    [refused] = process.events_named("start.refused")
    assert "ROUTER_ACCESS_LOG: expected on, off or sample=F" in refused["problems"][0]


def test_lines_are_written_once_a_buffer_fills_not_only_at_the_interval() -> None:
    async def main() -> tuple[int, int]:
        out = io.BytesIO()
        telemetry = Telemetry(metrics=False, access_log=AccessLog(1.0, out), interval=3600)
        telemetry.refused(Unauthorized("no"), b"8f1c2e3a-0000-4000-8000-000000000001", b"10.1.2.3")
        await asyncio.sleep(0.2)  # turns end: the line is formatted, and kept (far less than a buffer)
        kept = out.getvalue().count(b"\n")
        for _ in range(WRITE_BYTES // 200):  # lines are over 200 bytes: this fills the buffer
            telemetry.refused(Unauthorized("no"), b"8f1c2e3a-0000-4000-8000-000000000001", b"10.1.2.3")
        await asyncio.sleep(0)  # this turn ends: the buffer is full, and written before any interval or flush
        written = out.getvalue().count(b"\n")
        telemetry.close()
        return kept, written

    kept, written = asyncio.run(main())
    assert kept == 0  # one line, far less than a buffer: kept until the interval
    assert written == WRITE_BYTES // 200 + 1
