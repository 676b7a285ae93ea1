"""What a client connection may send and how long it may take, read once from the settings."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from router.errors import ConfigError
from router.settings import RouterSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


MAX_BODY_BYTES = 100 * 1024 * 1024  # the default limit of a request body
# One client address may hold at most this share of --max-connections by default: it takes ten
# addresses, not one, to fill the router, while a NAT or a node's SNAT still gets a large share.
PER_CLIENT_SHARE = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_header_count: int = 100
    max_header_bytes: int = 32 * 1024
    max_url_bytes: int = 8 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 60.0
    send_timeout: float = 60.0
    max_connections: int = 10_000
    max_connections_per_client: int = 1_000
    trusted_proxies: tuple[Network, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> ClientLimits:
        networks = []
        for item in filter(None, (part.strip() for part in settings.trusted_proxies.split(","))):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError([f"trusted_proxies: {item!r} is not an address or network"]) from None
        per_client = settings.max_connections_per_client or max(1, settings.max_connections // PER_CLIENT_SHARE)
        return cls(max_body_bytes=settings.max_request_body_bytes, max_header_count=settings.max_header_count,
                   max_header_bytes=settings.max_header_bytes, max_url_bytes=settings.max_url_bytes,
                   header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
                   keepalive_timeout=settings.keepalive_timeout, send_timeout=settings.send_timeout,
                   max_connections=settings.max_connections, max_connections_per_client=per_client,
                   trusted_proxies=tuple(networks))

    def trusts(self, host: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)
