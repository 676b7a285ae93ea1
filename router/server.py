"""The router's lifecycle: load, bind, serve, drain.

Phases: the first configuration is loaded (an invalid one stops the start); the
listeners are bound; named root tasks run (the config watcher, the pool sweeper,
the admin server) and the router reports ready (a cluster source: once its first
full sync is applied); on SIGTERM or SIGINT it reports not
ready, waits `drain_delay` so load balancers notice, stops accepting, lets requests
in flight finish within `drain_timeout`, closes the rest and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import uvicorn

from router import logs, metrics, tokens
from router.admin import build_admin_app
from router.autoscale import Autoscaler, ScaleTarget, TableDemand, Windows
from router.balancing.admission import Policy
from router.balancing.replicas import Replica
from router.balancing.table import ReplicaKey, RoutingTable
from router.discovery.file import FileSource
from router.discovery.source import ServiceReplicas, Source
from router.errors import BadRequest, ConfigError
from router.front.connection import DataPlane
from router.front.limits import ClientLimits
from router.front.proxied import ProxiedListener
from router.front.scoring import authorize
from router.front.telemetry import Telemetry
from router.model import Resources
from router.peers.split import DeploymentSlots
from router.proxy.upstream import ConnectionPool
from router.settings import RouterSettings
from router.tls import HANDSHAKE_TIMEOUT, CertificateWatch, SecretFeed, WatchedSecret

if TYPE_CHECKING:
    from router.peers.group import PeerGroup

DRAIN_GRACE_S = 1.0  # on SIGTERM, idle keep-alive connections stay open at least this long


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


class RouterServer:
    def __init__(self, settings: RouterSettings, source: Source) -> None:
        self.settings = settings
        self.source = source
        self.ready = False
        self.plane: DataPlane | None = None
        self.resources = Resources()
        self.autoscaler: Autoscaler | None = None
        self.ports: dict[str, int] = {}
        self.peers: PeerGroup | None = None  # with --peers or --peer-service: the slots shared with other routers
        self._retired: dict[ReplicaKey, Replica] = {}  # replicas gone from the table, requests maybe still on them
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def apply(self, resources: Resources, service_replicas: ServiceReplicas | None = None) -> None:
        """Swap in a routing table for new resources; requests in flight keep their replicas."""
        assert self.plane is not None
        try:
            table = RoutingTable.build(resources, self.plane.table, service_replicas, now=self.plane.loop.time(),
                                       policy=cast(Policy, self.settings.balancing_policy))
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        for replica in table.added:
            replica.pool = ConnectionPool(replica.host, replica.port,
                                          idle_timeout=self.settings.upstream_idle_timeout)
        if self.peers is not None:  # requests still on replicas that left hold their slots until they end
            self._retired.update((k, r) for k, r in self.plane.table.replicas.items() if k not in table.replicas)
        self.plane.table = table
        if self.peers is not None:
            self.peers.update_capacity({"/".join(key): DeploymentSlots(tuple(r.url for r in balancer.replicas),
                                                                        balancer.capacity)
                                        for key, balancer in table.balancers.items()})
        self.resources = resources
        if self.source.synced:  # a real state, not the empty one a cluster source starts from
            metrics.synced()
        for replica in table.removed:
            if replica.in_flight == 0:
                replica.pool.close()
        now = self.plane.loop.time()
        for balancer in table.balancers.values():  # new replicas or slots: start who was waiting
            for waiter, replica in balancer.dispatch(now):
                waiter.admitted(replica)

    def issue_token(self, endpoint: str, authorization: str, ttl: str) -> dict[str, Any]:
        """A token for an `aml_token` endpoint, to a caller that holds one of its keys (admin API).

        An unknown endpoint fails as a wrong key does: the answer does not tell which endpoints exist."""
        route = self.plane.table.endpoints.get(endpoint) if self.plane else None
        authorize(authorization.encode("latin-1"), route.keys if route is not None else ())
        assert route is not None  # no keys, no match
        if route.tokens is None:
            raise BadRequest(f"endpoint {endpoint!r} uses key auth: it takes keys, not tokens")
        if route.tokens.key is None:
            raise BadRequest(f"endpoint {endpoint!r} has no token signing key in its Secret")
        try:
            return tokens.issue(endpoint, route.tokens.key, tokens.parse_ttl(ttl, "ttl (query parameter)"))
        except ConfigError as error:
            raise BadRequest(error.problems[0]) from None

    def debug_deployments(self) -> dict[str, object]:
        """Per deployment and replica: slots in use, queue, latency, ejection (admin /debug/deployments)."""
        if self.plane is None:
            return {}
        now = self.plane.loop.time()
        state: dict[str, object] = {}
        for key, balancer in self.plane.table.balancers.items():
            state["/".join(key)] = one = balancer.state(now)
            scaling = self.autoscaler.state(key) if self.autoscaler is not None else None
            if scaling is not None:
                one["autoscale"] = scaling
        if self.peers is not None:  # "peers" cannot name a deployment: those are namespace/name
            state["peers"] = self.peers.debug()
        return state

    def _in_use(self) -> dict[tuple[str, str], int]:
        """Requests in flight per (deployment, replica URL): the slots a router cannot let go of yet."""
        assert self.plane is not None
        for key in [key for key, replica in self._retired.items() if replica.in_flight == 0]:
            del self._retired[key]
        in_use: dict[tuple[str, str], int] = {}
        for (namespace, name, url), replica in (*self._retired.items(), *self.plane.table.replicas.items()):
            place = (f"{namespace}/{name}", url)
            in_use[place] = in_use.get(place, 0) + replica.in_flight
        return in_use

    async def _open_peers(self) -> tuple[uvicorn.Server, socket.socket] | None:
        settings = self.settings
        if not settings.peers and not settings.peer_service:
            return None
        # imported here: one router alone loads none of it (and no HTTP client)
        from router.peers.channel import build_peer_app
        from router.peers.start import open_group

        # a cluster source's settings (checked by attribute: an isinstance would load the kubernetes client)
        source_settings = getattr(self.source, "settings", None)
        # the Leases live in the router's own namespace (the pod's), never the watched one
        self.peers = await open_group(settings, self._in_use, kubeconfig=getattr(source_settings, "kubeconfig", None),
                                      cluster=source_settings is not None)
        sock = bind(settings.host, settings.peer_port)
        self.ports["peer_port"] = sock.getsockname()[1]
        app = build_peer_app(self.peers, self.peers.client.key)  # the key read once (a file may change)
        return _AdminServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")), sock

    async def run(self) -> int:
        settings, loop = self.settings, asyncio.get_running_loop()
        config_path = self.source.path if isinstance(self.source, FileSource) else None
        # sslSecret: a Secret the cluster source watches, or (local mode) a document of the config file
        feed = self.source if settings.ssl_secret and isinstance(self.source, SecretFeed) else None
        tls: CertificateWatch | WatchedSecret | None = CertificateWatch.from_settings(
            settings, config_path=config_path) if settings.tls_configured and feed is None else None
        resources = await self.source.load()
        if feed is not None:  # its first list, before the TLS listener opens
            tls = await WatchedSecret.from_settings(settings, feed)
        telemetry = Telemetry.from_settings(settings)
        self.plane = DataPlane(RoutingTable(), ClientLimits.from_settings(settings), telemetry=telemetry)
        peer_port = await self._open_peers()
        self.apply(resources)
        plane = self.plane
        # in a cluster the source scales through the API; in local mode nothing is scaled (None)
        target: ScaleTarget | None = getattr(self.source, "scaling", None)
        self.autoscaler = Autoscaler(TableDemand(lambda: plane.table), lambda: self.resources.deployments, target,
                                     Windows(stable_s=settings.autoscale_stable_window,
                                             panic_s=settings.autoscale_panic_window))

        # with --proxy-protocol, a listener of the router's own reads each connection's header first
        listeners: list[asyncio.Server | ProxiedListener] = []
        if settings.allow_insecure_connections:
            sock = bind(settings.host, settings.port)
            self.ports["port"] = sock.getsockname()[1]
            listeners.append(ProxiedListener(plane, sock) if settings.proxy_protocol else
                             await loop.create_server(plane.protocol, sock=sock, backlog=2048))
        if tls is not None:
            sock = bind(settings.host, settings.tls_port)
            self.ports["tls_port"] = sock.getsockname()[1]
            # counted from accept: a handshake under way holds a connection too
            listeners.append(
                ProxiedListener(plane, sock, tls=tls.tls.listener, handshake_timeout=HANDSHAKE_TIMEOUT)
                if settings.proxy_protocol else
                await loop.create_server(plane.tls_protocol, sock=sock, ssl=tls.tls.listener, backlog=2048,
                                         ssl_handshake_timeout=HANDSHAKE_TIMEOUT))
        first, *others = settings.admin_hosts
        admin_socks = [bind(first, settings.admin_port)]
        self.ports["admin_port"] = admin_socks[0].getsockname()[1]  # port 0: the others take the same one
        admin_socks += [bind(host, self.ports["admin_port"]) for host in others]
        collector = metrics.RouterCollector(telemetry.stats, lambda: self.plane, self.source)
        admin_app = build_admin_app(lambda: self.ready and self.source.synced,
                                    self.debug_deployments if settings.debug_endpoints else None,
                                    self.issue_token, metrics=lambda: metrics.exposition(collector))
        admin = _AdminServer(uvicorn.Config(admin_app, log_level="warning", access_log=False, lifespan="off"))

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        tasks = [
            loop.create_task(admin.serve(sockets=admin_socks), name="admin-server"),
            loop.create_task(self.source.watch(self.apply), name="config-watch"),
            loop.create_task(self._sweep_pools(), name="pool-sweeper"),
            loop.create_task(telemetry.run(), name="telemetry-flush"),
            loop.create_task(self.autoscaler.run(), name="autoscaler"),
        ]
        if tls is not None:
            tasks.append(loop.create_task(tls.run(), name="tls-watch"))
        if peer_port is not None and self.peers is not None:
            peer_server, peer_sock = peer_port
            tasks.append(loop.create_task(peer_server.serve(sockets=[peer_sock]), name="peer-server"))
            tasks.append(loop.create_task(self.peers.run(), name="peers"))
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's scans, and collect the young generation less often (fewer pauses).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        self.ready = True
        logs.event("listening", host=settings.host, admin_host=settings.admin_host, **self.ports)
        self.started.set()
        await self._stop.wait()
        if self.peers is not None:  # the others take this router's share as its requests end
            self.peers.begin_leaving()
        await self._drain(listeners)
        if self.peers is not None:
            await self.peers.leave(timeout=self.settings.peer_timeout)
        admin.should_exit = True
        if peer_port is not None:  # it too ends its connections itself
            peer_port[0].should_exit = True
        for task in tasks[1:]:
            if task.get_name() != "peer-server":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.peers is not None:
            await self.peers.close()
        telemetry.close()
        logs.event("stopped")
        return 0

    async def _drain(self, listeners: list[asyncio.Server | ProxiedListener]) -> None:
        assert self.plane is not None
        loop = asyncio.get_running_loop()
        self.ready = False
        # From now on every answer says `connection: close`: a keep-alive client comes back
        # through the load balancer, which is moving it to another replica.
        self.plane.draining = True
        logs.event("draining", in_flight=self.plane.in_flight(), delay=self.settings.drain_delay)
        await asyncio.sleep(self.settings.drain_delay)
        for listener in listeners:
            listener.close()
        # An idle keep-alive connection was never told to close: a request may be on its way. Closed
        # only after a grace in which such a request is still answered (with `connection: close`).
        await asyncio.sleep(max(0.0, DRAIN_GRACE_S - self.settings.drain_delay))
        self.plane.close_idle()
        # A connection closes after its last answer (draining): once none is left, all is sent.
        deadline = loop.time() + self.settings.drain_timeout
        while self.plane.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.plane.connections):
            conn.abort()
        for replica in self.plane.table.replicas.values():
            replica.pool.close()

    async def _sweep_pools(self) -> None:
        assert self.plane is not None
        interval, pools_swept = self.plane.sweep_interval, 0.0
        while True:
            await asyncio.sleep(interval)
            now = self.plane.loop.time()
            if now - pools_swept >= 1.0:
                pools_swept = now
                for replica in self.plane.table.replicas.values():
                    replica.pool.sweep()
            self.plane.sweep()  # client connections over their time limits
