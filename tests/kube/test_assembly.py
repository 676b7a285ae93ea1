"""From watched objects to the routed state and each resource's report, without I/O."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from router.discovery.kubernetes.addresses import AddressPolicy
from router.discovery.kubernetes.api import ONLINE_DEPLOYMENTS, ONLINE_ENDPOINTS, SECRETS, Kind
from router.discovery.kubernetes.assembly import Assembly, Parsed, ResourceKey, assemble, parse_objects, ready_urls
from router.model import OnlineEndpoint
from tests.kube.cluster import deployment, endpoint, endpoint_slice, secret

Obj = dict[str, Any]
LOOPBACK = AddressPolicy(allow_loopback=True)  # the replicas of these tests share 127.0.0.1


def versioned(obj: Obj, version: int, created: str = "2026-01-01T00:00:00Z") -> Obj:
    """As the API server returns it: with a resourceVersion and a creation time."""
    obj = copy.deepcopy(obj)
    obj["metadata"].update(resourceVersion=str(version), creationTimestamp=created, namespace=obj["metadata"].get(
        "namespace", "default"))
    return obj


def build(*objects: Obj, previous: dict[ResourceKey, Parsed] | None = None,
          slices: list[Obj] | None = None) -> tuple[Assembly, dict[ResourceKey, Parsed]]:
    kinds: dict[str, Kind] = {"OnlineEndpoint": ONLINE_ENDPOINTS, "OnlineDeployment": ONLINE_DEPLOYMENTS,
                              "Secret": SECRETS}
    raw: dict[str, list[Obj]] = {kind: [] for kind in kinds}
    for number, obj in enumerate(objects, start=1):
        raw[obj["kind"]].append(versioned(obj, number) if "resourceVersion" not in obj["metadata"] else obj)
    parsed: dict[ResourceKey, Parsed] = {}
    for name, kind in kinds.items():
        parsed.update(parse_objects(kind, raw[name], previous or {}))
    return assemble(raw, parsed, [versioned(s, 1) for s in slices or []], LOOPBACK), parsed


BLUE_SLICES = [endpoint_slice("blue-a", "svc-blue", 5001), endpoint_slice("blue-b", "svc-blue", 5002)]


def cluster(traffic: dict[str, int] | None = None) -> list[Obj]:
    return [endpoint("demo", {"blue": 100, "green": 0} if traffic is None else traffic),
            deployment("blue", "demo", "svc-blue"), deployment("green", "demo", "svc-green"),
            secret("demo-keys", primaryKey="p", secondaryKey="s")]


# Replicas from EndpointSlices

def test_replicas_are_the_ready_not_terminating_addresses() -> None:
    slices = [endpoint_slice("a", "svc", 5001), endpoint_slice("b", "svc", 5002, ready=False),
              endpoint_slice("c", "svc", 5003, terminating=True), endpoint_slice("d", "svc", 5004, address="fd00::1")]
    unset = endpoint_slice("e", "svc", 5005, address="10.0.0.5")
    unset["endpoints"][0]["conditions"] = {}  # unset ready means ready
    assert ready_urls([*slices, unset], "http", LOOPBACK).urls == (
        "http://10.0.0.5:5005", "http://127.0.0.1:5001", "http://[fd00::1]:5004")


@pytest.mark.parametrize(("ports", "wanted", "expected"), [
    ([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}], "http", 8080),
    ([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}], 9090, 9090),
    ([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}], "grpc", None),
    ([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}], 80, None),
    ([{"name": "", "port": 8080}], 80, 8080),  # one port: the Service port 80 targets 8080
    ([{"name": "http", "port": 8080}], "other", None),
    ([{"name": "http", "port": 8080, "protocol": "UDP"}], "http", None),
])
def test_the_port_is_the_slice_port_matching_the_service_port(ports: list[Obj], wanted: int | str,
                                                              expected: int | None) -> None:
    piece = endpoint_slice("a", "svc", 1)
    piece["ports"] = ports
    assert ready_urls([piece], wanted, LOOPBACK).urls == ((f"http://127.0.0.1:{expected}",) if expected else ())


# The routed state

def test_a_consistent_cluster_is_routed_with_its_service_replicas() -> None:
    assembly, _ = build(*cluster(), slices=BLUE_SLICES)
    resources = assembly.resources
    assert [e.name for e in resources.endpoints] == ["demo"]
    assert sorted(d.name for d in resources.deployments) == ["blue", "green"]
    assert [s.name for s in resources.secrets] == ["demo-keys"]
    assert assembly.service_replicas == {("default", "svc-blue"): ("http://127.0.0.1:5001", "http://127.0.0.1:5002"),
                                         ("default", "svc-green"): ()}
    assert assembly.services == {("default", "svc-blue"), ("default", "svc-green")}
    assert assembly.secrets == {("default", "demo-keys")}
    report = assembly.reports[("OnlineEndpoint", "default", "demo")]
    assert report.ready and report.ready_replicas == 2 and dict(report.deployments) == {"blue": 2, "green": 0}
    green = assembly.reports[("OnlineDeployment", "default", "green")]
    assert not green.ready and green.waiting == ("no ready replica in the EndpointSlices of Service 'svc-green'",)


def test_an_invalid_endpoint_is_rejected_alone_naming_its_field() -> None:
    bad = endpoint("broken", {"blue": 150}, keys="demo-keys")
    assembly, _ = build(*cluster(), bad, slices=BLUE_SLICES)
    assert [e.name for e in assembly.resources.endpoints] == ["demo"]
    report = assembly.reports[("OnlineEndpoint", "default", "broken")]
    assert not report.serving and not report.ready
    assert report.problems == ("OnlineEndpoint default/broken: spec.traffic.blue: must be an integer from 0 to 100, "
                               "got 150",)
    assert assembly.reports[("OnlineEndpoint", "default", "demo")].ready


def test_the_last_accepted_version_keeps_serving_an_invalid_edit() -> None:
    good = versioned(endpoint("demo", {"blue": 100}), 1)
    _, parsed = build(good, *cluster()[1:])
    bad = versioned(endpoint("demo", {"blue": 50}), 9)
    assembly, parsed_again = build(bad, *cluster()[1:], previous=parsed)
    (served,) = assembly.resources.endpoints
    assert dict(served.traffic) == {"blue": 100}
    report = assembly.reports[("OnlineEndpoint", "default", "demo")]
    assert report.serving and "spec.traffic: percentages must sum to 0 or 100, got 50" in report.problems[0]
    # the same version is not validated again, and a deletion forgets the last accepted one
    assert parsed_again[("OnlineEndpoint", "default", "demo")].version == "9"
    assembly, _ = build(*cluster()[1:], previous=parsed_again)
    assert assembly.resources.endpoints == ()


def test_references_to_rejected_objects_point_to_their_status() -> None:
    objects = [endpoint("demo", {"blue": 100, "green": 0}, keys="demo-keys"), secret("demo-keys", primaryKey="p"),
               deployment("blue", "demo", "svc-blue", timeout_ms=0), endpoint("other", {"x": 50}),
               deployment("orphan", "other", "svc-blue")]
    assembly, _ = build(*objects, slices=BLUE_SLICES)
    assert assembly.reports[("OnlineEndpoint", "default", "demo")].waiting == (
        "spec.traffic.blue: deployment 'blue' is not routed (see its status); its 100% is not routed",)
    assert assembly.reports[("OnlineDeployment", "default", "orphan")].waiting == (
        "spec.endpointName: OnlineEndpoint 'other' is not routed (see its status)",)


def test_a_deployment_without_its_endpoint_waits() -> None:
    assembly, _ = build(deployment("blue", "demo", "svc-blue"), slices=BLUE_SLICES)
    assert assembly.resources.deployments == ()
    report = assembly.reports[("OnlineDeployment", "default", "blue")]
    assert report.waiting == ("spec.endpointName: no OnlineEndpoint 'demo' in namespace 'default'",)
    assert report.ready_replicas == 2 and assembly.services == {("default", "svc-blue")}  # watched already


def test_shares_of_missing_or_foreign_deployments_are_dropped_and_reported() -> None:
    objects = [endpoint("demo", {"blue": 80, "gone": 10, "red": 10}, mirrorTraffic={"shadow": 5}),
               deployment("blue", "demo", "svc-blue"), endpoint("other", {}), deployment("red", "other", "svc-red"),
               secret("demo-keys", primaryKey="p"), secret("other-keys", primaryKey="p")]
    assembly, _ = build(*objects, slices=BLUE_SLICES)
    demo = next(e for e in assembly.resources.endpoints if e.name == "demo")
    assert dict(demo.traffic) == {"blue": 80} and dict(demo.mirror_traffic) == {}
    assert assembly.reports[("OnlineEndpoint", "default", "demo")].waiting == (
        "spec.traffic.gone: no OnlineDeployment 'gone' in namespace 'default'; its 10% is not routed",
        "spec.traffic.red: deployment 'red' belongs to endpoint 'other'; its 10% is not routed",
        "spec.mirrorTraffic.shadow: no OnlineDeployment 'shadow' in namespace 'default'; its 5% is not routed")


def test_a_missing_keys_secret_refuses_every_call_and_says_so() -> None:
    assembly, _ = build(*cluster()[:3], slices=BLUE_SLICES)
    (demo,) = assembly.resources.endpoints
    assert isinstance(demo, OnlineEndpoint) and assembly.resources.secrets == ()
    assert assembly.reports[("OnlineEndpoint", "default", "demo")].waiting == (
        "spec.keysSecretRef: no Secret 'demo-keys' in namespace 'default': every call is refused",)


def test_of_two_endpoints_with_one_name_the_older_is_routed() -> None:
    newer = versioned(endpoint("demo", {}, namespace="team-b"), 5, created="2026-03-01T00:00:00Z")
    older = versioned(endpoint("demo", {}, namespace="team-a"), 6, created="2026-02-01T00:00:00Z")
    assembly, _ = build(newer, older)
    assert [e.namespace for e in assembly.resources.endpoints] == ["team-a"]
    report = assembly.reports[("OnlineEndpoint", "team-b", "demo")]
    assert not report.serving and "endpoint name also used in namespace 'team-a'" in report.problems[0]


def test_one_service_with_two_ports_is_refused_for_the_second_deployment() -> None:
    objects = [endpoint("demo", {"blue": 100}), deployment("blue", "demo", "svc", port="http"),
               deployment("green", "demo", "svc", port=9000), secret("demo-keys", primaryKey="p")]
    assembly, _ = build(*objects)
    assert [d.name for d in assembly.resources.deployments] == ["blue"]
    assert "is used with port 'http' by deployment 'blue'" in assembly.reports[
        ("OnlineDeployment", "default", "green")].waiting[0]
