"""The client side of the data plane: one HTTP/1.1 connection, parsed with httptools.

Requests on a connection are answered in order. The request being answered is the
`current` exchange; requests a client pipelines behind it wait in `pipeline` (with
reading paused, so a client cannot queue without bound) and start when the one
before them is done.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import httptools

from router.errors import BadRequest
from router.front.exchange import Exchange
from router.front.mirror import MirrorGate
from router.front.responses import error_response
from router.front.scoring import RequestHead

if TYPE_CHECKING:
    from router.balancing.table import RoutingTable


class DataPlane:
    """What every client connection shares: the routing table, limits, and open connections."""

    def __init__(self, table: RoutingTable, *, max_body_bytes: int, scheme: bytes = b"http") -> None:
        self.table = table
        self.max_body_bytes = max_body_bytes
        self.scheme = scheme
        self.loop = asyncio.get_running_loop()
        self.connections: set[ClientConnection] = set()
        self.mirrors = MirrorGate()
        self.draining = False

    def protocol(self) -> ClientConnection:
        return ClientConnection(self)

    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.current is not None)

    def close_idle(self) -> None:
        for conn in list(self.connections):
            if conn.current is None:
                conn.close()


class ClientConnection(asyncio.Protocol):
    __slots__ = ("_headers", "_out", "_reading", "_receiving", "_url", "current", "front", "http11",
                 "parser", "peer_host", "pipeline", "scheme", "transport")

    def __init__(self, front: DataPlane) -> None:
        self.front = front
        self.scheme = front.scheme
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_host = b""
        self.http11 = True
        self.current: Exchange | None = None
        self.pipeline: collections.deque[Exchange] = collections.deque()
        self._receiving: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._reading = True
        self._out: list[bytes] = []

    # transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.peer_host = str(peer[0]).encode() if peer else b""
        self.front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(BadRequest("protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._refuse(BadRequest(f"malformed HTTP request: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        if self.current is not None:
            self.current.on_client_lost()
        self.current = self._receiving = None
        self.pipeline.clear()
        self.transport = None

    def pause_writing(self) -> None:
        if self.current is not None and self.current.upstream is not None:
            self.current.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.current is not None and self.current.upstream is not None:
            self.current.upstream.resume_reading()

    # parser events
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # a request behind one that closed the connection: never answered
        parser = self.parser
        self.http11 = parser.get_http_version() == "1.1"
        head = RequestHead(parser.get_method(), self._url, self._headers, parser.should_keep_alive())
        exchange = self._receiving = Exchange(self, head)
        if self.current is None:
            self.current = exchange
            exchange.start()
        else:
            self.pipeline.append(exchange)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self._receiving is not None:
            self._receiving.on_request_body(body)

    def on_message_complete(self) -> None:
        exchange, self._receiving = self._receiving, None
        if exchange is not None:
            exchange.on_request_end()

    # used by exchanges
    def write(self, data: bytes) -> None:
        # Corked: everything written while this loop iteration runs leaves in one send().
        if not self._out:
            self.front.loop.call_soon(self.flush)
        self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def exchange_done(self, exchange: Exchange) -> None:
        if exchange is not self.current:
            return
        self.current = None
        if not exchange.keep_alive:
            self.close()
            return
        if self.pipeline:
            self.current = self.pipeline.popleft()
            self.current.start()
        elif self.front.draining:
            self.close()
        else:
            self.resume_reading()

    def pause_reading(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and self.transport is not None:
            self._reading = True
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.flush()
            self.transport.close()  # flushes what is written, then closes

    def abort(self) -> None:
        """Cut the connection: an answer already under way cannot be finished."""
        self._out = []
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, error: BadRequest) -> None:
        if self.current is not None and self.current.response_done:
            self.close()  # answered already: what follows is not worth an answer
            return
        if self.current is not None and self.current.response_started:
            self.abort()  # cannot answer out of turn
            return
        request_id = self.current.head.request_id if self.current else RequestHead(b"", b"", [], False).request_id
        if self.current is not None:
            self.current.on_client_lost()
            self.current = None
        self.write(error_response(error, request_id, keep_alive=False))
        self.close()

    def __repr__(self) -> str:
        return f"<ClientConnection {self.peer_host.decode()} current={self.current!r} queued={len(self.pipeline)}>"
