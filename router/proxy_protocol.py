"""The PROXY protocol (versions 1 and 2) header a load balancer puts before a connection's own bytes.

HAProxy's doc/proxy-protocol.txt is the specification; AWS NLB, Azure Private Link and HAProxy send it.
This module only reads bytes: `parse(data)` answers with the header at the start of `data`, None while
more bytes are needed, or ProxyProtocolError; `HeaderReader` does the same for bytes fed as they come.
It never looks past the length the header declares, so what follows (HTTP, or a TLS ClientHello) is
left untouched for whoever reads next.

Invariant the listener relies on: while the answer is "need more", every byte given so far belongs to
the header, so a listener may consume them from the socket without eating the client's data.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_BYTES = 107  # "PROXY UNKNOWN" with two full IPv6 addresses, two 5-digit ports and CRLF
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES = 16  # signature, version and command, family and transport, length
# The address block and TLVs a v2 header may declare. The spec allows 65535; load balancers send
# 12 or 36 address bytes and a few small TLVs (AWS: the VPC endpoint id, Azure: the link id).
V2_MAX_LENGTH = 4096
V2_ADDRESS_BYTES = {0x1: 12, 0x2: 36, 0x3: 216}  # by family: INET, INET6, UNIX
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyProtocolError(ValueError):
    """The bytes are not a PROXY protocol header the specification allows: the connection is to be closed."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int  # 1 or 2
    length: int  # bytes of the header: the client's own data starts here
    # (address, port) of the client the load balancer relays. None when the header carries none (v2
    # LOCAL: the balancer's own health check; v1 UNKNOWN; v2 UNSPEC, UNIX or UDP): the connection's
    # own peer stands.
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None  # the address the client connected to, when given
    local: bool = False  # v2 LOCAL: a connection of the load balancer itself, not relayed


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`; None when every byte so far is a valid start of one."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyProtocolError(f"no PROXY protocol header: the connection starts with {data[:8]!r}")


class HeaderReader:
    """Bytes fed as they arrive; `feed` answers None (more needed) or the header and the bytes after it."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        self._buffer += data
        header = parse(self._buffer)
        if header is None:
            return None
        rest, self._buffer = self._buffer[header.length:], b""
        return header, rest


def _parse_v1(data: bytes) -> ProxyHeader | None:
    start = data[:len(V1_PREFIX)]
    if start != V1_PREFIX[:len(start)]:
        raise ProxyProtocolError(f"a PROXY v1 header starts with 'PROXY ', not {start!r}")
    found = re.search(rb"[\r\n]", data[:V1_MAX_BYTES])
    if found is None or (found.group() == b"\r" and found.end() == len(data)):  # no end yet, or a CR before its LF
        if len(data) >= V1_MAX_BYTES:
            raise ProxyProtocolError(f"a PROXY v1 header is at most {V1_MAX_BYTES} bytes with its CRLF")
        return None
    end = found.start()
    if data[end:end + 2] != b"\r\n":  # a lone CR or LF ends no line
        raise ProxyProtocolError("a PROXY v1 header ends with CRLF, not a lone CR or LF")
    if end + 2 > V1_MAX_BYTES:
        raise ProxyProtocolError(f"a PROXY v1 header is at most {V1_MAX_BYTES} bytes with its CRLF")
    line, length = data[len(V1_PREFIX):end], end + 2
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):  # the rest of an UNKNOWN line is to be ignored
        return ProxyHeader(version=1, length=length)
    fields = line.split(b" ")
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("a PROXY v1 header is 'PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT' "
                                 "or 'PROXY UNKNOWN', with single spaces")
    family, source, destination, source_port, destination_port = fields
    version = 4 if family == b"TCP4" else 6
    return ProxyHeader(version=1, length=length,
                       client=(_v1_address(source, version), _v1_port(source_port)),
                       server=(_v1_address(destination, version), _v1_port(destination_port)))


def _v1_address(text: bytes, version: int) -> str:
    try:
        if b"%" in text:  # a zone belongs to the sender's own interfaces
            raise ValueError
        address = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        raise ProxyProtocolError(f"a PROXY v1 header has an invalid address {text[:40]!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"a PROXY v1 TCP{version} header has an IPv{address.version} address {text!r}")
    return str(address)


def _v1_port(text: bytes) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyProtocolError(f"a PROXY v1 header has an invalid port {text[:8]!r} (0 to 65535, "
                                 "no leading zeros)")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    start = data[:len(V2_SIGNATURE)]
    if start != V2_SIGNATURE[:len(start)]:
        raise ProxyProtocolError(f"a PROXY v2 header starts with its 12-byte signature, not {start!r}")
    if len(data) > 12 and data[12] >> 4 != 2:
        raise ProxyProtocolError(f"a PROXY v2 header has version 2, not {data[12] >> 4}")
    if len(data) > 12 and data[12] & 0xF > 1:
        raise ProxyProtocolError(f"a PROXY v2 header's command is LOCAL or PROXY, not {data[12] & 0xF}")
    if len(data) > 13 and (data[13] >> 4 > 3 or data[13] & 0xF > 2):
        raise ProxyProtocolError(f"a PROXY v2 header has an unknown address family or transport {data[13]:#04x}")
    if len(data) < V2_FIXED_BYTES:
        return None
    declared = int.from_bytes(data[14:16], "big")
    if declared > V2_MAX_LENGTH:
        raise ProxyProtocolError(f"a PROXY v2 header declares {declared} bytes of addresses and TLVs; "
                                 f"at most {V2_MAX_LENGTH} are accepted")
    length = V2_FIXED_BYTES + declared
    if len(data) < length:
        return None
    block = data[V2_FIXED_BYTES:length]
    local, family, transport = data[12] & 0xF == 0, data[13] >> 4, data[13] & 0xF
    address_bytes = V2_ADDRESS_BYTES.get(family, 0)
    if len(block) < address_bytes and not local:  # LOCAL's block is to be ignored, whatever it holds
        raise ProxyProtocolError(f"a PROXY v2 header declares {declared} bytes, fewer than the "
                                 f"{address_bytes} its address family takes")
    if not local and family:  # an UNSPEC block is to be ignored: it may hold addresses, not TLVs
        _check_tlvs(block[address_bytes:])
    if local or family not in (0x1, 0x2) or transport != 0x1:
        # LOCAL, UNSPEC, UNIX and UDP carry no TCP client: the spec lets the receiver use the real endpoints
        return ProxyHeader(version=2, length=length, local=local)
    size = 4 if family == 0x1 else 16
    source, destination = block[:size], block[size:2 * size]
    ports = block[2 * size:2 * size + 4]
    return ProxyHeader(version=2, length=length,
                       client=(str(ipaddress.ip_address(source)), int.from_bytes(ports[:2], "big")),
                       server=(str(ipaddress.ip_address(destination)), int.from_bytes(ports[2:], "big")))


def _check_tlvs(tlvs: bytes) -> None:
    """TLVs are skipped, but each must fit in the length the header declared."""
    at = 0
    while at < len(tlvs):
        if at + 3 > len(tlvs):
            raise ProxyProtocolError("a PROXY v2 header ends inside a TLV's type and length")
        at += 3 + int.from_bytes(tlvs[at + 1:at + 3], "big")
        if at > len(tlvs):
            raise ProxyProtocolError("a PROXY v2 TLV runs past the length the header declared")
