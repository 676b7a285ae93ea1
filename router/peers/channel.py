"""The peer port: a small HTTP API between routers, and its client. Every call carries the shared key.

    POST /peer/v1/state   a PeerState          → the answering router's own PeerState (the heartbeat, both ways)
    POST /peer/v1/claim   {member, seq, slots} → {"granted": slots}
    GET  /peer/v1/view    → this router's view: members, peers, slots held per replica (for operators and tests)

A call without the key (`Authorization: Bearer <key>`), or with another, gets 401 in the router's
JSON error shape and is logged (`peers.unauthorized`, with the caller's address, never what it sent).
The peer port is for routers only: the chart's NetworkPolicy admits router pods alone.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from router import logs
from router.peers.ledger import PeerState
from router.peers.split import Slot

PREFIX = "/peer/v1"


class PeerCalls(Protocol):
    """What the peer port answers: the router's side of each call."""

    def on_state(self, state: PeerState) -> PeerState: ...
    def on_claim(self, claimant: str, seq: int, slots: frozenset[Slot]) -> frozenset[Slot]: ...
    def debug(self) -> dict[str, Any]: ...


def encode_slots(slots: Iterable[Slot]) -> list[list[object]]:
    return [list(slot) for slot in sorted(slots)]


def decode_slots(value: object) -> frozenset[Slot]:
    if not isinstance(value, list):
        raise ValueError("slots: expected a list")
    slots = set()
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], str)
                and isinstance(item[2], int)):
            raise ValueError("slots: each is [deployment, replica URL, index]")
        slots.add((item[0], item[1], item[2]))
    return frozenset(slots)


def encode_state(state: PeerState) -> dict[str, object]:
    return {"member": state.member, "seq": state.seq, "held": encode_slots(state.held),
            "pending": encode_slots(state.pending), "leaving": state.leaving, "free": dict(state.free)}


def decode_state(value: object) -> PeerState:
    if not isinstance(value, dict) or not isinstance(value.get("member"), str) or not isinstance(value.get("seq"), int):
        raise ValueError("state: expected member and seq")
    free = value.get("free", {})
    if not isinstance(free, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in free.items()):
        raise ValueError("state: free is {deployment: slots}")
    return PeerState(value["member"], value["seq"], decode_slots(value.get("held", [])),
                     decode_slots(value.get("pending", [])), bool(value.get("leaving", False)),
                     tuple(sorted(free.items())))


def _error(status: int, code: str, message: str) -> JSONResponse:
    request_id = str(uuid.uuid4())
    return JSONResponse({"error": {"code": code, "message": message, "requestId": request_id}},
                        status_code=status, headers={"x-request-id": request_id})


class RequireKey:
    """Pure ASGI: a request without the shared key never reaches a route."""

    def __init__(self, app: ASGIApp, key: bytes) -> None:
        self.app = app
        self.expected = b"Bearer " + key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("", 0)
        logs.event("peers.unauthorized", level=logging.WARNING, client=client[0], path=scope.get("path", ""),
                   key_sent=bool(given))
        await _error(401, "Unauthorized", "the peer port needs the peers' shared key")(scope, receive, send)


def build_peer_app(calls: PeerCalls, key: bytes) -> ASGIApp:
    async def state(request: Request) -> Response:
        try:
            heard = decode_state(json.loads(await request.body()))
        except ValueError as exc:
            return _error(400, "BadRequest", str(exc))
        return JSONResponse(encode_state(calls.on_state(heard)))

    async def claim(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get("member"), str) \
                    or not isinstance(body.get("seq"), int):
                raise ValueError("claim: expected member, seq and slots")
            slots = decode_slots(body.get("slots"))
        except ValueError as exc:
            return _error(400, "BadRequest", str(exc))
        return JSONResponse({"granted": encode_slots(calls.on_claim(body["member"], body["seq"], slots))})

    async def view(request: Request) -> Response:
        return JSONResponse(calls.debug())

    app = Starlette(routes=[Route(f"{PREFIX}/state", state, methods=["POST"]),
                            Route(f"{PREFIX}/claim", claim, methods=["POST"]),
                            Route(f"{PREFIX}/view", view)])
    return RequireKey(app, key)


class PeerClient:
    """Calls to the other routers' peer ports: pooled keep-alive connections, every failure a None."""

    def __init__(self, key: bytes, timeout: float,
                 transport_for: Callable[[], httpx.AsyncBaseTransport] | None = None) -> None:
        self.key = key  # the peer port's own check takes the same one
        self._client = httpx.AsyncClient(headers={"authorization": "Bearer " + key.decode("latin-1")},
                                         timeout=timeout, trust_env=False,
                                         transport=transport_for() if transport_for else None)

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, peer: str, call: str, body: dict[str, object]) -> Any:
        try:
            answer = await self._client.post(f"http://{peer}{PREFIX}/{call}", json=body)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            logs.event("peers.call_refused", level=logging.WARNING, peer=peer, call=call, status=answer.status_code)
            return None
        try:
            return answer.json()
        except ValueError:
            return None

    async def state(self, peer: str, state: PeerState) -> PeerState | None:
        answer = await self._post(peer, "state", encode_state(state))
        try:
            return decode_state(answer) if answer is not None else None
        except ValueError:
            return None

    async def claim(self, peer: str, member: str, seq: int, slots: frozenset[Slot]) -> frozenset[Slot] | None:
        answer = await self._post(peer, "claim", {"member": member, "seq": seq, "slots": encode_slots(slots)})
        try:
            return decode_slots(answer.get("granted")) if isinstance(answer, dict) else None
        except ValueError:
            return None
