"""What the server asks of a source of resources, whether a file or a cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from router.model import Resources

ServiceKey = tuple[str, str]  # namespace, Service name
ServiceReplicas = Mapping[ServiceKey, tuple[str, ...]]  # a Service's ready replica URLs


class Apply(Protocol):
    """Swap in a new state; raises ConfigError when it cannot be served (the old one stays)."""

    def __call__(self, resources: Resources, service_replicas: ServiceReplicas | None = None) -> None: ...


class Source(Protocol):
    @property
    def synced(self) -> bool:
        """True once the whole state has been read and applied: the router may report ready."""
        ...

    async def load(self) -> Resources:
        """The state to start with (a ConfigError stops the start); a cluster source connects and
        returns nothing yet: its first full sync comes through `watch`."""
        ...

    async def watch(self, apply: Apply) -> None:
        """Hand every later valid state to `apply`, until cancelled."""
        ...
