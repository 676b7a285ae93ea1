"""The chart keeps the admin port to itself: the router binds it on the pod's address, and a
NetworkPolicy admits it only from the namespaces given in `adminNetworkPolicy.namespaces`, while the
scoring ports stay open to all."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import NAME, container, render, validate, values

POLICY = ("NetworkPolicy", f"{NAME}-admin")
HELM_TEST_RULE = {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "router",
                                                            "app.kubernetes.io/component": "helm-test"}}}],
                  "ports": [{"port": 9090, "protocol": "TCP"}]}


def test_the_admin_port_binds_the_pod_ip_and_loopback() -> None:
    env = container(render(values()))["env"]
    names = [e["name"] for e in env]
    pod_ip, admin_host = env[names.index("POD_IP")], env[names.index("ROUTER_ADMIN_HOST")]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert admin_host["value"] == "$(POD_IP),127.0.0.1" and names.index("POD_IP") < names.index("ROUTER_ADMIN_HOST")


def test_by_default_no_pod_reaches_the_admin_port_and_every_client_the_scoring_ports() -> None:
    objects = render(values())
    policy = objects[POLICY]
    validate(policy)
    selector = objects[("Deployment", NAME)]["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    scoring, helm_test = policy["spec"]["ingress"]  # only the chart's `helm test` pod reaches port 9090
    assert "from" not in scoring
    assert scoring["ports"] == [{"port": 8080, "protocol": "TCP"}, {"port": 8443, "protocol": "TCP"}]
    assert helm_test == HELM_TEST_RULE


def test_the_helm_test_pod_is_the_one_the_admin_rule_admits_and_no_router_pod() -> None:
    objects = render(values())
    (test_pod,) = [obj for (kind, _), obj in objects.items() if kind == "Pod"]
    labels = test_pod["metadata"]["labels"]
    assert HELM_TEST_RULE["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert test_pod["metadata"]["namespace"] == objects[POLICY]["metadata"]["namespace"]  # podSelector: same one
    router_selector = objects[("Deployment", NAME)]["spec"]["selector"]["matchLabels"]
    assert not router_selector.items() <= labels.items()  # neither the Service nor the PDB counts it


def test_the_admin_port_admits_the_namespaces_given() -> None:
    policy = render(values(adminNetworkPolicy={"namespaces": ["monitoring", "token-clients"]}))[POLICY]
    validate(policy)
    scoring, helm_test, admin = policy["spec"]["ingress"]
    assert "from" not in scoring and helm_test == HELM_TEST_RULE
    assert admin == {"from": [namespace("monitoring"), namespace("token-clients")],
                     "ports": [{"port": 9090, "protocol": "TCP"}]}


def namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def test_the_policy_can_be_left_out() -> None:
    assert POLICY not in render(values(adminNetworkPolicy={"enabled": False}))


@pytest.mark.parametrize("given", [{"namespaces": ["Monitoring"]}, {"namespaces": "monitoring"},
                                   {"namespace": ["monitoring"]}])
def test_a_bad_namespace_list_is_refused(given: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError) as refused:
        render(values(adminNetworkPolicy=given))
    assert "adminNetworkPolicy" in str(refused.value)
