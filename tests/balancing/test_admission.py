"""Admission and replica choice as pure decisions: no sockets, no clock."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from router.balancing.admission import DeploymentBalancer
from router.balancing.replicas import (
    EJECT_BASE_S,
    FAILURES_TO_EJECT,
    SLOW_START_S,
    Replica,
    pick_least_loaded,
)
from router.model import RequestSettings


@dataclass(eq=False)
class Waiter:
    name: str
    deadline: float = 10.0
    tried: tuple[Replica, ...] = ()


def balancer(n: int = 2, capacity: int = 1, wait_ms: int = 500, policy: str = "least_loaded",
             started: float = -100.0) -> DeploymentBalancer:
    b = DeploymentBalancer("ns/dep", RequestSettings(max_concurrent_requests_per_instance=capacity,
                                                     max_queue_wait_ms=wait_ms), policy, seed=1)  # type: ignore[arg-type]
    b.update(tuple(Replica(f"http://127.0.0.1:{5000 + i}", started) for i in range(n)), b_settings(capacity, wait_ms))
    return b


def b_settings(capacity: int, wait_ms: int) -> RequestSettings:
    return RequestSettings(max_concurrent_requests_per_instance=capacity, max_queue_wait_ms=wait_ms)


@pytest.mark.parametrize("policy", ["least_loaded", "round_robin"])
def test_no_replica_ever_takes_more_than_its_cap(policy: str) -> None:
    b = balancer(n=3, capacity=2, policy=policy)
    taken = [b.acquire(0.0) for _ in range(6)]
    assert all(taken) and b.acquire(0.0) is None
    assert [r.in_flight for r in b.replicas] == [2, 2, 2]


def test_waiters_are_admitted_in_arrival_order_as_slots_free() -> None:
    b = balancer(n=1, capacity=1)
    r = b.acquire(0.0)
    assert r is not None
    first, second = Waiter("first"), Waiter("second")
    b.enqueue(first)
    b.enqueue(second)
    assert b.acquire(0.0) is None  # a new request does not jump the queue
    assert b.release(r, 0.1) == [(first, r)]
    assert r.in_flight == 1
    assert b.release(r, 0.2) == [(second, r)]
    assert b.release(r, 0.3) == [] and r.in_flight == 0


def test_a_retry_may_jump_the_queue_but_not_to_a_replica_it_tried() -> None:
    b = balancer(n=2, capacity=1)
    a = b.acquire(0.0)
    b.enqueue(Waiter("w"))
    assert a is not None
    other = b.acquire(0.0, (a,), jump=True)
    assert other is not None and other is not a
    assert b.acquire(0.0, (a, other), jump=True) is None


def test_an_expired_waiter_leaves_the_queue_and_takes_any_free_slot() -> None:
    b = balancer(n=1, capacity=1)
    r = b.acquire(0.0)
    w = Waiter("w")
    b.enqueue(w)
    assert b.expire(w, 0.5) is None and not b.queue
    b.enqueue(w)
    assert r is not None
    r.in_flight -= 1  # the slot freed without a release (say, by a mirror) ...
    assert b.expire(w, 0.5) is r  # ... and the expiring waiter takes it


def test_retry_after_follows_the_drain_rate() -> None:
    b = balancer(n=1, capacity=1)
    assert b.retry_after(0.0) == 1  # nothing queued, nothing known
    for w in range(30):
        b.enqueue(Waiter(str(w)))
    assert b.retry_after(0.0) == 10  # queued, and nothing finishing: a cautious guess
    waiting = list(b.queue)
    b.queue.clear()
    r = b.replicas[0]
    now = 0.0
    for _ in range(20):  # 10 completions a second
        r.in_flight += 1
        now += 0.1
        b.release(r, now)
    b.queue.extend(waiting)
    assert 2 <= b.retry_after(now) <= 5  # about 31 requests at 10 a second
    b.queue.clear()
    assert b.retry_after(now) == 1


def test_ejected_replicas_are_skipped_unless_all_are() -> None:
    b = balancer(n=2, capacity=5)
    bad, good = b.replicas
    bad.ejected_until = 10.0
    assert {id(b.acquire(1.0)) for _ in range(4)} == {id(good)}
    good.ejected_until = 10.0
    assert b.acquire(1.0) is not None  # all ejected: serve rather than strand the deployment


def test_least_loaded_prefers_the_faster_and_the_less_busy_replica() -> None:
    fast, slow = Replica("http://f:1", -100), Replica("http://s:1", -100)
    fast.observe(10, 0.0)
    slow.observe(100, 0.0)
    rng = random.Random(0)
    assert all(pick_least_loaded([fast, slow], 0.0, 10, rng) is fast for _ in range(20))
    fast.in_flight = 20  # 21 x 10 ms of work queued there: the slow one is now cheaper
    assert pick_least_loaded([fast, slow], 0.0, 10, rng) is slow


def test_a_request_waits_for_a_fast_replica_rather_than_take_a_slow_one() -> None:
    b = balancer(n=2, capacity=1)
    fast, slow = b.replicas
    fast.observe(10, 0.0)
    slow.observe(100, 0.0)
    assert b.acquire(0.0) is fast
    assert b.acquire(0.0) is None  # 10 ms for the fast slot + 10 ms beats 100 ms
    b.max_queue_wait = 0.0
    assert b.acquire(0.0) is slow  # no time to wait: take what is free


def test_the_slow_replica_takes_overflow_when_the_queue_is_long() -> None:
    b = balancer(n=2, capacity=1)
    fast, slow = b.replicas
    fast.observe(10, 0.0)
    slow.observe(100, 0.0)
    assert b.acquire(0.0) is fast
    for w in range(12):
        b.enqueue(Waiter(str(w)))
    assert b.acquire(0.0, jump=True) is slow  # 13th in line: the slow replica is sooner


def test_an_idle_slow_estimate_drifts_back_so_the_replica_is_probed_again() -> None:
    slow = Replica("http://s:1")
    slow.observe(100, 0.0)
    assert slow.estimate(0.0, 10) == 100
    assert slow.estimate(5.0, 10) == pytest.approx(55)
    assert slow.estimate(60.0, 10) < 11


def test_latency_is_a_peak_ewma() -> None:
    r = Replica("http://r:1")
    r.observe(10, 0.0)
    r.observe(50, 0.1)
    assert r.latency_ms == 50  # slower: at once
    r.observe(10, 0.2)
    assert 10 < r.latency_ms < 50  # faster: gradually


def test_consecutive_failures_eject_with_growing_backoff_never_the_last_one() -> None:
    r = Replica("http://r:1")
    for _ in range(FAILURES_TO_EJECT - 1):
        assert not r.fail(0.0, may_eject=True)
    assert r.fail(0.0, may_eject=True) and r.ejected(0.5)
    assert not r.ejected(EJECT_BASE_S)
    for _ in range(FAILURES_TO_EJECT):
        r.fail(2.0, may_eject=True)
    assert r.ejected_until == pytest.approx(2.0 + 2 * EJECT_BASE_S)  # doubled
    assert r.observe(5, 10.0)  # a good answer after the ejection: it returned
    last = Replica("http://last:1")
    assert not any(last.fail(0.0, may_eject=False) for _ in range(10))
    assert not last.ejected(0.0)


def test_slow_start_ramps_a_new_replica_up() -> None:
    r = Replica("http://r:1", now=100.0)
    assert r.share(100.0) == pytest.approx(0.1)
    assert r.share(100.0 + SLOW_START_S / 2) == pytest.approx(0.5)
    assert r.share(100.0 + SLOW_START_S) == 1.0


def test_round_robin_cycles_over_free_replicas() -> None:
    b = balancer(n=3, capacity=10, policy="round_robin")
    picks = [b.acquire(0.0) for _ in range(6)]
    assert [p.url[-4:] for p in picks if p] == ["5000", "5001", "5002"] * 2


def test_repr_and_state_show_what_the_balancer_holds() -> None:
    b = balancer(n=2, capacity=1)
    r = b.acquire(0.0)
    b.enqueue(Waiter("w"))
    assert repr(b) == "<DeploymentBalancer ns/dep replicas=2 in_flight=1 queue=1>"
    state = b.state(0.0)
    assert state["queue"] == 1 and sum(x["in_flight"] for x in state["replicas"]) == 1
    assert r is not None and "in_flight=1" in repr(r)


def test_an_idle_fast_replica_is_never_passed_over_for_a_slow_one() -> None:
    b = balancer(n=4, capacity=1)
    for r, latency in zip(b.replicas, (5, 5, 80, 80), strict=True):
        r.observe(latency, 0.0)
    for _ in range(200):  # whatever the two random choices, an idle fast replica takes the request
        chosen = b.acquire(0.0)
        assert chosen is not None and chosen.latency_ms == 5
        chosen.in_flight -= 1


def test_the_fast_replicas_share_the_load_and_a_slow_one_takes_it_only_when_they_are_full() -> None:
    b = balancer(n=4, capacity=2)
    for r, latency in zip(b.replicas, (5, 5, 80, 80), strict=True):
        r.observe(latency, 0.0)
    assert all(b.acquire(0.0) for _ in range(4))
    assert [r.in_flight for r in b.replicas] == [2, 2, 0, 0]  # least loaded among the fast ones only
    assert b.acquire(0.0) is None  # a fast slot frees long before a slow replica would answer
    b.max_queue_wait = 0.0
    taken = b.acquire(0.0)
    assert taken in b.replicas[2:]  # no time to wait: a slow one
    idle = next(r for r in b.replicas[2:] if r is not taken)
    assert idle.estimate(60.0, 5) <= 10  # idle a minute: its estimate drifted back under twice the best ...
    b.max_queue_wait = 0.5
    assert b.acquire(60.0) is idle  # ... so it counts as fast again


def test_a_retry_at_the_head_of_the_queue_does_not_block_the_others() -> None:
    b = balancer(n=2, capacity=1)
    a, other = b.replicas
    assert b.acquire(0.0) is not None and b.acquire(0.0) is not None  # both busy
    retry, plain = Waiter("retry", tried=(a, other)), Waiter("plain")
    b.enqueue(retry, first=True)
    b.enqueue(plain)
    assert b.release(a, 0.1) == [(plain, a)]  # the retry cannot use a: the next waiter gets it
    assert list(b.queue) == [retry]


def test_a_new_request_takes_a_slot_that_the_retries_waiting_cannot_use() -> None:
    b = balancer(n=2, capacity=1)
    a, _ = b.replicas
    assert b.acquire(0.0) is not None and b.acquire(0.0) is not None  # both busy
    b.enqueue(Waiter("retry", tried=(a,)), first=True)  # waits for the other replica
    for waiter, replica in b.release(a, 0.1):  # `a` frees: the retry cannot use it
        raise AssertionError(f"{waiter} admitted to {replica}")
    assert b.acquire(0.2) is a  # before: refused, since the queue was not empty
    assert b.acquire(0.2) is None  # no free slot left: it queues


def test_a_timeout_raises_the_latency_but_does_not_end_an_ejection() -> None:
    r = Replica("http://r:1")
    for _ in range(FAILURES_TO_EJECT):
        r.fail(0.0, may_eject=True)
    assert r.ejections == 1
    assert not r.observe(5000, 2.0, answered=False)
    assert r.ejections == 1 and r.latency_ms == 5000
