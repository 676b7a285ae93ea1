"""A scoring listener with --proxy-protocol: each connection's PROXY protocol header is read before it starts.

A load balancer that speaks the PROXY protocol (AWS NLB, Azure Private Link, HAProxy) sends a header
with the client's address before the client's own bytes. This listener accepts connections itself,
takes exactly the header's bytes from the socket (peeking, then receiving only what `parse` says is
header: see the invariant in router.proxy_protocol), and only then hands the socket to the event loop
with the data plane's protocol, told the client's address. What follows the header, HTTP or a TLS
ClientHello, is still in the kernel: the TLS handshake runs on the socket as on any other.

A connection is closed, and counted on the data plane by reason, when its peer is not one of
--trusted-proxies (`untrusted`), when what it sends first is not a header (`malformed`), or when the
header is not complete within --header-timeout (`timeout`). One closed before it sent anything (a load
balancer's TCP health check) is not counted. Connections waiting for their header count against
--max-connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl

from router import logs
from router.front.connection import ClientConnection, DataPlane
from router.proxy_protocol import V2_FIXED_BYTES, V2_MAX_LENGTH, ProxyHeader, ProxyProtocolError, parse

PEEK_BYTES = V2_FIXED_BYTES + V2_MAX_LENGTH  # the longest header accepted (a v1 header is shorter)
ACCEPTS_PER_WAKEUP = 128  # connections accepted before other callbacks get their turn
ACCEPT_PAUSE_S = 1.0  # out of file descriptors or memory: accepting pauses this long, as asyncio's listeners do
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class _Waiting:
    """An accepted connection whose header is not complete yet."""

    __slots__ = ("header", "peer", "sock", "timer")
    timer: asyncio.TimerHandle  # its --header-timeout

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.header = b""  # the header's bytes received so far


class ProxiedListener:
    """Accepts on `sock` for `plane`; with `tls`, the handshake follows the header. `close()` stops it."""

    def __init__(self, plane: DataPlane, sock: socket.socket, *, tls: ssl.SSLContext | None = None,
                 handshake_timeout: float | None = None) -> None:
        self.plane = plane
        self.loop = loop = plane.loop
        self.sock = sock
        self.tls = tls
        self.handshake_timeout = handshake_timeout if tls is not None else None  # (refused without TLS)
        self.factory = plane.tls_protocol if tls is not None else plane.protocol
        self.waiting: set[_Waiting] = set()
        self.handovers: set[asyncio.Task[None]] = set()  # referenced until done: the loop keeps weak ones only
        self.closed = False
        self._paused: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting, and close the connections still waiting for their header."""
        if self.closed:
            return
        self.closed = True
        if self._paused is not None:
            self._paused.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for waiting in list(self.waiting):
            self._drop(waiting)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # gone before it was accepted
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                logs.event("accept.paused", level=logging.ERROR, error=exc.strerror, seconds=ACCEPT_PAUSE_S)
                self.loop.remove_reader(self.sock.fileno())
                self._paused = self.loop.call_later(ACCEPT_PAUSE_S, self._resume)
                return
            self._accepted(sock, str(address[0]))

    def _resume(self) -> None:
        self._paused = None
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accepted(self, sock: socket.socket, peer: str) -> None:
        plane = self.plane
        limits = plane.limits
        if not limits.trusts(peer):
            sock.close()
            self._rejected("untrusted", peer, "the peer is not one of --trusted-proxies")
            return
        if plane.headers_pending >= limits.max_connections:  # the router is full of them: nothing to answer yet
            sock.close()
            return
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # (a peer gone already is found on the first read)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the loop's own listeners do
        waiting = _Waiting(sock, peer)
        waiting.timer = self.loop.call_later(limits.header_timeout, self._expire, waiting)
        self.waiting.add(waiting)
        plane.headers_pending += 1
        self.loop.add_reader(sock.fileno(), self._readable, waiting)

    def _readable(self, waiting: _Waiting) -> None:
        sock = waiting.sock
        try:
            peeked = sock.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            self._drop(waiting)
            return
        if not peeked:  # closed; with nothing sent, a TCP health check
            self._drop(waiting)
            if waiting.header:
                self._rejected("malformed", waiting.peer, "the connection closed inside its PROXY header")
            return
        try:
            header = parse(waiting.header + peeked)
            # "more needed" means all of it is header: taken from the socket. A header: only its own bytes.
            taken = sock.recv(len(peeked) if header is None else header.length - len(waiting.header))
        except ProxyProtocolError as error:
            self._drop(waiting)
            self._rejected("malformed", waiting.peer, str(error))
            return
        except OSError:
            self._drop(waiting)
            return
        if header is None:
            waiting.header += taken
        else:
            self._hand_over(waiting, header)

    def _expire(self, waiting: _Waiting) -> None:
        if waiting in self.waiting:
            self._drop(waiting)
            self._rejected("timeout", waiting.peer, "the PROXY header did not arrive within --header-timeout")

    def _release(self, waiting: _Waiting) -> None:
        """No longer waiting: the socket is someone else's to use or close."""
        self.waiting.discard(waiting)
        waiting.timer.cancel()
        self.loop.remove_reader(waiting.sock.fileno())
        self.plane.headers_pending -= 1

    def _drop(self, waiting: _Waiting) -> None:
        self._release(waiting)
        waiting.sock.close()

    def _rejected(self, reason: str, peer: str, problem: str) -> None:
        self.plane.proxy_rejections[reason] += 1
        logs.event("proxy_protocol.rejected", reason=reason, peer=peer, problem=problem)

    def _hand_over(self, waiting: _Waiting, header: ProxyHeader) -> None:
        self._release(waiting)
        # LOCAL (the load balancer's own health check) or UNKNOWN: the peer's address stands
        conn = self.factory(header.client[0].encode() if header.client is not None else b"")
        task = self.loop.create_task(self._connect(waiting.sock, conn))
        self.handovers.add(task)
        task.add_done_callback(self.handovers.discard)

    async def _connect(self, sock: socket.socket, conn: ClientConnection) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: conn, sock, ssl=self.tls,
                                                    ssl_handshake_timeout=self.handshake_timeout)
        except Exception:  # a failed TLS handshake, however it failed, ends this connection only (as on the
            # loop's own listeners); the transport closed the socket, and if it never took it, this does
            with contextlib.suppress(OSError):
                sock.close()
