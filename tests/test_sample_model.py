"""The sample model, run as a real subprocess and spoken to over loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.helpers import ManagedProcess, ProcessError, SampleModel, start_process
from tests.routing import connect, read_until

MODEL = [sys.executable, "-m", "router.sample_model"]


@pytest.fixture(scope="module")
def model() -> Iterator[ManagedProcess]:
    process = start_process([*MODEL, "--port", "0", "--name", "t"])
    yield process
    assert process.stop() == 0, process.output()


def client_for(port: int) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False)


@pytest.fixture
def client(model: ManagedProcess) -> Iterator[httpx.Client]:
    with client_for(model.ready["port"]) as c:
        yield c


def test_listening_line(model: ManagedProcess) -> None:
    assert model.ready["event"] == "listening"
    assert model.ready["name"] == "t"
    assert model.ready["host"] == "127.0.0.1"
    assert isinstance(model.ready["port"], int) and model.ready["port"] > 0
    assert json.loads(model.lines[0]) == model.ready


def test_liveness(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.json() == {"status": "alive", "name": "t"}


def test_swagger(client: httpx.Client) -> None:
    r = client.get("/swagger.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["swagger"] == "2.0"
    assert doc["info"]["title"] == "t"
    post = doc["paths"]["/score"]["post"]
    assert "application/json" in post["consumes"]
    assert "200" in post["responses"]


def test_score_fields_and_sha256(client: httpx.Client) -> None:
    body = json.dumps({"data": [[1, 2, 3]]}).encode()
    headers = {
        "content-type": "application/json",
        "authorization": "Bearer secret-key",
        "x-request-id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "x-ms-client-request-id": "client-1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "x-forwarded-for": "10.0.0.1",
    }
    r = client.post("/score", content=body, headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    answer = r.json()
    assert answer["name"] == "t"
    assert answer["bytes"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    seen = answer["headers"]
    assert seen["authorization"] is True
    assert "secret-key" not in r.text
    for key in ("content-type", "x-request-id", "x-ms-client-request-id", "traceparent", "x-forwarded-for"):
        assert seen[key] == headers[key]
    assert seen["host"] == f"127.0.0.1:{client.base_url.port}"
    assert seen["x-forwarded-proto"] is None

    r = client.post("/score")
    assert r.json()["bytes"] == 0
    assert r.json()["sha256"] == hashlib.sha256(b"").hexdigest()
    assert r.json()["headers"]["authorization"] is False


def test_score_hashes_a_chunked_body(client: httpx.Client) -> None:
    pieces = [os.urandom(100_000) for _ in range(5)]
    r = client.post("/score", content=iter(pieces))
    assert r.json()["bytes"] == 500_000
    assert r.json()["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_latency_injection(sample_model_factory: Callable[..., SampleModel]) -> None:
    slow = sample_model_factory("--name", "slow", "--latency-ms", "300")
    assert slow.name == "slow" and slow.url == f"http://127.0.0.1:{slow.port}"
    with httpx.Client(base_url=slow.url, timeout=30, trust_env=False) as c:
        assert c.get("/").status_code == 200  # a connection, so the timings below are of the requests
        started = time.monotonic()
        assert c.post("/score", content=b"x").status_code == 200
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        assert c.post("/score", params={"latency_ms": 0}).status_code == 200
        assert time.monotonic() - started < 0.3


def test_latency_per_request(client: httpx.Client) -> None:
    started = time.monotonic()
    assert client.post("/score", params={"latency_ms": 200}).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fail_rate_one(sample_model_factory: Callable[..., SampleModel]) -> None:
    failing = sample_model_factory("--name", "bad", "--fail-rate", "1.0")
    with httpx.Client(base_url=failing.url, timeout=30, trust_env=False) as c:
        for _ in range(5):
            r = c.post("/score", content=b"{}")
            assert r.status_code == 500
            assert r.json() == {"error": "injected failure", "name": "bad"}
        assert c.get("/").status_code == 200  # liveness never fails


@pytest.mark.parametrize("status", [200, 418, 500, 503])
def test_status_hook(client: httpx.Client, status: int) -> None:
    r = client.post("/score", params={"status": status}, content=b"ignored")
    assert r.status_code == status
    assert r.json() == {"name": "t", "status": status}
    assert r.headers["x-model-header"] == "kept"
    assert r.headers["content-type"] == "application/json"


def test_status_hook_without_body(client: httpx.Client) -> None:
    r = client.post("/score", params={"status": 204})
    assert r.status_code == 204 and r.content == b""
    assert r.headers["x-model-header"] == "kept"


@pytest.mark.parametrize("size", [1 << 20, 10 << 20])
def test_echo(client: httpx.Client, size: int) -> None:
    body = os.urandom(size)
    r = client.post("/score", params={"echo": 1}, content=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers.get("transfer-encoding") == "chunked"
    assert r.content == body


def test_echo_duplex_streams_while_the_request_is_still_coming(model: ManagedProcess) -> None:
    first, rest = os.urandom(4096), os.urandom(1 << 20)
    with connect(model.ready["port"], timeout=10) as sock:
        head = (
            f"POST /score?echo=duplex HTTP/1.1\r\nHost: t\r\nContent-Length: {len(first) + len(rest)}\r\n\r\n"
        )
        sock.sendall(head.encode() + first)
        received = read_until(sock, lambda got: first in got)  # the echo of the first piece, before the rest is sent
        assert received.startswith(b"HTTP/1.1 200 ")
        sender = threading.Thread(target=sock.sendall, args=(rest,))
        sender.start()
        received = read_until(sock, lambda got: got.endswith(b"\r\n0\r\n\r\n"), received)
        sender.join(10)
    response_head, _, chunked = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in response_head.lower()
    body, rest_of_stream = b"", chunked
    while True:
        size_line, _, rest_of_stream = rest_of_stream.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest_of_stream = body + rest_of_stream[:size], rest_of_stream[size + 2 :]
    assert body == first + rest


def test_sse_events_arrive_as_they_are_made(client: httpx.Client) -> None:
    events: list[tuple[float, dict[str, int]]] = []
    started = time.monotonic()
    with client.stream("POST", "/score", params={"stream": 5, "interval_ms": 200}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers.get("transfer-encoding") == "chunked"
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append((time.monotonic() - started, json.loads(line[len("data: ") :])))
    total = time.monotonic() - started
    assert [data for _, data in events] == [{"i": k} for k in range(5)]
    assert total >= 1.0
    assert events[0][0] < total - 0.5, (events, total)


def test_sse_default_interval(client: httpx.Client) -> None:
    started = time.monotonic()
    r = client.post("/score", params={"stream": 2})
    assert r.text == 'data: {"i": 0}\n\ndata: {"i": 1}\n\n'
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 1_000_000])
def test_size_hook(client: httpx.Client, size: int) -> None:
    r = client.post("/score", params={"size": size})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == str(size)
    assert len(r.content) == size


@pytest.mark.parametrize(
    "query",
    [
        {"status": "abc"},
        {"status": "99"},
        {"status": "600"},
        {"latency_ms": "-1"},
        {"latency_ms": "nan"},
        {"echo": "yes"},
        {"stream": "1.5"},
        {"stream": "-2"},
        {"stream": "2", "interval_ms": "x"},
        {"size": "big"},
        {"size": "-1"},
        {"size": str(64 * 1024 * 1024 + 1)},  # capped: any key holder reaches the hooks through a router
        {"size": "9" * 5000},
        {"latency_ms": "60001"},
        {"stream": "10001", "interval_ms": "0"},
        {"stream": "601", "interval_ms": "100"},
        {"status": "500", "echo": "1"},
    ],
)
def test_bad_query_is_400(client: httpx.Client, query: dict[str, str]) -> None:
    r = client.post("/score", params=query, content=b"x")
    assert r.status_code == 400
    answer = r.json()
    assert answer["name"] == "t"
    assert isinstance(answer["error"], str) and answer["error"]


def test_keep_alive_survives_an_unread_body(client: httpx.Client) -> None:
    for _ in range(3):  # the status hook does not read the body; the connection must stay usable
        assert client.post("/score", params={"status": 503}, content=os.urandom(300_000)).status_code == 503
        assert client.post("/score", content=b"abc").json()["bytes"] == 3


@pytest.mark.parametrize("value", ["2", "-0.1", "abc", "nan"])
def test_bad_fail_rate_on_the_command_line(value: str) -> None:
    done = subprocess.run(
        [*MODEL, "--port", "0", "--fail-rate", value], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "--fail-rate" in done.stderr and "between 0" in done.stderr
    assert "listening" not in done.stdout


def test_port_in_use_exits_1(model: ManagedProcess) -> None:
    done = subprocess.run(
        [*MODEL, "--port", str(model.ready["port"])], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "cannot listen" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(sig: signal.Signals) -> None:
    process = start_process([*MODEL, "--port", "0"])
    try:
        with client_for(process.ready["port"]) as c:
            assert c.get("/").status_code == 200
        os.kill(process.pid, sig)
        assert process.wait(timeout=10) == 0, process.output()
    finally:
        process.stop()


def test_signal_right_after_the_listening_line() -> None:
    process = start_process([*MODEL, "--port", "0"])
    assert process.stop() == 0, process.output()


def test_start_process_reports_an_early_exit_with_its_output() -> None:
    with pytest.raises(ProcessError, match=r"exited with code 2(.|\n)*--fail-rate"):
        start_process([*MODEL, "--port", "0", "--fail-rate", "7"])


def test_start_process_times_out_and_stops_the_process() -> None:
    script = "import json, time; print('plain'); print(json.dumps({'event': 'other'})); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(ProcessError, match=r"timed out(.|\n)*plain") as caught:
        start_process([sys.executable, "-c", script], timeout=1)
    assert time.monotonic() - started < 10
    assert '{"event": "other"}' in str(caught.value)


def test_the_help_says_it_is_for_demos() -> None:
    done = subprocess.run([sys.executable, "-m", "router.cli", "sample-model", "--help"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "for demos and tests" in done.stdout and "do not serve it publicly" in done.stdout


def test_a_capped_size_names_the_cap(client: httpx.Client) -> None:
    r = client.post("/score", params={"size": 1 << 30})
    assert r.status_code == 400 and r.json()["error"] == f"size must be between 0 and {64 << 20}, got '{1 << 30}'"
