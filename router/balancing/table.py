"""The routing table: one immutable snapshot of what the data plane routes to.

Built once per configuration change from validated resources, so the hot path only
does dictionary lookups. Replica objects are carried over from the previous table
when their address is unchanged, keeping their in-flight counts and connection
pools across reloads; the builder reports which replicas came and went.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.balancing.replicas import Replica, ReplicaSet
from router.balancing.traffic import TrafficSplit
from router.model import OnlineDeployment, OnlineEndpoint, Resources

ReplicaKey = tuple[str, str, str]  # namespace, deployment, url
ServiceKey = tuple[str, str]  # namespace, service name


class DeploymentRoute:
    __slots__ = ("header_value", "name", "replicas", "scoring_route", "spec", "timeout")

    def __init__(self, spec: OnlineDeployment, replicas: ReplicaSet) -> None:
        self.spec = spec
        self.name = spec.name
        self.header_value = spec.name.encode()
        self.scoring_route = spec.scoring_route.encode()
        self.timeout = spec.request_settings.request_timeout_ms / 1000
        self.replicas = replicas

    def __repr__(self) -> str:
        return f"<DeploymentRoute {self.name} replicas={len(self.replicas)}>"


class EndpointRoute:
    __slots__ = ("auth_mode", "deployments", "keys", "name", "split")

    def __init__(self, spec: OnlineEndpoint, keys: tuple[bytes, ...],
                 deployments: dict[str, DeploymentRoute]) -> None:
        self.name = spec.name
        self.auth_mode = spec.auth_mode
        self.keys = keys
        self.deployments = deployments
        self.split = TrafficSplit(spec.traffic)

    def pick_deployment(self) -> DeploymentRoute | None:
        name = self.split.pick()
        return None if name is None else self.deployments[name]

    def __repr__(self) -> str:
        return f"<EndpointRoute {self.name} {self.split!r}>"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    endpoints: Mapping[str, EndpointRoute] = field(default_factory=dict)
    replicas: Mapping[ReplicaKey, Replica] = field(default_factory=dict)
    added: tuple[Replica, ...] = ()  # new since the previous table: they need a pool
    removed: tuple[Replica, ...] = ()  # gone since the previous table: drain and close

    @classmethod
    def build(cls, resources: Resources, previous: RoutingTable | None = None,
              service_replicas: Mapping[ServiceKey, tuple[str, ...]] | None = None) -> RoutingTable:
        old = previous.replicas if previous else {}
        service_replicas = service_replicas or {}
        secrets = {(s.namespace, s.name): s for s in resources.secrets}
        replicas: dict[ReplicaKey, Replica] = {}
        added: list[Replica] = []
        by_endpoint: dict[tuple[str, str], dict[str, DeploymentRoute]] = {}
        for dep in resources.deployments:
            if dep.urls is not None:
                urls = dep.urls
            elif dep.service is not None:
                urls = service_replicas.get((dep.namespace, dep.service.name), ())
            else:
                urls = ()
            chosen = []
            for url in urls:
                key = (dep.namespace, dep.name, url)
                replica = old.get(key)
                if replica is None:
                    replica = Replica(url)
                    added.append(replica)
                replicas[key] = replica
                chosen.append(replica)
            routes = by_endpoint.setdefault((dep.namespace, dep.endpoint_name), {})
            routes[dep.name] = DeploymentRoute(dep, ReplicaSet(tuple(chosen)))
        endpoints = {}
        for ep in resources.endpoints:
            keys: tuple[bytes, ...] = ()
            secret = secrets.get((ep.namespace, ep.keys_secret_ref or ""))
            if secret is not None:
                keys = tuple(secret.data[k].encode() for k in ("primaryKey", "secondaryKey")
                             if secret.data.get(k))
            endpoints[ep.name] = EndpointRoute(ep, keys, by_endpoint.get((ep.namespace, ep.name), {}))
        removed = tuple(r for k, r in old.items() if k not in replicas)
        for replica in removed:
            replica.retired = True
        return cls(endpoints, replicas, tuple(added), removed)
