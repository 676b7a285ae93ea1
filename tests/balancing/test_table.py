"""RoutingTable.build: validated resources → an immutable routing snapshot, replicas kept across rebuilds."""

from __future__ import annotations

import base64
from collections import Counter

import pytest

from router.balancing.replicas import Replica
from router.balancing.table import RoutingTable
from tests.balancing.resources import (
    API,
    BLUE,
    GREEN,
    PRIMARY,
    SECONDARY,
    blue_green,
    deployment,
    endpoint,
    resources,
    secret,
)

# more keys as Azure ML makes them
SIGNING = "tB6nM2qW8eR4tY0uI5oP1aS7dF3gH9jK"
FROM_DATA = "fQ9wE3rT7yU1iO5pA2sD6fG0hJ4kL8zX"
UNRELATED = "uM1nB5vC9xZ3lK7jH2gF6dS0aP4oI8uY"
WRONG = "wR5tY9uI3oP7aS1dF6gH0jK4lZ8xC2vB"
RIGHT = "rG8hJ2kL6zX0cV4bN9mQ3wE7rT1yU5iO"


def test_endpoint_routes_and_deployment_routes() -> None:
    table = RoutingTable.build(blue_green())
    assert set(table.endpoints) == {"mnist"}
    route = table.endpoints["mnist"]
    assert route.name == "mnist" and route.auth_mode == "key"
    assert set(route.deployments) == {"blue", "green"}
    blue = route.deployments["blue"]
    assert blue.name == "blue" and blue.header_value == b"blue"
    assert blue.timeout == 2.5  # requestTimeoutMs 2500, in seconds
    assert blue.scoring_route == b"/predict"
    assert [r.url for r in blue.balancer.replicas] == BLUE
    green = route.deployments["green"]
    assert green.timeout == 5.0 and green.scoring_route == b"/score"
    assert [r.url for r in green.balancer.replicas] == GREEN
    assert "blue=90" in repr(route) and "green=10" in repr(route)


def test_the_endpoint_splits_traffic_by_its_weights() -> None:
    route = RoutingTable.build(blue_green()).endpoints["mnist"]
    chosen = []
    for _ in range(100):
        picked = route.pick_deployment()
        assert picked is not None
        chosen.append(picked.name)
    assert Counter(chosen) == {"blue": 90, "green": 10}


def test_a_deployment_without_traffic_is_routable_but_never_picked() -> None:
    table = RoutingTable.build(resources(endpoint(traffic="{blue: 100, green: 0}"), deployment("blue", BLUE),
                                         deployment("green", GREEN), secret(primaryKey=PRIMARY)))
    route = table.endpoints["mnist"]
    assert "green" in route.deployments  # pinnable with azureml-model-deployment
    assert {d.name for d in (route.pick_deployment() for _ in range(50)) if d is not None} == {"blue"}


def test_no_traffic_at_all_picks_no_deployment() -> None:
    table = RoutingTable.build(resources(endpoint(traffic="{blue: 0}"), deployment("blue", BLUE),
                                         secret(primaryKey=PRIMARY)))
    assert table.endpoints["mnist"].pick_deployment() is None


def test_an_endpoint_without_deployments_has_an_empty_route() -> None:
    table = RoutingTable.build(resources(endpoint(traffic="{}"), secret(primaryKey=PRIMARY)))
    assert table.endpoints["mnist"].deployments == {}
    assert table.endpoints["mnist"].pick_deployment() is None


@pytest.mark.parametrize(("keys", "expected"), [
    ({"primaryKey": PRIMARY, "secondaryKey": SECONDARY}, (PRIMARY.encode(), SECONDARY.encode())),
    ({"primaryKey": PRIMARY}, (PRIMARY.encode(),)),
    ({"secondaryKey": SECONDARY}, (SECONDARY.encode(),)),
    ({"primaryKey": PRIMARY, "secondaryKey": '""'}, (PRIMARY.encode(),)),
    ({"primaryKey": PRIMARY, "secondaryKey": SECONDARY, "signingKey": SIGNING}, (PRIMARY.encode(), SECONDARY.encode())),
])
def test_keys_come_from_the_secret(keys: dict[str, str], expected: tuple[bytes, ...]) -> None:
    assert RoutingTable.build(blue_green(keys=keys)).endpoints["mnist"].keys == expected


def test_keys_from_base64_secret_data() -> None:
    encoded = base64.b64encode(FROM_DATA.encode()).decode()
    text = f"""apiVersion: v1
kind: Secret
metadata: {{name: mnist-keys}}
data: {{primaryKey: {encoded}}}
"""
    table = RoutingTable.build(resources(endpoint(), deployment("blue", BLUE), deployment("green", GREEN), text))
    assert table.endpoints["mnist"].keys == (FROM_DATA.encode(),)


def test_no_keys_secret_ref_means_no_keys() -> None:
    table = RoutingTable.build(resources(endpoint(keys=None), deployment("blue", BLUE),
                                         deployment("green", GREEN), secret(primaryKey=UNRELATED)))
    assert table.endpoints["mnist"].keys == ()


def test_keys_are_looked_up_in_the_endpoint_namespace() -> None:
    table = RoutingTable.build(resources(
        endpoint(namespace="models"), deployment("blue", BLUE, namespace="models"),
        deployment("green", GREEN, namespace="models"),
        secret(primaryKey=WRONG, namespace="default"), secret(primaryKey=RIGHT, namespace="models")))
    assert table.endpoints["mnist"].keys == (RIGHT.encode(),)


def test_first_build_adds_every_replica_and_removes_none() -> None:
    table = RoutingTable.build(blue_green())
    assert sorted(r.url for r in table.added) == sorted(BLUE + GREEN)
    assert table.removed == ()
    assert set(table.replicas) == {("default", "blue", u) for u in BLUE} | {("default", "green", u) for u in GREEN}
    assert all(table.replicas[k].url == k[2] for k in table.replicas)
    assert not any(r.retired for r in table.added)


def test_rebuild_keeps_unchanged_replicas_and_reports_the_changes() -> None:
    first = RoutingTable.build(blue_green())
    kept = first.replicas[("default", "blue", BLUE[1])]
    kept.in_flight = 3  # state on the replica survives the reload
    gone = first.replicas[("default", "blue", BLUE[0])]
    green = first.replicas[("default", "green", GREEN[0])]

    second = RoutingTable.build(blue_green(blue=[BLUE[1], "http://127.0.0.1:5003"]), previous=first)

    blue_replicas = second.endpoints["mnist"].deployments["blue"].balancer.replicas
    assert blue_replicas[0] is kept and kept.in_flight == 3
    assert second.endpoints["mnist"].deployments["green"].balancer.replicas[0] is green
    assert [r.url for r in second.added] == ["http://127.0.0.1:5003"]
    assert second.removed == (gone,)
    assert gone.retired is True
    assert kept.retired is False and green.retired is False
    assert second.added[0].retired is False
    # the deployment's balancer (its queue) is carried over, now with the new replicas
    blue = second.endpoints["mnist"].deployments["blue"]
    assert blue.balancer is first.endpoints["mnist"].deployments["blue"].balancer


def test_rebuild_with_the_same_resources_changes_nothing() -> None:
    first = RoutingTable.build(blue_green())
    second = RoutingTable.build(blue_green(), previous=first)
    assert second.added == () and second.removed == ()
    assert all(second.replicas[k] is first.replicas[k] for k in first.replicas)
    assert second.replicas.keys() == first.replicas.keys()


def test_a_url_moving_to_another_deployment_is_a_new_replica() -> None:
    first = RoutingTable.build(blue_green())
    second = RoutingTable.build(blue_green(blue=BLUE[:1], green=[*GREEN, BLUE[1]]), previous=first)
    moved_old = first.replicas[("default", "blue", BLUE[1])]
    moved_new = second.replicas[("default", "green", BLUE[1])]
    assert moved_new is not moved_old
    assert second.added == (moved_new,) and second.removed == (moved_old,)
    assert moved_old.retired and not moved_new.retired


def test_removing_an_endpoint_retires_all_its_replicas() -> None:
    first = RoutingTable.build(blue_green())
    second = RoutingTable.build(resources(), previous=first)
    assert second.endpoints == {} and second.replicas == {}
    assert set(second.removed) == set(first.replicas.values())
    assert all(r.retired for r in second.removed)


def test_service_backends_take_their_replicas_from_the_given_addresses() -> None:
    docs = resources(endpoint(traffic="{blue: 100}"), f"""{API}
kind: OnlineDeployment
metadata: {{name: blue}}
spec:
  endpointName: mnist
  backend: {{service: {{name: mnist-blue, port: 5001}}}}
""", secret(primaryKey=PRIMARY))
    assert RoutingTable.build(docs).endpoints["mnist"].deployments["blue"].balancer.acquire(0.0) is None
    table = RoutingTable.build(docs, service_replicas={("default", "mnist-blue"): ("http://10.0.0.7:5001",)})
    replica = table.endpoints["mnist"].deployments["blue"].balancer.acquire(0.0)
    assert replica is not None and (replica.host, replica.port) == ("10.0.0.7", 5001)


def test_replica_parses_its_address() -> None:
    replica = Replica("http://model.example:5001")
    assert (replica.host, replica.port, replica.host_header) == ("model.example", 5001, b"model.example:5001")
    assert Replica("http://model.example").port == 80
    assert Replica("http://[::1]:5001").host_header == b"[::1]:5001"
    assert replica.in_flight == 0 and replica.retired is False and replica.pool is None


@pytest.mark.parametrize("url", ["https://127.0.0.1:5001", "127.0.0.1:5001", "http://", "ftp://host"])
def test_replica_refuses_what_is_not_an_http_address(url: str) -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        Replica(url)


def test_replica_repr_shows_url_and_in_flight() -> None:
    replica = Replica("http://127.0.0.1:5001")
    replica.in_flight = 4
    assert repr(replica).startswith("<Replica http://127.0.0.1:5001 in_flight=4 ")
    replica.retired = True
    assert "retired" in repr(replica)

