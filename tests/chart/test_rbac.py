"""The chart's RBAC against the calls the router makes: a real router process, configured with the rendered
container's arguments and environment, runs against the fake API server, which records every call; each call
must be allowed by the rendered Roles and ClusterRoles, and each grant must be used by some call.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.render import NAME, NAMESPACE, Manifests, render
from tests.helpers import SampleModel, start_process
from tests.kube.cluster import deployment, endpoint, endpoint_slice, secret, wait_until
from tests.kube.fake_apiserver import FakeApiServer, Request
from tests.peers.cluster import free_port_on
from tests.tls.pki import CNAME, new_pki

KEY = "key-rbac-0123456789"
Rule = dict[str, Any]


def grants(objects: Manifests) -> list[tuple[str | None, Rule]]:
    """The rules bound to the router's ServiceAccount, each with its namespace (None: every namespace)."""
    account = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    found: list[tuple[str | None, Rule]] = []
    for (kind, _), binding in objects.items():
        if kind not in ("ClusterRoleBinding", "RoleBinding") or account not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
        role = objects[(ref["kind"], ref["name"] if namespace in (None, NAMESPACE) else f"{namespace}/{ref['name']}")]
        assert ref["kind"] == "ClusterRole" or role["metadata"]["namespace"] == namespace
        found += [(namespace, rule) for rule in role["rules"]]
    return found


def allows(rule: Rule, request: Request) -> bool:
    """As the API server's RBAC authorizer reads a rule (a list or watch is named by its metadata.name selector)."""
    resource = request.resource
    assert resource is not None, request
    group, plural, _, name = resource
    if name is None and request.query.get("fieldSelector", "").startswith("metadata.name="):
        name = request.query["fieldSelector"].split("=", 1)[1]
    return group in rule["apiGroups"] and plural in rule["resources"] and request.verb in rule["verbs"] and (
        not rule.get("resourceNames") or (request.verb != "create" and name in rule["resourceNames"]))


def allowed(rules: list[tuple[str | None, Rule]], request: Request) -> bool:
    resource = request.resource
    assert resource is not None
    return any((scope is None or scope == resource[2]) and allows(rule, request) for scope, rule in rules)


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:  # bookmarks about once a minute, as a real server sends them
        yield server


def run_router(objects: Manifests, api_server: FakeApiServer, kubeconfig: Path, where: str, model: SampleModel,
               tls_secret: dict[str, Any]) -> None:
    """The rendered container's arguments and environment (ports and drain shortened) against the fake cluster,
    until it has served the endpoint's status, then stopped (it gives its Lease back)."""
    (container,) = objects[("Deployment", NAME)]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}  # not the pod's IP (valueFrom)
    env.update(ROUTER_HOST="127.0.0.1", ROUTER_ADMIN_HOST="127.0.0.1", ROUTER_PORT="0", ROUTER_TLS_PORT="0",
               ROUTER_ADMIN_PORT="0", ROUTER_DRAIN_DELAY="0", ROUTER_DRAIN_TIMEOUT="5")
    if "ROUTER_PEER_KEY_FILE" in env:  # HA: the peers' key from the chart's Secret, the peer port a free one
        key_file = kubeconfig.parent / "peer-key"
        key_file.write_text("peer-key-0123456789abcdef\n")
        env.update(ROUTER_PEER_KEY_FILE=str(key_file), ROUTER_PEER_PORT=str(free_port_on(["127.0.0.1"])))
    api_server.create("secrets", tls_secret)
    api_server.create("secrets", secret("demo-keys", namespace=where, primaryKey=KEY))
    api_server.create("onlineendpoints", endpoint("demo", {"blue": 100}, namespace=where))
    # the Service port as a number, as many write it: mapped through the Service to the slices' target port
    api_server.create("services", {"apiVersion": "v1", "kind": "Service",
                                    "metadata": {"name": "demo-blue", "namespace": where},
                                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": model.port}]}})
    # both kinds of scaleTargetRef, each at a size its scaleSettings clamp (0 → minInstances 1): the autoscaler
    # reads and writes their /scale, watches HPAs and records an Event for each
    for name, kind, plural in (("blue", "Deployment", "deployments"), ("green", "StatefulSet", "statefulsets")):
        scaled = deployment(name, "demo", "demo-blue", port=80, namespace=where)
        scaled["spec"]["scaleSettings"] = {"type": "target_utilization", "minInstances": 1, "maxInstances": 2,
                                           "scaleTargetRef": {"kind": kind, "name": f"demo-{name}"}}
        api_server.create("onlinedeployments", scaled)
        api_server.create(plural, {"metadata": {"name": f"demo-{name}", "namespace": where}, "spec": {"replicas": 0}})
    api_server.create("endpointslices", endpoint_slice("demo-blue-0", "demo-blue", model.port, namespace=where))
    process = start_process([sys.executable, "-m", "router.cli", *container["args"], "--kubeconfig", str(kubeconfig),
                             "--allow-loopback-replicas"], env=env, timeout=30)
    try:
        def served() -> bool:
            return all((api_server.get(plural, name, namespace=where).get("status") or {}).get("readyReplicas") == 1
                       for plural, name in (("onlinedeployments", "blue"), ("onlinedeployments", "green"))) and all(
                api_server.get(plural, name, namespace=where)["spec"]["replicas"] == 1
                for plural, name in (("deployments", "demo-blue"), ("statefulsets", "demo-green"))) and len(
                api_server.list("events", where)["items"]) == 2
        wait_until(served, 10, "the deployments' status written, both scale targets scaled")
    finally:
        print(*process.lines[-40:], sep="\n")  # shown if the test failed
        assert process.stop() == 0


MODES = {
    "every-namespace": ({}, "team-a"),
    "secret-namespaces": ({"secretNamespaces": ["team-a"]}, "team-a"),
    "watch-namespace": ({"watchNamespace": "models"}, "models"),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_call_the_router_makes_is_granted_and_every_grant_is_used(
        mode: str, api_server: FakeApiServer, tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    more, where = MODES[mode]
    objects = render({"inferenceRouterServiceType": "ClusterIP", "sslSecret": "router-cert", "sslCname": CNAME,
                      **more})
    rules = grants(objects)
    pki = new_pki(tmp_path / "pki")
    pair = pki.pair(pki.server())
    tls_secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                  "metadata": {"name": "router-cert", "namespace": NAMESPACE},
                  "data": {"tls.crt": base64.b64encode(pair.cert).decode(),
                           "tls.key": base64.b64encode(pair.key).decode()}}
    # the pod's own namespace is the release's: its kubeconfig context says so here
    kubeconfig = api_server.kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    run_router(objects, api_server, kubeconfig, where, sample_model_factory("--name", "blue-0"), tls_secret)

    calls = list(api_server.requests)
    refused = sorted({(r.verb, r.path, r.query.get("fieldSelector", "")) for r in calls if not allowed(rules, r)})
    assert refused == []
    for scope, rule in rules:
        used = {(r.resource[1], r.verb) for r in calls
                if r.resource and (scope is None or r.resource[2] == scope) and allows(rule, r)}
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                assert (resource, verb) in used, f"{verb} {resource} in {scope or 'every namespace'} is granted " \
                                                 "but never used"
    verbs = {(r.resource[1] if r.resource else "", r.verb) for r in calls}
    # never a get, but of the Leases and of the scale targets' /scale
    assert not {v for v in verbs if v[1] == "get" and v[0] not in ("leases", "deployments/scale", "statefulsets/scale")}
