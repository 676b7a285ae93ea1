"""Resource documents → validated value objects, and every rejection naming its field (DESIGN §2)."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from router.discovery.documents import load_file, load_yaml, parse_documents
from router.errors import ConfigError
from router.model import (
    OnlineDeployment,
    OnlineEndpoint,
    RequestSettings,
    ScaleSettings,
    ScaleTargetRef,
    Secret,
    ServiceRef,
)

# The DESIGN §2 example, completed: a green deployment for the traffic split to name, and the
# keys Secret. Green takes mirrored traffic only, since a deployment may not take both.
EXAMPLE = """
apiVersion: inference-router.dev/v1alpha1
kind: OnlineEndpoint
metadata: {name: mnist, namespace: models}
spec:
  authMode: key
  keysSecretRef: mnist-keys
  traffic: {blue: 100, green: 0}
  mirrorTraffic: {green: 10}
---
apiVersion: inference-router.dev/v1alpha1
kind: OnlineDeployment
metadata: {name: blue, namespace: models}
spec:
  endpointName: mnist
  backend:
    service: {name: mnist-blue, port: 5001}
  scoringRoute: /score
  requestSettings:
    requestTimeoutMs: 5000
    maxConcurrentRequestsPerInstance: 1
    maxQueueWaitMs: 500
  scaleSettings:
    type: target_utilization
    minInstances: 1
    maxInstances: 3
    targetUtilizationPercentage: 70
    pollingInterval: 1
    scaleTargetRef: {kind: Deployment, name: mnist-blue}
---
apiVersion: inference-router.dev/v1alpha1
kind: OnlineDeployment
metadata: {name: green, namespace: models, labels: {app: mnist}, uid: abc, resourceVersion: "7"}
spec:
  endpointName: mnist
  backend:
    urls: [http://127.0.0.1:5003/, "http://replica.local:5004"]
status: {ready: true}
---
apiVersion: v1
kind: Secret
metadata: {name: mnist-keys, namespace: models}
type: Opaque
data:
  primaryKey: cHJpbWFyeS1rZXktTXg3UXYyTHA5V240UnQ4WmIzS2Q=  # primary-key-Mx7Qv2Lp9Wn4Rt8Zb3Kd
  secondaryKey: b2xkLXNlY29uZGFyeS1rZXktSHM1SmYxR2M2TnYwWHk=  # old-secondary-key-Hs5Jf1Gc6Nv0Xy
stringData:
  secondaryKey: secondary-key-Ta2Ue7Io3Pw8Sq4Dl0
"""


API = "inference-router.dev/v1alpha1"


def example() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE) if doc]


def problems_of(docs: list[Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_documents(docs)
    return caught.value.problems


def test_the_full_example_parses_into_value_objects() -> None:
    resources = load_yaml(EXAMPLE, origin="example.yaml")

    assert resources.endpoints == (
        OnlineEndpoint(namespace="models", name="mnist", auth_mode="key", keys_secret_ref="mnist-keys",
                       traffic=MappingProxyType({"blue": 100, "green": 0}),
                       mirror_traffic=MappingProxyType({"green": 10})),
    )
    blue, green = resources.deployments
    assert blue == OnlineDeployment(
        namespace="models", name="blue", endpoint_name="mnist",
        service=ServiceRef(name="mnist-blue", port=5001), scoring_route="/score",
        request_settings=RequestSettings(request_timeout_ms=5000, max_concurrent_requests_per_instance=1,
                                         max_queue_wait_ms=500),
        scale_settings=ScaleSettings(type="target_utilization", min_instances=1, max_instances=3,
                                     target_utilization_percentage=70, polling_interval=1,
                                     scale_target_ref=ScaleTargetRef(kind="Deployment", name="mnist-blue")),
    )
    assert green == OnlineDeployment(namespace="models", name="green", endpoint_name="mnist",
                                     urls=("http://127.0.0.1:5003", "http://replica.local:5004"))
    assert resources.secrets == (
        Secret(namespace="models", name="mnist-keys",
               data=MappingProxyType({"primaryKey": "primary-key-Mx7Qv2Lp9Wn4Rt8Zb3Kd",
                                       "secondaryKey": "secondary-key-Ta2Ue7Io3Pw8Sq4Dl0"})),
    )
    assert isinstance(resources.endpoints[0].traffic, MappingProxyType)
    assert isinstance(resources.secrets[0].data, MappingProxyType)


def test_defaults_and_skipped_empty_documents() -> None:
    docs = [None, {"apiVersion": API, "kind": "OnlineEndpoint",
                   "metadata": {"name": "iris"}},
            {"apiVersion": API, "kind": "OnlineDeployment",
             "metadata": {"name": "blue"}, "spec": {"endpointName": "iris", "backend": {"urls": []}}}]

    resources = parse_documents(docs)

    assert resources.endpoints == (OnlineEndpoint(namespace="default", name="iris"),)
    assert resources.deployments == (OnlineDeployment(namespace="default", name="blue", endpoint_name="iris",
                                                      urls=()),)
    assert resources.secrets == ()


Mutation = Callable[[list[dict[str, Any]]], object]
ENDPOINT, BLUE, GREEN, SECRET = 0, 1, 2, 3


def _spec(index: int, **changes: Any) -> Mutation:
    return lambda docs: docs[index]["spec"].update(changes)


def _at(index: int, *path: str, value: Any) -> Mutation:
    def mutate(docs: list[dict[str, Any]]) -> None:
        node = docs[index]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return mutate


def _drop(index: int, *path: str) -> Mutation:
    def mutate(docs: list[dict[str, Any]]) -> None:
        node = docs[index]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _append(doc: Any) -> Mutation:
    return lambda docs: docs.append(doc)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _route_to_iris_deployment(docs: list[dict[str, Any]]) -> None:
    """Endpoint iris owns deployment red in the same namespace; mnist's traffic names red."""
    docs.append({"apiVersion": API, "kind": "OnlineEndpoint",
                 "metadata": {"name": "iris", "namespace": "models"}})
    docs.append({"apiVersion": API, "kind": "OnlineDeployment",
                 "metadata": {"name": "red", "namespace": "models"},
                 "spec": {"endpointName": "iris", "backend": {"urls": []}}})
    docs[ENDPOINT]["spec"]["traffic"] = {"blue": 50, "red": 50}


EP, BL, SE = "OnlineEndpoint models/mnist: ", "OnlineDeployment models/blue: ", "Secret models/mnist-keys: "
CASES: list[tuple[str, Mutation, str]] = [
    # document kinds and shapes
    ("not a mapping", _append(["a", "list"]), "document 5: must be a mapping, got ['a', 'list']"),
    ("unknown kind", _append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
     "document 5: apiVersion/kind: unsupported 'v1'/'ConfigMap'"),
    ("wrong apiVersion", _at(BLUE, "apiVersion", value="inference-router.dev/v1"),
     "document 2: apiVersion/kind: unsupported 'inference-router.dev/v1'/'OnlineDeployment'"),
    ("unknown top-level key", _at(ENDPOINT, "extra", value=1), EP + "extra: unknown field"),
    ("secret unknown top-level key", _at(SECRET, "spec", value={}), SE + "spec: unknown field"),
    # metadata and names
    ("metadata missing", _drop(BLUE, "metadata"), "document 2 (OnlineDeployment): metadata: required"),
    ("name missing", _drop(BLUE, "metadata", "name"),
     "document 2 (OnlineDeployment): metadata.name: required"),
    ("name too short", _at(ENDPOINT, "metadata", "name", value="ab"),
     "OnlineEndpoint models/ab: metadata.name: must be 3 to 32 characters"),
    ("name too long", _at(BLUE, "metadata", "name", value="b" * 33), "metadata.name: must be 3 to 32"),
    ("name starts with a digit", _at(BLUE, "metadata", "name", value="1blue"), "got '1blue'"),
    ("name with uppercase", _at(BLUE, "metadata", "name", value="Blue"), "metadata.name: must be 3 to 32"),
    ("name ends with '-'", _at(BLUE, "metadata", "name", value="blue-"), "metadata.name: must be 3 to 32"),
    ("secret name", _at(SECRET, "metadata", "name", value="Keys_1"),
     "Secret models/Keys_1: metadata.name: must be a DNS-1123 subdomain"),
    ("namespace", _at(BLUE, "metadata", "namespace", value="Models!"),
     "OnlineDeployment Models!/blue: metadata.namespace: must be a DNS-1123 label"),
    # unknown fields at any depth
    ("unknown spec field", _spec(ENDPOINT, trafic={}), EP + "spec.trafic: unknown field"),
    ("unknown nested field", _at(BLUE, "spec", "requestSettings", "maxQueueWaitMS", value=5),
     BL + "spec.requestSettings.maxQueueWaitMS: unknown field"),
    ("unknown deep field", _at(BLUE, "spec", "scaleSettings", "scaleTargetRef", "apiVersion", value="v1"),
     BL + "spec.scaleSettings.scaleTargetRef.apiVersion: unknown field"),
    ("unknown backend field", _at(BLUE, "spec", "backend", "service", "namespace", value="x"),
     BL + "spec.backend.service.namespace: unknown field"),
    # endpoint spec
    ("authMode", _spec(ENDPOINT, authMode="aad_token"),
     EP + "spec.authMode: must be one of key, aml_token, got 'aad_token'"),
    ("traffic not an integer", _spec(ENDPOINT, traffic={"blue": "x", "green": 0}),
     EP + "spec.traffic.blue: must be an integer from 0 to 100, got 'x'"),
    ("traffic bool", _spec(ENDPOINT, traffic={"blue": True, "green": 0}),
     "spec.traffic.blue: must be an integer from 0 to 100, got True"),
    ("traffic float", _spec(ENDPOINT, traffic={"blue": 100.0}),
     "spec.traffic.blue: must be an integer from 0 to 100, got 100.0"),
    ("traffic over 100", _spec(ENDPOINT, traffic={"blue": 101}), "spec.traffic.blue: must be an integer"),
    ("traffic sum", _spec(ENDPOINT, traffic={"blue": 90, "green": 0}),
     EP + "spec.traffic: percentages must sum to 0 or 100, got 90"),
    ("traffic not a mapping", _spec(ENDPOINT, traffic=["blue"]), EP + "spec.traffic: must be a mapping"),
    ("traffic to another endpoint's deployment", _route_to_iris_deployment,
     EP + "spec.traffic.red: deployment 'red' belongs to endpoint 'iris'"),
    ("mirror over 50", _spec(ENDPOINT, mirrorTraffic={"green": 51}),
     EP + "spec.mirrorTraffic.green: must be an integer from 0 to 50, got 51"),
    ("mirror two deployments", _spec(ENDPOINT, mirrorTraffic={"green": 5, "blue": 0}),
     EP + "spec.mirrorTraffic: at most one deployment, got 2"),
    ("mirror to a live deployment", _spec(ENDPOINT, traffic={"blue": 90, "green": 10}),
     EP + "spec.mirrorTraffic.green: deployment also receives 10% of live traffic"),
    ("keys secret missing", _spec(ENDPOINT, keysSecretRef="other-keys"),
     EP + "spec.keysSecretRef: no Secret 'other-keys' in namespace 'models'"),
    ("keys secret without keys", lambda docs: docs[SECRET].update(data={"token": _b64("t")}, stringData={}),
     EP + "spec.keysSecretRef: Secret 'mnist-keys' has neither a primaryKey nor a secondaryKey"),
    ("keys secret with empty keys", lambda docs: docs[SECRET].update(data={}, stringData={"primaryKey": ""}),
     EP + "spec.keysSecretRef: Secret 'mnist-keys' has neither"),
    ("keys secret in another namespace", _at(SECRET, "metadata", "namespace", value="other"),
     EP + "spec.keysSecretRef: no Secret 'mnist-keys' in namespace 'models'"),
    # deployment spec
    ("endpointName missing", _drop(BLUE, "spec", "endpointName"), BL + "spec.endpointName: required"),
    ("endpointName unknown", _spec(BLUE, endpointName="iris"),
     BL + "spec.endpointName: no OnlineEndpoint 'iris' in namespace 'models'"),
    ("backend missing", _drop(BLUE, "spec", "backend"), BL + "spec.backend: required"),
    ("backend with both", _at(BLUE, "spec", "backend", "urls", value=[]),
     BL + "spec.backend: must have exactly one of service, urls"),
    ("backend with neither", _spec(BLUE, backend={}), BL + "spec.backend: must have exactly one of"),
    ("service name missing", _spec(BLUE, backend={"service": {"port": 80}}),
     BL + "spec.backend.service.name: required"),
    ("service port missing", _spec(BLUE, backend={"service": {"name": "s"}}),
     BL + "spec.backend.service.port: required"),
    ("service port range", _spec(BLUE, backend={"service": {"name": "s", "port": 70000}}),
     BL + "spec.backend.service.port: must be a port number from 1 to 65535 or a port name, got 70000"),
    ("service port bool", _spec(BLUE, backend={"service": {"name": "s", "port": True}}),
     "spec.backend.service.port: must be a port number"),
    ("urls not a list", _spec(BLUE, backend={"urls": "http://a:1"}),
     BL + "spec.backend.urls: must be a list of URLs, got 'http://a:1'"),
    ("url scheme", _spec(BLUE, backend={"urls": ["ftp://a:1"]}),
     BL + "spec.backend.urls[0]: scheme must be http (the router speaks plain HTTP to replicas), got 'ftp://a:1'"),
    ("url host", _spec(BLUE, backend={"urls": ["http://:80"]}), "spec.backend.urls[0]: host is missing"),
    ("url port", _spec(BLUE, backend={"urls": ["http://a:99999"]}), "spec.backend.urls[0]: invalid URL"),
    ("url path", _spec(BLUE, backend={"urls": ["http://a:1/score"]}),
     "spec.backend.urls[0]: must have no path other than '/'"),
    ("url query", _spec(BLUE, backend={"urls": ["http://a:1/?x=1"]}),
     "spec.backend.urls[0]: must have no query or fragment"),
    ("url duplicate", _spec(BLUE, backend={"urls": ["http://a:1", "http://b:1", "http://a:1/"]}),
     BL + "spec.backend.urls[2]: duplicate of urls[0]"),
    ("url not a string", _spec(BLUE, backend={"urls": [5001]}), "spec.backend.urls[0]: must be a URL string"),
    ("scoringRoute without '/'", _spec(BLUE, scoringRoute="score"),
     BL + "spec.scoringRoute: must start with '/', got 'score'"),
    ("scoringRoute with query", _spec(BLUE, scoringRoute="/s?x=1"), "spec.scoringRoute: must not contain"),
    ("scoringRoute with '..'", _spec(BLUE, scoringRoute="/a/../b"), "spec.scoringRoute: must not contain"),
    ("scoringRoute with space", _spec(BLUE, scoringRoute="/a b"), "spec.scoringRoute: must not contain"),
    ("requestTimeoutMs float", _at(BLUE, "spec", "requestSettings", "requestTimeoutMs", value=5.0),
     BL + "spec.requestSettings.requestTimeoutMs: must be an integer from 1 to 300000, got 5.0"),
    ("requestTimeoutMs zero", _at(BLUE, "spec", "requestSettings", "requestTimeoutMs", value=0),
     "spec.requestSettings.requestTimeoutMs: must be an integer from 1 to 300000, got 0"),
    ("concurrency cap", _at(BLUE, "spec", "requestSettings", "maxConcurrentRequestsPerInstance", value=1001),
     "spec.requestSettings.maxConcurrentRequestsPerInstance: must be an integer from 1 to 1000, got 1001"),
    ("queue wait negative", _at(BLUE, "spec", "requestSettings", "maxQueueWaitMs", value=-1),
     "spec.requestSettings.maxQueueWaitMs: must be an integer from 0 to 300000, got -1"),
    ("scale type", _at(BLUE, "spec", "scaleSettings", "type", value="auto"),
     BL + "spec.scaleSettings.type: must be one of default, target_utilization, got 'auto'"),
    ("minInstances negative", _at(BLUE, "spec", "scaleSettings", "minInstances", value=-1),
     "spec.scaleSettings.minInstances: must be an integer >= 0, got -1"),
    ("maxInstances below min", _at(BLUE, "spec", "scaleSettings", "minInstances", value=4),
     BL + "spec.scaleSettings.maxInstances: must be at least minInstances (4), got 3"),
    ("maxInstances zero", _at(BLUE, "spec", "scaleSettings", "maxInstances", value=0),
     "spec.scaleSettings.maxInstances: must be an integer >= 1, got 0"),
    ("utilization", _at(BLUE, "spec", "scaleSettings", "targetUtilizationPercentage", value=0),
     "spec.scaleSettings.targetUtilizationPercentage: must be an integer from 1 to 100, got 0"),
    ("pollingInterval", _at(BLUE, "spec", "scaleSettings", "pollingInterval", value="1s"),
     "spec.scaleSettings.pollingInterval: must be an integer >= 1, got '1s'"),
    ("scaleTargetRef name", _drop(BLUE, "spec", "scaleSettings", "scaleTargetRef", "name"),
     BL + "spec.scaleSettings.scaleTargetRef.name: required"),
    ("scaleTargetRef kind", _at(BLUE, "spec", "scaleSettings", "scaleTargetRef", "kind", value="ReplicaSet"),
     BL + "spec.scaleSettings.scaleTargetRef.kind: must be one of Deployment, StatefulSet, got 'ReplicaSet'"),
    # secrets
    ("data not base64", _at(SECRET, "data", "primaryKey", value="not base64!"),
     SE + "data.primaryKey: must be base64 (use stringData for plain text)"),
    ("data not UTF-8", _at(SECRET, "data", "primaryKey", value=base64.b64encode(b"\xff\xfe").decode()),
     SE + "data.primaryKey: decoded value is not UTF-8 text"),
    ("stringData not a string", _at(SECRET, "stringData", "secondaryKey", value=42),
     SE + "stringData.secondaryKey: must be a string, got a number"),
    ("data not a mapping", _at(SECRET, "data", value="x"),
     SE + "data: must be a mapping of key names to values, got a string"),
    # keys: long enough, not a placeholder, sendable in a header
    ("placeholder key", _at(SECRET, "stringData", "secondaryKey", value="..."),
     SE + "stringData.secondaryKey: must be at least 16 characters (Azure ML's keys are 32), has 3"),
    ("one-character key", _at(SECRET, "data", "primaryKey", value=_b64(" ")),
     SE + "data.primaryKey: must be at least 16 characters (Azure ML's keys are 32), has 1"),
    ("15-character key", _at(SECRET, "stringData", "secondaryKey", value="k" * 14 + "!"),
     SE + "stringData.secondaryKey: must be at least 16 characters"),
    ("long placeholder key", _at(SECRET, "stringData", "secondaryKey", value="<your-secondary-key>"),
     SE + "stringData.secondaryKey: looks like a placeholder: put a real key here"),
    ("dots in a key", _at(SECRET, "stringData", "secondaryKey", value="paste-your-key-here..."),
     SE + "stringData.secondaryKey: looks like a placeholder"),
    ("one character repeated", _at(SECRET, "stringData", "secondaryKey", value="x" * 32),
     SE + "stringData.secondaryKey: looks like a placeholder"),
    ("space in a key", _at(SECRET, "stringData", "secondaryKey", value="two words-Tg5Hy6Ju7Ki8Lo9P"),
     SE + "stringData.secondaryKey: must be printable ASCII without spaces: it is sent in an HTTP header"),
    ("short signing key", _at(SECRET, "stringData", "tokenSigningKey", value="signing"),
     SE + "stringData.tokenSigningKey: must be at least 16 characters"),
    # duplicates
    ("duplicate deployment", lambda docs: docs.append(copy.deepcopy(docs[BLUE])),
     BL + "metadata.name: duplicate of document 2"),
    ("same endpoint name in two namespaces",
     _append({"apiVersion": API, "kind": "OnlineEndpoint",
              "metadata": {"name": "mnist", "namespace": "other"}}),
     "OnlineEndpoint other/mnist: metadata.name: endpoint name also used in namespace models (document 1)"),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in CASES], ids=[n for n, _, _ in CASES])
def test_each_rule_names_the_document_and_field(mutate: Mutation, expected: str) -> None:
    docs = example()
    mutate(docs)

    problems = problems_of(docs)

    assert any(expected in problem for problem in problems), problems


def test_a_refused_key_is_never_shown() -> None:
    for value in ("MARKER-1", "<MARKER-2-placeholder>", "MARKER 3 with spaces in it", "MARKER-4..."):
        docs = example()
        docs[SECRET]["stringData"]["secondaryKey"] = value
        (problem,) = problems_of(docs)
        assert "MARKER" not in problem and problem.startswith(SE + "stringData.secondaryKey: "), problem


def test_a_secret_shows_the_names_of_its_keys_never_their_values() -> None:
    (secret,) = parse_documents(example()).secrets
    assert repr(secret) == "Secret(models/mnist-keys, keys=['primaryKey', 'secondaryKey'])"
    assert secret.data["primaryKey"] not in repr(parse_documents(example())) + str(secret)


def test_every_problem_is_reported_at_once() -> None:
    docs = example()
    docs[ENDPOINT]["spec"]["traffic"] = {"blue": "x", "green": 0}
    docs[BLUE]["spec"]["scoringRoute"] = "score"
    docs[BLUE]["spec"]["requestSettings"]["requestTimeoutMs"] = True
    docs[SECRET]["data"]["primaryKey"] = "!!"

    problems = problems_of(docs)

    assert problems == [
        "OnlineEndpoint models/mnist: spec.traffic.blue: must be an integer from 0 to 100, got 'x'",
        "OnlineDeployment models/blue: spec.scoringRoute: must start with '/', got 'score'",
        "OnlineDeployment models/blue: spec.requestSettings.requestTimeoutMs: "
        "must be an integer from 1 to 300000, got True",
        "Secret models/mnist-keys: data.primaryKey: must be base64 (use stringData for plain text)",
    ]


def test_references_to_a_rejected_document_are_not_reported_again() -> None:
    docs = example()
    docs[BLUE]["spec"]["scoringRoute"] = "score"  # blue is rejected; mnist's traffic to blue is not reported

    problems = problems_of(docs)

    assert problems == ["OnlineDeployment models/blue: spec.scoringRoute: must start with '/', got 'score'"]


def test_a_rejected_document_still_has_its_own_references_checked() -> None:
    docs = example()
    docs[ENDPOINT]["spec"].update(traffic={"blue": 50, "green": 0}, keysSecretRef="other-keys")

    assert problems_of(docs) == [
        "OnlineEndpoint models/mnist: spec.traffic: percentages must sum to 0 or 100, got 50",
        "OnlineEndpoint models/mnist: spec.keysSecretRef: no Secret 'other-keys' in namespace 'models'",
    ]


def test_unnamed_documents_are_numbered_from_one_counting_empty_ones() -> None:
    docs: list[Any] = [
        None,
        {"apiVersion": API, "kind": "OnlineEndpoint", "metadata": {"name": "iris"}},
        {"apiVersion": API, "kind": "OnlineDeployment", "metadata": {},
         "spec": {"endpointName": "iris", "backend": {"urls": []}}},
    ]

    assert problems_of(docs) == ["document 3 (OnlineDeployment): metadata.name: required"]


def test_a_share_of_a_missing_deployment_is_dropped_and_noted_as_in_a_cluster() -> None:
    docs = example()
    docs[0]["spec"].update(traffic={"blue": 90, "green": 0, "red": 10}, mirrorTraffic={"gray": 5})
    notes: list[str] = []

    [endpoint] = parse_documents(docs, notes=notes).endpoints

    assert dict(endpoint.traffic) == {"blue": 90, "green": 0}  # blue takes all of it
    assert dict(endpoint.mirror_traffic) == {}
    assert notes == [
        "OnlineEndpoint models/mnist: spec.traffic.red: no OnlineDeployment 'red' in namespace 'models'; "
        "its 10% is not routed",
        "OnlineEndpoint models/mnist: spec.mirrorTraffic.gray: no OnlineDeployment 'gray' in namespace "
        "'models'; its 5% is not routed"]


def test_a_share_of_a_rejected_deployment_is_not_dropped_but_the_file_refused() -> None:
    docs = example()
    docs[1]["spec"]["scoringRoute"] = "score"
    assert problems_of(docs) == ["OnlineDeployment models/blue: spec.scoringRoute: must start with '/', got 'score'"]


@pytest.mark.parametrize(("text", "line", "problem"), [
    # a Secret appended to a file without `---`: it would silently replace the document before it
    (EXAMPLE + "apiVersion: v1\nkind: Secret\nmetadata: {name: router-tls}\n", 49,
     "duplicate key 'apiVersion' (first on line 40; a document appended without '---'?)"),
    ("kind: Secret\nstringData: {primaryKey: one, primaryKey: two}\n", 2, "duplicate key 'primaryKey'"),
])
def test_a_mapping_with_a_key_twice_is_refused(text: str, line: int, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_yaml(text, origin="models.yaml")

    (message,) = caught.value.problems
    assert message.startswith(f"models.yaml: invalid YAML: line {line}, column ")
    assert problem in message


def test_merge_keys_may_still_override_what_they_merge() -> None:
    text = EXAMPLE.replace("  requestSettings:\n    requestTimeoutMs: 5000\n",
                           "  requestSettings:\n    <<: {requestTimeoutMs: 100}\n    requestTimeoutMs: 5000\n")
    assert "<<" in text
    blue = next(d for d in load_yaml(text, origin="models.yaml").deployments if d.name == "blue")
    assert blue.request_settings.request_timeout_ms == 5000


def test_invalid_yaml_names_the_origin_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        load_yaml("kind: OnlineEndpoint\nmetadata: {name: mnist\nspec: {}\n", origin="models.yaml")

    (problem,) = caught.value.problems
    assert problem.startswith("models.yaml: invalid YAML: line 3, column 5: ")


def test_load_file_reads_and_parses(tmp_path: Path) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")

    assert [endpoint.name for endpoint in load_file(path).endpoints] == ["mnist"]


def test_load_file_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as caught:
        load_file(missing)

    assert caught.value.problems == [f"{missing}: cannot read: No such file or directory"]
