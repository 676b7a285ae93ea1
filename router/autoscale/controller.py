"""The autoscaler's loop: sample each deployment's demand every `pollingInterval`, decide, write.

Every router samples; only the one that leads (its `ScaleTarget` says since when) decides and
writes, through the target: in a cluster the `/scale` subresource of the deployment's
`scaleTargetRef` (`discovery.kubernetes.scaling`). Without a target (local mode) nothing is
written: the size it would set is kept, and the next decision starts from it, so
`/debug/deployments` shows how the size would move.

Scale from zero: a request that finds no replica of an autoscaled deployment should wait in its
queue (it is demand) and the data plane should call `nudge` for the deployment: the next tick
samples and decides at once instead of at the end of the polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from router import logs, metrics
from router.autoscale.decision import Decide, Decision, Outcome, Policy, Sample, Windows, decide
from router.autoscale.demand import Demand, DemandSource
from router.model import OnlineDeployment

DeploymentKey = tuple[str, str]


class ScaleTarget(Protocol):
    def leading_since(self) -> float | None:
        """When (loop time) this router became the one that scales; None while it is not."""
        ...

    async def scale(self, deployment: OnlineDeployment, decide: Decide) -> Outcome:
        """Read the deployment's current size, decide from it, write the decision if it changes the size."""
        ...


@dataclass
class _Tracked:
    samples: deque[Sample] = field(default_factory=deque)
    last_demand_at: float | None = None
    next_poll: float = 0.0
    decision: Decision | None = None
    outcome: Outcome | None = None
    simulated: int | None = None  # local mode: the size it would have set


class Autoscaler:
    def __init__(self, demand: DemandSource, deployments: Callable[[], Iterable[OnlineDeployment]],
                 target: ScaleTarget | None, windows: Windows, *, tick_s: float = 0.25) -> None:
        self.demand = demand
        self.deployments = deployments
        self.target = target
        self.windows = windows
        self.tick_s = tick_s  # how soon a new deployment is picked up
        self._tracked: dict[DeploymentKey, _Tracked] = {}
        self._started = 0.0
        self._nudged = asyncio.Event()

    def __repr__(self) -> str:
        mode = "local" if self.target is None else "leading" if self.target.leading_since() is not None \
            else "following"
        return f"<Autoscaler {mode} deployments={len(self._tracked)}>"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        while True:
            self._nudged.clear()
            try:
                await self.poll(loop.time())
            except Exception as exc:  # a bug must not stop autoscaling for good: the next tick tries again
                logs.event("autoscale.failed", level=logging.ERROR, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_s):
                    await self._nudged.wait()

    def nudge(self, namespace: str, name: str) -> None:
        """Decide for this deployment now, not at its next polling time (a request waits for a replica).

        Cheap and synchronous: the data plane may call it from a request's path."""
        tracked = self._tracked.get((namespace, name))
        if tracked is not None and tracked.next_poll > 0.0:
            tracked.next_poll = 0.0
            self._nudged.set()

    async def poll(self, now: float) -> None:
        """One tick: every deployment whose polling interval has passed is sampled (and scaled, if leading)."""
        wanted = {(d.namespace, d.name): d for d in self.deployments() if d.autoscaled}
        for key in self._tracked.keys() - wanted.keys():
            del self._tracked[key]
            metrics.autoscale_forget(*key)
        due = [(key, d) for key, d in wanted.items() if self._tracked.setdefault(key, _Tracked()).next_poll <= now]
        if not due:
            return
        report = self.demand.demand()
        for key, deployment in due:
            tracked = self._tracked[key]
            assert deployment.scale_settings is not None
            tracked.next_poll = now + deployment.scale_settings.polling_interval
            self._sample(tracked, report.get(key, Demand()), now)
            await self._scale(key, deployment, tracked, now)

    def _sample(self, tracked: _Tracked, demand: Demand, now: float) -> None:
        samples = tracked.samples
        samples.append(Sample(now, demand.total, demand.ready))
        while samples[0].at < now - self.windows.stable_s:
            samples.popleft()
        if demand.total > 0:
            tracked.last_demand_at = now

    async def _scale(self, key: DeploymentKey, deployment: OnlineDeployment, tracked: _Tracked, now: float) -> None:
        assert deployment.scale_settings is not None
        policy = Policy.of(deployment.scale_settings, deployment.request_settings)
        since = self._started if self.target is None else self.target.leading_since()
        if since is None:
            tracked.decision = tracked.outcome = None  # a follower: the leader's size is the one that counts
            return

        def decision(current: int) -> Decision:
            tracked.decision = decide(tracked.samples, current=current, now=now, policy=policy,
                                      windows=self.windows, leading_since=since, last_demand_at=tracked.last_demand_at)
            return tracked.decision

        tracked.decision = None  # set again only if the target gets as far as deciding
        if self.target is None:
            current = tracked.simulated if tracked.simulated is not None else tracked.samples[-1].ready
            tracked.simulated = decision(current).desired
            tracked.outcome = Outcome(current, tracked.simulated)
        else:
            tracked.outcome = await self.target.scale(deployment, decision)
        if tracked.decision is not None:
            metrics.autoscale_decided(*key, tracked.outcome.desired, tracked.decision.utilization)

    def state(self, key: DeploymentKey) -> dict[str, object] | None:
        """What it decided last for a deployment (for /debug/deployments); None if not autoscaled here."""
        tracked = self._tracked.get(key)
        if tracked is None:
            return None
        state: dict[str, object] = {"mode": "local (nothing is scaled)" if self.target is None else
                                    "leader" if tracked.outcome is not None else "follower",
                                    "demand": tracked.samples[-1].demand if tracked.samples else 0}
        if tracked.outcome is not None and tracked.outcome.blocked:
            state["blocked"] = tracked.outcome.blocked
        elif tracked.outcome is not None:
            state.update(current=tracked.outcome.current, desired=tracked.outcome.desired)
        if tracked.decision is not None:
            state["decision"] = tracked.decision.summary
        return state
