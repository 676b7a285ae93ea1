"""The status the router writes on its custom resources, and the writer that sends it.

`render` turns a `Report` into the status fields the router owns: on an OnlineEndpoint
`scoringUri`, `readyReplicas`, `deployments` (ready replicas per deployment); on an
OnlineDeployment `readyReplicas`; on both `observedGeneration` and two conditions,
`Accepted` (the spec is valid, or why not) and `Ready` (routed, every reference resolved,
replicas to take its traffic). A condition's `lastTransitionTime` changes only when its
status does. `status.scale` and the `Scaling` condition are the autoscaler's (`scaling`):
they are left as they are while the deployment is autoscaled, and removed once it is not.

The writer patches (JSON merge patch on the status subresource) only what differs from
the status the watch last showed, and only while this replica holds the Lease. Its own
write comes back through the watch; until then the same version is not patched again.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from router import logs, metrics
from router.discovery.kubernetes.api import ONLINE_DEPLOYMENTS, ONLINE_ENDPOINTS, KubeApi, Obj
from router.discovery.kubernetes.assembly import Report, ResourceKey
from router.discovery.kubernetes.errors import NotFound, describe
from router.discovery.kubernetes.reflector import Backoff
from router.discovery.kubernetes.settings import WatchSettings

KINDS = {ONLINE_ENDPOINTS.kind: ONLINE_ENDPOINTS, ONLINE_DEPLOYMENTS.kind: ONLINE_DEPLOYMENTS}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(key: ResourceKey, report: Report, obj: Obj, *, scoring_base_url: str, at: str) -> Obj:
    """The status fields the router owns, for the object `obj` as last seen.

    `observedGeneration` is the generation the report judged, which `obj` may already have passed:
    a spec written since is not claimed as seen (its own report follows).
    """
    generation = report.generation
    previous = (obj.get("status") or {}).get("conditions") or []
    if report.problems:
        accepted = _condition("Accepted", False, "Invalid", "; ".join(report.problems) + (
            " (the last accepted spec keeps serving)" if report.serving else ""), previous, generation, at)
    else:
        accepted = _condition("Accepted", True, "Valid", "", previous, generation, at)
    if report.ready:
        ready = _condition("Ready", True, "Ready", "", previous, generation, at)
    elif not report.serving and report.problems and not report.waiting:
        ready = _condition("Ready", False, "Rejected", "the spec is invalid", previous, generation, at)
    else:
        ready = _condition("Ready", False, "Waiting", "; ".join(report.waiting), previous, generation, at)
    # conditions of other writers (the autoscaler's Scaling) are kept as the object shows them, the
    # autoscaler's only while the deployment is autoscaled: once it is not, nothing would ever update them
    owned = ("Accepted", "Ready") if report.autoscaled or key[0] != ONLINE_DEPLOYMENTS.kind else (
        "Accepted", "Ready", "Scaling")
    others = [c for c in previous if isinstance(c, dict) and c.get("type") not in owned]
    status: Obj = {"readyReplicas": report.ready_replicas, "observedGeneration": generation,
                   "conditions": [accepted, ready, *others]}
    if key[0] == ONLINE_DEPLOYMENTS.kind and not report.autoscaled:
        status["scale"] = None  # removed by the merge patch, if it is there
    if key[0] == ONLINE_ENDPOINTS.kind:
        status["scoringUri"] = f"{scoring_base_url}/api/v1/endpoint/{key[2]}/score"
        status["deployments"] = dict(report.deployments)
    return status


def _condition(kind: str, ok: bool, reason: str, message: str, previous: list[Any], generation: object,
               at: str) -> Obj:
    status = "True" if ok else "False"
    before = next((c for c in previous if isinstance(c, dict) and c.get("type") == kind), None)
    since = at
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        since = before["lastTransitionTime"]
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since}


def status_patch(current: Obj | None, wanted: Obj) -> Obj | None:
    """The merge patch that turns `current` into `wanted` in the fields the router owns, or None."""
    current = current or {}
    patch: Obj = {}
    for name, value in wanted.items():
        if current.get(name) == value:
            continue
        if isinstance(value, dict) and isinstance(current.get(name), dict):  # merge patch merges maps
            value = {**{k: None for k in current[name] if k not in value}, **value}
        patch[name] = value
    return patch or None


class StatusWriter:
    """Writes each report's status while this replica leads; each object fails and retries alone.

    A refused write (422 from a tightened CRD rule, 403 in one namespace, an admission webhook)
    or an unanswered one holds back that object only: it is retried after its own doubling
    delay, counted in `failures` and the status-write-failures metric, while every other
    object's status is written as usual.
    """

    def __init__(self, api: KubeApi, lookup: Callable[[ResourceKey], Obj | None], is_leader: Callable[[], bool],
                 *, scoring_base_url: str, settings: WatchSettings) -> None:
        self.api = api
        self.lookup = lookup  # the object as the watch last showed it
        self.is_leader = is_leader
        self.scoring_base_url = scoring_base_url
        self.settings = settings
        self.failures = 0
        self._reports: Mapping[ResourceKey, Report] = {}
        self._sent: dict[ResourceKey, str] = {}  # the version each last patch was based on
        self._backoff: dict[ResourceKey, Backoff] = {}  # objects whose last write failed
        self._retry_at: dict[ResourceKey, float] = {}
        self._wake = asyncio.Event()

    def offer(self, reports: Mapping[ResourceKey, Report]) -> None:
        self._reports = reports
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.is_leader():
                await self._write_all()

    async def _write_all(self) -> None:
        at, loop = now(), asyncio.get_running_loop()
        for key, report in list(self._reports.items()):
            if not self.is_leader():
                return  # lost the lease (or its renew deadline passed) during the pass: another may lead
            if self._retry_at.get(key, 0.0) > loop.time():
                continue  # failed lately: its own retry wakes the writer
            obj = self.lookup(key)
            if obj is None:
                continue
            version = str(obj["metadata"].get("resourceVersion"))
            patch = status_patch(obj.get("status"), render(key, report, obj, scoring_base_url=self.scoring_base_url,
                                                           at=at))
            if patch is None or self._sent.get(key) == version:
                continue  # up to date, or patched already and the watch has not shown it yet
            try:
                await self.api.patch_status(KINDS[key[0]], key[1], key[2], patch)
            except NotFound:
                continue  # deleted meanwhile
            except Exception as exc:  # KubeError, or an object it could not read: this object waits alone
                self._failed(key, exc)
                continue
            self._sent[key] = version
            self._backoff.pop(key, None)
            self._retry_at.pop(key, None)
        for key in self._sent.keys() - self._reports.keys():
            del self._sent[key]
        for key in self._backoff.keys() - self._reports.keys():
            del self._backoff[key], self._retry_at[key]

    def _failed(self, key: ResourceKey, exc: Exception) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._backoff.setdefault(key, Backoff(self.settings.backoff_s, self.settings.backoff_max_s))
        delay = backoff.next_delay()
        self._retry_at[key] = loop.time() + delay
        self.failures += 1
        metrics.status_write_failed(key[0])
        logs.event("kubernetes.status.failed", level=logging.WARNING, resource=f"{key[0]} {key[1]}/{key[2]}",
                   error=describe(exc), retry_in_s=round(delay, 2))
        loop.call_later(delay, self._wake.set)
