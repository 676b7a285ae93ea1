"""Files that change under a running router (its config, its certificate): polled, read once settled.

Polling sees every way a file changes (in-place edits, atomic renames, Kubernetes volume symlink swaps).
A change is handed on only once the file has stopped changing, so a half-written file is never read.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

SETTLE = 0.1  # seconds a change must stay unchanged before it is read

Signature = tuple[int, int, int] | None
T = TypeVar("T")


def signature(path: str | os.PathLike[str]) -> Signature:
    """Changes whenever the file may have changed: metadata, not content (None: no such file)."""
    try:
        st = os.stat(path)  # follows symlinks: a Secret or ConfigMap volume swaps its `..data` link
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def settled_changes(current: Callable[[], T], seen: T, interval: float) -> AsyncIterator[T]:
    """Each new value of `current()`, polled every `interval`, once it has held for `SETTLE` seconds."""
    while True:
        await asyncio.sleep(interval)
        now = current()
        if now == seen:
            continue
        await asyncio.sleep(SETTLE)
        if current() != now:
            continue  # still being written: look again next round
        seen = now
        yield now
