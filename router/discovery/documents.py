"""Turn resource documents (DESIGN §2) into validated `router.model` value objects.

Every problem is collected rather than stopping at the first: each document is checked
on its own, then the references between documents (deployment → endpoint, traffic and
mirrorTraffic → deployments of that endpoint, keysSecretRef → Secret). A message reads
`<Kind> <namespace>/<name>: <field.path>: <problem>`; a document whose metadata does not
name it is called `document <n> (<Kind>)`, counting documents from 1. A reference to a
document that was itself rejected is not reported a second time, and nothing is returned
unless every document is valid: a source keeps its last good state instead.
A traffic or mirror share naming a deployment the documents lack is not an error but a
note, and the share is dropped (the endpoint's other deployments take the traffic): a
cluster source treats it so (it is a normal moment of an edit there), and a file does
the same. `parse_document` checks one document alone, for the cluster source, which
accepts or rejects documents one by one. YAML mappings with a key twice are refused:
PyYAML would keep the last one silently (a document appended without `---` merges
into the one before).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import yaml

from router.errors import ConfigError
from router.model import (
    AuthMode,
    OnlineDeployment,
    OnlineEndpoint,
    RequestSettings,
    Resources,
    ScaleSettings,
    ScaleTargetRef,
    Secret,
    ServiceRef,
)

API_VERSION = "inference-router.dev/v1alpha1"
ScaleType = Literal["default", "target_utilization"]
_CR_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
_SECRET_KEYS = ("apiVersion", "kind", "metadata", "type", "data", "stringData", "immutable")
_ENDPOINT_SPEC = ("authMode", "keysSecretRef", "traffic", "mirrorTraffic")
_DEPLOYMENT_SPEC = ("endpointName", "backend", "scoringRoute", "requestSettings", "scaleSettings")
_REQUEST_KEYS = ("requestTimeoutMs", "maxConcurrentRequestsPerInstance", "maxQueueWaitMs")
_SCALE_KEYS = ("type", "minInstances", "maxInstances", "targetUtilizationPercentage", "pollingInterval",
               "scaleTargetRef")
Rule = Callable[[str], "str | None"]  # a problem with a string value, or None
ENDPOINT_KEYS = ("primaryKey", "secondaryKey", "tokenSigningKey")  # Secret keys the router authenticates with
MIN_KEY_LENGTH = 16


def _pattern(regex: str, what: str, longest: int) -> Rule:
    compiled = re.compile(regex)
    return lambda text: None if len(text) <= longest and compiled.fullmatch(text) else f"must be {what}"


_resource_name = _pattern(r"[a-z][a-z0-9-]{1,30}[a-z0-9]", "3 to 32 characters of a-z, 0-9 and '-', "
                          "starting with a letter and ending with a letter or digit", 32)
_label = _pattern(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?",
                  "a DNS-1123 label (a-z, 0-9, '-', at most 63 characters)", 63)
_subdomain = _pattern(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*",
                      "a DNS-1123 subdomain (a-z, 0-9, '-', '.', at most 253 characters)", 253)


@dataclass(frozen=True, slots=True)
class _At:
    """A field of one document, for messages: `at / "spec" / "traffic"` is `spec.traffic`."""

    label: str
    problems: list[str]
    path: str = ""

    def __truediv__(self, key: object) -> _At:
        step = f"[{key}]" if type(key) is int else f".{key}" if self.path else str(key)
        return _At(self.label, self.problems, self.path + step)

    def fail(self, problem: str) -> None:
        self.problems.append(f"{self.label}: {self.path + ': ' if self.path else ''}{problem}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Field readers: report what is wrong at `at`, and return a usable value either way
# (the document is discarded when it has any problem, so the fallback never escapes).

def _fields(at: _At, value: object, allowed: tuple[str, ...] | None, *, required: bool = False
            ) -> dict[str, Any] | None:
    """The mapping at `at` with unknown keys reported; None when absent or not a mapping."""
    if not isinstance(value, dict):
        if value is not None or required:
            at.fail("required" if value is None else f"must be a mapping, got {_show(value)}")
        return None
    for key in value:
        if allowed is not None and key not in allowed:
            (at / key).fail("unknown field")
    return value


def _int(at: _At, value: object, default: int | None, lo: int, hi: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if type(value) is int and lo <= value and (hi is None or value <= hi):
        return value
    bounds = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
    at.fail("required" if value is None else f"must be an integer {bounds}, got {_show(value)}")
    return lo


def _str(at: _At, value: object, default: str | None = None, rule: Rule | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or not value:
        at.fail("required" if value is None else f"must be a non-empty string, got {_show(value)}")
        return default or ""
    problem = rule(value) if rule else None
    if problem:
        at.fail(f"{problem}, got {_show(value)}")
    return value


def _choice(at: _At, value: object, choices: tuple[str, ...]) -> str:
    if value is None:
        return choices[0]
    if value not in choices:
        at.fail(f"must be one of {', '.join(choices)}, got {_show(value)}")
        return choices[0]
    return cast(str, value)


def _route(route: str) -> str | None:
    if not route.startswith("/"):
        return "must start with '/'"
    if ".." in route or any(c.isspace() or c in "?#" for c in route):
        return "must not contain spaces, '?', '#' or '..'"
    return None


# One document

def _read_endpoint(at: _At, doc: dict[str, Any], namespace: str, name: str) -> OnlineEndpoint:
    at = at / "spec"
    spec = _fields(at, doc.get("spec"), _ENDPOINT_SPEC) or {}
    ref = spec.get("keysSecretRef")
    before = len(at.problems)
    traffic = _shares(at / "traffic", spec.get("traffic"), 100)
    if len(at.problems) == before and sum(traffic.values()) not in (0, 100):
        (at / "traffic").fail(f"percentages must sum to 0 or 100, got {sum(traffic.values())}")
    mirror = _shares(at / "mirrorTraffic", spec.get("mirrorTraffic"), 50)
    if len(mirror) > 1:
        (at / "mirrorTraffic").fail(f"at most one deployment, got {len(mirror)}")
    for deployment, share in mirror.items():
        if share and traffic.get(deployment):
            (at / "mirrorTraffic" / deployment).fail(
                f"deployment also receives {traffic[deployment]}% of live traffic")
    return OnlineEndpoint(
        namespace=namespace, name=name,
        auth_mode=cast(AuthMode, _choice(at / "authMode", spec.get("authMode"), ("key", "aml_token"))),
        keys_secret_ref=None if ref is None else _str(at / "keysSecretRef", ref, rule=_subdomain),
        traffic=MappingProxyType(traffic), mirror_traffic=MappingProxyType(mirror),
    )


def _shares(at: _At, value: object, most: int) -> dict[str, int]:
    shares = _fields(at, value, None) or {}
    return {str(name): _int(at / name, share, None, 0, most) for name, share in shares.items()}


def _read_deployment(at: _At, doc: dict[str, Any], namespace: str, name: str) -> OnlineDeployment:
    at = at / "spec"
    spec = _fields(at, doc.get("spec"), _DEPLOYMENT_SPEC) or {}
    service, urls = _backend(at / "backend", spec.get("backend"))
    return OnlineDeployment(
        namespace=namespace, name=name,
        endpoint_name=_str(at / "endpointName", spec.get("endpointName")),
        service=service, urls=urls,
        scoring_route=_str(at / "scoringRoute", spec.get("scoringRoute"), "/score", _route),
        request_settings=_request_settings(at / "requestSettings", spec.get("requestSettings")),
        scale_settings=_scale_settings(at / "scaleSettings", spec.get("scaleSettings")),
    )


def _backend(at: _At, value: object) -> tuple[ServiceRef | None, tuple[str, ...] | None]:
    backend = _fields(at, value, ("service", "urls"), required=True)
    if backend is None:
        return None, None
    if (backend.get("service") is None) == (backend.get("urls") is None):
        at.fail("must have exactly one of service, urls")
        return None, None
    if backend.get("service") is not None:
        return _service(at / "service", backend["service"]), None
    return None, _urls(at / "urls", backend["urls"])


def _service(at: _At, value: object) -> ServiceRef | None:
    service = _fields(at, value, ("name", "port"))
    if service is None:
        return None
    port = service.get("port")
    if port is None:
        (at / "port").fail("required")
    elif not ((isinstance(port, str) and port) or (type(port) is int and 1 <= port <= 65535)):
        (at / "port").fail(f"must be a port number from 1 to 65535 or a port name, got {_show(port)}")
    return ServiceRef(name=_str(at / "name", service.get("name"), rule=_label), port=port or 0)


def _urls(at: _At, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        at.fail(f"must be a list of URLs, got {_show(value)}")
        return ()
    seen: dict[str, int] = {}
    for index, url in enumerate(value):
        normal = _url(at / index, url)
        if normal is not None and normal in seen:
            (at / index).fail(f"duplicate of urls[{seen[normal]}]")
        elif normal is not None:
            seen[normal] = index
    return tuple(seen)


def _url(at: _At, url: object) -> str | None:
    """`url` without a trailing '/', or None after reporting why it is not a replica URL."""
    if not isinstance(url, str):
        at.fail(f"must be a URL string, got {_show(url)}")
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        at.fail(f"invalid URL {url!r}: {exc}")
        return None
    problem = (
        "scheme must be http (the router speaks plain HTTP to replicas)" if parts.scheme.lower() != "http"
        else "host is missing" if not parts.hostname
        else "must not contain spaces or user info" if "@" in parts.netloc or any(c.isspace() for c in url)
        else "port must be from 1 to 65535" if port == 0
        else "must have no path other than '/'" if parts.path not in ("", "/")
        else "must have no query or fragment" if "?" in url or "#" in url
        else None
    )
    if problem:
        at.fail(f"{problem}, got {url!r}")
        return None
    return url.removesuffix("/")


def _request_settings(at: _At, value: object) -> RequestSettings:
    got = _fields(at, value, _REQUEST_KEYS) or {}
    timeout, concurrency, wait = (_int(at / key, got.get(key), default, lo, hi) for key, default, lo, hi in (
        ("requestTimeoutMs", 5000, 1, 300_000),
        ("maxConcurrentRequestsPerInstance", 1, 1, 1000),
        ("maxQueueWaitMs", 500, 0, 300_000)))
    return RequestSettings(request_timeout_ms=timeout, max_concurrent_requests_per_instance=concurrency,
                           max_queue_wait_ms=wait)


def _scale_settings(at: _At, value: object) -> ScaleSettings | None:
    settings = _fields(at, value, _SCALE_KEYS)
    if settings is None:
        return None
    before = len(at.problems)
    low = _int(at / "minInstances", settings.get("minInstances"), 1, 0)
    high = _int(at / "maxInstances", settings.get("maxInstances"), max(low, 1), 1)
    if high < low and len(at.problems) == before:
        (at / "maxInstances").fail(f"must be at least minInstances ({low}), got {high}")
    ref_at = at / "scaleTargetRef"
    ref = _fields(ref_at, settings.get("scaleTargetRef"), ("kind", "name"))
    return ScaleSettings(
        type=cast(ScaleType, _choice(at / "type", settings.get("type"), ("default", "target_utilization"))),
        min_instances=low, max_instances=high,
        target_utilization_percentage=_int(
            at / "targetUtilizationPercentage", settings.get("targetUtilizationPercentage"), 70, 1, 100),
        polling_interval=_int(at / "pollingInterval", settings.get("pollingInterval"), 1, 1),
        scale_target_ref=None if ref is None else ScaleTargetRef(
            kind=_choice(ref_at / "kind", ref.get("kind"), ("Deployment", "StatefulSet")),
            name=_str(ref_at / "name", ref.get("name"), rule=_subdomain)),
    )


def _read_secret(at: _At, doc: dict[str, Any], namespace: str, name: str) -> Secret:
    # A Secret's values never appear in a message (logs, errors): only the key and the problem.
    data: dict[str, str] = {}
    for key, value in _secret_values(at / "data", doc.get("data")).items():
        data[str(key)] = _decode(at / "data" / key, value)
    for key, value in _secret_values(at / "stringData", doc.get("stringData")).items():
        if not isinstance(value, str):
            (at / "stringData" / key).fail(f"must be a string, got {_kind(value)}")
        data[str(key)] = str(value)
    for key in ENDPOINT_KEYS:
        problem = key_problem(key, data[key]) if data.get(key) else None
        if problem:
            given_as = "stringData" if isinstance(doc.get("stringData"), dict) and key in doc["stringData"] else "data"
            (at / given_as / key).fail(problem)
    if doc.get("type") is not None and not isinstance(doc["type"], str):
        (at / "type").fail(f"must be a string, got {_show(doc['type'])}")
    if doc.get("immutable") is not None and not isinstance(doc["immutable"], bool):
        (at / "immutable").fail(f"must be true or false, got {_show(doc['immutable'])}")
    return Secret(namespace=namespace, name=name, data=MappingProxyType(data))


def key_problem(name: str, key: str) -> str | None:
    """Why an endpoint key (or tokenSigningKey) cannot be used, without showing it; None if it can."""
    if len(key) < MIN_KEY_LENGTH:
        return (f"must be at least {MIN_KEY_LENGTH} characters (Azure ML's keys are 32), has {len(key)}: "
                "generate one with `openssl rand -base64 24`")
    if "..." in key or key[0] + key[-1] in ("<>", "{}", "[]") or len(set(key)) == 1:
        return "looks like a placeholder: put a real key here (`openssl rand -base64 24`)"
    if name != "tokenSigningKey" and not all("!" <= c <= "~" for c in key):
        return "must be printable ASCII without spaces: it is sent in an HTTP header"
    return None


def _secret_values(at: _At, value: object) -> dict[Any, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        at.fail(f"must be a mapping of key names to values, got {_kind(value)}")
        return {}
    return value


def _kind(value: object) -> str:
    """What a value is, without what it says (for Secret values)."""
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping",
            str: "a string"}.get(type(value), "null" if value is None else "another type")


def _decode(at: _At, value: object) -> str:
    try:
        if not isinstance(value, str):
            raise binascii.Error
        return base64.b64decode("".join(value.split()), validate=True).decode("utf-8")
    except UnicodeDecodeError:
        at.fail("decoded value is not UTF-8 text")
    except ValueError:  # binascii.Error, or non-ASCII text
        at.fail("must be base64 (use stringData for plain text)" if isinstance(value, str)
                else f"must be a base64 string, got {_kind(value)}")
    return ""


_Reader = Callable[[_At, dict[str, Any], str, str], object]
_KINDS: dict[tuple[str, str], tuple[_Reader, tuple[str, ...], Rule]] = {
    (API_VERSION, "OnlineEndpoint"): (_read_endpoint, _CR_KEYS, _resource_name),
    (API_VERSION, "OnlineDeployment"): (_read_deployment, _CR_KEYS, _resource_name),
    ("v1", "Secret"): (_read_secret, _SECRET_KEYS, _subdomain),
}


# All documents

@dataclass
class _Found:
    """Every document read (label, object), the valid ones by identity, and what was seen or rejected."""

    problems: list[str] = field(default_factory=list)
    documents: list[tuple[str, object]] = field(default_factory=list)
    objects: dict[tuple[str, str, str], object] = field(default_factory=dict)
    seen: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rejected: set[tuple[str, str, str]] = field(default_factory=set)

    def missing(self, kind: str, namespace: str, name: str) -> bool:
        """True when nothing of that identity exists, not even a rejected document."""
        key = (kind, namespace, name)
        return key not in self.objects and key not in self.rejected


def _read_document(number: int, doc: object, found: _Found) -> None:
    if not isinstance(doc, dict):
        found.problems.append(f"document {number}: must be a mapping, got {_show(doc)}")
        return
    api, kind = doc.get("apiVersion"), doc.get("kind")
    known = _KINDS.get((str(api), str(kind)))
    if known is None:
        found.problems.append(f"document {number}: apiVersion/kind: unsupported {_show(api)}/{_show(kind)}; "
                              f"expected {API_VERSION} OnlineEndpoint or OnlineDeployment, or v1 Secret")
        return
    read, top_keys, name_rule = known
    meta = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
    at = _At(_document_label(number, kind, meta), [])
    _fields(at, doc, top_keys)
    name, namespace = "", "default"
    if _fields(at / "metadata", doc.get("metadata"), None, required=True) is not None:
        name = _str(at / "metadata" / "name", meta.get("name"), rule=name_rule)
        namespace = _str(at / "metadata" / "namespace", meta.get("namespace"), "default", rule=_label)
    value = read(at, doc, namespace, name)
    found.documents.append((at.label, value))
    key = (str(kind), namespace, name)
    _check_unique(at / "metadata" / "name", number, key, found)
    found.problems.extend(at.problems)
    if at.problems and name:
        found.rejected.add(key)
    elif not at.problems:
        found.objects[key] = value


def _document_label(number: int, kind: object, meta: dict[str, Any]) -> str:
    """`Kind namespace/name` when the metadata says so, else `document <number> (Kind)`."""
    namespace, name = meta.get("namespace") or "default", meta.get("name")
    if isinstance(name, str) and name and isinstance(namespace, str):
        return f"{kind} {namespace}/{name}"
    return f"document {number} ({kind})"


def _check_unique(at: _At, number: int, key: tuple[str, str, str], found: _Found) -> None:
    kind, _, name = key
    if not name:
        return
    if key in found.seen:
        at.fail(f"duplicate of document {found.seen[key]}")
    elif kind == "OnlineEndpoint":
        for (other_kind, other_namespace, other_name), other in found.seen.items():
            if other_kind == kind and other_name == name:
                at.fail(f"endpoint name also used in namespace {other_namespace} (document {other}); "
                        "scoring URLs carry only the endpoint name")
    found.seen.setdefault(key, number)


def _check_references(found: _Found) -> None:
    """References from every document, rejected ones too; an empty one was reported as invalid."""
    for label, value in found.documents:
        at = _At(label, found.problems, "spec")
        if isinstance(value, OnlineDeployment) and value.endpoint_name and found.missing(
                "OnlineEndpoint", value.namespace, value.endpoint_name):
            (at / "endpointName").fail(
                f"no OnlineEndpoint {value.endpoint_name!r} in namespace {value.namespace!r}")
        if isinstance(value, OnlineEndpoint):
            if value.keys_secret_ref:
                _check_keys(at / "keysSecretRef", value, value.keys_secret_ref, found)
            for field_name, shares in (("traffic", value.traffic), ("mirrorTraffic", value.mirror_traffic)):
                for deployment in shares:
                    _check_deployment(at / field_name / deployment, value, deployment, found)


def _check_keys(at: _At, endpoint: OnlineEndpoint, ref: str, found: _Found) -> None:
    secret = found.objects.get(("Secret", endpoint.namespace, ref))
    if isinstance(secret, Secret):
        if not secret.keys:
            at.fail(f"Secret {ref!r} has neither a primaryKey nor a secondaryKey")
    elif found.missing("Secret", endpoint.namespace, ref):
        at.fail(f"no Secret {ref!r} in namespace {endpoint.namespace!r}")


def _check_deployment(at: _At, endpoint: OnlineEndpoint, name: str, found: _Found) -> None:
    deployment = found.objects.get(("OnlineDeployment", endpoint.namespace, name))
    if isinstance(deployment, OnlineDeployment) and deployment.endpoint_name != endpoint.name:
        at.fail(f"deployment {name!r} belongs to endpoint {deployment.endpoint_name!r}")
    # a deployment that is missing altogether is not a problem: `_drop_missing_shares` notes it


def _drop_missing_shares(found: _Found, notes: list[str]) -> None:
    """Endpoints without the shares of deployments that do not exist, each dropped share noted."""
    for key, value in list(found.objects.items()):
        if not isinstance(value, OnlineEndpoint):
            continue
        kept: dict[str, dict[str, int]] = {"traffic": {}, "mirrorTraffic": {}}
        for field_name, shares in (("traffic", value.traffic), ("mirrorTraffic", value.mirror_traffic)):
            for name, share in shares.items():
                if not found.missing("OnlineDeployment", value.namespace, name):
                    kept[field_name][name] = share
                elif share:
                    notes.append(f"OnlineEndpoint {value.namespace}/{value.name}: spec.{field_name}.{name}: no "
                                 f"OnlineDeployment {name!r} in namespace {value.namespace!r}; its {share}% is "
                                 "not routed")
        if kept["traffic"] != dict(value.traffic) or kept["mirrorTraffic"] != dict(value.mirror_traffic):
            found.objects[key] = dataclasses.replace(value, traffic=MappingProxyType(kept["traffic"]),
                                                     mirror_traffic=MappingProxyType(kept["mirrorTraffic"]))


def parse_documents(docs: Iterable[object], *, origin: str = "<input>", notes: list[str] | None = None
                    ) -> Resources:
    """Validate loaded YAML/JSON documents; raise ConfigError listing every problem.

    `None` documents (empty YAML sections) are skipped but still counted. `origin` is not
    put into messages (they name the document and field); callers may prefix it. What is
    valid but not routed as written (a share of a missing deployment) is added to `notes`.
    """
    found = _Found()
    for number, doc in enumerate(docs, start=1):
        if doc is not None:
            _read_document(number, doc, found)
    _check_references(found)
    if found.problems:
        raise ConfigError(list(dict.fromkeys(found.problems)))  # duplicate documents repeat their problems
    _drop_missing_shares(found, [] if notes is None else notes)
    values = list(found.objects.values())
    return Resources(
        endpoints=tuple(v for v in values if isinstance(v, OnlineEndpoint)),
        deployments=tuple(v for v in values if isinstance(v, OnlineDeployment)),
        secrets=tuple(v for v in values if isinstance(v, Secret)),
    )


def parse_document(doc: object) -> OnlineEndpoint | OnlineDeployment | Secret:
    """Validate one document alone, without its references to others; raise ConfigError if invalid.

    For sources that accept or reject documents one by one (a cluster), and resolve the
    references between the accepted ones themselves.
    """
    found = _Found()
    _read_document(1, doc, found)
    if found.problems:
        raise ConfigError(list(dict.fromkeys(found.problems)))
    (value,) = found.objects.values()
    return cast(OnlineEndpoint | OnlineDeployment | Secret, value)


class _Loader(yaml.SafeLoader):
    """YAML's safe subset, refusing a mapping that holds a key twice (YAML forbids it; PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges keys that the mapping's own keys may override
            key = self.construct_object(key_node, deep=deep)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class says so
                break
            if earlier is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {earlier.start_mark.line + 1}; "
                    "a document appended without '---'?)", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, *, origin: str, notes: list[str] | None = None) -> Resources:
    """Parse a multi-document YAML text; syntax errors name `origin`, line and column."""
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc, origin)]) from None
    return parse_documents(docs, origin=origin, notes=notes)


def yaml_problem(exc: yaml.YAMLError, origin: str) -> str:
    """A YAML syntax error naming `origin`, line and column, without the text around it (a Secret's lines)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"{origin}: invalid YAML: {where}{exc.problem or exc.context}"
    return f"{origin}: invalid YAML: {exc}"


def read_text(path: str | os.PathLike[str]) -> str:
    """A resource file's text; an unreadable file is a ConfigError naming the path."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{os.fspath(path)}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{os.fspath(path)}: cannot read: not UTF-8 text"]) from None


def load_file(path: str | os.PathLike[str]) -> Resources:
    """Read and parse a resource file; an unreadable file is a ConfigError naming the path."""
    return load_yaml(read_text(path), origin=os.fspath(path))
