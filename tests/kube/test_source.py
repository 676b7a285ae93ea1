"""KubernetesSource in one event loop with the fake API server: what it applies, and what it watches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from router.discovery.kubernetes import KubernetesSettings, KubernetesSource
from router.discovery.kubernetes.settings import LeaseSettings, WatchSettings
from router.discovery.source import ServiceReplicas
from router.metrics import REGISTRY
from router.model import Resources
from tests.kube.cluster import deployment, endpoint, endpoint_slice, running, secret, until
from tests.kube.fake_apiserver import FakeApiServer

# endpoint keys as Azure ML makes them: 32 characters (the router refuses fewer than 16)
PRIMARY = "pK7vQ2xW9mL4nC8rB5hD1jF6gS3tY0aZ"

Applied = list[tuple[Resources, ServiceReplicas]]


def run_source(kubeconfig: Path, scenario: Callable[[KubernetesSource, Applied], Awaitable[None]],
               namespace: str | None = None, *, wait_synced: bool = True, **settings: Any) -> None:
    """`scenario` with a source watching the fake cluster (once it has synced, unless `wait_synced` is False)."""
    chosen = KubernetesSettings(**{"namespace": namespace, "kubeconfig": str(kubeconfig),
                                   "allow_loopback_replicas": True, "lease": LeaseSettings(retry_s=0.2),
                                   "watch": WatchSettings(backoff_s=0.05, backoff_max_s=0.4), **settings})

    async def main() -> None:
        source = KubernetesSource(chosen, identity="test")
        applied: Applied = []
        assert await source.load() == Resources() and not source.synced
        async with running(source.watch(lambda r, s=None: applied.append((r, s or {})))):
            if wait_synced:
                await until(lambda: source.synced)
            await scenario(source, applied)
    asyncio.run(main())


def demo(api: FakeApiServer, namespace: str = "default") -> None:
    api.create("secrets", secret("demo-keys", namespace=namespace, primaryKey=PRIMARY))
    api.create("onlineendpoints", endpoint("demo" if namespace == "default" else f"demo-{namespace}",
                                           {"blue": 100}, keys="demo-keys", namespace=namespace))
    api.create("onlinedeployments", deployment("blue", "demo" if namespace == "default" else f"demo-{namespace}",
                                               "svc-blue", namespace=namespace))
    api.create("endpointslices", endpoint_slice("svc-blue-1", "svc-blue", 5001, namespace=namespace))


def test_one_namespace_is_watched_and_leased_in_alone(api_server: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = api_server.kubeconfig(tmp_path / "kubeconfig", namespace="team-a")  # the router's own namespace
    demo(api_server, "team-a")
    demo(api_server, "team-b")

    async def scenario(source: KubernetesSource, applied: Applied) -> None:
        resources, replicas = applied[-1]
        assert [e.name for e in resources.endpoints] == ["demo-team-a"]
        assert replicas == {("team-a", "svc-blue"): ("http://127.0.0.1:5001",)}
        await until(lambda: "holderIdentity" in api_server.get("leases", "inference-router-status",
                                                               namespace="team-a").get("spec", {}))

    run_source(kubeconfig, scenario, namespace="team-a")
    assert {r.path.split("/namespaces/")[1].split("/")[0] for r in api_server.requests} == {"team-a"}


def test_a_new_reference_is_applied_only_with_what_it_references(api_server: FakeApiServer,
                                                                 kubeconfig: Path) -> None:
    demo(api_server)

    async def scenario(source: KubernetesSource, applied: Applied) -> None:
        assert "watches=4" in repr(source)  # two kinds, the slices of one namespace, one Secret
        api_server.create("endpointslices", endpoint_slice("svc-green-1", "svc-green", 6001))
        api_server.create("onlinedeployments", deployment("green", "demo", "svc-green"))
        api_server.patch("onlineendpoints", "demo", {"spec": {"traffic": {"blue": 50, "green": 50}}})
        await until(lambda: any(d.name == "green" for d in applied[-1][0].deployments), timeout=2)
        assert "watches=4" in repr(source)  # the namespace's slices are watched already
        api_server.create("secrets", secret("other-keys", namespace="team-c", primaryKey="other-key-0123456789"))
        api_server.create("endpointslices", endpoint_slice("svc-c-1", "svc-c", 7001, namespace="team-c"))
        api_server.create("onlineendpoints", endpoint("demo-c", {"cyan": 100}, keys="other-keys", namespace="team-c"))
        api_server.create("onlinedeployments", deployment("cyan", "demo-c", "svc-c", namespace="team-c"))
        await until(lambda: any(d.name == "cyan" for d in applied[-1][0].deployments), timeout=2)
        assert "watches=6" in repr(source)  # another namespace's slices, another Secret
        for resources, replicas in applied:  # never routed to a deployment before its replicas were known
            if any(d.name == "green" for d in resources.deployments):
                assert replicas[("default", "svc-green")] == ("http://127.0.0.1:6001",)
            if any(d.name == "cyan" for d in resources.deployments):
                assert replicas[("team-c", "svc-c")] == ("http://127.0.0.1:7001",)
                assert any(s.name == "other-keys" for s in resources.secrets)

        for kind, name in (("onlinedeployments", "cyan"), ("onlineendpoints", "demo-c")):
            api_server.delete(kind, name, namespace="team-c")
        await until(lambda: "watches=4" in repr(source), timeout=2)  # that namespace is no longer watched
        assert ("team-c", "svc-c") not in applied[-1][1]

    run_source(kubeconfig, scenario)


def test_status_only_changes_apply_nothing_new(api_server: FakeApiServer, kubeconfig: Path) -> None:
    demo(api_server)

    async def scenario(source: KubernetesSource, applied: Applied) -> None:
        await until(lambda: "status" in api_server.get("onlineendpoints", "demo")
                    and "status" in api_server.get("onlinedeployments", "blue"))
        await asyncio.sleep(0.3)
        # the router's own status writes come back through the watch: one state, written once each
        assert len(applied) == 1 and source.applied == 1
        assert len(api_server.requests_for("onlineendpoints", method="PATCH")) == 1
        assert len(api_server.requests_for("onlinedeployments", method="PATCH")) == 1

    run_source(kubeconfig, scenario)


def test_a_refused_status_write_holds_back_only_its_own_object(api_server: FakeApiServer, kubeconfig: Path) -> None:
    demo(api_server)
    # a tightened CRD rule that the status of an endpoint without keys or deployments breaks (its message is long)
    conditions = api_server.store.schemas["onlineendpoints"]["properties"]["status"]["properties"]["conditions"]
    conditions["items"]["properties"]["message"]["maxLength"] = 40
    api_server.create("onlineendpoints", endpoint("lonely", {}, keys="no-such-keys"))
    failures = "inference_router_discovery_status_write_failures_total"
    before = REGISTRY.get_sample_value(failures, {"resource": "OnlineEndpoint"}) or 0

    async def scenario(source: KubernetesSource, applied: Applied) -> None:
        # the others get their status although the refused one comes first
        await until(lambda: "status" in api_server.get("onlineendpoints", "demo")
                    and "status" in api_server.get("onlinedeployments", "blue"))
        await until(lambda: (REGISTRY.get_sample_value(failures, {"resource": "OnlineEndpoint"}) or 0) - before >= 2)
        refused = [r for r in api_server.requests_for("onlineendpoints", method="PATCH") if "/lonely/" in r.path]
        assert {r.status for r in refused} == {422}
        await asyncio.sleep(1.0)  # retried with its own doubling delay (0.05 s to 0.4 s here), not in a spin
        retried = len([r for r in api_server.requests_for("onlineendpoints", method="PATCH") if "/lonely/" in r.path])
        assert len(refused) < retried <= len(refused) + 6
        assert "status" not in api_server.get("onlineendpoints", "lonely")
        # a status change of another object is written at once, while the refused one waits
        api_server.patch("endpointslices", "svc-blue-1", {"endpoints": [{"addresses": ["127.0.0.1"]}, {
            "addresses": ["127.0.0.2"]}]})
        await until(lambda: api_server.get("onlinedeployments", "blue")["status"]["readyReplicas"] == 2, timeout=2)
        del conditions["items"]["properties"]["message"]["maxLength"]  # the rule loosened: the retry succeeds
        await until(lambda: "status" in api_server.get("onlineendpoints", "lonely"), timeout=2)

    run_source(kubeconfig, scenario)


def test_the_first_state_waits_until_every_reference_has_listed(api_server: FakeApiServer, kubeconfig: Path) -> None:
    demo(api_server)

    async def scenario(source: KubernetesSource, applied: Applied) -> None:
        with api_server.hold(plural="endpointslices", verb="list"), api_server.hold(plural="secrets", verb="list"):
            await asyncio.sleep(1.0)  # well past reference_sync_s: still not ready, nothing applied
            assert not source.synced and applied == []
        await until(lambda: source.synced, timeout=3)
        ((resources, replicas),) = applied  # the first state is the whole one: replicas and keys
        assert replicas == {("default", "svc-blue"): ("http://127.0.0.1:5001",)}
        assert [s.name for s in resources.secrets] == ["demo-keys"]

    run_source(kubeconfig, scenario, wait_synced=False, reference_sync_s=0.3)


def test_a_refused_reference_does_not_hold_the_first_state_back(api_server: FakeApiServer, kubeconfig: Path) -> None:
    demo(api_server)

    async def scenario(source: KubernetesSource, applied: Applied) -> None:
        with api_server.fail(403, plural="secrets"):  # waiting would not help: ready without its keys
            assert await until(lambda: source.synced, timeout=3) < 1.5  # not first_list_timeout_s (30 s)
            ((resources, replicas),) = applied
            assert replicas == {("default", "svc-blue"): ("http://127.0.0.1:5001",)} and resources.secrets == ()
            # the endpoint's status says the Secret cannot be read, not that it is missing
            await until(lambda: "cannot be read" in str(api_server.get("onlineendpoints", "demo").get("status")))
            (ready,) = [c for c in api_server.get("onlineendpoints", "demo")["status"]["conditions"]
                        if c["type"] == "Ready"]
            assert ready["message"].startswith("spec.keysSecretRef: Secret 'demo-keys' in namespace 'default' "
                                               "cannot be read: GET /api/v1/namespaces/default/secrets: 403 ")

    run_source(kubeconfig, scenario, wait_synced=False)


def test_a_reference_that_cannot_list_does_not_cut_short_the_wait_of_a_new_one(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    demo(api_server)

    def team(namespace: str) -> None:
        api_server.create("secrets", secret("keys", namespace=namespace, primaryKey="team-key-0123456789"))
        api_server.create("endpointslices", endpoint_slice("svc-1", "svc", 7001, namespace=namespace))
        api_server.create("onlineendpoints", endpoint(f"ep-{namespace}", {"cyan": 100}, keys="keys",
                                                      namespace=namespace))
        api_server.create("onlinedeployments", deployment("cyan", f"ep-{namespace}", "svc", namespace=namespace))

    async def scenario(source: KubernetesSource, applied: Applied) -> None:
        with api_server.fail(403, plural="endpointslices", namespace="forbidden"):
            team("forbidden")  # its slices can never be listed: applied without them, once refused
            await until(lambda: any(d.namespace == "forbidden" for d in applied[-1][0].deployments), timeout=2)
            await asyncio.sleep(1.2)  # that watch is now older than reference_sync_s
            with api_server.hold(plural="endpointslices", namespace="team-x", verb="list"):
                team("team-x")
                await asyncio.sleep(0.6)  # within team-x's own reference_sync_s: not applied yet
                assert not any(d.namespace == "team-x" for d in applied[-1][0].deployments)
            await until(lambda: any(d.namespace == "team-x" for d in applied[-1][0].deployments), timeout=3)
        for _, replicas in applied:  # never routed to team-x before its replicas were known
            if ("team-x", "svc") in replicas:
                assert replicas[("team-x", "svc")] == ("http://127.0.0.1:7001",)

    run_source(kubeconfig, scenario, reference_sync_s=1.0)
