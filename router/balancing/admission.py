"""Admission for one deployment: per-replica caps, a FIFO queue, and the choice of replica.

Each replica takes at most `maxConcurrentRequestsPerInstance` requests at once. A
request that finds no free slot waits in the deployment's queue, in arrival order,
and is admitted when a slot frees (`release` says to whom); one still waiting when
its `maxQueueWaitMs` runs out is refused (503), with a `Retry-After` worked out from
how fast the deployment has been finishing requests.

Choosing among free replicas: power of two choices on load weighted by expected
latency (least loaded). A free slot on a replica much slower than the best one is
not always worth taking: if a fast replica's slot is expected to free sooner than
the slow one would answer, and the request can afford to wait, it waits. This keeps
a degraded replica from setting the tail latency while it still takes overflow.

The `Waiter` objects in the queue are opaque here; the caller starts a request on
the replica it is given and owns every timer. No I/O, no clock: `now` is passed in.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections import deque
from typing import Any, Literal

from router.balancing.replicas import Replica, expected_wait_ms, pick_least_loaded
from router.model import RequestSettings

Policy = Literal["least_loaded", "round_robin"]
SLOW_FACTOR = 2.0  # a replica is "slow" when its expected latency is over this times the best


class DeploymentBalancer:
    __slots__ = ("_bucket_start", "_counts", "_rng", "_turn", "capacity", "key", "max_queue_wait",
                 "policy", "queue", "replicas")

    def __init__(self, key: str, settings: RequestSettings, policy: Policy = "least_loaded",
                 seed: int | None = None) -> None:
        self.key = key
        self.policy = policy
        self.replicas: tuple[Replica, ...] = ()
        self.capacity = settings.max_concurrent_requests_per_instance
        self.max_queue_wait = settings.max_queue_wait_ms / 1000
        self.queue: deque[Any] = deque()
        self._rng = random.Random(seed)
        self._turn = itertools.count()
        self._counts = [0, 0]  # completions in the previous and the current second
        self._bucket_start = 0.0

    def update(self, replicas: tuple[Replica, ...], settings: RequestSettings) -> None:
        """A new routing table: new replicas and settings; the queue and counts stay."""
        self.replicas = replicas
        self.capacity = settings.max_concurrent_requests_per_instance
        self.max_queue_wait = settings.max_queue_wait_ms / 1000

    # -- decisions ------------------------------------------------------------------------
    def acquire(self, now: float, exclude: tuple[Replica, ...] = (), *, jump: bool = False) -> Replica | None:
        """A replica for a new request, its slot taken; None: queue it (or refuse it).

        Requests already queued go first, unless `jump` (a retry that already had its turn). Retries wait
        at the head of the queue and plain requests behind them, so when the last one waiting is a retry,
        every waiter is one: the free slots are those no waiter can use (`dispatch` gave them otherwise),
        and a new request may take one.
        """
        queue = self.queue
        if queue and not jump and not queue[-1].tried:
            return None
        return self._choose(now, exclude, position=len(self.queue), budget=self.max_queue_wait)

    def release(self, replica: Replica, now: float) -> list[tuple[Any, Replica]]:
        """A request on `replica` ended: free its slot; return the waiters to start, and where."""
        replica.in_flight -= 1
        self._tick(now)
        self._counts[1] += 1
        return self.dispatch(now) if self.queue else []

    def dispatch(self, now: float) -> list[tuple[Any, Replica]]:
        admitted, queue, i = [], self.queue, 0
        while i < len(queue):
            waiter = queue[i]
            replica = self._choose(now, waiter.tried, position=i, budget=waiter.deadline - now)
            if replica is not None:
                del queue[i]
                admitted.append((waiter, replica))
            elif waiter.tried:
                i += 1  # a retry that cannot use the free replica: it must not block the ones behind
            else:
                break  # no slot for this one: none for those behind it either
        return admitted

    def enqueue(self, waiter: Any, *, first: bool = False) -> None:
        """Wait for a slot; `first`: a retry, which already had its turn. Waiters have `deadline`
        (when waiting ends) and `tried` (replicas not to be given again)."""
        if first:
            self.queue.appendleft(waiter)
        else:
            self.queue.append(waiter)

    def expire(self, waiter: Any, now: float) -> Replica | None:
        """A waiter's time is up: any free slot, even a slow one, else None (refuse it)."""
        self.remove(waiter)
        return self._choose(now, waiter.tried, position=0, budget=0.0)

    def remove(self, waiter: Any) -> None:
        with contextlib.suppress(ValueError):  # admitted or removed already
            self.queue.remove(waiter)

    def retry_after(self, now: float) -> int:
        """Seconds until the queue ahead of a new request is likely drained, from 1 to 60."""
        self._tick(now)
        rate = (self._counts[0] + self._counts[1]) / (1.0 + min(1.0, now - self._bucket_start))
        if rate <= 0:
            return 1 if not self.queue else 10
        return max(1, min(60, math.ceil((len(self.queue) + 1) / rate)))

    # -- internals ------------------------------------------------------------------------
    def _choose(self, now: float, exclude: tuple[Replica, ...], position: int, budget: float) -> Replica | None:
        # One pass on the hot path: which replicas are healthy, which have a free slot, the best latency,
        # and the worst of the free ones (none of them is slow unless that one is over SLOW_FACTOR x best).
        capacity, free, best, worst, healthy = self.capacity, [], 0.0, 0.0, 0
        for r in self.replicas:
            if r.ejected_until > now or (exclude and r in exclude):
                continue
            healthy += 1
            latency = r.latency_ms
            if latency and (not best or latency < best):
                best = latency
            # a replica back from ejection takes one request until it has answered one (half-open)
            if r.in_flight < (1 if r.ejections else capacity):
                free.append(r)
                if latency > worst:
                    worst = latency
        if not healthy:  # every replica ejected: better a doubtful replica than none
            free = [r for r in self.replicas if r not in exclude and r.in_flight < capacity]
        if not free:
            return None
        if self.policy == "round_robin":
            chosen = free[next(self._turn) % len(free)]
        else:
            threshold, slow = SLOW_FACTOR * best, False
            if worst > threshold:  # fast ones first: a slow one only when no fast one is free
                # (an estimate is never over latency_ms: most fast ones are known without it)
                fast = [r for r in free if r.latency_ms <= threshold or r.estimate(now, best) <= threshold]
                free, slow = fast or free, not fast
            chosen = free[0] if len(free) == 1 else pick_least_loaded(free, now, best, self._rng)
            if slow and budget > 0:  # every fast replica is busy: is one worth waiting for?
                fast = [r for r in self.replicas if not r.ejected(now) and r.estimate(now, best) <= threshold]
                wait = expected_wait_ms(fast, capacity, position, now, best)
                if wait / 1000 < budget and wait + best < chosen.estimate(now, best):
                    return None  # a busy fast replica frees sooner than this one would answer
        chosen.in_flight += 1
        return chosen

    def _tick(self, now: float) -> None:
        """A second or more since the current bucket of completions began: start a new one."""
        elapsed = now - self._bucket_start
        if elapsed >= 1.0:
            self._counts = [self._counts[1] if elapsed < 2.0 else 0, 0]
            self._bucket_start = now

    def state(self, now: float) -> dict[str, Any]:
        return {"queue": len(self.queue), "capacity_per_replica": self.capacity, "policy": self.policy,
                "replicas": [r.state(now) for r in self.replicas]}

    def __repr__(self) -> str:
        in_flight = sum(r.in_flight for r in self.replicas)
        return (f"<DeploymentBalancer {self.key} replicas={len(self.replicas)} in_flight={in_flight} "
                f"queue={len(self.queue)}>")
