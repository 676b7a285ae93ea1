"""The routing table: one immutable snapshot of what the data plane routes to.

Built once per configuration change from validated resources, so the hot path only
does dictionary lookups. State that must survive a reload is carried over from the
previous table: `Replica` objects (in-flight counts, latency, health, connection
pools) by address, `DeploymentBalancer`s (queues) by deployment, and the traffic
split's position while the weights are unchanged. The builder reports which
replicas came and went.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.balancing.admission import DeploymentBalancer, Policy
from router.balancing.replicas import Replica
from router.balancing.traffic import TrafficSplit
from router.model import OnlineDeployment, OnlineEndpoint, Resources
from router.tokens import TokenChecker, signing_key

ReplicaKey = tuple[str, str, str]  # namespace, deployment, url
SCORE, SWAGGER = 1, 2  # what a scoring URL asks of its endpoint


# the URL paths of an endpoint (DESIGN §3): before its name, after it, and what they ask of it
_SHAPES = ((b"/api/v1/endpoint/", b"/score", SCORE), (b"/api/v1/service/", b"/score", SCORE),
           (b"/api/v1/endpoint/", b"/swagger.json", SWAGGER))


def scoring_paths(name: str) -> dict[bytes, int]:
    """The URL paths that reach endpoint `name`, and what each asks of it."""
    n = name.encode("latin-1")
    return {before + n + after: kind for before, after, kind in _SHAPES}


def endpoint_name(path: bytes) -> str | None:
    """The endpoint a URL path of a scoring shape names, whether it exists or not; None for any other path."""
    for before, after, _ in _SHAPES:
        if path.startswith(before) and path.endswith(after):
            name = path[len(before):len(path) - len(after)]
            if name and b"/" not in name:
                return name.decode("latin-1")
    return None
DeploymentKey = tuple[str, str]  # namespace, deployment
ServiceKey = tuple[str, str]  # namespace, service name


class DeploymentRoute:
    __slots__ = ("balancer", "deadlines", "header_value", "name", "scoring_route", "spec", "stats", "timeout")

    def __init__(self, spec: OnlineDeployment, balancer: DeploymentBalancer) -> None:
        self.spec = spec
        self.name = spec.name
        self.header_value = spec.name.encode()
        self.scoring_route = spec.scoring_route.encode()
        self.timeout = spec.request_settings.request_timeout_ms / 1000
        self.balancer = balancer
        self.deadlines: Any = None  # its requests' timeouts: the data plane's `Deadlines`, attached on first use
        self.stats: Any = None  # what its requests came to: the metrics' `RouteStats`, attached on first use

    def keep_deadlines(self, deadlines: Any) -> Any:
        self.deadlines = deadlines
        return deadlines

    def __repr__(self) -> str:
        return f"<DeploymentRoute {self.name} {self.balancer!r}>"


class EndpointRoute:
    __slots__ = ("auth_mode", "authorizations", "deployments", "keys", "mirror", "mirror_percent", "name", "spec",
                 "split", "tokens")

    def __init__(self, spec: OnlineEndpoint, keys: tuple[bytes, ...], deployments: dict[str, DeploymentRoute],
                 previous: EndpointRoute | None = None, token_key: bytes | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.auth_mode = spec.auth_mode
        self.keys = keys
        # the Authorization header values of its keys, as clients send them: looked up (the lookup hashes with
        # the process's secret seed, so its timing tells nothing about a key); other spellings are compared
        self.authorizations = frozenset(b"Bearer " + key for key in keys)
        self.tokens = TokenChecker(spec.name, token_key) if spec.auth_mode == "aml_token" else None
        self.deployments = deployments
        self.split: TrafficSplit = (previous.split if previous is not None and previous.spec.traffic == spec.traffic
                                    else TrafficSplit(spec.traffic))
        mirrored = [(name, pct) for name, pct in spec.mirror_traffic.items() if pct > 0 and name in deployments]
        self.mirror = deployments[mirrored[0][0]] if mirrored else None
        self.mirror_percent = mirrored[0][1] if mirrored else 0

    def pick_deployment(self) -> DeploymentRoute | None:
        name = self.split.pick()
        return None if name is None else self.deployments[name]

    def __repr__(self) -> str:
        return f"<EndpointRoute {self.name} {self.split!r}>"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    endpoints: Mapping[str, EndpointRoute] = field(default_factory=dict)
    replicas: Mapping[ReplicaKey, Replica] = field(default_factory=dict)
    balancers: Mapping[DeploymentKey, DeploymentBalancer] = field(default_factory=dict)
    paths: Mapping[bytes, tuple[EndpointRoute, int]] = field(default_factory=dict)  # URL path → endpoint, kind
    added: tuple[Replica, ...] = ()  # new since the previous table: they need a pool
    removed: tuple[Replica, ...] = ()  # gone since the previous table: drain and close
    # every endpoint's accepted Authorization values: who may be told that an endpoint does not exist
    authorizations: frozenset[bytes] = frozenset()

    @classmethod
    def build(cls, resources: Resources, previous: RoutingTable | None = None,
              service_replicas: Mapping[ServiceKey, tuple[str, ...]] | None = None, *,
              now: float = 0.0, policy: Policy = "least_loaded") -> RoutingTable:
        old = previous.replicas if previous else {}
        old_balancers = previous.balancers if previous else {}
        old_endpoints = previous.endpoints if previous else {}
        service_replicas = service_replicas or {}
        secrets = {(s.namespace, s.name): s for s in resources.secrets}
        replicas: dict[ReplicaKey, Replica] = {}
        balancers: dict[DeploymentKey, DeploymentBalancer] = {}
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
                    replica = Replica(url, now)
                    added.append(replica)
                replicas[key] = replica
                chosen.append(replica)
            dkey = (dep.namespace, dep.name)
            balancer = old_balancers.get(dkey)
            if balancer is None or balancer.policy != policy:
                balancer = DeploymentBalancer(f"{dep.namespace}/{dep.name}", dep.request_settings, policy)
            balancer.update(tuple(chosen), dep.request_settings)
            balancers[dkey] = balancer
            routes = by_endpoint.setdefault((dep.namespace, dep.endpoint_name), {})
            routes[dep.name] = DeploymentRoute(dep, balancer)
        endpoints = {}
        for ep in resources.endpoints:
            keys: tuple[bytes, ...] = ()
            token_key = None
            secret = secrets.get((ep.namespace, ep.keys_secret_ref or ""))
            if secret is not None:
                keys = tuple(key.encode() for key in secret.keys)
                if ep.auth_mode == "aml_token":  # a key endpoint signs nothing: no derivation (PBKDF2) for it
                    token_key = signing_key(secret.data, ep.namespace, ep.name)
            endpoints[ep.name] = EndpointRoute(ep, keys, by_endpoint.get((ep.namespace, ep.name), {}),
                                               old_endpoints.get(ep.name), token_key)
        removed = tuple(r for k, r in old.items() if k not in replicas)
        for replica in removed:
            replica.retired = True
        paths = {path: (route, kind) for route in endpoints.values()
                 for path, kind in scoring_paths(route.name).items()}
        authorizations = frozenset().union(*(route.authorizations for route in endpoints.values()))
        return cls(endpoints, replicas, balancers, paths, tuple(added), removed, authorizations)
