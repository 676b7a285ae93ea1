"""One watch loop: keep a local copy of the objects an API server query selects.

The API server gives two things: a list (every object, and the resourceVersion it was taken
at) and a watch (every change after a resourceVersion). A reflector lists once, then watches
from the list's version, and moves its version forward with every event, including the
BOOKMARK events that carry nothing but a newer version (so a quiet watch does not fall
behind the server's history). When the server ends a watch (its timeoutSeconds), or the
connection is cut, it watches again from the last version: nothing is missed and nothing
is listed again. Only when the server no longer has that version (410 Gone: its history was
compacted, usually after a long outage) does the reflector list again, and it replaces its
copy with the list: objects deleted during the gap disappear, since they are not in it.
Every other failure (refused, reset, timeout, 429, 5xx, 403) is retried after a jittered,
doubling, capped delay (at least the `Retry-After` the server asked for); meanwhile the
copy is left as it was, so the router keeps serving its last known state. Each change
calls `on_change`; the source rebuilds from all copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from router import logs, metrics
from router.discovery.kubernetes.api import Kind, KubeApi, Obj, object_key
from router.discovery.kubernetes.errors import Gone, KubeError
from router.discovery.kubernetes.settings import WatchSettings

ObjectKey = tuple[str, str]  # namespace, name


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """What one reflector watches: a kind, in one namespace or all, optionally narrowed by selectors."""

    kind: Kind
    namespace: str | None = None
    labels: str | None = None
    fields: str | None = None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        narrowed = ", ".join(filter(None, (self.labels, self.fields)))
        return f"{self.kind}{where}" + (f" ({narrowed})" if narrowed else "")


class Backoff:
    """Doubling delays with jitter (half fixed, half random), capped; reset after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2 ** min(self.failures, 30))
        self.failures += 1
        return delay / 2 + random.uniform(0, delay / 2)

    def reset(self) -> None:
        self.failures = 0


class Reflector:
    def __init__(self, api: KubeApi, selection: Selection, on_change: Callable[[], None],
                 settings: WatchSettings) -> None:
        self.api = api
        self.selection = selection
        self.on_change = on_change
        self.settings = settings
        self.objects: dict[ObjectKey, Obj] = {}
        self.synced = False  # listed at least once: `objects` is a complete picture
        self.resource_version = ""
        self.lists = 0  # for tests and logs: how often it listed
        self.failing = False
        self.last_error = ""  # the last failure's message, for a caller waiting on the first list
        self.last_status: int | None = None  # and its HTTP status (None: no answer)

    @property
    def refused(self) -> bool:
        """Not listed, and the API server said no (403, 404...): waiting for its list would not help."""
        status = self.last_status
        return not self.synced and self.failing and status is not None and 400 <= status < 500 and status != 429

    def __repr__(self) -> str:
        state = "synced" if self.synced else "syncing"
        return (f"<Reflector {self.selection} {state} objects={len(self.objects)} "
                f"rv={self.resource_version or '-'} lists={self.lists}{' failing' if self.failing else ''}>")

    async def run(self) -> None:
        """Forever: list when needed, watch, and recover from every failure."""
        backoff = Backoff(self.settings.backoff_s, self.settings.backoff_max_s)
        must_list, watched = True, False
        while True:
            try:
                if must_list:
                    items, version = await self.api.list(self.selection.kind, self.selection.namespace,
                                                         labels=self.selection.labels,
                                                         fields=self.selection.fields)
                    self._replace(items, version)
                    self._recovered()
                    must_list = False
                    backoff.reset()
                started = asyncio.get_running_loop().time()
                if watched:
                    metrics.watch_restarted(self.selection.kind.kind)
                watched = True
                if await self._watch():
                    backoff.reset()
                elif asyncio.get_running_loop().time() - started < 1.0:
                    await asyncio.sleep(backoff.next_delay())  # ended at once, with nothing: do not spin
            except Gone as exc:
                logs.event("kubernetes.watch.expired", selection=str(self.selection), error=str(exc),
                           note="listing again")
                must_list = True
                await asyncio.sleep(backoff.next_delay())
            except KubeError as exc:
                delay = max(backoff.next_delay(), exc.retry_after_s or 0.0)
                was_refused = self.refused
                self.failing, self.last_error, self.last_status = True, str(exc), exc.status
                if self.refused and not was_refused:
                    self.on_change()  # whoever waits for this list need not wait any longer
                logs.event("kubernetes.watch.failed", level=logging.WARNING, selection=str(self.selection),
                           error=str(exc), retry_in_s=round(delay, 2), listed=self.synced)
                await asyncio.sleep(delay)
            except Exception as exc:  # an object it could not read: never stop watching, start afresh
                must_list = True
                logs.event("kubernetes.watch.crashed", level=logging.ERROR, selection=str(self.selection),
                           error=repr(exc), note="listing again")
                await asyncio.sleep(backoff.next_delay())

    async def _watch(self) -> bool:
        """Follow one watch until the server ends it; True if any event (bookmarks too) came."""
        timeout = self.settings.timeout_s + random.randint(0, self.settings.timeout_s // 4)
        events = self.api.watch(self.selection.kind, self.selection.namespace,
                                resource_version=self.resource_version, timeout_s=timeout,
                                labels=self.selection.labels, fields=self.selection.fields)
        seen = False
        async with contextlib.aclosing(events):
            async for event in events:
                seen = True
                self._recovered()
                self._apply(event)
        return seen

    def _apply(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        version = meta.get("resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = str(version or self.resource_version)
            return
        key = object_key(obj)
        if kind in ("ADDED", "MODIFIED"):
            self.objects[key] = obj
        elif kind == "DELETED":
            self.objects.pop(key, None)
        else:
            return
        self.resource_version = str(version or self.resource_version)
        self.on_change()

    def _replace(self, items: list[Obj], version: str) -> None:
        """Take a fresh list as the whole truth: what is missing from it was deleted meanwhile."""
        fresh = {object_key(o): o for o in items}
        added = fresh.keys() - self.objects.keys()
        removed = self.objects.keys() - fresh.keys()
        changed = {k for k in fresh.keys() & self.objects.keys() if fresh[k] != self.objects[k]}
        if self.synced:
            logs.event("kubernetes.relisted", selection=str(self.selection), added=len(added),
                       removed=len(removed), changed=len(changed))
        self.objects = fresh
        self.resource_version = version
        self.lists += 1
        first = not self.synced
        self.synced = True
        if first or added or removed or changed:
            self.on_change()

    def _recovered(self) -> None:
        if self.failing:
            self.failing = False
            logs.event("kubernetes.watch.recovered", selection=str(self.selection))
