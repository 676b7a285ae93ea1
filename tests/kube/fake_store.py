"""The fake API server's state: objects, one resourceVersion counter, the history of changes.

What a real API server (and etcd) guarantees and the router relies on: every write bumps one
global `resourceVersion`; objects carry `uid`, `creationTimestamp` and `generation` (bumped by
spec changes only); the custom resources have a `status` subresource (the main resource ignores
`status`, `/status` changes nothing else); a no-op write changes nothing; label and field
selectors as the API parses them; RFC 7386 merge patch; a status write is checked against
the CRD's schema (manifests/crds), 422 when it breaks it. Specs are not checked: tests store
specs the CRD would refuse, as a cluster with an older CRD (or none) lets through, to see the
router refuse them itself.
"""

from __future__ import annotations

import copy
import datetime
import functools
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

Obj = dict[str, Any]
CRDS = Path(__file__).resolve().parents[2] / "manifests" / "crds"


@functools.cache
def crd_schemas() -> dict[str, Obj]:
    """Each custom resource's openAPIV3Schema, by plural, as installed from manifests/crds."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
        schemas[crd["spec"]["names"]["plural"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def schema_problem(schema: Obj, obj: Obj) -> str | None:
    """The first way `obj` breaks an OpenAPI v3 structural schema, in the API server's words, or None.

    (jsonschema reads the keywords a structural schema shares with JSON Schema; the `x-kubernetes-*`
    extensions and CEL rules are not evaluated.)
    """
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(obj))
    if error is None:
        return None
    return f"{'.'.join(str(p) for p in error.absolute_path)}: Invalid value: {error.message}"


@dataclass(frozen=True)
class ResourceType:
    plural: str
    group: str  # "" for the core group
    version: str
    kind: str
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def builtin(self) -> bool:
        return not self.group.endswith("inference-router.dev")


TYPES = {t.plural: t for t in (
    ResourceType("onlineendpoints", "inference-router.dev", "v1alpha1", "OnlineEndpoint", True),
    ResourceType("onlinedeployments", "inference-router.dev", "v1alpha1", "OnlineDeployment", True),
    ResourceType("endpointslices", "discovery.k8s.io", "v1", "EndpointSlice"),
    ResourceType("secrets", "", "v1", "Secret"),
    ResourceType("services", "", "v1", "Service"),
    ResourceType("leases", "coordination.k8s.io", "v1", "Lease"),
    ResourceType("deployments", "apps", "v1", "Deployment"),  # with the /scale subresource
    ResourceType("statefulsets", "apps", "v1", "StatefulSet"),  # with the /scale subresource
    ResourceType("horizontalpodautoscalers", "autoscaling", "v2", "HorizontalPodAutoscaler"),
    ResourceType("events", "", "v1", "Event"),
)}
SCALABLE = ("deployments", "statefulsets")

class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.retry_after = retry_after

    def status(self) -> Obj:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


# Selectors

_REQUIREMENT = re.compile(r"\s*(?P<not>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
                          r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)"
                          r"|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*(?:,|$)")


def label_selector(text: str) -> Callable[[Obj], bool]:
    """A label selector in the API's string form, as a predicate on objects."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    position = 0
    while position < len(text):
        match = _REQUIREMENT.match(text, position)
        if match is None or match.end() == position:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {text[position:]!r}")
        position = match.end()
        key, op, value = match["key"], match["op"] or match["setop"], match["value"]
        if match["not"]:
            if op:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {match.group(0)!r}")
            tests.append(lambda labels, k=key: k not in labels)
        elif op in ("=", "=="):
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif op in ("in", "notin"):
            values = {v.strip() for v in match["values"].split(",")}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        else:
            tests.append(lambda labels, k=key: k in labels)
    return lambda obj: all(test(obj["metadata"].get("labels") or {}) for test in tests)


def field_selector(text: str) -> Callable[[Obj], bool]:
    tests: list[Callable[[Obj], bool]] = []
    for requirement in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", requirement)
        if match is None:
            raise ApiError(400, "BadRequest", f"invalid field selector: {requirement!r}")
        path, op, value = match.groups()
        if path not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{path}"')
        attribute = path.split(".")[1]
        if op == "!=":
            tests.append(lambda obj, a=attribute, v=value: obj["metadata"].get(a) != v)
        else:
            tests.append(lambda obj, a=attribute, v=value: obj["metadata"].get(a) == v)
    return lambda obj: all(test(obj) for test in tests)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The store

@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    obj: Obj
    old: Obj | None


@dataclass
class Store:
    cond: threading.Condition = field(default_factory=threading.Condition)
    # the installed CRDs' schemas, by plural: a test tightens one to see a status write refused
    schemas: dict[str, Obj] = field(default_factory=lambda: copy.deepcopy(crd_schemas()))
    rv: int = 100
    compacted: int = 0  # watches from an older version get 410
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    history: list[Event] = field(default_factory=list)

    def _record(self, kind: str, plural: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append(Event(self.rv, kind, plural, copy.deepcopy(obj), old))
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def create(self, plural: str, namespace: str, obj: Obj) -> Obj:
        rtype = TYPES[plural]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
        with self.cond:
            key = (plural, namespace, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
            obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
            if rtype.status_subresource:
                meta["generation"] = 1
                obj.pop("status", None)
            self.objects[key] = obj
            return self._record("ADDED", plural, obj, None)

    def get(self, plural: str, namespace: str, name: str) -> Obj:
        with self.cond:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            return copy.deepcopy(obj)

    def update(self, plural: str, namespace: str, name: str, change: Callable[[Obj], Obj], *,
               status: bool = False, expect_rv: str | None = None) -> Obj:
        """Apply `change` to a copy of the object; `status` selects the status subresource."""
        rtype = TYPES[plural]
        with self.cond:
            old = self.objects.get((plural, namespace, name))
            if old is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                                                "the object has been modified; please apply your changes "
                                                "to the latest version and try again")
            new = change(copy.deepcopy(old))
            kept = {k: old["metadata"][k] for k in ("uid", "creationTimestamp", "namespace", "name",
                                                      "generation") if k in old["metadata"]}
            new["metadata"] = {**new.get("metadata", {}), **kept}
            new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
            if status and not rtype.status_subresource:
                raise ApiError(404, "NotFound", f"{plural} has no status subresource")
            if status:  # only the status changes, and it must fit the CRD
                new = {**{k: v for k, v in old.items() if k != "status"},
                       **({"status": new["status"]} if new.get("status") is not None else {})}
                schema = self.schemas.get(plural, {}).get("properties", {}).get("status")
                problem = schema_problem(schema, new.get("status") or {}) if schema else None
                if problem is not None:
                    raise ApiError(422, "Invalid", f'{rtype.kind}.{rtype.group} "{name}" is invalid: '
                                                   f"status.{problem}")
            elif rtype.status_subresource:  # the status never changes through the main resource
                new = {**{k: v for k, v in new.items() if k != "status"},
                       **({"status": old["status"]} if "status" in old else {})}
                if _spec(new) != _spec(old):
                    new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            new = copy.deepcopy(new)
            if new == old:
                return copy.deepcopy(old)  # a no-op write does not bump the version
            self.objects[(plural, namespace, name)] = new
            return self._record("MODIFIED", plural, new, copy.deepcopy(old))

    def delete(self, plural: str, namespace: str, name: str) -> Obj:
        with self.cond:
            obj = self.objects.pop((plural, namespace, name), None)
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            return self._record("DELETED", plural, obj, copy.deepcopy(obj))


def _spec(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
