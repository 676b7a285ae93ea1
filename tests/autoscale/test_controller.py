"""The autoscaler's loop: local mode through a real router, and the loop's rules against seams (a demand source
and a scale target standing in for the data plane and the API)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from router.autoscale import Autoscaler, Decision, Demand, Outcome, Windows
from router.autoscale.decision import Decide
from router.model import OnlineDeployment, ScaleSettings, ScaleTargetRef
from tests.helpers import SampleModel
from tests.routing import Config, Traffic, start_router, wait_until


def test_local_mode_scales_nothing_and_shows_the_size_it_would_set(
        tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    models = [sample_model_factory("--name", f"blue-{i}", "--latency-ms", "150") for i in range(2)]
    config = Config().deployment("blue", [m.url for m in models], weight=100, queue_wait_ms=8000, timeout_ms=10000)
    config.deployments["blue"]["scaleSettings"] = {"type": "target_utilization", "minInstances": 1,
                                                   "maxInstances": 6, "targetUtilizationPercentage": 100}
    router = start_router(tmp_path, config, "--debug-endpoints", "--autoscale-panic-window", "1",
                          "--autoscale-stable-window", "2")

    def autoscale() -> dict[str, object]:
        state = httpx.get(f"{router.admin_url}/debug/deployments").json()["default/blue"]
        return dict(state.get("autoscale") or {})

    wait_until(lambda: autoscale().get("desired") in (1, 2), 5, "at rest: at most the replicas it has")
    assert autoscale()["mode"] == "local (nothing is scaled)"
    seen: dict[str, object] = {}

    def five() -> bool:  # the state as the size went up: once the load stops, the stable window decides
        seen.update(autoscale())
        return seen.get("desired") == 5

    with Traffic.clients(5, router, "demo", config.key, limit_s=20):
        wait_until(five, 5, "five clients want five replicas")
    assert seen["decision"]["reason"] == "short-window demand"  # type: ignore[index]
    wait_until(lambda: autoscale().get("desired") == 1, 10, "back to minInstances without load")
    metrics = httpx.get(f"{router.admin_url}/metrics").text
    assert 'inference_router_autoscale_desired_replicas{deployment="blue",namespace="default"} 1.0' in metrics
    assert router.stop() == 0


class Demands:
    def __init__(self) -> None:
        self.now: dict[tuple[str, str], Demand] = {}

    def demand(self) -> dict[tuple[str, str], Demand]:
        return dict(self.now)


class Target:
    """Stands in for the API: a size per deployment, and whether this router leads."""

    def __init__(self, since: float | None) -> None:
        self.since = since
        self.sizes: dict[str, int] = {}
        self.calls: list[tuple[str, float]] = []

    def leading_since(self) -> float | None:
        return self.since

    async def scale(self, deployment: OnlineDeployment, decide: Decide) -> Outcome:
        current = self.sizes.get(deployment.name, 0)
        decision: Decision = decide(current)
        self.calls.append((deployment.name, time.monotonic()))
        self.sizes[deployment.name] = decision.desired
        return Outcome(current, decision.desired)


def scaled(name: str, polling: int = 1, min_instances: int = 0) -> OnlineDeployment:
    return OnlineDeployment(namespace="default", name=name, endpoint_name="demo", scale_settings=ScaleSettings(
        type="target_utilization", min_instances=min_instances, max_instances=5, target_utilization_percentage=100,
        polling_interval=polling, scale_target_ref=ScaleTargetRef(name=name)))


def test_a_nudge_decides_at_once_not_at_the_next_polling_time() -> None:
    async def main() -> None:
        demands, target = Demands(), Target(since=0.0)
        deployments = [scaled("blue", polling=60)]
        autoscaler = Autoscaler(demands, lambda: deployments, target, Windows(), tick_s=30)
        task = asyncio.create_task(autoscaler.run())
        try:
            while not target.calls:
                await asyncio.sleep(0.01)
            assert target.sizes == {"blue": 0}
            demands.now[("default", "blue")] = Demand(busy=0, queued=1, ready=0)  # a request waits for a replica
            nudged = time.monotonic()
            autoscaler.nudge("default", "blue")
            while len(target.calls) < 2:
                await asyncio.sleep(0.01)
            assert target.calls[1][1] - nudged < 0.5  # not at the next poll (60 s) nor the next tick (30 s)
            assert target.sizes == {"blue": 1}
        finally:
            task.cancel()
    asyncio.run(main())


def test_a_follower_samples_but_never_scales_and_a_dropped_deployment_is_forgotten() -> None:
    async def main() -> None:
        target = Target(since=None)
        deployments = [scaled("blue"), OnlineDeployment(namespace="default", name="fixed", endpoint_name="demo",
                                                        scale_settings=ScaleSettings())]
        autoscaler = Autoscaler(Demands(), lambda: deployments, target, Windows())
        await autoscaler.poll(100.0)
        assert target.calls == []
        assert autoscaler.state(("default", "blue")) == {"mode": "follower", "demand": 0}
        assert autoscaler.state(("default", "fixed")) is None  # a fixed size is not the autoscaler's
        target.since = 100.0
        await autoscaler.poll(101.0)
        assert [name for name, _ in target.calls] == ["blue"]
        deployments.clear()
        await autoscaler.poll(102.0)
        assert autoscaler.state(("default", "blue")) is None
    asyncio.run(main())
