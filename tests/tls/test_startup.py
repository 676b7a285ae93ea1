"""`serve` with TLS settings as a real process: an invalid pair stops the start with its message, a
valid one is logged with its expiry, and an encrypted key is served with its password."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.tls import PemPair
from tests.helpers import run_to_exit
from tests.routing import StartedModel
from tests.tls.conftest import LOOPBACK, SERVE, config_for, start_tls_router
from tests.tls.pki import CNAME, DAY, Pki, leaf_fingerprint, now, served_fingerprint


def refused(directory: Path, model: StartedModel, *args: str, env: dict[str, str] | None = None) -> str:
    config = directory / "router.yaml"
    config.write_text(config_for(model).yaml())
    code, output = run_to_exit([*SERVE, "--config", str(config), *LOOPBACK, *args], env=env)
    assert code == 2, output
    assert '"listening"' not in output
    return output


def files(pki: Pki, directory: Path, pair: PemPair) -> list[str]:
    cert, key = pki.write(directory, pair)
    return ["--ssl-cert-pem-file", str(cert), "--ssl-key-pem-file", str(key)]


# each case: the pair, more arguments, the message, and the setting whose file the message is reported under
CASES: dict[str, tuple[Callable[[Pki], PemPair], tuple[str, ...], str, str]] = {
    "cname not covered": (lambda pki: pki.pair(), ("--ssl-cname", "api.example.com"),
                          "sslCname 'api.example.com' is not covered by the certificate's subjectAltName",
                          "sslCertPemFile"),
    "key does not match": (lambda pki: pki.pair(key=pki.server().key_pem()), (),
                           "the private key does not match the certificate", "sslKeyPemFile"),
    "chain out of order": (lambda pki: (lambda s: pki.pair(cert=pki.ca.cert_pem() + s.cert_pem(),
                                                           key=s.key_pem()))(pki.server()), (),
                           "chain out of order", "sslCertPemFile"),
    "expired": (lambda pki: pki.pair(pki.server(not_before=now() - 9 * DAY, not_after=now() - DAY)), (),
                "expired on", "sslCertPemFile"),
    "not valid yet": (lambda pki: pki.pair(pki.server(not_before=now() + DAY)), (), "is not valid yet",
                      "sslCertPemFile"),
    "passphrase missing": (lambda pki: pki.pair(password="pw-0123"), (),
                           "the private key is protected by a passphrase: set sslKeyPassword", "sslKeyPemFile"),
    "wrong passphrase": (lambda pki: pki.pair(password="pw-0123"), ("--ssl-key-password", "nope"),
                         "sslKeyPassword does not decrypt the private key", "sslKeyPemFile"),
    "not PEM": (lambda pki: pki.pair(cert=b"just text\n"), (), "not PEM: no '-----BEGIN CERTIFICATE-----' block",
                "sslCertPemFile"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_invalid_pair_stops_the_start_with_its_message(tmp_path: Path, pki: Pki, model: StartedModel,
                                                          case: str) -> None:
    make, args, message, setting = CASES[case]
    output = refused(tmp_path, model, *files(pki, tmp_path / "tls", make(pki)), *args)
    assert message in output
    named = [name for name, file in (("sslCertPemFile", "cert.pem"), ("sslKeyPemFile", "key.pem"))
             if f"{name} {tmp_path / 'tls' / file}: " in output]
    assert named == [setting]  # the problem is reported under the one file that has it


def test_missing_files_are_named(tmp_path: Path, model: StartedModel) -> None:
    output = refused(tmp_path, model, "--ssl-cert-pem-file", str(tmp_path / "no-cert.pem"),
                     "--ssl-key-pem-file", str(tmp_path / "no-key.pem"))
    assert f"sslCertPemFile {tmp_path / 'no-cert.pem'}: cannot read: No such file or directory" in output
    assert f"sslKeyPemFile {tmp_path / 'no-key.pem'}: cannot read: No such file or directory" in output


def test_a_missing_secret_document_is_named(tmp_path: Path, model: StartedModel) -> None:
    output = refused(tmp_path, model, "--ssl-secret", "router-tls")
    assert "sslSecret router-tls in" in output and "expected one Secret document named 'router-tls', found 0" in output


def test_a_secret_and_files_together_are_refused(tmp_path: Path, pki: Pki, model: StartedModel) -> None:
    output = refused(tmp_path, model, *files(pki, tmp_path, pki.pair()), "--ssl-secret", "router-tls")
    assert "sslSecret and sslCertPemFile/sslKeyPemFile are two sources of the certificate: set one of them" in output


@pytest.mark.parametrize("how", ["variable", "flag"])
def test_an_encrypted_key_is_served_with_its_password(tmp_path: Path, pki: Pki, model: StartedModel,
                                                      how: str) -> None:
    password = "pass-phrase-7391"
    server = pki.server()
    args = files(pki, tmp_path / "tls", pki.pair(server, password=password))
    if how == "flag":
        args += ["--ssl-key-password", password]
    router = start_tls_router(tmp_path, config_for(model), *args,
                              env={"ROUTER_SSL_KEY_PASSWORD": password} if how == "variable" else None)
    try:
        assert served_fingerprint(router.tls_port, pki.client()) == leaf_fingerprint(server)
        assert router.port is None  # TLS only: no plain HTTP listener without allowInsecureConnections
    finally:
        assert router.process.stop() == 0
    assert password not in router.process.output()


def test_the_certificate_and_its_expiry_are_logged_at_start(tmp_path: Path, pki: Pki, model: StartedModel) -> None:
    server = pki.server(days=10)
    router = start_tls_router(tmp_path, config_for(model), *files(pki, tmp_path / "tls", pki.pair(server)))
    admin_port = router.process.ready["admin_port"]
    metrics = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
    router.process.stop()
    exported = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert exported["inference_router_tls_certificate_expiry_timestamp_seconds"] == \
        server.cert.not_valid_after_utc.timestamp()
    logged = router.process.events_named("tls.certificate")[0]
    assert logged["subject"] == f"CN={CNAME}" and logged["sha256"] == leaf_fingerprint(server)
    assert logged["not_after"] == server.cert.not_valid_after_utc.isoformat()
    assert logged["names"] == [f"DNS:{CNAME}", "IP:127.0.0.1", "IP:::1"]
    assert 9.9 < logged["days_left"] <= 10
    warning = router.process.events_named("tls.expiring")[0]
    assert warning["level"] == "warning" and warning["days_left"] == logged["days_left"]


def test_no_warning_for_a_certificate_with_time_left(tmp_path: Path, pki: Pki, model: StartedModel) -> None:
    router = start_tls_router(tmp_path, config_for(model), *files(pki, tmp_path / "tls", pki.pair(
        pki.server(days=15))))
    router.process.stop()
    assert router.process.events_named("tls.certificate")
    assert not router.process.events_named("tls.expiring")
