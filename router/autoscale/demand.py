"""Demand: per deployment, requests in flight at replicas plus requests queued, as routers report it.

`DemandSource` is the narrow protocol the autoscaler reads. `TableDemand` implements it over this
router's data plane, reading what the routing table's balancers already count (the same numbers
as the `in_flight` and `queue_length` metrics and `/debug/deployments`): nothing is added to the
request path. With several routers, each one's report is summed by `combine` (the peers package
hands it every router's latest report); a forwarded request is counted by the router holding its
slot only, so it counts once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from router.balancing.table import DeploymentKey, RoutingTable


@dataclass(frozen=True, slots=True)
class Demand:
    busy: int = 0  # requests (and mirror copies) holding a replica slot
    queued: int = 0  # requests waiting for a slot
    ready: int = 0  # replicas routed to

    @property
    def total(self) -> int:
        return self.busy + self.queued


Report = Mapping[DeploymentKey, Demand]


class DemandSource(Protocol):
    def demand(self) -> Report:
        """Each deployment's demand now."""
        ...


class TableDemand:
    """This router's demand, read from the routing table in use when asked."""

    def __init__(self, table: Callable[[], RoutingTable | None]) -> None:
        self._table = table

    def demand(self) -> Report:
        table = self._table()
        if table is None:
            return {}
        return {key: Demand(sum(r.in_flight for r in balancer.replicas), len(balancer.queue), len(balancer.replicas))
                for key, balancer in table.balancers.items()}

    def __repr__(self) -> str:
        return f"<TableDemand {dict(self.demand())}>"


def combine(reports: Iterable[Report]) -> dict[DeploymentKey, Demand]:
    """Every router's report as one: busy and queued add up; ready replicas are the most any router sees
    (they route to the same replicas, so they do not add up)."""
    total: dict[DeploymentKey, Demand] = {}
    for report in reports:
        for key, d in report.items():
            seen = total.get(key, Demand())
            total[key] = Demand(seen.busy + d.busy, seen.queued + d.queued, max(seen.ready, d.ready))
    return total


class CombinedDemand:
    """The demand of several routers: this one's, and the latest reports of the others (from the peers)."""

    def __init__(self, local: DemandSource, others: Callable[[], Iterable[Report]]) -> None:
        self.local = local
        self.others = others

    def demand(self) -> Report:
        return combine([self.local.demand(), *self.others()])
