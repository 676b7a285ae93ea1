"""The chart behind a cloud load balancer: the Service's traffic policy, source ranges, address and
annotations, PROXY protocol (the AWS annotation and the router's settings), NOTES.txt's scoring URL
per Service type, and the `helm test` pod, whose check runs here against a real router.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import NAME, NAMESPACE, RELEASE, chart, container, render, validate, values
from tests.routing import Config, closed_port, one_shot_replica, start_router
from tests.settings_helpers import settings

AWS_PROXY = "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"


def service(objects: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    validate(objects[("Service", NAME)])
    return objects[("Service", NAME)]


def env_of(objects: dict[Any, dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}


def refusal(given: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as refused:
        render(given)
    return str(refused.value)


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_external_traffic_policy_local_keeps_client_addresses_on_external_services(service_type: str) -> None:
    spec = service(render(values(service_type, service={"externalTrafficPolicy": "Local"})))["spec"]
    assert spec["externalTrafficPolicy"] == "Local"
    assert "externalTrafficPolicy" not in service(render(values(service_type)))["spec"]  # Kubernetes' default


def test_external_traffic_policy_is_refused_on_a_cluster_ip_service() -> None:
    message = refusal(values("ClusterIP", service={"externalTrafficPolicy": "Local"}))
    assert "service.externalTrafficPolicy=Local is for NodePort and LoadBalancer" in message
    assert "externalTrafficPolicy" in refusal(values(service={"externalTrafficPolicy": "local"}))  # schema


def test_source_ranges_and_address_of_the_load_balancer() -> None:
    spec = service(render(values(service={"loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::/32"],
                                          "loadBalancerIP": "198.51.100.10"})))["spec"]
    assert spec["loadBalancerSourceRanges"] == ["203.0.113.0/24", "2001:db8::/32"]
    assert spec["loadBalancerIP"] == "198.51.100.10"
    plain = service(render(values()))["spec"]
    assert "loadBalancerSourceRanges" not in plain and "loadBalancerIP" not in plain


@pytest.mark.parametrize("given", [{"loadBalancerSourceRanges": ["10.0.0.0/8"]}, {"loadBalancerIP": "10.0.0.1"}])
def test_load_balancer_fields_are_refused_on_other_service_types(given: dict[str, Any]) -> None:
    assert "need inferenceRouterServiceType=LoadBalancer, not NodePort" in refusal(values("NodePort", service=given))


@pytest.mark.parametrize("given", [{"loadBalancerSourceRanges": ["10.0.0.0"]}, {"loadBalancerSourceRanges": "10/8"},
                                   {"loadBalancerIP": "lb.example.com"}, {"annotations": {"a": 1}},
                                   {"sourceRanges": []}])
def test_bad_service_values_are_refused_by_the_schema(given: dict[str, Any]) -> None:
    assert "service" in refusal(values(service=given))


def test_extra_annotations_join_the_charts_own_and_win_on_the_same_key() -> None:
    annotations = service(render(values(internal="azure", service={"annotations": {
        "service.beta.kubernetes.io/azure-pip-name": "router-ip",
        "service.beta.kubernetes.io/azure-load-balancer-internal": "false"}})))["metadata"]["annotations"]
    assert annotations == {"service.beta.kubernetes.io/azure-pip-name": "router-ip",
                           "service.beta.kubernetes.io/azure-load-balancer-internal": "false"}


def test_proxy_protocol_turns_it_on_at_the_aws_load_balancer_and_in_the_router() -> None:
    objects = render(values(internal="aws", proxyProtocol=True, trustedProxies=["10.0.0.0/16", "fd00::/8"]))
    assert service(objects)["metadata"]["annotations"] == {
        AWS_PROXY: "*", "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}
    env = env_of(objects)
    assert env["ROUTER_PROXY_PROTOCOL"] == "true" and env["ROUTER_TRUSTED_PROXIES"] == "10.0.0.0/16,fd00::/8"
    got = settings(environ=env)
    assert got.proxy_protocol and got.trusted_proxies == "10.0.0.0/16,fd00::/8"
    for obj in objects.values():
        validate(obj)


def test_proxy_protocol_on_a_node_port_service_is_the_routers_only() -> None:
    objects = render(values("NodePort", proxyProtocol=True, trustedProxies=["10.0.0.0/16"]))
    assert AWS_PROXY not in service(objects).get("metadata", {}).get("annotations", {})
    assert env_of(objects)["ROUTER_PROXY_PROTOCOL"] == "true"


def test_without_proxy_protocol_trusted_proxies_are_still_passed_on() -> None:
    objects = render(values(trustedProxies=["192.0.2.0/24"]))
    env = env_of(objects)
    assert env["ROUTER_TRUSTED_PROXIES"] == "192.0.2.0/24" and "ROUTER_PROXY_PROTOCOL" not in env
    assert AWS_PROXY not in service(objects).get("metadata", {}).get("annotations", {})
    assert "ROUTER_TRUSTED_PROXIES" not in env_of(render(values()))


def test_proxy_protocol_without_trusted_proxies_is_refused_as_the_router_would() -> None:
    assert "proxyProtocol=true needs trustedProxies" in refusal(values(proxyProtocol=True))
    assert "trustedProxies" in refusal(values(proxyProtocol=True, trustedProxies=["not-a-network"]))


def notes(given: dict[str, Any]) -> str:
    files = chart().render(given, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def test_notes_print_the_scoring_url_for_each_service_type() -> None:
    score = "/api/v1/endpoint/<endpoint>/score"
    lb = notes(values())
    assert f"https://scoring.example.com{score}" in lb
    assert f"kubectl get service {NAME} -n {NAMESPACE} -o jsonpath=" in lb and "loadBalancer.ingress" in lb
    lb_plain = notes(values(tls="insecure"))
    assert f"http://$ADDRESS{score}" in lb_plain and "https://" not in lb_plain
    node_port = notes(values("NodePort", tls="insecure"))
    assert f"http://<node address>:$PORT{score}" in node_port and ".nodePort" in node_port
    cluster = notes(values("ClusterIP"))
    assert f"https://{NAME}.{NAMESPACE}.svc{score}" in cluster
    assert f"kubectl port-forward -n {NAMESPACE} service/{NAME} 8443:443" in cluster
    for text in (lb, lb_plain, node_port, cluster):
        assert f"helm test {RELEASE} -n {NAMESPACE}" in text


def helm_test_command() -> list[str]:
    objects = render(values())
    (pod,) = [obj for (kind, _), obj in objects.items() if kind == "Pod"]
    validate(pod)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (check,) = pod["spec"]["containers"]
    assert check["image"] == container(objects)["image"]  # the router's own image: nothing more to pull
    assert check["command"][-1] == f"http://{NAME}-admin.{NAMESPACE}.svc:9090/readyz"
    return check["command"]


def run_check(url: str) -> subprocess.CompletedProcess[str]:
    python, *args = helm_test_command()
    assert python == "python3"
    return subprocess.run([sys.executable, *args[:-1], url], capture_output=True, text=True, timeout=30)


def test_the_helm_test_pod_exits_0_when_a_router_is_ready(tmp_path: Any) -> None:
    router = start_router(tmp_path, Config())
    try:
        done = run_check(f"{router.admin_url}/readyz")
    finally:
        router.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 200 " in done.stdout


def test_the_helm_test_pod_exits_1_when_not_ready_or_unreachable() -> None:
    not_ready = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
    with one_shot_replica(not_ready) as url:
        done = run_check(f"{url}/readyz")
    assert done.returncode == 1 and "not ready: HTTP Error 503" in done.stdout, done.stdout + done.stderr
    with closed_port() as port:
        done = run_check(f"http://127.0.0.1:{port}/readyz")
    assert done.returncode == 1 and "not ready:" in done.stdout and "Traceback" not in done.stderr
