"""The bytes of the answers the router writes itself."""

from __future__ import annotations

import json
from http import HTTPStatus

from router.errors import RouterError

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_response(error: RouterError, request_id: bytes, client_request_id: bytes = b"",
                   *, keep_alive: bool, head_only: bool = False) -> bytes:
    """The router's own answer; `head_only` for a HEAD request, whose answer ends at its headers."""
    body = json.dumps({"error": {"code": error.code, "message": error.message,
                                 "requestId": request_id.decode("latin-1")}}).encode()
    lines = [b"HTTP/1.1 %d %s" % (error.status, _REASONS.get(error.status, b"Error")),
             b"content-type: application/json",
             b"content-length: %d" % len(body),
             b"x-request-id: " + request_id]
    if client_request_id:
        lines.append(b"x-ms-client-request-id: " + client_request_id)
    if error.deployment:
        lines.append(b"azureml-model-deployment: " + error.deployment.encode())
    lines.extend(f"{name}: {value}".encode("latin-1") for name, value in error.headers)
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)
