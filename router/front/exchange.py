"""One request forwarded to a replica, and its answer streamed back.

An `Exchange` sits between the client connection (which feeds it the request body
as it arrives) and one upstream connection (which feeds it the answer as it
arrives); bytes pass straight through in both directions, with back-pressure: a
full write buffer on one side pauses reading on the other.

It ends in exactly one of these ways, each releasing the replica at once:
- the answer completes: the upstream connection goes back to the pool if the
  replica read the whole request and keeps the connection alive;
- the replica fails before answering: 502 (after the answer started, the client
  connection is cut, since a status can no longer be sent);
- the request timeout fires: 504, or a cut connection once the answer started;
- the client goes away: the upstream connection is dropped, which cancels the work.
The client connection moves on to its next request only when both the answer is
written and the request is read to its end (a body the replica no longer wants is
read and discarded, so the connection stays in step).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from router.errors import BadGateway, GatewayTimeout, PayloadTooLarge, RouterError
from router.front.responses import CONTINUE, error_response
from router.front.scoring import HOP_BY_HOP, SWAGGER, RequestHead, resolve

if TYPE_CHECKING:
    from router.balancing.replicas import Replica
    from router.balancing.table import DeploymentRoute
    from router.front.connection import ClientConnection
    from router.proxy.upstream import UpstreamConnection

_NO_BODY_STATUS = frozenset({204, 304})
_RESPONSE_SKIP = HOP_BY_HOP | {b"x-request-id", b"azureml-model-deployment", b"x-ms-client-request-id"}
_PENDING_LIMIT = 256 * 1024  # body bytes buffered while connecting before the client is paused


class Exchange:
    __slots__ = ("_chunked_response", "_connecting", "_timer", "body_bytes", "client", "deployment", "discard",
                 "head", "keep_alive", "pending", "replica", "request_complete", "request_forwarded",
                 "response_done", "response_started", "upstream")

    def __init__(self, client: ClientConnection, head: RequestHead) -> None:
        self.client = client
        self.head = head
        self.keep_alive = head.keep_alive
        self.deployment: DeploymentRoute | None = None
        self.replica: Replica | None = None
        self.upstream: UpstreamConnection | None = None
        self.pending: list[bytes] | None = []
        self.body_bytes = 0
        self.request_complete = self.request_forwarded = False
        self.response_started = self.response_done = False
        self.discard = False  # the request body is read but no longer forwarded
        self._chunked_response = False
        self._connecting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- start ----------------------------------------------------------------------------
    def start(self) -> None:
        front = self.client.front
        try:
            self.head.check(front.max_body_bytes)
            deployment, replica, kind = resolve(front.table, self.head)
        except RouterError as error:
            self.respond_error(error)
            return
        self.deployment, self.replica = deployment, replica
        replica.in_flight += 1
        self._timer = front.loop.call_later(deployment.timeout, self._on_timeout)
        if kind == SWAGGER:
            self.head.target, self.head.query = b"/swagger.json", b""
        else:
            self.head.target = deployment.scoring_route
        if self.head.expect_continue and not self.request_complete:
            self.client.write(CONTINUE)
        conn = replica.pool.take()
        if conn is not None:
            self._attach(conn)
        else:
            self._connecting = front.loop.create_task(self._connect())

    async def _connect(self) -> None:
        assert self.replica is not None
        try:
            conn = await self.replica.pool.connect()
        except BadGateway as error:
            self._connecting = None
            self.on_upstream_error(error)
            return
        self._connecting = None
        if self.response_done or self.replica is None:  # ended while connecting: keep the connection
            conn.pool.release(conn)
        else:
            self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.sink = self
        conn.write(self._upstream_head())
        pending, self.pending = self.pending, None
        for chunk in pending or ():
            self._forward(chunk)
        if self.request_complete:
            self._end_request_body()
        if pending and sum(map(len, pending)) > _PENDING_LIMIT:
            self.client.resume_reading()

    def _upstream_head(self) -> bytes:
        head, client = self.head, self.client
        assert self.replica is not None
        lines = [head.method + b" " + head.target + (b"?" + head.query if head.query else b"") + b" HTTP/1.1",
                 b"host: " + self.replica.host_header]
        lines.extend(name + b": " + value for name, value in head.forwarded)
        if head.chunked:
            lines.append(b"transfer-encoding: chunked")
        elif head.content_length is not None:
            lines.append(b"content-length: %d" % head.content_length)
        elif head.method == b"POST":
            lines.append(b"content-length: 0")
        lines.append(b"x-request-id: " + head.request_id)
        lines.append(b"x-forwarded-for: " + client.peer_host)
        lines.append(b"x-forwarded-proto: " + client.scheme)
        if head.host:
            lines.append(b"x-forwarded-host: " + head.host)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    # -- request body, from the client ----------------------------------------------------
    def on_request_body(self, data: bytes) -> None:
        if self.discard:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.client.front.max_body_bytes:
            self.keep_alive = False
            self._fail(PayloadTooLarge(f"the request body is over the limit of "
                                       f"{self.client.front.max_body_bytes} bytes"))
            return
        if self.pending is not None:
            self.pending.append(data)
            if sum(map(len, self.pending)) > _PENDING_LIMIT:
                self.client.pause_reading()
        else:
            self._forward(data)

    def on_request_end(self) -> None:
        self.request_complete = True
        if self.upstream is not None:
            self._end_request_body()
        self._maybe_done()

    def _forward(self, data: bytes) -> None:
        assert self.upstream is not None
        if self.head.chunked:
            self.upstream.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.upstream.write(data)

    def _end_request_body(self) -> None:
        if self.head.chunked and self.upstream is not None:
            self.upstream.write(b"0\r\n\r\n")
        self.request_forwarded = True

    def pause_request_body(self) -> None:
        self.client.pause_reading()

    def resume_request_body(self) -> None:
        self.client.resume_reading()

    # -- answer, from the replica ---------------------------------------------------------
    def on_response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                         content_length: bool) -> None:
        assert self.deployment is not None
        self.response_started = True
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        lines.extend(name + b": " + value for name, value in headers if name not in _RESPONSE_SKIP)
        if not content_length and status not in _NO_BODY_STATUS:
            if self.client.http11:
                lines.append(b"transfer-encoding: chunked")
                self._chunked_response = True
            else:  # an HTTP/1.0 client: the end of the connection ends the answer
                self.keep_alive = False
        lines.append(b"azureml-model-deployment: " + self.deployment.header_value)
        lines.append(b"x-request-id: " + self.head.request_id)
        if self.head.client_request_id:
            lines.append(b"x-ms-client-request-id: " + self.head.client_request_id)
        if not self.keep_alive or self.client.front.draining:
            self.keep_alive = False
            lines.append(b"connection: close")
        self.client.write(b"\r\n".join(lines) + b"\r\n\r\n")

    def on_response_body(self, data: bytes) -> None:
        if self._chunked_response:
            self.client.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def on_response_end(self, keep_alive: bool) -> None:
        if self._chunked_response:
            self.client.write(b"0\r\n\r\n")
        conn, self.upstream = self.upstream, None
        if conn is not None:
            if keep_alive and self.request_forwarded:
                conn.pool.release(conn)
            else:
                conn.close()
        self.response_done = True
        self.discard = True
        self._release_replica()
        self._maybe_done()

    def on_upstream_error(self, error: BadGateway) -> None:
        self.upstream = None  # the connection closed itself
        self._fail(error)

    # -- endings --------------------------------------------------------------------------
    def _on_timeout(self) -> None:
        self._timer = None
        assert self.deployment is not None
        self._fail(GatewayTimeout(f"deployment {self.deployment.name!r} did not answer within "
                                  f"{self.deployment.spec.request_settings.request_timeout_ms} ms"))

    def _fail(self, error: RouterError) -> None:
        if self.response_done:
            return
        self._drop_upstream()
        if self.response_started:
            self.response_done = True
            self.client.abort()
        else:
            if self.deployment is not None:
                error.deployment = self.deployment.name
            self.respond_error(error)

    def respond_error(self, error: RouterError) -> None:
        self._release_replica()
        if not self.request_complete and (self.head.expect_continue or isinstance(error, PayloadTooLarge)):
            self.keep_alive = False  # the body is unwanted or too big to read through
        if self.client.front.draining:
            self.keep_alive = False
        self.response_started = self.response_done = True
        self.discard = True
        self.pending = None
        self.client.write(error_response(error, self.head.request_id, self._echo_client_id(),
                                         keep_alive=self.keep_alive))
        self._maybe_done()

    def _echo_client_id(self) -> bytes:
        cid = self.head.client_request_id
        return cid if len(cid) <= 40 and cid.replace(b"-", b"").replace(b"_", b"").isalnum() else b""

    def on_client_lost(self) -> None:
        self.response_done = True
        self._drop_upstream()

    def _drop_upstream(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        self._release_replica()

    def _release_replica(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        replica, self.replica = self.replica, None
        if replica is not None:
            replica.in_flight -= 1
            if replica.retired and replica.in_flight == 0:
                replica.pool.close()

    def _maybe_done(self) -> None:
        if self.response_done and (self.request_complete or not self.keep_alive):
            self.client.exchange_done(self)

    def __repr__(self) -> str:
        dep = self.deployment.name if self.deployment else "-"
        return (f"<Exchange {self.head.request_id.decode()} deployment={dep} "
                f"started={self.response_started} done={self.response_done}>")
