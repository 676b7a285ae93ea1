"""Keep-alive connections to one replica, and the protocol that parses its answers.

An `UpstreamConnection` serves one exchange at a time. While it serves one, it hands
every parser event to that exchange (the `ResponseSink`); between exchanges it sits
idle in its replica's `ConnectionPool` (LIFO, so the warmest connection is reused
and the others can time out). A connection whose exchange did not end cleanly is
closed, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Protocol

import httptools

from router import logs
from router.errors import BadGateway
from router.proxy.cork import cork_for


class ResponseSink(Protocol):
    """What an upstream connection reports to the exchange it serves."""

    def on_response_head(self, status: int, reason: bytes, fields: bytes, content_length: bool,
                         codings: bytes) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self, keep_alive: bool) -> None: ...
    def on_upstream_error(self, error: BadGateway, sent: bool) -> None: ...
    def pause_request_body(self) -> None: ...
    def resume_request_body(self) -> None: ...


MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers
# the headers that frame an answer's body (the parser checks their values)
_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding)[ \t]*:([^\r]*)", re.IGNORECASE)
# A replica sends the same header lines again and again (Date changes once a second, Content-Length
# with the answer's size): what they say of the framing is looked up, not searched for, most times.
_framing_of: dict[bytes, tuple[bool, bool, bytes]] = {}
CACHED_HEADS, CACHED_BYTES = 1024, 2048  # caches of header blocks: at most 2 MiB


def framing(fields: bytes) -> tuple[bool, bool, bytes]:
    """What header lines `fields` say of the body: a Content-Length; chunked (the last transfer coding,
    RFC 9112 §6.3: any other last coding means the body ends with the connection); and the other transfer
    codings (gzip, ...), which the body still has once de-chunked and the client must be told of."""
    found = _framing_of.get(fields)
    if found is None:
        content_length, codings = False, []
        for name, value in _FRAMING.findall(fields):
            if len(name) == 14:  # len("content-length")
                content_length = True
            else:
                codings += [c for c in (part.strip().lower() for part in value.split(b",")) if c]
        chunked = bool(codings) and codings[-1] == b"chunked"
        # identity is no coding (RFC 9112 removed it): nothing to tell
        kept = b", ".join(c for c in (codings[:-1] if chunked else codings) if c != b"identity")
        found = (content_length, chunked, kept)
        if len(fields) <= CACHED_BYTES:
            if len(_framing_of) >= CACHED_HEADS:
                _framing_of.clear()
            _framing_of[fields] = found
    return found


_HEAD_TOO_LARGE = f"the replica's answer headers are over {MAX_HEAD_BYTES} bytes"


class _HeadTooLarge(Exception):
    """Raised from the parser's callback: a complete head over MAX_HEAD_BYTES."""


class UpstreamConnection(asyncio.Protocol):
    """The answer's head is kept as the bytes that came (the parser only checks it and finds its
    end): the header lines are handed on as one block, with no call per header."""

    __slots__ = ("_cork", "_done", "_head", "_head_size", "_keep_alive", "_out", "_surplus", "_until_close",
                 "closed", "idle_since", "parser", "pool", "sent", "sink", "transport", "writing_paused")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.closed = False
        self.sent = False  # whether any byte of the current exchange left for the replica
        self.writing_paused = False  # the replica is not reading what is written as fast as it comes
        self.idle_since = 0.0
        self._head: list[bytes] | None = None  # what came of an answer whose head is not complete
        self._head_size = 0
        self._until_close = False
        # The end of an answer is handed on only after the parser returns, never from inside its
        # callback: the exchange may then give this connection to the next request at once, and
        # the parser must not go on feeding that request with what is left of this read.
        self._done = self._keep_alive = self._surplus = False
        self._out: list[bytes] = []
        self._cork = cork_for(asyncio.get_running_loop())

    # transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self.sink is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        head = self._head
        if head is not None:
            head.append(data)
            self._head_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._fail(_HEAD_TOO_LARGE)
                return
            if isinstance(exc, httptools.HttpParserCallbackError) and not self._done:
                logs.logger.error("upstream.callback_failed", exc_info=exc.__context__)
            if not self._done:
                self._fail("invalid answer from the replica", detail=f"invalid answer from the replica: {exc}")
                return
            self._surplus = True  # garbage after a complete answer: finish it, drop the connection
        if self._done:
            sink, keep_alive = self.sink, self._keep_alive and not self._surplus
            self.sink = None
            self._until_close = self._done = self._surplus = False
            if not keep_alive:
                self.close()
            if sink is not None:
                sink.on_response_end(keep_alive)
        elif self._head is not None and self._head_size > MAX_HEAD_BYTES:
            self._fail(_HEAD_TOO_LARGE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        sink = self.sink
        if sink is not None and self._until_close and exc is None:
            self.sink = None  # an answer without length or chunks: its end is the end of the connection
            sink.on_response_end(False)
        elif sink is not None:
            self._fail("the replica closed the connection before answering completely")
        self.pool.forget(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.sink is not None:
            self.sink.pause_request_body()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.sink is not None:
            self.sink.resume_request_body()

    def drained(self) -> bool:
        """Nothing written is still waiting to leave: fit to go back to the pool."""
        transport = self.transport
        return (not self.writing_paused and not self._out and transport is not None
                and not transport.get_write_buffer_size())

    # parser events (after the end of an answer, bytes of another one: ignored, and the connection dropped)
    def on_message_begin(self) -> None:
        if self._done:
            self._surplus = True

    def on_headers_complete(self) -> None:
        if self._done or self._head is None:
            return
        raw = self._head[0] if len(self._head) == 1 else b"".join(self._head)
        if raw.startswith((b"\r", b"\n")):  # empty lines before a status line: the parser skips them too
            raw = raw.lstrip(b"\r\n")
        end = raw.find(b"\r\n\r\n")  # the parser takes CRLF line ends only: the first blank line ends the head
        status = self.parser.get_status_code()
        if status < 200:  # interim answer (100 Continue and the like): not forwarded
            rest = raw[end + 4:]
            self._head, self._head_size = [rest], len(rest)
            return
        if end + 4 > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        self._head = None
        line_end = raw.find(b"\r\n")
        fields = raw[line_end:end]  # every header line, each starting with CRLF
        content_length, chunked, codings = _framing_of.get(fields) or framing(fields)
        self._until_close = not (content_length or chunked or status in (204, 304))
        if self.sink is not None:  # the reason phrase: after "HTTP/1.1 200 "
            self.sink.on_response_head(status, raw[13:line_end], fields, content_length, codings)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and not self._done:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._done or self.parser.get_status_code() < 200:
            return
        self._done = True
        self._keep_alive = self.parser.should_keep_alive()

    # used by the exchange
    def write(self, data: bytes) -> None:
        # Corked: the request head and body written in one loop iteration leave in one send().
        if not self._out:
            self._cork.add(self)
        self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.closed:
            self.sent = True
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        """Drop the connection; whatever it was doing is abandoned (the replica sees a reset)."""
        self.sink = None
        self._out = []
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self.pool.forget(self)

    def _fail(self, message: str, detail: str = "") -> None:
        sink, sent = self.sink, self.sent
        self.close()
        if sink is not None:
            where = f"{self.pool.host}:{self.pool.port}"
            sink.on_upstream_error(BadGateway(message, detail=f"{where}: {detail or message}"), sent)

    def serve(self, sink: ResponseSink) -> None:
        """Start serving an exchange: every parser event goes to `sink` until the answer ends."""
        self.sink = sink
        self.sent = False
        self._done = self._surplus = False
        self._head, self._head_size = [], 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else "busy" if self.sink else "idle"
        return f"<UpstreamConnection {self.pool.host}:{self.pool.port} {state}>"


class ConnectionPool:
    """Idle keep-alive connections to one replica."""

    __slots__ = ("connect_timeout", "host", "idle", "idle_timeout", "port")

    def __init__(self, host: str, port: int, *, idle_timeout: float = 4.0,
                 connect_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        # shorter than the keep-alive of common model servers (uvicorn: 5 s), so the
        # router drops an idle connection before the replica does and never races it
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.idle: list[UpstreamConnection] = []

    def take(self) -> UpstreamConnection | None:
        """The most recently used idle connection still fresh, if any."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                if time.monotonic() - conn.idle_since < self.idle_timeout:
                    return conn
                conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(self),
                                                       self.host, self.port)
        except TimeoutError:
            raise BadGateway("connecting to the replica timed out",
                             detail=f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise BadGateway("cannot connect to the replica",
                             detail=f"cannot connect to {self.host}:{self.port}: {reason}") from None
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):  # not idle: nothing to forget
            self.idle.remove(conn)

    def sweep(self) -> None:
        """Close connections idle for longer than the idle timeout."""
        deadline = time.monotonic() - self.idle_timeout
        for conn in [c for c in self.idle if c.idle_since < deadline]:
            conn.close()

    def close(self) -> None:
        for conn in list(self.idle):
            conn.close()

    def __repr__(self) -> str:
        return f"<ConnectionPool {self.host}:{self.port} idle={len(self.idle)}>"
