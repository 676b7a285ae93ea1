"""The failures of calls to the API server, in the router's own words.

`api` translates every exception of the client library (and of aiohttp beneath it) into
these, once; nothing above it sees a `kubernetes` or `aiohttp` exception.
"""

from __future__ import annotations


class KubeError(Exception):
    """A call to the API server failed; `status` is the HTTP status, or None without an answer."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s  # the server's Retry-After (429, 503, 504), to wait at least this long


class Unreachable(KubeError):
    """No usable answer: refused, reset, cut mid-stream, timed out, or the server is overloaded (429, 5xx)."""


class Gone(KubeError):
    """410: the resourceVersion to resume from is compacted away; only a new list can continue."""


class Conflict(KubeError):
    """409: the object changed since it was read (or already exists)."""


class NotFound(KubeError):
    """404: no such object."""


def describe(exc: BaseException) -> str:
    """A failure for a log line: the router's own message for API errors, the type too for anything else."""
    return str(exc) if isinstance(exc, KubeError) else repr(exc)
