"""`inference-router certs dev|check|secret` as a user runs them, then `serve` with the result and curl."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.cli import main
from router.discovery.documents import load_yaml
from tests.routing import StartedModel
from tests.tls.conftest import TlsRouter, config_for, start_tls_router
from tests.tls.pki import Pki

CERTS = [sys.executable, "-m", "router.cli", "certs"]


def certs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`inference-router certs ...` run in this process (the command's own code, minus the start-up time)."""
    argv = ["certs", *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made by the installed command in its own process, as a user would."""
    out = tmp_path_factory.mktemp("certs")
    made = subprocess.run([*CERTS, "dev", "--cname", "router.test", "--out", str(out), "--ip", "10.1.2.3"],
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    assert f"{out / 'ca.pem'}" in made.stdout
    return out


def curl(router: TlsRouter, ca: Path, host: str = "router.test") -> dict[str, object]:
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--max-time", "10", "--cacert", str(ca),
         "--resolve", f"router.test:{router.tls_port}:127.0.0.1",
         "-H", f"Authorization: Bearer {router.key}", "-d", '{"data": [1]}',
         f"https://{host}:{router.tls_port}/api/v1/endpoint/demo/score"],
        capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr + done.stdout
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_dev_writes_a_ca_and_a_server_chain(dev: Path) -> None:
    assert sorted(p.name for p in dev.iterdir()) == ["ca-key.pem", "ca.pem", "cert.pem", "key.pem"]
    assert (dev / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (dev / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    chain = (dev / "cert.pem").read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2 and chain.endswith((dev / "ca.pem").read_text())


def test_check_prints_what_it_found(dev: Path) -> None:
    checked = certs("check", "--cert", dev / "cert.pem", "--key", dev / "key.pem", "--cname", "router.test")
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == "subject:  CN=router.test"
    assert lines[1] == "names:    DNS:router.test, IP:127.0.0.1, IP:::1, IP:10.1.2.3"
    assert lines[2] == "chain:    1. CN=router.test  (issued by CN=inference-router dev CA)"
    assert lines[3].strip() == "2. CN=inference-router dev CA  (issued by CN=inference-router dev CA)"
    assert lines[4].startswith("expires:  ") and "(in 365 days)" in lines[4]
    assert lines[-1] == "ok: the router accepts this pair for router.test"


@pytest.mark.parametrize(("cert", "key", "cname", "message"), [
    ("cert.pem", "key.pem", "api.example.com", "sslCname 'api.example.com' is not covered"),
    ("ca.pem", "key.pem", None, "is a CA certificate, and no server certificate follows"),
    ("cert.pem", "ca-key.pem", None, "the private key does not match the certificate"),
    ("key.pem", "cert.pem", None, "not PEM"),
])
def test_check_refuses_a_bad_pair_with_its_message(dev: Path, cert: str, key: str, cname: str | None,
                                                   message: str) -> None:
    checked = certs("check", "--cert", dev / cert, "--key", dev / key, *(["--cname", cname] if cname else []))
    assert checked.returncode == 1
    assert checked.stderr.startswith("inference-router certs: invalid:\n") and message in checked.stderr
    assert checked.stdout == ""


def test_dev_again_keeps_the_ca(tmp_path: Path) -> None:
    assert certs("dev", "--cname", "a.test", "--out", tmp_path).returncode == 0
    ca, cert = (tmp_path / "ca.pem").read_bytes(), (tmp_path / "cert.pem").read_bytes()
    assert certs("dev", "--cname", "b.test", "--out", tmp_path).returncode == 0
    assert (tmp_path / "ca.pem").read_bytes() == ca and (tmp_path / "cert.pem").read_bytes() != cert
    assert certs("check", "--cert", tmp_path / "cert.pem", "--key", tmp_path / "key.pem",
                 "--cname", "b.test").returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (("--cname", "not a name!"), "--cname: 'not a name!' is not a DNS name or an IP address"),
    (("--cname", "ok.test", "--ip", "10.0.0.300"), "--ip: '10.0.0.300' does not appear to be an IPv4 or IPv6"),
    (("--cname", "ok.test", "--days", "0"), "--days: must be from 1 to 3650, got 0"),
])
def test_dev_refuses_bad_arguments(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    made = certs("dev", "--out", tmp_path / "out", *args)
    assert made.returncode == 2 and message in made.stderr
    assert not (tmp_path / "out" / "cert.pem").exists()


def test_dev_then_serve_then_curl(dev: Path, tmp_path: Path, model: StartedModel) -> None:
    assert shutil.which("curl"), "curl is part of the test tools"
    router = start_tls_router(tmp_path, config_for(model), "--ssl-cert-pem-file", str(dev / "cert.pem"),
                              "--ssl-key-pem-file", str(dev / "key.pem"), "--ssl-cname", "router.test")
    try:
        assert curl(router, dev / "ca.pem")["name"] == "blue-0"
        assert curl(router, dev / "ca.pem", host="127.0.0.1")["name"] == "blue-0"
    finally:
        assert router.process.stop() == 0


def test_secret_prints_a_manifest_the_router_serves(dev: Path, tmp_path: Path, model: StartedModel) -> None:
    printed = certs("secret", "--cert", dev / "cert.pem", "--key", dev / "key.pem", "--name", "router-tls",
                    "--namespace", "models")
    assert printed.returncode == 0, printed.stderr
    manifest = yaml.safe_load(printed.stdout)
    assert manifest["kind"] == "Secret" and manifest["metadata"] == {"name": "router-tls", "namespace": "models"}
    assert base64.b64decode(manifest["data"]["cert.pem"]) == (dev / "cert.pem").read_bytes()
    assert base64.b64decode(manifest["data"]["key.pem"]) == (dev / "key.pem").read_bytes()
    del manifest["metadata"]["namespace"]  # local mode: the config's namespace is "default"
    config = config_for(model).yaml() + "---\n" + yaml.safe_dump(manifest)
    router = start_tls_router(tmp_path, config, "--ssl-secret", "router-tls", "--ssl-cname", "router.test")
    try:
        assert curl(router, dev / "ca.pem")["name"] == "blue-0"
    finally:
        assert router.process.stop() == 0


def test_secret_refuses_an_invalid_pair_and_a_bad_name(dev: Path) -> None:
    bad = certs("secret", "--cert", dev / "ca.pem", "--key", dev / "key.pem")
    assert bad.returncode == 1 and "is a CA certificate" in bad.stderr and bad.stdout == ""
    named = certs("secret", "--cert", dev / "cert.pem", "--key", dev / "key.pem", "--name", "Router_TLS")
    assert named.returncode == 1 and "--name: 'Router_TLS' is not a valid Secret name" in named.stderr


def test_dev_lists_every_file_it_wrote_says_when_it_reused_the_ca_and_how_to_call(tmp_path: Path) -> None:
    first = certs("dev", "--cname", "a.test", "--out", tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"wrote the CA: {tmp_path / 'ca.pem'}" in first.stdout and str(tmp_path / "ca-key.pem") in first.stdout
    assert f"{tmp_path / 'cert.pem'} and {tmp_path / 'key.pem'}" in first.stdout
    assert "--resolve a.test:8443:127.0.0.1 https://a.test:8443/" in first.stdout
    again = certs("dev", "--cname", "b.test", "--out", tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"reused the CA in {tmp_path / 'ca.pem'}" in again.stdout and "wrote the CA" not in again.stdout


def test_check_of_an_encrypted_key_names_its_own_password_flag(pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.write(tmp_path, pki.pair(password="pw-0123"))
    without = certs("check", "--cert", cert, "--key", key)
    assert without.returncode == 1
    assert "pass --key-password (or set ROUTER_SSL_KEY_PASSWORD)" in without.stderr
    wrong = certs("check", "--cert", cert, "--key", key, "--key-password", "nope")
    assert wrong.returncode == 1 and "--key-password does not decrypt the private key" in wrong.stderr
    assert "ssl-key-password" not in without.stderr + wrong.stderr and "sslKeyPassword" not in wrong.stderr
    assert certs("check", "--cert", cert, "--key", key, "--key-password", "pw-0123").returncode == 0


def test_secret_appended_to_a_resources_file_is_a_document_of_its_own(dev: Path, model: StartedModel) -> None:
    printed = certs("secret", "--cert", dev / "cert.pem", "--key", dev / "key.pem", "--name", "router-tls")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("---\n")
    config = config_for(model).yaml()
    assert not config.rstrip().endswith("---")  # it ends with a document, as a user's file does
    resources = load_yaml(config + printed.stdout, origin="router.yaml")
    assert {s.name for s in resources.secrets} == {"router-tls", "demo-keys"}
