"""Render the chart in manifests/chart with Helm's own engine (helm-python-sdk binds Helm's Go SDK).

`render(values)` is `helm template` in this process: the values are checked against
values.schema.json, the templates run (their `fail` checks included), and the
manifests come back parsed, keyed by (kind, name), or (kind, "namespace/name") for an object in
another namespace than the release's. `values(...)` makes a set of values the tests start from, and
`container(objects)` finds the router's container.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[2] / "manifests" / "chart"
RELEASE, NAMESPACE = "router", "azureml"
NAME = f"{RELEASE}-inference-router"
# The oldest Kubernetes the chart supports (CRD validation rules are GA from 1.29) and the newest
# kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

Manifests = dict[tuple[str, str], dict[str, Any]]

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
TLS_MODES: dict[str, dict[str, Any]] = {
    "secret": {"sslSecret": "router-cert", "sslCname": "scoring.example.com"},
    "pem": {"sslCertPemFile": CERT, "sslKeyPemFile": KEY, "sslCname": "scoring.example.com"},
    "insecure": {"allowInsecureConnections": True},
}


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any]) -> Manifests:
    """Every object the chart renders for `values`; HelmError with the user's message when refused."""
    files = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: Manifests = {}
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                namespace = doc["metadata"].get("namespace", NAMESPACE)
                name = doc["metadata"]["name"] if namespace == NAMESPACE else f"{namespace}/{doc['metadata']['name']}"
                key = (doc["kind"], name)
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects


def validate(obj: dict[str, Any]) -> None:
    """kubernetes-validate --strict, for each supported Kubernetes version (each object once)."""
    _validate(json.dumps(obj, sort_keys=True))


@functools.cache
def _validate(text: str) -> None:
    obj = json.loads(text)
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def values(service_type: str = "LoadBalancer", ha: bool = True, tls: str = "secret", internal: str = "",
           **more: Any) -> dict[str, Any]:
    chosen: dict[str, Any] = {"inferenceRouterServiceType": service_type, "inferenceLoadBalancerHA": ha,
                              **TLS_MODES[tls], **more}
    if internal:
        chosen["internalLoadBalancerProvider"] = internal
    return chosen


def container(objects: Manifests) -> dict[str, Any]:
    (only,) = objects[("Deployment", NAME)]["spec"]["template"]["spec"]["containers"]
    return only
