"""Known traffic through a real router, then the exact metrics it exports and its access log lines."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.routing import Config, RouterProcess, connect, start_router
from tests.scrape import Scrape, wait_for

REQUESTS = "inference_router_requests_total"
REJECTIONS = "inference_router_rejections_total"
BODY = b"x" * 100


def access_lines(router: RouterProcess, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    """The access log lines (stdout, flushed every 100 ms), once `count` have come."""
    deadline = time.monotonic() + timeout
    while len(router.process.events_named("access")) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and no more than that
    return router.process.events_named("access")


def per_deployment(metrics: Scrape, name: str) -> dict[str, float]:
    return {dep: v for (ep, dep), v in metrics.series(name, "endpoint", "deployment").items() if ep == "demo"}


def test_known_traffic_gives_exact_metrics_and_access_log_lines(sample_model_factory, tmp_path: Path,
                                                               refused_port: int) -> None:
    model = sample_model_factory("--name", "m")
    config = Config()
    config.deployment("fast", [model.url], weight=100, concurrency=4)
    config.deployment("shadow", [model.url], concurrency=4)
    config.deployment("slow", [model.url], concurrency=1, queue_wait_ms=0)
    config.deployment("queued", [model.url], concurrency=1, queue_wait_ms=5000)
    config.deployment("tight", [model.url], timeout_ms=300)
    config.deployment("flaky", [f"http://127.0.0.1:{refused_port}", model.url], concurrency=2)
    config.deployment("empty", [])
    config.mirror = {"shadow": 50}
    router = start_router(tmp_path, config)
    client = httpx.Client(timeout=15)

    def post(deployment: str = "", query: str = "", headers: dict[str, str] | None = None,
             auth: dict[str, str] | None = None) -> httpx.Response:
        pin = {"azureml-model-deployment": deployment} if deployment else {}
        return client.post(router.score_url(query=query), content=BODY,
                           headers={**(router.auth if auth is None else auth), **pin, **(headers or {})})

    try:
        # 4 successes on the traffic split; every second one is mirrored (50 %)
        guid = str(uuid.uuid4())
        answers = [post(headers={"x-request-id": guid, "x-ms-client-request-id": "client-7"})]
        answers += [post() for _ in range(3)]
        assert [r.status_code for r in answers] == [200] * 4
        # 3 refused keys
        assert post(auth={"Authorization": "Bearer wrong-key-1234"}).status_code == 401
        assert post(auth={"Authorization": "Bearer another-wrong-key"}).status_code == 401
        assert post(auth={}).status_code == 401
        # slow: its one slot busy and no queue wait, so 2 refused (503); queued: the second waits in the queue
        background: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda d=d, q=q: background.append(post(d, q)))
                   for d, q in (("slow", "latency_ms=1500"), ("queued", "latency_ms=2000"))]
        for t in threads:
            t.start()
        busy = wait_for(router, lambda m: per_deployment(m, "inference_router_in_flight").get("slow") == 1
                        and per_deployment(m, "inference_router_in_flight").get("queued") == 1)
        assert per_deployment(busy, "inference_router_in_flight") == {
            "fast": 0, "shadow": 0, "slow": 1, "queued": 1, "tight": 0, "flaky": 0, "empty": 0}
        refused = [post("slow") for _ in range(2)]
        assert [r.status_code for r in refused] == [503, 503]
        waiter = threading.Thread(target=lambda: background.append(post("queued")))
        waiter.start()
        waiting = wait_for(router, lambda m: per_deployment(m, "inference_router_queue_length")["queued"] == 1)
        assert per_deployment(waiting, "inference_router_queue_length")["queued"] == 1
        for t in [*threads, waiter]:
            t.join(15)
        assert sorted(r.status_code for r in background) == [200, 200, 200]
        # a replica too slow for the deployment's timeout: 504
        assert post("tight", "latency_ms=3000").status_code == 504
        # a client that goes away before its answer: 499
        with connect(router.port) as s:
            s.sendall(b"POST /api/v1/endpoint/demo/score?latency_ms=2000 HTTP/1.1\r\nHost: r\r\n"
                      b"Authorization: Bearer " + router.key.encode() + b"\r\nazureml-model-deployment: fast\r\n"
                      b"Content-Length: 2\r\n\r\n{}")
            wait_for(router, lambda m: per_deployment(m, "inference_router_in_flight")["fast"] == 1)
        # a replica that refuses connections: retried on the other one
        assert [post("flaky").status_code for _ in range(6)] == [200] * 6
        # a deployment without replicas: 503 too, for another reason
        assert post("empty").status_code == 503
        # an endpoint that does not exist
        assert client.post(f"{router.url}/api/v1/endpoint/nosuch/score", headers=router.auth).status_code == 404

        metrics = wait_for(router, lambda m: m.value(REQUESTS, endpoint="demo", deployment="fast", code="499") == 1)
        retried = len(router.process.events_named("request.retried"))
        assert retried >= 1  # the refusing replica is the cheaper pick once the other has a latency

        assert metrics.series(REQUESTS, "endpoint", "deployment", "code") == {
            ("demo", "fast", "200"): 4, ("demo", "fast", "499"): 1, ("demo", "", "401"): 3,
            ("demo", "slow", "200"): 1, ("demo", "slow", "503"): 2, ("demo", "queued", "200"): 2,
            ("demo", "tight", "504"): 1, ("demo", "flaky", "200"): 6, ("demo", "empty", "503"): 1, ("", "", "404"): 1}
        assert metrics.series(REJECTIONS, "endpoint", "deployment", "reason") == {
            ("demo", "", "auth"): 3, ("demo", "slow", "overload"): 2, ("demo", "tight", "timeout"): 1,
            ("demo", "empty", "no_replica"): 1, ("", "", "not_found"): 1}
        retries = metrics.series("inference_router_retries_total", "endpoint", "deployment")
        assert retries.pop(("demo", "flaky")) == retried and set(retries.values()) == {0}
        assert metrics.series("inference_router_mirror_requests_total", "result") == {("sent",): 2, ("dropped",): 0}

        count = "inference_router_{}_seconds_count"
        assert per_deployment(metrics, count.format("request_duration")) == {
            "fast": 5, "": 3, "slow": 3, "queued": 2, "tight": 1, "flaky": 6, "empty": 1}
        assert metrics.value(count.format("request_duration"), endpoint="", deployment="") == 1
        dispatched = {"fast": 5, "slow": 1, "queued": 2, "tight": 1, "flaky": 6}
        assert per_deployment(metrics, count.format("upstream_duration")) == dispatched
        assert per_deployment(metrics, count.format("queue_wait")) == dispatched

        def bucket(name: str, deployment: str, le: str) -> float | None:
            return metrics.value(f"inference_router_{name}_seconds_bucket", endpoint="demo",
                                 deployment=deployment, le=le)

        assert (bucket("request_duration", "slow", "1"), bucket("request_duration", "slow", "2.5")) == (2, 3)
        assert (bucket("request_duration", "tight", "0.25"), bucket("request_duration", "tight", "0.5")) == (0, 1)
        assert (bucket("queue_wait", "queued", "1"), bucket("queue_wait", "queued", "2.5")) == (1, 2)
        assert (bucket("upstream_duration", "slow", "1"), bucket("upstream_duration", "slow", "2.5")) == (0, 1)

        assert set(per_deployment(metrics, "inference_router_in_flight").values()) == {0}
        assert set(per_deployment(metrics, "inference_router_queue_length").values()) == {0}
        replicas = metrics.series("inference_router_replicas", "endpoint", "deployment", "state")
        assert replicas[("demo", "fast", "ready")] == 1 and replicas[("demo", "fast", "ejected")] == 0
        assert replicas[("demo", "flaky", "ready")] + replicas[("demo", "flaky", "ejected")] == 2
        assert replicas[("demo", "empty", "ready")] == 0
        assert metrics.value("inference_router_config_reloads_total") == 0
        assert metrics.value("inference_router_config_rejections_total") == 0
        assert metrics.value("inference_router_access_log_dropped_lines_total") == 0
        assert abs(metrics.value("inference_router_discovery_last_sync_timestamp_seconds") - time.time()) < 60

        lines = access_lines(router, 22)
        assert len(lines) == 22 == sum(v for (*_, code), v in metrics.series(REQUESTS, "endpoint", "deployment",
                                                                                 "code").items())
        for line in lines:
            assert list(line) == ["time", "event", "request_id", "client_request_id", "trace_id", "client",
                                  "method", "endpoint", "deployment", "replica", "status", "bytes_in", "bytes_out",
                                  "queue_ms", "upstream_ms", "total_ms", "retries", "error"]
            assert line["client"] == "127.0.0.1" and abs(line["time"] - time.time()) < 60
        first = next(line for line in lines if line["request_id"] == guid)
        assert first["trace_id"] == answers[0].json()["headers"]["traceparent"][3:35]
        assert first == {**first, "client_request_id": "client-7", "method": "POST", "endpoint": "demo",
                         "deployment": "fast", "replica": model.url, "status": 200, "bytes_in": len(BODY),
                         "bytes_out": len(answers[0].content), "retries": 0, "error": None}
        assert 0 <= first["queue_ms"] <= first["total_ms"] and 0 < first["upstream_ms"] <= first["total_ms"]

        def where(**fields: Any) -> list[dict[str, Any]]:
            return [line for line in lines if all(line[k] == v for k, v in fields.items())]

        unauthorized = where(status=401)
        assert len(unauthorized) == 3
        assert all(line == {**line, "endpoint": "demo", "deployment": None, "replica": None, "queue_ms": None,
                            "upstream_ms": None, "error": "Unauthorized", "retries": 0} for line in unauthorized)
        overloaded = where(status=503, deployment="slow")
        assert len(overloaded) == 2 and all(line == {**line, "deployment": "slow", "replica": None,
                                                      "upstream_ms": None, "error": "ServiceUnavailable"}
                                             for line in overloaded)
        [timed_out] = where(status=504)
        assert timed_out == {**timed_out, "deployment": "tight", "replica": model.url, "error": "GatewayTimeout"}
        assert 290 <= timed_out["upstream_ms"] <= timed_out["total_ms"] < 1500
        [gone] = where(status=499)
        assert gone == {**gone, "deployment": "fast", "error": None, "bytes_out": 0}
        [slow] = where(deployment="slow", status=200)
        assert slow["upstream_ms"] >= 1500
        assert max(line["queue_ms"] for line in where(deployment="queued")) >= 1000
        assert sum(line["retries"] for line in where(deployment="flaky")) == retried
        [missing] = where(status=404)
        assert missing == {**missing, "endpoint": None, "deployment": None, "error": "NotFound"}

        output = router.process.output()
        for secret in (router.key, "wrong-key-1234", "another-wrong-key", "Bearer"):
            assert secret not in output
        assert json.loads(json.dumps(lines)) == lines
    finally:
        client.close()
        router.stop()
