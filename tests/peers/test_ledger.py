"""The handover, simulated: routers with views that disagree, messages late, lost and out of order,
crashes and returns. Whatever happens, no replica has more requests than its cap from all routers
together; once membership is stable, every slot ends up held and usable by its owner."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from router.peers.ledger import PeerState, SlotLedger
from router.peers.split import DeploymentSlots, Slot, all_slots, share

CAPACITY = {"ns/a": DeploymentSlots(("http://r1", "http://r2", "http://r3"), 2),
            "ns/b": DeploymentSlots(("http://s1",), 3)}
# what a configuration change may make of it: a replica gone (an endpoint that flaps), a cap lowered
CHANGES = [CAPACITY, {**CAPACITY, "ns/a": DeploymentSlots(("http://r1", "http://r3"), 2)},
           {**CAPACITY, "ns/a": DeploymentSlots(("http://r1", "http://r2", "http://r3"), 1)}]
PLACES = [(d, url) for d, slots in CAPACITY.items() for url in slots.replicas]
CAPS = {(d, url): slots.cap for d, slots in CAPACITY.items() for url in slots.replicas}


@dataclass
class Claim:
    seq: int
    slots: frozenset[Slot]
    ask: list[str]
    answers: list[frozenset[Slot] | None] = field(default_factory=list)


@dataclass
class Router:
    name: str
    ledger: SlotLedger
    members: set[str]
    forgotten: set[str] = field(default_factory=set)
    lapsed: bool = False
    in_use: dict[tuple[str, str], int] = field(default_factory=dict)
    claim: Claim | None = None

    capacity: dict[str, DeploymentSlots] = field(default_factory=lambda: dict(CAPACITY))

    def share(self) -> frozenset[Slot]:
        return share(self.capacity, self.members, self.name) if not self.lapsed else frozenset()


class Cluster:
    def __init__(self, names: list[str]) -> None:
        self.routers = {n: Router(n, SlotLedger(n), set(names)) for n in names}
        self.mail: list[tuple[str, PeerState]] = []  # (to, state)

    def alive_for(self, router: Router) -> list[str]:
        return sorted(set(self.routers) - router.forgotten - {router.name})

    def tick(self, name: str) -> None:
        r = self.routers[name]
        if r.lapsed:
            return
        r.ledger.release(r.share(), r.in_use)
        want = r.ledger.wanted(r.share())
        if want and r.claim is None:
            seq, slots = r.ledger.claim(want)
            r.claim = Claim(seq, slots, self.alive_for(r))
            if not r.claim.ask:
                self.answer(name)  # nobody to ask: settles at once

    def answer(self, name: str) -> None:
        r = self.routers[name]
        if r.claim is None:
            return
        claim = r.claim
        if len(claim.answers) < len(claim.ask):
            peer = self.routers[claim.ask[len(claim.answers)]]
            claim.answers.append(None if peer.lapsed else peer.ledger.answer_claim(name, claim.seq, claim.slots))
        if len(claim.answers) == len(claim.ask):
            r.ledger.settle(claim.slots, claim.answers)
            r.claim = None

    def send(self, name: str, to: str) -> None:
        r = self.routers[name]
        if not r.lapsed and to != name:
            self.mail.append((to, r.ledger.state()))

    def deliver(self, index: int, drop: bool) -> None:
        if not self.mail:
            return
        to, state = self.mail.pop(index % len(self.mail))
        target = self.routers[to]
        if not drop and not target.lapsed:
            target.ledger.heard(state)
            target.forgotten.discard(state.member)  # a returned router is heard again

    def reconfigure(self, name: str, change: int) -> None:
        """A configuration change reaches one router (the others see it later, or never)."""
        self.routers[name].capacity = dict(CHANGES[change])

    def crash(self, name: str) -> None:
        r = self.routers[name]
        r.ledger.lapse()  # its lease lapses before anyone may forget it: it stops using everything
        r.in_use.clear()
        r.claim = None
        r.lapsed = True

    def restart(self, name: str, unknown: set[str]) -> None:
        """A router back, or new: it may not know yet of every other (it learns of them by hearing them)."""
        r = self.routers[name]
        if r.lapsed and all(name in other.forgotten for other in self.routers.values() if other is not r):
            r.ledger = SlotLedger(name, seq=r.ledger.seq + 1000)
            r.lapsed = False
            r.forgotten = set(unknown) - {name}

    def forget(self, name: str, departed: str) -> None:
        if self.routers[departed].lapsed and name != departed:
            self.routers[name].ledger.forget(departed)
            self.routers[name].forgotten.add(departed)
            self.mail = [(to, s) for to, s in self.mail if not (to == name and s.member == departed)]

    def admit(self, name: str, place: tuple[str, str]) -> None:
        r = self.routers[name]
        if not r.lapsed and r.in_use.get(place, 0) < r.ledger.usable(r.share()).get(place, 0):
            r.in_use[place] = r.in_use.get(place, 0) + 1

    def finish(self, name: str, place: tuple[str, str]) -> None:
        r = self.routers[name]
        if r.in_use.get(place, 0) > 0:
            r.in_use[place] -= 1

    def check(self) -> None:
        holders: dict[Slot, str] = {}
        for r in self.routers.values():
            for slot in r.ledger.held:
                assert slot not in holders, f"{slot} held by {holders[slot]} and {r.name}"
                holders[slot] = r.name
        for place, cap in CAPS.items():
            seen = sum(r.in_use.get(place, 0) for r in self.routers.values())
            assert seen <= cap, f"{place}: {seen} requests at once, cap {cap}"
            for r in self.routers.values():
                held = sum(1 for slot in r.ledger.held if slot[:2] == place)
                assert r.in_use.get(place, 0) <= held, f"{r.name} has more requests on {place} than slots"

    def stabilize(self) -> None:
        """Stable membership: every live router sees the same members, the departed are forgotten."""
        live = sorted(n for n, r in self.routers.items() if not r.lapsed)
        for r in self.routers.values():
            r.members = set(live)
            r.capacity = dict(CAPACITY)
            for departed in set(self.routers) - set(live):
                self.forget(r.name, departed)
        for _ in range(6):
            for name in live:
                for place in PLACES:
                    while self.routers[name].in_use.get(place, 0):
                        self.finish(name, place)
                self.tick(name)
                while self.routers[name].claim is not None:
                    self.answer(name)
                    self.check()
                for to in live:
                    self.send(name, to)
            while self.mail:
                self.deliver(0, drop=False)
            self.check()


NAMES = ["10.0.0.1:9091", "10.0.0.2:9091", "10.0.0.3:9091", "10.0.0.4:9091"]
actions = st.one_of(
    st.tuples(st.just("view"), st.sampled_from(NAMES), st.sets(st.sampled_from(NAMES))),
    st.tuples(st.just("tick"), st.sampled_from(NAMES)),
    st.tuples(st.just("answer"), st.sampled_from(NAMES)),
    st.tuples(st.just("send"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("deliver"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("crash"), st.sampled_from(NAMES)),
    st.tuples(st.just("reconfigure"), st.sampled_from(NAMES), st.integers(0, len(CHANGES) - 1)),
    st.tuples(st.just("restart"), st.sampled_from(NAMES), st.sets(st.sampled_from(NAMES))),
    st.tuples(st.just("forget"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("admit"), st.sampled_from(NAMES), st.sampled_from(PLACES)),
    st.tuples(st.just("finish"), st.sampled_from(NAMES), st.sampled_from(PLACES)),
)


def run(cluster: Cluster, steps: list[tuple[object, ...]]) -> None:
    for kind, *args in steps:
        if any(isinstance(a, str) and a in NAMES and a not in cluster.routers for a in args):
            continue  # a router this cluster does not have
        if kind == "view":
            name, members = args
            r = cluster.routers[name]  # type: ignore[index]
            r.members = (set(members) & set(cluster.routers)) | {name}  # type: ignore[arg-type]
        else:
            getattr(cluster, str(kind))(*args)
        cluster.check()


@settings(max_examples=500, deadline=None)
@given(st.integers(2, 4), st.lists(actions, max_size=200))
def test_no_replica_ever_gets_more_than_its_cap(size: int, steps: list[tuple[object, ...]]) -> None:
    cluster = Cluster(NAMES[:size])
    run(cluster, steps)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 4), st.lists(actions, max_size=80))
def test_every_slot_is_usable_once_membership_is_stable(size: int, steps: list[tuple[object, ...]]) -> None:
    cluster = Cluster(NAMES[:size])
    run(cluster, steps)
    cluster.stabilize()
    live = sorted(n for n, r in cluster.routers.items() if not r.lapsed)
    usable: set[Slot] = set()
    for name in live:
        r = cluster.routers[name]
        mine = share(CAPACITY, live, name)
        assert r.ledger.held == set(mine), f"{name} holds {len(r.ledger.held)} of its {len(mine)} slots"
        assert sum(r.ledger.usable(mine).values()) == len(mine)
        usable |= r.ledger.held & mine
    assert usable == (all_slots(CAPACITY) if live else set())


def test_a_tie_goes_to_the_identity_that_sorts_first() -> None:
    a, b = SlotLedger("a"), SlotLedger("b")
    slot = ("ns/a", "http://r1", 0)
    seq_a, claim_a = a.claim([slot])
    seq_b, claim_b = b.claim([slot])
    assert a.answer_claim("b", seq_b, claim_b) == frozenset()  # a sorts first: b is refused
    assert b.answer_claim("a", seq_a, claim_a) == {slot}  # b gives up its claim
    assert a.settle(claim_a, [frozenset({slot})]) == {slot}
    assert b.settle(claim_b, [frozenset()]) == frozenset()


def test_a_promise_holds_until_the_claimants_later_state_lets_it_go() -> None:
    arbiter, first, second = SlotLedger("m"), SlotLedger("x"), SlotLedger("y")
    slot = ("ns/a", "http://r1", 0)
    seq, claim = first.claim([slot])
    assert arbiter.answer_claim("x", seq, claim) == {slot}
    assert arbiter.answer_claim("y", 1, claim) == frozenset()  # promised to x
    arbiter.heard(PeerState("x", seq - 1))  # older than the claim: clears nothing
    assert arbiter.answer_claim("y", 2, claim) == frozenset()
    first.settle(claim, [frozenset()])  # refused elsewhere: x gives up
    arbiter.heard(first.state())
    assert arbiter.answer_claim("y", 3, claim) == {slot}
    assert second.wanted({slot}) == {slot}


def test_a_router_lets_go_only_what_its_requests_do_not_need() -> None:
    ledger = SlotLedger("a", held={("ns/a", "http://r1", 0), ("ns/a", "http://r1", 1), ("ns/a", "http://r2", 0)})
    keep = {("ns/a", "http://r1", 0)}
    dropped = ledger.release(keep, {("ns/a", "http://r1"): 2, ("ns/a", "http://r2"): 0})
    assert dropped == {("ns/a", "http://r2", 0)}  # r1 still has two requests on two slots
    assert ledger.usable(keep) == {("ns/a", "http://r1"): 1}  # new requests: only the slot it keeps
    assert ledger.release(keep, {("ns/a", "http://r1"): 1}) == {("ns/a", "http://r1", 1)}


def test_two_newcomers_that_do_not_know_each_other_are_kept_apart_by_a_common_peer() -> None:
    cluster = Cluster(NAMES[:3])
    old, first, second = NAMES[0], NAMES[1], NAMES[2]
    for name in (first, second):
        cluster.crash(name)
    for name, departed in ((old, first), (old, second), (first, second), (second, first)):
        cluster.forget(name, departed)
    cluster.restart(first, {second})
    cluster.restart(second, {first})
    cluster.routers[old].members = {old}  # it has not heard of either yet: it keeps everything
    cluster.routers[old].ledger.held.clear()  # ... and happens to hold nothing yet
    cluster.routers[first].members = {first, old}
    cluster.routers[second].members = {second, old}
    cluster.tick(first)
    cluster.tick(second)
    assert cluster.routers[first].claim is not None and cluster.routers[second].claim is not None
    for name in (first, second):
        while cluster.routers[name].claim is not None:
            cluster.answer(name)
            cluster.check()
    both = cluster.routers[first].ledger.held | cluster.routers[second].ledger.held
    assert both  # one of them got the slots both wanted, never both
