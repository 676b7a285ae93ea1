"""Several routers as one: each model replica's slots split among the routers, and handed over safely.

A deployment's capacity is its replicas times `maxConcurrentRequestsPerInstance`: that many *slots*,
numbered replica by replica (replicas sorted by URL). The routers that are members (sorted by
identity, `HOST:PORT` of the peer port) take consecutive, equal runs of them (`split`, as Knative's
`assignSlice`): a router's share is within one slot of the average and, with 4 or more slots per
router, mostly whole replicas. A router may start a request on a replica only within the slots of
that replica it *holds*.

Invariants (`ledger` proves the first two under any interleaving, in tests/peers/test_ledger.py):
- A slot is held by at most one router at any instant, whatever the routers' views of membership.
- A router's requests on a replica never outnumber the slots it holds there: it lets a slot go only
  when its requests fit in the rest, and starts new requests only on held slots still in its share.
  So no replica ever has more requests from all routers than its cap.
- A router uses slots only while its own membership is valid (Leases: before its Lease can expire
  in anybody's eyes); when it is not, it holds nothing.
- A slot moving from A to B is used by B only after A let it go, or after A's lease expired.

Handover (`ledger`): the owner under the split *claims* a slot from every peer that may be alive;
the holder refuses until it has let the slot go; a third router arbitrates two claimants by
promising the slot to one; two claimants that ask each other keep the one that sorts first. Join:
the newcomer claims its share as the others let it go (each as its requests on that replica end).
Graceful leave (drain): the router announces it is leaving, takes no new share, lets its slots go
as its requests end, then says it holds nothing (and deletes its Lease): the others take over at
once. Crash: the others wait for its lease to expire (`--peer-timeout`), forget it, and take its share.

Membership (`membership`, `leases`): with `--peers`, heartbeats (the state messages) over the peer
port: a crash is safe, but a partition is not told apart from a crash, so after `--peer-timeout`
each side may take the other's share and a replica every side reaches may get its cap from each.
With `--peer-service` (a cluster), a Lease per router decides: a router cut off from the API server
stops using its slots before its Lease can expire, and one cut off only from its peers keeps its
Lease, its share and nothing more (handovers with it wait): a partition never over-admits.

Forwarding (`forwarding`, not wired yet): a request that finds no free slot of its own goes, once,
to the member that says it has the most (`PeerGroup.forward_target`), carrying its endpoint,
deployment and the queue and request budgets left; the answer, the model's or that router's 502,
503 or 504, comes back unchanged.

The data plane's part (the integration step): a replica's cap at this router is
`PeerGroup.usable[(deployment, url)]` (pushed through `on_usable` when it changes), valid until
`PeerGroup.usable_until`; `in_use` reports its requests per replica (those on replicas that left
the table included) so that slots are let go only when free; a request with no own free slot asks
`forward_target`. A router whose Lease lapses must also end the requests it still has running
before the Lease can expire in the others' eyes (`usable_until` leaves a margin for that), or the
others' new requests would join them on the replica.
"""
