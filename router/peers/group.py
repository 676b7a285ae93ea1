"""The peer subsystem at run time: the membership, the ledger and the peer port, ticking together.

Each tick (every `--peer-timeout` / 10, at most 0.5 s, and at once after a change): read the
view, forget peers whose lease has expired, let go of slots outside this router's share as its
requests allow, claim the slots of its share it lacks from every peer that may be alive, then
exchange state messages (the heartbeat) with every peer. `usable` is what the data plane may
start new requests on, per (deployment, replica URL), until `usable_until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from router import logs, metrics
from router.peers.channel import PeerClient
from router.peers.ledger import PeerState, SlotLedger
from router.peers.membership import Membership, View
from router.peers.split import Capacity, Slot, per_replica, share

Place = tuple[str, str]  # deployment ("namespace/name"), replica URL
InUse = Callable[[], Mapping[Place, int]]


def tick_interval(timeout: float) -> float:
    return min(0.5, timeout / 10)


class PeerGroup:
    def __init__(self, membership: Membership, client: PeerClient, in_use: InUse, *,
                 on_usable: Callable[[Mapping[Place, int]], None] | None = None) -> None:
        self.membership = membership
        self.me = membership.me
        self.client = client
        self.in_use = in_use
        self.on_usable = on_usable
        self.interval = tick_interval(membership.timeout)
        # numbered from the clock, so a restarted router's messages are newer than its old self's
        self.ledger = SlotLedger(self.me, seq=time.time_ns())
        self.capacity: Capacity = {}
        self.share: frozenset[Slot] = frozenset()
        self.usable: Mapping[Place, int] = {}
        self.usable_until = 0.0
        self.view = View(self.me, False, (), frozenset())
        self.peer_free: dict[str, dict[str, int]] = {}  # peer → deployment → free slots, as it last said
        self._alive: frozenset[str] = frozenset()
        self._wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"<PeerGroup {self.me} members={len(self.view.members)} {self.ledger!r}>"

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- from the router --------------------------------------------------------------------
    def update_capacity(self, capacity: Capacity) -> None:
        """A new routing table: the deployments' replicas and caps (vanished slots go as their requests end)."""
        self.capacity = dict(capacity)
        self.share = share(self.capacity, self.view.members, self.me) if self.view.valid else frozenset()
        self._publish()
        self._wake.set()

    # -- the peer port's calls (PeerCalls) --------------------------------------------------
    def on_state(self, state: PeerState) -> PeerState:
        self._heard(state)
        self._wake.set()
        return self._state()

    def _heard(self, state: PeerState) -> None:
        self.membership.heard(state, self._now())
        self.ledger.heard(state)
        self.peer_free[state.member] = dict(state.free)

    def _state(self) -> PeerState:
        in_use = self.in_use()
        free: dict[str, int] = {}
        for (deployment, url), usable in self.usable.items():
            free[deployment] = free.get(deployment, 0) + max(0, usable - in_use.get((deployment, url), 0))
        return self.ledger.state(leaving=self.membership.leaving, free=tuple(sorted(free.items())))

    def forward_target(self, deployment: str) -> str | None:
        """The member with the most free slots of `deployment` as it last said (None: none has one).

        For the data plane, when this router has no free slot of its own (one hop at most)."""
        best, most = None, 0
        for peer in self.view.members:
            free = self.peer_free.get(peer, {}).get(deployment, 0)
            if peer != self.me and free > most:
                best, most = peer, free
        return best

    def on_claim(self, claimant: str, seq: int, slots: frozenset[Slot]) -> frozenset[Slot]:
        if not self.membership.may_claim(claimant):
            logs.event("peers.unknown_claimant", level=logging.WARNING, peer=claimant)
            return frozenset()
        # a claim is word from the claimant: a newcomer is asked in turn before its Lease is listed here
        self.membership.heard(PeerState(claimant, seq), self._now())
        granted = self.ledger.answer_claim(claimant, seq, slots)
        self._publish()  # a tie lost: a pending slot gone
        return granted

    def debug(self) -> dict[str, Any]:
        """For /debug/deployments and the peer port's /view: the view, and slots per replica."""
        held, owned, in_use = per_replica(self.ledger.held), per_replica(self.share), self.in_use()
        slots: dict[str, dict[str, dict[str, int]]] = {}
        for deployment, capacity in self.capacity.items():
            slots[deployment] = {url: {"owned": owned.get((deployment, url), 0),
                                       "held": held.get((deployment, url), 0),
                                       "usable": self.usable.get((deployment, url), 0),
                                       "in_use": in_use.get((deployment, url), 0)}
                                 for url in sorted(capacity.replicas)}
        return {"me": self.me, "valid": self.view.valid, "leaving": self.membership.leaving,
                "members": list(self.view.members),
                "peers": {peer: self.view.state_of(peer) for peer in sorted(self.view.alive)},
                "peer_free_slots": {peer: free for peer, free in sorted(self.peer_free.items())
                                    if peer in self.view.alive},
                "slots": slots}

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        membership = asyncio.get_running_loop().create_task(self.membership.run(), name="peers-membership")
        try:
            while True:
                try:
                    await self.tick()
                except Exception as exc:  # a bug must not end the peer loop: the ledger stays exclusive
                    logs.event("peers.tick_failed", level=logging.ERROR, error=repr(exc))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
        finally:
            membership.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await membership

    async def tick(self) -> None:
        view = self._look()
        self.ledger.release(self.share, self.in_use())
        want = self.ledger.wanted(self.share) if view.valid else frozenset()
        if want:
            seq, claimed = self.ledger.claim(want)
            grants = await asyncio.gather(*(self.client.claim(peer, self.me, seq, claimed)
                                            for peer in sorted(view.alive)))
            taken = self.ledger.settle(claimed, grants)
            if taken:
                logs.event("peers.slots_taken", slots=len(taken), held=len(self.ledger.held))
            view = self._look()  # the lease may have lapsed while the answers came
        self._publish()
        await asyncio.gather(*(self._exchange(peer) for peer in self.membership.contacts(self._now())))

    def _look(self) -> View:
        view = self.membership.view(self._now())
        for departed in self._alive - view.alive:
            self.ledger.forget(departed)
            self.peer_free.pop(departed, None)
            logs.event("peers.departed", peer=departed)
        for joined in view.alive - self._alive:
            logs.event("peers.joined", peer=joined)
        if not view.valid and (self.ledger.held or self.ledger.pending):
            logs.event("peers.lapsed", level=logging.WARNING, held=len(self.ledger.held))
            self.ledger.lapse()
        if view.members != self.view.members:
            logs.event("peers.members", members=list(view.members))
        self._alive, self.view = view.alive, view
        self.share = share(self.capacity, view.members, self.me) if view.valid else frozenset()
        return view

    async def _exchange(self, peer: str) -> None:
        answer = await self.client.state(peer, self._state())
        if answer is not None and answer.member == peer:
            self._heard(answer)

    def _publish(self) -> None:
        usable = self.ledger.usable(self.share) if self.view.valid else {}
        if usable != self.usable:
            self.usable = usable
            if self.on_usable is not None:
                self.on_usable(usable)
        self.usable_until = self.membership.valid_through() if self.view.valid else 0.0
        states: dict[str, int] = {"member": 0, "joining": 0, "leaving": 0}
        for peer in self.view.alive:
            states[self.view.state_of(peer)] += 1
        metrics.peers(states, {d: sum(n for (dep, _), n in usable.items() if dep == d) for d in self.capacity})

    # -- leaving -----------------------------------------------------------------------------
    def begin_leaving(self) -> None:
        """Drain has begun: take no share from now on (the others take it as this router's requests end)."""
        self.membership.leaving = True
        self._wake.set()

    async def leave(self, timeout: float) -> None:
        """Drain: take no share, let every slot go as requests end, tell the peers, then go."""
        self.membership.leaving = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.ledger.held or self.ledger.pending) and loop.time() < deadline:
            self._wake.set()
            await asyncio.sleep(self.interval)
        await asyncio.gather(*(self._exchange(peer) for peer in self.membership.contacts(self._now())))
        await self.membership.stop()
        logs.event("peers.left", held=len(self.ledger.held))

    async def close(self) -> None:
        await self.client.close()
        await self.membership.close()

