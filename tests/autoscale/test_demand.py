"""Demand as the routers report it: this router's from its routing table, several routers' summed."""

from __future__ import annotations

from router.autoscale.demand import CombinedDemand, Demand, TableDemand, combine
from router.balancing.table import RoutingTable
from router.model import OnlineDeployment, OnlineEndpoint, RequestSettings, Resources

BLUE, GREEN = ("models", "blue"), ("models", "green")


def test_this_routers_demand_is_what_its_balancers_hold() -> None:
    resources = Resources(
        endpoints=(OnlineEndpoint(namespace="models", name="demo"),),
        deployments=(OnlineDeployment(namespace="models", name="blue", endpoint_name="demo",
                                      urls=("http://10.0.0.1:80", "http://10.0.0.2:80"),
                                      request_settings=RequestSettings(max_concurrent_requests_per_instance=2)),))
    table = RoutingTable.build(resources)
    balancer = table.balancers[BLUE]
    balancer.acquire(0.0)
    balancer.acquire(0.0)
    balancer.acquire(0.0)
    balancer.enqueue(object())
    assert TableDemand(lambda: table).demand() == {BLUE: Demand(busy=3, queued=1, ready=2)}
    assert Demand(3, 1, 2).total == 4


def test_every_routers_report_summed_once() -> None:
    a = {BLUE: Demand(busy=2, queued=1, ready=3)}
    b = {BLUE: Demand(busy=1, queued=0, ready=2), GREEN: Demand(busy=4, queued=4, ready=1)}
    assert combine([a, b]) == {BLUE: Demand(busy=3, queued=1, ready=3), GREEN: Demand(busy=4, queued=4, ready=1)}
    assert combine([]) == {}

    class Local:
        def demand(self) -> dict[tuple[str, str], Demand]:
            return a

    assert CombinedDemand(Local(), lambda: [b]).demand() == combine([a, b])
