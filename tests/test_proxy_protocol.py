"""The PROXY protocol parser: the specification's examples, each refusal, and fuzzing.

doc/proxy-protocol.txt of HAProxy is the specification; the headers here are built byte by byte
as it describes them, independently of the parser.
"""

from __future__ import annotations

import argparse
import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import settings as router_settings
from router.errors import ConfigError
from router.proxy_protocol import (
    V1_MAX_BYTES,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    HeaderReader,
    ProxyHeader,
    ProxyProtocolError,
    parse,
)
from tests.proxy_headers import DGRAM, INET, INET6, LOCAL, PROXY, STREAM, UNIX, UNSPEC, inet, tlv, v2

HTTP = b"GET /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\n\r\n"
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # what follows the header on the TLS port


def test_the_setting_needs_trusted_proxies_from_flags_or_the_environment() -> None:
    parser = argparse.ArgumentParser()
    router_settings.add_arguments(parser)
    insecure = {"ROUTER_ALLOW_INSECURE_CONNECTIONS": "true"}
    assert router_settings.from_arguments(parser.parse_args([]), insecure).proxy_protocol is False
    for flags, environ in [(["--proxy-protocol"], {}), ([], {"ROUTER_PROXY_PROTOCOL": "true"}),
                           (["--proxy-protocol", "--trusted-proxies", " , "], {})]:
        with pytest.raises(ConfigError, match="--proxy-protocol: needs --trusted-proxies"):
            router_settings.from_arguments(parser.parse_args(flags), {**insecure, **environ})
    got = router_settings.from_arguments(parser.parse_args(["--trusted-proxies", "10.0.0.0/8"]),
                                         {**insecure, "ROUTER_PROXY_PROTOCOL": "true"})
    assert got.proxy_protocol is True and got.trusted_proxies == "10.0.0.0/8"


# -- version 1 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "client", "server"), [
    (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
     ("255.255.255.255", 65535), ("255.255.255.255", 65535)),
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", ("192.168.0.1", 56324), ("192.168.0.11", 443)),
    (b"PROXY TCP4 0.0.0.0 10.0.0.1 0 80\r\n", ("0.0.0.0", 0), ("10.0.0.1", 80)),
    (b"PROXY TCP6 " + b":".join([b"ffff"] * 8) + b" " + b":".join([b"ffff"] * 8) + b" 65535 65535\r\n",
     ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
    (b"PROXY TCP6 2001:DB8::1 ::1 1 2\r\n", ("2001:db8::1", 1), ("::1", 2)),
    (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", ("::ffff:c000:201", 1), ("::1", 2)),
])
def test_v1_tcp_headers_give_the_client_and_leave_the_request_untouched(
        line: bytes, client: tuple[str, int], server: tuple[str, int]) -> None:
    header = parse(line + HTTP)
    assert header == ProxyHeader(version=1, length=len(line), client=client, server=server)
    assert HeaderReader().feed(line + HTTP) == (header, HTTP)


def test_the_specifications_longest_lines_are_accepted_and_one_byte_more_is_not() -> None:
    six = b":".join([b"ffff"] * 8)
    tcp6 = b"PROXY TCP6 " + six + b" " + six + b" 65535 65535\r\n"
    worst = b"PROXY UNKNOWN " + six + b" " + six + b" 65535 65535\r\n"
    assert (len(b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"), len(tcp6), len(worst)) == (56, 104, 107)
    assert parse(worst + HTTP) == ProxyHeader(version=1, length=107)
    with pytest.raises(ProxyProtocolError, match="at most 107 bytes"):
        parse(b"PROXY UNKNOWN " + six + b" " + six + b" 65535 655350\r\n")
    # without a CRLF, the 107th byte is where waiting ends
    assert parse(b"PROXY UNKNOWN " + b"x" * (V1_MAX_BYTES - 15)) is None
    with pytest.raises(ProxyProtocolError, match="at most 107 bytes"):
        parse(b"PROXY UNKNOWN " + b"x" * (V1_MAX_BYTES - 14))


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                                  b"PROXY UNKNOWN anything at all\r\n"])
def test_v1_unknown_keeps_the_connections_own_peer(line: bytes) -> None:
    assert parse(line + HTTP) == ProxyHeader(version=1, length=len(line), client=None)


@pytest.mark.parametrize(("data", "message"), [
    (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    (b"\x16\x03\x01", "no PROXY protocol header"),  # a TLS client straight to the port
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
    (b"PROXY UNKNOWNX\r\n", "single spaces"),
    (b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "starts with 'PROXY '"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "invalid address"),  # octal-looking
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "invalid address"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "invalid address"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "invalid address"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "IPv6 address"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv4 address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "invalid port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "invalid port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "invalid port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", "invalid port"),  # a non-ASCII digit
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "lone CR or LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "lone CR or LF"),
    (b"PROXY UNKNOWN\n", "lone CR or LF"),
])
def test_v1_refusals_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse(data + HTTP)


def test_a_header_that_cannot_become_one_is_refused_at_its_first_wrong_byte() -> None:
    for data in (b"G", b"PROXI", b"PROXY UNKNOWN\n", b"PROXY TCP4 1.2.3.4\r\r", b"\r\n\r\n\x01",
                 b"\r\n\r\n\x00\r\nQUIT\n\x10", b"\r\n\r\n\x00\r\nQUIT\n\x22",
                 b"\r\n\r\n\x00\r\nQUIT\n\x21\x41"):
        with pytest.raises(ProxyProtocolError):
            parse(data)


# -- version 2 -----------------------------------------------------------------------------------------

def test_v2_tcp4_and_tcp6_give_the_client_and_leave_the_tls_bytes_untouched() -> None:
    four = v2(addresses=inet("203.0.113.7", "10.0.0.5", 50123, 8443))
    assert len(four) == 28
    header = ProxyHeader(version=2, length=28, client=("203.0.113.7", 50123), server=("10.0.0.5", 8443))
    assert parse(four + CLIENT_HELLO) == header
    assert HeaderReader().feed(four + CLIENT_HELLO) == (header, CLIENT_HELLO)
    six = v2(family=INET6, addresses=inet("2001:db8::7", "2001:db8::1", 1, 443))
    assert len(six) == 52
    assert parse(six + CLIENT_HELLO) == ProxyHeader(version=2, length=52, client=("2001:db8::7", 1),
                                                    server=("2001:db8::1", 443))


def test_v2_local_is_a_health_check_of_the_load_balancer_without_a_client_address() -> None:
    bare = v2(LOCAL, UNSPEC, 0)
    assert parse(bare + HTTP) == ProxyHeader(version=2, length=16, local=True)
    # whatever a LOCAL header declares is skipped, even addresses and bytes that are no TLVs
    skipped = v2(LOCAL, INET, STREAM, addresses=inet("1.2.3.4", "5.6.7.8", 1, 2), tlvs=b"\xff\xff")
    assert parse(skipped + HTTP) == ProxyHeader(version=2, length=len(skipped), local=True)


@pytest.mark.parametrize("family_transport", [(UNSPEC, 0), (UNIX, STREAM), (INET, DGRAM), (INET6, 0)])
def test_v2_proxy_without_a_tcp_client_keeps_the_connections_own_peer(family_transport: tuple[int, int]) -> None:
    family, transport = family_transport
    size = {UNSPEC: 0, INET: 12, INET6: 36, UNIX: 216}[family]
    header = v2(PROXY, family, transport, addresses=b"\x01" * size)
    assert parse(header + HTTP) == ProxyHeader(version=2, length=len(header), client=None)


def test_v2_tlvs_are_skipped_whatever_their_type() -> None:
    aws = tlv(0xEA, b"\x01" + b"vpce-08d2bf15fac5001c9")  # AWS PrivateLink: the VPC endpoint id
    azure = tlv(0xEE, b"\x01" + (1234).to_bytes(4, "little"))  # Azure Private Link: the link id
    crc, noop, empty = tlv(0x03, b"\x00" * 4), tlv(0x04, b"\x00" * 9), tlv(0x30, b"")
    header = v2(addresses=inet("198.51.100.2", "10.0.0.5", 7, 8443), tlvs=aws + azure + crc + noop + empty)
    assert parse(header + CLIENT_HELLO) == ProxyHeader(version=2, length=len(header), client=("198.51.100.2", 7),
                                                       server=("10.0.0.5", 8443))


@pytest.mark.parametrize(("data", "message"), [
    (v2(version=1, addresses=inet("1.2.3.4", "5.6.7.8", 1, 2)), "version 2, not 1"),
    (v2(version=3, addresses=inet("1.2.3.4", "5.6.7.8", 1, 2)), "version 2, not 3"),
    (v2(command=0x2), "LOCAL or PROXY, not 2"),
    (v2(family=0x4), "unknown address family or transport"),
    (v2(transport=0x3), "unknown address family or transport"),
    (v2(addresses=b"\x01" * 11), "fewer than the 12"),
    (v2(family=INET6, addresses=inet("1.2.3.4", "5.6.7.8", 1, 2)), "fewer than the 36"),
    (v2(addresses=inet("1.2.3.4", "5.6.7.8", 1, 2), tlvs=b"\x04\x00"), "inside a TLV's type and length"),
    (v2(addresses=inet("1.2.3.4", "5.6.7.8", 1, 2), tlvs=b"\x04\x00\x05abcd"), "runs past"),
    (v2(addresses=inet("1.2.3.4", "5.6.7.8", 1, 2), tlvs=tlv(4, b"") + b"\x04\xff\xff"), "runs past"),
    (v2(length=V2_MAX_LENGTH + 1), f"at most {V2_MAX_LENGTH}"),
    (v2(length=65535), f"at most {V2_MAX_LENGTH}"),
    (b"\r\n\r\n\x00\r\nQUIX\n", "12-byte signature"),
])
def test_v2_refusals_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse(data + b"\x00" * 300)


def test_a_v2_header_at_its_length_bound_is_accepted_and_its_length_is_refused_before_it_arrives() -> None:
    addresses = inet("1.2.3.4", "5.6.7.8", 1, 2)
    largest = v2(addresses=addresses, tlvs=tlv(0x04, b"\x00" * (V2_MAX_LENGTH - 12 - 3)))
    assert parse(largest).length == 16 + V2_MAX_LENGTH  # type: ignore[union-attr]
    with pytest.raises(ProxyProtocolError):
        parse(v2(length=V2_MAX_LENGTH + 1)[:16])  # 16 bytes are enough to refuse it


def test_bytes_fed_one_at_a_time_give_the_header_once_it_is_complete() -> None:
    for data in (b"PROXY TCP4 192.0.2.1 192.0.2.2 4000 80\r\n", v2(addresses=inet("192.0.2.1", "192.0.2.2", 4000, 80))):
        reader = HeaderReader()
        answers = [reader.feed(data[i:i + 1]) for i in range(len(data))]
        assert answers[:-1] == [None] * (len(data) - 1)
        assert answers[-1] == (ProxyHeader(version=1 if data[:1] == b"P" else 2, length=len(data),
                                           client=("192.0.2.1", 4000), server=("192.0.2.2", 80)), b"")


# -- fuzzing -------------------------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
ports = st.integers(0, 65535)


@st.composite
def v1_headers(draw: st.DrawFn) -> tuple[bytes, tuple[str, int] | None]:
    family = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    if family == "UNKNOWN":
        tail = draw(st.binary(max_size=V1_MAX_BYTES - 15).filter(lambda b: b"\r" not in b and b"\n" not in b))
        return b"PROXY UNKNOWN" + (b" " + tail[:-1] if tail else b"") + b"\r\n", None
    addresses = ipv4 if family == "TCP4" else ipv6
    source, destination, sport, dport = draw(addresses), draw(addresses), draw(ports), draw(ports)
    line = f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode()
    return line, (str(source), sport)


@st.composite
def v2_headers(draw: st.DrawFn) -> tuple[bytes, tuple[str, int] | None]:
    command = draw(st.sampled_from([PROXY, LOCAL]))
    family = draw(st.sampled_from([INET, INET6]))
    addresses = ipv4 if family == INET else ipv6
    source, destination, sport, dport = draw(addresses), draw(addresses), draw(ports), draw(ports)
    tlvs = b"".join(tlv(kind, value) for kind, value in draw(st.lists(
        st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4)))
    header = v2(command, family, STREAM, inet(str(source), str(destination), sport, dport), tlvs)
    return header, (str(source), sport) if command == PROXY else None


@settings(max_examples=400, deadline=None)
@given(v1_headers() | v2_headers(), st.binary(max_size=60))
def test_any_valid_header_is_read_exactly_and_every_prefix_of_it_asks_for_more(
        made: tuple[bytes, tuple[str, int] | None], after: bytes) -> None:
    header_bytes, client = made
    header = parse(header_bytes + after)
    assert header is not None and header.length == len(header_bytes) and header.client == client
    assert parse(header_bytes) == header  # nothing after the declared length was looked at
    for cut in range(len(header_bytes)):
        assert parse(header_bytes[:cut]) is None


def check_answer(data: bytes) -> None:
    """None, a header no longer than the data that reads the same without what follows, or our error."""
    try:
        header = parse(data)
    except ProxyProtocolError as exc:
        assert str(exc)
        return
    if header is None:
        # "need more": every byte so far is part of a header, so a listener may consume them all
        assert len(data) < 16 + V2_MAX_LENGTH
        for more in (b"\r\n", b"\n", b" 1 2\r\n", b"\x00" * (16 + V2_MAX_LENGTH)):
            try:
                later = parse(data + more)
            except ProxyProtocolError:
                continue
            assert later is None or later.length >= len(data)
        return
    assert 15 <= header.length <= len(data)
    assert parse(data[:header.length]) == header
    assert header.client is None or (ipaddress.ip_address(header.client[0]) and 0 <= header.client[1] <= 65535)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda start, rest: start + rest,
                                            st.sampled_from([b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ",
                                                             V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11"]),
                                            st.binary(max_size=120)))
def test_arbitrary_bytes_get_a_header_more_or_a_proxy_protocol_error(data: bytes) -> None:
    check_answer(data)


def test_mutated_headers_get_a_header_more_or_a_proxy_protocol_error() -> None:
    rng = random.Random(20261208)
    seeds = [b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n",
             b"PROXY UNKNOWN\r\n", v2(addresses=inet("1.2.3.4", "5.6.7.8", 1, 2), tlvs=tlv(0xEA, b"\x01vpce")),
             v2(family=INET6, addresses=inet("::1", "::2", 3, 4)), v2(LOCAL, UNSPEC, 0)]
    for _ in range(3000):  # bounded: 3000 mutations
        data = bytearray(rng.choice(seeds) + HTTP)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[at] = rng.randrange(256)
            else:
                del data[at:at + rng.randint(1, 4)]
        check_answer(bytes(data))
