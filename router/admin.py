"""The admin app, on its own port and never on the public Service: health, readiness, debug state,
Prometheus metrics (`/metrics`), and tokens for `aml_token` endpoints (`POST /token/{endpoint}` with
one of the endpoint's keys)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.metrics import CONTENT_TYPE, exposition

TokenIssuer = Callable[[str, str, str], tuple[int, dict[str, Any]]]  # endpoint, authorization, ttl


def build_admin_app(is_ready: Callable[[], bool],
                    deployments: Callable[[], dict[str, object]] = dict,
                    issue_token: TokenIssuer | None = None, *,
                    metrics: Callable[[], bytes] = exposition) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        if is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def debug_deployments(request: Request) -> JSONResponse:
        return JSONResponse(deployments())

    async def metrics_text(request: Request) -> Response:
        # async: rendered on the event loop, so the data plane's counters are read between two of its steps
        return Response(metrics(), media_type=CONTENT_TYPE)

    async def token(request: Request) -> JSONResponse:
        if issue_token is None:
            return JSONResponse({"error": {"code": "NotFound", "message": "no token issuer"}}, status_code=404)
        status, body = issue_token(request.path_params["endpoint"], request.headers.get("authorization", ""),
                                   request.query_params.get("ttl", "1h"))
        return JSONResponse(body, status_code=status)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz),
                             Route("/debug/deployments", debug_deployments), Route("/metrics", metrics_text),
                             Route("/token/{endpoint}", token, methods=["POST"])])
