"""One model replica's state, and the choice between the replicas of a deployment.

A `Replica` outlives routing tables: a reload keeps its in-flight count, latency
estimate, health and connection pool. Everything here is arithmetic on numbers the
caller hands in (`now` included), so it is tested without sockets or clocks.

Latency is a peak-sensitive EWMA of time to first byte: a slower sample raises the
estimate at once, faster ones lower it gradually, so a degrading replica is noticed
quickly and trusted again slowly. An idle replica's estimate drifts back toward
the deployment's best over `DECAY_S`, so a replica once slow is probed again
instead of being starved forever.
"""

from __future__ import annotations

import math
import random
from typing import Any
from urllib.parse import urlsplit

EWMA_WEIGHT = 0.3  # share of a new (faster) sample in the estimate
DECAY_S = 5.0  # an idle replica's estimate halves its distance to the best this often
FAILURES_TO_EJECT = 3  # consecutive failures to connect before a replica is ejected
EJECT_BASE_S = 1.0  # first ejection; doubles on each repeated ejection ...
EJECT_MAX_S = 30.0  # ... up to this
SLOW_START_S = 5.0  # a new or returning replica ramps from 10 % to a full share over this


class Replica:
    __slots__ = ("consecutive_failures", "ejected_until", "ejections", "host", "host_header", "in_flight",
                 "last_sample", "latency_ms", "pool", "port", "retired", "started", "url")

    def __init__(self, url: str, now: float = 0.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"replica URL must be http://host:port, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = f"{host}:{self.port}".encode()
        self.in_flight = 0
        self.retired = False
        self.latency_ms = 0.0  # 0: no sample yet
        self.last_sample = now
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.ejections = 0
        self.started = now  # for slow start
        self.pool: Any = None  # the connection pool, attached by the proxy layer

    def observe(self, latency_ms: float | None, now: float, *, answered: bool = True) -> bool:
        """A time to first byte (or, not `answered`, time spent without one: a timeout); None: an answer
        that is no sample of the replica's latency (it came early, or the client held it back).

        True when the answer ends an ejection."""
        if latency_ms is not None:
            if latency_ms >= self.latency_ms or self.latency_ms == 0.0:
                self.latency_ms = latency_ms
            else:
                self.latency_ms += (latency_ms - self.latency_ms) * EWMA_WEIGHT
            self.last_sample = now
        if not answered:
            return False
        self.consecutive_failures = 0
        if self.ejections and now >= self.ejected_until:
            self.ejections = 0  # healthy again: the next ejection starts short
            return True
        return False

    def estimate(self, now: float, best: float) -> float:
        """Expected latency in ms, drifting from the last estimate toward `best` while idle."""
        if self.latency_ms <= best or self.in_flight:
            return self.latency_ms
        idle = now - self.last_sample
        return best + (self.latency_ms - best) * 0.5 ** (idle / DECAY_S)

    def fail(self, now: float, may_eject: bool) -> bool:
        """A connection failure; True when it ejects the replica."""
        self.consecutive_failures += 1
        if self.consecutive_failures < FAILURES_TO_EJECT or not may_eject:
            return False
        self.ejected_until = now + min(EJECT_MAX_S, EJECT_BASE_S * 2 ** self.ejections)
        self.ejections += 1
        self.consecutive_failures = 0
        self.started = self.ejected_until  # ramps up again when it returns
        return True

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def share(self, now: float) -> float:
        """Slow start: the fraction of a full share this replica takes, from 0.1 to 1."""
        age = now - self.started
        return 1.0 if age >= SLOW_START_S else max(0.1, age / SLOW_START_S)

    def state(self, now: float) -> dict[str, Any]:
        return {"url": self.url, "in_flight": self.in_flight, "latency_ms": round(self.latency_ms, 3),
                "ejected": self.ejected(now), "consecutive_failures": self.consecutive_failures,
                "share": round(self.share(now), 2), "retired": self.retired}

    def __repr__(self) -> str:
        flags = "".join(f" {flag}" for flag, on in (("ejected", self.ejected_until > 0 and self.ejections),
                                                    ("retired", self.retired)) if on)
        return f"<Replica {self.url} in_flight={self.in_flight} latency_ms={self.latency_ms:.1f}{flags}>"


def pick_least_loaded(candidates: list[Replica], now: float, best: float,
                      rng: random.Random) -> Replica:
    """Power of two choices on in-flight load weighted by expected latency and slow start."""
    n = len(candidates)
    if n == 1:
        return candidates[0]
    if n == 2:
        a, b = candidates
    else:
        i, j = int(rng.random() * n), int(rng.random() * (n - 1))
        a, b = candidates[i], candidates[j + (j >= i)]
    cost_a = (a.in_flight + 1) * max(a.estimate(now, best), 0.001) / a.share(now)
    cost_b = (b.in_flight + 1) * max(b.estimate(now, best), 0.001) / b.share(now)
    if cost_a == cost_b:
        return a if rng.random() < 0.5 else b
    return a if cost_a < cost_b else b


def expected_wait_ms(fast: list[Replica], capacity: int, position: int, now: float, best: float) -> float:
    """Roughly how long the request at `position` in the queue waits for a slot on `fast`."""
    rate = sum(capacity / max(r.estimate(now, best), 0.001) for r in fast)  # completions per ms
    return math.inf if rate == 0 else (position + 1) / rate
