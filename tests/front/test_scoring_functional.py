"""The scoring path through real sockets: a router process in front of sample-model processes."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.routing import (
    Config,
    RouterProcess,
    connect,
    exchange,
    one_shot_replica,
    read_all,
    start_router,
    start_sample_model,
)


@pytest.fixture(scope="module")
def blue_green(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    """One router for the module's tests: blue 90 %, green 10 %, idle 0 %, slow (pinned only)."""
    models = [start_sample_model("--name", name) for name in ("blue-0", "blue-1", "green-0")]
    models.append(start_sample_model("--name", "slow-0", "--latency-ms", "3000"))
    blue, green, slow = models[:2], models[2], models[3]
    config = (Config().deployment("blue", [m.url for m in blue], weight=90)
              .deployment("green", [green.url], weight=10)
              .deployment("idle", [green.url], weight=0)
              .deployment("slow", [slow.url], timeout_ms=300))
    router = start_router(tmp_path_factory.mktemp("blue-green"), config)
    yield router
    router.stop()
    for model in models:
        model.process.terminate()
    for model in models:
        model.process.stop()


def score(router: RouterProcess, *, query: str = "", headers: dict[str, str] | None = None,
          **kwargs) -> httpx.Response:
    return httpx.post(router.score_url(query=query), headers={**router.auth, **(headers or {})},
                      timeout=10, **kwargs)


def assert_router_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["requestId"] == response.headers["x-request-id"]
    assert error["message"]
    return error


def test_each_url_form_reaches_the_model(blue_green: RouterProcess) -> None:
    r = httpx.post(blue_green.score_url(), headers=blue_green.auth, json={"x": 1})
    assert r.status_code == 200 and r.json()["bytes"] == len(b'{"x":1}')
    assert r.headers["azureml-model-deployment"] in ("blue", "green")
    r = httpx.post(f"{blue_green.url}/api/v1/service/demo/score", headers=blue_green.auth, json={"x": 1})
    assert r.status_code == 200 and "sha256" in r.json()
    r = httpx.get(f"{blue_green.url}/api/v1/endpoint/demo/swagger.json", headers=blue_green.auth)
    assert r.status_code == 200 and "/score" in r.json()["paths"]
    assert r.headers["azureml-model-deployment"] in ("blue", "green")


def test_traffic_split_lands_within_two_points(blue_green: RouterProcess) -> None:
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[str] = []
    body = b'{"data": [1]}'
    headers = {**blue_green.auth, "Content-Type": "application/json"}

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", blue_green.port, timeout=10)
        local: Counter[str] = Counter()
        for _ in range(n):
            conn.request("POST", "/api/v1/endpoint/demo/score", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(str(response.status))
            local[response.getheader("azureml-model-deployment")] += 1
        conn.close()
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=worker, args=(2500,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(counts.values()) == 10_000
    assert set(counts) == {"blue", "green"}  # never the 0 % deployment
    assert abs(counts["blue"] / 10_000 - 0.90) <= 0.02
    assert abs(counts["green"] / 10_000 - 0.10) <= 0.02


def test_pinning_a_deployment_including_one_without_traffic(blue_green: RouterProcess) -> None:
    for name, model in (("green", "green-0"), ("idle", "green-0"), ("blue", "blue-")):
        for _ in range(3):
            r = score(blue_green, headers={"azureml-model-deployment": name}, content=b"{}")
            assert r.status_code == 200
            assert r.headers["azureml-model-deployment"] == name
            assert r.json()["name"].startswith(model)


def test_concurrent_requests_spread_over_replicas(blue_green: RouterProcess) -> None:
    names: list[str] = []

    def one() -> None:  # each replica takes one request at a time (maxConcurrentRequestsPerInstance 1)
        r = score(blue_green, query="latency_ms=300", headers={"azureml-model-deployment": "blue"}, content=b"{}")
        names.append(r.json()["name"])

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == ["blue-0", "blue-1"]


def test_auth_accepts_either_key_and_refuses_others(blue_green: RouterProcess) -> None:
    url = blue_green.score_url()
    assert httpx.post(url, headers={"Authorization": "Bearer secondary-key-0123456789"}).status_code == 200
    assert httpx.post(url, headers={"Authorization": "bearer primary-key-0123456789"}).status_code == 200
    assert_router_error(httpx.post(url), 401, "Unauthorized")
    assert_router_error(httpx.post(url, headers={"Authorization": "Bearer nope"}), 401, "Unauthorized")
    assert_router_error(httpx.post(url, headers={"Authorization": "primary-key-0123456789"}), 401,
                        "Unauthorized")
    # the model never sees the key, and the router never logs it
    assert score(blue_green, content=b"{}").json()["headers"]["authorization"] is False
    assert "primary-key-0123456789" not in blue_green.process.output()


def test_not_found_for_unknown_endpoint_and_unknown_pinned_deployment(blue_green: RouterProcess) -> None:
    r = httpx.post(blue_green.score_url("nosuch"), headers=blue_green.auth)
    assert "nosuch" in assert_router_error(r, 404, "NotFound")["message"]
    r = score(blue_green, headers={"azureml-model-deployment": "purple"})
    assert "purple" in assert_router_error(r, 404, "NotFound")["message"]
    assert_router_error(httpx.post(f"{blue_green.url}/api/v1/endpoint/demo/other", headers=blue_green.auth),
                        404, "NotFound")
    assert_router_error(httpx.post(f"{blue_green.url}/", headers=blue_green.auth), 404, "NotFound")


def test_wrong_method_is_refused(blue_green: RouterProcess) -> None:
    r = httpx.get(blue_green.score_url(), headers=blue_green.auth)
    assert_router_error(r, 405, "MethodNotAllowed")
    assert r.headers["allow"] == "POST"


def test_gateway_timeout_for_a_slow_model(blue_green: RouterProcess) -> None:
    started = time.monotonic()
    r = score(blue_green, headers={"azureml-model-deployment": "slow"}, content=b"{}")
    assert "300 ms" in assert_router_error(r, 504, "GatewayTimeout")["message"]
    assert r.headers["azureml-model-deployment"] == "slow"
    assert time.monotonic() - started < 2.5


def test_model_answers_pass_through_unchanged(blue_green: RouterProcess) -> None:
    for status in (400, 418, 500, 503):
        r = score(blue_green, query=f"status={status}", content=b"{}")
        assert r.status_code == status
        assert r.json()["status"] == status  # the model's body, not the router's
        assert r.headers["x-model-header"] == "kept"
        assert "error" not in r.json()


def test_streamed_answer_reaches_the_client_before_the_model_finishes(blue_green: RouterProcess) -> None:
    with httpx.stream("POST", blue_green.score_url(query="stream=5&interval_ms=300"), headers=blue_green.auth,
                      content=b"{}", timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        started = time.monotonic()
        arrivals = []
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] > 0.9  # events arrived spread out, as produced


def test_ten_mebibytes_pass_intact_both_ways(blue_green: RouterProcess) -> None:
    payload = os.urandom(10 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    r = score(blue_green, query="echo=1", content=payload)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest

    def chunks():  # no Content-Length: the request goes chunked
        for i in range(0, len(payload), 256 * 1024):
            yield payload[i:i + 256 * 1024]

    r = score(blue_green, query="echo=1", content=chunks())
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest
    r = score(blue_green, content=payload)
    assert r.json()["sha256"] == digest and r.json()["bytes"] == len(payload)
    r = score(blue_green, query=f"size={len(payload)}", content=b"{}")
    assert len(r.content) == len(payload)


def test_request_id_rules(blue_green: RouterProcess) -> None:
    guid = str(uuid.uuid4())
    r = score(blue_green, headers={"x-request-id": guid}, content=b"{}")
    assert r.headers["x-request-id"] == guid
    assert r.json()["headers"]["x-request-id"] == guid
    r = score(blue_green, headers={"x-request-id": "not-a-guid"}, content=b"{}")
    new = r.headers["x-request-id"]
    assert new != "not-a-guid" and uuid.UUID(new)
    assert r.json()["headers"]["x-request-id"] == new
    r = score(blue_green, headers={"x-ms-client-request-id": "client_ID-42"}, content=b"{}")
    assert r.headers["x-ms-client-request-id"] == "client_ID-42"
    assert r.json()["headers"]["x-ms-client-request-id"] == "client_ID-42"
    for bad in ("has space", "x" * 41, "semi;colon"):
        r = score(blue_green, headers={"x-ms-client-request-id": bad}, content=b"{}")
        assert "x-ms-client-request-id" in assert_router_error(r, 400, "BadRequest")["message"]
        assert "x-ms-client-request-id" not in r.headers
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = score(blue_green, headers={"traceparent": traceparent}, content=b"{}")
    sent = r.json()["headers"]["traceparent"]  # the same trace, with the router's span as the parent
    assert sent[:36] == traceparent[:36] and sent[52:] == traceparent[52:] and sent[36:52] != traceparent[36:52]
    ids = {score(blue_green, content=b"{}").headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


def test_forwarded_headers_are_set_and_hop_by_hop_dropped(blue_green: RouterProcess) -> None:
    r = score(blue_green, headers={"x-forwarded-for": "10.9.9.9", "x-forwarded-proto": "https",
                                   "Host": "scoring.example", "Connection": "keep-alive, x-secret-hop",
                                   "x-secret-hop": "1"}, content=b"{}")
    seen = r.json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "scoring.example"
    assert seen["host"].startswith("127.0.0.1:")
    assert "connection" not in r.headers or r.headers["connection"] == "keep-alive"
    assert "keep-alive" not in r.headers and "transfer-encoding" not in r.headers


def test_hop_by_hop_headers_never_reach_the_replica(tmp_path: Path) -> None:
    seen: list[bytes] = []
    with one_shot_replica(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", seen) as url:
        router = start_router(tmp_path, Config().deployment("raw", [url], weight=100))
        try:
            r = httpx.post(router.score_url(), content=b"{}", timeout=10, headers={
                **router.auth, "Host": "scoring.example", "Connection": "keep-alive, x-secret-hop, X-OTHER-hop",
                "x-secret-hop": "1", "X-Other-Hop": "2", "Keep-Alive": "timeout=5", "TE": "trailers",
                "Proxy-Authorization": "Basic eA==", "x-kept": "yes", "X-Cased-Name": "kept as sent"})
            assert r.status_code == 200 and r.text == "ok"
        finally:
            router.stop()
    names = {line.split(b":")[0].lower() for line in seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")[1:]}
    assert names.isdisjoint({b"connection", b"keep-alive", b"x-secret-hop", b"x-other-hop", b"te",
                             b"proxy-authorization", b"authorization"})
    assert b"\r\nX-Cased-Name: kept as sent\r\n" in seen[0]  # header names pass on as they came
    assert {b"x-kept", b"x-forwarded-host", b"x-request-id"} <= names
    assert b"x-forwarded-host: scoring.example" in seen[0]


def through_one_shot_replica(tmp_path: Path, answer: bytes, request: bytes) -> tuple[bytes, bytes]:
    """`request` (line and headers, less auth) to a router in front of a replica that answers `answer`;
    the head and body the client gets, read until the router closes the connection."""
    with one_shot_replica(answer) as url:
        router = start_router(tmp_path, Config().deployment("raw", [url], weight=100))
        try:
            auth = b"Authorization: Bearer " + router.key.encode()
            received = exchange(router.port, request + b"Content-Length: 2\r\n" + auth + b"\r\n\r\n{}", timeout=10)
        finally:
            router.stop()
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


SCORE_CLOSE = b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


def test_the_replicas_own_header_lines_pass_through_less_hop_by_hop_and_router_owned(tmp_path: Path) -> None:
    answer = (b"HTTP/1.1 201 Made It\r\nX-Model-Version: 7\r\nCONNECTION: x-model-hop\r\nKeep-Alive: timeout=9\r\n"
              b"X-Request-ID: replica-chose-this\r\nAzureml-Model-Deployment: spoofed\r\nSet-Cookie: a=1\r\n"
              b"Set-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok")
    head, body = through_one_shot_replica(tmp_path, answer, SCORE_CLOSE)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 201 Made It" and body == b"ok"
    names = [line.split(b":")[0].lower() for line in lines[1:]]
    assert b"X-Model-Version: 7" in lines[1:] and names.count(b"set-cookie") == 2  # as sent, in their order
    assert b"keep-alive" not in names and lines[-1] == b"connection: close" and names.count(b"connection") == 1
    assert names.count(b"x-request-id") == 1 and b"x-request-id: replica-chose-this" not in lines
    assert b"azureml-model-deployment: raw" in lines and names.count(b"azureml-model-deployment") == 1


def test_empty_lines_before_the_replicas_status_line_are_not_passed_on(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"
    head, body = through_one_shot_replica(tmp_path, answer, SCORE_CLOSE)
    assert head.split(b"\r\n")[:3] == [b"HTTP/1.1 200 OK", b"X-A: 1", b"Content-Length: 2"] and body == b"ok"


def test_an_http10_client_asking_to_keep_alive_by_proxy_connection_never_gets_chunks(tmp_path: Path) -> None:
    head, body = through_one_shot_replica(
        tmp_path, b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
        b"POST /api/v1/endpoint/demo/score HTTP/1.0\r\nProxy-Connection: keep-alive\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding" not in head.lower()
    assert body == b"until the end"  # the end of the connection ends the answer


def test_bad_gateway_for_a_closed_port(refused_port: int, tmp_path: Path) -> None:
    router = start_router(tmp_path, Config().deployment("gone", [f"http://127.0.0.1:{refused_port}"], weight=100))
    try:
        r = httpx.post(router.score_url(), headers=router.auth, content=b"{}")
        assert "cannot connect" in assert_router_error(r, 502, "BadGateway")["message"]
        assert r.headers["azureml-model-deployment"] == "gone"
    finally:
        router.stop()


@pytest.mark.parametrize(("answer", "status", "expected"), [
    (b"", 502, "closed the connection"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", 0, ""),  # cut mid-body: connection cut
    (b"SPDY/9 what\r\n\r\n", 502, "invalid answer"),
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end", 200, "until the end"),
    (b"HTTP/1.1 200 OK\r\nx-huge: " + b"h" * 70_000 + b"\r\ncontent-length: 0\r\n\r\n", 502,
     "headers are over 65536 bytes"),
])
def test_replica_failures_and_close_delimited_answers(tmp_path: Path, answer: bytes, status: int,
                                                       expected: str) -> None:
    with one_shot_replica(answer) as url:
        router = start_router(tmp_path, Config().deployment("oneshot", [url], weight=100))
        try:
            if status == 0:
                with pytest.raises(httpx.RemoteProtocolError):
                    httpx.post(router.score_url(), headers=router.auth, content=b"{}", timeout=10)
            elif status == 200:
                r = httpx.post(router.score_url(), headers=router.auth, content=b"{}", timeout=10)
                assert r.status_code == 200 and r.text == expected
                assert r.headers["azureml-model-deployment"] == "oneshot"
            else:
                r = httpx.post(router.score_url(), headers=router.auth, content=b"{}", timeout=10)
                assert expected in assert_router_error(r, status, "BadGateway")["message"]
        finally:
            router.stop()


def test_service_unavailable_without_replicas_and_no_traffic_is_not_found(tmp_path: Path) -> None:
    router = start_router(tmp_path, Config().deployment("empty", [], weight=100))
    try:
        r = httpx.post(router.score_url(), headers=router.auth, content=b"{}")
        assert_router_error(r, 503, "ServiceUnavailable")
        assert int(r.headers["retry-after"]) >= 1
        router.write_config(Config().deployment("empty", [], weight=0).yaml())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = httpx.post(router.score_url(), headers=router.auth, content=b"{}")
            if r.status_code == 404:
                break
            time.sleep(0.1)
        assert "no deployment with traffic" in assert_router_error(r, 404, "NotFound")["message"]
    finally:
        router.stop()


def test_payload_too_large(sample_model_factory, tmp_path: Path) -> None:
    model = sample_model_factory("--name", "m")
    router = start_router(tmp_path, Config().deployment("main", [model.url], weight=100),
                          "--max-request-body-bytes", "1000")
    try:
        r = httpx.post(router.score_url(), headers=router.auth, content=b"x" * 1001)
        assert_router_error(r, 413, "PayloadTooLarge")
        r = httpx.post(router.score_url(), headers=router.auth, content=iter([b"x" * 600, b"x" * 600]))
        assert_router_error(r, 413, "PayloadTooLarge")
        assert httpx.post(router.score_url(), headers=router.auth, content=b"x" * 1000).status_code == 200
    finally:
        router.stop()


@pytest.mark.parametrize("request_bytes", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
    b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Authorization: Bearer primary-key-0123456789\r\n\r\nzz\r\n",
    b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
])
def test_malformed_requests_get_400_and_a_closed_connection(blue_green: RouterProcess,
                                                            request_bytes: bytes) -> None:
    answer = exchange(blue_green.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"]["code"] == "BadRequest"
    assert httpx.post(blue_green.score_url(), headers=blue_green.auth).status_code == 200


def test_pipelined_requests_are_answered_in_order(blue_green: RouterProcess) -> None:
    one = (f"POST /api/v1/endpoint/demo/score?latency_ms=%d HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: Bearer {blue_green.key}\r\nazureml-model-deployment: blue\r\n"
           f"x-ms-client-request-id: n%d\r\nContent-Length: 2\r\n\r\n{{}}")
    data = "".join(one % (latency, i) for i, latency in enumerate((200, 0, 50))).encode()
    data += b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = exchange(blue_green.port, data)
    ids = [line.split(b": ")[1] for line in answer.split(b"\r\n") if line.startswith(b"x-ms-client-request-id")]
    assert ids == [b"n0", b"n1", b"n2"]
    assert answer.count(b"HTTP/1.1 200 OK") == 3 and b"HTTP/1.1 404" in answer


def test_expect_continue_and_http10(blue_green: RouterProcess) -> None:
    head = (f"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {blue_green.key}\r\n"
            f"Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n").encode()
    with connect(blue_green.port) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"{}")
        rest = read_all(s)
    assert rest.startswith(b"HTTP/1.1 200 OK")
    answer = exchange(blue_green.port, (f"POST /api/v1/endpoint/demo/score?stream=2&interval_ms=10 HTTP/1.0\r\n"
                                        f"Authorization: Bearer {blue_green.key}\r\nContent-Length: 2\r\n\r\n{{}}")
                      .encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert body.count(b"data:") == 2  # the end of the connection ends the answer
