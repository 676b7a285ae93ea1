"""Three (and four) router processes on 127.0.0.1-4 with the same ports, as the pods of one deployment.

The data plane does not use the split yet: these tests hold the routers to their membership and
the split, read from each router's peer port and /debug/deployments.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers import SampleModel, run_to_exit
from tests.peers.cluster import PEER_KEY, PeerCluster, loopback, peak_in_flight, peer_cluster, since
from tests.routing import Config, start_router, wait_until


@pytest.fixture
def config() -> Config:
    # 2 replicas x 2 slots + 1 replica x 3 slots: 7 slots, not a multiple of 3 or 2
    return (Config().deployment("blue", ["http://127.0.0.1:5001", "http://127.0.0.1:5002"], weight=100,
                                concurrency=2)
            .deployment("green", ["http://127.0.0.1:5003"], concurrency=3))


def test_three_routers_agree_on_the_split_and_show_it(tmp_path: Path, config: Config) -> None:
    with peer_cluster(tmp_path, config) as routers:
        for n in (1, 2, 3):
            routers.start(n)
        routers.wait_agreed([1, 2, 3])
        assert routers.held([1, 2, 3]) == {("default/blue", "http://127.0.0.1:5001"): 2,
                                           ("default/blue", "http://127.0.0.1:5002"): 2,
                                           ("default/green", "http://127.0.0.1:5003"): 3}
        # each says how many slots it has free: where a router without one would forward a request
        views = {n: routers.view(n) for n in (1, 2, 3)}
        wait_until(lambda: routers.view(1)["peer_free_slots"] == {
            routers.identity(n): {d: sum(s["usable"] for s in replicas.values())
                                  for d, replicas in views[n]["slots"].items()} for n in (2, 3)},
                   5, "router 1 knows the others' free slots")
        debug = httpx.get(f"{routers.routers[2].admin_url}/debug/deployments", timeout=5).json()
        assert debug["peers"]["me"] == routers.identity(2)
        assert debug["peers"]["peers"] == {routers.identity(1): "member", routers.identity(3): "member"}
        assert "default/blue" in debug and "replicas" in debug["default/blue"]
        metrics = httpx.get(f"{routers.routers[2].admin_url}/metrics", timeout=5).text
        assert 'inference_router_peers{state="member"} 2.0' in metrics
        assert 'inference_router_peer_owned_slots{deployment="default/blue"}' in metrics


def test_a_router_killed_loses_its_share_to_the_others_only_after_the_timeout(tmp_path: Path,
                                                                              config: Config) -> None:
    with peer_cluster(tmp_path, config) as routers:
        for n in (1, 2, 3):
            routers.start(n)
        routers.wait_agreed([1, 2, 3])
        killed = time.monotonic()
        routers.routers[3].process.proc.kill()  # SIGKILL, by its PID
        gone = routers.identity(3)
        while since(killed) < 0.6 * routers.timeout:  # too early to tell a crash from a slow peer
            for n in (1, 2):
                assert gone in routers.view(n)["members"], f"router {n} dropped router 3 before the timeout"
            time.sleep(0.05)
        routers.wait_agreed([1, 2], timeout=routers.timeout + 5)
        took = since(killed)
        # a timeout after the last heartbeat heard, which may have come a beat or two before the kill
        assert 0.6 * routers.timeout <= took <= routers.timeout + 5, took
        assert sum(routers.held([1, 2]).values()) == 7


def test_a_fourth_router_joins_and_one_leaves_gracefully(tmp_path: Path, config: Config) -> None:
    with peer_cluster(tmp_path, config, hosts=4) as routers:
        for n in (1, 2, 3):
            routers.start(n)
        routers.wait_agreed([1, 2, 3])  # router 4, listed but never heard, is waited for one timeout at most
        routers.start(4)
        routers.wait_agreed([1, 2, 3, 4])
        leaving = time.monotonic()
        assert routers.routers[2].stop() == 0
        routers.wait_agreed([1, 3, 4], timeout=routers.timeout + 5)
        assert since(leaving) < routers.timeout + 1.0  # told, not timed out: quicker than a crash
        assert routers.routers[2].process.events_named("peers.left") == [
            {**routers.routers[2].process.events_named("peers.left")[0], "held": 0}]
        assert sum(routers.held([1, 3, 4]).values()) == 7


def test_a_peer_call_without_the_key_gets_401_and_is_logged(tmp_path: Path, config: Config) -> None:
    with peer_cluster(tmp_path, config, hosts=1) as routers:
        router = routers.start(1)
        url = f"http://{routers.identity(1)}/peer/v1/claim"
        body = {"member": "127.0.0.9:1", "seq": 1, "slots": [["default/blue", "http://127.0.0.1:5001", 0]]}
        for headers in ({}, {"authorization": "Bearer wrong-key-0123456789"}, {"authorization": PEER_KEY}):
            answer = httpx.post(url, json=body, headers=headers, timeout=5)
            assert answer.status_code == 401, headers
            assert answer.json()["error"]["code"] == "Unauthorized"
            assert answer.json()["error"]["requestId"] == answer.headers["x-request-id"]
        router.process.wait_for_event("peers.unauthorized", timeout=5)
        assert len(router.process.events_named("peers.unauthorized")) == 3
        assert all(e["client"] == "127.0.0.1" for e in router.process.events_named("peers.unauthorized"))
        granted = httpx.post(url, json=body, headers={"authorization": f"Bearer {PEER_KEY}"}, timeout=5)
        assert granted.status_code == 200


def test_a_bad_peer_call_with_the_key_gets_400(tmp_path: Path, config: Config) -> None:
    with peer_cluster(tmp_path, config, hosts=1) as routers:
        routers.start(1)
        answer = httpx.post(f"http://{routers.identity(1)}/peer/v1/state", json={"member": 3},
                            headers={"authorization": f"Bearer {PEER_KEY}"}, timeout=5)
        assert answer.status_code == 400
        assert "member" in answer.json()["error"]["message"]


def test_a_router_not_in_its_own_peer_list_refuses_to_start(tmp_path: Path, config: Config) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(config.yaml())
    code, output = run_to_exit([sys.executable, "-m", "router.cli", "serve", "--config", str(path),
                          "--allow-insecure-connections", "--host", loopback(2), "--port", "0", "--admin-port", "0",
                          "--peer-port", "0", "--peers", "127.0.0.1:9,127.0.0.3:9"],
                         env={"ROUTER_PEER_KEY": PEER_KEY})
    assert code != 0
    assert "peers: this router's own address 127.0.0.2:0 is not in the list" in output


def test_one_router_has_no_peer_port(tmp_path: Path, config: Config) -> None:
    router = start_router(tmp_path, config)
    try:
        assert "peer_port" not in router.process.ready
        metrics = httpx.get(f"{router.admin_url}/metrics", timeout=5).text
        assert "inference_router_peer" not in metrics  # not even the families' HELP lines
    finally:
        router.stop()


def test_routers_started_together_agree_whatever_the_order(tmp_path: Path, config: Config) -> None:
    with peer_cluster(tmp_path, config) as routers:
        for n in (3, 1, 2):
            routers.start(n)
        took = routers.wait_agreed([1, 2, 3])
        wait_until(lambda: routers.agreed([1, 2, 3]), 1, "still agreed")
        assert took < PeerCluster.timeout + 5


def test_under_load_a_router_killed_fails_no_request_on_the_others(
        tmp_path: Path, sample_model_factory: Callable[..., SampleModel]) -> None:
    """Load through two routers while the third is killed: their clients see no failure. (Until the data
    plane uses the split, each router still admits up to the cap alone: the peaks are not asserted on.)"""
    models: list[SampleModel] = [sample_model_factory("--latency-ms", "20") for _ in range(2)]
    config = Config().deployment("blue", [m.url for m in models], weight=100, concurrency=4, queue_wait_ms=5000)
    with peer_cluster(tmp_path, config) as routers:
        for n in (1, 2, 3):
            routers.start(n)
        routers.wait_agreed([1, 2, 3])
        with routers.traffic(1) as one, routers.traffic(2) as two:
            one.wait_for(lambda name: True, time.monotonic())
            routers.routers[3].process.proc.kill()
            routers.wait_agreed([1, 2], timeout=routers.timeout + 5)
            settled = time.monotonic()
            two.wait_for(lambda name: True, settled)
        assert one.failures == [] and two.failures == []
        assert len(one.answers) > 10 and len(two.answers) > 10
        assert all(peak_in_flight(m.url) >= 1 for m in models)


def test_a_replica_added_and_a_cap_changed_are_split_again(tmp_path: Path, config: Config) -> None:
    with peer_cluster(tmp_path, config) as routers:
        for n in (1, 2, 3):
            routers.start(n)
        routers.wait_agreed([1, 2, 3])
        config.deployment("blue", ["http://127.0.0.1:5001", "http://127.0.0.1:5002", "http://127.0.0.1:5004"],
                          weight=100, concurrency=3)
        for router in routers.routers.values():  # each router's own file, as each pod its own mount
            router.write_config(config.yaml())
        routers.wait_agreed([1, 2, 3])
        assert sum(routers.held([1, 2, 3]).values()) == 3 * 3 + 3
