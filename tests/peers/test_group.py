"""The peer group's own decisions, without the network: where to forward, who may claim, who is a peer."""

from __future__ import annotations

import asyncio

from router.peers.channel import PeerClient
from router.peers.group import PeerGroup
from router.peers.leases import ready_endpoints
from router.peers.ledger import PeerState
from router.peers.membership import StaticPeers, View
from tests.kube.cluster import endpoint_slice

PEERS = ("10.0.0.1:9091", "10.0.0.2:9091", "10.0.0.3:9091", "10.0.0.4:9091")


def group() -> PeerGroup:
    membership = StaticPeers(me=PEERS[0], timeout=5.0, peers=PEERS[:3])
    return PeerGroup(membership, PeerClient(b"k" * 16, timeout=1.0), dict)


def test_a_request_goes_to_the_member_with_the_most_free_slots() -> None:
    async def main() -> None:
        g = group()
        g.view = View(PEERS[0], True, PEERS[:3], frozenset(PEERS[1:3]), frozenset())
        g.on_state(PeerState(PEERS[1], 1, free=(("ns/blue", 1), ("ns/green", 4))))
        g.on_state(PeerState(PEERS[2], 1, free=(("ns/blue", 3),)))
        assert g.forward_target("ns/blue") == PEERS[2]
        assert g.forward_target("ns/green") == PEERS[1]
        assert g.forward_target("ns/red") is None  # nobody has a slot: queue here
        g.view = View(PEERS[0], True, PEERS[:2], frozenset(PEERS[1:3]), frozenset({PEERS[2]}))
        assert g.forward_target("ns/blue") == PEERS[1]  # a leaving router takes no new requests
        await g.close()
    asyncio.run(main())


def test_a_router_outside_the_static_list_may_not_claim() -> None:
    async def main() -> None:
        g = group()
        slot = ("ns/blue", "http://r1", 0)
        assert g.on_claim(PEERS[3], 1, frozenset({slot})) == frozenset()
        assert g.on_claim(PEERS[1], 1, frozenset({slot})) == {slot}
        await g.close()
    asyncio.run(main())


def test_a_late_message_does_not_undo_a_newer_one() -> None:
    membership = StaticPeers(me=PEERS[0], timeout=5.0, peers=PEERS[:2])
    membership.heard(PeerState(PEERS[1], 20), now=1.0)  # a new incarnation, holding slots
    membership.heard(PeerState(PEERS[1], 10, leaving=True), now=1.1)  # its old self's farewell, late
    view = membership.view(2.0)
    assert PEERS[1] in view.alive and PEERS[1] in view.members and not view.leaving
    membership.heard(PeerState(PEERS[1], 21, leaving=True), now=2.5)  # now it really leaves, holding nothing
    assert PEERS[1] not in membership.view(3.0).alive


def test_the_peer_service_members_are_its_serving_endpoints_on_the_peer_port() -> None:
    slices = [endpoint_slice("a", "peers", 9091, address="10.0.0.1", port_name="peer"),
              endpoint_slice("b", "peers", 9091, address="10.0.0.2", port_name="peer", ready=False),
              endpoint_slice("c", "peers", 9091, address="10.0.0.3", port_name="peer", terminating=True),
              endpoint_slice("d", "peers", 9091, address="fd00::4", port_name="peer"),
              endpoint_slice("e", "peers", 8080, address="10.0.0.5")]  # no port named peer
    unset = endpoint_slice("f", "peers", 9091, address="10.0.0.6", port_name="peer")
    unset["endpoints"][0]["conditions"] = {}  # unset: ready, not terminating
    assert ready_endpoints([*slices, unset]) == {"10.0.0.1:9091", "[fd00::4]:9091", "10.0.0.6:9091"}
