"""PROXY protocol headers built byte by byte, as HAProxy's doc/proxy-protocol.txt describes them, for the
parser's tests and the listeners' (plain and TLS)."""

from __future__ import annotations

import ipaddress

from router.proxy_protocol import V2_SIGNATURE

PROXY, LOCAL = 0x1, 0x0
INET, INET6, UNIX, UNSPEC = 0x1, 0x2, 0x3, 0x0
STREAM, DGRAM = 0x1, 0x2


def v2(command: int = PROXY, family: int = INET, transport: int = STREAM, addresses: bytes = b"",
       tlvs: bytes = b"", version: int = 2, length: int | None = None) -> bytes:
    block = addresses + tlvs
    declared = len(block) if length is None else length
    return (V2_SIGNATURE + bytes([version << 4 | command, family << 4 | transport])
            + declared.to_bytes(2, "big") + block)


def inet(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed
            + source_port.to_bytes(2, "big") + destination_port.to_bytes(2, "big"))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value
