"""The admin app, on its own port and never on the public Service: health, readiness, Prometheus
metrics (`/metrics`), tokens for `aml_token` endpoints (`POST /token/{endpoint}` with one of the
endpoint's keys) and, when asked for (`--debug-endpoints`), debug state.

The port has no authentication of its own: it binds `--admin-host` (loopback unless told otherwise;
the chart binds the pod's address, behind a NetworkPolicy). `/token` checks a key, so it must not
be a guessing oracle: an unknown endpoint is answered as a wrong key is, and a client that keeps
failing is told to wait (429).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RouterError,
    TooManyRequests,
    Unauthorized,
)
from router.metrics import CONTENT_TYPE, exposition

TokenIssuer = Callable[[str, str, str], dict[str, Any]]  # endpoint, authorization, ttl; raises RouterError
FAILED_ATTEMPTS = 10  # failed /token calls allowed per client address ...
FAILED_WINDOW_S = 60.0  # ... within this many seconds
_TRACKED_CLIENTS = 10_000  # clients remembered at most: memory stays bounded whoever calls


class FailedAttempts:
    """Failed calls per client address in a sliding window: a client with `limit` failures within
    `window` seconds waits until the oldest of them leaves the window."""

    def __init__(self, limit: int = FAILED_ATTEMPTS, window: float = FAILED_WINDOW_S) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}

    def wait(self, client: str, now: float) -> float:
        """Seconds `client` must wait before its next attempt; 0 when it may try now."""
        failures = self._failures.get(client)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return 0.0
        return failures[0] + self.window - now if len(failures) >= self.limit else 0.0

    def failed(self, client: str, now: float) -> None:
        if client not in self._failures and len(self._failures) >= _TRACKED_CLIENTS:
            del self._failures[next(iter(self._failures))]  # the client that first failed: the likeliest done
        self._failures.setdefault(client, deque(maxlen=self.limit)).append(now)

    def __repr__(self) -> str:
        return f"<FailedAttempts {len(self._failures)} clients, {self.limit} per {self.window:g} s>"


def error_response(error: RouterError) -> JSONResponse:
    """The scoring port's error shape: `{"error": {"code", "message", "requestId"}}` and `x-request-id`."""
    request_id = str(uuid.uuid4())
    return JSONResponse({"error": {"code": error.code, "message": error.message, "requestId": request_id}},
                        status_code=error.status, headers={**dict(error.headers), "x-request-id": request_id})


def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code, BadRequest)
    error = kind(exc.detail, headers=tuple((exc.headers or {}).items()))
    error.status = exc.status_code  # another 4xx keeps its status, with the code BadRequest
    return error_response(error)


def _router_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RouterError)
    return error_response(exc)


def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(InternalError("internal error"))


def build_admin_app(is_ready: Callable[[], bool],
                    deployments: Callable[[], dict[str, object]] | None = None,
                    issue_token: TokenIssuer | None = None, *,
                    metrics: Callable[[], bytes] = exposition,
                    attempts: FailedAttempts | None = None) -> Starlette:
    """`deployments` given: `/debug/deployments` is served (replica addresses and load)."""
    attempts = attempts if attempts is not None else FailedAttempts()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        if is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def debug_deployments(request: Request) -> JSONResponse:
        assert deployments is not None
        return JSONResponse(deployments())

    async def metrics_text(request: Request) -> Response:
        # async: rendered on the event loop, so the data plane's counters are read between two of its steps
        return Response(metrics(), media_type=CONTENT_TYPE)

    async def token(request: Request) -> JSONResponse:
        if issue_token is None:
            raise NotFound("no token issuer")
        client, now = request.client.host if request.client else "", time.monotonic()
        wait = attempts.wait(client, now)
        if wait > 0:
            raise TooManyRequests(f"too many failed attempts: try again in {math.ceil(wait)} s",
                                  headers=(("retry-after", str(math.ceil(wait))),))
        try:
            return JSONResponse(issue_token(request.path_params["endpoint"], request.headers.get("authorization", ""),
                                            request.query_params.get("ttl", "1h")))
        except Unauthorized:
            attempts.failed(client, now)
            raise

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_text),
              Route("/token/{endpoint}", token, methods=["POST"])]
    if deployments is not None:
        routes.append(Route("/debug/deployments", debug_deployments))
    return Starlette(routes=routes, exception_handlers={
        HTTPException: _starlette_error, RouterError: _router_error, Exception: _internal_error})
