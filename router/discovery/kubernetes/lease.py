"""Leader election on a coordination.k8s.io Lease: with several router replicas, one writes status.

As client-go does it: the holder renews `spec.renewTime` every `retry_s`; the others read the
Lease as often and take it once it is free (no holder) or its record has not changed for
`duration_s` of their own clock (so clocks that disagree do not matter). Every take or renewal
is a PUT carrying the resourceVersion read, so of two replicas racing for it one gets 409 and
stays a follower. A holder leads only until `renew_deadline_s` after the start of its last
successful renewal (each attempt is cut off there too): a follower's clock starts when it sees
that renewal, so it takes over `duration_s` later at the earliest, when the old holder has
stopped writing for `duration_s - renew_deadline_s` already. One that stops releases the Lease,
so a follower takes it at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from collections.abc import Callable

from router import logs
from router.discovery.kubernetes.api import LEASES, KubeApi, Obj
from router.discovery.kubernetes.errors import Conflict, KubeError, NotFound, describe
from router.discovery.kubernetes.settings import LeaseSettings


def micro_time() -> str:
    """Now, as a Lease's MicroTime fields (acquireTime, renewTime) take it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: KubeApi, namespace: str, identity: str, settings: LeaseSettings,
                 on_change: Callable[[bool], None]) -> None:
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.settings = settings
        self.on_change = on_change
        self._leading = False
        self._observed: tuple[object, object] | None = None  # (holder, renewTime) as last read
        self._observed_at = 0.0
        self._renewed_at = 0.0  # when the last successful renewal started
        self._deadline: asyncio.TimerHandle | None = None

    @property
    def is_leader(self) -> bool:
        """Holding the Lease, and within the renew deadline of the last successful renewal."""
        return self._leading and self._within_deadline()

    def _within_deadline(self) -> bool:
        return asyncio.get_running_loop().time() - self._renewed_at < self.settings.renew_deadline_s

    def __repr__(self) -> str:
        role = "leader" if self._leading else "follower"
        return f"<LeaderElector {self.namespace}/{self.settings.name} {self.identity} {role}>"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                # a holder's attempt ends at its renew deadline: an answer after it would come too late
                limit = self._renewed_at + self.settings.renew_deadline_s - started if self._leading else None
                try:
                    async with asyncio.timeout(limit):
                        leading = await self._try(started)
                    self._set(leading)
                except Exception as exc:  # KubeError, the deadline, or a Lease it could not read
                    logs.event("kubernetes.lease.failed", level=logging.WARNING, lease=self.settings.name,
                               error=describe(exc) if not isinstance(exc, TimeoutError) else "renew deadline passed")
                    if self._leading and not self._within_deadline():
                        self._set(False)
                await asyncio.sleep(self.settings.retry_s * random.uniform(0.8, 1.0))
        finally:
            if self._deadline is not None:
                self._deadline.cancel()

    async def _try(self, started: float) -> bool:
        """Take or renew the Lease if it is ours to have; True while this replica holds it."""
        loop = asyncio.get_running_loop()
        name = self.settings.name
        try:
            lease = await self.api.get(LEASES, self.namespace, name)
        except NotFound:
            try:
                await self.api.create(LEASES, self.namespace, self._lease({"metadata": {}, "spec": {}}))
            except Conflict:
                return False  # another replica created it first
            self._renewed_at = started
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, loop.time()
        duration = float(spec.get("leaseDurationSeconds") or self.settings.duration_s)
        if holder and holder != self.identity and loop.time() - self._observed_at < duration:
            return False  # held, and renewed within the duration as far as this clock can tell
        try:
            await self.api.replace(LEASES, self.namespace, name, self._lease(lease))
        except Conflict:
            return False
        self._renewed_at = started
        return True

    def _lease(self, lease: Obj) -> Obj:
        spec = dict(lease.get("spec") or {})
        now = micro_time()
        if not lease["metadata"]:  # a new Lease
            spec.update(acquireTime=now, leaseTransitions=0)
        elif spec.get("holderIdentity") != self.identity:
            spec.update(acquireTime=now, leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1)
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=int(self.settings.duration_s), renewTime=now)
        meta = {**lease.get("metadata", {}), "name": self.settings.name, "namespace": self.namespace}
        return {"apiVersion": LEASES.api_version, "kind": LEASES.kind, "metadata": meta, "spec": spec}

    def _set(self, leader: bool) -> None:
        if leader:  # past the renew deadline, tell the writer at once, not at the next attempt
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = asyncio.get_running_loop().call_at(
                self._renewed_at + self.settings.renew_deadline_s, self._expire)
        if leader != self._leading:
            self._leading = leader
            logs.event("kubernetes.lease.leader" if leader else "kubernetes.lease.follower",
                       lease=f"{self.namespace}/{self.settings.name}", identity=self.identity)
            self.on_change(leader)

    def _expire(self) -> None:
        if self._leading and not self._within_deadline():
            self._set(False)

    async def release(self) -> None:
        """Give the Lease up (when stopping), so that a follower takes it without waiting it out."""
        if not self.is_leader:
            return
        self._leading = False
        try:
            lease = await self.api.get(LEASES, self.namespace, self.settings.name)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": None, "renewTime": micro_time(),
                        "leaseDurationSeconds": 1}
                await self.api.replace(LEASES, self.namespace, self.settings.name, {**lease, "spec": spec})
        except KubeError as exc:
            logs.event("kubernetes.lease.release_failed", level=logging.WARNING, error=str(exc))
