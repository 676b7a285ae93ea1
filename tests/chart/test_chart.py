"""The Helm chart: lint, every supported combination of settings, and each refusal.

Each combination renders objects that kubernetes-validate --strict accepts for the oldest
and newest supported Kubernetes; the asserts check what a schema cannot: the Service's type
and ports, HA placement, the PodDisruptionBudget, least-privilege RBAC, the pod's
security and drain settings, and settings the router itself accepts.
"""

from __future__ import annotations

import argparse
import base64
import itertools
from typing import Any

import helm_python as helm
import pytest
import yaml

from router import settings as router_settings
from tests.chart.render import (
    CERT,
    CHART,
    KEY,
    KUBERNETES_VERSIONS,
    NAME,
    NAMESPACE,
    TLS_MODES,
    Manifests,
    container,
    render,
    validate,
    values,
)

INTERNAL_LB = {
    "azure": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
    "aws": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true",
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"},
    "gcp": {"networking.gke.io/load-balancer-type": "Internal"},
}
CASES = [
    (service_type, ha, tls, internal)
    for service_type, ha, tls in itertools.product(["LoadBalancer", "NodePort", "ClusterIP"], [True, False], TLS_MODES)
    for internal in (["", *INTERNAL_LB] if service_type == "LoadBalancer" else [""])
]


def test_helm_lint_passes_strict_for_each_supported_kubernetes() -> None:
    for version in KUBERNETES_VERSIONS:
        report = helm.lint(CHART, values(), strict=True, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], report


def test_the_chart_declares_the_oldest_kubernetes_it_is_tested_on() -> None:
    oldest = KUBERNETES_VERSIONS[0]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"] == f">={oldest}-0"


def test_the_charts_crds_are_the_ones_in_manifests_crds() -> None:
    ours = sorted((CHART / "crds").glob("*.yaml"))
    source = sorted((CHART.parent / "crds").glob("*.yaml"))
    assert [p.name for p in ours] == [p.name for p in source] != []
    for copy, original in zip(ours, source, strict=True):
        assert copy.read_bytes() == original.read_bytes(), f"{copy} differs: cp manifests/crds/*.yaml {copy.parent}"
        validate(yaml.safe_load(original.read_text()))


@pytest.mark.parametrize(("service_type", "ha", "tls", "internal"), CASES,
                         ids=["-".join([s, "ha" if h else "single", t, i or "public"]) for s, h, t, i in CASES])
def test_each_combination_renders_valid_objects_that_do_what_was_asked(
        service_type: str, ha: bool, tls: str, internal: str) -> None:
    objects = render(values(service_type, ha, tls, internal))
    for obj in objects.values():
        validate(obj)

    service = objects[("Service", NAME)]
    assert service["spec"]["type"] == service_type
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == ({80: "http"} if tls == "insecure" else {443: "https"})
    assert service.get("metadata", {}).get("annotations", {}) == INTERNAL_LB.get(internal, {})
    assert all("nodePort" not in p for p in service["spec"]["ports"])

    pod = objects[("Deployment", NAME)]["spec"]["template"]["spec"]
    router = container(objects)
    assert {p["name"]: p["containerPort"] for p in router["ports"]} == \
        {"admin": 9090, **({"http": 8080} if tls == "insecure" else {"https": 8443}), **({"peer": 9091} if ha else {})}
    env = {e["name"]: e["value"] for e in router["env"] if "value" in e}
    if tls == "insecure":
        assert "ROUTER_SSL_SECRET" not in env and env["ROUTER_ALLOW_INSECURE_CONNECTIONS"] == "true"
    else:
        # the Secret is read through the API, whatever its keys (cert.pem/key.pem or cert-manager's
        # tls.crt/tls.key): no volume lists some of its keys and leaves the pod stuck without the others
        secret_name = "router-cert" if tls == "secret" else f"{NAME}-tls"
        assert env["ROUTER_SSL_SECRET"] == secret_name and "ROUTER_SSL_CERT_PEM_FILE" not in env
        assert [v["name"] for v in pod["volumes"]] == ["tmp", *(["peer-key"] if ha else [])]
        assert env["ROUTER_SSL_CNAME"] == "scoring.example.com"
        assert (("Secret", f"{NAME}-tls") in objects) == (tls == "pem")
        (own,) = [r for r in objects[("Role", f"{NAME}-self")]["rules"] if r["resources"] == ["secrets"]]
        assert own == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret_name],
                       "verbs": ["list", "watch"]}
    assert_router_accepts(router)
    assert_ha(objects, ha)


def assert_router_accepts(router: dict[str, Any]) -> None:
    """The container's arguments and ROUTER_* variables are settings the router knows and accepts."""
    assert router["args"] == ["serve", "--kubernetes"]
    env = {e["name"]: e["value"] for e in router["env"] if "value" in e}
    parser = argparse.ArgumentParser()
    router_settings.add_arguments(parser)
    known = {"ROUTER_" + name.upper() for name in vars(parser.parse_args([]))}
    assert {name for name in env if name.startswith("ROUTER_")} <= known, set(env) - known
    got = router_settings.from_arguments(parser.parse_args([]), environ=env)
    assert (got.port, got.tls_port, got.admin_port) == (8080, 8443, 9090)


def assert_ha(objects: Manifests, ha: bool) -> None:
    deployment = objects[("Deployment", NAME)]
    pod = deployment["spec"]["template"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    # a rollout starts the new pod before an old one stops: capacity never drops
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    if not ha:
        assert deployment["spec"]["replicas"] == 1
        assert "affinity" not in pod and "topologySpreadConstraints" not in pod
        assert not [kind for kind, _ in objects if kind == "PodDisruptionBudget"]
        return
    assert deployment["spec"]["replicas"] == 3
    # nothing required: on fewer nodes (or zones) than replicas every pod, the surge pod included, schedules
    assert set(pod["affinity"]["podAntiAffinity"]) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    (preferred,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                            "labelSelector": {"matchLabels": selector}}}
    spreads = {s["topologyKey"]: s for s in pod["topologySpreadConstraints"]}
    assert set(spreads) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for spread in spreads.values():
        assert spread["maxSkew"] == 1 and spread["whenUnsatisfiable"] == "ScheduleAnyway"
        assert spread["labelSelector"] == {"matchLabels": selector}
    # one pod may always go: with 2 nodes and 3 pods a drain is not blocked
    pdb = objects[("PodDisruptionBudget", NAME)]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}


def test_the_admin_port_has_its_own_cluster_ip_service_and_never_the_public_one() -> None:
    objects = render(values(tls="pem", allowInsecureConnections=True))
    public = objects[("Service", NAME)]
    assert {p["port"] for p in public["spec"]["ports"]} == {80, 443}
    assert not {9090, "admin"} & {v for p in public["spec"]["ports"] for v in (p["port"], p["targetPort"])}
    admin = objects[("Service", f"{NAME}-admin")]
    assert admin["spec"]["type"] == "ClusterIP"
    assert admin["spec"]["ports"] == [{"name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP"}]
    assert admin["spec"]["selector"] == public["spec"]["selector"]


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


READ = {*{("inference-router.dev", r, v) for r in ("onlineendpoints", "onlinedeployments") for v in ("list", "watch")},
        ("inference-router.dev", "onlineendpoints/status", "patch"),
        ("inference-router.dev", "onlinedeployments/status", "patch"),
        ("discovery.k8s.io", "endpointslices", "list"), ("discovery.k8s.io", "endpointslices", "watch"),
        ("", "services", "list"), ("", "services", "watch")}
SECRETS = {("", "secrets", "list"), ("", "secrets", "watch")}


def test_rbac_grants_secrets_only_where_the_router_reads_them() -> None:
    """The scopes (tests/chart/test_rbac.py runs the router against them): no `get` but on the Lease, and
    Secrets in every namespace only when the router watches every namespace and no secretNamespaces are given."""
    account = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    everywhere = render(values())
    assert granted(everywhere[("ClusterRole", NAME)]["rules"]) == READ | SECRETS
    assert container(everywhere)["args"] == ["serve", "--kubernetes"]

    narrowed = render(values(secretNamespaces=["team-a", "team-b"]))
    assert granted(narrowed[("ClusterRole", NAME)]["rules"]) == READ
    for namespace in ("team-a", "team-b"):
        assert granted(narrowed[("Role", f"{namespace}/{NAME}-secrets")]["rules"]) == SECRETS
        assert narrowed[("RoleBinding", f"{namespace}/{NAME}-secrets")]["subjects"] == [account]

    one = render(values(watchNamespace="models"))
    assert not [kind for kind, _ in one if kind.startswith("Cluster")]
    assert granted(one[("Role", f"models/{NAME}")]["rules"]) == READ | SECRETS
    assert one[("RoleBinding", f"models/{NAME}")]["subjects"] == [account]
    assert container(one)["args"] == ["serve", "--kubernetes"]
    assert {"name": "ROUTER_WATCH_NAMESPACE", "value": "models"} in container(one)["env"]

    for objects in (everywhere, narrowed, one):
        own = objects[("Role", f"{NAME}-self")]
        assert own["metadata"]["namespace"] == NAMESPACE
        assert own["rules"] == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [f"{NAME}-status"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["router-cert"],
             "verbs": ["list", "watch"]}]
        assert objects[("RoleBinding", f"{NAME}-self")]["subjects"] == [account]
        assert objects[("Deployment", NAME)]["spec"]["template"]["spec"]["serviceAccountName"] == NAME
        assert {"name": "ROUTER_STATUS_LEASE", "value": f"{NAME}-status"} in container(objects)["env"]
        for obj in objects.values():
            validate(obj)


def test_the_pod_runs_locked_down_probed_on_the_admin_port_and_drains() -> None:
    objects = render(values())
    pod = objects[("Deployment", NAME)]["spec"]["template"]["spec"]
    router = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert router["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert router["startupProbe"]["httpGet"] == router["livenessProbe"]["httpGet"] == \
        {"path": "/healthz", "port": "admin"}
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    startup, liveness = router["startupProbe"], router["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # the first sync may take a while
    # a pod slowed by CPU throttling under load is not restarted for it: seconds per answer, a minute in all
    assert liveness["timeoutSeconds"] >= 5 and liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    assert router["resources"] == {"requests": {"cpu": "900m", "memory": "800Mi"},
                                   "limits": {"cpu": "2", "memory": "1200Mi"}}
    env = {e["name"]: e["value"] for e in router["env"] if "value" in e}
    pre_stop = router["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) > 0
    longest_request_timeout_s = 300  # requestTimeoutMs: at most 300000 in the OnlineDeployment CRD
    assert float(env["ROUTER_DRAIN_TIMEOUT"]) >= longest_request_timeout_s
    assert pod["terminationGracePeriodSeconds"] > \
        int(pre_stop[1]) + float(env["ROUTER_DRAIN_DELAY"]) + float(env["ROUTER_DRAIN_TIMEOUT"])


def test_the_pem_contents_become_the_releases_secret() -> None:
    secret = render(values(tls="pem"))[("Secret", f"{NAME}-tls")]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {"cert.pem": CERT, "key.pem": KEY}


def test_node_selector_node_ports_image_and_service_monitor() -> None:
    objects = render(values("NodePort", tls="pem", allowInsecureConnections=True,
                            nodeSelector={"pool": "routers"}, nodePorts={"http": 30080, "https": 30443},
                            image={"repository": "example.com/router", "tag": "1.2.3"},
                            serviceMonitor={"enabled": True}))
    assert objects[("Deployment", NAME)]["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "routers"}
    assert {p["port"]: p["nodePort"] for p in objects[("Service", NAME)]["spec"]["ports"]} == {80: 30080, 443: 30443}
    assert container(objects)["image"] == "example.com/router:1.2.3"
    monitor = objects[("ServiceMonitor", NAME)]
    assert monitor["spec"]["endpoints"][0]["port"] == "admin"
    admin_labels = objects[("Service", f"{NAME}-admin")]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= admin_labels.items()
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= \
        objects[("Service", NAME)]["metadata"]["labels"].items()  # never the public Service


REFUSALS = [
    ({"allowInsecureConnections": True}, "inferenceRouterServiceType is required"),
    (values(inferenceRouterServiceType="Ingress"), "value must be one of 'LoadBalancer', 'NodePort', 'ClusterIP'"),
    ({"inferenceRouterServiceType": "LoadBalancer"}, "TLS is not configured and plain HTTP is not allowed"),
    (values(sslCname=""), "sslCname is required with TLS"),
    (values(tls="pem", sslCname=""), "sslCname is required with TLS"),
    (values("NodePort", internal="azure"),
     "internalLoadBalancerProvider=azure needs inferenceRouterServiceType=LoadBalancer"),
    (values("ClusterIP", internal="aws"), "internalLoadBalancerProvider=aws needs inferenceRouterServiceType"),
    (values(internal="oracle"), "value must be one of '', 'azure', 'aws', 'gcp'"),
    (values(sslCertPemFile=CERT, sslKeyPemFile=KEY),
     "sslSecret and sslCertPemFile/sslKeyPemFile are two sources of the certificate: set one of them"),
    (values(tls="pem", sslKeyPemFile=""), "sslCertPemFile and sslKeyPemFile go together"),
    (values(tls="pem", sslCertPemFile="./cert.pem"), "sslCertPemFile must hold the certificate's PEM text"),
    (values("ClusterIP", nodePorts={"http": 30080}), "nodePorts are for NodePort and LoadBalancer Services"),
    (values(nodePorts={"https": 443}), "'/nodePorts/https': minimum: got 443"),
    (values(inferenceLoadBalancerHa=False), "additional properties 'inferenceLoadBalancerHa' not allowed"),
    (values(drain={"timeoutSeconds": 0}), "'/drain/timeoutSeconds': minimum: got 0"),
    (values(watchNamespace="models", secretNamespaces=["team-a"]),
     "secretNamespaces narrows the Secrets of a router watching every namespace"),
    (values(watchNamespace="Models"), "at '/watchNamespace': 'Models' does not match pattern"),
]


@pytest.mark.parametrize(("given", "message"), REFUSALS, ids=[m[:40] for _, m in REFUSALS])
def test_each_invalid_combination_is_refused_with_its_message(given: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as refused:
        render(given)
    assert message in str(refused.value)


def test_the_readme_install_commands_render() -> None:
    """Each `helm install` in README's "Install on Kubernetes" renders: its keys are the chart's."""
    readme = (CHART.parents[1] / "README.md").read_text()
    section = readme.split("\n## Install on Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    installs = [c for c in section.replace("\\\n", " ").splitlines() if c.startswith("helm install")]
    assert len(installs) >= 3
    service_types = set()
    for install in installs:
        given: dict[str, Any] = {}
        words = install.split()
        for flag, value in itertools.pairwise(words):
            if flag == "--set":
                given = merged(given, helm.parse_set_string(value))
            elif flag == "--set-file":
                key = value.split("=", 1)[0]
                given[key] = CERT if key == "sslCertPemFile" else KEY
        service = render(given)[("Service", NAME)]
        service_types.add(service["spec"]["type"])
    assert service_types == {"LoadBalancer", "NodePort", "ClusterIP"}


def merged(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """`--set` after `--set`: nested keys merge, as helm merges them."""
    out = dict(into)
    for key, value in more.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
