"""Real handshakes with a router process: what it accepts, what it refuses, and how it refuses."""

from __future__ import annotations

import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.routing import Config, StartedModel, connect, exchange, one_shot_replica, wait_until
from tests.tls.conftest import TlsRouter, config_for, start_tls_router
from tests.tls.pki import CNAME, Pki, leaf_fingerprint, served_fingerprint

STRONG_TLS12 = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, pki: Pki, model: StartedModel) -> Iterator[TlsRouter]:
    directory = tmp_path_factory.mktemp("router")
    server = pki.server()
    cert, key = pki.write(directory / "tls", pki.pair(server))
    started = start_tls_router(directory, config_for(model), "--ssl-cert-pem-file", str(cert),
                               "--ssl-key-pem-file", str(key), "--ssl-cname", CNAME,
                               "--allow-insecure-connections", "--port", "0")
    started.process.ready["sha256"] = leaf_fingerprint(server)
    yield started
    assert started.process.stop() == 0


def handshake(port: int, context: ssl.SSLContext, server_hostname: str | None = CNAME) -> tuple[str, str, str | None]:
    """(protocol version, cipher, ALPN protocol) of a completed handshake."""
    with connect(port) as sock, context.wrap_socket(sock, server_hostname=server_hostname) as tls:
        cipher = tls.cipher()
        assert cipher is not None and tls.compression() is None
        return str(tls.version()), cipher[0], tls.selected_alpn_protocol()


def unverified(version: ssl.TLSVersion, ciphers: str = "ALL:@SECLEVEL=0") -> ssl.SSLContext:
    """A client that offers only `version` and `ciphers`, and trusts anything: only the server can refuse."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1 are deprecated: that is the point
        context.minimum_version = context.maximum_version = version
    context.set_ciphers(ciphers)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def test_a_client_trusting_the_dev_ca_verifies_the_name_and_the_address(router: TlsRouter, pki: Pki) -> None:
    assert handshake(router.tls_port, pki.client()) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384", None)
    assert served_fingerprint(router.tls_port, pki.client()) == router.process.ready["sha256"]
    assert served_fingerprint(router.tls_port, pki.client(), "127.0.0.1") == router.process.ready["sha256"]
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(router.tls_port, pki.client(), "other.test")
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate in certificate chain"):
        handshake(router.tls_port, ssl.create_default_context())  # the system's CAs do not know the dev CA


def test_alpn_selects_http_1_1(router: TlsRouter, pki: Pki) -> None:
    client = pki.client()
    client.set_alpn_protocols(["h2", "http/1.1"])
    assert handshake(router.tls_port, client)[2] == "http/1.1"


def test_scoring_over_tls_reaches_the_model_as_https(router: TlsRouter, pki: Pki) -> None:
    with httpx.Client(verify=pki.client(), timeout=10) as client:
        for _ in range(3):  # one keep-alive connection
            response = client.post(router.url(), headers=router.auth, content=b'{"x": 1}')
            assert response.status_code == 200, response.text
            assert response.json()["headers"]["x-forwarded-proto"] == "https"
            assert response.http_version == "HTTP/1.1"


def test_a_mirrored_copy_reaches_the_shadow_as_https_too(tmp_path: Path, pki: Pki, model: StartedModel) -> None:
    seen: list[bytes] = []
    with one_shot_replica(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", seen) as shadow:
        config = Config(mirror={"shadow": 50}).deployment("blue", [model.url], weight=100).deployment("shadow",
                                                                                                     [shadow])
        cert, key = pki.write(tmp_path / "tls", pki.pair(pki.server()))
        router = start_tls_router(tmp_path, config, "--ssl-cert-pem-file", str(cert), "--ssl-key-pem-file", str(key),
                                  "--ssl-cname", CNAME)
        try:
            with httpx.Client(verify=pki.client(), timeout=10) as client:
                for _ in range(2):  # 50 %: one of the two is copied
                    assert client.post(router.url(), headers=router.auth, content=b"{}").status_code == 200
            wait_until(lambda: seen, 10, "the shadow got its copy")
        finally:
            assert router.process.stop() == 0
    assert b"\r\nx-forwarded-proto: https\r\n" in seen[0].lower()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLS1.0", "TLS1.1"])
def test_tls_before_1_2_is_refused(router: TlsRouter, version: ssl.TLSVersion) -> None:
    with pytest.raises(ssl.SSLError) as caught:
        handshake(router.tls_port, unverified(version))
    # the server hung up on the hello; the client itself was willing (it fails only on the server's answer)
    assert caught.value.reason in ("UNEXPECTED_EOF_WHILE_READING", "TLSV1_ALERT_PROTOCOL_VERSION"), caught.value
    assert handshake(router.tls_port, unverified(ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"


def test_tls_1_2_offers_only_forward_secret_aead_ciphers(router: TlsRouter) -> None:
    """Offer each TLS 1.2 cipher the client library knows, alone: only the strong ones are accepted."""
    known = [c["name"] for c in unverified(ssl.TLSVersion.TLSv1_2, "ALL:COMPLEMENTOFALL:@SECLEVEL=0").get_ciphers()
             if c["protocol"] != "TLSv1.3"]
    accepted, refused = set(), set()
    for name in known:
        try:
            accepted.add(handshake(router.tls_port, unverified(ssl.TLSVersion.TLSv1_2, f"{name}:@SECLEVEL=0"))[1])
        except ssl.SSLError as exc:
            if exc.reason != "NO_CIPHERS_AVAILABLE":  # the client cannot offer it over TLS 1.2 at all
                refused.add(name)
    assert accepted == STRONG_TLS12
    for weak in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256", "AES256-SHA",
                 "ECDHE-RSA-AES128-GCM-SHA256"):  # CBC, no forward secrecy, or a key type it does not hold
        assert weak in refused
    assert len(refused) > 30


def test_plain_http_to_the_tls_port_is_closed_at_once(router: TlsRouter) -> None:
    started = time.monotonic()
    with connect(router.tls_port) as sock:
        sock.sendall(b"GET /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: router\r\n\r\n")
        try:
            answer = sock.recv(1024)
        except ConnectionResetError:
            answer = b""
    assert answer == b""
    assert time.monotonic() - started < 2


def client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=CNAME)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_tls_handshake_to_the_plain_port_gets_a_400_and_a_close(router: TlsRouter, pki: Pki) -> None:
    assert router.port is not None
    answer = exchange(router.port, client_hello())
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in answer.lower()
    started = time.monotonic()
    with pytest.raises(ssl.SSLError):  # a TLS client fails fast: it does not wait for its timeout
        handshake(router.port, pki.client())
    assert time.monotonic() - started < 2
