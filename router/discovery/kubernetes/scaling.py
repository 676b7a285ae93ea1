"""The cluster side of the autoscaler: who scales, what it may scale, and how the size is written.

One router scales: the holder of the Lease `inference-router-autoscaler` (`--autoscale-lease`) in
the router's namespace, elected as the status writer is (`lease`). For a deployment it reads the
`/scale` subresource of its `scaleTargetRef` (a Deployment or StatefulSet in its namespace),
lets the autoscaler decide from the size it finds, and writes the new size with the
resourceVersion it read: a write based on a stale read (another leader's, or a user's edit in
between) is refused with 409 and made again from a fresh read, so a stale leader cannot
overwrite a newer decision.

An HPA that targets the same object owns its size: the router leaves it alone, says so in the
OnlineDeployment's status (condition `Scaling=False`, reason `HorizontalPodAutoscalerPresent`)
and names the HPA in a log line. Each change of size is a Kubernetes Event on the
OnlineDeployment, naming the old and new size and the utilization behind it; `status.scale`
holds the last decision. The status fields are patched with the object's resourceVersion as a
precondition, so the conditions the status writer owns (Accepted, Ready) are never overwritten
from an older copy.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable

from router import logs, metrics
from router.autoscale.decision import Decide, Outcome
from router.discovery.kubernetes.api import (
    DEPLOYMENTS,
    EVENTS,
    ONLINE_DEPLOYMENTS,
    STATEFUL_SETS,
    KubeApi,
    Obj,
)
from router.discovery.kubernetes.assembly import ResourceKey
from router.discovery.kubernetes.errors import Conflict, KubeError, NotFound, describe
from router.discovery.kubernetes.lease import LeaderElector
from router.discovery.kubernetes.settings import LeaseSettings
from router.discovery.kubernetes.status import _condition, now, status_patch
from router.model import OnlineDeployment, ScaleTargetRef

WRITE_ATTEMPTS = 3  # a write refused as stale is made again from a fresh read, this many times in all
UTILIZATION_ONLY_EVERY_S = 15.0  # a status whose only change is the utilization is written at most this often
HPA_PRESENT = "HorizontalPodAutoscalerPresent"


class KubeScaling:
    """The `ScaleTarget` of a cluster: started (`start`) once some deployment is autoscaled."""

    def __init__(self, api: KubeApi, namespace: str, identity: str, lease: LeaseSettings,
                 lookup: Callable[[ResourceKey], Obj | None]) -> None:
        self.api = api
        self.identity = identity
        self.lookup = lookup  # the OnlineDeployment as the watch last showed it
        self.elector = LeaderElector(api, namespace, identity, lease, on_change=self._leading)
        self.hpas: Callable[[], Iterable[Obj]] = lambda: ()  # the HPAs watched (set by the source)
        self.hpas_listed: Callable[[], bool] = lambda: True  # False until the HPA watch has listed once
        self.started = False
        self._since: float | None = None
        self._hpa_logged: dict[ResourceKey, str] = {}  # deployment → the HPA last named in a log line
        self._written: dict[ResourceKey, tuple[Obj, float]] = {}  # status last written, and when

    def __repr__(self) -> str:
        return f"<KubeScaling {self.elector!r} started={self.started}>"

    def _leading(self, leader: bool) -> None:
        self._since = asyncio.get_running_loop().time() if leader else None

    def leading_since(self) -> float | None:
        return self._since if self.elector.is_leader else None

    def hpa_for(self, namespace: str, ref: ScaleTargetRef) -> str | None:
        """The name of an HPA in `namespace` that scales the object `ref` names, if any."""
        for hpa in self.hpas():
            meta, target = hpa.get("metadata") or {}, (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if meta.get("namespace") == namespace and target.get("kind") == ref.kind and target.get("name") == ref.name:
                return str(meta.get("name"))
        return None

    async def scale(self, deployment: OnlineDeployment, decide: Decide) -> Outcome:
        key: ResourceKey = (ONLINE_DEPLOYMENTS.kind, deployment.namespace, deployment.name)
        assert deployment.scale_settings is not None
        ref = deployment.scale_settings.scale_target_ref
        if ref is None:
            reason = "scaleSettings.scaleTargetRef is not set: there is nothing to scale"
            await self._report(key, None, ("NoScaleTarget", reason))
            return Outcome(0, 0, blocked=reason)
        if not self.hpas_listed():  # an HPA not listed yet may own the object: wait for the list
            return Outcome(0, 0, blocked="waiting for the list of HorizontalPodAutoscalers")
        hpa = self.hpa_for(deployment.namespace, ref)
        if hpa is not None:
            reason = f"HorizontalPodAutoscaler {hpa} scales {ref.kind} {ref.name}: the router leaves it alone"
            if self._hpa_logged.get(key) != hpa:
                logs.event("autoscale.hpa_present", level=logging.WARNING,
                           deployment=f"{deployment.namespace}/{deployment.name}",
                           target=f"{ref.kind}/{ref.name}", hpa=f"{deployment.namespace}/{hpa}")
                self._hpa_logged[key] = hpa
            await self._report(key, None, (HPA_PRESENT, reason))
            return Outcome(0, 0, blocked=reason)
        self._hpa_logged.pop(key, None)
        kind = DEPLOYMENTS if ref.kind == "Deployment" else STATEFUL_SETS
        where = f"{ref.kind} {deployment.namespace}/{ref.name}"
        current = 0
        for _ in range(WRITE_ATTEMPTS):
            try:
                scale = await self.api.get(kind, deployment.namespace, ref.name, subresource="scale")
            except NotFound:
                reason = f"{where} (scaleTargetRef) does not exist"
                await self._report(key, None, ("ScaleTargetNotFound", reason))
                return Outcome(0, 0, blocked=reason)
            except KubeError as exc:
                return self._failed(where, exc, current)
            current = int((scale.get("spec") or {}).get("replicas") or 0)
            running = int((scale.get("status") or {}).get("replicas") or 0)
            decision = decide(current)
            if decision.desired == current:
                await self._report(key, self._scale_status(key, decision.desired, running, decision.utilization), None)
                return Outcome(current, current)
            read_version = (scale.get("metadata") or {}).get("resourceVersion")
            body: Obj = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": scale.get("metadata") or {},
                         "spec": {"replicas": decision.desired}}
            try:
                await self.api.replace(kind, deployment.namespace, ref.name, body, subresource="scale")
            except Conflict:  # changed since the read: decide again from what it is now
                logs.event("autoscale.conflict", target=where, read_version=read_version)
                continue
            except KubeError as exc:
                return self._failed(where, exc, current)
            at = now()
            logs.event("autoscale.scaled", deployment=f"{deployment.namespace}/{deployment.name}", target=where,
                       old=current, new=decision.desired, utilization=round(decision.utilization),
                       reason=decision.reason)
            await self._event(key, where, current, decision.desired, decision.utilization, decision.reason)
            status = self._scale_status(key, decision.desired, running, decision.utilization, scaled_at=at)
            await self._report(key, status, None)
            return Outcome(current, decision.desired)
        return Outcome(current, current, blocked=f"{where}: changed under every one of {WRITE_ATTEMPTS} writes")

    def _failed(self, where: str, exc: KubeError, current: int) -> Outcome:
        logs.event("autoscale.write_failed", level=logging.WARNING, target=where, error=describe(exc))
        return Outcome(current, current, blocked=f"{where}: {describe(exc)}")

    def _scale_status(self, key: ResourceKey, desired: int, running: int, utilization: float, *,
                      scaled_at: str | None = None) -> Obj:
        obj = self.lookup(key) or {}
        before = (obj.get("status") or {}).get("scale") or {}
        status: Obj = {"desiredReplicas": desired, "currentReplicas": running, "utilization": round(utilization)}
        last = scaled_at or before.get("lastScaleTime")
        if last:
            status["lastScaleTime"] = last
        return status

    async def _report(self, key: ResourceKey, scale: Obj | None, blocked: tuple[str, str] | None) -> None:
        """Patch `status.scale` and the Scaling condition when they differ from what the object shows."""
        obj = self.lookup(key)
        if obj is None:
            return
        status = obj.get("status") or {}
        previous = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        reason, message = blocked or ("TargetUtilization", "")
        condition = _condition("Scaling", blocked is None, reason, message, previous,
                               obj["metadata"].get("generation"), now())
        wanted: Obj = {"conditions": [c for c in previous if c.get("type") != "Scaling"] + [condition]}
        if scale is not None:
            wanted["scale"] = scale
        patch = status_patch(status, wanted) or {}
        loop = asyncio.get_running_loop()
        last = self._written.get(key)
        if not patch or (set(patch) == {"scale"} and last is not None and _only_utilization(last[0], scale)
                         and loop.time() - last[1] < UTILIZATION_ONLY_EVERY_S):
            return
        try:
            await self.api.patch_status(ONLINE_DEPLOYMENTS, key[1], key[2], patch,
                                        resource_version=str(obj["metadata"].get("resourceVersion")))
        except Conflict:
            return  # the watch has not shown the newest version yet: the next poll writes from it
        except KubeError as exc:
            metrics.status_write_failed(key[0])
            logs.event("autoscale.status_failed", level=logging.WARNING, resource=f"{key[0]} {key[1]}/{key[2]}",
                       error=describe(exc))
            return
        if scale is not None:
            self._written[key] = (scale, loop.time())

    async def _event(self, key: ResourceKey, where: str, old: int, new: int, utilization: float, why: str) -> None:
        obj = self.lookup(key) or {"metadata": {}}
        at = now()
        event = {"apiVersion": "v1", "kind": "Event", "type": "Normal", "reason": "Scaled",
                 "metadata": {"name": f"{key[2]}.{uuid.uuid4().hex[:16]}", "namespace": key[1]},
                 "involvedObject": {"apiVersion": ONLINE_DEPLOYMENTS.api_version, "kind": key[0], "namespace": key[1],
                                    "name": key[2], "uid": obj["metadata"].get("uid"),
                                    "resourceVersion": obj["metadata"].get("resourceVersion")},
                 "message": f"scaled {where} from {old} to {new} replicas (utilization {round(utilization)}%: {why})",
                 "source": {"component": "inference-router", "host": self.identity},
                 "reportingComponent": "inference-router", "reportingInstance": self.identity,
                 "firstTimestamp": at, "lastTimestamp": at, "count": 1}
        try:
            await self.api.create(EVENTS, key[1], event)
        except KubeError as exc:  # the size is written; a lost Event is only a lost notice
            logs.event("autoscale.event_failed", level=logging.WARNING, error=describe(exc))


def _only_utilization(before: Obj, after: Obj | None) -> bool:
    if after is None:
        return False
    return {k: v for k, v in before.items() if k != "utilization"} == {
        k: v for k, v in after.items() if k != "utilization"}
