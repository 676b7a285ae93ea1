"""Who the routers are, and whether this one may use its slots: heartbeats, or Kubernetes Leases.

Both give a `View` each tick: the *members* the split is made among (sorted), the peers that
*may be alive* (every claim asks them all: a peer leaves that set only once it can no longer be
using a slot), and whether this router's own membership is *valid* (it may use its slots).

- `StaticPeers` (`--peers`): every router is configured; a peer is alive while it has been
  heard (a state message either way) within `--peer-timeout`, and one never heard counts as
  alive for the first `--peer-timeout` after start. This router is always valid: a heartbeat
  cannot tell a crashed peer from one cut off, so a partition may over-admit (README).
- `leases.LeasePeers` (`--peer-service`): one Lease per router in its namespace, renewed every 2 s
  with `--peer-timeout` as its duration; a peer is alive while its Lease was renewed within
  its duration as this router's clock observes it (as client-go does: clocks need not agree),
  and a member once it is also a ready endpoint of the peer Service (port `peer`). This router
  is valid until the duration, less a margin, after it *sent* its last successful renewal: it
  stops using its slots before any peer may see its Lease expire.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from router.errors import ConfigError
from router.peers.ledger import PeerState
from router.settings import host_and_port


@dataclass(frozen=True, slots=True)
class View:
    me: str
    valid: bool  # this router may use its slots
    members: tuple[str, ...]  # sorted: the split is among these
    alive: frozenset[str]  # peers (not this router) that may hold slots
    leaving: frozenset[str] = frozenset()

    def state_of(self, peer: str) -> str:
        if peer in self.leaving:
            return "leaving"
        return "member" if peer in self.members else "joining"


def own_address(host: str, port: int, environ: dict[str, str] | None = None) -> str:
    """How peers reach this router: `--host` when it is one address, else `POD_IP`."""
    environ = dict(os.environ) if environ is None else environ
    if host not in ("0.0.0.0", "::", ""):
        return join_host_port(host, port)
    pod_ip = environ.get("POD_IP", "")
    if not pod_ip:
        raise ConfigError(["peers: this router's own peer address is unknown: set --host to its address "
                           "(not 0.0.0.0), or POD_IP"])
    return join_host_port(pod_ip, port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_peers(text: str) -> tuple[str, ...]:
    """`--peers HOST:PORT,...` as identities; a ConfigError names the entry that is not one."""
    peers = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        parsed = host_and_port(entry)
        if parsed is None:
            raise ConfigError([f"peers: {entry!r} is not HOST:PORT"])
        peers.append(join_host_port(*parsed))
    return tuple(dict.fromkeys(peers))


@dataclass
class _Heard:
    at: float
    seq: int
    leaving: bool = False
    gone: bool = False  # left: leaving, and holds nothing any more


@dataclass
class Membership:
    """What both kinds share: the peers' own word (state messages) on leaving."""

    me: str
    timeout: float
    leaving: bool = False
    heard_from: dict[str, _Heard] = field(default_factory=dict)

    def heard(self, state: PeerState, now: float) -> None:
        if state.member == self.me:
            return
        last = self.heard_from.get(state.member)
        if last is not None and state.seq < last.seq:  # overtaken by a newer message: only a sign of life
            last.at = now
            return
        gone = state.leaving and not state.held and not state.pending
        self.heard_from[state.member] = _Heard(now, state.seq, state.leaving, gone)

    def recently_heard(self, now: float) -> set[str]:
        return {p for p, h in self.heard_from.items() if now - h.at < self.timeout and not h.gone}

    def said_leaving(self) -> frozenset[str]:
        return frozenset(p for p, h in self.heard_from.items() if h.leaving)

    def contacts(self, now: float) -> tuple[str, ...]:
        """Whom to send state messages to."""
        raise NotImplementedError

    def may_claim(self, peer: str) -> bool:
        """Whether `peer` may claim slots here: a router this membership can later tell departed."""
        return True

    def view(self, now: float) -> View:
        raise NotImplementedError

    def valid_through(self) -> float:
        """Until when (event-loop clock) this router may use its slots, as far as its membership knows."""
        return math.inf

    async def run(self) -> None:
        """Keep the membership fresh (nothing to do for heartbeats: the state messages are them)."""

    async def stop(self) -> None:
        """This router is leaving for good: tell the cluster (its Lease goes)."""

    async def close(self) -> None:
        """Release what the membership holds open (a connection to the API server)."""


@dataclass
class StaticPeers(Membership):
    peers: tuple[str, ...] = ()  # every router, this one included
    started: float = 0.0

    def contacts(self, now: float = 0.0) -> tuple[str, ...]:
        return tuple(p for p in self.peers if p != self.me)

    def may_claim(self, peer: str) -> bool:
        return peer in self.peers  # another list of --peers: a promise to it would never be forgotten

    def view(self, now: float) -> View:
        heard = self.recently_heard(now)
        starting = now - self.started < self.timeout
        alive = frozenset(p for p in self.contacts(now)
                          if p in heard or (starting and p not in self.heard_from))
        leaving = self.said_leaving()
        members = {p for p in alive if p in heard and p not in leaving}
        if not self.leaving:
            members.add(self.me)
        return View(self.me, True, tuple(sorted(members)), alive, leaving & alive)
