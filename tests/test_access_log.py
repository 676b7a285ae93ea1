"""Access log lines: their JSON, the on/off/sample setting, and batched writing."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from router.access_log import AccessLog, Record, parse_mode
from router.errors import ConfigError, Unauthorized
from router.front.telemetry import WRITE_BYTES, Telemetry
from tests.helpers import ManagedProcess
from tests.routing import Config

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
    log.write([record(end=9.5), record(503, error="ServiceUnavailable")], 0.0)
    assert out.writes == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["status"] for line in lines] == [200, 503]
    assert [line["time"] for line in lines] == [10.0, 10.0]  # one loop turn's lines share its time
    assert repr(log) == "<AccessLog sample=1 lines=2>"


def test_a_router_refuses_to_start_with_a_bad_access_log_setting(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(Config().yaml())
    process = ManagedProcess([sys.executable, "-m", "router.cli", "serve", "--config", str(config),
                              "--allow-insecure-connections", "--port", "0", "--admin-port", "0",
                              "--access-log", "sometimes"])
    assert process.wait(30) != 0
    [refused] = process.events_named("start.refused")
    assert "access_log" in refused["problems"][0]


def test_lines_are_written_once_a_buffer_fills_not_only_at_the_interval() -> None:
    async def main() -> tuple[int, int, int]:
        out = io.BytesIO()
        telemetry = Telemetry(metrics=False, access_log=AccessLog(1.0, out), interval=3600)
        telemetry.refused(Unauthorized("no"), b"8f1c2e3a-0000-4000-8000-000000000001", b"10.1.2.3")
        await asyncio.sleep(0)  # the turn ends: its line is formatted, and kept (far less than a buffer)
        kept = len(out.getvalue())
        for _ in range(WRITE_BYTES // 200):  # lines are over 200 bytes: this fills the buffer
            telemetry.refused(Unauthorized("no"), b"8f1c2e3a-0000-4000-8000-000000000001", b"10.1.2.3")
        await asyncio.sleep(0)
        written = out.getvalue().count(b"\n")
        telemetry.flush()
        return kept, written, out.getvalue().count(b"\n")

    kept, written, total = asyncio.run(main())
    assert kept == 0 and written == total == WRITE_BYTES // 200 + 1
