"""A small Kubernetes API server for tests, faithful in what the router relies on.

It serves, on 127.0.0.1 and an ephemeral port, the kinds the router uses (OnlineEndpoint,
OnlineDeployment, EndpointSlice, Secret, Service, Lease; for the autoscaler apps/v1 Deployment and
StatefulSet, autoscaling/v2 HorizontalPodAutoscaler, core Event) the way a real API server does
(the state and its rules are in `fake_store`, the HTTP side here):

- every write bumps one global `resourceVersion`; objects carry `uid`, `creationTimestamp`,
  `generation` (bumped by spec changes only) and, for the custom resources, a `status`
  subresource: the main resource ignores `status`, `/status` changes nothing else;
- list and watch, cluster-wide or per namespace, with label selectors (`=`, `==`, `!=`, `in`,
  `notin`, `key`, `!key`) and field selectors (`metadata.name`, `metadata.namespace`);
  built-in kinds' list items carry no `kind`/`apiVersion`, as with a real server;
- watch from a `resourceVersion`, with `allowWatchBookmarks` and `timeoutSeconds`; an object
  that starts or stops matching a selector is ADDED or DELETED for that watch; a version
  older than the last `compact()` gets an ERROR event with a 410 `Expired` status;
- the `/scale` subresource of Deployments and StatefulSets (an autoscaling/v1 Scale): GET, PUT and
  merge PATCH of `spec.replicas`, 409 when the body's `resourceVersion` is not the object's;
- create (409 when it exists), replace (409 on a stale `resourceVersion`), merge patch (409 when it
  carries a `metadata.resourceVersion` that is not the object's, as the API server checks it)
  (strategic merge patch is refused with 415 for custom resources, as Kubernetes does), delete;
- bearer-token authentication, and a log of every request (method, path, query, token).

Faults: `cut_watches()` drops every open watch without a clean end; `outage()` does that and
closes every connection without an answer until it ends; `fail(code, ...)` answers the requests
it selects (by resource, namespace, token, verb) with an error, `Retry-After` included if asked;
`hold(...)` leaves them unanswered until it ends; `cut_next_event` breaks a watch halfway
through an event; `lagging(at)` answers watches from a newer version with 504, as a restarted
API server whose cache has not caught up does. Bookmarks come every `bookmark_interval`
(a real server: about a minute) and when a watch times out. Tests change objects directly with
`create`, `replace`, `patch`, `delete`, which go through the same code as HTTP writes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.kube.fake_store import (
    SCALABLE,
    TYPES,
    ApiError,
    Event,
    Obj,
    ResourceType,
    Store,
    field_selector,
    label_selector,
    merge_patch,
)

_REASONS = {403: "Forbidden", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}
_PATH = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
                   r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)"
                   r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|scale))?$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    token: str
    status: int = 0

    @property
    def resource(self) -> tuple[str, str, str | None, str | None] | None:
        """(API group, resource with its subresource, namespace, name) as RBAC reads the path."""
        match = _PATH.match(self.path)
        if match is None:
            return None
        group = match["group"] or ""
        resource = match["plural"] + (f"/{match['sub']}" if match["sub"] else "")
        return group, resource, match["namespace"], match["name"]

    @property
    def verb(self) -> str:
        """The verb RBAC checks: get, list, watch, create, update, patch or delete."""
        if self.method == "GET":
            named = self.resource is not None and self.resource[3] is not None
            return "get" if named else "watch" if self.query.get("watch") in ("true", "1") else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(self.method, "")


@dataclass
class Fault:
    """Requests that match get `code` (with Retry-After if given), or with code 0 no answer until the fault ends."""

    code: int
    plural: str | None = None
    namespace: str | None = None
    token: str | None = None
    verb: str | None = None
    retry_after: float | None = None

    def matches(self, request: Request) -> bool:
        resource = request.resource
        return (self.plural is None or (resource is not None and resource[1].split("/")[0] == self.plural)) and (
            self.namespace is None or (resource is not None and resource[2] == self.namespace)) and (
            self.token is None or request.token == self.token) and (self.verb is None or request.verb == self.verb)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle_one_request(self) -> None:
        api = self.server.api
        if api.down:
            api.refused += 1
            self._drop()
            return
        super().handle_one_request()

    def _drop(self) -> None:
        """End the connection without an answer, as a crashed server or a cut network does."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        api = self.server.api
        if api.down:  # a request read on a connection opened before the outage
            api.refused += 1
            self._drop()
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        record = Request(method, url.path, query, token)
        api.requests.append(record)
        fault = next((f for f in list(api.faults) if f.matches(record)), None)
        if fault is not None and fault.code == 0:  # a partition: no answer until it ends, then the connection is cut
            with api.store.cond:
                api.store.cond.wait_for(lambda: fault not in api.faults)
            self._drop()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            if fault is not None:
                raise ApiError(fault.code, _REASONS.get(fault.code, "InternalError"),
                               f"injected fault: {fault.code}", retry_after=fault.retry_after)
            if api.tokens and token not in api.tokens:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            match = _PATH.match(url.path)
            rtype = TYPES.get(match["plural"]) if match else None
            if match is None or rtype is None or (match["core"] or f"{match['group']}/{match['version']}") \
                    != rtype.api_version:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource {url.path}")
            namespace, name, sub = match["namespace"], match["name"], match["sub"]
            if method == "GET" and name is None and query.get("watch") in ("true", "1"):
                record.status = 200
                self._watch(rtype, namespace, query)
                return
            code, answer = self._dispatch(method, rtype, namespace, name, sub, query, body)
        except ApiError as exc:
            code, answer = exc.code, exc.status()
            if exc.retry_after is not None:
                record.status = code
                self._send(code, answer, {"Retry-After": f"{exc.retry_after:g}"})
                return
        record.status = code
        self._send(code, answer)

    def _dispatch(self, method: str, rtype: ResourceType, namespace: str | None, name: str | None,
                  sub: str | None, query: dict[str, str], body: bytes) -> tuple[int, Obj]:
        store = self.server.api.store
        if name is None:
            if method == "GET":
                return 200, self.server.api.list(rtype.plural, namespace, query)
            if method == "POST" and namespace:
                return 201, store.create(rtype.plural, namespace, _json(body))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        if not namespace:
            raise ApiError(404, "NotFound", "namespaced resources need a namespace")
        if sub == "scale":
            return 200, self._scale(method, rtype, namespace, name, body)
        status = sub == "status"
        if method == "GET":
            return 200, store.get(rtype.plural, namespace, name)
        if method == "PUT":
            new = _json(body)
            return 200, store.update(rtype.plural, namespace, name, lambda _: new, status=status,
                                     expect_rv=new.get("metadata", {}).get("resourceVersion"))
        if method == "PATCH":
            kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if kind == "application/strategic-merge-patch+json" and not rtype.builtin:
                raise ApiError(415, "UnsupportedMediaType",
                               "strategic merge patch is not supported for custom resources")
            if kind not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                raise ApiError(415, "UnsupportedMediaType", f"the fake supports merge patch only, got {kind!r}")
            patch = _json(body)
            return 200, store.update(rtype.plural, namespace, name, lambda obj: merge_patch(obj, patch),
                                     status=status, expect_rv=(patch.get("metadata") or {}).get("resourceVersion"))
        if method == "DELETE":
            return 200, store.delete(rtype.plural, namespace, name)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _scale(self, method: str, rtype: ResourceType, namespace: str, name: str, body: bytes) -> Obj:
        """The autoscaling/v1 Scale of a Deployment or StatefulSet: GET, PUT (409 on a stale resourceVersion)
        or merge PATCH of `spec.replicas`."""
        store = self.server.api.store
        if rtype.plural not in SCALABLE:
            raise ApiError(404, "NotFound", f"{rtype.plural} has no scale subresource")
        if method == "GET":
            return _scale_of(store.get(rtype.plural, namespace, name))
        if method not in ("PUT", "PATCH"):
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on /scale")
        change = _json(body)
        expect_rv = (change.get("metadata") or {}).get("resourceVersion")

        def scaled(obj: Obj) -> Obj:
            wanted = change if method == "PUT" else merge_patch(_scale_of(obj), change)
            replicas = (wanted.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}: must be >= 0")
            obj.setdefault("spec", {})["replicas"] = replicas
            return obj

        return _scale_of(store.update(rtype.plural, namespace, name, scaled, expect_rv=expect_rv))

    def _send(self, code: int, answer: Obj, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, event: Obj) -> None:
        data = json.dumps(event).encode() + b"\n"
        frame = b"%x\r\n%s\r\n" % (len(data), data)
        api = self.server.api
        if api.cut_next_event and event.get("type") != "BOOKMARK":
            api.cut_next_event = False
            self.wfile.write(frame[:len(frame) // 2])  # the connection breaks halfway through the event
            self.wfile.flush()
            self._drop()
            raise OSError("cut mid-event")
        self.wfile.write(frame)
        self.wfile.flush()

    def _watch(self, rtype: ResourceType, namespace: str | None, query: dict[str, str]) -> None:
        api, store = self.server.api, self.server.api.store
        matches = api.matcher(namespace, query)  # raises before the answer starts
        since_rv = int(query.get("resourceVersion") or 0)
        if api.cache_rv is not None and since_rv > api.cache_rv:  # a restarted server's cache, not caught up
            raise ApiError(504, "Timeout", f"Too large resource version: {since_rv}, current: {api.cache_rv}",
                           retry_after=1)
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        since = query.get("resourceVersion") or "0"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        with store.cond:
            epoch = api.epoch
            if since == "0":  # from now, after synthetic ADDED events for what exists
                position = store.rv
                pending = [{"type": "ADDED", "object": copy.deepcopy(o)} for (p, _, _), o in
                           sorted(store.objects.items()) if p == rtype.plural and matches(o)]
            elif int(since) < store.compacted:
                pending = [{"type": "ERROR", "object": ApiError(
                    410, "Expired", f"too old resource version: {since} ({store.compacted})").status()}]
                position = -1
            else:
                position, pending = int(since), []
        try:
            for event in pending:
                self._chunk(event)
            if position < 0:
                self._end()
                return
            next_bookmark = time.monotonic() + api.bookmark_interval
            while True:
                with store.cond:
                    store.cond.wait_for(lambda seen=position: store.rv > seen or api.epoch != epoch, timeout=max(
                        0.0, min(deadline, next_bookmark) - time.monotonic()))
                    if api.epoch != epoch:
                        self._drop()
                        return
                    events = [e for e in store.history if e.rv > position]
                    position = store.rv
                for event in events:
                    if event.plural == rtype.plural:
                        translated = _translate(event, matches)
                        if translated is not None:
                            self._chunk(translated)
                now = time.monotonic()
                if bookmarks and (now >= next_bookmark or now >= deadline):
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": rtype.kind, "apiVersion": rtype.api_version,
                        "metadata": {"resourceVersion": str(position)}}})
                    next_bookmark = now + api.bookmark_interval
                if now >= deadline:
                    self._end()
                    return
        except OSError:
            self.close_connection = True

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _translate(event: Event, matches: Callable[[Obj], bool]) -> Obj | None:
    """The event as one watch sees it: an object entering or leaving its selection is ADDED or DELETED."""
    now, before = matches(event.obj), event.old is not None and matches(event.old)
    if event.type == "DELETED":
        kind = "DELETED" if before else None
    elif event.type == "ADDED":
        kind = "ADDED" if now else None
    else:
        kind = "MODIFIED" if now and before else "ADDED" if now else "DELETED" if before else None
    return None if kind is None else {"type": kind, "object": copy.deepcopy(event.obj)}


def _scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(
                           ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items()))}}


def _json(body: bytes) -> Obj:
    try:
        value = json.loads(body or b"null")
    except ValueError:
        raise ApiError(400, "BadRequest", "the body is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    return value


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    api: FakeApiServer


class FakeApiServer:
    """Start with `with FakeApiServer() as api:`; `api.kubeconfig(path)` points a client at it."""

    def __init__(self, *, tokens: tuple[str, ...] = ("router-token",), bookmark_interval: float = 60.0) -> None:
        self.store = Store()
        self.tokens = set(tokens)
        self.bookmark_interval = bookmark_interval
        self.requests: list[Request] = []  # every request answered
        self.refused = 0  # connections and requests dropped unanswered during an outage
        self.faults: list[Fault] = []  # see `fail` and `hold`
        self.cut_next_event = False  # the next watch event breaks off halfway, and its connection with it
        self.cache_rv: int | None = None  # see `lagging`
        self.down = False
        self.epoch = 0  # bumped to cut every open watch
        self._http = _HttpServer(("127.0.0.1", 0), _Handler)
        self._http.api = self
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-apiserver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.down = True
        with self.store.cond:
            self.faults.clear()
        self.cut_watches()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)

    def kubeconfig(self, path: Path, token: str = "router-token", namespace: str = "default") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "router", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "router",
                                                      "namespace": namespace}}],
        }))
        return path

    # Faults

    def cut_watches(self) -> None:
        """Drop every open watch connection, without the clean end of a timed-out watch."""
        with self.store.cond:
            self.epoch += 1
            self.store.cond.notify_all()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """While inside: open watches are dropped and every request is closed unanswered."""
        self.down = True
        self.cut_watches()
        try:
            yield
        finally:
            self.down = False

    @contextlib.contextmanager
    def fail(self, code: int, **where: Any) -> Iterator[Fault]:
        """While inside: the requests `where` selects (plural, namespace, token, verb) get `code`
        (`retry_after=` adds Retry-After, as a real server does on 429 and 5xx); other requests are served."""
        fault = Fault(code, **where)
        with self.store.cond:
            self.faults.append(fault)
        try:
            yield fault
        finally:
            with self.store.cond:
                self.faults.remove(fault)
                self.store.cond.notify_all()

    def hold(self, **where: Any) -> contextlib.AbstractContextManager[Fault]:
        """While inside: the requests `where` selects hang unanswered (cut when the block ends), as behind
        a partition or an overloaded server; other requests are served."""
        return self.fail(0, **where)

    @contextlib.contextmanager
    def lagging(self, at: int) -> Iterator[None]:
        """While inside: the watch cache is at version `at` (as after an API server restart), so a watch from a
        newer version gets 504 "Too large resource version" with Retry-After: 1, as a real server answers."""
        self.cache_rv = at
        try:
            yield
        finally:
            self.cache_rv = None

    def compact(self) -> int:
        """Forget the history so far: a watch from an older version gets 410 Gone."""
        with self.store.cond:
            self.store.compacted = self.store.rv
            return self.store.rv

    # Reading and writing objects directly (the same code as the HTTP verbs)

    def matcher(self, namespace: str | None, query: dict[str, str]) -> Callable[[Obj], bool]:
        labels = label_selector(query.get("labelSelector") or "")
        fields = field_selector(query.get("fieldSelector") or "")
        return lambda obj: (namespace is None or obj["metadata"]["namespace"] == namespace) and labels(
            obj) and fields(obj)

    def list(self, plural: str, namespace: str | None = None, query: dict[str, str] | None = None) -> Obj:
        rtype, matches = TYPES[plural], self.matcher(namespace, query or {})
        with self.store.cond:
            items = [copy.deepcopy(o) for (p, _, _), o in sorted(self.store.objects.items())
                     if p == plural and matches(o)]
            rv = self.store.rv
        if rtype.builtin:  # as a real server does, items of built-in lists carry no type
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(rv)}, "items": items}

    def create(self, plural: str, obj: Obj) -> Obj:
        return self.store.create(plural, obj.get("metadata", {}).get("namespace", "default"), obj)

    def get(self, plural: str, name: str, namespace: str = "default") -> Obj:
        return self.store.get(plural, namespace, name)

    def replace(self, plural: str, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return self.store.update(plural, meta.get("namespace", "default"), meta["name"], lambda _: obj)

    def patch(self, plural: str, name: str, patch: Obj, namespace: str = "default") -> Obj:
        return self.store.update(plural, namespace, name, lambda obj: merge_patch(obj, patch))

    def delete(self, plural: str, name: str, namespace: str = "default") -> Obj:
        return self.store.delete(plural, namespace, name)

    def requests_for(self, plural: str, *, watch: bool | None = None, method: str = "GET") -> list[Request]:
        return [r for r in list(self.requests) if r.method == method and (
            r.path.endswith(f"/{plural}") or f"/{plural}/" in r.path) and (
            watch is None or (r.query.get("watch") in ("true", "1")) == watch)]
