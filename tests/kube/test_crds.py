"""The CRDs in manifests/crds: valid for Kubernetes 1.37, and their schemas agree with the validator.

`kubernetes-validate` checks each CRD against the API's own schema for CustomResourceDefinition.
The openAPIV3Schema of each is then used as a JSON schema (what the API server applies before
its CEL rules) on resources the router's validator accepts or rejects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from router.discovery.documents import parse_document
from router.errors import ConfigError
from tests.kube.cluster import deployment, endpoint

CRDS = Path(__file__).resolve().parents[2] / "manifests" / "crds"


def crd(plural: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / f"{plural}.yaml").read_text())


def schema_errors(plural: str, obj: dict[str, Any]) -> list[str]:
    schema = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft7Validator(schema)
    return [".".join(str(p) for p in error.absolute_path) for error in validator.iter_errors(obj)]


def test_the_crds_are_valid_kubernetes_objects() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == ["onlinedeployments.yaml", "onlineendpoints.yaml"]
    for plural in ("onlineendpoints", "onlinedeployments"):
        assert kubernetes_validate.validate(crd(plural), "1.37.0", strict=True) == "1.37"


@pytest.mark.parametrize("plural", ["onlineendpoints", "onlinedeployments"])
def test_each_crd_has_a_status_subresource_and_printer_columns(plural: str) -> None:
    spec = crd(plural)["spec"]
    assert spec["group"] == "inference-router.dev" and spec["names"]["plural"] == plural
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready Replicas"] == ".status.readyReplicas" and columns["Age"] == ".metadata.creationTimestamp"
    if plural == "onlineendpoints":
        assert columns["Traffic"] == ".spec.traffic"


VALID_ENDPOINT = endpoint("mnist", {"blue": 90, "green": 10}, mirrorTraffic={"shadow": 20})
VALID_DEPLOYMENT = deployment("blue", "mnist", "mnist-blue", port=5001)


def test_valid_resources_pass_both_the_schema_and_the_validator() -> None:
    assert schema_errors("onlineendpoints", VALID_ENDPOINT) == []
    assert schema_errors("onlinedeployments", VALID_DEPLOYMENT) == []
    parse_document(VALID_ENDPOINT)
    parse_document(VALID_DEPLOYMENT)


def changed(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = obj
    for key in parents:
        target = target[key]
    target[last] = value
    return obj


@pytest.mark.parametrize(("plural", "obj", "field"), [
    ("onlineendpoints", changed(VALID_ENDPOINT, "spec.traffic", {"blue": 101}), "spec.traffic.blue"),
    ("onlineendpoints", changed(VALID_ENDPOINT, "spec.traffic", {"blue": -1}), "spec.traffic.blue"),
    ("onlineendpoints", changed(VALID_ENDPOINT, "spec.authMode", "password"), "spec.authMode"),
    ("onlineendpoints", changed(VALID_ENDPOINT, "spec.mirrorTraffic", {"shadow": 51}), "spec.mirrorTraffic.shadow"),
    ("onlineendpoints", changed(VALID_ENDPOINT, "spec.keysSecretRef", "Bad_Name"), "spec.keysSecretRef"),
    ("onlinedeployments", changed(VALID_DEPLOYMENT, "spec.requestSettings.requestTimeoutMs", 0),
     "spec.requestSettings.requestTimeoutMs"),
    ("onlinedeployments", changed(VALID_DEPLOYMENT, "spec.scoringRoute", "score"), "spec.scoringRoute"),
    ("onlinedeployments", changed(VALID_DEPLOYMENT, "spec.endpointName", ""), "spec.endpointName"),
    ("onlinedeployments", changed(VALID_DEPLOYMENT, "spec.backend.service.name", "Bad_Svc"),
     "spec.backend.service.name"),
])
def test_the_schema_rejects_what_the_validator_rejects(plural: str, obj: dict[str, Any], field: str) -> None:
    assert field in schema_errors(plural, obj)
    with pytest.raises(ConfigError) as rejected:
        parse_document(obj)
    assert any(f": {field}:" in problem for problem in rejected.value.problems), rejected.value.problems
