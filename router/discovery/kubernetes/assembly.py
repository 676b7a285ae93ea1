"""From the watched objects to what the router serves: pure functions, no I/O.

A cluster is edited one object at a time, in any order, so it is never "one document set"
the way a file is. Each object is therefore validated alone (`documents.parse_document`):
a valid one is accepted; an invalid one is rejected and its last accepted version, if the
router saw one, keeps serving (DESIGN §2: the last good state keeps serving, per object).
The references between accepted objects are then resolved leniently, since a reference
to an object not created yet, or just deleted, is a normal moment in a cluster:

- a deployment whose endpoint does not exist is not routed (it waits for it);
- a traffic or mirror share naming a deployment that does not exist (or belongs to another
  endpoint) is dropped, so the endpoint's other deployments take the traffic;
- an endpoint whose keys Secret is missing is routed with no key: every call gets 401;
- of two endpoints with one name in two namespaces (scoring URLs carry the name only),
  the older one is routed and the newer one rejected.

Every such decision is written into the object's `Report`, the input of its status.
Replicas of a Service-backed deployment are the ready, not terminating endpoints of the
Service's EndpointSlices in the deployment's namespace, on the slice port that matches the
deployment's port: one replica per endpoint (a dual-stack Service lists each pod in an IPv4
and an IPv6 slice; the preferred family's address serves), and only addresses the
`AddressPolicy` admits (a refused one is named, with its slice, in the deployment's status).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.discovery.documents import parse_document
from router.discovery.kubernetes.addresses import AddressPolicy
from router.discovery.kubernetes.api import (
    ENDPOINT_SLICES,
    ONLINE_DEPLOYMENTS,
    ONLINE_ENDPOINTS,
    SECRETS,
    Kind,
    Obj,
    object_key,
)
from router.discovery.source import ServiceKey
from router.errors import ConfigError
from router.model import OnlineDeployment, OnlineEndpoint, Resources, Secret

ResourceKey = tuple[str, str, str]  # kind, namespace, name
Value = OnlineEndpoint | OnlineDeployment | Secret
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
STRICT = AddressPolicy()  # no loopback replica, and the router's own addresses unknown


@dataclass(frozen=True, slots=True)
class Parsed:
    """One object's validation: its version, why it was rejected, and its last accepted value."""

    version: str
    problems: tuple[str, ...]
    accepted: Value | None  # this version when it has no problems, else the last accepted one
    generation: int | None = None  # metadata.generation of the version judged


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What the router made of one custom resource: the input of its status."""

    # the version judged: status claims this generation, not whatever the object has by the time it is written
    generation: int | None = None
    version: str = ""
    problems: tuple[str, ...] = ()  # why its current spec is rejected
    serving: bool = False  # an accepted version of it is routed
    waiting: tuple[str, ...] = ()  # what keeps it from being fully ready
    ready_replicas: int = 0
    deployments: Mapping[str, int] = field(default_factory=dict)  # an endpoint's ready replicas per deployment
    autoscaled: bool = False  # a deployment whose accepted spec asks for the autoscaler

    @property
    def ready(self) -> bool:
        return self.serving and not self.waiting


@dataclass(frozen=True, slots=True)
class Assembly:
    resources: Resources
    service_replicas: Mapping[ServiceKey, tuple[str, ...]]
    reports: Mapping[ResourceKey, Report]
    services: frozenset[ServiceKey]  # the Services whose EndpointSlices to watch
    secrets: frozenset[tuple[str, str]]  # the Secrets (namespace, name) to watch
    refused: frozenset[str] = frozenset()  # replica addresses refused, each with its slice and why
    port_lookups: frozenset[str] = frozenset()  # namespaces whose Services map a deployment's port number


def parse_objects(kind: Kind, objects: Iterable[Obj], previous: Mapping[ResourceKey, Parsed]
                  ) -> dict[ResourceKey, Parsed]:
    """Validate each object alone; an unchanged version is not validated again."""
    parsed: dict[ResourceKey, Parsed] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        key = (kind.kind, *object_key(obj))
        version = str(meta.get("resourceVersion") or "")
        before = previous.get(key)
        if before is not None and before.version == version:
            parsed[key] = before
            continue
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
        try:
            value = parse_document(obj)
            parsed[key] = Parsed(version, (), value, generation)
        except ConfigError as exc:
            last = before.accepted if before else None
            if isinstance(last, Secret):
                last = _unchanged_keys(last, obj)
            parsed[key] = Parsed(version, tuple(exc.problems), last, generation)
    return parsed


def _unchanged_keys(last: Secret, obj: Obj) -> Secret:
    """The last accepted Secret, less every key the refused version removed or changed.

    A rotation that drops a leaked key must revoke it even when another value in it is refused:
    only what the new version still holds, byte for byte, keeps working.
    """
    now: dict[str, str] = {}
    data, string_data = obj.get("data"), obj.get("stringData")
    for name, value in (data.items() if isinstance(data, dict) else ()):
        try:
            now[str(name)] = base64.b64decode(str(value), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    for name, value in (string_data.items() if isinstance(string_data, dict) else ()):
        if isinstance(value, str):
            now[str(name)] = value
    kept = {name: value for name, value in last.data.items() if now.get(name) == value}
    return last if len(kept) == len(last.data) else dataclasses.replace(last, data=MappingProxyType(kept))


@dataclass(frozen=True, slots=True)
class ServiceEndpoints:
    urls: tuple[str, ...]  # one per ready endpoint
    refused: tuple[str, ...] = ()  # each refused address (or slice), with its slice and why


def ready_urls(slices: Iterable[Obj], port: int | str, policy: AddressPolicy = STRICT,
               family: str = "IPv4") -> ServiceEndpoints:
    """`http://address:port` of every ready, not terminating endpoint in a Service's slices.

    An endpoint is one pod (its targetRef, else its hostname, else its URL): listed in slices
    of both families, its `family` address serves. Addresses `policy` refuses are left out, and said.
    """
    chosen: dict[tuple[str, ...], dict[str, str]] = {}  # endpoint → family → URL
    refused: list[str] = []
    for piece in sorted(slices, key=lambda s: str(s["metadata"]["name"])):
        where = "EndpointSlice {}/{}".format(*object_key(piece))
        number = _slice_port(piece.get("ports") or [], port)
        kind = piece.get("addressType")
        if number is None:
            continue
        if kind not in ("IPv4", "IPv6"):
            refused.append(f"{where}: addressType {kind}: refused, only IP addresses become replicas")
            continue
        for endpoint in piece.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            # the addresses of one endpoint are interchangeable: the first one serves
            if not serving(endpoint) or not addresses:
                continue
            address = str(addresses[0])
            why = policy.refusal(address)
            if why is not None:
                refused.append(f"{where}: address {address} refused: {why}")
                continue
            host = f"[{address}]" if ":" in address else address
            url = f"http://{host}:{number}"
            chosen.setdefault(_endpoint_identity(endpoint, url), {}).setdefault(str(kind), url)
    urls = {by_family.get(family) or next(iter(by_family.values())) for by_family in chosen.values()}
    return ServiceEndpoints(tuple(sorted(urls)), tuple(refused))


def serving(endpoint: Obj) -> bool:
    """An EndpointSlice endpoint that takes traffic: `ready` unset means ready, `terminating` unset means
    not (EndpointConditions)."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def _endpoint_identity(endpoint: Obj, url: str) -> tuple[str, ...]:
    """What makes two slice endpoints one pod: its targetRef, else its hostname, else its URL."""
    ref = endpoint.get("targetRef") or {}
    if ref.get("uid") or ref.get("name"):
        return ("ref", str(ref.get("kind") or ""), str(ref.get("namespace") or ""),
                str(ref.get("name") or ref.get("uid")))
    if endpoint.get("hostname"):
        return ("hostname", str(endpoint["hostname"]))
    return ("url", url)


def _slice_port(ports: list[Obj], wanted: int | str) -> int | None:
    """The slice's TCP port for the deployment's Service port, given by name or number.

    A slice lists target ports under the Service port's name; a single-port Service
    whose target port differs from its port has one slice port with another number,
    which is still the one meant.
    """
    tcp = [p for p in ports if (p.get("protocol") or "TCP") == "TCP" and isinstance(p.get("port"), int)]
    for p in tcp:
        if (isinstance(wanted, str) and (p.get("name") or "") == wanted) or (
                isinstance(wanted, int) and p["port"] == wanted):
            return int(p["port"])
    return int(tcp[0]["port"]) if isinstance(wanted, int) and len(tcp) == 1 else None


def _named_port(service: Obj, number: int) -> str | None:
    """The name slices list the Service port `number` under ("" when unnamed), or None if it has no such port.

    Slice ports are target ports: a Service port number is found there only through its name.
    """
    for port in (service.get("spec") or {}).get("ports") or []:
        if isinstance(port, dict) and port.get("port") == number and (port.get("protocol") or "TCP") == "TCP":
            return str(port.get("name") or "")
    return None


def assemble(raw: Mapping[str, Iterable[Obj]], parsed: Mapping[ResourceKey, Parsed],
             slices: Iterable[Obj], policy: AddressPolicy = STRICT, family: str = "IPv4",
             services: Iterable[Obj] = (), unreadable: Mapping[ResourceKey, str] | None = None) -> Assembly:
    """The routed state and every custom resource's report, from validated objects and slices.

    `raw` holds the objects by kind name (for their creation times); `parsed` comes from
    `parse_objects` over the same objects; `services` are the Services of the namespaces where
    a deployment gives a port number (`Assembly.port_lookups`), to map it to the slices' port;
    `unreadable` the references the API server refuses to list, (kind, namespace, name or ""
    for a namespace's slices) → why, so that a report says "cannot be read", not "missing".
    """
    unreadable = unreadable or {}
    known_services = {object_key(s): s for s in services}
    created = {(kind, *object_key(o)):
               str(o["metadata"].get("creationTimestamp") or "") for kind, objs in raw.items() for o in objs}
    problems: dict[ResourceKey, list[str]] = {k: list(p.problems) for k, p in parsed.items()
                                              if k[0] != SECRETS.kind}
    waiting: dict[ResourceKey, list[str]] = {k: [] for k in problems}
    accepted = {k: p.accepted for k, p in parsed.items() if p.accepted is not None}

    endpoints = _unique_endpoint_names(
        {k: v for k, v in accepted.items() if isinstance(v, OnlineEndpoint)}, created, problems)
    deployments = {k: v for k, v in accepted.items() if isinstance(v, OnlineDeployment)}
    secrets = {(v.namespace, v.name): v for v in accepted.values() if isinstance(v, Secret)}
    by_slice_service: dict[ServiceKey, list[Obj]] = {}
    for piece in slices:
        meta = piece["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service:
            by_slice_service.setdefault((object_key(piece)[0], str(service)), []).append(piece)

    service_replicas: dict[ServiceKey, tuple[str, ...]] = {}
    refused: set[str] = set()
    service_ports: dict[ServiceKey, tuple[int | str, str]] = {}
    ready: dict[ResourceKey, int] = {}
    attached: dict[tuple[str, str], dict[str, OnlineDeployment]] = {}
    for key, dep in sorted(deployments.items()):
        notes = waiting[key]
        if dep.service is not None:
            service = (dep.namespace, dep.service.name)
            port, user = service_ports.setdefault(service, (dep.service.port, dep.name))
            if port != dep.service.port:
                notes.append(f"spec.backend.service: Service {dep.service.name!r} is used with port {port!r} "
                             f"by deployment {user!r}; one Service serves one port here")
                continue
            wanted: int | str | None = port
            if isinstance(port, int) and service in known_services:
                wanted = _named_port(known_services[service], port)
                if wanted is None:
                    notes.append(f"spec.backend.service.port: Service {dep.service.name!r} has no TCP port {port}")
            found = ready_urls(by_slice_service.get(service, ()), wanted, policy, family) if wanted is not None \
                else ServiceEndpoints(())
            service_replicas[service] = found.urls
            ready[key] = len(found.urls)
            notes.extend(found.refused)
            refused.update(found.refused)
        else:
            ready[key] = len(dep.urls or ())
        endpoint_key = (ONLINE_ENDPOINTS.kind, dep.namespace, dep.endpoint_name)
        if endpoint_key not in endpoints:
            notes.append(f"spec.endpointName: OnlineEndpoint {dep.endpoint_name!r} is not routed (see its status)"
                         if endpoint_key in parsed else
                         f"spec.endpointName: no OnlineEndpoint {dep.endpoint_name!r} in namespace {dep.namespace!r}")
            continue
        attached.setdefault((dep.namespace, dep.endpoint_name), {})[dep.name] = dep
        if ready[key] == 0:
            why = unreadable.get((ENDPOINT_SLICES.kind, dep.namespace, "")) if dep.service else None
            notes.append("no ready replica" + (f" in the EndpointSlices of Service {dep.service.name!r}"
                                               if dep.service else "") + (f": they cannot be read: {why}"
                                                                          if why else ""))

    routed: list[OnlineEndpoint] = []
    for key, ep in sorted(endpoints.items()):
        own = attached.get((ep.namespace, ep.name), {})
        ep = _resolve_shares(ep, own, deployments, parsed, waiting[key])
        routed.append(ep)
        for name, share in ep.traffic.items():
            if share and not ready.get((ONLINE_DEPLOYMENTS.kind, ep.namespace, name)):
                waiting[key].append(f"spec.traffic.{name}: deployment {name!r} has no ready replica")
        secret = secrets.get((ep.namespace, ep.keys_secret_ref or ""))
        secret_parsed = parsed.get((SECRETS.kind, ep.namespace, ep.keys_secret_ref or ""))
        if secret_parsed is not None and secret_parsed.problems:
            # the problems stay in the router's log: they may quote the Secret's content
            waiting[key].append(f"spec.keysSecretRef: Secret {ep.keys_secret_ref!r} is rejected (see the router's "
                                "log): only keys it still holds unchanged work, "
                                f"{len(secret.keys) if secret else 0} of them")
        elif ep.keys_secret_ref and secret is None and (SECRETS.kind, ep.namespace, ep.keys_secret_ref) in unreadable:
            waiting[key].append(f"spec.keysSecretRef: Secret {ep.keys_secret_ref!r} in namespace {ep.namespace!r} "
                                f"cannot be read: {unreadable[(SECRETS.kind, ep.namespace, ep.keys_secret_ref)]}: "
                                "every call is refused")
        elif ep.keys_secret_ref and secret is None:
            waiting[key].append(f"spec.keysSecretRef: no Secret {ep.keys_secret_ref!r} in namespace "
                                f"{ep.namespace!r}: every call is refused")
        elif secret is not None and not secret.keys:
            waiting[key].append(f"spec.keysSecretRef: Secret {ep.keys_secret_ref!r} has neither a primaryKey "
                                "nor a secondaryKey: every call is refused")

    serving = {(ONLINE_ENDPOINTS.kind, ep.namespace, ep.name) for ep in routed} | {
        (ONLINE_DEPLOYMENTS.kind, dep.namespace, dep.name) for own in attached.values() for dep in own.values()}
    reports = {}
    for key in problems:
        counts: dict[str, int] = {}
        if key[0] == ONLINE_ENDPOINTS.kind:
            counts = {d.name: ready[(ONLINE_DEPLOYMENTS.kind, d.namespace, d.name)]
                      for d in attached.get((key[1], key[2]), {}).values()}
        reports[key] = Report(generation=parsed[key].generation, version=parsed[key].version,
                              problems=tuple(problems[key]), serving=key in serving, waiting=tuple(waiting[key]),
                              ready_replicas=sum(counts.values()) if key[0] == ONLINE_ENDPOINTS.kind
                              else ready.get(key, 0), deployments=MappingProxyType(counts),
                              autoscaled=key in deployments and deployments[key].autoscaled)
    used_secrets = {(ep.namespace, ep.keys_secret_ref) for ep in routed if ep.keys_secret_ref}
    resources = Resources(
        endpoints=tuple(routed),
        deployments=tuple(dep for own in attached.values() for dep in own.values()),
        secrets=tuple(s for k, s in sorted(secrets.items()) if k in used_secrets),
    )
    return Assembly(resources, MappingProxyType(service_replicas), MappingProxyType(reports),
                    frozenset(service_ports), frozenset((ep.namespace, ep.keys_secret_ref) for ep in
                                                        endpoints.values() if ep.keys_secret_ref),
                    frozenset(refused),
                    frozenset(ns for (ns, _), (port, _) in service_ports.items() if isinstance(port, int)))


def _unique_endpoint_names(endpoints: dict[ResourceKey, OnlineEndpoint], created: Mapping[ResourceKey, str],
                           problems: dict[ResourceKey, list[str]]) -> dict[ResourceKey, OnlineEndpoint]:
    """Of endpoints sharing a name, the oldest (then the first namespace) is kept; the others are rejected."""
    kept: dict[str, ResourceKey] = {}
    for key in sorted(endpoints, key=lambda k: (created.get(k, ""), k)):
        winner = kept.setdefault(key[2], key)
        if winner != key:
            problems[key].append(f"metadata.name: endpoint name also used in namespace {winner[1]!r} (older); "
                                 "scoring URLs carry only the endpoint name")
    return {key: endpoints[key] for key in kept.values()}


def _resolve_shares(ep: OnlineEndpoint, own: Mapping[str, OnlineDeployment],
                    deployments: Mapping[ResourceKey, OnlineDeployment], present: Mapping[ResourceKey, object],
                    notes: list[str]) -> OnlineEndpoint:
    """The endpoint with shares of deployments that are not its own dropped, each noted."""
    kept: dict[str, dict[str, int]] = {"traffic": {}, "mirrorTraffic": {}}
    for field_name, shares in (("traffic", ep.traffic), ("mirrorTraffic", ep.mirror_traffic)):
        for name, share in shares.items():
            if name in own:
                kept[field_name][name] = share
                continue
            key = (ONLINE_DEPLOYMENTS.kind, ep.namespace, name)
            other = deployments.get(key)
            if other is not None and other.endpoint_name != ep.name:
                why = f"deployment {name!r} belongs to endpoint {other.endpoint_name!r}"
            elif other is not None or key in present:
                why = f"deployment {name!r} is not routed (see its status)"
            else:
                why = f"no OnlineDeployment {name!r} in namespace {ep.namespace!r}"
            if share:
                notes.append(f"spec.{field_name}.{name}: {why}; its {share}% is not routed")
    if kept["traffic"] == dict(ep.traffic) and kept["mirrorTraffic"] == dict(ep.mirror_traffic):
        return ep
    return dataclasses.replace(ep, traffic=MappingProxyType(kept["traffic"]),
                               mirror_traffic=MappingProxyType(kept["mirrorTraffic"]))
