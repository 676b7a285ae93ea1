"""One request forwarded to a replica, and its answer streamed back.

An `Exchange` sits between the client connection (which feeds it the request body
as it arrives) and one upstream connection (which feeds it the answer as it
arrives); bytes pass straight through in both directions, with back-pressure: a
full write buffer on one side pauses reading on the other.

Life of an exchange: resolved (endpoint, key, deployment), then admitted to a
replica by the deployment's balancer, at once or after waiting in its queue (503
when the wait runs out), then connected and forwarded. It ends in exactly one of
these ways, each freeing the replica's slot at once (and handing it to the next
waiter):
- the answer completes: the upstream connection goes back to the pool if the
  replica read the whole request and keeps the connection alive;
- the replica fails: if not one byte of the request left the router (connection
  refused, a pooled connection found dead), it is retried on another replica;
  otherwise 502 (after the answer started, the client connection is cut, since a
  status can no longer be sent);
- the request timeout fires: 504, or a cut connection once the answer started;
- the client goes away: the upstream connection is dropped, which cancels the work.
The client connection moves on to its next request only when both the answer is
written and the request is read to its end (a body the replica no longer wants is
read and discarded, so the connection stays in step).
"""

from __future__ import annotations

import asyncio
import logging
import re
from time import perf_counter
from typing import TYPE_CHECKING

from router import logs
from router.balancing.table import SWAGGER
from router.errors import BadGateway, GatewayTimeout, PayloadTooLarge, RouterError, ServiceUnavailable
from router.front.deadlines import Deadlines
from router.front.mirror import MirrorCopy
from router.front.pauses import OUTPUT, PENDING, UPSTREAM
from router.front.responses import CONTINUE, error_response
from router.front.scoring import HOP_BY_HOP, RequestHead, replica_target, resolve, upstream_head
from router.front.telemetry import CLIENT_CLOSED
from router.proxy.upstream import CACHED_BYTES, CACHED_HEADS

if TYPE_CHECKING:
    from router.balancing.admission import DeploymentBalancer
    from router.balancing.replicas import Replica
    from router.balancing.table import DeploymentRoute
    from router.front.connection import ClientConnection
    from router.proxy.upstream import UpstreamConnection

_NO_BODY_STATUS = frozenset({204, 304})
# the replica's header lines the client never sees: hop-by-hop ones, and those the router sets itself
_RESPONSE_SKIP = re.compile(rb"\r\n(?:%s)[ \t]*:[^\r]*" % b"|".join(sorted(
    HOP_BY_HOP | {b"x-request-id", b"azureml-model-deployment", b"x-ms-client-request-id"})), re.IGNORECASE)
_CONNECTION = re.compile(rb"\r\nconnection[ \t]*:([^\r]*)", re.IGNORECASE)
_passed_on: dict[bytes, bytes] = {}  # the replica's header lines, less those skipped (they repeat: see upstream)


def passed_on(fields: bytes) -> bytes:
    kept = _passed_on.get(fields)
    if kept is None:
        kept = _RESPONSE_SKIP.sub(b"", fields)
        # and the headers the replica's Connection header names: they were for its hop only (RFC 9110 §7.6.1)
        named = {token.strip().lower() for value in _CONNECTION.findall(fields) for token in value.split(b",")}
        # never the framing: the answer is passed on with the replica's own framing (RFC 9110 §7.6.1 lets a
        # sender list them, and dropping Content-Length would leave an unframed body on a kept connection)
        named -= {b"", b"close", b"keep-alive", b"content-length", b"transfer-encoding"}
        if named:
            kept = re.sub(rb"\r\n(?:%s)[ \t]*:[^\r]*" % b"|".join(re.escape(name) for name in sorted(named)), b"",
                          kept, flags=re.IGNORECASE)
        if len(fields) <= CACHED_BYTES:
            if len(_passed_on) >= CACHED_HEADS:
                _passed_on.clear()
            _passed_on[fields] = kept
    return kept


_RESPONSE_HEAD = b"HTTP/1.1 %d %s%s%s\r\nazureml-model-deployment: %s\r\nx-request-id: %s%s%s\r\n\r\n"
_PENDING_LIMIT = 256 * 1024  # body bytes buffered before admission before the client is paused
_DISCARD_LIMIT = 1024 * 1024  # an unwanted body is read and dropped up to this; beyond, the connection closes
MAX_ATTEMPTS = 3  # replicas tried for one request, when nothing was sent to the earlier ones


class Exchange:
    __slots__ = ("_chunked_response", "_connecting", "_continued", "_deadlines", "_deferred", "_failure", "_held",
                 "_queue_timer", "admitted_at", "attempts", "balancer", "body_bytes", "bytes_out", "client", "deadline",
                 "deployment", "discard", "dispatched_at", "head", "keep_alive", "mirror", "pending",
                 "pending_bytes", "queued", "replica", "request_complete", "request_forwarded", "response_done",
                 "response_started", "started", "status", "target", "tried", "upstream")

    def __init__(self, client: ClientConnection, head: RequestHead) -> None:
        self.client = client
        self.head = head
        self.keep_alive = head.keep_alive
        self.target = b""  # what the replica is asked for: path and query
        self.deployment: DeploymentRoute | None = None
        self.balancer: DeploymentBalancer | None = None
        self.replica: Replica | None = None
        self.upstream: UpstreamConnection | None = None
        self.mirror: MirrorCopy | None = None
        self.pending: list[bytes] | None = []  # body kept for a retry (or not yet forwarded)
        self.pending_bytes = 0
        self.body_bytes = 0
        self.attempts = 0
        self.tried: tuple[Replica, ...] = ()
        self.deadline = 0.0  # for the balancer's queue: when waiting ends
        self.dispatched_at = 0.0  # when the whole request was handed to the replica's connection
        self.started = self.admitted_at = 0.0  # perf_counter() at start() and at the last admission
        self.queued = 0.0  # seconds from start() to the first admission
        self.bytes_out = self.status = 0  # answer body bytes sent to the client; the replica's status
        self.request_complete = self.request_forwarded = False
        self.response_started = self.response_done = False
        self.discard = False  # the request body is read but no longer forwarded
        self._chunked_response = self._continued = False
        self._deferred: RouterError | None = None  # an error found before this request's turn to answer
        self._failure: BadGateway | None = None  # the last replica failure, for a retry that finds no slot
        self._held = False  # the answer was held back for a client not reading: its timing is not the replica's
        self._connecting: asyncio.Task[None] | None = None
        self._deadlines: Deadlines | None = None  # where this request's timeout is kept
        self._queue_timer: asyncio.TimerHandle | None = None

    # -- start: resolve, then admit ---------------------------------------------------------
    def start(self) -> None:
        front = self.client.front
        head = self.head
        self.started = perf_counter()
        if self.response_done:
            return
        refusal = self._deferred or head.refusal  # kept errors are answered, not raised (no traceback cycle)
        if refusal is not None:
            self.respond_error(refusal)
            return
        try:
            endpoint, deployment, kind = resolve(front.table, head)
        except RouterError as error:
            self.respond_error(error)
            return
        self.deployment = deployment
        balancer = self.balancer = deployment.balancer
        now = front.loop.time()
        self._deadlines = deployment.deadlines or deployment.keep_deadlines(Deadlines(front.loop, deployment.timeout))
        self._deadlines.add(self, now)
        if kind == SWAGGER:
            self.target = b"/swagger.json"
        else:
            self.target = replica_target(head, deployment.scoring_route)
            if endpoint.mirror is not None and not head.pinned and front.mirrors.take(endpoint):
                self.mirror = mirror = MirrorCopy.start(front, endpoint.mirror, head, self.client.peer_host,
                                                           self.client.scheme)
                for chunk in self.pending or ():  # a body that came before this request's turn
                    mirror.add_body(chunk)
                if self.request_complete:
                    mirror.end_body()
        replica = balancer.acquire(now)
        if replica is not None:
            self._admit(replica)
        elif not balancer.replicas:
            self._fail(ServiceUnavailable(f"deployment {deployment.name!r} has no ready replica",
                                          headers=(("retry-after", "1"),)))
        elif balancer.max_queue_wait <= 0:
            self._no_slot(now)
        else:
            self._wait(now)

    def _wait(self, now: float, first: bool = False) -> None:
        assert self.balancer is not None
        self.deadline = now + self.balancer.max_queue_wait
        self.balancer.enqueue(self, first=first)
        self._queue_timer = self.client.front.loop.call_later(self.balancer.max_queue_wait, self._on_queue_timeout)

    def admitted(self, replica: Replica) -> None:
        """The balancer gave this waiting request a slot."""
        if self._queue_timer is not None:
            self._queue_timer.cancel()
            self._queue_timer = None
        self._admit(replica)

    def _on_queue_timeout(self) -> None:
        self._queue_timer = None
        assert self.balancer is not None
        now = self.client.front.loop.time()
        replica = self.balancer.expire(self, now)
        if replica is not None:
            self._admit(replica)
        else:
            self._no_slot(now)

    def _no_slot(self, now: float) -> None:
        """No slot came in time: a retry with nowhere to go answers with its replica's failure; any other
        request, that the deployment is at capacity."""
        if self._failure is not None:
            self._fail(self._failure)
            return
        assert self.balancer is not None and self.deployment is not None
        retry_after = self.balancer.retry_after(now)
        wait_ms = round(self.balancer.max_queue_wait * 1000)
        self._fail(ServiceUnavailable(f"deployment {self.deployment.name!r} is at capacity: no replica "
                                      f"was free within {wait_ms} ms", headers=(("retry-after", str(retry_after)),)))

    def _admit(self, replica: Replica) -> None:
        front = self.client.front
        self.replica = replica
        self.attempts += 1
        self.tried += (replica,)
        self.dispatched_at = 0.0
        self.admitted_at = perf_counter()
        if self.attempts == 1:
            self.queued = self.admitted_at - self.started
        if self.head.expect_continue and not self.request_complete and not self._continued:
            self._continued = True
            self.client.write(CONTINUE)
        conn = replica.pool.take()
        if conn is not None:
            self._attach(conn)
        else:
            self._connecting = front.loop.create_task(self._connect(replica))

    async def _connect(self, replica: Replica) -> None:
        try:
            conn = await replica.pool.connect()
        except BadGateway as error:
            self._connecting = None
            self._replica_failed(error, retryable=True, connect=True)
            return
        self._connecting = None
        if self.replica is not replica:  # ended while connecting: keep the fresh connection
            conn.pool.release(conn)
        else:
            self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.serve(self)
        if self.client.paused & OUTPUT:  # the client is not keeping up: hold the answer back from the start
            self.hold_answer()
        client, replica = self.client, self.replica
        assert replica is not None
        conn.write(upstream_head(self.head, self.target, replica.host_header, client.peer_host, client.scheme))
        pending = self.pending
        if pending is not None:
            for chunk in pending:
                self._forward(chunk)
            if self.client.paused:
                self.client.resume_reading(PENDING)
        if self.request_complete:
            self._end_request_body()
        if self.attempts >= MAX_ATTEMPTS:
            self.pending = None  # no further attempt can need the body again
        # else: keep what was buffered, and keep buffering, until the answer starts:
        # a retry on another replica must be able to send the request again

    # -- request body, from the client ----------------------------------------------------
    def on_request_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.mirror is not None:  # the copy gets the whole body, whatever happens to the live request
            self.mirror.add_body(data)
        if self.discard:
            return
        if self.body_bytes > self.client.front.max_body_bytes:
            self.keep_alive = False
            self._fail(PayloadTooLarge(f"the request body is over the limit of "
                                       f"{self.client.front.max_body_bytes} bytes"))
            return
        if self.pending is not None:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > _PENDING_LIMIT:
                if self.upstream is None:
                    self.client.pause_reading(PENDING)  # until admitted and connected
                else:
                    self.pending = None  # too big to keep for a retry
        if self.upstream is not None:
            if self.head.chunked:
                self._forward(data)
            else:
                self.upstream.write(data)

    def on_request_end(self) -> None:
        self.request_complete = True
        if self.mirror is not None:
            self.mirror.end_body()
        if self.upstream is not None:
            self._end_request_body()
        if self.response_done:
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
        # the replica's latency counts from here: the time a client takes to upload is not the replica's
        self.dispatched_at = self.client.front.loop.time()

    def hold_answer(self) -> None:
        """The client does not read as fast as the answer comes: stop reading the replica meanwhile."""
        if self.upstream is not None:
            self._held = True
            self.upstream.pause_reading()

    def pause_request_body(self) -> None:
        self.client.pause_reading(UPSTREAM)

    def resume_request_body(self) -> None:
        self.client.resume_reading(UPSTREAM)

    # -- answer, from the replica ---------------------------------------------------------
    def on_response_head(self, status: int, reason: bytes, fields: bytes, content_length: bool,
                         codings: bytes = b"") -> None:
        assert self.deployment is not None and self.replica is not None
        now = self.client.front.loop.time()
        # time to first byte from the whole request sent; an early answer (before that) or one held back
        # for the client is no sample of the replica's latency, but still an answer
        sample = (now - self.dispatched_at) * 1000 if self.request_forwarded and not self._held else None
        if self.replica.observe(sample, now):
            logs.event("replica.returned", deployment=self.deployment.name, replica=self.replica.url)
        framing = b""
        if not content_length and status not in _NO_BODY_STATUS:
            if self.head.http11:  # re-chunked; a coding the replica applied (gzip, ...) is kept, and said
                framing = b"\r\ntransfer-encoding: %s, chunked" % codings if codings else \
                    b"\r\ntransfer-encoding: chunked"
                self._chunked_response = True
            elif codings:  # an HTTP/1.0 client knows no transfer codings: it cannot get this body intact
                self._fail(BadGateway("the replica's answer has a transfer coding an HTTP/1.0 client cannot read"))
                return
            else:  # an HTTP/1.0 client: the end of the connection ends the answer
                self.keep_alive = False
        self.response_started = True
        self.status = status
        self.pending = None
        head = self.head
        client_id = b"\r\nx-ms-client-request-id: " + head.client_request_id if head.client_request_id else b""
        close = b""
        if not self.keep_alive or self.client.front.draining:
            self.keep_alive = False
            close = b"\r\nconnection: close"
        self.client.write(_RESPONSE_HEAD % (status, reason, _passed_on.get(fields) or passed_on(fields), framing,
                                            self.deployment.header_value, head.request_id, client_id, close))

    def on_response_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self._chunked_response:
            self.client.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def on_response_end(self, keep_alive: bool) -> None:
        if self._chunked_response:
            self.client.write(b"0\r\n\r\n")
        conn, self.upstream = self.upstream, None
        if conn is not None:
            # pooled only in step (the whole request sent) and idle (nothing of it still buffered, so the
            # next request on it starts with its back-pressure intact)
            if keep_alive and self.request_forwarded and conn.drained():
                conn.pool.release(conn)
            else:
                conn.close()
        self.response_done = self.discard = True
        self.pending = None
        if not self.request_complete:
            self._stop_forwarding()
        self._release_replica()
        self.client.front.telemetry.ended(self, self.status)
        if self.request_complete or not self.keep_alive:
            self._maybe_done()

    def on_upstream_error(self, error: BadGateway, sent: bool) -> None:
        self.upstream = None  # the connection closed itself
        self._replica_failed(error, retryable=not sent)

    def _replica_failed(self, error: BadGateway, *, retryable: bool, connect: bool = False) -> None:
        """`replica` failed this request; only a failure to `connect` counts towards its ejection (an
        invalid or cut answer may be the request's doing: a few poison requests must not eject it)."""
        replica, front = self.replica, self.client.front
        if replica is None or self.response_done:
            return
        now = front.loop.time()
        assert self.balancer is not None
        # the client's error says nothing of the replica's address or errno: the log does
        logs.event("replica.failed", level=logging.WARNING, deployment=self.balancer.key, replica=replica.url,
                   request_id=self.head.request_id.decode(), reason=error.detail or error.message)
        front.telemetry.replica_failed(self, "connect" if connect else "answer")
        self._failure = error
        if connect:
            others = any(r is not replica and not r.ejected(now) for r in self.balancer.replicas)
            if replica.fail(now, may_eject=others):
                logs.event("replica.ejected", level=logging.WARNING, deployment=self.balancer.key,
                           replica=replica.url, seconds=round(replica.ejected_until - now, 1),
                           reason=error.detail or error.message)
        untried = any(r not in self.tried for r in self.balancer.replicas)
        if retryable and untried and not self.response_started and self.attempts < MAX_ATTEMPTS and (
                self.pending is not None or not self.body_bytes):
            self._release_replica(keep_timer=True)
            logs.event("request.retried", request_id=self.head.request_id.decode(), failed=replica.url)
            again = self.balancer.acquire(now, self.tried, jump=True)
            if again is not None:
                self._admit(again)
            else:  # back to the head of the queue, for another replica's slot
                self._wait(now, first=True)
            return
        self._fail(error)

    # -- endings --------------------------------------------------------------------------
    def expire(self) -> None:
        """The request timeout ran out."""
        self._deadlines = None
        assert self.deployment is not None
        if self.replica is None and self._queue_timer is not None:  # still waiting for a slot: never got one
            self._no_slot(self.client.front.loop.time())
            return
        # a replica that hangs is a slow replica; one held up by its client (a slow upload, an answer
        # the client does not read) is not
        if self.replica is not None and self.request_forwarded and not self.response_started and not self._held:
            now = self.client.front.loop.time()
            self.replica.observe((now - self.dispatched_at) * 1000, now, answered=False)
        self._fail(GatewayTimeout(f"deployment {self.deployment.name!r} did not answer within "
                                  f"{self.deployment.spec.request_settings.request_timeout_ms} ms"))

    def _fail(self, error: RouterError) -> None:
        if self.response_done:
            return
        self._drop_upstream()
        if self.response_started:
            self.response_done = True
            self.client.abort()
            self.client.front.telemetry.ended(self, self.status, error)
        else:
            if self.deployment is not None:
                error.deployment = self.deployment.name
            self.respond_error(error)

    def respond_error(self, error: RouterError) -> None:
        self._release_replica()
        if self.client.current is not self:  # a pipelined request: it answers in its turn
            self._deferred = error
            self.discard = True
            self.pending = None
            return
        if not self.request_complete and (self.head.expect_continue or isinstance(error, PayloadTooLarge)):
            self.keep_alive = False  # the body is unwanted or too big to read through
        if self.client.front.draining:
            self.keep_alive = False
        self.response_started = self.response_done = True
        self._stop_forwarding()
        response = error_response(error, self.head.request_id, self.head.client_request_id, keep_alive=self.keep_alive,
                                  head_only=self.head.method == b"HEAD")
        self.bytes_out = len(response) - response.index(b"\r\n\r\n") - 4
        self.client.write(response)
        self.client.front.telemetry.ended(self, error.status, error)
        self._maybe_done()

    def on_client_lost(self, error: RouterError | None = None) -> None:
        """The client went away, or (`error`) the connection is refused before this request was answered."""
        if not self.response_done:
            self.client.front.telemetry.ended(self, error.status if error else CLIENT_CLOSED, error)
        self.response_done = True
        self._drop_upstream()
        if self.mirror is not None:
            self.mirror.cancel()

    def _drop_upstream(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        self._release_replica()

    def _release_replica(self, keep_timer: bool = False) -> None:
        if self._deadlines is not None and not keep_timer:
            self._deadlines.discard(self)
            self._deadlines = None
        if self._queue_timer is not None:  # still waiting for a slot: leave the queue
            self._queue_timer.cancel()
            self._queue_timer = None
            if self.balancer is not None:
                self.balancer.remove(self)
        replica, self.replica = self.replica, None
        if replica is None or self.balancer is None:
            return
        for waiter, next_replica in self.balancer.release(replica, self.client.front.loop.time()):
            waiter.admitted(next_replica)
        if replica.retired and replica.in_flight == 0:
            replica.pool.close()

    def _stop_forwarding(self) -> None:
        """The answer is given: what is left of the request body is read and dropped (or, if much
        is left, the connection closed), and a copy that cannot get its whole body is dropped."""
        self.discard = True
        self.pending = None
        if not self.request_complete:
            # without Content-Length or chunking a request has no body (RFC 9112 §6.3): nothing is left
            left = None if self.head.chunked else (self.head.content_length or 0) - self.body_bytes
            if left is None or left > _DISCARD_LIMIT:
                self.keep_alive = False  # a lingering close (see ClientConnection.close)
            elif self.client.current is self:
                self.client.discard_rest()
            self.client.resume_reading(PENDING | UPSTREAM)

    def _maybe_done(self) -> None:
        if self.response_done and (self.request_complete or not self.keep_alive):
            if self.mirror is not None and not self.request_complete:
                self.mirror.cancel()
            self.client.exchange_done(self)

    def __repr__(self) -> str:
        dep = self.deployment.name if self.deployment else "-"
        return (f"<Exchange {self.head.request_id.decode()} deployment={dep} "
                f"started={self.response_started} done={self.response_done}>")
