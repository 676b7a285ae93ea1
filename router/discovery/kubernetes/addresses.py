"""Which EndpointSlice addresses may become replicas (CVE-2021-25740's class of attack).

Whoever can write an EndpointSlice labelled with a referenced Service's name can point
scoring traffic, with the client's headers and query string, wherever the slice says. So
only IP addresses are taken (never an FQDN slice, which names any host), and never the
addresses a pod has no business serving a model on: loopback (the router's own ports),
link-local (169.254.0.0/16 holds the cloud metadata services; fe80::/10), unspecified or
multicast addresses, and the router's own addresses. Loopback and the router's own
addresses are admitted with `allow_loopback` (--allow-loopback-replicas), for replicas that
run on the router's machine (tests, a single-host demo); link-local never is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_loopback: bool = False
    own: frozenset[IpAddress] = frozenset()  # the router's own addresses

    def refusal(self, address: str) -> str | None:
        """Why `address` may not be a replica, or None when it may."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return "not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if ip.is_link_local:
            return "a link-local address (cloud metadata services live there)"
        if ip.is_unspecified or ip.is_multicast:
            return "not a unicast address"
        if self.allow_loopback:
            return None
        if ip.is_loopback:
            return "a loopback address (--allow-loopback-replicas admits it, for replicas on the router's machine)"
        if ip in self.own:
            return "one of the router's own addresses (--allow-loopback-replicas admits it)"
        return None


def own_addresses() -> frozenset[IpAddress]:
    """The addresses of this host (a pod's IPs: its hostname resolves to them) and POD_IP(S) if set."""
    found: set[IpAddress] = set()
    names = [part.strip() for var in ("POD_IP", "POD_IPS") for part in (os.environ.get(var) or "").split(",")]
    with contextlib.suppress(OSError):
        names += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    for name in names:
        with contextlib.suppress(ValueError):
            found.add(ipaddress.ip_address(name.split("%")[0]))
    return frozenset(found)
