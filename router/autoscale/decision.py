"""How many replicas a deployment should have: a pure function of recent demand and its settings.

Demand is what the routers hold for a deployment at one instant: requests in flight at its
replicas plus requests queued for a slot. One replica is meant to carry
`maxConcurrentRequestsPerInstance * targetUtilizationPercentage / 100` of it, so the size that
carries a demand D is ceil(D / that). The rules, after azureml-fe and Knative's autoscaler:

- up at once: the mean demand of the short (panic) window asks for more than the current size;
- down slowly: only from the stable window's mean (60 s by default), and at most halving per step,
  so one quiet moment does not undo capacity a burst will need again;
- panic: while the short window's demand is over twice the ready capacity, never down;
- a new leader has no history: it does not scale down within one stable window of taking over;
- to zero (minInstances 0 only): after a stable window plus a grace without any demand;
- the result is clamped to [minInstances, maxInstances], whatever the rules above said.

No I/O, no clock: `now` and the samples are passed in, so every rule has a table test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from router.model import RequestSettings, ScaleSettings

PANIC_FACTOR = 2.0  # demand over this times the ready capacity: panic, no scale-down
ZERO_GRACE_S = 30.0  # after a stable window without demand, this much longer before scaling to zero


@dataclass(frozen=True, slots=True, kw_only=True)
class Windows:
    stable_s: float = 60.0  # scale down only from the demand of this long
    panic_s: float = 6.0  # scale up from the demand of this long
    zero_grace_s: float = ZERO_GRACE_S


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # when it was taken (the caller's clock)
    demand: float  # requests in flight at replicas plus requests queued, summed over the routers
    ready: int  # ready replicas the routers route to


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What a deployment's settings say about its size."""

    per_replica: float  # the demand one replica is meant to carry
    slots: int  # requests one replica takes at once
    min_replicas: int
    max_replicas: int

    @classmethod
    def of(cls, scale: ScaleSettings, requests: RequestSettings) -> Policy:
        slots = requests.max_concurrent_requests_per_instance
        return cls(per_replica=slots * scale.target_utilization_percentage / 100, slots=slots,
                   min_replicas=scale.min_instances, max_replicas=scale.max_instances)

    def replicas_for(self, demand: float) -> int:
        return math.ceil(round(demand / self.per_replica, 9))  # 2.0000000001 of float noise is 2

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    utilization: float  # percent of the current size's capacity the stable window's demand uses
    panicking: bool
    reason: str  # which rule decided, for logs, Events and /debug

    @property
    def summary(self) -> dict[str, object]:
        return {"desired": self.desired, "utilization": round(self.utilization, 1), "panicking": self.panicking,
                "reason": self.reason}


def _mean(samples: Sequence[Sample], since: float) -> float:
    recent = [s.demand for s in samples if s.at > since]
    return sum(recent) / len(recent) if recent else 0.0


def utilization(demand: float, replicas: int, policy: Policy) -> float:
    """Demand as a percent of the capacity of `replicas` (of one replica when there is none)."""
    return 100.0 * demand / (max(1, replicas) * policy.slots)


def decide(samples: Sequence[Sample], *, current: int, now: float, policy: Policy, windows: Windows,
           leading_since: float, last_demand_at: float | None) -> Decision:
    """The size for a deployment of `current` replicas, from `samples` (oldest first, the newest taken at
    `now`); `leading_since`: when this decider took over; `last_demand_at`: when demand was last above zero
    (None: never seen)."""
    if not samples:
        return Decision(policy.clamp(current), 0.0, False, "no samples")
    short = _mean(samples, now - windows.panic_s)
    stable = _mean(samples, now - windows.stable_s)
    ready_capacity = samples[-1].ready * policy.slots
    panicking = short > PANIC_FACTOR * ready_capacity
    load = utilization(stable, current, policy)
    quiet_since = leading_since if last_demand_at is None else max(last_demand_at, leading_since)
    if policy.min_replicas == 0 and short == 0 and now - quiet_since >= windows.stable_s + windows.zero_grace_s:
        return Decision(0, load, panicking, "no demand for a stable window and the grace")
    wanted_now = policy.replicas_for(short)
    if wanted_now > current:
        desired, reason = wanted_now, "short-window demand"
    elif panicking:
        desired, reason = current, "panic: demand over twice the ready capacity"
    elif now - leading_since < windows.stable_s:
        desired, reason = current, "new leader: less than a stable window of history"
    else:
        wanted = max(policy.replicas_for(stable), 1)  # zero only by the rule above
        if wanted < current:
            desired, reason = max(wanted, math.ceil(current / 2)), "stable-window demand"
        else:
            desired, reason = current, "steady"
    clamped = policy.clamp(desired)
    if clamped != desired:
        reason += f" (clamped to [{policy.min_replicas}, {policy.max_replicas}])"
    return Decision(clamped, load, panicking, reason)


Decide = Callable[[int], Decision]  # the current size, as the scale target reads it → the decision


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a scale target did with a decision."""

    current: int  # the size before
    desired: int  # the size after: written, or left as it was
    blocked: str | None = None  # why it did not scale (an HPA owns the object, no target, a refusal)
