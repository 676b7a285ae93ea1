"""What a scoring request asks for, and where it goes: pure decisions, no I/O.

`RequestHead.parse` reads the client's headers once, sorting them into the few the
router acts on and the ones it forwards; `resolve` turns a head into a deployment
and a replica, or raises the `RouterError` the client gets.
"""

from __future__ import annotations

import hmac
import itertools
import os
import re
from collections.abc import Callable

from router.balancing.table import SCORE, DeploymentRoute, EndpointRoute, RoutingTable, endpoint_name
from router.errors import (
    INVALID_CREDENTIALS,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    NotImplementedByRouter,
    PayloadTooLarge,
    RouterError,
    Unauthorized,
)
from router.front.limits import MAX_BODY_BYTES
from router.tracing import traceparent

GUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9_-]{1,40}")

# Headers that belong to one connection, never forwarded either way (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
                        b"trailer", b"upgrade", b"proxy-authorization", b"proxy-authenticate"})
# What the router does with a request header, by its name. Names are looked up as they come, in
# lower case and in the usual capitalization, so most headers cost one lookup and no lower-casing.
(FORWARD, DROP, AUTHORIZATION, HOST, CONTENT_LENGTH, TRANSFER_ENCODING, REQUEST_ID, PIN, EXPECT, CONNECTION,
 TRACEPARENT, CLIENT_ID, FORWARDED_FOR, FORWARDED_PROTO, FORWARDED_HOST, PROXY_SAYS) = range(16)
# What proxies tell the model of the client and the original request, and models (and their frameworks)
# believe: kept only from a trusted proxy, like X-Forwarded-*; from anyone else, dropped.
PROXY_HEADERS = (b"forwarded", b"x-forwarded-port", b"x-forwarded-prefix", b"x-forwarded-server",
                 b"x-forwarded-ssl", b"x-forwarded-scheme", b"x-real-ip", b"x-client-ip", b"true-client-ip",
                 b"x-original-url", b"x-original-uri", b"x-rewrite-url")
_KINDS = {b"authorization": AUTHORIZATION, b"host": HOST, b"content-length": CONTENT_LENGTH,
          b"transfer-encoding": TRANSFER_ENCODING, b"x-request-id": REQUEST_ID, b"azureml-model-deployment": PIN,
          b"expect": EXPECT, b"connection": CONNECTION, b"traceparent": TRACEPARENT,
          b"x-ms-client-request-id": CLIENT_ID, b"x-forwarded-for": FORWARDED_FOR,
          b"x-forwarded-proto": FORWARDED_PROTO, b"x-forwarded-host": FORWARDED_HOST,
          **dict.fromkeys(HOP_BY_HOP - {b"connection", b"transfer-encoding"}, DROP),
          **dict.fromkeys((b"content-type", b"accept", b"user-agent", b"accept-encoding"), FORWARD),
          **dict.fromkeys(PROXY_HEADERS, PROXY_SAYS)}
_KINDS |= {b"-".join(part.capitalize() for part in name.split(b"-")): kind for name, kind in _KINDS.items()}
_KINDS |= {b"X-Request-ID": REQUEST_ID, b"TE": DROP}


_HEX = os.urandom(8).hex()
_ID_PREFIX = f"{_HEX[:8]}-{_HEX[8:12]}-{_HEX[12:]}-".encode()


def _random_ids() -> list[bytes]:
    """256 request ids in GUID form: 64 random bits drawn once per process, 16 per batch and 48 per id, from
    one system call; the hex digits are grouped in C, so an id costs little more than a concatenation."""
    prefix = _ID_PREFIX + os.urandom(2).hex().encode() + b"-"
    return [prefix + tail for tail in os.urandom(6 * 256).hex("-", 6).encode().split(b"-")]


# A random id tells nothing of the requests before it (a serial number would tell their rate); drawn in
# batches, the next one is a C call, far less than uuid4.
new_request_id: Callable[[], bytes] = itertools.chain.from_iterable(iter(_random_ids, None)).__next__


class RequestHead:
    """One client request's line and headers, read once."""

    __slots__ = ("authorization", "bad_client_request_id", "caller_traceparent", "chunked",
                 "client_request_id", "connection_tokens", "content_length", "expect_continue", "fields",
                 "forwarded_for", "forwarded_host", "forwarded_proto", "host", "http11", "keep_alive", "method",
                 "pinned", "query", "refusal", "request_id", "target", "traceparent", "transfer_encoding")

    def __init__(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
                 keep_alive: bool, trusted: bool = False, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.method = method
        self.keep_alive = keep_alive
        self.http11 = True
        self.target, _, self.query = url.partition(b"?")  # not `b"?" in url`: that tries int(b"?") first
        fields: list[bytes] = []  # the header lines passed on, as they came
        self.host = self.authorization = self.pinned = self.client_request_id = b""
        self.content_length: int | None = None
        self.chunked = self.expect_continue = self.bad_client_request_id = False
        self.connection_tokens = self.transfer_encoding = b""
        self.forwarded_for = self.forwarded_proto = self.forwarded_host = b""
        request_id = self.caller_traceparent = b""
        hosts = 0
        kinds = _KINDS
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                kind = kinds.get(name.lower(), FORWARD)
            if kind == FORWARD:
                fields.append(b"%s: %s\r\n" % (name, value))
            elif kind == AUTHORIZATION:
                self.authorization = value
            elif kind == HOST:
                self.host = value
                hosts += 1
            elif kind == CONTENT_LENGTH:
                self.content_length = int(value)  # the parser has checked it is one number
            elif kind == TRANSFER_ENCODING:
                self.chunked = True  # the parser refuses any other final coding
                self.transfer_encoding = value
            elif kind == REQUEST_ID:
                request_id = value
            elif kind == PIN:
                self.pinned = value
            elif kind == EXPECT:
                self.expect_continue = value.lower() == b"100-continue"
            elif kind == CONNECTION:
                self.connection_tokens = value.lower()
            elif kind == TRACEPARENT:
                self.caller_traceparent = value
            elif kind == CLIENT_ID:  # the last one counts
                fields.append(b"%s: %s\r\n" % (name, value))
                if CLIENT_REQUEST_ID.fullmatch(value):
                    self.client_request_id, self.bad_client_request_id = value, False
                else:  # refused in check(), never echoed
                    self.client_request_id, self.bad_client_request_id = b"", True
            elif trusted:  # X-Forwarded-* from a trusted proxy: kept (and extended)
                if kind == PROXY_SAYS:
                    fields.append(b"%s: %s\r\n" % (name, value))
                elif kind == FORWARDED_FOR:
                    self.forwarded_for = value
                elif kind == FORWARDED_PROTO:
                    self.forwarded_proto = value
                elif kind == FORWARDED_HOST:
                    self.forwarded_host = value
        random_id = new_request_id()  # the request's id unless the client sent one; its random tail, the span's
        self.traceparent = traceparent(self.caller_traceparent, random_id[24:])  # the caller's trace or a new one
        self.request_id = request_id if request_id and GUID.fullmatch(request_id) else random_id
        if self.connection_tokens and self.connection_tokens not in (b"keep-alive", b"close"):
            named = {t.strip() for t in self.connection_tokens.split(b",")}  # headers only for this connection
            fields = [line for line in fields if line[:line.index(b":")].lower() not in named]
        self.fields = b"".join(fields)
        # what refuses the request whatever its route (answered in its turn, see Exchange.start)
        self.refusal: RouterError | None = None
        if hosts > 1:  # which one the request is for is ambiguous (RFC 9112 §3.2)
            self.refusal = BadRequest("more than one Host header")
        elif self.bad_client_request_id:
            self.refusal = BadRequest("x-ms-client-request-id must be 1 to 40 letters, digits, '-' or '_'")
        elif self.content_length is not None and self.content_length > max_body_bytes:
            self.refusal = PayloadTooLarge(f"the request body is over the limit of {max_body_bytes} bytes")
        elif self.chunked and self.transfer_encoding.strip().lower() != b"chunked":
            # a coding the router would drop when it re-frames the body: refuse it rather than alter the request
            self.refusal = NotImplementedByRouter("only 'Transfer-Encoding: chunked' is supported")


def _shown(name: str) -> str:
    """A name from the URL, fit for an error message: the router does not echo unbounded input."""
    return repr(name if len(name) <= 64 else name[:64] + "...")


def bearer(authorization: bytes) -> bytes:
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:  # the same words for every endpoint: they tell none apart
        raise Unauthorized("missing key or token: send 'Authorization: Bearer <key or token>'")
    return token


def authorize(authorization: bytes, keys: tuple[bytes, ...]) -> None:
    token = bearer(authorization)
    matched = False
    for key in keys:  # compare with every key, so timing does not tell which one matched
        matched |= hmac.compare_digest(token, key)
    if not matched:
        raise Unauthorized(INVALID_CREDENTIALS)


def resolve(table: RoutingTable, head: RequestHead) -> tuple[EndpointRoute, DeploymentRoute, int]:
    """The endpoint and deployment a request goes to, and whether it scores or asks for swagger.

    Nothing that tells whether an endpoint exists (404, 405) is said before the caller is authenticated."""
    hit = table.paths.get(head.target)  # one lookup: the table knows every scoring path
    if hit is None:
        name = endpoint_name(head.target)  # which error: another route, or an unknown endpoint
        if name is None:
            raise NotFound("no such route: use /api/v1/endpoint/{endpoint}/score")
        # an unknown endpoint answers as a known one with a wrong key, except to a holder of some
        # endpoint's key (a caller who mistyped a name is told so)
        if head.authorization not in table.authorizations:
            bearer(head.authorization)
            raise Unauthorized(INVALID_CREDENTIALS)
        raise NotFound(f"endpoint {_shown(name)} not found")
    endpoint, kind = hit
    name = endpoint.name
    if endpoint.tokens is not None:
        endpoint.tokens.check(bearer(head.authorization))
    elif head.authorization not in endpoint.authorizations:
        authorize(head.authorization, endpoint.keys)
    expected = b"POST" if kind == SCORE else b"GET"
    if head.method != expected:
        raise MethodNotAllowed(f"use {expected.decode()} here", headers=(("allow", expected.decode()),))
    if head.pinned:
        deployment = endpoint.deployments.get(head.pinned.decode("latin-1"))
        if deployment is None:
            raise NotFound(f"deployment {_shown(head.pinned.decode('latin-1'))} not found "
                           f"in endpoint {name!r}")
    else:
        deployment = endpoint.pick_deployment()
        if deployment is None:
            raise NotFound(f"endpoint {name!r} has no deployment with traffic")
    return endpoint, deployment, kind


_UPSTREAM_HEAD = (b"%s %s HTTP/1.1\r\nhost: %s\r\n%s%sx-request-id: %s\r\ntraceparent: %s\r\n"
                  b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n%s\r\n")


def replica_target(head: RequestHead, route: bytes) -> bytes:
    """What a scoring request asks the replica for: the deployment's route, with the client's query."""
    return route + b"?" + head.query if head.query else route


def upstream_head(head: RequestHead, target: bytes, host_header: bytes, peer_host: bytes, scheme: bytes,
                  content_length: int | None = None) -> bytes:
    """The request line (for `target`) and headers for the replica: the client's, less what the router owns.

    X-Forwarded-* are the router's own, unless the client is a trusted proxy (then extended).
    """
    if content_length is not None:
        length = b"content-length: %d\r\n" % content_length
    elif head.chunked:
        length = b"transfer-encoding: chunked\r\n"
    elif head.content_length is not None:
        length = b"content-length: %d\r\n" % head.content_length
    else:
        length = b"content-length: 0\r\n" if head.method == b"POST" else b""
    forwarded_host = head.forwarded_host or head.host
    return _UPSTREAM_HEAD % (
        head.method, target, host_header, head.fields, length, head.request_id, head.traceparent,
        head.forwarded_for + b", " + peer_host if head.forwarded_for else peer_host, head.forwarded_proto or scheme,
        b"x-forwarded-host: " + forwarded_host + b"\r\n" if forwarded_host else b"")
