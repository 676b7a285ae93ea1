"""--proxy-protocol on the TLS listener: the header first, then the client's own handshake (issue 16).

The ClientHello stays in the kernel while the router reads the header, so the handshake works
whether the load balancer sends the header alone or in one packet with the ClientHello.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.proxy_headers import INET6, inet, v2
from tests.routing import StartedModel, answer_complete, connect, read_until, status_of
from tests.scrape import proxy_rejections
from tests.tls.conftest import TlsRouter, config_for, start_tls_router
from tests.tls.pki import CNAME, Pki

REQUEST = (b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer primary-key-0123456789\r\n"
           b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, pki: Pki, model: StartedModel) -> Iterator[TlsRouter]:
    directory = tmp_path_factory.mktemp("proxied-tls")
    cert, key = pki.write(directory / "tls", pki.pair(pki.server()))
    started = start_tls_router(directory, config_for(model), "--ssl-cert-pem-file", str(cert), "--ssl-key-pem-file",
                               str(key), "--ssl-cname", CNAME, "--proxy-protocol", "--trusted-proxies", "127.0.0.1")
    yield started
    started.process.stop()


def headers_seen(answer: bytes) -> dict[str, Any]:
    assert status_of(answer) == 200, answer[:300]
    return json.loads(answer.partition(b"\r\n\r\n")[2])["headers"]


def test_a_v2_header_sent_before_the_handshake(router: TlsRouter, pki: Pki) -> None:
    raw = connect(router.tls_port)
    raw.sendall(v2(addresses=inet("203.0.113.30", "127.0.0.1", 40000, 8443)))
    time.sleep(0.1)  # read by the router alone, before any byte of the handshake
    with pki.client().wrap_socket(raw, server_hostname=CNAME) as tls:
        tls.sendall(REQUEST)
        seen = headers_seen(read_until(tls, answer_complete))
    assert seen["x-forwarded-for"] == "203.0.113.30" and seen["x-forwarded-proto"] == "https"


def test_a_v2_header_in_one_packet_with_the_client_hello(router: TlsRouter, pki: Pki) -> None:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = pki.client().wrap_bio(incoming, outgoing, server_hostname=CNAME)
    with connect(router.tls_port) as sock:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        sock.sendall(v2(family=INET6, addresses=inet("2001:db8::30", "::1", 40000, 8443)) + outgoing.read())
        answer = exchange_over(tls, sock, incoming, outgoing)
    seen = headers_seen(answer)
    assert seen["x-forwarded-for"] == "2001:db8::30" and seen["x-forwarded-proto"] == "https"


def test_a_client_hello_without_a_header_is_closed_and_counted(router: TlsRouter, pki: Pki) -> None:
    with connect(router.tls_port) as raw, pytest.raises((ssl.SSLError, ConnectionError)):
        pki.client().wrap_socket(raw, server_hostname=CNAME)
    assert proxy_rejections(router)["malformed"] == 1  # (the only test here that is refused)


def exchange_over(tls: ssl.SSLObject, sock: socket.socket, incoming: ssl.MemoryBIO,
                  outgoing: ssl.MemoryBIO) -> bytes:
    """The handshake finished, REQUEST sent and its answer read, through memory BIOs over `sock`."""
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            chunk = sock.recv(65536)
            assert chunk, "closed during the handshake"
            incoming.write(chunk)
    tls.write(REQUEST)
    sock.sendall(outgoing.read())
    answer = b""
    while not answer_complete(answer):
        try:
            answer += tls.read(65536)
        except ssl.SSLWantReadError:
            chunk = sock.recv(65536)
            assert chunk, "closed before the answer"
            incoming.write(chunk)
    return answer
