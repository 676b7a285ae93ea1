"""Mirror traffic: fire-and-forget copies of a share of live requests to a shadow deployment.

A copy is taken of requests that are not pinned, in the endpoint's `mirrorTraffic`
share (exact: credit accumulates per request, as in a weighted round-robin). The
copy's body is kept in memory up to `MAX_BODY` while the live request streams, and
sent once the body is complete; its answer is read and discarded. The copy never
holds up, fails or slows the live request: it is dropped when the mirror has no free
slot (it never queues), when too many copies are in flight, when the body is too
big, or when the client goes away before the body is complete.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from router.errors import BadGateway
from router.front.scoring import RequestHead, replica_target, upstream_head

if TYPE_CHECKING:
    from router.balancing.replicas import Replica
    from router.balancing.table import DeploymentRoute, EndpointRoute
    from router.front.connection import DataPlane
    from router.proxy.upstream import UpstreamConnection

MAX_BODY = 1024 * 1024
MAX_IN_FLIGHT = 64  # copies under way at once, over all endpoints


class MirrorGate:
    """Which requests get a copy, and how many copies may be under way."""

    def __init__(self) -> None:
        self.credit: dict[str, int] = {}
        self.in_flight = 0
        self.sent = 0
        self.dropped = 0

    def take(self, endpoint: EndpointRoute) -> bool:
        # TrafficSplit's smooth weighted round-robin with two names (copy, no copy) comes to this one
        # counter: reusing it would cost a split kept per endpoint and a loop on every request.
        credit = self.credit.get(endpoint.name, 0) + endpoint.mirror_percent
        if credit < 100:
            self.credit[endpoint.name] = credit
            return False
        self.credit[endpoint.name] = credit - 100
        if self.in_flight >= MAX_IN_FLIGHT:
            self.dropped += 1
            return False
        return True


class MirrorCopy:
    __slots__ = ("_body", "_conn", "_front", "_peer", "_scheme", "_size", "_task", "_timer", "deployment", "head",
                 "replica", "started")

    def __init__(self, front: DataPlane, deployment: DeploymentRoute, head: RequestHead, peer: bytes,
                 scheme: bytes) -> None:
        self._front = front
        self._scheme = scheme  # the client's: X-Forwarded-Proto as the live request has it
        self.deployment = deployment
        self.head = head
        self._peer = peer
        self._body: list[bytes] | None = []  # None once sent, dropped or finished
        self._size = 0
        self._conn: UpstreamConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.replica: Replica | None = None
        self.started = 0.0

    @classmethod
    def start(cls, front: DataPlane, deployment: DeploymentRoute, head: RequestHead, peer: bytes,
              scheme: bytes) -> MirrorCopy:
        front.mirrors.in_flight += 1  # until dropped (before it has a replica) or finished (with one)
        return cls(front, deployment, head, peer, scheme)

    def add_body(self, data: bytes) -> None:
        if self._body is None:
            return
        self._size += len(data)
        if self._size > MAX_BODY:
            self._abandon()
        else:
            self._body.append(data)

    def end_body(self) -> None:
        """The live request is read whole: send the copy now, if the mirror has a free slot."""
        if self._body is None:
            return
        now = self._front.loop.time()
        replica = self.deployment.balancer.acquire(now)
        if replica is None:
            self._abandon()
            return
        self.replica, self.started = replica, now
        self._timer = self._front.loop.call_later(self.deployment.timeout, self._finish)
        conn = replica.pool.take()
        if conn is not None:
            self._send(conn)
        else:
            self._task = self._front.loop.create_task(self._connect(replica))

    async def _connect(self, replica: Replica) -> None:
        try:
            conn = await replica.pool.connect()
        except BadGateway:
            self._task = None
            self._finish()
            return
        self._task = None
        if self.replica is None:
            conn.pool.release(conn)
        else:
            self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        assert self.replica is not None and self._body is not None
        self._conn = conn
        conn.serve(self)
        head = upstream_head(self.head, replica_target(self.head, self.deployment.scoring_route),
                             self.replica.host_header, self._peer, self._scheme, content_length=self._size)
        conn.write(head + b"".join(self._body))
        self._body = None
        self._front.mirrors.sent += 1

    def cancel(self) -> None:
        """The live client went away: a copy not yet sent is dropped; one under way goes on."""
        if self.replica is None:
            self._abandon()

    def _abandon(self) -> None:
        if self._body is not None and self.replica is None:
            self._body = None
            self._front.mirrors.dropped += 1
            self._front.mirrors.in_flight -= 1

    def _finish(self, conn_ok: bool = False) -> None:
        self._body = None  # a cancel() from now on drops nothing
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None:
            if conn_ok and conn.drained():
                conn.pool.release(conn)
            else:
                conn.close()
        replica, self.replica = self.replica, None
        if replica is None:  # finished already
            return
        self._front.mirrors.in_flight -= 1
        for waiter, next_replica in self.deployment.balancer.release(replica, self._front.loop.time()):
            waiter.admitted(next_replica)
        if replica.retired and replica.in_flight == 0:
            replica.pool.close()

    # the upstream connection's sink: the answer is read and dropped
    def on_response_head(self, status: int, reason: bytes, fields: bytes, content_length: bool,
                         codings: bytes) -> None:
        if self.replica is not None:
            now = self._front.loop.time()
            self.replica.observe((now - self.started) * 1000, now)

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self, keep_alive: bool) -> None:
        self._finish(conn_ok=keep_alive)

    def on_upstream_error(self, error: BadGateway, sent: bool) -> None:
        self._conn = None
        self._finish()

    def pause_request_body(self) -> None:
        pass

    def resume_request_body(self) -> None:
        pass
