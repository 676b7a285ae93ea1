"""Each problem with a certificate pair is found before OpenSSL sees it, with a message naming its input."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from router.errors import ConfigError
from router.tls import PemFiles, PemPair, SecretDocument, ServerTls, secret_data, secret_pair, validate
from router.tls.certs import dev_ca, server_certificate
from router.tls.material import name_matches
from tests.tls.pki import CNAME, DAY, MINUTE, Pki, leaf_fingerprint, new_pki, now, odd_certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return new_pki(tmp_path_factory.mktemp("pki"))


def problems(pair: PemPair, *, password: str | None = None, cname: str | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(pair, password=password, cname=cname)
    return "\n".join(caught.value.problems)


def test_a_good_pair_is_described(pki: Pki) -> None:
    server = pki.server()
    info = validate(pki.pair(server), cname=CNAME)
    assert info.subject == f"CN={CNAME}"
    assert info.names == (f"DNS:{CNAME}", "IP:127.0.0.1", "IP:::1")
    assert info.chain == ((f"CN={CNAME}", "CN=inference-router dev CA"),
                          ("CN=inference-router dev CA", "CN=inference-router dev CA"))
    assert info.fingerprint == leaf_fingerprint(server)
    assert 364 < info.days_left(now()) <= 365


def test_the_key_must_match_the_certificate(pki: Pki) -> None:
    other = pki.server()
    found = problems(pki.pair(key=other.key_pem()))
    assert found == f"key.pem: the private key does not match the certificate (CN={CNAME}) in cert.pem"


def test_a_chain_with_the_ca_first_is_out_of_order(pki: Pki) -> None:
    server = pki.server()
    found = problems(pki.pair(cert=pki.ca.cert_pem() + server.cert_pem(), key=server.key_pem()))
    assert found.startswith("cert.pem: chain out of order: certificate 2 (CN=router.test) is the server certificate")
    assert "expected the server certificate first, then its intermediates, then (optionally) the root" in found


def test_a_ca_certificate_alone_is_not_a_server_certificate(pki: Pki) -> None:
    found = problems(pki.pair(cert=pki.ca.cert_pem(), key=pki.ca.key_pem()))
    assert found.startswith("cert.pem: certificate 1 (CN=inference-router dev CA) is a CA certificate, "
                            "and no server certificate follows")


def test_intermediates_must_follow_the_server_in_order(pki: Pki) -> None:
    root = dev_ca("test root", path_length=1)
    intermediate = dev_ca("test intermediate", issuer=root)
    leaf = server_certificate(intermediate, CNAME)
    good = leaf.cert_pem() + intermediate.cert_pem() + root.cert_pem()
    assert validate(pki.pair(cert=good, key=leaf.key_pem())).chain[1] == ("CN=test intermediate", "CN=test root")
    validate(pki.pair(cert=leaf.cert_pem() + intermediate.cert_pem(), key=leaf.key_pem()))  # root left out
    swapped = leaf.cert_pem() + root.cert_pem() + intermediate.cert_pem()
    found = problems(pki.pair(cert=swapped, key=leaf.key_pem()))
    assert "chain out of order: certificate 2 (CN=test root) did not issue certificate 1 (CN=router.test, " \
           "issued by CN=test intermediate)" in found
    foreign = leaf.cert_pem() + pki.ca.cert_pem()  # a CA that did not sign it
    assert "certificate 2 (CN=inference-router dev CA) did not issue certificate 1" in problems(
        pki.pair(cert=foreign, key=leaf.key_pem()))


def test_an_expired_certificate(pki: Pki) -> None:
    expired = pki.server(not_before=now() - 10 * DAY, not_after=now() - DAY)
    found = problems(pki.pair(expired))
    assert found == (f"cert.pem: certificate 1 (CN={CNAME}) expired on "
                     f"{expired.cert.not_valid_after_utc.isoformat()}")


def test_a_certificate_not_valid_yet(pki: Pki) -> None:
    future = pki.server(not_before=now() + DAY, not_after=now() + 10 * DAY)
    found = problems(pki.pair(future))
    assert found == (f"cert.pem: certificate 1 (CN={CNAME}) is not valid yet: not before "
                     f"{future.cert.not_valid_before_utc.isoformat()}")


def test_a_certificate_issued_a_moment_ago_by_a_clock_slightly_ahead_is_accepted(pki: Pki) -> None:
    validate(pki.pair(pki.server(not_before=now() + MINUTE)))  # a minute ahead


def test_the_cname_must_be_in_the_subject_alt_name(pki: Pki) -> None:
    pair = pki.pair()
    assert problems(pair, cname="other.test") == (
        "cert.pem: sslCname 'other.test' is not covered by the certificate's subjectAltName "
        "(DNS:router.test, IP:127.0.0.1, IP:::1)")
    validate(pair, cname="ROUTER.test.")  # names compare without case and trailing dot
    validate(pair, cname="127.0.0.1")
    assert "sslCname '10.0.0.1'" in problems(pair, cname="10.0.0.1")


def test_a_wildcard_certificate_covers_one_label(pki: Pki) -> None:
    pair = pki.pair(pki.server("*.models.example"))
    validate(pair, cname="mnist.models.example")
    assert "sslCname 'models.example'" in problems(pair, cname="models.example")
    assert "sslCname 'a.b.models.example'" in problems(pair, cname="a.b.models.example")


@pytest.mark.parametrize(("pattern", "host", "matches"), [
    ("router.test", "router.test", True),
    ("Router.Test", "router.TEST.", True),
    ("*.example.com", "api.example.com", True),
    ("*.example.com", "example.com", False),  # the wildcard stands for exactly one label
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", ".example.com", False),  # ... and a non-empty one
    ("*.com", "example.com", False),  # not on a single-label suffix
    ("a*.example.com", "abc.example.com", False),  # partial wildcards are not honoured
    ("*a.example.com", "ba.example.com", False),
    ("api.*.com", "api.example.com", False),  # only in the left-most label
    ("*.*.example.com", "a.b.example.com", False),
    ("*.example.com", "*.example.com", True),  # a wildcard sslCname names the same wildcard
    ("xn--bcher-kva.example", "bücher.example", True),  # IDNA
    ("", "router.test", False),
])
def test_name_matching_follows_rfc_6125(pattern: str, host: str, matches: bool) -> None:
    assert name_matches(pattern, host) is matches


def test_a_certificate_for_clients_only_is_refused(pki: Pki) -> None:
    cert, key = odd_certificate(pki.ca, client_only=True)
    assert f"certificate 1 (CN={CNAME}) is not for servers: its extendedKeyUsage lacks serverAuth" in problems(
        pki.pair(cert=cert, key=key))


@pytest.mark.parametrize("traditional", [False, True], ids=["pkcs8", "openssl-legacy"])
def test_an_encrypted_key_needs_its_password(pki: Pki, traditional: bool) -> None:
    server = pki.server()
    if traditional:
        key = server.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.BestAvailableEncryption(b"s3cret"))
        assert b"Proc-Type: 4,ENCRYPTED" in key
    else:
        key = server.key_pem("s3cret")
        assert b"ENCRYPTED PRIVATE KEY" in key
    pair = pki.pair(server, key=key)
    assert problems(pair) == ("key.pem: the private key is protected by a passphrase: set sslKeyPassword "
                              "(--ssl-key-password or ROUTER_SSL_KEY_PASSWORD)")
    assert problems(pair, password="wrong") == "key.pem: sslKeyPassword does not decrypt the private key"
    assert validate(pair, password="s3cret").fingerprint == leaf_fingerprint(server)
    tls = ServerTls(pair, password="s3cret")  # OpenSSL loads it with the password too
    assert tls.certificate.fingerprint == leaf_fingerprint(server)


def test_a_password_for_a_plain_key_is_harmless(pki: Pki) -> None:
    validate(pki.pair(), password="unused")
    ServerTls(pki.pair(), password="unused")


@pytest.mark.parametrize(("cert", "key", "expected"), [
    (b"", None, "cert.pem: not PEM: no '-----BEGIN CERTIFICATE-----' block"),
    (b"hello", None, "cert.pem: not PEM: no '-----BEGIN CERTIFICATE-----' block"),
    (b"\x30\x82\x01\x0a", None, "cert.pem: not PEM: no '-----BEGIN CERTIFICATE-----' block (it looks like DER: "
                                "convert it with `openssl x509 -inform der`)"),
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", None,
     "cert.pem: certificate 1 is not a valid certificate"),
    (None, b"", "key.pem: not PEM: no '-----BEGIN ... PRIVATE KEY-----' block"),
    (None, b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
     "key.pem: not a valid private key"),
])
def test_input_that_is_not_pem(pki: Pki, cert: bytes | None, key: bytes | None, expected: str) -> None:
    assert problems(pki.pair(cert=cert, key=key)).startswith(expected)


def test_two_keys_in_one_file(pki: Pki) -> None:
    server = pki.server()
    assert problems(pki.pair(server, key=server.key_pem() + server.key_pem())) == (
        "key.pem: holds 2 private keys, expected one")


def test_a_key_openssl_finds_too_weak_is_refused_with_its_reason(pki: Pki) -> None:
    cert, key = odd_certificate(pki.ca, rsa_bits=1024)
    pair = pki.pair(cert=cert, key=key)
    validate(pair)  # nothing wrong with its shape ...
    with pytest.raises(ConfigError) as caught:
        ServerTls(pair)  # ... but OpenSSL refuses a key this short
    assert caught.value.problems[0].startswith("cert.pem, key.pem: OpenSSL refuses the pair:")
    assert "too small" in caught.value.problems[0]


def test_unreadable_files_are_named(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.write(tmp_path, pki.pair())
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError) as caught:
        PemFiles(missing, tmp_path).read()
    assert caught.value.problems == [f"sslCertPemFile {missing}: cannot read: No such file or directory",
                                     f"sslKeyPemFile {tmp_path}: cannot read: Is a directory"]
    assert PemFiles(cert, key).read().cert_origin == f"sslCertPemFile {cert}"
    with pytest.raises(ConfigError) as caught:
        PemFiles("/dev/zero", key).read()  # a wrong path to something endless is not read forever
    assert caught.value.problems == ["sslCertPemFile /dev/zero: larger than 1024 KiB: not a certificate or key file"]


def test_the_server_context_refuses_old_protocols_and_weak_features(pki: Pki) -> None:
    tls = ServerTls(pki.pair())
    context = tls.listener
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_CIPHER_SERVER_PREFERENCE):
        assert context.options & option == option
    suites = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert suites and all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA20" in s) for s in suites)


def test_an_invalid_update_keeps_the_current_certificate(pki: Pki) -> None:
    first, second = pki.server(), pki.server()
    tls = ServerTls(pki.pair(first), cname=CNAME)
    assert not tls.update(pki.pair(pki.server("other.test")))
    assert not tls.update(pki.pair(key=second.key_pem()))
    assert (tls.certificate.fingerprint, tls.rotations, tls.rejections) == (leaf_fingerprint(first), 0, 2)
    assert tls.update(pki.pair(second))
    assert tls.update(pki.pair(second))  # the same pair again: nothing to do
    assert (tls.certificate.fingerprint, tls.rotations, tls.rejections) == (leaf_fingerprint(second), 1, 2)
    assert repr(tls).startswith(f"<ServerTls CN={CNAME} not_after=")
    assert "rotations=1 rejections=2" in repr(tls)


# Secrets

def secret_doc(pair: PemPair, *, name: str = "router-tls", string_data: bool = False) -> dict[str, object]:
    values = {"cert.pem": pair.cert, "key.pem": pair.key}
    body = ({"stringData": {k: v.decode() for k, v in values.items()}} if string_data
            else {"data": {k: base64.b64encode(v).decode() for k, v in values.items()}})
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **body}


@pytest.mark.parametrize("string_data", [False, True], ids=["data", "stringData"])
def test_a_secret_document_holds_the_pair(pki: Pki, string_data: bool) -> None:
    pair = pki.pair()
    got = secret_pair(secret_data(secret_doc(pair, string_data=string_data), "s"), "sslSecret router-tls")
    assert (got.cert, got.key) == (pair.cert, pair.key)
    assert (got.cert_origin, got.key_origin) == ("sslSecret router-tls: cert.pem", "sslSecret router-tls: key.pem")


def test_string_data_wins_over_data_as_in_kubernetes() -> None:
    doc = {"data": {"cert.pem": base64.b64encode(b"old").decode()}, "stringData": {"cert.pem": "new"}}
    assert secret_data(doc, "s") == {"cert.pem": "new"}


def test_a_kubernetes_tls_secret_works_too(pki: Pki) -> None:
    pair = pki.pair()
    got = secret_pair({"tls.crt": pair.cert.decode(), "tls.key": pair.key.decode()}, "Secret models/tls")
    assert got.cert == pair.cert and got.key_origin == "Secret models/tls: tls.key"


@pytest.mark.parametrize(("doc", "expected"), [
    ({"data": {"cert.pem": "not base64!"}}, "s: data.cert.pem: must be base64 (use stringData for plain text)"),
    ({"data": ["cert.pem"]}, "s: data: must be a mapping of key names to values, got a list"),
    ({"stringData": {"cert.pem": 12}}, "s: stringData.cert.pem: must be a string, got a number"),
    ({"stringData": {"cert": "x", "key": "y"}}, "s: needs the keys cert.pem and key.pem (or tls.crt and tls.key); "
                                                "has cert, key"),
    ({}, "s: needs the keys cert.pem and key.pem (or tls.crt and tls.key); has none"),
])
def test_a_bad_secret_is_named(doc: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        secret_pair(secret_data(doc, "s"), "s")
    assert caught.value.problems == [expected]


def test_the_secret_document_is_found_by_name_in_the_config_file(tmp_path: Path, pki: Pki) -> None:
    import yaml

    pair = pki.pair()
    path = tmp_path / "router.yaml"
    keys = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-keys"}, "stringData": {"a": "b"}}
    path.write_text(yaml.safe_dump_all([keys, secret_doc(pair)]))
    got = SecretDocument(path, "router-tls").read()
    assert got.cert == pair.cert and got.cert_origin == f"sslSecret router-tls in {path}: cert.pem"
    with pytest.raises(ConfigError) as caught:
        SecretDocument(path, "nope").read()
    assert caught.value.problems == [f"sslSecret nope in {path}: expected one Secret document named 'nope', found 0"]
    path.write_text("a: [")
    with pytest.raises(ConfigError) as caught:
        SecretDocument(path, "router-tls").read()
    assert caught.value.problems[0].startswith(f"sslSecret router-tls in {path}: invalid YAML: line 1, column 5: ")
