"""Replica addresses from EndpointSlices, through a real router process: whoever can write a slice must not
point scoring traffic at the router's own ports, a metadata service, or across namespaces."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import SampleModel
from tests.kube.cluster import endpoint_slice, seed_demo, start_kube_router, wait_until
from tests.kube.fake_apiserver import FakeApiServer

KEY = "key-addresses-0123456789"


def test_a_slice_at_the_routers_own_port_or_in_another_namespace_never_becomes_a_replica(
        api_server: FakeApiServer, kubeconfig: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    model = sample_model_factory("--name", "elsewhere")
    router = start_kube_router(kubeconfig, "--debug-endpoints", loopback_replicas=False)
    try:
        seed_demo(api_server, KEY)
        # the slice of a Service of the same name in another namespace, at a real model
        api_server.create("endpointslices", endpoint_slice("demo-blue-0", "demo-blue", model.port,
                                                           namespace="elsewhere"))
        # and one in the deployment's namespace, at the router's own admin port
        api_server.create("endpointslices", endpoint_slice("demo-blue-evil", "demo-blue", router.admin_port))
        router.wait_ready()

        def ready_message() -> str:
            status = api_server.get("onlinedeployments", "blue").get("status") or {}
            return next((c["message"] for c in status.get("conditions", []) if c["type"] == "Ready"), "")

        wait_until(lambda: "demo-blue-evil" in ready_message(), 5, "the refusal in the deployment's status")
        assert ready_message() == ("EndpointSlice default/demo-blue-evil: address 127.0.0.1 refused: a loopback "
                                   "address (--allow-loopback-replicas admits it, for replicas on the router's "
                                   "machine); no ready replica in the EndpointSlices of Service 'demo-blue'")
        answer = router.score("demo", KEY)
        assert answer.status_code == 503, answer.text
        assert "127.0.0.1" not in answer.text
        state = httpx.get(f"http://127.0.0.1:{router.admin_port}/debug/deployments", timeout=5).json()
        assert [r["url"] for value in state.values() for r in value["replicas"]] == []
        assert httpx.get(f"{model.url}/stats", timeout=5).json()["served"] == 0
        refused = [json.loads(line) for line in router.process.lines if "kubernetes.replica_refused" in line]
        assert [e["problem"].split(":")[0] for e in refused] == ["EndpointSlice default/demo-blue-evil"]
    finally:
        router.stop()
