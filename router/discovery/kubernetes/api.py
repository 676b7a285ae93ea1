"""The API server, through the official `kubernetes` client's asyncio half (`kubernetes.aio`).

The only module that imports the client library. It speaks JSON dictionaries both ways
(no generated models: the router validates objects itself, and custom resources have no
models anyway), and turns every failure into a `errors.KubeError` once, here.

Requests go through the client's generic `ApiClient.param_serialize` / `call_api`, the
layer its generated APIs are built on: configuration, authentication (tokens, exec plugins,
in-cluster token refresh) and TLS stay the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.aio.client.api_client import ApiClient
from kubernetes.aio.client.configuration import Configuration
from kubernetes.aio.client.exceptions import OpenApiException
from kubernetes.aio.client.rest import RESTResponse
from kubernetes.aio.config import load_incluster_config, load_kube_config

from router.discovery.kubernetes.errors import Conflict, Gone, KubeError, NotFound, Unreachable
from router.errors import ConfigError

Obj = dict[str, Any]


def object_key(obj: Obj) -> tuple[str, str]:
    """An object's namespace ("" for a cluster-wide one) and name."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True, slots=True)
class Kind:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root, f"namespaces/{namespace}" if namespace else "", self.plural, name or "", subresource or ""]
        return "/".join(part for part in parts if part)

    def __str__(self) -> str:
        return self.plural


ONLINE_ENDPOINTS = Kind("inference-router.dev", "v1alpha1", "onlineendpoints", "OnlineEndpoint")
ONLINE_DEPLOYMENTS = Kind("inference-router.dev", "v1alpha1", "onlinedeployments", "OnlineDeployment")
ENDPOINT_SLICES = Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
SECRETS = Kind("", "v1", "secrets", "Secret")
SERVICES = Kind("", "v1", "services", "Service")
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease")
DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment")
STATEFUL_SETS = Kind("apps", "v1", "statefulsets", "StatefulSet")
HORIZONTAL_POD_AUTOSCALERS = Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
EVENTS = Kind("", "v1", "events", "Event")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """The client's and aiohttp's exceptions, as KubeError: the one place they are caught."""
    try:
        yield
    except KubeError:
        raise
    except OpenApiException as exc:
        status = getattr(exc, "status", None)
        raise _error(status if isinstance(status, int) else None, f"{what}: {exc}") from None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise Unreachable(f"{what}: {type(exc).__name__}: {exc}") from None


def _error(status: int | None, message: str, retry_after_s: float | None = None) -> KubeError:
    if status is None or status == 429 or status >= 500:
        return Unreachable(message, status=status, retry_after_s=retry_after_s)
    kind = {404: NotFound, 409: Conflict, 410: Gone}.get(status, KubeError)
    return kind(message, status=status)


def _status_error(status: int, body: bytes, what: str, retry_after: str | None) -> KubeError:
    try:
        message = json.loads(body).get("message") or ""
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return _error(status, f"{what}: {status} {message}".rstrip(), _seconds(retry_after))


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (the API server sends seconds, never a date), capped at a minute."""
    try:
        return min(60.0, max(0.0, float(retry_after or "")))
    except ValueError:
        return None


class KubeApi:
    """One connection pool to the API server; every method raises only KubeError."""

    def __init__(self, client: ApiClient, *, namespace: str, request_timeout_s: float) -> None:
        self._client = client
        self.namespace = namespace  # where the router itself lives (its Lease goes there)
        self.request_timeout_s = request_timeout_s

    @classmethod
    async def connect(cls, kubeconfig: str | None, *, request_timeout_s: float = 10.0) -> KubeApi:
        """The in-cluster service account, or `kubeconfig`; a ConfigError says why neither works."""
        configuration = Configuration()
        namespace = os.environ.get("POD_NAMESPACE") or ""
        try:
            if kubeconfig:
                loader = await load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                                                persist_config=False)
                namespace = namespace or str((loader.current_context.get("context") or {}).get("namespace") or "")
            else:
                load_incluster_config(client_configuration=configuration)
                with contextlib.suppress(OSError):
                    namespace = namespace or Path(_SERVICE_ACCOUNT_NAMESPACE).read_text(encoding="utf-8").strip()
        except Exception as exc:  # a kubeconfig fails in many ways (YAML, files, exec plugins): all say why
            where = f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster configuration (no --kubeconfig)"
            raise ConfigError([f"{where}: cannot connect to Kubernetes: {exc}"]) from None
        # Every watch holds a connection for as long as it runs: no limit below the number of watches.
        configuration.connection_pool_maxsize = 0
        return cls(ApiClient(configuration), namespace=namespace or "default", request_timeout_s=request_timeout_s)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.close()

    async def _call(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                    body: Obj | None = None, content_type: str = "application/json",
                    timeout_s: float | None = None) -> RESTResponse:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = await self._client.param_serialize(method, path, query_params=query or [],
                                                        header_params=headers, body=body,
                                                        auth_settings=["BearerToken"])
        response: RESTResponse = await self._client.call_api(
            *serialized, _request_timeout=timeout_s or self.request_timeout_s, _preload_content=False)
        if response.status >= 400:
            raise _status_error(response.status, await response.read(), f"{method} {path}",
                                response.getheader("Retry-After"))
        return response

    async def _json(self, method: str, path: str, **options: Any) -> Obj:
        with _translated(f"{method} {path}"):
            async with asyncio.timeout(self.request_timeout_s):
                response = await self._call(method, path, **options)
                value = json.loads(await response.read())
        if not isinstance(value, dict):
            raise Unreachable(f"{method} {path}: the answer is not a JSON object")
        return value

    async def list(self, kind: Kind, namespace: str | None, *, labels: str | None = None,
                   fields: str | None = None) -> tuple[list[Obj], str]:
        """Every object of `kind` that matches, and the resourceVersion to watch from.

        Items come typed (`kind`, `apiVersion`), as watch events do: the API server leaves the items of
        built-in lists untyped, and a listed object must equal the same object watched."""
        answer = await self._json("GET", kind.path(namespace), query=_selectors(labels, fields))
        items = [{**item, "apiVersion": kind.api_version, "kind": kind.kind}
                 for item in answer.get("items") or [] if isinstance(item, dict)]
        return items, str(answer["metadata"]["resourceVersion"])

    async def watch(self, kind: Kind, namespace: str | None, *, resource_version: str, timeout_s: int,
                    labels: str | None = None, fields: str | None = None) -> AsyncGenerator[Obj, None]:
        """The events after `resource_version` (bookmarks included) until the server ends the watch.

        An ERROR event raises (410 as Gone); a connection cut mid-stream raises Unreachable.
        """
        what = f"watch {kind.path(namespace)}"
        query = [*_selectors(labels, fields), ("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", resource_version), ("timeoutSeconds", str(timeout_s))]
        with _translated(what):
            response = await self._call("GET", kind.path(namespace), query=query,
                                        timeout_s=timeout_s + self.request_timeout_s)
        stream = response.response
        try:
            while True:
                with _translated(what):
                    line = await stream.content.readline()
                    if not line:
                        return  # the server ended the watch: resume from the last version seen
                    event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise _error(status.get("code"), f"{what}: {status.get('code')} {status.get('message')}")
                yield event
        finally:
            stream.close()  # never hand a half-read stream back to the pool

    async def get(self, kind: Kind, namespace: str, name: str, *, subresource: str | None = None) -> Obj:
        return await self._json("GET", kind.path(namespace, name, subresource))

    async def create(self, kind: Kind, namespace: str, body: Obj) -> Obj:
        return await self._json("POST", kind.path(namespace), body=body)

    async def replace(self, kind: Kind, namespace: str, name: str, body: Obj, *, subresource: str | None = None) -> Obj:
        """PUT: a Conflict when `body.metadata.resourceVersion` is no longer the object's."""
        return await self._json("PUT", kind.path(namespace, name, subresource), body=body)

    async def delete(self, kind: Kind, namespace: str, name: str) -> Obj:
        return await self._json("DELETE", kind.path(namespace, name))

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj, *,
                           resource_version: str | None = None) -> Obj:
        """A JSON merge patch of the status subresource (custom resources take no strategic merge);
        with `resource_version`, a Conflict when the object is no longer at that version."""
        body: Obj = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._json("PATCH", kind.path(namespace, name, "status"), body=body,
                                content_type="application/merge-patch+json")


def _selectors(labels: str | None, fields: str | None) -> list[tuple[str, str]]:
    query = [("labelSelector", labels)] if labels else []
    return query + ([("fieldSelector", fields)] if fields else [])
