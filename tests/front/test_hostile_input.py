"""Hostile and broken clients, through real sockets: limits, smuggling, slow clients, odd names, tokens."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from router import tokens
from tests.front.replicas import RecordingReplica
from tests.routing import (
    Config,
    RouterProcess,
    answer_complete,
    connect,
    exchange,
    read_until,
    router_before_sample_model,
    start_router,
    status_of,
    token_endpoint_documents,
)

KEY = "primary-key-0123456789"
SIGNING = "token-signing-key-abcdefghijklmnop"


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with router_before_sample_model(
            tmp_path_factory.mktemp("hostile"), "--max-header-count", "50", "--max-header-bytes", "16384",
            "--max-url-bytes", "4096", "--header-timeout", "2", "--body-timeout", "2", "--keepalive-timeout", "3",
            "--max-connections", "700", "--max-connections-per-client", "600", "--trusted-proxies", "127.0.0.2/32",
            extra_documents=lambda url: token_endpoint_documents(url, SIGNING), concurrency=8) as r:
        yield r


def error_of(answer: bytes) -> dict:
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert "Traceback" not in json.dumps(body)
    return body["error"]


def still_serving(router: RouterProcess) -> None:
    r = httpx.post(router.score_url(), headers=router.auth, content=b"{}", timeout=5)
    assert r.status_code == 200


def request(path: str = "/api/v1/endpoint/demo/score", headers: str = "", body: bytes = b"{}") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n{headers}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


# -- limits ---------------------------------------------------------------------------------

def test_too_many_headers_get_431(router: RouterProcess) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(60))
    answer = exchange(router.port, request(headers=many), quiet_ok=True)
    assert status_of(answer) == 431 and "50" in error_of(answer)["message"]
    still_serving(router)


@pytest.mark.parametrize("split", [False, True])
def test_headers_over_the_size_limit_get_431(router: RouterProcess, split: bool) -> None:
    data = request(headers=f"X-Big: {'a' * 20000}\r\n")
    if not split:
        answer = exchange(router.port, data, quiet_ok=True)
    else:  # one huge header arriving in pieces is caught before it completes
        with connect(router.port) as s:
            for i in range(0, 18000, 1000):
                s.sendall(data[i:i + 1000])
                time.sleep(0.002)
            answer = s.recv(65536)
    assert status_of(answer) == 431
    still_serving(router)


def test_a_long_url_gets_414(router: RouterProcess) -> None:
    answer = exchange(router.port, request(path="/api/v1/endpoint/demo/score?" + "q" * 5000), quiet_ok=True)
    assert status_of(answer) == 414 and error_of(answer)["code"] == "UriTooLong"
    still_serving(router)


def test_headers_that_never_finish_get_408_then_close(router: RouterProcess) -> None:
    started = time.monotonic()
    head = b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\n"
    answer = exchange(router.port, head, timeout=10, quiet_ok=True)
    assert status_of(answer) == 408 and 1.5 < time.monotonic() - started < 5
    assert error_of(answer)["code"] == "RequestTimeout"


def test_a_silent_connection_is_closed_without_an_answer(router: RouterProcess) -> None:
    started = time.monotonic()
    assert exchange(router.port, b"", timeout=10, quiet_ok=True) == b""
    assert 1.5 < time.monotonic() - started < 5


def test_a_body_that_stops_arriving_gets_408(router: RouterProcess) -> None:
    head = request(body=b"").replace(b"Content-Length: 0", b"Content-Length: 100")
    answer = exchange(router.port, head + b"only part", timeout=10, quiet_ok=True)
    assert status_of(answer) == 408
    still_serving(router)


def test_an_idle_keep_alive_connection_is_closed(router: RouterProcess) -> None:
    with connect(router.port, timeout=10) as s:
        s.sendall(request().replace(b"Connection: close\r\n", b""))
        first = read_until(s, answer_complete)  # the whole first answer, however it is split
        assert status_of(first) == 200
        started = time.monotonic()
        assert s.recv(65536) == b""  # closed by the router, after the keep-alive timeout
        assert 2 < time.monotonic() - started < 8


def test_connections_over_the_limit_are_refused_and_the_others_keep_working(tmp_path: Path,
                                                                            sample_model_factory) -> None:
    model = sample_model_factory("--name", "m")
    router = start_router(tmp_path, Config(key=KEY).deployment("main", [model.url], weight=100),
                          "--max-connections", "3")
    try:
        held = [connect(router.port) for _ in range(3)]
        time.sleep(0.2)
        answer = exchange(router.port, request(), quiet_ok=True)
        assert status_of(answer) == 503 and "too many" in error_of(answer)["message"]
        held[0].sendall(request())
        assert status_of(held[0].recv(65536)) == 200  # an existing connection is unaffected
        for s in held:
            s.close()
        time.sleep(0.2)
        still_serving(router)
    finally:
        router.stop()


def test_slowloris_does_not_stop_valid_requests(router: RouterProcess) -> None:
    slow = []
    for _ in range(500):
        s = connect(router.port)
        s.sendall(b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\n")
        slow.append(s)
    try:
        latencies = []
        deadline = time.monotonic() + 3
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                for s in slow:  # one more byte a second on every slow connection
                    with contextlib.suppress(OSError):
                        s.send(b"X")
                for _ in range(20):
                    started = time.monotonic()
                    assert client.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200
                    latencies.append(time.monotonic() - started)
                time.sleep(max(0.0, 1 - 20 * (sum(latencies[-20:]) / 20)))
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.05 and latencies[int(len(latencies) * 0.95)] < 0.25
    finally:
        for s in slow:
            s.close()


# -- framing and smuggling -----------------------------------------------------------------

@pytest.mark.parametrize(("data", "status"), [
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", 400),
    (b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"Content-Length: 2, 2\r\n\r\n{}", 400),
    (b"Content-Length: -2\r\n\r\n{}", 400),
    (b"X-Fold: a\r\n folded\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"X-Bare: a\rb\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"X-Bare: a\nContent-Length: 2\r\n\r\n{}", 400),
    (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: identity\r\n\r\n", 501),
    (b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 501),
])
def test_ambiguous_framing_is_refused_and_never_forwarded(router: RouterProcess, data: bytes, status: int) -> None:
    head = f"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode()
    answer = exchange(router.port, head + data, quiet_ok=True)
    assert status_of(answer) == status, answer[:200]
    assert error_of(answer)["requestId"]
    still_serving(router)


def test_forwarded_headers_are_replaced_unless_the_peer_is_a_trusted_proxy(router: RouterProcess) -> None:
    spoof = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"
    answer = exchange(router.port, request(headers=spoof), quiet_ok=True)
    seen = json.loads(answer.partition(b"\r\n\r\n")[2])["headers"]
    assert (seen["x-forwarded-for"], seen["x-forwarded-proto"], seen["x-forwarded-host"]) == ("127.0.0.1", "http", "x")
    # 127.0.0.2 is configured as a trusted proxy: its client chain is kept and extended
    answer = exchange(router.port, request(headers=spoof), source="127.0.0.2", quiet_ok=True)
    seen = json.loads(answer.partition(b"\r\n\r\n")[2])["headers"]
    assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.2"
    assert (seen["x-forwarded-proto"], seen["x-forwarded-host"]) == ("https", "evil")


def test_other_proxy_headers_from_untrusted_clients_never_reach_the_model(tmp_path: Path) -> None:
    spoof = ("Forwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /admin\r\n"
             "X-Real-IP: 6.6.6.6\r\nX-Original-URL: /admin\r\nTrue-Client-IP: 6.6.6.6\r\n")
    with RecordingReplica() as replica:
        proxied = start_router(tmp_path, Config(key=KEY).deployment("main", [replica.url], weight=100),
                               "--trusted-proxies", "127.0.0.2/32")
        try:
            assert status_of(exchange(proxied.port, request(headers=spoof), quiet_ok=True)) == 200
            assert status_of(exchange(proxied.port, request(headers=spoof), source="127.0.0.2", quiet_ok=True)) == 200
        finally:
            proxied.stop()
    untrusted, trusted = (head.lower() for head in replica.heads)
    for name in (b"forwarded:", b"x-forwarded-port:", b"x-forwarded-prefix:", b"x-real-ip:", b"x-original-url:",
                 b"true-client-ip:"):
        assert b"\r\n" + name not in untrusted, name
        assert b"\r\n" + name in trusted, name  # a trusted proxy's are passed on
    assert b"x-forwarded-for: 127.0.0.1" in untrusted


def test_a_repeated_host_header_gets_400(router: RouterProcess) -> None:
    answer = exchange(router.port, request(headers="Host: other\r\n"), quiet_ok=True)
    assert status_of(answer) == 400 and "Host" in error_of(answer)["message"]
    still_serving(router)


def test_generated_request_ids_are_random(router: RouterProcess) -> None:
    with httpx.Client(timeout=5) as client:
        ids = [client.post(router.score_url(), headers=router.auth, content=b"{}").headers["x-request-id"]
               for _ in range(20)]
    assert len(set(ids)) == 20
    # before: one prefix per process and a serial number, so the next id was the last plus one
    serials = sorted(int(rid.split("-")[4], 16) for rid in ids)
    assert max(b - a for a, b in itertools.pairwise(serials)) > 1000


# -- who may learn what exists (401 before 404 and 405) --------------------------------------------------

def test_endpoints_cannot_be_listed_without_a_key(router: RouterProcess) -> None:
    unknown = "/api/v1/endpoint/nosuch/score"
    for headers in ("", "Authorization: Bearer wrong-key-0123456789\r\n"):
        plain = request(path=unknown).replace(f"Authorization: Bearer {KEY}\r\n".encode(), headers.encode())
        known = request().replace(f"Authorization: Bearer {KEY}\r\n".encode(), headers.encode())
        a, b = exchange(router.port, plain, quiet_ok=True), exchange(router.port, known, quiet_ok=True)
        assert status_of(a) == status_of(b) == 401  # before: 404 for the unknown one
        assert error_of(a)["message"] == error_of(b)["message"]
    # the wrong method is told only to a caller with a key (before: 405 to anyone)
    get = request().replace(b"POST ", b"GET ").replace(f"Authorization: Bearer {KEY}\r\n".encode(), b"")
    assert status_of(exchange(router.port, get, quiet_ok=True)) == 401
    assert status_of(exchange(router.port, request().replace(b"POST ", b"GET "), quiet_ok=True)) == 405
    # a caller with a key of some endpoint who mistypes a name is told it does not exist
    answer = exchange(router.port, request(path=unknown), quiet_ok=True)
    assert status_of(answer) == 404 and "nosuch" in error_of(answer)["message"]


# -- names and paths ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/api/v1/endpoint/DEMO/score", "/api/v1/endpoint/de%2Fmo/score", "/api/v1/endpoint/demo%2Fscore",
    "/api/v1/endpoint/../endpoint/demo/score", "/api/v1/endpoint/demo/../score", "/api/v1/endpoint//score",
    "/api/v1/endpoint/demo/score/", "//api/v1/endpoint/demo/score", "/api/v1/endpoint/%00/score",
    "/api/v1/endpoint/" + "a" * 3000 + "/score", "/api/v1/endpoint/demo/score/../../../admin",
    "/api/v1/endpoint/d\xe9mo/score", "*",
])
def test_odd_names_and_paths_get_404_or_400_never_a_route_elsewhere(router: RouterProcess, path: str) -> None:
    answer = exchange(router.port, request(path=path.encode("latin-1").decode("latin-1")), quiet_ok=True)
    assert status_of(answer) in (400, 404), answer[:300]
    error = error_of(answer)
    assert len(error["message"]) < 300  # the router does not echo unbounded input
    still_serving(router)


# -- tokens --------------------------------------------------------------------------------

def secure(router: RouterProcess, credential: str) -> httpx.Response:
    return httpx.post(router.score_url("secure"), headers={"Authorization": f"Bearer {credential}"},
                      content=b"{}", timeout=5)


def test_tokens_valid_expired_other_endpoint_tampered_and_wrong_mode(router: RouterProcess) -> None:
    issued = httpx.post(f"{router.admin_url}/token/secure?ttl=30m",
                        headers={"Authorization": "Bearer secure-primary-key-0123"}).json()
    token = issued["accessToken"]
    assert issued["expiryTimeUtc"] > issued["refreshAfterTimeUtc"]
    assert secure(router, token).status_code == 200
    assert secure(router, token).status_code == 200  # (the second time from the checked-token cache)

    expired = tokens.issue("secure", SIGNING.encode(), 3600, now=time.time() - 7200)["accessToken"]
    r = secure(router, expired)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    other = tokens.issue("demo", SIGNING.encode(), 3600)["accessToken"]
    assert "another endpoint" in secure(router, other).json()["error"]["message"]
    head, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged_payload = jwt.utils.base64url_encode(json.dumps({**claims, "exp": claims["exp"] + 99999}).encode())
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for tampered in (f"{head}.{forged_payload.decode()}.{signature}", flipped,
                     jwt.encode({**claims}, "wrong-key-wrong-key-wrong-key-123", algorithm="HS256"),
                     jwt.encode({**claims}, None, algorithm="none")):
        assert secure(router, tampered).status_code == 401
    # wrong mode: a key on a token endpoint, a token on a key endpoint
    assert secure(router, "secure-primary-key-0123").status_code == 401
    r = httpx.post(router.score_url(), headers={"Authorization": f"Bearer {token}"}, content=b"{}")
    assert r.status_code == 401
    # the admin API wants a key of that endpoint, and only for token endpoints
    assert httpx.post(f"{router.admin_url}/token/secure").status_code == 401
    assert httpx.post(f"{router.admin_url}/token/demo", headers=router.auth).status_code == 400
    assert httpx.post(f"{router.admin_url}/token/nosuch", headers=router.auth).status_code == 401  # as a wrong key
    assert token not in router.process.output() and KEY not in router.process.output()


def test_rotating_the_signing_key_invalidates_old_tokens(tmp_path: Path, sample_model_factory) -> None:
    model = sample_model_factory("--name", "m")
    config = Config(key=KEY).deployment("main", [model.url], weight=100)
    config.extra_documents = token_endpoint_documents(model.url, SIGNING)
    router = start_router(tmp_path, config)
    try:
        cli = subprocess.run([sys.executable, "-m", "router.cli", "token", "--endpoint", "secure", "--config",
                              str(router.config_path), "--ttl", "1h"], capture_output=True, text=True, timeout=30)
        assert cli.returncode == 0, cli.stderr
        old = json.loads(cli.stdout)["accessToken"]
        assert secure(router, old).status_code == 200
        config.extra_documents = token_endpoint_documents(model.url, "a-new-signing-key-0123456789abcdef")
        router.write_config(config.yaml())
        router.process.wait_for_event("config.reloaded", timeout=5)
        assert secure(router, old).status_code == 401
        new = tokens.issue("secure", b"a-new-signing-key-0123456789abcdef", 600)["accessToken"]
        assert secure(router, new).status_code == 200
    finally:
        router.stop()
