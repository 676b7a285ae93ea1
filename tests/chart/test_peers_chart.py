"""With inferenceLoadBalancerHA the router replicas share slots: the chart gives them the peer port, a
headless Service to find each other, a generated key, a NetworkPolicy that admits router pods only to the
peer port, and RBAC for their Leases. One replica gets none of it."""

from __future__ import annotations

import base64

import helm_python as helm
import pytest

from router import settings as router_settings
from tests.chart.render import NAME, NAMESPACE, container, render, validate, values

PEERS = [("Service", f"{NAME}-peers"), ("Secret", f"{NAME}-peer-key"), ("NetworkPolicy", f"{NAME}-peers"),
         ("Role", f"{NAME}-peers"), ("RoleBinding", f"{NAME}-peers")]


def test_ha_routers_find_each_other_on_the_peer_port_through_a_headless_service() -> None:
    objects = render(values())
    for key in PEERS:
        validate(objects[key])
    service = objects[("Service", f"{NAME}-peers")]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "peer", "port": 9091, "targetPort": "peer", "protocol": "TCP"}]
    assert service["spec"]["selector"] == objects[("Deployment", NAME)]["spec"]["selector"]["matchLabels"]
    public = objects[("Service", NAME)]
    assert not {9091, "peer"} & {v for p in public["spec"]["ports"] for v in (p["port"], p["targetPort"])}
    router = container(objects)
    assert {"name": "peer", "containerPort": 9091, "protocol": "TCP"} in router["ports"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in router["env"]}
    assert env["ROUTER_PEER_SERVICE"] == f"{NAME}-peers"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # each pod its own Lease
    assert env["ROUTER_PEER_KEY_FILE"] == "/etc/inference-router/peer/key"
    assert {"name": "peer-key", "mountPath": "/etc/inference-router/peer", "readOnly": True} in router["volumeMounts"]
    got = router_settings.RouterSettings(peer_service=env["ROUTER_PEER_SERVICE"], peer_key_file="/k",
                                         peer_timeout=float(env["ROUTER_PEER_TIMEOUT"]),
                                         peer_port=int(env["ROUTER_PEER_PORT"]), allow_insecure_connections=True)
    got.check()


def test_the_peer_key_is_generated_long_and_random() -> None:
    first = base64.b64decode(render(values())[("Secret", f"{NAME}-peer-key")]["data"]["key"])
    second = base64.b64decode(render(values())[("Secret", f"{NAME}-peer-key")]["data"]["key"])
    assert len(first) == 48 and first.isalnum() and first != second  # kept on upgrade by `lookup` in a cluster


def test_only_router_pods_reach_the_peer_port() -> None:
    objects = render(values())
    policy = objects[("NetworkPolicy", f"{NAME}-peers")]
    selector = objects[("Deployment", NAME)]["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": selector}}],
                                          "ports": [{"port": 9091, "protocol": "TCP"}]}]
    # the admin policy (its own test) opens the scoring ports; without it, this one must, or it would close them
    alone = render(values(adminNetworkPolicy={"enabled": False}))[("NetworkPolicy", f"{NAME}-peers")]
    validate(alone)
    assert alone["spec"]["ingress"][1] == {"ports": [{"port": p, "protocol": "TCP"} for p in (8080, 8443, 9090)]}


def test_rbac_for_the_leases_in_the_release_namespace_only() -> None:
    objects = render(values())
    role = objects[("Role", f"{NAME}-peers")]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "list", "create", "update", "delete"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}]
    binding = objects[("RoleBinding", f"{NAME}-peers")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{NAME}-peers"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]


def test_one_router_has_no_peers() -> None:
    objects = render(values(ha=False))
    assert not [key for key in PEERS if key in objects]
    router = container(objects)
    assert "peer" not in {p["name"] for p in router["ports"]}
    assert not [e for e in router["env"] if e["name"].startswith("ROUTER_PEER")]


@pytest.mark.parametrize("timeout", [2, "5"])
def test_a_bad_peer_timeout_is_refused(timeout: object) -> None:
    with pytest.raises(helm.HelmError) as refused:
        render(values(peers={"timeoutSeconds": timeout}))
    assert "timeoutSeconds" in str(refused.value)
