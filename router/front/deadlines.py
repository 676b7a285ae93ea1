"""Request timeouts without a timer per request.

All requests to a deployment have the same timeout, so their deadlines come in the
order the requests start. `Deadlines` keeps the requests of one timeout in a dict (in
insertion order, so in deadline order) and arms one loop timer, for the earliest;
a request that ends leaves the dict (O(1)), and when the timer fires it times out
the requests whose deadline has come and arms itself for the next one. Arming and
cancelling a loop timer per request would cost more than the rest of the
bookkeeping of a request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from router import logs

_EARLY = 0.001  # the loop clock has millisecond steps: a timer may fire this much before its deadline


class Expiring(Protocol):
    def expire(self) -> None: ...


class Deadlines:
    __slots__ = ("_due", "_firing", "_loop", "_timer", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self.timeout = timeout
        self._due: dict[Expiring, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._firing = False  # expiring items may add others: the timer is armed once, after

    def add(self, item: Expiring, now: float) -> None:
        """`item.expire()` is called `timeout` seconds from `now`, unless discarded before."""
        deadline = now + self.timeout
        self._due[item] = deadline
        if self._timer is None and not self._firing:
            self._timer = self._loop.call_at(deadline, self._fire)

    def discard(self, item: Expiring) -> None:
        self._due.pop(item, None)

    def _fire(self) -> None:
        self._timer = None
        self._firing = True
        due = self._due
        try:
            now = self._loop.time() + _EARLY
            while due:
                item = next(iter(due))
                if due[item] > now:
                    break
                del due[item]
                try:
                    item.expire()
                except Exception:  # one failure must not leave the others without their timeout
                    logs.logger.log(logging.ERROR, "deadline.failed", exc_info=True)
        finally:
            self._firing = False
        if due:
            self._timer = self._loop.call_at(next(iter(due.values())), self._fire)

    def __repr__(self) -> str:
        return f"<Deadlines timeout={self.timeout:g}s pending={len(self._due)}>"
