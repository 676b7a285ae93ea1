"""The client boundary: the official client against the fake API server, and failures in the router's words.

Every call goes through the unmodified `kubernetes` client, configured by a kubeconfig file, so
these tests prove both that `api` speaks the API as a real server expects (paths, selectors,
watch parameters, merge patch of status) and that the fake answers as a real server would.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import router
from router.discovery.kubernetes.api import ENDPOINT_SLICES, LEASES, ONLINE_ENDPOINTS, SECRETS, KubeApi
from router.discovery.kubernetes.errors import Conflict, Gone, KubeError, NotFound, Unreachable
from router.errors import ConfigError
from tests.kube.cluster import endpoint, endpoint_slice, secret
from tests.kube.fake_apiserver import FakeApiServer

T = TypeVar("T")


def run(kubeconfig: Path, work: Callable[[KubeApi], Awaitable[T]]) -> T:
    async def main() -> T:
        api = await KubeApi.connect(str(kubeconfig), request_timeout_s=2)
        try:
            return await work(api)
        finally:
            await api.close()
    return asyncio.run(main())


def test_list_filters_by_namespace_label_and_field(api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("endpointslices", endpoint_slice("a-1", "svc-a", 5001))
    api_server.create("endpointslices", endpoint_slice("b-1", "svc-b", 5002))
    api_server.create("endpointslices", endpoint_slice("a-2", "svc-a", 5003, namespace="other"))
    api_server.create("secrets", secret("k1", primaryKey="x"))
    api_server.create("secrets", secret("k2", primaryKey="y"))

    async def work(api: KubeApi) -> Any:
        return (await api.list(ENDPOINT_SLICES, "default", labels="kubernetes.io/service-name=svc-a"),
                await api.list(ENDPOINT_SLICES, None, labels="kubernetes.io/service-name in (svc-a)"),
                await api.list(SECRETS, "default", fields="metadata.name=k2"))

    (local, version), (everywhere, _), (secrets, _) = run(kubeconfig, work)
    assert [s["metadata"]["name"] for s in local] == ["a-1"]
    assert (local[0]["kind"], local[0]["apiVersion"]) == ("EndpointSlice", "discovery.k8s.io/v1")  # typed here
    assert sorted(s["metadata"]["name"] for s in everywhere) == ["a-1", "a-2"]
    assert [s["metadata"]["name"] for s in secrets] == ["k2"]
    assert int(version) == api_server.store.rv
    query = api_server.requests_for("endpointslices")[0].query
    assert query == {"labelSelector": "kubernetes.io/service-name=svc-a"}


def test_watch_streams_changes_and_bookmarks_from_a_version(api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("first", {}))
    version = str(api_server.store.rv)

    async def work(api: KubeApi) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, api_server.patch, "onlineendpoints", "first", {"spec": {"traffic": {"a": 0}}})
        loop.call_later(0.3, api_server.delete, "onlineendpoints", "first")
        return [event async for event in api.watch(ONLINE_ENDPOINTS, None, resource_version=version, timeout_s=1)]

    events = run(kubeconfig, work)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["MODIFIED", "DELETED"] and "BOOKMARK" in kinds
    assert events[-1]["object"]["metadata"]["resourceVersion"] == str(api_server.store.rv)
    watch = api_server.requests_for("onlineendpoints", watch=True)[0]
    assert watch.query == {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": version,
                           "timeoutSeconds": "1"}


def test_status_is_a_merge_patch_of_the_subresource(api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("demo", {}))

    async def work(api: KubeApi) -> Any:
        await api.patch_status(ONLINE_ENDPOINTS, "default", "demo", {"readyReplicas": 2, "deployments": {"a": 1}})
        return await api.patch_status(ONLINE_ENDPOINTS, "default", "demo", {"deployments": {"a": None, "b": 2}})

    answer = run(kubeconfig, work)
    assert answer["status"] == {"readyReplicas": 2, "deployments": {"b": 2}}
    assert answer["metadata"]["generation"] == 1  # a status write is no spec change
    assert api_server.requests_for("onlineendpoints", method="PATCH")[0].path.endswith("/demo/status")


def test_failures_are_translated(api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("demo", {}))
    old = str(api_server.store.rv)
    api_server.patch("onlineendpoints", "demo", {"spec": {"traffic": {"a": 0}}})
    api_server.compact()
    lease = {"metadata": {"name": "l"}, "spec": {}}

    async def attempt(call: Awaitable[Any]) -> type[BaseException] | None:
        try:
            await call
        except Exception as exc:
            return type(exc)
        return None

    async def work(api: KubeApi) -> list[type[BaseException] | None]:
        await api.create(LEASES, "default", lease)
        stale = {**lease, "metadata": {"name": "l", "resourceVersion": old}}
        watch = api.watch(ONLINE_ENDPOINTS, None, resource_version=old, timeout_s=1)
        return [await attempt(api.get(ONLINE_ENDPOINTS, "default", "missing")),
                await attempt(api.create(LEASES, "default", lease)),
                await attempt(api.replace(LEASES, "default", "l", stale)),
                await attempt(anext(watch))]

    assert run(kubeconfig, work) == [NotFound, Conflict, Conflict, Gone]


def test_a_refused_token_and_an_unreachable_server(api_server: FakeApiServer, tmp_path: Path,
                                                   refused_port: int) -> None:
    dead = tmp_path / "dead"
    dead.write_text(api_server.kubeconfig(tmp_path / "k").read_text().replace(
        api_server.url, f"http://127.0.0.1:{refused_port}"))

    with pytest.raises(KubeError) as refused:
        run(api_server.kubeconfig(tmp_path / "bad", token="wrong"),
            lambda api: api.list(SECRETS, "default"))
    assert refused.value.status == 401 and type(refused.value) is KubeError
    with pytest.raises(Unreachable):
        run(dead, lambda api: api.list(SECRETS, "default"))
    before = api_server.refused
    with api_server.outage(), pytest.raises(Unreachable):
        run(tmp_path / "k", lambda api: api.get(SECRETS, "default", "x"))
    assert api_server.refused > before  # the outage dropped the call, unanswered


@pytest.mark.parametrize("text", ["not: [a kubeconfig", "{}", '{"clusters": [], "contexts": []}'])
def test_a_kubeconfig_that_does_not_work_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        asyncio.run(KubeApi.connect(str(path)))
    assert str(path) in refused.value.problems[0]


def test_no_client_library_exception_leaks(api_server: FakeApiServer, tmp_path: Path) -> None:
    """Each KubeApi call, against a server in an outage, raises the router's KubeError and nothing else."""
    path = api_server.kubeconfig(tmp_path / "k")

    async def every_call(api: KubeApi) -> list[BaseException | None]:
        calls = [api.list(SECRETS, None), api.get(SECRETS, "default", "x"), api.create(LEASES, "default", {}),
                 api.replace(LEASES, "default", "x", {}), api.patch_status(ONLINE_ENDPOINTS, "default", "x", {}),
                 anext(api.watch(SECRETS, None, resource_version="1", timeout_s=1))]
        failures: list[BaseException | None] = []
        for call in calls:
            try:
                await call
                failures.append(None)
            except BaseException as exc:
                failures.append(exc)
        return failures

    before = api_server.refused
    with api_server.outage():
        failures = run(path, every_call)
    assert all(isinstance(f, Unreachable) for f in failures), failures
    assert api_server.refused - before >= len(failures)  # every call reached the server and was dropped


def test_only_the_api_module_imports_the_client_library() -> None:
    package = Path(router.__file__).resolve().parent
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("kubernetes", "aiohttp") for n in names):
                importers.add(str(path.relative_to(package)))
    assert importers == {"discovery/kubernetes/api.py"}
