"""The router's lifecycle: load, bind, serve, drain.

Phases: the first configuration is loaded (an invalid one stops the start); the
listeners are bound; named root tasks run (the config watcher, the pool sweeper,
the admin server) and the router reports ready; on SIGTERM or SIGINT it reports not
ready, waits `drain_delay` so load balancers notice, stops accepting, lets requests
in flight finish within `drain_timeout`, closes the rest and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import ssl
from collections.abc import Iterator
from typing import cast

import uvicorn

from router import logs
from router.admin import build_admin_app
from router.balancing.admission import Policy
from router.balancing.table import RoutingTable
from router.discovery.file import FileSource
from router.errors import ConfigError
from router.front.connection import DataPlane
from router.model import Resources
from router.proxy.upstream import ConnectionPool
from router.settings import RouterSettings


class _AdminServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the router owns the signals
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError([f"cannot listen on {host}:{port}: {exc.strerror}"]) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def server_ssl_context(settings: RouterSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(str(settings.ssl_cert_pem_file), str(settings.ssl_key_pem_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"sslCertPemFile/sslKeyPemFile: cannot load the certificate: {exc}"]) from None
    return context


class RouterServer:
    def __init__(self, settings: RouterSettings, source: FileSource) -> None:
        self.settings = settings
        self.source = source
        self.ready = False
        self.plane: DataPlane | None = None
        self.ports: dict[str, int] = {}
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def apply(self, resources: Resources) -> None:
        """Swap in a routing table for new resources; requests in flight keep their replicas."""
        assert self.plane is not None
        try:
            table = RoutingTable.build(resources, self.plane.table, now=self.plane.loop.time(),
                                       policy=cast(Policy, self.settings.balancing_policy))
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        for replica in table.added:
            replica.pool = ConnectionPool(replica.host, replica.port,
                                          idle_timeout=self.settings.upstream_idle_timeout)
        self.plane.table = table
        for replica in table.removed:
            if replica.in_flight == 0:
                replica.pool.close()

    def debug_deployments(self) -> dict[str, object]:
        """Per deployment and replica: slots in use, queue, latency, ejection (admin /debug/deployments)."""
        if self.plane is None:
            return {}
        now = self.plane.loop.time()
        return {"/".join(key): balancer.state(now) for key, balancer in self.plane.table.balancers.items()}

    async def run(self) -> int:
        settings, loop = self.settings, asyncio.get_running_loop()
        if settings.ssl_secret:
            raise ConfigError(["sslSecret: not served by this router version; "
                               "use sslCertPemFile and sslKeyPemFile"])
        tls = server_ssl_context(settings) if settings.tls_configured else None
        resources = self.source.load()
        self.plane = DataPlane(RoutingTable(), max_body_bytes=settings.max_request_body_bytes)
        self.apply(resources)

        listeners: list[asyncio.Server] = []
        if settings.allow_insecure_connections:
            sock = bind(settings.host, settings.port)
            self.ports["port"] = sock.getsockname()[1]
            listeners.append(await loop.create_server(self.plane.protocol, sock=sock, backlog=2048))
        if tls is not None:
            sock = bind(settings.host, settings.tls_port)
            self.ports["tls_port"] = sock.getsockname()[1]
            tls_plane = self.plane

            def tls_protocol() -> asyncio.Protocol:
                conn = tls_plane.protocol()
                conn.scheme = b"https"
                return conn

            listeners.append(await loop.create_server(tls_protocol, sock=sock, ssl=tls, backlog=2048))
        admin_sock = bind(settings.host, settings.admin_port)
        self.ports["admin_port"] = admin_sock.getsockname()[1]
        admin_app = build_admin_app(lambda: self.ready, self.debug_deployments)
        admin = _AdminServer(uvicorn.Config(admin_app, log_level="warning", access_log=False, lifespan="off"))

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        tasks = [
            loop.create_task(admin.serve(sockets=[admin_sock]), name="admin-server"),
            loop.create_task(self.source.watch(self.apply), name="config-watch"),
            loop.create_task(self._sweep_pools(), name="pool-sweeper"),
        ]
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's scans, and collect the young generation less often (fewer pauses).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        self.ready = True
        logs.event("listening", host=settings.host, **self.ports)
        self.started.set()
        await self._stop.wait()
        await self._drain(listeners)
        admin.should_exit = True
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        logs.event("stopped")
        return 0

    async def _drain(self, listeners: list[asyncio.Server]) -> None:
        assert self.plane is not None
        self.ready = False
        logs.event("draining", in_flight=self.plane.in_flight(), delay=self.settings.drain_delay)
        await asyncio.sleep(self.settings.drain_delay)
        for listener in listeners:
            listener.close()
        self.plane.draining = True
        self.plane.close_idle()
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout
        while self.plane.in_flight() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.plane.connections):
            conn.abort()
        for replica in self.plane.table.replicas.values():
            replica.pool.close()

    async def _sweep_pools(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            assert self.plane is not None
            for replica in self.plane.table.replicas.values():
                replica.pool.sweep()
