"""The split of a deployment's slots among routers: complete, exclusive, balanced, local."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.peers.split import DeploymentSlots, all_slots, deployment_share, per_replica, share

members_st = st.lists(st.from_regex(r"10\.0\.0\.[0-9]{1,3}:9091", fullmatch=True), min_size=1, max_size=8,
                      unique=True)
replicas_st = st.lists(st.from_regex(r"http://10\.1\.[0-9]\.[0-9]{1,2}:5001", fullmatch=True), max_size=12,
                       unique=True)


@given(members_st, replicas_st, st.integers(0, 6))
def test_every_slot_has_exactly_one_owner_and_shares_differ_by_at_most_one(
        members: list[str], replicas: list[str], cap: int) -> None:
    capacity = {"ns/blue": DeploymentSlots(tuple(replicas), cap)}
    shares = [share(capacity, members, m) for m in members]
    assert sum(len(s) for s in shares) == len(all_slots(capacity)) == len(replicas) * cap
    assert frozenset().union(*shares) == all_slots(capacity)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@given(members_st, replicas_st, st.integers(1, 4))
def test_every_member_computes_the_same_split_whatever_order_it_lists_things_in(
        members: list[str], replicas: list[str], cap: int) -> None:
    forward = {"ns/blue": DeploymentSlots(tuple(replicas), cap)}
    backward = {"ns/blue": DeploymentSlots(tuple(reversed(replicas)), cap)}
    for m in members:
        assert share(forward, members, m) == share(backward, list(reversed(members)), m)


@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 8))
def test_large_deployments_are_mostly_whole_replicas_per_router(routers: int, replicas: int, cap: int) -> None:
    """With 4 or more slots per router, a router's slots sit on at most 2 replicas it shares with another:
    its own share of the deployment is local, the hop only for what exceeds it."""
    members = [f"10.0.0.{n}:9091" for n in range(routers)]
    slots = DeploymentSlots(tuple(f"http://10.1.0.{n}:5001" for n in range(replicas)), cap)
    if slots.total < 4 * routers:
        return
    for m in members:
        mine = per_replica(deployment_share("ns/d", slots, members, m))
        partial = [place for place, n in mine.items() if n < cap]
        assert len(partial) <= 2
        assert sum(mine.values()) >= slots.total // routers


def test_a_split_among_three_routers() -> None:
    slots = DeploymentSlots(("http://b:1", "http://a:1"), 3)
    members = ["10.0.0.3:9091", "10.0.0.1:9091", "10.0.0.2:9091"]
    assert deployment_share("ns/d", slots, sorted(members), "10.0.0.1:9091") == [
        ("ns/d", "http://a:1", 0), ("ns/d", "http://a:1", 1)]
    assert deployment_share("ns/d", slots, sorted(members), "10.0.0.2:9091") == [
        ("ns/d", "http://a:1", 2), ("ns/d", "http://b:1", 0)]
    assert deployment_share("ns/d", slots, sorted(members), "10.0.0.9:9091") == []
