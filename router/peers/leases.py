"""Membership by Kubernetes Leases (`--peer-service`): one Lease per router, in its namespace.

Each router renews its own Lease every 2 s with `--peer-timeout` as its duration. A peer is alive
while its Lease record keeps changing within that duration as this router's clock observes it
(as client-go does: clocks need not agree), and a member of the split once it is also a ready
endpoint of the peer Service (port named `peer`). This router is valid until the duration, less a
margin, after it *sent* its last successful renewal: it stops using its slots before any peer may
see its Lease expire. A router that starts joins the split only after two more renewals, by when
every older router has listed its Lease (so any two routers that want a slot know of each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from router import logs
from router.discovery.kubernetes.api import ENDPOINT_SLICES, LEASES, KubeApi, Obj
from router.discovery.kubernetes.assembly import serving
from router.discovery.kubernetes.errors import KubeError, NotFound, describe
from router.discovery.kubernetes.lease import micro_time
from router.peers.membership import Membership, View, join_host_port

LEASE_RENEW_S = 2.0
LEASE_PREFIX = "inference-router-peer-"
GROUP_LABEL = "inference-router.dev/peer-service"


@dataclass
class LeasePeers(Membership):
    api: KubeApi | None = None
    namespace: str = "default"
    service: str = ""
    lease_name: str = ""
    margin: float = 1.0  # stop using slots this long before a peer may see this router's Lease expire
    renew_s: float = LEASE_RENEW_S
    valid_until: float = 0.0
    warm_at: float = math.inf  # a member only once every older router has surely seen its Lease
    leases: dict[str, tuple[str, object, float, float]] = field(default_factory=dict)  # see observe()
    ready: frozenset[str] = frozenset()  # the peer Service's ready endpoints, as identities
    stopped: bool = False
    _renewing: asyncio.Lock = field(default_factory=asyncio.Lock)
    dead_after: float = 10.0  # Lease durations without a renewal before a dead router's Lease is deleted

    @classmethod
    def create(cls, api: KubeApi, namespace: str, service: str, me: str, timeout: float) -> LeasePeers:
        pod = os.environ.get("POD_NAME") or socket.gethostname()
        return cls(me=me, timeout=timeout, api=api, namespace=namespace, service=service,
                   lease_name=LEASE_PREFIX + pod, margin=min(1.0, timeout / 4))

    def _renewed(self, now: float) -> set[str]:
        """Holders of the Leases renewed within their duration, as this router's clock observes it."""
        return {holder for holder, _, seen, duration in self.leases.values() if now - seen < duration}

    def contacts(self, now: float) -> tuple[str, ...]:
        return tuple(sorted((self._renewed(now) | self.ready) - {self.me}))

    def valid_through(self) -> float:
        return self.valid_until

    def view(self, now: float) -> View:
        valid = now < self.valid_until
        # a newcomer's claim counts before its Lease is listed here
        alive = self._renewed(now) | self.recently_heard(now)
        alive.discard(self.me)
        leaving = self.said_leaving()
        members = {p for p in alive if p in self.ready and p not in leaving}
        # as the others see it: a member once ready (the Service lists it), as long as its Lease is valid
        if valid and now >= self.warm_at and not self.leaving and self.me in self.ready:
            members.add(self.me)
        return View(self.me, valid, tuple(sorted(members)), frozenset(alive), leaving & frozenset(alive))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self._renewing:  # never under way while stop() deletes the Lease, never after
                    if self.stopped:
                        return
                    await self.renew(loop.time())
                await self.refresh(loop.time())
            except Exception as exc:  # KubeError, or an object it cannot read: the Lease runs out on its own
                logs.event("peers.lease_failed", level=logging.WARNING, lease=self.lease_name, error=describe(exc))
            await asyncio.sleep(self.renew_s)

    async def renew(self, sent: float) -> None:
        assert self.api is not None
        try:
            lease = await self.api.get(LEASES, self.namespace, self.lease_name)
        except NotFound:
            lease = None
        body = self._lease(lease)
        if lease is None:
            await self.api.create(LEASES, self.namespace, body)
        else:
            await self.api.replace(LEASES, self.namespace, self.lease_name, body)
        if self.warm_at == math.inf:  # the others list every renew_s: after two, each has seen this Lease
            self.warm_at = sent + 2 * self.renew_s + self.margin
        self.valid_until = sent + self.timeout - self.margin

    def _lease(self, lease: Obj | None) -> Obj:
        now = micro_time()
        spec = dict((lease or {}).get("spec") or {})
        if lease is None or spec.get("holderIdentity") != self.me:
            spec.update(acquireTime=now)
        spec.update(holderIdentity=self.me, leaseDurationSeconds=max(1, math.ceil(self.timeout)), renewTime=now)
        meta = {**((lease or {}).get("metadata") or {}), "name": self.lease_name, "namespace": self.namespace}
        meta["labels"] = {**(meta.get("labels") or {}), GROUP_LABEL: self.service}
        return {"apiVersion": LEASES.api_version, "kind": LEASES.kind, "metadata": meta, "spec": spec}

    async def refresh(self, now: float) -> None:
        """List the group's Leases and the peer Service's endpoints; delete Leases long dead."""
        assert self.api is not None
        items, _ = await self.api.list(LEASES, self.namespace, labels=f"{GROUP_LABEL}={self.service}")
        self.leases = self.observe(items, now)
        await self.collect_dead(now)
        slices, _ = await self.api.list(ENDPOINT_SLICES, self.namespace,
                                        labels=f"kubernetes.io/service-name={self.service}")
        self.ready = frozenset(ready_endpoints(slices))

    async def collect_dead(self, now: float) -> None:
        """Pods come and go with new names: a Lease unrenewed for `dead_after` times its duration is deleted
        (by whichever router sees it so first). Its holder stopped using slots long before."""
        assert self.api is not None
        for name, (holder, _, seen, duration) in list(self.leases.items()):
            if name != self.lease_name and now - seen > self.dead_after * duration:
                with contextlib.suppress(NotFound):
                    await self.api.delete(LEASES, self.namespace, name)
                del self.leases[name]
                logs.event("peers.lease_collected", lease=name, holder=holder)

    def observe(self, items: Iterable[Obj], now: float) -> dict[str, tuple[str, object, float, float]]:
        """By Lease name: its holder, its record, when this router first saw that record (a renewal changes
        it) and its duration. By name, not holder: a new pod may reuse a dead one's address."""
        leases: dict[str, tuple[str, object, float, float]] = {}
        for item in items:
            spec, name = item.get("spec") or {}, (item.get("metadata") or {}).get("name")
            holder = spec.get("holderIdentity")
            if not isinstance(holder, str) or not holder or not isinstance(name, str):
                continue
            record = (holder, spec.get("renewTime"))
            previous = self.leases.get(name)
            seen = previous[2] if previous is not None and previous[1] == record else now
            leases[name] = (holder, record, seen, float(spec.get("leaseDurationSeconds") or self.timeout))
        return leases

    async def stop(self) -> None:
        """Delete this router's Lease: the others forget it at once instead of waiting it out."""
        if self.api is None:
            return
        async with self._renewing:
            self.stopped, self.valid_until = True, 0.0
            try:
                await self.api.delete(LEASES, self.namespace, self.lease_name)
            except NotFound:
                pass
            except KubeError as exc:
                logs.event("peers.lease_release_failed", level=logging.WARNING, error=str(exc))

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()


def ready_endpoints(slices: Iterable[Obj]) -> set[str]:
    """`address:port` of every ready, not terminating endpoint, on the slice port named `peer`."""
    found = set()
    for item in slices:
        ports = [p.get("port") for p in item.get("ports") or [] if p.get("name") == "peer"]
        if not ports or not isinstance(ports[0], int):
            continue
        for endpoint in filter(serving, item.get("endpoints") or []):
            found |= {join_host_port(address, ports[0]) for address in endpoint.get("addresses") or []}
    return found

