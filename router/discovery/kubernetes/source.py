"""The cluster source: watches in, one routing state out, status back.

Two reflectors always run, for OnlineEndpoints and OnlineDeployments (in one namespace or
all). The accepted objects decide what else to watch: the EndpointSlices of each namespace
where a deployment names a Service (one watch per namespace, of the slices that carry the
label `kubernetes.io/service-name`, filtered here: API server load does not grow with the
number of Services), the Services of a namespace where a deployment gives its port as a
number (slices list target ports: the Service maps the number to them), and each Secret an
endpoint names (field `metadata.name`: the router reads no Secret it was not told about), one
reflector each, started and stopped as references come and go. Every change wakes one loop,
which waits for the burst to settle, assembles the state from all the copies (`assembly`),
applies it if it differs from the last one, and hands the reports to the status writer.

A change that starts to reference a namespace's slices or a Secret is applied once that
reflector has listed, or the API server refused it (403: waiting would not help), or its own
deadline passed: `reference_sync_s` after that watch started, or `first_list_timeout_s` for
the first state. So a new deployment never routes before its replicas are known, one watch
that cannot list does not cut short the wait of the others, and the router reports synced,
and so ready, only once the first state has been assembled from complete lists (a new pod
in a rollout does not answer 503 or 401 for want of replicas or keys).

One more Secret can be followed for the router itself (`follow_secret`: the TLS
certificate of --ssl-secret), in the router's own namespace, outside the routing state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from router import logs
from router.discovery.kubernetes.addresses import AddressPolicy, own_addresses
from router.discovery.kubernetes.api import (
    ENDPOINT_SLICES,
    HORIZONTAL_POD_AUTOSCALERS,
    ONLINE_DEPLOYMENTS,
    ONLINE_ENDPOINTS,
    SECRETS,
    SERVICES,
    KubeApi,
    Obj,
)
from router.discovery.kubernetes.assembly import (
    SERVICE_NAME_LABEL,
    Assembly,
    Parsed,
    ResourceKey,
    assemble,
    parse_objects,
)
from router.discovery.kubernetes.lease import LeaderElector
from router.discovery.kubernetes.reflector import Reflector, Selection
from router.discovery.kubernetes.scaling import KubeScaling
from router.discovery.kubernetes.settings import KubernetesSettings
from router.discovery.kubernetes.status import StatusWriter
from router.discovery.source import Apply, ServiceKey, ServiceReplicas
from router.errors import ConfigError
from router.model import Resources


@dataclass
class _Watched:
    reflector: Reflector
    task: asyncio.Task[None]
    started: float


class KubernetesSource:
    def __init__(self, settings: KubernetesSettings, *, identity: str | None = None) -> None:
        self.settings = settings
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.synced = False
        self.applied = 0  # routing states handed to the server
        self.rejections = 0  # objects rejected (each new set of problems counts once)
        self._api: KubeApi | None = None
        self._changed = asyncio.Event()
        self._roots: dict[str, _Watched] = {}
        self._references: dict[tuple[str, str, str], _Watched] = {}  # (kind, namespace, name) → its watch
        self._parsed: dict[ResourceKey, Parsed] = {}
        self._reported: dict[ResourceKey, tuple[str, ...]] = {}
        self._last: tuple[Resources, ServiceReplicas] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused: frozenset[str] = frozenset()
        self.scaling: KubeScaling | None = None  # the autoscaler's target, once connected
        self.policy = AddressPolicy(allow_loopback=settings.allow_loopback_replicas, own=own_addresses())

    @property
    def reloads(self) -> int:
        """States applied after the first (the file source's count of the same name)."""
        return max(0, self.applied - 1)

    def __repr__(self) -> str:
        state = "synced" if self.synced else "syncing"
        return (f"<KubernetesSource {self.settings.namespace or '(all namespaces)'} {state} "
                f"watches={len(self._roots) + len(self._references)} applied={self.applied}>")

    async def load(self) -> Resources:
        """Connect (a kubeconfig that does not work stops the start); the state comes through `watch`."""
        self._api = await KubeApi.connect(self.settings.kubeconfig,
                                          request_timeout_s=self.settings.watch.request_timeout_s)
        self.scaling = KubeScaling(self._api, self._own_namespace(self._api), self.identity,
                                   self.settings.autoscale_lease, self._lookup)
        logs.event("kubernetes.connecting", namespace=self.settings.namespace or "(all)",
                   identity=self.identity)
        return Resources()

    async def watch(self, apply: Apply) -> None:
        api = self._api
        if api is None:
            raise RuntimeError("KubernetesSource.load() first")
        settings = self.settings
        elector = LeaderElector(api, self._own_namespace(api), self.identity, settings.lease,
                                on_change=lambda _: writer.wake())
        writer = StatusWriter(api, self._lookup, lambda: elector.is_leader,
                              scoring_base_url=settings.scoring_base_url, settings=settings.watch)
        for kind in (ONLINE_ENDPOINTS, ONLINE_DEPLOYMENTS):
            self._roots[kind.kind] = self._start(Selection(kind=kind, namespace=settings.namespace))
        self._spawn(elector.run(), "kubernetes-lease")
        self._spawn(writer.run(), "kubernetes-status")
        try:
            while True:
                await self._changed.wait()
                await asyncio.sleep(settings.settle_s)
                self._changed.clear()
                try:
                    assembly = self._assemble()
                    if assembly is not None:
                        self._apply(apply, assembly)
                        writer.offer(assembly.reports)
                except Exception as exc:  # a bug must not end discovery: the last state keeps serving
                    logs.event("kubernetes.assembly_failed", level=logging.ERROR, error=repr(exc))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await elector.release()
                    if self.scaling is not None:
                        await self.scaling.elector.release()
            await api.close()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _own_namespace(self, api: KubeApi) -> str:
        """The router's own namespace (its Lease, its own Secret): the pod's, not the watched one."""
        return api.namespace

    async def follow_secret(self, name: str, on_change: Callable[[Obj | None], None]) -> str:
        """Watch the Secret `name` in the router's namespace, for the router's own use (not routed).

        `on_change` gets the Secret (None while there is none) after the first list and after
        every change. Returns that namespace once listed; ConfigError if not within
        `first_list_timeout_s`. Call after `load`; the watch ends with `watch`'s.
        """
        if self._api is None:
            raise RuntimeError("KubernetesSource.load() first")
        namespace = self._own_namespace(self._api)
        listed = asyncio.Event()

        def changed() -> None:
            on_change(watched.reflector.objects.get((namespace, name)))
            listed.set()

        watched = self._start(_secret(namespace, name), changed)
        try:
            async with asyncio.timeout(self.settings.first_list_timeout_s):
                await listed.wait()
        except TimeoutError:
            watched.task.cancel()
            raise ConfigError([f"Secret {name} in namespace {namespace}: not listed within "
                               f"{self.settings.first_list_timeout_s:g} s: "
                               f"{watched.reflector.last_error or 'no answer from the API server'}"]) from None
        return namespace

    def _start(self, selection: Selection, on_change: Callable[[], None] | None = None) -> _Watched:
        assert self._api is not None
        reflector = Reflector(self._api, selection, on_change or self._changed.set, self.settings.watch)
        task = self._spawn(reflector.run(), f"kubernetes-watch {selection}")
        return _Watched(reflector, task, asyncio.get_running_loop().time())

    def _lookup(self, key: ResourceKey) -> Obj | None:
        root = self._roots.get(key[0])
        return None if root is None else root.reflector.objects.get((key[1], key[2]))

    def _referenced(self, kind: str) -> list[Obj]:
        """The objects of `kind` that the referenced-object watches hold."""
        return [o for (k, _, _), w in self._references.items() if k == kind for o in w.reflector.objects.values()]

    def _assemble(self) -> Assembly | None:
        """The state from complete copies, or None while some copy is still being listed."""
        if not all(root.reflector.synced for root in self._roots.values()):
            return None
        raw = {kind: list(root.reflector.objects.values()) for kind, root in self._roots.items()}
        raw[SECRETS.kind] = self._referenced(SECRETS.kind)
        parsed: dict[ResourceKey, Parsed] = {}
        for kind in (ONLINE_ENDPOINTS, ONLINE_DEPLOYMENTS, SECRETS):
            parsed.update(parse_objects(kind, raw[kind.kind], self._parsed))
        self._parsed = parsed
        unreadable = {key: w.reflector.last_error for key, w in self._references.items() if w.reflector.refused}
        assembly = assemble(raw, parsed, self._referenced(ENDPOINT_SLICES.kind), self.policy,
                            self.settings.address_family, self._referenced(SERVICES.kind), unreadable)
        self._follow(assembly.services, assembly.secrets, assembly.port_lookups)
        loop = asyncio.get_running_loop()
        budget = self.settings.reference_sync_s if self.synced else self.settings.first_list_timeout_s
        deadlines = [w.started + budget for w in self._references.values()
                     if not w.reflector.synced and not w.reflector.refused]
        if deadlines and loop.time() < max(deadlines):
            # each watch has its own deadline: one that never lists does not end the wait of a newer one
            pending = [d for d in deadlines if d > loop.time()]
            loop.call_at(min(pending), self._changed.set)
            return None  # applied once the new references are listed (their first list wakes the loop)
        self._report(parsed)
        self._report_refused(assembly.refused)
        return assembly

    def _follow(self, services: frozenset[ServiceKey], secrets: frozenset[tuple[str, str]],
                port_lookups: frozenset[str]) -> None:
        """Start a watch for each newly referenced namespace's slices (and Services, where a port number must be
        mapped) and Secret, stop those no longer referenced."""
        wanted = {(ENDPOINT_SLICES.kind, ns, "") for ns, _ in services} | {
            (SECRETS.kind, ns, name) for ns, name in secrets} | {(SERVICES.kind, ns, "") for ns in port_lookups}
        for key in wanted - self._references.keys():
            kind, namespace, name = key
            if kind == SECRETS.kind:
                selection = _secret(namespace, name)
            elif kind == SERVICES.kind:
                selection = Selection(kind=SERVICES, namespace=namespace)
            else:  # every Service's slices in the namespace (the label exists): one watch, filtered here
                selection = Selection(kind=ENDPOINT_SLICES, namespace=namespace, labels=SERVICE_NAME_LABEL)
            self._references[key] = self._start(selection)
        for key in self._references.keys() - wanted:
            self._references.pop(key).task.cancel()

    def _report(self, parsed: dict[ResourceKey, Parsed]) -> None:
        """Log each object's problems once when they appear, and once when they are gone."""
        for key, entry in parsed.items():
            if entry.problems == self._reported.get(key, ()):
                continue
            kind, namespace, name = key
            if entry.problems:
                self.rejections += 1
                logs.event("kubernetes.rejected", level=logging.ERROR, resource=f"{kind} {namespace}/{name}",
                           problems=list(entry.problems), serving_last_accepted=entry.accepted is not None)
            else:
                logs.event("kubernetes.accepted", resource=f"{kind} {namespace}/{name}")
            self._reported[key] = entry.problems
        for key in self._reported.keys() - parsed.keys():
            del self._reported[key]

    def _report_refused(self, refused: frozenset[str]) -> None:
        """Log each refused replica address once when it appears (the deployment's status says it too)."""
        for reason in sorted(refused - self._refused):
            logs.event("kubernetes.replica_refused", level=logging.WARNING, problem=reason)
        self._refused = refused

    def _start_scaling(self, resources: Resources) -> None:
        """Once a deployment asks to be autoscaled: run for the autoscaler's Lease and watch the HPAs (not
        before: a router whose deployments all have a fixed size needs neither, nor their RBAC)."""
        scaling = self.scaling
        if scaling is None or scaling.started or not any(d.autoscaled for d in resources.deployments):
            return
        scaling.started = True
        hpas = self._start(Selection(kind=HORIZONTAL_POD_AUTOSCALERS, namespace=self.settings.namespace),
                           lambda: None)
        scaling.hpas = lambda: hpas.reflector.objects.values()
        scaling.hpas_listed = lambda: hpas.reflector.synced
        self._spawn(scaling.elector.run(), "kubernetes-autoscale-lease")

    def _apply(self, apply: Apply, assembly: Assembly) -> None:
        state = (assembly.resources, assembly.service_replicas)
        self._start_scaling(assembly.resources)
        if not self.synced:  # everything is listed: this is the first full state
            self.synced = True
            logs.event("kubernetes.synced", endpoints=len(state[0].endpoints), deployments=len(state[0].deployments))
        if state != self._last:
            try:
                apply(*state)
            except ConfigError as exc:
                logs.event("kubernetes.apply_failed", level=logging.ERROR, problems=exc.problems,
                           note="the last applied state keeps serving")
                return
            self._last = state
            self.applied += 1
            logs.event("kubernetes.applied", endpoints=len(state[0].endpoints),
                       deployments=len(state[0].deployments),
                       replicas={f"{ns}/{name}": len(urls) for (ns, name), urls in state[1].items()})


def _secret(namespace: str, name: str) -> Selection:
    """The watch of one Secret, by name."""
    return Selection(kind=SECRETS, namespace=namespace, fields=f"metadata.name={name}")
