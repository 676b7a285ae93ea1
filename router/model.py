"""Validated resources: immutable value objects, one per document kind (DESIGN §2).

Parsing and validation live in `router.discovery.documents`; everything above the
sources works with these objects only, never with raw YAML or API dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

AuthMode = Literal["key", "aml_token"]


def _frozen_map(items: dict[str, int] | None = None) -> MappingProxyType[str, int]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSettings:
    request_timeout_ms: int = 5000
    max_concurrent_requests_per_instance: int = 1
    max_queue_wait_ms: int = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleTargetRef:
    kind: str = "Deployment"
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSettings:
    type: Literal["default", "target_utilization"] = "default"
    min_instances: int = 1
    max_instances: int = 1
    target_utilization_percentage: int = 70
    polling_interval: int = 1
    scale_target_ref: ScaleTargetRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRef:
    """A Kubernetes Service whose ready EndpointSlice addresses are the replicas."""

    name: str
    port: int | str


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineEndpoint:
    namespace: str
    name: str
    auth_mode: AuthMode = "key"
    keys_secret_ref: str | None = None
    traffic: MappingProxyType[str, int] = field(default_factory=_frozen_map)
    mirror_traffic: MappingProxyType[str, int] = field(default_factory=_frozen_map)


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineDeployment:
    namespace: str
    name: str
    endpoint_name: str
    service: ServiceRef | None = None
    urls: tuple[str, ...] | None = None  # static replicas (local mode); exactly one of service/urls
    scoring_route: str = "/score"
    request_settings: RequestSettings = field(default_factory=RequestSettings)
    scale_settings: ScaleSettings | None = None

    @property
    def autoscaled(self) -> bool:
        """Its size is the autoscaler's to set (`scaleSettings.type: target_utilization`)."""
        return self.scale_settings is not None and self.scale_settings.type == "target_utilization"


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    namespace: str
    name: str
    data: MappingProxyType[str, str]  # decoded values (from `data` base64 or `stringData`)

    @property
    def keys(self) -> tuple[str, ...]:
        """The endpoint keys it holds: primaryKey and secondaryKey, those not empty."""
        return tuple(self.data[k] for k in ("primaryKey", "secondaryKey") if self.data.get(k))

    def __repr__(self) -> str:  # the names of its keys, never their values
        return f"Secret({self.namespace}/{self.name}, keys={sorted(self.data)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """One consistent, validated set of documents: what a source hands to the snapshot builder."""

    endpoints: tuple[OnlineEndpoint, ...] = ()
    deployments: tuple[OnlineDeployment, ...] = ()
    secrets: tuple[Secret, ...] = ()
