"""Membership by Leases (--peer-service) against the fake API server: one Lease per router, the peer
Service's ready endpoints, a Lease that expires, one deleted on a graceful stop, and a router that
stops using its slots when it cannot renew."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.discovery.kubernetes.api import KubeApi
from router.peers.leases import GROUP_LABEL, LeasePeers
from tests.kube.cluster import KubeRouter, endpoint_slice, seed_demo, start_kube_router, until
from tests.kube.fake_apiserver import FakeApiServer
from tests.peers.cluster import PEER_KEY, free_port_on
from tests.routing import wait_until

SERVICE = "routers"
ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def me(address: str) -> str:
    return f"{address}:9091"


@contextlib.asynccontextmanager
async def lease_peers(kubeconfig: Path, address: str, timeout: float = 2.0,
                      dead_after: float = 10.0) -> AsyncIterator[LeasePeers]:
    api = await KubeApi.connect(str(kubeconfig), request_timeout_s=1.0)
    peers = LeasePeers(me=me(address), timeout=timeout, api=api, namespace="default", service=SERVICE,
                       lease_name=f"inference-router-peer-{address}", margin=0.5, renew_s=0.2,
                       dead_after=dead_after)
    task = asyncio.create_task(peers.run())
    peers.task = task  # type: ignore[attr-defined]
    try:
        yield peers
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peers.close()


@contextlib.asynccontextmanager
async def two_members(api_server: FakeApiServer, kubeconfig: Path) -> AsyncIterator[tuple[LeasePeers, LeasePeers]]:
    """Routers 10.0.0.1 and 10.0.0.2, both ready in the peer Service, once the first sees both as members."""
    seed_peer_service(api_server, ADDRESSES[:2])
    async with lease_peers(kubeconfig, "10.0.0.1") as one, lease_peers(kubeconfig, "10.0.0.2") as two:
        await until(lambda: one.view(now()).members == (me("10.0.0.1"), me("10.0.0.2")), timeout=10)
        yield one, two


def seed_peer_service(api_server: FakeApiServer, addresses: list[str], *, not_ready: tuple[str, ...] = ()) -> None:
    for n, address in enumerate(addresses):
        api_server.create("endpointslices", endpoint_slice(f"{SERVICE}-{n}", SERVICE, 9091, address=address,
                                                           ready=address not in not_ready, port_name="peer"))


def now() -> float:
    return asyncio.get_running_loop().time()


def in_a_loop(case: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(case)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(case(*args, **kwargs))
    return test


@in_a_loop
async def test_routers_find_each_other_by_their_leases_and_the_peer_service(api_server: FakeApiServer,
                                                                           kubeconfig: Path) -> None:
    seed_peer_service(api_server, ADDRESSES, not_ready=("10.0.0.3",))
    async with lease_peers(kubeconfig, "10.0.0.1") as one, lease_peers(kubeconfig, "10.0.0.2") as two, \
            lease_peers(kubeconfig, "10.0.0.3") as three:
        everyone = (one, two, three)
        await until(lambda: all(p.view(now()).valid and p.view(now()).members == (me("10.0.0.1"), me("10.0.0.2"))
                                for p in (one, two)), timeout=10)
        # the third has a valid Lease, so it is asked for slots; not ready, so it is no member
        assert one.view(now()).alive == {me("10.0.0.2"), me("10.0.0.3")}
        assert three.view(now()).members == (me("10.0.0.1"), me("10.0.0.2"))  # it sees itself as the others do
        leases = api_server.list("leases", "default", {"labelSelector": f"{GROUP_LABEL}={SERVICE}"})["items"]
        assert sorted(lease["spec"]["holderIdentity"] for lease in leases) == [me(a) for a in ADDRESSES]
        assert {lease["spec"]["leaseDurationSeconds"] for lease in leases} == {2}
        assert all(p.view(now()).valid for p in everyone)


@in_a_loop
async def test_a_router_whose_lease_expires_leaves_only_after_its_duration(api_server: FakeApiServer,
                                                                           kubeconfig: Path) -> None:
    async with two_members(api_server, kubeconfig) as (one, two):
        two.task.cancel()  # type: ignore[attr-defined]  # it crashed: its Lease stays, no longer renewed
        stopped = time.monotonic()
        await asyncio.sleep(1.0)
        assert me("10.0.0.2") in one.view(now()).alive  # 2 s Lease: not yet
        await until(lambda: me("10.0.0.2") not in one.view(now()).alive, timeout=5)
        took = time.monotonic() - stopped
        # its duration from its last renewal, which came up to one renewal period (and a slow write) before
        assert took >= 2.0 - 0.5, took
        assert one.view(now()).members == (me("10.0.0.1"),)


@in_a_loop
async def test_a_router_that_stops_deletes_its_lease_and_is_forgotten_at_once(api_server: FakeApiServer,
                                                                             kubeconfig: Path) -> None:
    async with two_members(api_server, kubeconfig) as (one, two):
        await two.stop()  # while its renewal loop still runs, as in a draining router
        assert not two.view(now()).valid
        took = await until(lambda: me("10.0.0.2") not in one.view(now()).alive, timeout=5)
        assert took < 1.0  # the next list, not the Lease's duration
        await asyncio.sleep(1.0)  # five renewal periods: the loop must not bring the Lease back
        assert [lease["metadata"]["name"] for lease in api_server.list("leases", "default")["items"]] == [
            "inference-router-peer-10.0.0.1"]
        assert me("10.0.0.2") not in one.view(now()).alive


@in_a_loop
async def test_a_router_that_cannot_renew_stops_using_its_slots_before_its_lease_can_expire(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    seed_peer_service(api_server, ADDRESSES[:1])
    async with lease_peers(kubeconfig, "10.0.0.1") as one:
        await until(lambda: one.view(now()).valid and one.view(now()).members == (me("10.0.0.1"),), timeout=10)
        with api_server.outage():
            cut = time.monotonic()
            await until(lambda: not one.view(now()).valid, timeout=5)
            # invalid by its own clock at least `margin` before a peer could see the Lease expire
            assert time.monotonic() - cut <= 2.0 - 0.5 + 0.1
            assert one.view(now()).members == ()
        await until(lambda: one.view(now()).valid, timeout=5)


@in_a_loop
async def test_a_dead_routers_lease_is_deleted_after_a_while_and_its_address_may_be_reused(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    """A pod gone for good leaves its Lease behind; a new pod may get its address under a new name."""
    seed_peer_service(api_server, ADDRESSES[:2])
    api_server.create("leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "inference-router-peer-old-pod", "namespace": "default",
                     "labels": {GROUP_LABEL: SERVICE}},
        "spec": {"holderIdentity": me("10.0.0.2"), "leaseDurationSeconds": 1,
                 "renewTime": "2020-01-01T00:00:00.000000Z"}})
    async with lease_peers(kubeconfig, "10.0.0.1", dead_after=2.0) as one, lease_peers(kubeconfig, "10.0.0.2"):
        await until(lambda: one.view(now()).members == (me("10.0.0.1"), me("10.0.0.2")), timeout=10)
        names = {"inference-router-peer-10.0.0.1", "inference-router-peer-10.0.0.2"}
        await until(lambda: {lease["metadata"]["name"] for lease in api_server.list("leases")["items"]} == names,
                    timeout=10)
        assert one.view(now()).members == (me("10.0.0.1"), me("10.0.0.2"))  # the new pod, alive all along


def start_pods(api_server: FakeApiServer, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
               addresses: list[str]) -> tuple[int, list[KubeRouter]]:
    """Router processes with --kubernetes --peer-service, as pods on `addresses` with one peer port."""
    seed_demo(api_server, "primary-key-0123456789", port=5001)
    port = free_port_on(addresses)
    for n, address in enumerate(addresses):
        api_server.create("endpointslices", endpoint_slice(f"{SERVICE}-{n}", SERVICE, port, address=address,
                                                           port_name="peer"))
    monkeypatch.setenv("ROUTER_PEER_KEY", PEER_KEY)
    routers = []
    for address in addresses:
        monkeypatch.setenv("POD_NAME", f"router-{address}")  # each pod its own Lease
        routers.append(start_kube_router(kubeconfig, "--peer-service", SERVICE, "--peer-port", str(port),
                                         "--peer-timeout", "3", "--host", address))
    return port, routers


def view(address: str, port: int) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"http://{address}:{port}/peer/v1/view", timeout=5,
                                       headers={"authorization": f"Bearer {PEER_KEY}"}).json()
    return answer


def blue_slots(address: str, port: int) -> dict[str, int]:
    """Its slots on the one replica of blue (none before its first sync)."""
    replicas = view(address, port)["slots"].get("default/blue", {})
    slots: dict[str, int] = replicas.get("http://127.0.0.1:5001", {"owned": 0, "held": 0})
    return slots


def test_routers_in_a_cluster_agree_on_the_split(api_server: FakeApiServer, kubeconfig: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two router processes as two pods (127.0.0.1 and 127.0.0.2); one stops, its Lease goes with it."""
    addresses = ["127.0.0.1", "127.0.0.2"]
    port, routers = start_pods(api_server, kubeconfig, monkeypatch, addresses)
    try:
        members = [f"{a}:{port}" for a in addresses]
        wait_until(lambda: all(view(a, port)["members"] == members and view(a, port)["valid"] for a in addresses),
                   20, "both are members")
        wait_until(lambda: sum(blue_slots(a, port)["held"] for a in addresses) == 8, 10, "all 8 slots held")
        assert [blue_slots(a, port)["owned"] for a in addresses] == [4, 4]
        assert routers[1].stop() == 0
        leases = api_server.list("leases", "default", {"labelSelector": f"{GROUP_LABEL}={SERVICE}"})["items"]
        assert [lease["spec"]["holderIdentity"] for lease in leases] == [f"127.0.0.1:{port}"]
        wait_until(lambda: blue_slots("127.0.0.1", port)["held"] == 8, 5, "the survivor holds every slot")
    finally:
        for router in routers:
            router.stop()


def test_a_pod_killed_in_a_cluster_loses_its_share_when_its_lease_expires(
        api_server: FakeApiServer, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    addresses = ["127.0.0.1", "127.0.0.2"]
    port, routers = start_pods(api_server, kubeconfig, monkeypatch, addresses)
    try:
        wait_until(lambda: sum(blue_slots(a, port)["held"] for a in addresses) == 8, 25, "all 8 slots held")
        routers[1].process.proc.kill()  # SIGKILL: its Lease stays, unrenewed
        killed = time.monotonic()
        wait_until(lambda: blue_slots("127.0.0.1", port)["held"] == 8, 10, "the survivor holds every slot")
        # its Lease lasts 3 s from its last renewal, which came at most one period (2 s) before the kill
        assert time.monotonic() - killed >= 3 - 2 - 0.1
        names = [lease["metadata"]["name"] for lease in api_server.list("leases", "default")["items"]]
        assert "inference-router-peer-router-127.0.0.2" in names  # nobody deleted it: it expired
    finally:
        for router in routers:
            router.stop()
