"""Autoscaling against the fake API server: real routers, real sample models, the unmodified client.

The harness plays the Deployment controller and the EndpointSlice controller: it turns the size
written to the fake Deployment's `/scale` into that many ready slice addresses of sample models.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.autoscale.decision import Decision
from router.discovery.kubernetes.api import KubeApi
from router.discovery.kubernetes.scaling import KubeScaling
from router.discovery.kubernetes.settings import LeaseSettings
from router.model import OnlineDeployment, RequestSettings, ScaleSettings, ScaleTargetRef
from tests.helpers import BackgroundLoop, SampleModel
from tests.kube.cluster import (
    Traffic,
    deployment,
    endpoint,
    endpoint_slice,
    secret,
    start_kube_router,
    wait_until,
)
from tests.kube.fake_apiserver import FakeApiServer

KEY = "key-autoscale-0123456789"
LEASE = "inference-router-autoscaler"
FAST = ("--autoscale-stable-window", "3", "--autoscale-panic-window", "1", "--debug-endpoints")


def scaled_deployment(*, min_instances: int = 1, max_instances: int = 4) -> dict[str, Any]:
    """blue of endpoint demo: one request at a time per replica, target 100 %: demand N wants N replicas."""
    obj = deployment("blue", "demo", "demo-blue")
    obj["spec"]["requestSettings"] = {"requestTimeoutMs": 10000, "maxConcurrentRequestsPerInstance": 1,
                                      "maxQueueWaitMs": 8000}
    obj["spec"]["scaleSettings"] = {"type": "target_utilization", "minInstances": min_instances,
                                    "maxInstances": max_instances, "targetUtilizationPercentage": 100,
                                    "pollingInterval": 1, "scaleTargetRef": {"kind": "Deployment", "name": "demo-blue"}}
    return obj


def apps_deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
            "status": {"replicas": replicas}}


def replicas(api_server: FakeApiServer) -> int:
    return int(api_server.get("deployments", "demo-blue")["spec"]["replicas"])


class Controllers(BackgroundLoop):
    """The Deployment and EndpointSlice controllers, in a thread: the first `spec.replicas` models are ready
    slice addresses of Service demo-blue (and the Deployment's `status.replicas`)."""

    def __init__(self, api_server: FakeApiServer, models: list[SampleModel]) -> None:
        super().__init__()
        self.api_server, self.models = api_server, models
        self.sizes: list[int] = []  # every size it has made ready, in order

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.wait(0.05) and time.monotonic() < deadline:
            wanted = min(replicas(self.api_server), len(self.models))
            if self.sizes and self.sizes[-1] == wanted:
                continue
            existing = {o["metadata"]["name"] for o in self.api_server.list("endpointslices")["items"]}
            for i, model in enumerate(self.models):
                name = f"demo-blue-{i}"
                if i < wanted and name not in existing:
                    self.api_server.create("endpointslices", endpoint_slice(name, "demo-blue", model.port))
                elif i >= wanted and name in existing:
                    self.api_server.delete("endpointslices", name)
            self.api_server.patch("deployments", "demo-blue", {"status": {"replicas": wanted}})
            self.sizes.append(wanted)


@pytest.fixture
def models(sample_model_factory: Callable[..., SampleModel]) -> list[SampleModel]:
    return [sample_model_factory("--name", f"blue-{i}", "--latency-ms", "150") for i in range(4)]


@pytest.fixture
def cluster(api_server: FakeApiServer, models: list[SampleModel]) -> Iterator[Controllers]:
    api_server.create("secrets", secret("demo-keys", primaryKey=KEY))
    api_server.create("onlineendpoints", endpoint("demo", {"blue": 100}))
    api_server.create("onlinedeployments", scaled_deployment())
    api_server.create("deployments", apps_deployment("demo-blue", 1))
    with Controllers(api_server, models) as controllers:
        yield controllers


def holder(api_server: FakeApiServer) -> str | None:
    try:
        return api_server.get("leases", LEASE)["spec"].get("holderIdentity")
    except Exception:
        return None


@contextlib.contextmanager
def load(router: Any, clients: int) -> Iterator[list[Traffic]]:
    """`clients` clients sending to endpoint demo, one request at a time each, for the length of the block."""
    with Traffic.clients(clients, router, "demo", KEY, limit_s=40) as traffic:
        yield traffic


def stays_at_one_replica(router: Any, api_server: FakeApiServer) -> None:
    """Under a demand of 3 for 2.5 s, the Deployment is not scaled (something else owns its size)."""
    with load(router, 3):
        time.sleep(2.5)
        assert replicas(api_server) == 1


def test_load_scales_the_deployment_up_at_once_spreads_onto_the_new_replicas_and_down_after_the_window(
        api_server: FakeApiServer, kubeconfig: Path, cluster: Controllers) -> None:
    router = start_kube_router(kubeconfig, *FAST)
    router.wait_ready()
    wait_until(lambda: holder(api_server) is not None, 10, "a router leads autoscaling")
    assert replicas(api_server) == 1
    with load(router, 4) as traffic:  # four clients, one request at a time each: a demand of 4
        took = wait_until(lambda: replicas(api_server) > 1, 5, "the Deployment scaled up")
        assert took < 2.5, f"scaled up {took:.1f} s after the load began"
        wait_until(lambda: replicas(api_server) == 4, 5, "the Deployment at the demand's size")
        wait_until(lambda: cluster.sizes[-1:] == [4], 5, "four replicas ready")
        ready_at = time.monotonic()
        wait_until(lambda: {name for t in traffic for at, _, name in t.answers if at > ready_at} >= {
            "blue-0", "blue-1", "blue-2", "blue-3"}, 10, "answers from every replica")
    assert all(status == 200 for t in traffic for _, status, _ in t.answers)
    stopped = time.monotonic()
    wait_until(lambda: replicas(api_server) == 1, 20, "the Deployment back to one replica")
    # down from the stable window's mean (3 s): one replica only once the whole window is quiet (the last
    # busy sample may be up to a polling interval older than the end of the load)
    assert time.monotonic() - stopped >= 3 - 1, "back to one before a stable window without demand"
    wait_until(lambda: cluster.sizes[-1] == 1, 5, "one replica ready")
    down = cluster.sizes[cluster.sizes.index(4):]
    assert down == sorted(down, reverse=True) and down[1] >= 2, f"down at most halving a step: {down}"

    wait_until(lambda: api_server.get("onlinedeployments", "blue")["status"]["scale"]["desiredReplicas"] == 1, 5,
               "status.scale says the last decision")
    status = api_server.get("onlinedeployments", "blue")["status"]
    assert status["scale"]["lastScaleTime"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Scaling"]["status"] == "True" and conditions["Ready"]["status"] == "True"
    messages = [e["message"] for e in api_server.list("events")["items"]
                if e["involvedObject"]["name"] == "blue" and e["reason"] == "Scaled"]
    assert any(m.startswith("scaled Deployment default/demo-blue from 1 to ") and " replicas (utilization " in m
               for m in messages), messages
    assert any(" to 4 replicas " in m for m in messages), messages
    assert any("from 2 to 1" in m for m in messages), messages
    metrics = httpx.get(f"http://127.0.0.1:{router.admin_port}/metrics").text
    assert 'inference_router_autoscale_desired_replicas{deployment="blue",namespace="default"} 1.0' in metrics
    assert 'inference_router_autoscale_utilization{deployment="blue",namespace="default"}' in metrics
    debug = httpx.get(f"http://127.0.0.1:{router.admin_port}/debug/deployments").json()
    assert debug["default/blue"]["autoscale"]["mode"] == "leader"
    assert debug["default/blue"]["autoscale"]["desired"] == 1
    assert router.stop() == 0


def test_the_leader_killed_is_replaced_and_the_next_decision_is_the_new_ones(
        api_server: FakeApiServer, kubeconfig: Path, cluster: Controllers) -> None:
    first = start_kube_router(kubeconfig, *FAST)
    first.wait_ready()
    wait_until(lambda: holder(api_server) is not None, 10, "the first router leads autoscaling")
    old = holder(api_server)
    second = start_kube_router(kubeconfig, *FAST)
    second.wait_ready()
    time.sleep(1)
    assert holder(api_server) == old
    os.kill(first.process.pid, signal.SIGKILL)  # no release: the Lease must run out
    first.process.stop()
    wait_until(lambda: holder(api_server) not in (None, old), 20, "the second router takes the Lease")
    with load(second, 3):
        wait_until(lambda: replicas(api_server) == 3, 5, "the new leader scaled up")
    first_decision = second.process.events_named("autoscale.scaled")[0]
    assert first_decision["old"] == 1 and first_decision["new"] > 1
    events = [e for e in api_server.list("events")["items"] if e["reason"] == "Scaled"]
    assert events and {e["reportingInstance"] for e in events} == {holder(api_server)}  # the old one never scaled
    assert second.stop() == 0


def test_an_hpa_on_the_same_object_stops_the_router_scaling_it(
        api_server: FakeApiServer, kubeconfig: Path, cluster: Controllers) -> None:
    api_server.create("horizontalpodautoscalers", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "blue-hpa", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-blue"},
                 "minReplicas": 1, "maxReplicas": 3}})
    with api_server.hold(plural="horizontalpodautoscalers"):  # until the HPAs are listed, none is known to be absent
        router = start_kube_router(kubeconfig, *FAST)
        router.wait_ready()
        wait_until(lambda: holder(api_server) is not None, 10, "the router leads autoscaling")
        stays_at_one_replica(router, api_server)

    def scaling() -> dict[str, Any]:
        conditions = (api_server.get("onlinedeployments", "blue").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Scaling"), {})

    wait_until(lambda: scaling().get("reason") == "HorizontalPodAutoscalerPresent", 10, "the Scaling condition")
    assert scaling()["status"] == "False" and "blue-hpa" in scaling()["message"]
    debug = httpx.get(f"http://127.0.0.1:{router.admin_port}/debug/deployments").json()["default/blue"]["autoscale"]
    assert "blue-hpa" in debug["blocked"] and "desired" not in debug
    metrics = httpx.get(f"http://127.0.0.1:{router.admin_port}/metrics").text
    assert "inference_router_autoscale_desired_replicas{" not in metrics  # no decision of its own to report
    stays_at_one_replica(router, api_server)
    assert not api_server.requests_for("deployments", method="PUT")
    (logged,) = router.process.events_named("autoscale.hpa_present")
    assert logged["hpa"] == "default/blue-hpa" and logged["target"] == "Deployment/demo-blue"
    api_server.delete("horizontalpodautoscalers", "blue-hpa")  # the HPA gone: the router scales again
    with load(router, 3):
        wait_until(lambda: replicas(api_server) == 3, 5, "scaled once the HPA is gone")
    wait_until(lambda: scaling().get("status") == "True", 5, "Scaling=True again")
    assert router.stop() == 0


def test_a_write_from_a_stale_read_is_refused_and_made_again_from_a_fresh_one(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("deployments", apps_deployment("demo-blue", 2))
    spec = OnlineDeployment(namespace="default", name="blue", endpoint_name="demo",
                            request_settings=RequestSettings(),
                            scale_settings=ScaleSettings(type="target_utilization", min_instances=1, max_instances=9,
                                                         scale_target_ref=ScaleTargetRef(name="demo-blue")))
    seen: list[int] = []

    def decide(current: int) -> Decision:
        seen.append(current)
        if len(seen) == 1:  # someone else scales between this read and its write: the write is stale
            api_server.patch("deployments", "demo-blue", {"spec": {"replicas": 5}})
        return Decision(current + 1, 50.0, False, "test")

    async def main() -> Any:
        api = await KubeApi.connect(str(kubeconfig))
        scaling = KubeScaling(api, "default", "me", LeaseSettings(name=LEASE), lambda key: None)
        try:
            return await scaling.scale(spec, decide)
        finally:
            await api.close()

    outcome = asyncio.run(main())
    assert seen == [2, 5]  # decided again from what the object had become
    assert (outcome.current, outcome.desired) == (5, 6) and replicas(api_server) == 6
    puts = api_server.requests_for("deployments", method="PUT")
    assert [(r.path, r.status) for r in puts] == [("/apis/apps/v1/namespaces/default/deployments/demo-blue/scale", 409),
                                                  ("/apis/apps/v1/namespaces/default/deployments/demo-blue/scale", 200)]


def test_a_statefulset_goes_to_zero_and_a_missing_target_is_said_in_the_status(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("statefulsets", apps_deployment("demo-green", 1) | {"kind": "StatefulSet"})
    api_server.create("onlinedeployments", scaled_deployment())

    def spec(kind: str, target: str) -> OnlineDeployment:
        return OnlineDeployment(namespace="default", name="blue", endpoint_name="demo",
                                scale_settings=ScaleSettings(type="target_utilization", min_instances=0,
                                                             scale_target_ref=ScaleTargetRef(kind=kind, name=target)))

    async def main() -> list[Any]:
        api = await KubeApi.connect(str(kubeconfig))
        scaling = KubeScaling(api, "default", "me", LeaseSettings(name=LEASE),
                              lambda key: api_server.get("onlinedeployments", key[2]))
        try:
            idle = Decision(0, 0.0, False, "idle")
            return [await scaling.scale(spec("StatefulSet", "demo-green"), lambda current: idle),
                    await scaling.scale(spec("Deployment", "gone"), lambda current: idle)]
        finally:
            await api.close()

    to_zero, missing = asyncio.run(main())
    assert (to_zero.current, to_zero.desired) == (1, 0)
    assert api_server.get("statefulsets", "demo-green")["spec"]["replicas"] == 0
    (event,) = api_server.list("events")["items"]
    assert event["message"] == "scaled StatefulSet default/demo-green from 1 to 0 replicas (utilization 0%: idle)"
    assert missing.blocked == "Deployment default/gone (scaleTargetRef) does not exist"
    status = api_server.get("onlinedeployments", "blue")["status"]
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Scaling", "False", "ScaleTargetNotFound")
    assert status["scale"]["desiredReplicas"] == 0  # the last decision made stays
