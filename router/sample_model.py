"""A real scoring server for demos, tests and load tests (`inference-router sample-model`).

Not a model to put behind a public router: any caller with a key can use its test hooks to ask for
large or slow answers (bounded below, so one call costs at most 64 MiB or one minute of a slot).

Routes:
    GET  /              liveness: 200 {"status": "alive", "name": NAME}
    GET  /swagger.json  an OpenAPI 2.0 document describing POST /score; info.title is NAME
    GET  /stats         {"name", "in_flight", "peak_in_flight", "served"}: the most requests it ever
                        had at once proves a router's concurrency caps
    POST /score         waits `latency_ms`, then with probability `fail_rate` answers
                        500 {"error": "injected failure", "name": NAME}; otherwise 200
                        {"name", "bytes", "sha256", "headers"}: the body's length and SHA-256 (hashed
                        as it streams in) and selected request headers, lower-cased (absent ones are
                        null; `authorization` only as true/false, never its value).

Test hooks, query parameters of POST /score (at most one of status, echo, stream, size):
    latency_ms=N            this request's latency instead of the server's (0..60000 ms)
    status=N                answer status N (200..599) with {"name", "status": N} and the response
                            header `x-model-header: kept` (a model's own answer, to pass through as is)
    echo=1                  the request body back unchanged (application/octet-stream, chunked); it is
                            read in full first, so a client that sends all before it reads cannot deadlock
    echo=duplex             the same, but each piece is sent back as it arrives (full duplex; a client
                            must read while it sends, or both sides stall once the socket buffers fill)
    stream=N&interval_ms=M  server-sent events (text/event-stream, chunked): N events `data: {"i": k}`
                            (N up to 10000), each one M ms after the previous one (M defaults to 100;
                            N * M at most 60000)
    size=N                  exactly N bytes of application/octet-stream (Content-Length: N, at most
                            64 MiB), sent in 64 KiB pieces
A bad value answers 400 {"error": MESSAGE, "name": NAME}. Latency and failure injection come first.

`serve` binds its socket itself (port 0 picks a free one) and then prints one JSON line to stdout,
{"event": "listening", "name", "host", "port"}; SIGTERM or SIGINT stop it and it returns normally.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

_N = TypeVar("_N", int, float)
SUMMARY = ("A sample scoring model for demos and tests: its test hooks (?size=, ?latency_ms=, ?status=, ...) "
           "let any caller with a key ask for large or slow answers, so do not serve it publicly.")

_IDS = ("x-request-id", "x-ms-client-request-id", "traceparent")
_FORWARDED = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
_SELECTED_HEADERS = (*_IDS, *_FORWARDED, "host", "content-type")  # and authorization, as present or not
_PIECE = bytes(range(256)) * 256  # 64 KiB
# Bounds of the test hooks: what one call may cost the model (and the router's slot)
_MAX_LATENCY_MS = 60_000.0
_MAX_EVENTS = 10_000
_MAX_SIZE = 64 << 20
_OCTETS = "application/octet-stream"


class _BadQuery(ValueError):
    """A query parameter the hooks cannot use; answered with 400."""


class _EchoResponse(StreamingResponse):
    """Streams the request body back.

    Under ASGI spec < 2.4 (uvicorn says 2.3) StreamingResponse also calls `receive` to watch for a
    disconnect, which would steal request chunks from the body iterator; this one never does.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream_response(send)


def _json(
    payload: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(json.dumps(payload).encode(), status, headers, "application/json")


def _param(
    query: Mapping[str, str], key: str, parse: Callable[[str], _N], default: _N, low: _N, high: _N
) -> _N:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise _BadQuery(f"{key} must be {'an integer' if parse is int else 'a number'}: {raw!r}") from None
    if not low <= value <= high:  # also rejects nan
        raise _BadQuery(f"{key} must be between {low} and {high}, got {raw!r}")
    return value


async def _events(count: int, interval: float) -> AsyncIterator[bytes]:
    for i in range(count):
        await asyncio.sleep(interval)
        yield b'data: {"i": %d}\n\n' % i


async def _sized(size: int) -> AsyncIterator[bytes]:
    left = size
    while left > 0:
        piece = _PIECE if left >= len(_PIECE) else _PIECE[:left]
        left -= len(piece)
        yield piece


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _swagger(name: str) -> bytes:
    def schema(**properties: str) -> dict[str, Any]:
        return {"type": "object", "properties": {key: {"type": kind} for key, kind in properties.items()}}

    answer = schema(name="string", bytes="integer", sha256="string", headers="object")
    error = schema(error="string", name="string")
    operation = {
        "operationId": "score",
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "parameters": [{"in": "body", "name": "body", "required": False, "schema": {"type": "object"}}],
        "responses": {
            "200": {"description": "length, SHA-256 and selected headers of the request", "schema": answer},
            "500": {"description": "injected failure", "schema": error},
        },
    }
    document = {
        "swagger": "2.0",
        "info": {"title": name, "version": "1.0", "description": "inference-router sample model"},
        "schemes": ["http"],
        "paths": {"/score": {"post": operation}},
    }
    return json.dumps(document).encode()


def build_app(*, name: str = "model", latency_ms: float = 0, fail_rate: float = 0.0,
              log_requests: bool = False) -> Starlette:
    """The sample model's ASGI app; see the module docstring for its routes."""
    if not name:
        raise ValueError("name must not be empty")
    if not 0 <= latency_ms <= _MAX_LATENCY_MS:
        raise ValueError(f"latency_ms must be between 0 and {_MAX_LATENCY_MS}, got {latency_ms!r}")
    if not 0.0 <= fail_rate <= 1.0:
        raise ValueError(f"fail_rate must be between 0 and 1, got {fail_rate!r}")
    alive = json.dumps({"status": "alive", "name": name}).encode()
    swagger = _swagger(name)

    async def liveness(request: Request) -> Response:
        return Response(alive, media_type="application/json")

    async def swagger_json(request: Request) -> Response:
        return Response(swagger, media_type="application/json")

    stats = {"in_flight": 0, "peak_in_flight": 0, "served": 0}

    async def stats_json(request: Request) -> Response:
        return _json({"name": name, **stats})

    async def score(request: Request) -> Response:
        stats["in_flight"] += 1
        stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
        if log_requests:
            print(json.dumps({"event": "request", "name": name, "id": request.headers.get("x-request-id")}),
                  flush=True)
        try:
            return await _score(request)
        finally:
            stats["in_flight"] -= 1
            stats["served"] += 1

    async def _score(request: Request) -> Response:
        query = request.query_params
        try:
            latency = _param(query, "latency_ms", float, float(latency_ms), 0.0, _MAX_LATENCY_MS) / 1000
            status = _param(query, "status", int, 0, 200, 599) if "status" in query else None
            echo = query.get("echo", "0")
            if echo not in ("0", "1", "duplex"):
                raise _BadQuery(f"echo must be 1, duplex or 0, got {echo!r}")
            events = _param(query, "stream", int, 0, 0, _MAX_EVENTS) if "stream" in query else None
            interval = _param(query, "interval_ms", float, 100.0, 0.0, _MAX_LATENCY_MS) / 1000
            size = _param(query, "size", int, 0, 0, _MAX_SIZE) if "size" in query else None
            if events is not None and events * interval * 1000 > _MAX_LATENCY_MS:
                raise _BadQuery(f"stream * interval_ms must be at most {_MAX_LATENCY_MS:g} ms")
            if (status is not None) + (echo != "0") + (events is not None) + (size is not None) > 1:
                raise _BadQuery("use at most one of status, echo, stream, size")
        except _BadQuery as exc:
            return _json({"error": str(exc), "name": name}, 400)
        if latency:
            await asyncio.sleep(latency)
        if fail_rate and random.random() < fail_rate:
            return _json({"error": "injected failure", "name": name}, 500)
        if status is not None:
            if status in (204, 304):
                return Response(None, status, {"x-model-header": "kept"})
            return _json({"name": name, "status": status}, status, {"x-model-header": "kept"})
        if echo == "duplex":
            return _EchoResponse(_body(request), media_type=_OCTETS)
        if echo == "1":
            chunks = [chunk async for chunk in request.stream() if chunk]
            return StreamingResponse(_replay(chunks), media_type=_OCTETS)
        if events is not None:
            headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
            return StreamingResponse(
                _events(events, interval), headers=headers, media_type="text/event-stream"
            )
        if size is not None:
            return StreamingResponse(_sized(size), headers={"content-length": str(size)}, media_type=_OCTETS)
        digest, length = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            length += len(chunk)
        seen: dict[str, str | bool | None] = {key: request.headers.get(key) for key in _SELECTED_HEADERS}
        seen["authorization"] = "authorization" in request.headers
        return _json({"name": name, "bytes": length, "sha256": digest.hexdigest(), "headers": seen})

    routes = [
        Route("/", liveness, methods=["GET"]),
        Route("/swagger.json", swagger_json, methods=["GET"]),
        Route("/score", score, methods=["POST"]),
        Route("/stats", stats_json, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def serve(
    *, host: str = "127.0.0.1", port: int = 0, name: str = "model", latency_ms: float = 0,
    fail_rate: float = 0.0, log_requests: bool = False,
) -> None:  # fmt: skip
    """Bind host:port, print the `listening` line, serve until SIGTERM or SIGINT. Raises OSError on bind."""
    app = build_app(name=name, latency_ms=latency_ms, fail_rate=fail_rate, log_requests=log_requests)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, loop="uvloop", http="httptools", lifespan="off",
            timeout_graceful_shutdown=5,
        )  # fmt: skip
        server = uvicorn.Server(config)

        def stop(signum: int, frame: object) -> None:
            # Stops a server that has not yet taken the signals itself; and uvicorn, once it has stopped,
            # re-raises the signal that stopped it, which the default handler would turn into a kill.
            server.should_exit = True

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        bound = sock.getsockname()[1]
        print(json.dumps({"event": "listening", "name": name, "host": host, "port": bound}), flush=True)
        try:
            with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
                runner.run(server.serve(sockets=[sock]))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        sock.close()


def _bounded(kind: Callable[[str], _N], low: _N, high: _N, what: str) -> Callable[[str], _N]:
    def parse(raw: str) -> _N:
        message = f"must be {what} between {low} and {high}, got {raw!r}"
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(message) from None
        if not low <= value <= high:  # also rejects nan
            raise argparse.ArgumentTypeError(message)
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sample-model` options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    port, latency = _bounded(int, 0, 65535, "an integer"), _bounded(float, 0.0, _MAX_LATENCY_MS, "a number")
    parser.add_argument("--port", type=port, default=5001, help="port (default 5001; 0: any free port)")
    parser.add_argument("--latency-ms", type=latency, default=0.0, help="delay of POST /score (default 0)")
    fraction = _bounded(float, 0.0, 1.0, "a number")
    parser.add_argument("--fail-rate", type=fraction, default=0.0, help="share of 500 answers (default 0)")
    parser.add_argument("--name", default="model", help="model name in answers and swagger (default model)")
    parser.add_argument("--log-requests", action="store_true",
                        help='print {"event": "request", "id": <x-request-id>} for each POST /score (default: off)')


def run(args: argparse.Namespace) -> int:
    """Serve with the parsed options; 0 after a clean stop, 1 when the socket cannot be bound."""
    if not args.name:
        print("sample-model: --name must not be empty", file=sys.stderr)
        return 2
    options = {key: getattr(args, key) for key in ("host", "port", "name", "latency_ms", "fail_rate", "log_requests")}
    try:
        serve(**options)
    except OSError as exc:
        print(f"sample-model: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(
        prog="python -m router.sample_model", description=SUMMARY)
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
