"""The watch loop against the fake API server: list once, follow, resume, relist only after 410.

Each test runs one Reflector in an event loop of its own, through the unmodified client, and
reads the fake server's request log to see how it got there (a list or a resumed watch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from router.discovery.kubernetes.api import ONLINE_ENDPOINTS, KubeApi
from router.discovery.kubernetes.reflector import Backoff, Reflector, Selection
from router.discovery.kubernetes.settings import WatchSettings
from tests.kube.cluster import endpoint, running, secret, until
from tests.kube.fake_apiserver import FakeApiServer

FAST = WatchSettings(timeout_s=30, request_timeout_s=2, backoff_s=0.05, backoff_max_s=0.4)


def names(reflector: Reflector) -> set[str]:
    return {name for _, name in reflector.objects}


def server_names(api_server: FakeApiServer) -> set[str]:
    return {o["metadata"]["name"] for o in api_server.list("onlineendpoints")["items"]}


def with_reflector(kubeconfig: Path, settings: WatchSettings,
                   scenario: Callable[[Reflector, list[int]], Awaitable[None]]) -> None:
    """Run `scenario(reflector, changes)` while the reflector runs; `changes` counts on_change calls."""
    async def main() -> None:
        api = await KubeApi.connect(str(kubeconfig), request_timeout_s=settings.request_timeout_s)
        changes = [0]

        def changed() -> None:
            changes[0] += 1
        reflector = Reflector(api, Selection(kind=ONLINE_ENDPOINTS), changed, settings)
        try:
            async with running(reflector.run()):
                await until(lambda: reflector.synced)
                await scenario(reflector, changes)
        finally:
            await api.close()
    asyncio.run(main())


def test_lists_once_then_follows_every_change(api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("alpha", {}))
    listed_at = str(api_server.store.rv)

    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        assert names(reflector) == {"alpha"} and changes == [1]
        api_server.create("onlineendpoints", endpoint("bravo", {}))
        api_server.patch("onlineendpoints", "alpha", {"spec": {"traffic": {"x": 0}}})
        api_server.delete("onlineendpoints", "bravo")
        await until(lambda: reflector.resource_version == str(api_server.store.rv))
        assert names(reflector) == {"alpha"} and changes == [4]
        assert reflector.objects[("default", "alpha")]["spec"]["traffic"] == {"x": 0}

    with_reflector(kubeconfig, FAST, scenario)
    watches = api_server.requests_for("onlineendpoints", watch=True)
    assert len(api_server.requests_for("onlineendpoints", watch=False)) == 1
    assert watches[0].query["resourceVersion"] == listed_at
    assert watches[0].query["allowWatchBookmarks"] == "true"


def test_bookmarks_move_the_version_and_an_ended_watch_resumes_without_a_list(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.bookmark_interval = 0.2

    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        api_server.create("secrets", secret("unrelated", primaryKey="x"))  # moves the server's version only
        await until(lambda: reflector.resource_version == str(api_server.store.rv))  # by a bookmark
        await until(lambda: len(api_server.requests_for("onlineendpoints", watch=True)) >= 3, timeout=8)
        assert changes == [1]  # bookmarks change nothing

    with_reflector(kubeconfig, WatchSettings(timeout_s=1, backoff_s=0.05, backoff_max_s=0.4), scenario)
    watches = api_server.requests_for("onlineendpoints", watch=True)
    assert len(api_server.requests_for("onlineendpoints", watch=False)) == 1
    assert int(watches[-1].query["resourceVersion"]) == api_server.store.rv
    assert all(1 <= int(w.query["timeoutSeconds"]) <= 2 for w in watches)


def test_a_cut_watch_resumes_from_the_last_version(api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("alpha", {}))

    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        api_server.patch("onlineendpoints", "alpha", {"spec": {"traffic": {"x": 0}}})
        await until(lambda: reflector.resource_version == str(api_server.store.rv))
        seen = reflector.resource_version
        api_server.cut_watches()
        api_server.create("onlineendpoints", endpoint("bravo", {}))
        await until(lambda: names(reflector) == {"alpha", "bravo"})
        resumed = api_server.requests_for("onlineendpoints", watch=True)[-1]
        assert resumed.query["resourceVersion"] == seen

    with_reflector(kubeconfig, FAST, scenario)
    assert len(api_server.requests_for("onlineendpoints", watch=False)) == 1


def test_after_410_it_lists_again_and_drops_what_was_deleted_in_the_gap(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    for name in ("alpha", "bravo", "charlie"):
        api_server.create("onlineendpoints", endpoint(name, {}))

    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        with api_server.outage():
            api_server.delete("onlineendpoints", "bravo")
            api_server.patch("onlineendpoints", "charlie", {"spec": {"traffic": {"x": 0}}})
            api_server.create("onlineendpoints", endpoint("delta", {}))
            api_server.compact()
            await asyncio.sleep(0.3)
            assert names(reflector) == {"alpha", "bravo", "charlie"}  # the last known state, meanwhile
        await until(lambda: names(reflector) == server_names(api_server))
        assert reflector.objects[("default", "charlie")]["spec"]["traffic"] == {"x": 0}
        assert reflector.lists == 2

    with_reflector(kubeconfig, FAST, scenario)
    assert len(api_server.requests_for("onlineendpoints", watch=False)) == 2


def test_an_outage_is_retried_with_capped_backoff_and_then_caught_up(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("alpha", {}))

    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        with api_server.outage():
            api_server.delete("onlineendpoints", "alpha")
            await asyncio.sleep(2.0)
            attempts = api_server.refused
            assert reflector.failing and names(reflector) == {"alpha"}
        # backoff 0.05 s doubling to 0.4 s (jittered down to half): a handful of tries, not a storm
        assert 3 <= attempts <= 20, attempts
        started = time.monotonic()
        await until(lambda: names(reflector) == set())
        assert time.monotonic() - started < 1.0  # the cap bounds the lag after the outage
        assert not reflector.failing

    with_reflector(kubeconfig, FAST, scenario)
    assert len(api_server.requests_for("onlineendpoints", watch=False)) == 1  # resumed: history was kept


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, full in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0], strict=True):
        assert full / 2 <= delay <= full
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_a_watch_cut_halfway_through_an_event_resumes_and_gets_that_event(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("alpha", {}))

    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        watches = len(api_server.requests_for("onlineendpoints", watch=True))
        api_server.cut_next_event = True
        api_server.create("onlineendpoints", endpoint("bravo", {}))
        await until(lambda: names(reflector) == {"alpha", "bravo"}, timeout=3)
        assert not api_server.cut_next_event  # the event was cut, then came again on the resumed watch
        assert len(api_server.requests_for("onlineendpoints", watch=True)) > watches
        assert reflector.lists == 1 and changes == [2]

    with_reflector(kubeconfig, FAST, scenario)


def test_a_server_behind_its_clients_504_is_waited_out_without_listing_again(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    api_server.create("onlineendpoints", endpoint("alpha", {}))

    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        await until(lambda: reflector.resource_version == str(api_server.store.rv))
        with api_server.lagging(at=api_server.store.rv - 1):  # restarted, its cache one version behind
            api_server.cut_watches()
            api_server.create("onlineendpoints", endpoint("bravo", {}))
            await asyncio.sleep(1.6)
            behind = [r for r in api_server.requests_for("onlineendpoints", watch=True) if r.status == 504]
            assert 1 <= len(behind) <= 2  # Retry-After: 1 s, although this reflector's backoff starts at 0.05 s
        await until(lambda: names(reflector) == {"alpha", "bravo"}, timeout=3)
        assert reflector.lists == 1  # resumed from its version: nothing listed again

    with_reflector(kubeconfig, FAST, scenario)


def test_too_many_requests_is_retried_after_the_time_the_server_asks(
        api_server: FakeApiServer, kubeconfig: Path) -> None:
    async def scenario(reflector: Reflector, changes: list[int]) -> None:
        with api_server.fail(429, plural="onlineendpoints", verb="watch", retry_after=1):
            api_server.cut_watches()
            await asyncio.sleep(1.6)
            refused = [r for r in api_server.requests_for("onlineendpoints", watch=True) if r.status == 429]
            assert 1 <= len(refused) <= 2
        api_server.create("onlineendpoints", endpoint("alpha", {}))
        await until(lambda: names(reflector) == {"alpha"}, timeout=3)

    with_reflector(kubeconfig, FAST, scenario)
