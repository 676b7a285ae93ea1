"""The client side of the data plane: one HTTP/1.1 connection, parsed with httptools.

Requests on a connection are answered in order. The request being answered is the
`current` exchange; requests a client pipelines behind it wait in `pipeline` (with
reading paused, so a client cannot queue without bound) and start when the one
before them is done.

The parser (llhttp) refuses ambiguous framing itself: Content-Length with
Transfer-Encoding, repeated or malformed lengths, obsolete line folding, bare CR or
LF, bad chunk sizes. The router re-frames every request it forwards (its own
Content-Length or chunking), so the replica can never read a request differently.

Slow clients: each connection is in one phase (headers, body, busy, idle) since
a time; `DataPlane.sweep` closes the ones over their phase's limit, several times
per shortest limit, instead of arming a timer per request. Only time the client is
responsible for counts: while the router itself does not read (a full pipeline, a
body waiting for a replica, an answer the client does not read), the phase's clock
stands, and it restarts when reading resumes. A client that does not read its
answers is aborted once its pending output has not moved for `--send-timeout`, and
nothing more is read from it meanwhile (`OUTPUT`), so it holds at most its buffers.

Closing while the client may still be sending (a refusal before its body was read,
a pipeline cut short) is a lingering close, as nginx's: the answer is sent, writing
is shut down, and what comes is read and dropped for at most `LINGER_S` and
`LINGER_BYTES`. Closing with unread input at once makes the kernel send a reset,
which many clients report instead of the answer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from typing import TYPE_CHECKING

import httptools

from router import logs
from router.errors import (
    BadRequest,
    HeadersTooLarge,
    InternalError,
    RequestTimeout,
    RouterError,
    ServiceUnavailable,
    UriTooLong,
)
from router.front.exchange import Exchange
from router.front.limits import ClientLimits
from router.front.mirror import MirrorGate
from router.front.pauses import DRAINING, OUTPUT, PENDING, PIPELINE, UPSTREAM
from router.front.responses import error_response
from router.front.scoring import RequestHead, new_request_id
from router.front.telemetry import Telemetry
from router.proxy.cork import cork_for

if TYPE_CHECKING:
    from router.balancing.table import RoutingTable

# What a connection is waiting for. DISCARD: the rest of a body whose answer is sent (read to stay
# in step with the client, for at most LINGER_S); LINGER: a lingering close.
HEAD, BODY, BUSY, IDLE, DISCARD, LINGER = 1, 2, 3, 4, 5, 6
MAX_PIPELINE = 64  # requests a client may queue behind the one being answered
LINGER_S = 2.0  # a lingering close, or the rest of an unwanted body, is read for at most this long ...
LINGER_BYTES = 16 * 1024 * 1024  # ... and this much (an upload refused before it was read, say)
# Answers corked in one read's parsing before they are sent at once, to notice a client that does not
# read them (pause_writing) before more of its requests are started.
_CORKED_PIECES = 32


class _PipelineFull(Exception):
    """Raised from a parser callback to stop reading a client that pipelines too deep."""


class DataPlane:
    """What every client connection shares: the routing table, limits, and open connections."""

    def __init__(self, table: RoutingTable, limits: ClientLimits | None = None, *, scheme: bytes = b"http",
                 telemetry: Telemetry | None = None) -> None:
        self.table = table
        self.limits = limits or ClientLimits()
        self.max_body_bytes = self.limits.max_body_bytes
        self.scheme = scheme
        self.loop = asyncio.get_running_loop()
        self.cork = cork_for(self.loop)
        self.connections: set[ClientConnection] = set()
        self.per_client: dict[bytes, int] = {}  # open connections by client address (trusted proxies not counted)
        # TLS connections accepted whose handshake is under way: they count against --max-connections
        # too. A failed handshake is never reported to the protocol, but the TLS layer drops it then:
        # an entry leaves when its connection is made, or when the connection is gone.
        self.handshakes: weakref.WeakSet[ClientConnection] = weakref.WeakSet()
        # With --proxy-protocol: connections accepted whose PROXY header is still to come (they count
        # against --max-connections too), and those closed for it, by reason (see front.proxied).
        self.headers_pending = 0
        self.proxy_rejections = {"untrusted": 0, "malformed": 0, "timeout": 0}
        self.mirrors = MirrorGate()
        self.telemetry = telemetry or Telemetry(metrics=False)
        self.draining = False
        limits = self.limits
        # the sweep runs often enough to act within a tenth of the shortest client timeout
        self.sweep_interval = min(1.0, limits.header_timeout / 10, limits.body_timeout / 10,
                                  limits.keepalive_timeout / 10)

    def protocol(self, client: bytes = b"") -> ClientConnection:
        """A connection's protocol; `client`: the address a PROXY protocol header named, if any."""
        return ClientConnection(self, client)

    def tls_protocol(self, client: bytes = b"") -> ClientConnection:
        """A connection accepted on the TLS listener, counted from now: its handshake is still to come."""
        conn = ClientConnection(self, client)
        conn.scheme = b"https"
        self.handshakes.add(conn)
        return conn

    def open_connections(self) -> int:
        """Client connections open, TLS handshakes and PROXY headers under way included."""
        return len(self.connections) + len(self.handshakes) + self.headers_pending

    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.current is not None)

    def close_idle(self) -> None:
        """Close the connections between two requests; one receiving a request head is not idle."""
        for conn in list(self.connections):
            if conn.current is None and conn._head_bytes < 0 and not conn.pipeline and conn.phase != LINGER:
                conn.close()

    def sweep(self) -> None:
        """Close connections that sent nothing for longer than their phase allows, and abort those whose
        pending output has not moved for --send-timeout."""
        now, limits = self.loop.time(), self.limits
        for conn in list(self.connections):
            transport = conn.transport
            if transport is None:
                continue
            unsent = transport.get_write_buffer_size()
            if unsent:
                if unsent < conn.unsent or not conn.stalled_since:  # some of it left: moving
                    conn.stalled_since = now
                elif now - conn.stalled_since > limits.send_timeout:
                    logs.event("client.stalled", client=conn.peer_host.decode(), unsent=unsent)
                    conn.abort()
                    continue
                conn.unsent = unsent
            elif conn.stalled_since:
                conn.stalled_since, conn.unsent = 0.0, 0
            phase, waited = conn.phase, now - conn.since
            if conn.paused and phase <= BODY:
                continue  # the router is not reading: the client cannot be late
            if phase == HEAD and waited > limits.header_timeout:
                conn.time_out("the request headers did not arrive in time")
            elif phase == BODY and waited > limits.body_timeout:
                conn.time_out("the request body stopped arriving")
            elif phase == IDLE and waited > limits.keepalive_timeout:
                conn.close()
            elif phase >= DISCARD and waited > LINGER_S:
                transport.close()  # enough of what nobody reads: what is still written is sent, then closed


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "__weakref__",
        "_advancing",
        "_counted",
        "_head_bytes",
        "_headers",
        "_out",
        "_partial",
        "_receiving",
        "_refusal",
        "_url",
        "current",
        "front",
        "parser",
        "paused",
        "peer_host",
        "phase",
        "pipeline",
        "scheme",
        "since",
        "stalled_since",
        "transport",
        "trusted",
        "unsent",
    )

    def __init__(self, front: DataPlane, client: bytes = b"") -> None:
        self.front = front
        self.scheme = front.scheme
        self.transport: asyncio.Transport | None = None
        # made with the connection: until then nothing refers back to this object, so a TLS handshake
        # that fails frees it at once (see DataPlane.handshakes)
        self.parser: httptools.HttpRequestParser
        self.peer_host = client  # set by a PROXY protocol header, or from the peer when the connection is made
        self.trusted = False  # a trusted proxy: its X-Forwarded-* are kept
        self.current: Exchange | None = None
        self.pipeline: collections.deque[Exchange] = collections.deque()
        self.phase = HEAD
        self.since = front.loop.time()
        # why reading is paused: a set of `pauses` flags; OUTPUT while the client does not read its answers as
        # fast as they come
        self.paused = 0
        self._advancing = False  # exchange_done is starting the next pipelined requests
        self._refusal: RouterError | None = None  # to send once the requests before it are answered
        self._receiving: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # bytes of a request head that is not complete yet (-1: none started)
        self._partial = 0  # bytes since the last complete header, while a head is incomplete
        self._out: list[bytes] = []
        self._counted = False  # in front.connections (and per_client)
        self.stalled_since = 0.0  # since when its pending output has not moved (0: none pending)
        self.unsent = 0  # pending output at the last sweep

    # transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio.Transport subclasses
        self.parser = httptools.HttpRequestParser(self)
        front = self.front
        if front.handshakes:
            front.handshakes.discard(self)  # its TLS handshake is over
        peer_host = self.peer_host
        if peer_host:  # the client a PROXY protocol header named: the peer is the load balancer
            host = peer_host.decode()
        else:
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if peer else ""
            self.peer_host = peer_host = host.encode()
        limits = front.limits
        self.trusted = limits.trusts(host)
        self._head_bytes = -1
        if front.open_connections() >= limits.max_connections:
            self._refuse(ServiceUnavailable("too many open connections", headers=(("retry-after", "1"),)))
            return
        # a trusted proxy is not one client: the clients behind it are told apart per request only
        held = 0 if self.trusted else front.per_client.get(peer_host, 0)
        if held >= limits.max_connections_per_client:
            self._refuse(ServiceUnavailable("too many open connections from this address",
                                            headers=(("retry-after", "1"),)))
            return
        if not self.trusted:
            front.per_client[peer_host] = held + 1
        front.connections.add(self)
        self._counted = True

    def data_received(self, data: bytes) -> None:
        if self.phase == LINGER:  # read and dropped: see close()
            self._partial += len(data)
            if self._partial > LINGER_BYTES and self.transport is not None:
                self.transport.close()
            return
        if self.transport is None or self.transport.is_closing():
            return
        if self._head_bytes >= 0:
            self._partial += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(BadRequest("protocol upgrades are not supported"))
            return
        except httptools.HttpParserCallbackError as exc:
            error = exc.__context__
            if isinstance(error, _PipelineFull):  # answer what is queued, then close
                self._refusal_after_pipeline()
                return
            if not isinstance(error, RouterError):
                logs.logger.error("request.failed", exc_info=error)
                error = InternalError("the router failed on this request")
            self._refuse(error)
            return
        except httptools.HttpParserError as exc:
            self._refuse(BadRequest(f"malformed HTTP request: {exc}"))
            return
        if self._head_bytes >= 0:  # a head still incomplete
            try:
                self._check_head(self._partial)
            except HeadersTooLarge as error:
                self._refuse(error)

    def _check_head(self, partial: int) -> None:
        """The request head so far against the limits: its complete headers, plus `partial` bytes of
        the one being received. Checked once per read and when the head is complete, not per header:
        a read adds a bounded number of headers."""
        limits = self.front.limits
        if len(self._headers) > limits.max_header_count:
            raise HeadersTooLarge(f"more than {limits.max_header_count} request headers")
        if self._head_bytes + partial > limits.max_header_bytes:
            raise HeadersTooLarge(f"the request headers are over the limit of {limits.max_header_bytes} bytes")

    def _refusal_after_pipeline(self) -> None:
        """Too many pipelined requests: answer those queued, closing after the last one."""
        self.pause_reading(DRAINING)
        last = self.pipeline[-1] if self.pipeline else self.current
        if last is not None:
            last.keep_alive = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            front = self.front
            front.connections.discard(self)
            if not self.trusted:
                held = front.per_client.pop(self.peer_host, 1) - 1
                if held:
                    front.per_client[self.peer_host] = held
        if self.current is not None:
            self.current.on_client_lost()
        self.current = self._receiving = None
        self.pipeline.clear()
        self.transport = None

    def pause_writing(self) -> None:
        self.pause_reading(OUTPUT)
        if self.current is not None:
            self.current.hold_answer()

    def resume_writing(self) -> None:
        self.resume_reading(OUTPUT)
        if self.current is not None:
            if self.current.upstream is not None:
                self.current.upstream.resume_reading()
        elif self.pipeline:
            self.exchange_done(None)  # requests that waited for the client to read the answers before them

    # parser events
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = self._partial = 0
        if self.current is None:
            self.phase, self.since = HEAD, self.front.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if len(self._url) > self.front.limits.max_url_bytes:
            raise UriTooLong(f"the URL is over the limit of {self.front.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # also a trailer, after a chunked body: counted against the same limits, then dropped
        # (the body is re-framed without it); see on_chunk_header
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        self._partial = 0

    def on_chunk_header(self) -> None:
        # Until this chunk's data comes (or, after the last chunk, until the message ends), what is read
        # is a chunk header or trailers: counted as a head is, so trailers meet the header limits.
        self._head_bytes = self._partial = 0
        self._headers = []

    def on_headers_complete(self) -> None:
        self._check_head(0)
        self._head_bytes = -1
        transport = self.transport
        if transport is None or transport.is_closing() or self.phase == LINGER:
            return  # a request behind one that closed the connection: never answered
        if self._out and len(self._out) > _CORKED_PIECES:
            self.flush()  # many answers in one read: send them now, to learn whether the client reads them
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        head = RequestHead(parser.get_method(), self._url, self._headers, keep_alive, self.trusted,
                           self.front.max_body_bytes)
        head.http11 = parser.get_http_version() == "1.1"
        exchange = self._receiving = Exchange(self, head)
        if self.current is None and not self._advancing and not self.paused & OUTPUT:
            self.phase, self.since = BODY, self.front.loop.time()
            self.current = exchange
            exchange.start()
        else:
            if len(self.pipeline) >= MAX_PIPELINE:
                raise _PipelineFull
            self.pipeline.append(exchange)
            self.pause_reading(PIPELINE)

    def on_body(self, body: bytes) -> None:
        self._head_bytes = -1  # a chunk's data, not a head (see on_chunk_header)
        if self.phase != DISCARD:  # an unwanted body has LINGER_S in all, however it trickles
            self.since = self.front.loop.time()
        if self._receiving is not None:
            self._receiving.on_request_body(body)

    def on_message_complete(self) -> None:
        if self._head_bytes >= 0:  # the trailers of a chunked body, all in the last read
            self._check_head(0)
            self._head_bytes = -1
        exchange, self._receiving = self._receiving, None
        if exchange is self.current:
            self.phase = BUSY
        if exchange is not None:
            exchange.on_request_end()

    # used by exchanges
    def write(self, data: bytes) -> None:
        # Corked: everything written while this loop iteration runs leaves in one send().
        if not self._out:
            self.front.cork.add(self)
        self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and self.phase != LINGER:  # (after write_eof: nothing more)
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def discard_rest(self) -> None:
        """The answer is sent, the rest of the body is read and dropped: within LINGER_S in all."""
        self.phase, self.since = DISCARD, self.front.loop.time()

    def exchange_done(self, exchange: Exchange | None) -> None:
        """`exchange` is done: start the pipelined requests in turn, or wait for the next one. None: no
        exchange ended, but the pipelined ones may start now (the client reads its answers again)."""
        if exchange is not self.current:
            return
        if exchange is not None:
            self.current = None
            if self.paused:
                self.resume_reading(PENDING | UPSTREAM)  # reasons of the exchange that ended
            if not exchange.keep_alive:
                self.close()
                return
        if self._advancing:
            return  # the loop below starts the next one (no recursion through many pipelined requests)
        if self.pipeline:
            self._advancing = True
            try:
                # nothing is started on a connection that is closing, nor for a client not reading its answers
                while self.current is None and self.pipeline and not self.paused & OUTPUT and not self._closing():
                    self.current = self.pipeline.popleft()
                    self.phase, self.since = (BUSY if self.current.request_complete else BODY), self.front.loop.time()
                    if not self.current.request_complete or not self.pipeline:
                        self.resume_reading(PIPELINE)  # its body, or the next requests, are still to be read
                    self.current.start()
            finally:
                self._advancing = False
            if self.current is not None or self.pipeline:
                return
        transport = self.transport
        if transport is None or transport.is_closing() or self.phase == LINGER:
            return
        if self._refusal is not None:  # what came after the answered requests was not a valid request
            self._send_refusal(self._refusal)
        elif self.front.draining:
            self.close()
        else:
            self.phase, self.since = (HEAD if self._head_bytes >= 0 else IDLE), self.front.loop.time()
            if self.paused:
                self.resume_reading(PIPELINE)

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reasons: int) -> None:
        if self.paused and not self.paused & ~reasons and self.transport is not None:
            self.transport.resume_reading()
            if self.phase <= BODY:  # the time the router did not read is not the client's
                self.since = self.front.loop.time()
        self.paused &= ~reasons

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing() or self.phase == LINGER

    def close(self) -> None:
        """Close once what is written is sent; lingering, if the client may still be sending."""
        transport = self.transport
        if transport is None or self.phase == LINGER:
            return
        self.flush()
        # unread input: a request not read whole, a pipeline cut short, or reading paused with bytes waiting
        if self._counted and (self._head_bytes >= 0 or self._receiving is not None or self.paused or self.pipeline):
            self.phase, self.since, self._partial = LINGER, self.front.loop.time(), 0
            self.pipeline.clear()
            if transport.can_write_eof():
                transport.write_eof()  # the client sees the end of the answer at once
            if self.paused:
                self.paused = 0
                transport.resume_reading()
            return
        transport.close()  # flushes what is written, then closes

    def abort(self) -> None:
        """Cut the connection: an answer already under way cannot be finished."""
        self._out = []
        if self.transport is not None:
            self.transport.abort()

    def time_out(self, reason: str) -> None:
        if self.phase == HEAD and self._head_bytes <= 0:
            if self.transport is not None:
                self.transport.close()  # nothing of a request came: nothing to answer
        else:
            self._refuse(RequestTimeout(reason))

    def _refuse(self, error: RouterError) -> None:
        """Answer with `error` out of the normal flow, and close the connection.

        Requests read whole before the bad one are answered first; the bad one is what is left
        of the connection, so nothing more is read from it."""
        if self._closing():  # closed already, within this read (an answer that ended the connection)
            return
        current = self.current
        if current is not None and current.response_done:
            self.close()  # answered already: what follows is not worth an answer
            return
        if current is not None and current.request_complete:
            self._refusal = error
            self.pause_reading(DRAINING)
            self.pipeline = collections.deque(e for e in self.pipeline if e.request_complete)
            return
        if current is not None and current.response_started:
            self.abort()  # cannot answer out of turn
            return
        self._send_refusal(error)

    def _send_refusal(self, error: RouterError) -> None:
        current = self.current
        request_id = current.head.request_id if current is not None else new_request_id()
        if current is not None:
            current.on_client_lost(error)
            self.current = None
            if current.deployment is not None:
                error.deployment = current.deployment.name
        else:
            self.front.telemetry.refused(error, request_id, self.peer_host)
        if error.status >= 500 and not isinstance(error, ServiceUnavailable):
            logs.event("request.refused", level=logging.ERROR, status=error.status, reason=error.message)
        self.write(error_response(error, request_id, keep_alive=False))
        self.close()

    def __repr__(self) -> str:
        return f"<ClientConnection {self.peer_host.decode()} current={self.current!r} queued={len(self.pipeline)}>"
