"""The router's own error vocabulary: every error it answers with, and its HTTP status.

Client-library exceptions (the upstream connection, kubernetes) are translated into
these at the one module that talks to that library, and never leak past it.
"""

from __future__ import annotations


class RouterError(Exception):
    """An error the router answers itself, as `{"error": {"code", "message", "requestId"}}`."""

    status: int = 500
    code: str = "InternalError"

    def __init__(self, message: str, *, headers: tuple[tuple[str, str], ...] = (),
                 deployment: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.deployment = deployment  # set once a deployment was chosen: echoed to the client
        self.detail = detail  # for the router's log only, never the client: internal addresses, errno


class BadRequest(RouterError):
    status, code = 400, "BadRequest"


class Unauthorized(RouterError):
    status, code = 401, "Unauthorized"


# the one answer to a failed key or token before the caller is known: it tells nothing of the endpoint (whether
# it exists, takes keys or tokens, or has a signing key); messages past the signature (expired, another
# endpoint's token) are only for holders of a genuine token
INVALID_CREDENTIALS = "invalid key or token"


class NotFound(RouterError):
    status, code = 404, "NotFound"


class MethodNotAllowed(RouterError):
    status, code = 405, "MethodNotAllowed"


class RequestTimeout(RouterError):
    status, code = 408, "RequestTimeout"


class PayloadTooLarge(RouterError):
    status, code = 413, "PayloadTooLarge"


class UriTooLong(RouterError):
    status, code = 414, "UriTooLong"


class TooManyRequests(RouterError):
    status, code = 429, "TooManyRequests"


class HeadersTooLarge(RouterError):
    status, code = 431, "RequestHeaderFieldsTooLarge"


class InternalError(RouterError):
    status, code = 500, "InternalError"


class NotImplementedByRouter(RouterError):
    status, code = 501, "NotImplemented"


class BadGateway(RouterError):
    status, code = 502, "BadGateway"


class ServiceUnavailable(RouterError):
    status, code = 503, "ServiceUnavailable"


class GatewayTimeout(RouterError):
    status, code = 504, "GatewayTimeout"


class ConfigError(Exception):
    """A rejected resource document or setting. Each message names the document and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
