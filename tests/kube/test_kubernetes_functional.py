"""`serve --kubernetes` as a real process, the unmodified client pointed at the fake API server.

Real sample-model replicas answer; EndpointSlices in the fake point at them (one slice per replica:
they share 127.0.0.1 and differ by port). Steady traffic runs through every change and must see no
failed request; each change must reach the router's routing table within 2 s, read from the admin
port's /debug/deployments and from who answers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import SampleModel
from tests.kube.cluster import (
    KubeRouter,
    Traffic,
    deployment,
    endpoint,
    endpoint_slice,
    secret,
    seed_demo,
    start_kube_router,
    wait_until,
)
from tests.kube.fake_apiserver import FakeApiServer

K1, K2, K3 = "pK7vQ2xW9mL4nC8rB5hD1jF6gS3tY0aZ", "sE4uR8yT2iO6pA1sD5fG9hJ3kL7zX0cV", "nZ3xC7vB1nM5qW9eR2tY6uI0oP4aS8dF"
OUTAGE_S = 30.0  # the acceptance figure, run in full


@pytest.fixture
def routers() -> Iterator[list[KubeRouter]]:
    started: list[KubeRouter] = []
    yield started
    for router in started:
        router.stop()
        print(f"router {router.process.pid}:", *router.process.lines[-60:], sep="\n")  # shown if the test failed


def replicas(router: KubeRouter) -> dict[str, set[str]]:
    """The router's routing table: replica URLs per deployment, from its admin port."""
    state = httpx.get(f"http://127.0.0.1:{router.admin_port}/debug/deployments", timeout=5).json()
    return {key.split("/")[-1]: {r["url"] for r in value["replicas"]} for key, value in state.items()}


def condition(api: FakeApiServer, plural: str, name: str, kind: str) -> dict[str, str]:
    status = api.get(plural, name).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def models(factory: Callable[..., SampleModel], *names: str) -> dict[str, SampleModel]:
    return {name: factory("--name", name) for name in names}


def test_every_change_is_routed_within_two_seconds_without_a_failed_request(
        api_server: FakeApiServer, kubeconfig: Path, sample_model_factory: Callable[..., SampleModel],
        routers: list[KubeRouter]) -> None:
    m = models(sample_model_factory, "blue-0", "green-0", "green-1")
    routers.append(router := start_kube_router(kubeconfig, "--debug-endpoints"))
    router.wait_ready()  # an empty cluster is a full sync too

    # created: scoring works within 2 s
    t0 = time.monotonic()
    api_server.create("secrets", secret("demo-keys", primaryKey=K1, secondaryKey=K2))
    api_server.create("onlineendpoints", endpoint("demo", {"blue": 100, "green": 0}))
    api_server.create("onlinedeployments", deployment("blue", "demo", "demo-blue"))
    api_server.create("onlinedeployments", deployment("green", "demo", "demo-green", timeout_ms=15000))
    api_server.create("endpointslices", endpoint_slice("demo-blue-0", "demo-blue", m["blue-0"].port))
    api_server.create("endpointslices", endpoint_slice("demo-green-0", "demo-green", m["green-0"].port))
    wait_until(lambda: router.score("demo", K1).status_code == 200, 2.5, "scoring works")
    assert time.monotonic() - t0 < 2.0 + 0.5  # from the first create (the creates themselves take a moment)
    assert router.score("demo", K1).json()["name"] == "blue-0"

    with Traffic(router, "demo", K2) as traffic:
        traffic.wait_for(lambda name: name == "blue-0", 0)

        # traffic change
        t = time.monotonic()
        api_server.patch("onlineendpoints", "demo", {"spec": {"traffic": {"blue": 0, "green": 100}}})
        assert traffic.wait_only({"green-0"}, since=t) < 2.0

        # slow requests under way on green-0, the only green replica, while the next two changes happen
        pool = ThreadPoolExecutor(3)
        slow = [pool.submit(httpx.post, router.score_url("demo") + "?latency_ms=3000", content=b"{}",
                            headers={"Authorization": f"Bearer {K1}"}, timeout=15) for _ in range(3)]
        # three in flight there, of which at most one is the steady traffic's: two slow ones at least
        wait_until(lambda: httpx.get(f"{m['green-0'].url}/stats", timeout=5).json()["in_flight"] >= 3, 2,
                   "the slow requests under way on green-0")

        # replica added (it answers below, once it is the only one)
        api_server.create("endpointslices", endpoint_slice("demo-green-1", "demo-green", m["green-1"].port))
        assert wait_until(lambda: m["green-1"].url in replicas(router)["green"], 2, "green-1 routed") < 2.0

        # replica marked not ready (terminating): it finishes what it has, and gets nothing new
        t = time.monotonic()
        api_server.patch("endpointslices", "demo-green-0", {"endpoints": [
            {"addresses": ["127.0.0.1"], "conditions": {"ready": False, "serving": True, "terminating": True}}]})
        assert wait_until(lambda: replicas(router)["green"] == {m["green-1"].url}, 2, "green-0 retired") < 2.0
        assert traffic.wait_only({"green-1"}, since=t) < 2.0
        assert not any(future.done() for future in slow)  # still under way when green-0 was retired
        answers = [future.result() for future in slow]
        pool.shutdown()
        assert [a.status_code for a in answers] == [200] * 3
        assert [a.json()["name"] for a in answers].count("green-0") >= 2  # finished on the retired replica

        # deployment deleted (it had 0 %): pinning it now finds nothing
        assert router.score("demo", K1, **{"azureml-model-deployment": "blue"}).status_code == 200
        api_server.delete("onlinedeployments", "blue")
        assert wait_until(lambda: "blue" not in replicas(router), 2, "blue gone") < 2.0
        assert router.score("demo", K1, **{"azureml-model-deployment": "blue"}).status_code == 404

        # key rotated (the traffic uses the secondary key, which stays)
        api_server.patch("secrets", "demo-keys", {"data": {"primaryKey": secret("x", k=K3)["data"]["k"]}})
        assert wait_until(lambda: router.score("demo", K3).status_code == 200, 2, "the new key works") < 2.0
        assert router.score("demo", K1).status_code == 401
        time.sleep(0.3)

    assert traffic.failures == []
    assert len(traffic.answers) > 100
    # the status says the same, written by the router
    status = api_server.get("onlineendpoints", "demo")["status"]
    assert status["scoringUri"] == "/api/v1/endpoint/demo/score"
    assert status["deployments"] == {"green": 1} and status["readyReplicas"] == 1
    assert condition(api_server, "onlinedeployments", "green", "Ready")["status"] == "True"


def test_cut_watches_410_and_a_long_outage_end_in_the_api_servers_state(
        api_server: FakeApiServer, kubeconfig: Path, sample_model_factory: Callable[..., SampleModel],
        routers: list[KubeRouter]) -> None:
    m = models(sample_model_factory, "blue-0", "blue-1", "blue-2")
    seed_demo(api_server, K1)
    for name, model in m.items():
        api_server.create("endpointslices", endpoint_slice(f"demo-{name}", "demo-blue", model.port))
    routers.append(router := start_kube_router(kubeconfig, "--debug-endpoints"))
    router.wait_ready()

    def slice_lists() -> int:
        return len(api_server.requests_for("endpointslices", watch=False))

    def in_api_server() -> set[str]:
        return {f"http://127.0.0.1:{s['ports'][0]['port']}" for s in api_server.list("endpointslices")["items"]}

    def routed_as_in_api_server() -> bool:
        return replicas(router)["blue"] == in_api_server()

    def answers_after_a_moment() -> set[str]:
        t = time.monotonic()
        time.sleep(0.5)
        return traffic.names_after(t)

    with Traffic(router, "demo", K1) as traffic:
        traffic.wait_for(lambda name: name.startswith("blue"), 0)

        # 1. a cut watch resumes from its last version: the deletion arrives, no list
        api_server.cut_watches()
        api_server.delete("endpointslices", "demo-blue-2")
        assert wait_until(routed_as_in_api_server, 2, "blue-2 removed after a cut") < 2.0
        assert answers_after_a_moment() <= {"blue-0", "blue-1"} and slice_lists() == 1

        def watch_restarts() -> float:  # the router's own count, scraped from its /metrics
            text = httpx.get(f"http://127.0.0.1:{router.admin_port}/metrics", timeout=5).text
            return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                       if s.name == "inference_router_discovery_watch_restarts_total")
        wait_until(lambda: watch_restarts() >= 1, 2, "the cut watches counted as restarts")

        # 2. 410 Gone: changes made while the router was cut off, then history compacted
        with api_server.outage():
            time.sleep(0.5)
            api_server.delete("endpointslices", "demo-blue-1")
            api_server.create("endpointslices", endpoint_slice("demo-blue-2", "demo-blue", m["blue-2"].port))
            api_server.compact()
        assert wait_until(routed_as_in_api_server, 6, "relisted after 410") < 6.0  # a short cut: short backoff
        assert answers_after_a_moment() <= {"blue-0", "blue-2"} and slice_lists() == 2
        router.process.wait_for_event("kubernetes.relisted", timeout=1,
                                      where=lambda e: "endpointslices" in e["selection"])

        # 3. a long outage: the last known state serves throughout; a slice deleted meanwhile is gone after
        outage_started = time.monotonic()
        with api_server.outage():
            time.sleep(1.0)
            api_server.delete("endpointslices", "demo-blue-0")
            while time.monotonic() - outage_started < OUTAGE_S:
                assert router.ready()
                time.sleep(1.0)
            assert replicas(router)["blue"] == {m["blue-0"].url, m["blue-2"].url}  # what it last knew
            during = [(at, name) for at, _, name in list(traffic.answers) if at >= outage_started]
        assert {name for _, name in during} <= {"blue-0", "blue-2"}
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(during)]
        assert len(during) > 100 and max(gaps) < 1.0, max(gaps)  # served throughout
        # the retries backed off to at most 30 s (15 to 30 s with the jitter), so that a fleet of routers
        # does not come back all at once
        assert wait_until(routed_as_in_api_server, 32, "blue-0 removed after the outage") < 32.0
        assert in_api_server() == {m["blue-2"].url} and answers_after_a_moment() == {"blue-2"}
        wait_until(lambda: api_server.get("onlineendpoints", "demo")["status"]["readyReplicas"] == 1, 5,
                   "the status counts the one replica left")

    assert traffic.failures == []
    assert router.process.events_named("kubernetes.watch.failed")


def test_an_invalid_endpoint_is_rejected_alone_with_a_condition_naming_the_field(
        api_server: FakeApiServer, kubeconfig: Path, sample_model_factory: Callable[..., SampleModel],
        routers: list[KubeRouter]) -> None:
    model = sample_model_factory("--name", "blue-0")
    seed_demo(api_server, K1, model.port)
    routers.append(router := start_kube_router(kubeconfig))
    router.wait_ready()

    with Traffic(router, "demo", K1) as traffic:
        traffic.wait_for(lambda name: name == "blue-0", 0)
        api_server.create("onlineendpoints", endpoint("broken", {"blue": 60, "green": 30}, keys="demo-keys"))
        wait_until(lambda: condition(api_server, "onlineendpoints", "broken", "Accepted").get("status") == "False",
                   2, "a condition on the invalid endpoint")
        accepted = condition(api_server, "onlineendpoints", "broken", "Accepted")
        assert accepted["reason"] == "Invalid"
        assert "spec.traffic: percentages must sum to 0 or 100, got 90" in accepted["message"]
        assert router.score("broken", K1).status_code == 404
        rejected = router.process.wait_for_event("kubernetes.rejected", timeout=1)
        assert rejected["resource"] == "OnlineEndpoint default/broken"

        # an invalid edit of a served endpoint: its last accepted spec keeps serving, and it says so
        api_server.patch("onlineendpoints", "demo", {"spec": {"traffic": {"blue": 50}}})
        wait_until(lambda: condition(api_server, "onlineendpoints", "demo", "Accepted").get("status") == "False",
                   2, "a condition on the edited endpoint")
        assert condition(api_server, "onlineendpoints", "demo", "Accepted")["message"].endswith(
            "(the last accepted spec keeps serving)")
        t = time.monotonic()
        time.sleep(0.5)
        assert traffic.names_after(t) == {"blue-0"}

        # valid, but naming a deployment of another endpoint: accepted, routed without it, and told so
        api_server.patch("onlineendpoints", "broken", {"spec": {"traffic": {"blue": 100, "green": None}}})
        wait_until(lambda: condition(api_server, "onlineendpoints", "broken", "Accepted").get("status") == "True",
                   2, "the valid endpoint accepted")
        ready = condition(api_server, "onlineendpoints", "broken", "Ready")
        assert ready["status"] == "False" and "deployment 'blue' belongs to endpoint 'demo'" in ready["message"]

        # given a deployment of its own (on the same Service), it serves
        api_server.create("onlinedeployments", deployment("own", "broken", "demo-blue"))
        api_server.patch("onlineendpoints", "broken", {"spec": {"traffic": {"blue": None, "own": 100}}})
        wait_until(lambda: router.score("broken", K1).status_code == 200, 2, "the fixed endpoint serves")
    assert traffic.failures == []
    wait_until(lambda: condition(api_server, "onlineendpoints", "broken", "Ready").get("status") == "True", 2,
               "the fixed endpoint ready")


def test_ready_only_after_the_first_full_sync(api_server: FakeApiServer, kubeconfig: Path,
                                             sample_model_factory: Callable[..., SampleModel],
                                             routers: list[KubeRouter]) -> None:
    model = sample_model_factory("--name", "blue-0")
    seed_demo(api_server, K1, model.port)
    with api_server.outage():
        routers.append(router := start_kube_router(kubeconfig, "--watch-namespace", "default"))
        time.sleep(1.0)
        assert not router.ready()
        assert httpx.get(f"http://127.0.0.1:{router.admin_port}/healthz", timeout=5).status_code == 200
        assert router.process.events_named("kubernetes.watch.failed")
    router.wait_ready(timeout=8)
    # ready means complete: the keys (watched once the endpoint named them) and the replicas are there
    assert router.score("demo", K1).json()["name"] == "blue-0"
    # --namespace: that one only
    assert api_server.requests and all("/namespaces/default/" in r.path for r in api_server.requests)


def test_only_the_lease_holder_writes_status_and_a_follower_takes_over(
        tmp_path: Path, sample_model_factory: Callable[..., SampleModel], routers: list[KubeRouter]) -> None:
    m = models(sample_model_factory, "blue-0", "blue-1")
    with FakeApiServer(tokens=("token-a", "token-b")) as api_server:
        seed_demo(api_server, K1, m["blue-0"].port)
        for token in ("token-a", "token-b"):
            routers.append(start_kube_router(api_server.kubeconfig(tmp_path / token, token=token)))
        for router in routers:
            router.wait_ready()
        wait_until(lambda: "status" in api_server.get("onlineendpoints", "demo"), 5, "status written")
        time.sleep(0.5)

        def writers() -> set[str]:
            return {r.token for r in api_server.requests_for("onlineendpoints", method="PATCH")}
        (leader_token,) = writers()
        leader, follower = routers if leader_token == "token-a" else routers[::-1]
        holder = api_server.get("leases", "inference-router-status")["spec"]["holderIdentity"]
        assert holder.endswith(f"-{leader.process.pid}")
        assert follower.score("demo", K1).status_code == 200  # a follower routes all the same

        leader.stop()  # releases the Lease on the way out
        api_server.create("endpointslices", endpoint_slice("demo-blue-1", "demo-blue", m["blue-1"].port))
        wait_until(lambda: api_server.get("onlineendpoints", "demo")["status"]["readyReplicas"] == 2, 4,
                   "the follower took over the status")
        assert writers() == {"token-a", "token-b"}
        holder = api_server.get("leases", "inference-router-status")["spec"]["holderIdentity"]
        assert holder.endswith(f"-{follower.process.pid}")


def test_a_refused_secret_rotation_still_revokes_the_key_it_removed(
        api_server: FakeApiServer, kubeconfig: Path, sample_model_factory: Callable[..., SampleModel],
        routers: list[KubeRouter]) -> None:
    model = sample_model_factory("--name", "blue-0")
    seed_demo(api_server, K1, model.port)
    api_server.patch("secrets", "demo-keys", {"data": {"secondaryKey": secret("x", k=K2)["data"]["k"]}})
    routers.append(router := start_kube_router(kubeconfig))
    router.wait_ready()
    assert router.score("demo", K1).status_code == 200 and router.score("demo", K2).status_code == 200

    # the leaked primary key is removed, and the same edit carries a value the router refuses
    api_server.patch("secrets", "demo-keys", {"data": {"primaryKey": None, "tokenSigningKey": "not base64!"}})
    wait_until(lambda: router.score("demo", K1).status_code == 401, 2, "the removed key refused")
    assert router.score("demo", K2).status_code == 200  # the key it still holds, unchanged, works
    wait_until(lambda: "is rejected" in condition(api_server, "onlineendpoints", "demo", "Ready").get("message", ""),
               2, "the endpoint's Ready condition says why")
    ready = condition(api_server, "onlineendpoints", "demo", "Ready")
    assert ready["status"] == "False" and K1 not in ready["message"] and K2 not in ready["message"]


def test_readyz_waits_for_the_replicas_and_keys_of_the_first_state(
        api_server: FakeApiServer, kubeconfig: Path, sample_model_factory: Callable[..., SampleModel],
        routers: list[KubeRouter]) -> None:
    seed_demo(api_server, K1, sample_model_factory("--name", "blue-0").port)
    with api_server.hold(plural="endpointslices", verb="list"), api_server.hold(plural="secrets", verb="list"):
        routers.append(router := start_kube_router(kubeconfig))
        time.sleep(4.0)  # past the 3 s a later change waits for its references: a new pod is still not ready
        assert not router.ready()
    router.wait_ready()
    answer = router.score("demo", K1)  # the first state it serves has the replicas and the keys
    assert answer.status_code == 200 and answer.json()["name"] == "blue-0"
