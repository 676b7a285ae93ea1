"""Local mode: resources from one multi-document YAML file, reloaded when it changes.

The file is polled (cheap, and it sees every way a file changes: in-place edits,
atomic renames, Kubernetes ConfigMap symlink swaps). A change is read only once the
file has stopped changing, so a half-written file is not applied; an invalid file
is rejected with its problems and the last good resources stay in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from router import logs
from router.discovery.documents import load_yaml
from router.errors import ConfigError
from router.model import Resources

_SETTLE = 0.1  # seconds a changed file must stay unchanged before it is read


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class FileSource:
    def __init__(self, path: str | os.PathLike[str], *, poll_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.reloads = 0
        self.rejections = 0
        self.synced = False  # the whole file was read and applied once
        self._signature: tuple[int, int, int] | None = None
        self._digest = b""

    async def load(self) -> Resources:
        """Read and validate the file now (the first load: its errors stop the router)."""
        self._signature = _signature(self.path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{self.path}: cannot read: {exc}"]) from None
        self._digest = hashlib.sha256(text.encode()).digest()
        resources = load_yaml(text, origin=str(self.path))
        self.synced = True  # the server applies it before it serves
        return resources

    async def watch(self, apply: Callable[[Resources], None]) -> None:
        """Poll for changes forever, handing each valid new version to `apply`."""
        while True:
            await asyncio.sleep(self.poll_interval)
            signature = _signature(self.path)
            if signature == self._signature or signature is None:
                continue
            await asyncio.sleep(_SETTLE)
            if _signature(self.path) != signature:
                continue  # still being written: look again next round
            self._signature = signature
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self._reject([f"{self.path}: cannot read: {exc}"])
                continue
            digest = hashlib.sha256(text.encode()).digest()
            if digest == self._digest:
                continue
            try:
                resources = load_yaml(text, origin=str(self.path))
                apply(resources)
            except ConfigError as exc:
                self._reject(exc.problems)
                continue
            self._digest = digest
            self.reloads += 1
            logs.event("config.reloaded", path=str(self.path), endpoints=len(resources.endpoints),
                       deployments=len(resources.deployments))

    def _reject(self, problems: list[str]) -> None:
        self.rejections += 1
        logs.event("config.rejected", level=logging.ERROR, path=str(self.path), problems=problems,
                   note="the last good configuration keeps serving")
