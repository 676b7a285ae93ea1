"""Status fields from reports, minimal merge patches, and the Lease that picks one writer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from router.discovery.kubernetes.api import KubeApi
from router.discovery.kubernetes.assembly import Report
from router.discovery.kubernetes.lease import LeaderElector
from router.discovery.kubernetes.settings import LeaseSettings, WatchSettings
from router.discovery.kubernetes.status import StatusWriter, render, status_patch
from tests.kube.cluster import deployment, endpoint, running, until
from tests.kube.fake_apiserver import FakeApiServer

ENDPOINT = ("OnlineEndpoint", "default", "demo")


def test_an_endpoint_status_names_its_uri_replicas_and_conditions() -> None:
    report = Report(generation=4, serving=True, ready_replicas=3, deployments={"blue": 2, "green": 1})
    obj = {"metadata": {"generation": 5}}  # a newer spec, written since the report was made
    status = render(ENDPOINT, report, obj, scoring_base_url="https://router.example", at="T1")
    assert status["scoringUri"] == "https://router.example/api/v1/endpoint/demo/score"
    assert status["readyReplicas"] == 3 and status["deployments"] == {"blue": 2, "green": 1}
    assert status["observedGeneration"] == 4  # the generation judged, never one it has not seen
    assert {c["observedGeneration"] for c in status["conditions"]} == {4}
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Accepted", "True", "Valid"), ("Ready", "True", "Ready")]


def test_a_rejected_spec_says_why_and_whether_an_older_one_serves() -> None:
    problem = "OnlineEndpoint default/demo: spec.traffic.blue: must be an integer from 0 to 100, got 150"
    never = render(ENDPOINT, Report(problems=(problem,)), {"metadata": {}}, scoring_base_url="", at="T1")
    accepted, ready = never["conditions"]
    assert (accepted["status"], accepted["reason"], accepted["message"]) == ("False", "Invalid", problem)
    assert (ready["status"], ready["reason"]) == ("False", "Rejected")
    older = render(ENDPOINT, Report(problems=(problem,), serving=True), {"metadata": {}}, scoring_base_url="", at="T")
    assert older["conditions"][0]["message"].endswith("(the last accepted spec keeps serving)")
    assert older["conditions"][1]["status"] == "True"


def test_the_autoscalers_condition_is_kept_as_the_object_shows_it() -> None:
    scaling = {"type": "Scaling", "status": "False", "reason": "HorizontalPodAutoscalerPresent", "message": "hpa"}
    obj = {"metadata": {"generation": 1}, "status": {"conditions": [scaling], "scale": {"desiredReplicas": 2}}}
    status = render(("OnlineDeployment", "default", "blue"), Report(generation=1, serving=True, autoscaled=True),
                    obj, scoring_base_url="", at="T1")
    assert [c["type"] for c in status["conditions"]] == ["Accepted", "Ready", "Scaling"]
    assert status["conditions"][2] == scaling
    assert "scale" not in status_patch(obj["status"], status)  # type: ignore[operator]


def test_a_deployment_no_longer_autoscaled_loses_the_autoscalers_status() -> None:
    scaling = {"type": "Scaling", "status": "True", "reason": "TargetUtilization", "message": ""}
    obj = {"metadata": {"generation": 2}, "status": {"conditions": [scaling], "scale": {"desiredReplicas": 2}}}
    status = render(("OnlineDeployment", "default", "blue"), Report(generation=2, serving=True), obj,
                    scoring_base_url="", at="T1")
    assert [c["type"] for c in status["conditions"]] == ["Accepted", "Ready"]
    patch = status_patch(obj["status"], status)
    assert patch is not None and patch["scale"] is None  # a merge patch's null removes the field
    never = render(("OnlineDeployment", "default", "blue"), Report(generation=1, serving=True), {"metadata": {}},
                   scoring_base_url="", at="T1")
    assert "scale" not in (status_patch(None, never) or {})  # nothing to remove: nothing patched


def test_a_transition_time_changes_only_with_the_status() -> None:
    first = render(ENDPOINT, Report(serving=True), {"metadata": {}}, scoring_base_url="", at="T1")
    same = render(ENDPOINT, Report(serving=True, ready_replicas=1), {"metadata": {}, "status": first},
                  scoring_base_url="", at="T2")
    assert [c["lastTransitionTime"] for c in same["conditions"]] == ["T1", "T1"]
    waiting = render(ENDPOINT, Report(serving=True, waiting=("no ready replica",)), {"metadata": {}, "status": same},
                     scoring_base_url="", at="T3")
    assert [c["lastTransitionTime"] for c in waiting["conditions"]] == ["T1", "T3"]
    assert waiting["conditions"][1]["message"] == "no ready replica"


def test_the_patch_holds_only_what_changed_and_removes_stale_map_keys() -> None:
    current = {"readyReplicas": 2, "deployments": {"blue": 1, "green": 1}, "extra": "kept"}
    assert status_patch(current, {"readyReplicas": 2, "deployments": {"blue": 1, "green": 1}}) is None
    assert status_patch(current, {"readyReplicas": 1, "deployments": {"blue": 1}}) == {
        "readyReplicas": 1, "deployments": {"green": None, "blue": 1}}
    assert status_patch(None, {"readyReplicas": 0}) == {"readyReplicas": 0}


def test_one_elector_leads_and_a_follower_takes_over_on_release_or_expiry(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    settings = LeaseSettings(name="router", duration_s=1.0, retry_s=0.1)
    changes: list[tuple[str, bool]] = []

    async def main() -> None:
        apis = [await KubeApi.connect(str(kubeconfig)) for _ in range(3)]
        a, b, c = (LeaderElector(api, "default", name, settings, lambda led, n=name: changes.append((n, led)))
                   for api, name in zip(apis, "abc", strict=True))
        tasks = {e.identity: asyncio.create_task(e.run()) for e in (a, b)}
        await until(lambda: a.is_leader or b.is_leader)
        await asyncio.sleep(0.5)
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert not follower.is_leader
        assert api_server.get("leases", "router")["spec"]["holderIdentity"] == leader.identity

        tasks[leader.identity].cancel()  # stops renewing ...
        await leader.release()  # ... and hands the lease back: the follower need not wait it out
        assert await until(lambda: follower.is_leader) < 0.5

        tasks[c.identity] = asyncio.create_task(c.run())
        await asyncio.sleep(0.3)
        assert not c.is_leader
        tasks[follower.identity].cancel()  # a holder that dies without a word ...
        expired = await until(lambda: c.is_leader)
        assert 0.5 < expired < 2.0  # ... is replaced once its lease has not been renewed for 1 s
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for api in apis:
            await api.close()

    asyncio.run(main())
    lease = api_server.get("leases", "router")
    assert lease["spec"]["holderIdentity"] == "c" and lease["spec"]["leaseTransitions"] == 2
    assert sum(led for _, led in changes) == 3


def test_the_status_claims_the_generation_judged_not_one_written_since(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("demo", {}))
    judged = api_server.get("onlineendpoints", "demo")  # generation 1, valid: its report says Accepted
    report = Report(generation=judged["metadata"]["generation"], version=judged["metadata"]["resourceVersion"],
                    serving=True)
    # an invalid spec is written while that report is on its way to the writer
    api_server.patch("onlineendpoints", "demo", {"spec": {"traffic": {"blue": 150}}})

    async def main() -> None:
        api = await KubeApi.connect(str(kubeconfig))
        writer = StatusWriter(api, lambda key: api_server.get("onlineendpoints", key[2]), lambda: True,
                              scoring_base_url="", settings=WatchSettings())
        writer.offer({ENDPOINT: report})
        async with running(writer.run()):
            await until(lambda: "status" in api_server.get("onlineendpoints", "demo"))
        await api.close()

    asyncio.run(main())
    written = api_server.get("onlineendpoints", "demo")
    assert written["metadata"]["generation"] == 2
    status = written["status"]
    assert status["observedGeneration"] == 1  # generation 2 is not yet judged: nothing claims it is accepted
    assert [(c["type"], c["status"], c["observedGeneration"]) for c in status["conditions"]] == [
        ("Accepted", "True", 1), ("Ready", "True", 1)]


def test_the_writer_removes_the_scale_status_of_a_deployment_no_longer_autoscaled(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlinedeployments", deployment("blue", "demo", "demo-blue"))  # no scaleSettings (any more)
    scaling = {"type": "Scaling", "status": "True", "reason": "TargetUtilization", "message": ""}
    api_server.store.update("onlinedeployments", "default", "blue", lambda obj: obj | {"status": {
        "conditions": [scaling], "scale": {"desiredReplicas": 3, "utilization": 80}}}, status=True)
    key = ("OnlineDeployment", "default", "blue")

    async def main() -> None:
        api = await KubeApi.connect(str(kubeconfig))
        writer = StatusWriter(api, lambda key: api_server.get("onlinedeployments", key[2]), lambda: True,
                              scoring_base_url="", settings=WatchSettings())
        writer.offer({key: Report(generation=1, serving=True)})
        async with running(writer.run()):
            await until(lambda: "scale" not in api_server.get("onlinedeployments", "blue")["status"])
        await api.close()

    asyncio.run(main())
    status = api_server.get("onlinedeployments", "blue")["status"]
    assert [c["type"] for c in status["conditions"]] == ["Accepted", "Ready"]


def test_a_holder_cut_off_stops_leading_at_its_renew_deadline_before_anyone_takes_over(
        api_server: FakeApiServer, tmp_path: Path) -> None:
    settings = LeaseSettings(name="router", duration_s=1.0, renew_deadline_s=0.6, retry_s=0.1)
    api_server.tokens.update({"a-token", "b-token"})
    changes: list[tuple[str, bool, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # each attempt may take 3 s (the request timeout), longer than the lease lasts
        a_api, b_api = [await KubeApi.connect(str(api_server.kubeconfig(tmp_path / name, token=f"{name}-token")),
                                              request_timeout_s=3.0) for name in "ab"]
        a, b = (LeaderElector(api, "default", name, settings,
                              lambda led, n=name: changes.append((n, led, loop.time())))
                for api, name in ((a_api, "a"), (b_api, "b")))
        async with running(a.run()):
            await until(lambda: a.is_leader)
            async with running(b.run()):
                await asyncio.sleep(0.3)
                both = 0
                with api_server.hold(token="a-token"):  # a's renewals get no answer; b is served
                    cut = loop.time()
                    while not b.is_leader:
                        both += a.is_leader and b.is_leader
                        assert loop.time() - cut < 3, "b never took over"
                        await asyncio.sleep(0.005)
                    assert not a.is_leader and both == 0
        await a_api.close()
        await b_api.close()

    asyncio.run(main())
    (a_lost,) = [t for name, led, t in changes if name == "a" and not led]
    (b_won,) = [t for name, led, t in changes if name == "b" and led]
    assert b_won - a_lost > 0.2  # a stopped well before b could start: no moment with two writers
