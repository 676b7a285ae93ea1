"""The replicas of one deployment and the choice between them (round-robin for now)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


class Replica:
    """One model replica. Outlives routing tables: a reload keeps its state and pool."""

    __slots__ = ("host", "host_header", "in_flight", "pool", "port", "retired", "url")

    def __init__(self, url: str) -> None:
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
        self.pool: Any = None  # the connection pool, attached by the proxy layer

    def __repr__(self) -> str:
        state = " retired" if self.retired else ""
        return f"<Replica {self.url} in_flight={self.in_flight}{state}>"


class ReplicaSet:
    __slots__ = ("_next", "replicas")

    def __init__(self, replicas: tuple[Replica, ...]) -> None:
        self.replicas = replicas
        self._next = 0

    def pick(self) -> Replica | None:
        replicas = self.replicas
        if not replicas:
            return None
        i = self._next
        if i >= len(replicas):
            i = 0
        self._next = i + 1
        return replicas[i]

    def __len__(self) -> int:
        return len(self.replicas)

    def __repr__(self) -> str:
        return f"ReplicaSet({list(self.replicas)!r})"
