"""From watched objects to the routed state and each resource's report, without I/O."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from router.discovery.kubernetes.addresses import AddressPolicy
from router.discovery.kubernetes.api import ONLINE_DEPLOYMENTS, ONLINE_ENDPOINTS, SECRETS, Kind
from router.discovery.kubernetes.assembly import Assembly, Parsed, ResourceKey, assemble, parse_objects, ready_urls
from router.model import OnlineEndpoint
from tests.kube.cluster import deployment, endpoint, endpoint_slice, secret

# endpoint keys as Azure ML makes them: 32 characters (the router refuses fewer than 16)
PRIMARY = "pK7vQ2xW9mL4nC8rB5hD1jF6gS3tY0aZ"
SECONDARY = "sE4uR8yT2iO6pA1sD5fG9hJ3kL7zX0cV"

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
            secret("demo-keys", primaryKey=PRIMARY, secondaryKey=SECONDARY)]


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


def test_a_deployments_report_says_whether_its_accepted_spec_is_autoscaled() -> None:
    scaled = deployment("blue", "demo", "svc-blue")
    scaled["spec"]["scaleSettings"] = {"type": "target_utilization", "maxInstances": 3,
                                       "scaleTargetRef": {"kind": "Deployment", "name": "blue"}}
    assembly, _ = build(cluster()[0], scaled, *cluster()[2:])
    assert assembly.reports[("OnlineDeployment", "default", "blue")].autoscaled
    assert not assembly.reports[("OnlineDeployment", "default", "green")].autoscaled
    assert not assembly.reports[("OnlineEndpoint", "default", "demo")].autoscaled


def test_references_to_rejected_objects_point_to_their_status() -> None:
    objects = [endpoint("demo", {"blue": 100, "green": 0}, keys="demo-keys"), secret("demo-keys", primaryKey=PRIMARY),
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
               secret("demo-keys", primaryKey=PRIMARY), secret("other-keys", primaryKey=PRIMARY)]
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
               deployment("green", "demo", "svc", port=9000), secret("demo-keys", primaryKey=PRIMARY)]
    assembly, _ = build(*objects)
    assert [d.name for d in assembly.resources.deployments] == ["blue"]
    assert "is used with port 'http' by deployment 'blue'" in assembly.reports[
        ("OnlineDeployment", "default", "green")].waiting[0]


# Replica addresses (a slice's writer must not point scoring traffic anywhere it likes)

def test_only_ip_addresses_a_pod_may_serve_on_become_replicas_and_each_refusal_is_named() -> None:
    own = AddressPolicy(own=frozenset({ipaddress.ip_address("10.1.2.3")}))
    fqdn = endpoint_slice("f", "svc", 80, address="metadata.example")
    fqdn["addressType"] = "FQDN"
    slices = [endpoint_slice("a", "svc", 80, address="10.0.0.7"), endpoint_slice("b", "svc", 80),
              endpoint_slice("c", "svc", 80, address="169.254.169.254"), endpoint_slice("d", "svc", 80, address="::1"),
              endpoint_slice("e", "svc", 80, address="fe80::1"), endpoint_slice("g", "svc", 80, address="10.1.2.3"),
              endpoint_slice("h", "svc", 80, address="::ffff:127.0.0.1"), fqdn]
    found = ready_urls(slices, "http", own)
    assert found.urls == ("http://10.0.0.7:80",)
    assert found.refused == (
        "EndpointSlice default/b: address 127.0.0.1 refused: a loopback address (--allow-loopback-replicas "
        "admits it, for replicas on the router's machine)",
        "EndpointSlice default/c: address 169.254.169.254 refused: a link-local address (cloud metadata "
        "services live there)",
        "EndpointSlice default/d: address ::1 refused: a loopback address (--allow-loopback-replicas admits it, "
        "for replicas on the router's machine)",
        "EndpointSlice default/e: address fe80::1 refused: a link-local address (cloud metadata services live "
        "there)",
        "EndpointSlice default/f: addressType FQDN: refused, only IP addresses become replicas",
        "EndpointSlice default/g: address 10.1.2.3 refused: one of the router's own addresses "
        "(--allow-loopback-replicas admits it)",
        "EndpointSlice default/h: address ::ffff:127.0.0.1 refused: a loopback address (--allow-loopback-replicas "
        "admits it, for replicas on the router's machine)")
    # --allow-loopback-replicas: loopback and the router's own addresses; never link-local, never a name
    allowed = ready_urls(slices, "http", AddressPolicy(allow_loopback=True, own=own.own))
    assert allowed.urls == ("http://10.0.0.7:80", "http://10.1.2.3:80", "http://127.0.0.1:80",
                            "http://[::1]:80", "http://[::ffff:127.0.0.1]:80")
    assert [r.split(":")[0] for r in allowed.refused] == ["EndpointSlice default/c", "EndpointSlice default/e",
                                                          "EndpointSlice default/f"]


def test_a_refused_address_is_named_in_the_deployments_status_and_slices_of_other_namespaces_are_ignored() -> None:
    intruder = endpoint_slice("svc-blue-x", "svc-blue", 5009, address="10.9.9.9", namespace="elsewhere")
    metadata = endpoint_slice("svc-blue-m", "svc-blue", 80, address="169.254.169.254")
    assembly, _ = build(*cluster(), slices=[*BLUE_SLICES, intruder, metadata])
    assert assembly.service_replicas[("default", "svc-blue")] == ("http://127.0.0.1:5001", "http://127.0.0.1:5002")
    blue = assembly.reports[("OnlineDeployment", "default", "blue")]
    assert blue.ready_replicas == 2 and not blue.ready
    assert blue.waiting == ("EndpointSlice default/svc-blue-m: address 169.254.169.254 refused: a link-local "
                            "address (cloud metadata services live there)",)
    assert assembly.refused == set(blue.waiting)


# One replica per pod

def dual_stack(pod: str, v4: str, v6: str, port: int = 8000) -> list[Obj]:
    """A pod of a dual-stack Service, in the IPv4 and the IPv6 slice, as the EndpointSlice controller writes it."""
    pieces = []
    for family, address in (("v4", v4), ("v6", v6)):
        piece = endpoint_slice(f"svc-{family}-{pod}", "svc", port, address=address)
        piece["endpoints"][0]["targetRef"] = {"kind": "Pod", "namespace": "default", "name": pod, "uid": f"u-{pod}"}
        pieces.append(piece)
    return pieces


def test_a_dual_stack_pod_is_one_replica_at_the_preferred_family() -> None:
    slices = [*dual_stack("pod-a", "10.0.0.1", "fd00::1"), *dual_stack("pod-b", "10.0.0.2", "fd00::2")]
    v6_only = endpoint_slice("svc-v6-c", "svc", 8000, address="fd00::3")
    v6_only["endpoints"][0]["hostname"] = "pod-c"
    assert ready_urls([*slices, v6_only], "http").urls == (
        "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://[fd00::3]:8000")
    assert ready_urls([*slices, v6_only], "http", family="IPv6").urls == (
        "http://[fd00::1]:8000", "http://[fd00::2]:8000", "http://[fd00::3]:8000")
    objects = [endpoint("demo", {"blue": 100}), deployment("blue", "demo", "svc"), secret("demo-keys", primaryKey="p")]
    assembly, _ = build(*objects, slices=slices)
    assert assembly.reports[("OnlineEndpoint", "default", "demo")].ready_replicas == 2


# A Secret refused after a rotation

def test_a_refused_secret_update_revokes_the_keys_it_removed_or_changed() -> None:
    leaked, kept = "leaked-key-0123456789", "kept-key-0123456789"
    objects = cluster()[:3]
    _, parsed = build(*objects, versioned(secret("demo-keys", primaryKey=leaked, secondaryKey=kept), 10))
    rotated = versioned(secret("demo-keys", secondaryKey=kept), 11)
    rotated["data"]["tokenSigningKey"] = "not base64!"  # one invalid value: the version is refused
    assembly, _ = build(*objects, rotated, previous=parsed, slices=BLUE_SLICES)
    (served,) = assembly.resources.secrets
    assert served.keys == (kept,)  # the removed key stops working at once
    report = assembly.reports[("OnlineEndpoint", "default", "demo")]
    assert not report.ready and report.waiting == (
        "spec.keysSecretRef: Secret 'demo-keys' is rejected (see the router's log): only keys it still holds "
        "unchanged work, 1 of them",)
    assert leaked not in repr(report) and kept not in repr(report)

    changed = versioned(secret("demo-keys", primaryKey="new-primary-0123456789", secondaryKey=kept), 12)
    changed["data"]["tokenSigningKey"] = "not base64!"
    assembly, _ = build(*objects, changed, previous=parsed, slices=BLUE_SLICES)
    assert assembly.resources.secrets[0].keys == (kept,)  # a changed value revokes the old one too


def service(name: str, *ports: tuple[str, int, int | str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for n, p, t in ports]}}


def test_a_service_port_number_is_mapped_through_the_service_to_the_slices_target_port() -> None:
    # slices list target ports under the Service port's name: 80 → 8080 "http", 9090 → 9100 "metrics"
    piece = endpoint_slice("svc-a", "svc", 8080, address="10.0.0.1")
    piece["ports"] = [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]
    objects = [endpoint("demo", {"blue": 100}), deployment("blue", "demo", "svc", port=80),
               secret("demo-keys", primaryKey="p")]
    kinds = {"OnlineEndpoint": ONLINE_ENDPOINTS, "OnlineDeployment": ONLINE_DEPLOYMENTS, "Secret": SECRETS}
    raw = {kind: [versioned(o, n) for n, o in enumerate(objects, 1) if o["kind"] == kind] for kind in kinds}
    parsed = {k: v for name, kind in kinds.items() for k, v in parse_objects(kind, raw[name], {}).items()}

    mapped = assemble(raw, parsed, [versioned(piece, 1)], services=[service("svc", ("http", 80, 8080),
                                                                             ("metrics", 9090, "metrics"))])
    assert mapped.service_replicas == {("default", "svc"): ("http://10.0.0.1:8080",)}
    assert mapped.port_lookups == {"default"}  # the Services of that namespace are watched for it
    # without the Service, 80 is matched against target ports: nothing (the old misreading)
    assert assemble(raw, parsed, [versioned(piece, 1)]).service_replicas == {("default", "svc"): ()}
    missing = assemble(raw, parsed, [versioned(piece, 1)], services=[service("svc", ("http", 8000, 8080))])
    assert missing.reports[("OnlineDeployment", "default", "blue")].waiting[0] == \
        "spec.backend.service.port: Service 'svc' has no TCP port 80"


def test_a_reference_the_api_server_refuses_is_said_to_be_unreadable_not_missing() -> None:
    objects = [endpoint("demo", {"blue": 100}), deployment("blue", "demo", "svc-blue")]
    kinds = {"OnlineEndpoint": ONLINE_ENDPOINTS, "OnlineDeployment": ONLINE_DEPLOYMENTS, "Secret": SECRETS}
    raw = {kind: [versioned(o, n) for n, o in enumerate(objects, 1) if o["kind"] == kind] for kind in kinds}
    parsed = {k: v for name, kind in kinds.items() for k, v in parse_objects(kind, raw[name], {}).items()}
    refused = "GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices: 403 forbidden"
    assembly = assemble(raw, parsed, [], unreadable={("EndpointSlice", "default", ""): refused,
                                                     ("Secret", "default", "demo-keys"): "403 forbidden"})
    assert assembly.reports[("OnlineDeployment", "default", "blue")].waiting == (
        f"no ready replica in the EndpointSlices of Service 'svc-blue': they cannot be read: {refused}",)
    assert assembly.reports[("OnlineEndpoint", "default", "demo")].waiting[-1] == (
        "spec.keysSecretRef: Secret 'demo-keys' in namespace 'default' cannot be read: 403 forbidden: "
        "every call is refused")
