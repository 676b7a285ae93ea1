"""The admin app, on its own port and never on the public Service: health, readiness, debug state."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build_admin_app(is_ready: Callable[[], bool],
                    deployments: Callable[[], dict[str, object]] = dict) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        if is_ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def debug_deployments(request: Request) -> JSONResponse:
        return JSONResponse(deployments())

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz),
                             Route("/debug/deployments", debug_deployments)])
