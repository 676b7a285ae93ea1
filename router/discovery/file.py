"""Local mode: resources from one multi-document YAML file, reloaded when it changes.

The file is polled (`router.files`): a change is read once the file has stopped changing,
so a half-written file is not applied; an invalid file is rejected with its problems and
the last good resources stay in force.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from router import files, logs
from router.discovery.documents import load_yaml, read_text
from router.errors import ConfigError
from router.model import Resources


class FileSource:
    def __init__(self, path: str | os.PathLike[str], *, poll_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.reloads = 0
        self.rejections = 0
        self.synced = False  # the whole file was read and applied once
        self._signature: files.Signature = None
        self._digest = b""

    async def load(self) -> Resources:
        """Read and validate the file now (the first load: its errors stop the router)."""
        self._signature = files.signature(self.path)
        text = read_text(self.path)
        self._digest = hashlib.sha256(text.encode()).digest()
        notes: list[str] = []
        resources = load_yaml(text, origin=str(self.path), notes=notes)
        self._note(notes)
        self.synced = True  # the server applies it before it serves
        return resources

    async def watch(self, apply: Callable[[Resources], None]) -> None:
        """Poll for changes forever, handing each valid new version to `apply`."""
        async for signature in files.settled_changes(lambda: files.signature(self.path), self._signature,
                                                     self.poll_interval):
            if signature is None:
                continue  # the file is gone (a botched deploy): keep serving what it said
            try:
                text = read_text(self.path)
            except ConfigError as exc:
                self._reject(exc.problems)
                continue
            digest = hashlib.sha256(text.encode()).digest()
            if digest == self._digest:
                continue
            notes: list[str] = []
            try:
                resources = load_yaml(text, origin=str(self.path), notes=notes)
                apply(resources)
            except ConfigError as exc:
                self._reject(exc.problems)
                continue
            self._digest = digest
            self.reloads += 1
            logs.event("config.reloaded", path=str(self.path), endpoints=len(resources.endpoints),
                       deployments=len(resources.deployments))
            self._note(notes)

    def _note(self, notes: list[str]) -> None:
        """What the file asks for but is not routed, as a cluster's status would say."""
        if notes:
            logs.event("config.unrouted", level=logging.WARNING, path=str(self.path), notes=notes)

    def _reject(self, problems: list[str]) -> None:
        self.rejections += 1
        logs.event("config.rejected", level=logging.ERROR, path=str(self.path), problems=problems,
                   note="the last good configuration keeps serving")
