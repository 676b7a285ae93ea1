"""Corked writes: what a connection writes during one turn of the event loop leaves in one send().

Connections with something to send register with their loop's `Cork` on their first
write of the turn; one callback per turn then flushes every one of them, instead of one
callback per connection. The answer a client waits for and the request a replica waits
for each leave in a single system call.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

from router import logs


class Flushable(Protocol):
    def flush(self) -> None: ...


class Cork:
    __slots__ = ("__weakref__", "_loop", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[Flushable] = []

    def add(self, conn: Flushable) -> None:
        """`conn` has output to send at the end of this turn (called once per turn and connection)."""
        if not self._waiting:
            self._loop.call_soon(self._flush)
        self._waiting.append(conn)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for conn in waiting:
            try:
                conn.flush()
            except Exception:  # the others' output must still leave
                logs.logger.log(logging.ERROR, "flush.failed", exc_info=True)


_corks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Cork] = weakref.WeakKeyDictionary()


def cork_for(loop: asyncio.AbstractEventLoop) -> Cork:
    cork = _corks.get(loop)
    if cork is None:
        cork = _corks[loop] = Cork(loop)
    return cork
