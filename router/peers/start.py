"""Putting the peer subsystem together from the settings: the key, the membership, the group."""

from __future__ import annotations

import asyncio
from pathlib import Path

from router.errors import ConfigError
from router.peers.channel import PeerClient
from router.peers.group import InUse, PeerGroup
from router.peers.membership import Membership, StaticPeers, own_address, parse_peers
from router.settings import RouterSettings, peer_key_problem


def peer_key(settings: RouterSettings) -> bytes:
    """The shared key, from ROUTER_PEER_KEY or --peer-key-file; a ConfigError names the setting."""
    if settings.peer_key_file:
        try:
            text = Path(settings.peer_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"peer_key_file: cannot read {settings.peer_key_file}: {exc}"]) from None
        source = "peer_key_file"
    else:
        text, source = (settings.peer_key or "").strip(), "peer_key"
    problem = peer_key_problem(text)
    if problem:
        raise ConfigError([f"{source}: the key {problem}"])
    return text.encode("ascii")


async def open_group(settings: RouterSettings, in_use: InUse, *, kubeconfig: str | None = None,
                     namespace: str | None = None, cluster: bool = False) -> PeerGroup:
    """The group for `--peers` or (`cluster`: the router runs with --kubernetes) `--peer-service`."""
    me = own_address(settings.host, settings.peer_port)
    timeout = settings.peer_timeout
    membership: Membership
    if settings.peer_service:
        if not cluster:
            raise ConfigError(["peer_service: needs --kubernetes (without a cluster, list the routers in --peers)"])
        from router.discovery.kubernetes.api import KubeApi  # the client library: only in a cluster
        from router.peers.leases import LeasePeers

        api = await KubeApi.connect(kubeconfig)
        membership = LeasePeers.create(api, namespace or api.namespace, settings.peer_service, me, timeout)
    else:
        peers = parse_peers(settings.peers)
        if me not in peers:
            raise ConfigError([f"peers: this router's own address {me} is not in the list (a router knows itself "
                               "by --host and --peer-port, or POD_IP)"])
        membership = StaticPeers(me=me, timeout=timeout, peers=peers, started=asyncio.get_running_loop().time())
    client = PeerClient(peer_key(settings), timeout=min(1.0, timeout / 4))
    return PeerGroup(membership, client, in_use)
