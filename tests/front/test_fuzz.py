"""Fuzzing: arbitrary documents and requests get clear errors, never a crash."""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.balancing.table import endpoint_name, scoring_paths
from router.discovery.documents import parse_documents
from router.errors import ConfigError
from router.front.scoring import RequestHead
from tests.routing import RouterProcess, router_before_sample_model

KEY = "primary-key-0123456789"
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                      max_size=4), max_leaves=20)
document = st.fixed_dictionaries({
    "apiVersion": st.sampled_from(["inference-router.dev/v1alpha1", "v1", "x"]),
    "kind": st.sampled_from(["OnlineEndpoint", "OnlineDeployment", "Secret", "Other"]),
    "metadata": st.dictionaries(st.sampled_from(["name", "namespace", "labels"]), json_values, max_size=3),
}, optional={"spec": st.dictionaries(st.sampled_from(["endpointName", "traffic", "backend", "authMode",
                                                      "requestSettings", "mirrorTraffic", "keysSecretRef",
                                                      "scoringRoute", "scaleSettings", "junk"]), json_values),
             "stringData": json_values, "data": json_values})


@settings(max_examples=300, deadline=None)
@given(st.lists(document | json_values, max_size=5))
def test_validators_answer_every_document_set_with_resources_or_config_error(docs: list[object]) -> None:
    try:
        parse_documents(docs)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


SCORING_PATH = re.compile(rb"/api/v1/(?:endpoint/([^/]+)/(?:score|swagger\.json)|service/([^/]+)/score)")
scoring_shapes = st.sampled_from([b"/api/v1/endpoint/%s/score", b"/api/v1/service/%s/score",
                                  b"/api/v1/endpoint/%s/swagger.json"])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda shape, name: shape % name, scoring_shapes, st.binary(max_size=40)))
def test_a_path_names_an_endpoint_exactly_when_it_has_a_scoring_shape(path: bytes) -> None:
    m = SCORING_PATH.fullmatch(path)
    name = endpoint_name(path)
    assert name == ((m[1] or m[2]).decode("latin-1") if m else None)
    assert name is None or path in scoring_paths(name)


header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ", min_size=1, max_size=20)
header_values = st.binary(max_size=60).filter(lambda v: b"\r" not in v and b"\n" not in v and b"\x00" not in v)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=12), st.booleans())
def test_any_parsed_header_set_gives_a_head_or_a_router_error(headers: list[tuple[str, bytes]],
                                                             keep_alive: bool) -> None:
    pairs = [(n.lower().encode(), v) for n, v in headers if n.lower() not in ("content-length", "transfer-encoding")]
    head = RequestHead(b"POST", b"/api/v1/endpoint/demo/score?x=1", pairs, keep_alive, max_body_bytes=1000)
    assert len(head.request_id) == 36
    assert head.refusal is None or head.refusal.status == 400


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with router_before_sample_model(tmp_path_factory.mktemp("fuzz"), "--header-timeout", "1", "--body-timeout", "1",
                                    concurrency=8) as r:
        yield r


VALID = (b"POST /api/v1/endpoint/demo/score?latency_ms=0 HTTP/1.1\r\nHost: x\r\n"
         b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\nx-ms-client-request-id: abc\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
TOKENS = [b"\r\n", b"\r", b"\n", b" ", b":", b"\x00", b"\xff", b"0", b"-1", b"chunked", b"Content-Length: 5\r\n",
          b"Transfer-Encoding: chunked\r\n", b"HTTP/1.0", b"%2F", b"..", b"\t", b"ffffffffffffffffffff"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice, at = rng.random(), rng.randrange(len(out) + 1)
        if choice < 0.3 and out:
            del out[at:at + rng.randint(1, 8)]
        elif choice < 0.6:
            out[at:at] = rng.choice(TOKENS)
        elif out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
    return bytes(out)


def test_malformed_http_is_answered_or_closed_and_the_router_stays_up(router: RouterProcess) -> None:
    rng = random.Random(20261128)
    statuses: dict[int, int] = {}
    for _ in range(250):  # bounded: 250 mutated requests
        data = mutate(rng, VALID)
        with socket.create_connection(("127.0.0.1", router.port), timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            try:
                while chunk := s.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
        if answer:
            assert answer.startswith(b"HTTP/1.1 "), answer[:100]
            status = int(answer[9:12])
            statuses[status] = statuses.get(status, 0) + 1
            assert status != 500, answer[:300]  # never an internal error
            assert b"Traceback" not in answer
    assert httpx.post(router.score_url(), headers=router.auth, content=b"{}").status_code == 200
    assert sum(statuses.values()) > 100 and 400 in statuses  # most were answered, many refused as malformed
    assert "Traceback" not in router.process.output()
