"""Which router owns which slot: a pure function of the members and the deployments' replicas.

A deployment's slots are its replicas' (sorted by URL) times its cap, numbered replica by
replica; the members (sorted by identity) take consecutive, equal runs of that numbering, as
Knative's `assignSlice` hands consecutive pods to sorted activators. Each member's share is
within one slot of the average, and a run of consecutive slots is mostly whole replicas: with
4 or more slots per member most of a member's slots sit on replicas no other member uses.
Every member computes the same split from the same view; views that differ for a moment are
the handover's business (`ledger`), not this module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Slot = tuple[str, str, int]  # deployment ("namespace/name"), replica URL, index below the cap


@dataclass(frozen=True, slots=True)
class DeploymentSlots:
    """One deployment's capacity as the split sees it: its replicas and the cap of each."""

    replicas: tuple[str, ...]
    cap: int

    @property
    def total(self) -> int:
        return len(self.replicas) * self.cap


Capacity = Mapping[str, DeploymentSlots]  # by deployment ("namespace/name")


def deployment_share(deployment: str, slots: DeploymentSlots, members: Sequence[str], member: str) -> list[Slot]:
    """The slots of `deployment` that `member` owns among `members` (sorted; none if not a member)."""
    if member not in members or slots.cap < 1:
        return []
    count, position = len(members), members.index(member)
    replicas = sorted(slots.replicas)
    first, end = position * slots.total // count, (position + 1) * slots.total // count
    return [(deployment, replicas[n // slots.cap], n % slots.cap) for n in range(first, end)]


def share(capacity: Capacity, members: Iterable[str], member: str) -> frozenset[Slot]:
    """Every slot `member` owns among `members`, over all deployments."""
    ordered = sorted(set(members))
    return frozenset(slot for deployment, slots in capacity.items()
                     for slot in deployment_share(deployment, slots, ordered, member))


def all_slots(capacity: Capacity) -> frozenset[Slot]:
    return frozenset((deployment, url, index) for deployment, slots in capacity.items()
                     for url in slots.replicas for index in range(slots.cap))


def per_replica(slots: Iterable[Slot]) -> dict[tuple[str, str], int]:
    """How many of `slots` sit on each (deployment, replica URL)."""
    counts: dict[tuple[str, str], int] = {}
    for deployment, url, _ in slots:
        counts[deployment, url] = counts.get((deployment, url), 0) + 1
    return counts
