"""The handover of slots between routers: a state machine without I/O or clock.

A router *holds* a slot when it may use it; the split (`split`) only says which slots it
*wants*. A slot changes hands in two steps, so that no two routers ever hold it at once,
whatever their membership views:

1. The holder lets it go (`release`) once it is no longer in its share and the holder's
   requests on that replica fit in the slots it keeps; its next state message says so.
2. A router that wants a slot marks it *pending* and asks every peer that may be alive (its
   lease not expired) for it (`claim` → `answer_claim` → `settle`). A peer refuses a slot it
   holds, a slot it has promised to a third router (until that one's later state shows it
   neither holds nor wants it, or its lease expired), and a slot it has pending itself when its
   identity sorts first; otherwise it drops its own pending claim, *promises* the slot to the
   claimant and grants it. The claimant holds the slot only if every peer it asked granted it
   and the slot is still pending when the last answer is in (a peer's claim that won a tie
   meanwhile removed it).

Why that is exclusive: of two routers that want a slot, at least one asks the other (the
membership sees to it: `--peers` lists every router, and a router joins the Lease split only
once every older router has seen its Lease; a claim also makes its sender known), or
both ask a third, which promises the slot to only one of them until that one's later state
message shows it neither holds nor wants it (messages are numbered, so an old one clears
nothing). A router whose lease has expired holds nothing (`lapse`): the others may then
`forget` it and its promises, and take its slots without its answer.

A router's usable count on a replica is its held slots there that are still in its share
(`usable`): slots it is letting go take no new requests, while requests already on them end.
A slot that vanished (its replica gone from the configuration, its cap lowered) is let go the
same way: while requests still run on it, it stays held, so that if it comes back (an endpoint
that flapped) no other router starts requests on top of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from router.peers.split import Slot, per_replica


@dataclass(frozen=True, slots=True)
class PeerState:
    """What a router tells its peers about itself (every state message, both ways)."""

    member: str
    seq: int  # grows with every message the router sends (it starts from the clock: a restart counts on)
    held: frozenset[Slot] = frozenset()
    pending: frozenset[Slot] = frozenset()
    leaving: bool = False  # draining: give it no share; it lets its slots go as its requests end
    free: tuple[tuple[str, int], ...] = ()  # per deployment: its slots free right now (where to forward to)


@dataclass(slots=True)
class SlotLedger:
    me: str
    seq: int = 0
    held: set[Slot] = field(default_factory=set)
    pending: set[Slot] = field(default_factory=set)
    promised: dict[Slot, tuple[str, int]] = field(default_factory=dict)  # slot → (claimant, its claim's seq)

    def __repr__(self) -> str:
        return (f"<SlotLedger {self.me} held={len(self.held)} pending={len(self.pending)} "
                f"promised={len(self.promised)}>")

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def state(self, *, leaving: bool = False, free: tuple[tuple[str, int], ...] = ()) -> PeerState:
        return PeerState(self.me, self.next_seq(), frozenset(self.held), frozenset(self.pending), leaving, free)

    # -- letting go -------------------------------------------------------------------------
    def release(self, share: Set[Slot], in_use: Mapping[tuple[str, str], int]) -> set[Slot]:
        """Drop held slots outside `share` while the requests on each replica still fit; what was dropped.

        `in_use` counts this router's requests per (deployment, replica URL)."""
        dropped: set[Slot] = set()
        held_here = per_replica(self.held)
        for slot in sorted(self.held - share, key=lambda s: -s[2]):
            place = slot[:2]
            if held_here[place] > in_use.get(place, 0):
                held_here[place] -= 1
                dropped.add(slot)
        self.held -= dropped
        return dropped

    def lapse(self) -> None:
        """This router's own lease is no longer valid: it holds and wants nothing from now on."""
        self.held.clear()
        self.pending.clear()

    # -- taking -----------------------------------------------------------------------------
    def wanted(self, share: Set[Slot]) -> frozenset[Slot]:
        """Slots of `share` to claim now: not held, not pending, not promised to a peer."""
        return frozenset(slot for slot in share - self.held - self.pending if slot not in self.promised)

    def claim(self, slots: Iterable[Slot]) -> tuple[int, frozenset[Slot]]:
        """Mark `slots` pending; the claim's number and slots, to send to every peer that may be alive."""
        claimed = frozenset(slots)
        self.pending |= claimed
        return self.next_seq(), claimed

    def answer_claim(self, claimant: str, seq: int, slots: Iterable[Slot]) -> frozenset[Slot]:
        """A peer's claim: the slots granted to it (each now promised to it)."""
        granted = set()
        for slot in slots:
            if slot in self.held:
                continue
            promise = self.promised.get(slot)
            if promise is not None and promise[0] != claimant:
                continue
            if slot in self.pending:
                if self.me < claimant:
                    continue  # a tie: the identity that sorts first wins it
                self.pending.discard(slot)
            self.promised[slot] = (claimant, seq)
            granted.add(slot)
        return frozenset(granted)

    def settle(self, claimed: frozenset[Slot], grants: Iterable[frozenset[Slot] | None]) -> frozenset[Slot]:
        """All answers to a claim are in (None: a peer that did not answer); the slots now held."""
        taken = set(claimed & self.pending)
        for granted in grants:
            taken &= granted if granted is not None else frozenset()
        self.pending -= claimed
        self.held |= taken
        return frozenset(taken)

    # -- what peers say ---------------------------------------------------------------------
    def heard(self, state: PeerState) -> None:
        """A peer's state: promises to it that its later state shows it no longer needs are cleared."""
        wants = state.held | state.pending
        for slot, (claimant, seq) in list(self.promised.items()):
            if claimant == state.member and seq < state.seq and slot not in wants:
                del self.promised[slot]

    def forget(self, member: str) -> None:
        """`member`'s lease expired (or it left): it holds nothing, its promises are void."""
        for slot, (claimant, _) in list(self.promised.items()):
            if claimant == member:
                del self.promised[slot]

    # -- what the data plane may use --------------------------------------------------------
    def usable(self, share: Set[Slot]) -> dict[tuple[str, str], int]:
        """Per (deployment, replica URL): the slots this router may start new requests on."""
        return per_replica(self.held & share)
