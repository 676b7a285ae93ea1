"""The access log: one JSON line per request, written in batches off the hot path.

The data plane appends one tuple (`Record`) per finished request to a list; the lines of
one loop turn's requests are formatted at the end of that turn, after their answers are
sent, and written in batches (stdout by default, where a container runtime collects it),
so a request never waits for its line. When stdout is a pipe, it is written without
blocking (through a second, non-blocking open of the same pipe): what the reader has no
room for waits in memory, and a reader more than 16 MiB behind loses lines, counted in
`dropped` (and the metric inference_router_access_log_dropped_lines_total), never the
router's time. Errors (status 400 and up) are always logged; `sample=F` keeps a share F
of the others.

A line, in this order (durations in milliseconds; null where a step did not happen; `time` is
when the last request of its loop turn ended, shared by that turn's lines):

    {"time": 1717171717.123, "event": "access", "request_id": "...", "client_request_id": null,
     "trace_id": "...", "client": "10.0.0.7", "method": "POST", "endpoint": "mnist",
     "deployment": "blue", "replica": "http://10.1.2.3:5001", "status": 200, "bytes_in": 1024,
     "bytes_out": 57, "queue_ms": 0.012, "upstream_ms": 3.1, "total_ms": 3.4, "retries": 0,
     "error": null}

No header is logged besides the ids: keys, tokens and the Authorization header never are.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import select
import stat
import sys
import time
from typing import BinaryIO

from router import logs
from router.errors import ConfigError
from router.settings import access_log_share

# end (loop time), request id, client request id, traceparent sent upstream, method, endpoint, deployment,
# replica, status, bytes in, bytes out, queue s, upstream s, total s, retries, error code, client address,
# traceparent received
Record = tuple[float, bytes, bytes, bytes, bytes, str, str, str, int, int, int, float, float, float, int, str,
               bytes, bytes]

_LINE = (b'{"time": %s, "event": "access", "request_id": "%s", "client_request_id": %s, "trace_id": %s, '
         b'%s, "status": %d, "bytes_in": %d, "bytes_out": %d, "queue_ms": %.3f, "upstream_ms": %.3f, '
         b'"total_ms": %.3f, "retries": %d, "error": %s}\n')
_LINE_UNSENT = _LINE.replace(b'%.3f, "upstream_ms": %.3f', b'null, "upstream_ms": null')  # never sent to a replica
_WHERE = b'"client": %s, "method": %s, "endpoint": %s, "deployment": %s, "replica": %s'
_where: dict[tuple[bytes, bytes, str, str, str], bytes] = {}  # the fields above, by their values (they repeat)
_QUOTED: dict[str | bytes, bytes] = {}  # JSON strings of the few values that repeat: names, replicas, addresses
_QUOTED_MAX = 10_000
# Lines are written once this much waits (or at `flush`): a small buffer stays in the CPU's cache, while a
# whole 100 ms of lines (about half a megabyte at 10,000 req/s) would not.
WRITE_BYTES = 32 * 1024
MAX_QUEUED_BYTES = 16 << 20  # lines waiting for a slow reader; beyond this, lines are dropped (and counted)


def parse_mode(mode: str) -> float:
    """The share of successful requests logged: "on" 1, "off" 0, "sample=F" F (0 < F <= 1)."""
    share = access_log_share(mode)
    if share is not None:
        return share
    raise ConfigError([f"access_log: must be on, off or sample=F with 0 < F <= 1, got {mode!r}"])


def _json(value: str | bytes) -> bytes:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return json.dumps(text).encode() if text else b"null"


def _quoted(value: str | bytes) -> bytes:
    quoted = _QUOTED.get(value)
    if quoted is None:
        quoted = _json(value)
        if len(_QUOTED) < _QUOTED_MAX:
            _QUOTED[value] = quoted
    return quoted


def _where_of(key: tuple[bytes, bytes, str, str, str]) -> bytes:
    where = _WHERE % tuple(_quoted(value) for value in key)
    if len(_where) >= _QUOTED_MAX:
        _where.clear()
    _where[key] = where
    return where


def format_line(r: Record, stamp: bytes) -> bytes:
    """One record as a JSON line; `stamp` is its Unix time, formatted."""
    trace_id = r[3][3:35]
    key = (r[16], r[4], r[5], r[6], r[7])
    where = _where.get(key) or _where_of(key)
    if r[11] >= 0:
        return _LINE % (stamp, r[1], _json(r[2]) if r[2] else b"null", b'"%s"' % trace_id if trace_id else b"null",
                        where, r[8], r[9], r[10], r[11] * 1000, r[12] * 1000, r[13] * 1000, r[14],
                        _QUOTED.get(r[15]) or _quoted(r[15]))
    return _LINE_UNSENT % (stamp, r[1], _json(r[2]) if r[2] else b"null", b'"%s"' % trace_id if trace_id else b"null",
                           where, r[8], r[9], r[10], r[13] * 1000, r[14], _QUOTED.get(r[15]) or _quoted(r[15]))


class AccessLog:
    """Which requests are logged, and where their lines go."""

    def __init__(self, sample: float = 1.0, stream: BinaryIO | None = None) -> None:
        self.sample = sample
        self.stream = stream  # None: stdout
        self.lines = 0  # written
        self.failed = 0  # lost to a failing stream
        self.refused = 0  # dropped: the reader was too far behind
        self._due: list[bytes] = []  # lines taken since the last flush, to be written as one batch
        self._due_bytes = self._due_lines = 0
        # batches the reader had no room for yet, and their lines
        self._waiting: collections.deque[tuple[bytes, int]] = collections.deque()
        self._waiting_bytes = self._waiting_lines = 0
        self._offset = 0  # what of the first waiting batch is written
        self._fd: int | None = None  # written with os.write, when the stream is a file descriptor
        self._pipe = self._own_fd = self._opened = self._broken = False

    @classmethod
    def from_setting(cls, mode: str) -> AccessLog | None:
        sample = parse_mode(mode)
        return cls(sample) if sample > 0 else None

    @property
    def dropped(self) -> int:
        """Lines never written: the reader fell behind, or the stream failed."""
        return self.refused + self.failed

    @property
    def waiting(self) -> int:
        """Lines not written yet."""
        return self._due_lines + self._waiting_lines

    def keeps(self, status: int) -> bool:
        return status >= 400 or self.sample >= 1.0 or random.random() < self.sample

    def format(self, records: list[Record], clock_offset: float) -> bytes:
        """The lines of `records`, which ended in one turn of the loop: they share its time (as nginx's
        lines share the time it caches once per turn), formatted once. `clock_offset` turns
        `perf_counter()` time into Unix time."""
        if not records:
            return b""
        stamp = b"%.3f" % (records[-1][0] + clock_offset)
        return b"".join([format_line(r, stamp) for r in records])

    def write_lines(self, data: bytes, count: int) -> None:
        """Take `count` formatted lines; they are written once WRITE_BYTES are taken, or at `flush`.
        Lines are dropped (counted) while more than MAX_QUEUED_BYTES wait for the reader. Never raises."""
        if self._broken:
            self.failed += count
        elif self._due_bytes + self._waiting_bytes > MAX_QUEUED_BYTES:
            self.refused += count
        elif data:
            self._due.append(data)
            self._due_bytes += len(data)
            self._due_lines += count
            if self._due_bytes >= WRITE_BYTES:
                self.flush()

    def flush(self) -> None:
        """Write what waits, as far as the stream takes it without waiting; what is left waits for the
        next time. Never raises."""
        if self._due:  # one batch: one write where the stream takes it all
            self._waiting.append((b"".join(self._due), self._due_lines))
            self._waiting_bytes += self._due_bytes
            self._waiting_lines += self._due_lines
            self._due, self._due_bytes, self._due_lines = [], 0, 0
        if not self._waiting:
            return
        try:
            if not self._opened:
                self._open()
            self._send()
        except (OSError, ValueError, AttributeError) as exc:  # a broken or missing stdout must not stop the router
            lost = self._forget()
            self.failed += lost
            self._broken = True  # later lines are counted as failed, not tried (and not logged again)
            logs.event("access_log.failed", level=logging.ERROR, error=str(exc) or type(exc).__name__, lost=lost)

    def _open(self) -> None:
        self._opened = True
        if self.stream is not None:
            try:
                self._fd = self.stream.fileno()
            except (OSError, ValueError):  # not a file descriptor (a test's BytesIO): written as a stream
                return
        else:
            sys.stdout.flush()  # what was printed before goes first
            self._fd = sys.stdout.fileno()
        self._pipe = stat.S_ISFIFO(os.fstat(self._fd).st_mode)
        if self._pipe and self.stream is None:
            try:  # a second open of the pipe, with its own flags: stdout itself stays blocking
                self._fd = os.open(f"/proc/self/fd/{self._fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                self._own_fd = True
            except OSError as exc:
                logs.event("access_log.blocking", level=logging.WARNING, error=str(exc),
                           note="stdout is a pipe that could not be opened again without blocking: "
                                "a reader that stalls will stall the router")

    def _send(self) -> None:
        while self._waiting:
            data, count = self._waiting[0]
            if self._fd is None:
                assert self.stream is not None
                self.stream.write(data)
                self.stream.flush()
                self._offset = len(data)
            else:
                self._offset = self._put(data, self._offset)
                if self._offset < len(data):  # the reader is behind: the rest waits
                    return
            self._waiting.popleft()
            self._waiting_bytes -= len(data)
            self._waiting_lines -= count
            self._offset = 0
            self.lines += count

    def _put(self, data: bytes, start: int) -> int:
        """Write `data` from `start` until done or the pipe is full; where it stopped. Into a pipe, whole
        lines in writes of at most PIPE_BUF bytes, which a pipe takes whole or not at all: a line is
        never cut, nor mixed with what another writer (stderr on the same pipe) puts in."""
        assert self._fd is not None
        view = memoryview(data)
        while start < len(data):
            end = len(data)
            if self._pipe and end - start > select.PIPE_BUF:
                cut = data.rfind(b"\n", start, start + select.PIPE_BUF)
                end = cut + 1 if cut >= 0 else start + select.PIPE_BUF  # a line over PIPE_BUF: in pieces
            try:
                start += os.write(self._fd, view[start:end])
            except BlockingIOError:
                break
        return start

    def close(self, timeout: float = 5.0) -> None:
        """Write what still waits, for at most `timeout` s (a reader that never reads loses it)."""
        self.flush()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        if self._fd is not None:
            poller.register(self._fd, select.POLLOUT)
        while self._waiting and not self._broken:
            left = deadline - time.monotonic()
            if left <= 0:
                self.refused += self._forget()  # a line half written counts as lost
                break
            poller.poll(left * 1000)
            self.flush()
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
            self._fd, self._own_fd = None, False

    def _forget(self) -> int:
        """Drop what waits; how many lines that was."""
        lost = self.waiting
        self._waiting.clear()
        self._due, self._due_bytes, self._due_lines = [], 0, 0
        self._waiting_bytes = self._waiting_lines = self._offset = 0
        return lost

    def __repr__(self) -> str:
        return f"<AccessLog sample={self.sample:g} lines={self.lines} dropped={self.dropped}>"
