"""The autoscaler's decision, rule by rule: a pure function of the samples and the settings."""

from __future__ import annotations

import pytest

from router.autoscale.decision import Policy, Sample, Windows, decide, utilization
from router.model import RequestSettings, ScaleSettings

WINDOWS = Windows(stable_s=60, panic_s=6, zero_grace_s=30)
# 4 slots a replica at 50 %: one replica carries a demand of 2
POLICY = Policy.of(ScaleSettings(type="target_utilization", min_instances=1, max_instances=10,
                                 target_utilization_percentage=50),
                   RequestSettings(max_concurrent_requests_per_instance=4))
ZERO = Policy(per_replica=2, slots=4, min_replicas=0, max_replicas=10)
NOW = 1000.0


def steady(demand: float, ready: int, seconds: int = 120, *, tail: list[float] | None = None) -> list[Sample]:
    """One sample a second for `seconds` at `demand`, the last ones replaced by `tail`."""
    values = [demand] * seconds
    if tail:
        values[-len(tail):] = tail
    return [Sample(NOW - seconds + 1 + i, v, ready) for i, v in enumerate(values)]


CASES = [
    # (name, samples, current, policy, leading for, last demand ago, desired, reason starts with)
    ("steady at target", steady(4, 2), 2, POLICY, 600, 0, 2, "steady"),
    ("up at once from the short window", steady(2, 1, tail=[10] * 3), 1, POLICY, 600, 0, 3, "short-window"),
    ("up from the short window's mean", steady(0, 1, tail=[12, 12, 12]), 1, POLICY, 600, 0, 3, "short-window"),
    ("one busy instant in the short window is diluted", steady(0, 1, tail=[4]), 1, POLICY, 600, 0, 1, "steady"),
    ("down from the stable window", steady(4, 4), 4, POLICY, 600, 0, 2, "stable-window"),
    ("down at most halving", steady(1, 8), 8, POLICY, 600, 0, 4, "stable-window"),
    ("halving rounds up", steady(1, 5), 5, POLICY, 600, 0, 3, "stable-window"),
    ("no down from a short quiet moment", steady(8, 4, tail=[0] * 6), 4, POLICY, 600, 0, 4, "steady"),
    ("panic: no down while over twice the ready capacity",
     steady(1, 1, seconds=60, tail=[9] * 6), 5, POLICY, 600, 0, 5, "panic"),
    ("new leader: no down within a stable window", steady(1, 8), 8, POLICY, 30, 0, 8, "new leader"),
    ("new leader: up at once", steady(2, 1, tail=[10] * 6), 1, POLICY, 1, 0, 5, "short-window"),
    ("clamped to maxInstances", steady(100, 10, tail=[100] * 6), 4, POLICY, 600, 0, 10, "short-window"),
    ("clamped to minInstances", steady(0, 1), 1, POLICY, 600, 100, 1, "steady"),
    ("below minInstances: raised", steady(0, 0), 0, POLICY, 600, 100, 1, "steady (clamped"),
    ("to zero after a stable window and the grace", steady(0, 2), 2, ZERO, 600, 91, 0, "no demand"),
    ("not to zero within the grace", steady(0, 2), 2, ZERO, 600, 89, 1, "stable-window"),
    ("not to zero before the first demand is a window and grace old", steady(0, 1), 1, ZERO, 80, None, 1, "steady"),
    ("never to zero with minInstances 1", steady(0, 1), 1, POLICY, 600, 1000, 1, "steady"),
    ("from zero at the first request", steady(0, 0, tail=[1]), 0, ZERO, 600, 0, 1, "short-window"),
]


@pytest.mark.parametrize(("name", "samples", "current", "policy", "leading_for", "quiet_for", "desired", "reason"),
                         CASES, ids=[c[0] for c in CASES])
def test_decision(name: str, samples: list[Sample], current: int, policy: Policy, leading_for: float,
                  quiet_for: float | None, desired: int, reason: str) -> None:
    decision = decide(samples, current=current, now=NOW, policy=policy, windows=WINDOWS,
                      leading_since=NOW - leading_for, last_demand_at=None if quiet_for is None else NOW - quiet_for)
    assert (decision.desired, decision.reason[:len(reason)]) == (desired, reason), decision


def test_panic_is_reported_and_utilization_is_of_the_current_size() -> None:
    decision = decide(steady(1, 1, seconds=60, tail=[9] * 6), current=5, now=NOW, policy=POLICY, windows=WINDOWS,
                      leading_since=0, last_demand_at=NOW)
    assert decision.panicking
    stable = (54 + 54) / 60  # the mean of the stable window
    assert decision.utilization == pytest.approx(100 * stable / (5 * 4))


def test_utilization_without_replicas_is_against_one() -> None:
    assert utilization(8, 0, POLICY) == 200.0
    assert utilization(0, 0, POLICY) == 0.0


def test_desired_size_is_demand_over_the_target_share() -> None:
    assert POLICY.per_replica == 2.0
    assert [POLICY.replicas_for(d) for d in (0, 0.5, 2, 2.0000000001, 2.1, 7)] == [0, 1, 1, 1, 2, 4]


def test_no_samples_keeps_the_clamped_size() -> None:
    assert decide([], current=30, now=NOW, policy=POLICY, windows=WINDOWS, leading_since=0,
                  last_demand_at=None).desired == 10
