"""A Secret's values never appear in what the router writes: every refusal path runs with a marker value
inside the refused Secret (or password), and all output (stdout, stderr, every log event) is searched for it.

Paths: `serve` refusing to start (bad base64, a short key, a placeholder, a Secret's data that is not a
mapping, a local-mode sslSecret with bad base64, with an invalid key.pem, with invalid YAML on the
key's line, an encrypted key with the wrong password), `config.rejected` and `tls.rejected` in a running
router, `certs check`, and `token`. The cluster's `kubernetes.rejected` is in tests/kube.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helpers import SampleModel, run_to_exit
from tests.routing import Config, start_router
from tests.tls.pki import CNAME, Pki, new_pki

MARKER = "Zq8MRKv"  # in every refused value: found nowhere in the output
SERVE = [sys.executable, "-m", "router.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--tls-port", "0",
         "--admin-port", "0", "--allow-insecure-connections"]
NOT_BASE64 = f"Pl41nT3xt-{MARKER}-not-base64!"
BAD_KEY_PEM = f"-----BEGIN PRIVATE KEY-----\n{MARKER}{'A' * 60}\n-----END PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return new_pki(tmp_path_factory.mktemp("pki"))


def with_keys(url: str, **secret: object) -> str:
    """The config of one endpoint whose keys Secret is `secret` (data or stringData)."""
    docs = Config().deployment("blue", [url], weight=100).documents()
    docs[-1] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-keys"}, **secret}
    return yaml.safe_dump_all(docs, sort_keys=False)


def with_tls_secret(url: str, pki: Pki, **secret: object) -> str:
    """A valid config plus a local-mode sslSecret document `router-tls` holding `secret`."""
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "router-tls"}, **secret}
    return Config().deployment("blue", [url], weight=100).yaml() + "---\n" + yaml.safe_dump(doc)


def tls_pair(pki: Pki, password: str | None = None) -> dict[str, str]:
    pair = pki.pair(password=password)
    return {"cert.pem": pair.cert.decode(), "key.pem": pair.key.decode()}


def assert_unseen(output: str, expected: str) -> None:
    assert expected in output, output  # the refusal itself is reported ...
    assert MARKER not in output, output  # ... without the value
    assert "Traceback" not in output, output


# each case: the config text (from the model's URL and a PKI), more arguments, what the refusal says
START_CASES: dict[str, tuple[Callable[[str, Pki], str], tuple[str, ...], str]] = {
    "data not base64": (lambda url, pki: with_keys(url, data={"primaryKey": NOT_BASE64}), (),
                        "data.primaryKey: must be base64"),
    "short key": (lambda url, pki: with_keys(url, stringData={"primaryKey": MARKER}), (),
                  "stringData.primaryKey: must be at least 16 characters"),
    "placeholder key": (lambda url, pki: with_keys(url, stringData={"primaryKey": f"<{MARKER}-your-key-here>"}), (),
                        "stringData.primaryKey: looks like a placeholder"),
    "key with spaces": (lambda url, pki: with_keys(url, stringData={"primaryKey": f"{MARKER} two words here"}), (),
                        "stringData.primaryKey: must be printable ASCII"),
    "data not a mapping": (lambda url, pki: with_keys(url, data=f"primaryKey={MARKER}0123456789abcdef"), (),
                           "Secret default/demo-keys: data: must be a mapping"),
    "sslSecret key.pem not base64": (
        lambda url, pki: with_tls_secret(url, pki, data={"cert.pem": base64.b64encode(pki.pair().cert).decode(),
                                                          "key.pem": NOT_BASE64}),
        ("--ssl-secret", "router-tls", "--ssl-cname", CNAME), "sslSecret router-tls in"),
    "sslSecret key.pem not a key": (
        lambda url, pki: with_tls_secret(url, pki, stringData={**tls_pair(pki), "key.pem": BAD_KEY_PEM}),
        ("--ssl-secret", "router-tls", "--ssl-cname", CNAME), "key.pem: not a valid private key"),
    "sslSecret invalid YAML": (
        lambda url, pki: with_tls_secret(url, pki, stringData=tls_pair(pki)) + f'  bad.pem: "{MARKER}\n  x: [\n',
        ("--ssl-secret", "router-tls", "--ssl-cname", CNAME), "invalid YAML"),
    "wrong key password": (
        lambda url, pki: with_tls_secret(url, pki, stringData=tls_pair(pki, password="right-pass-0123")),
        ("--ssl-secret", "router-tls", "--ssl-cname", CNAME, "--ssl-key-password", f"{MARKER}-wrong"),
        "sslKeyPassword does not decrypt the private key"),
}


@pytest.mark.parametrize("case", list(START_CASES))
def test_a_refused_start_never_shows_the_value(tmp_path: Path, pki: Pki,
                                               sample_model_factory: Callable[..., SampleModel], case: str) -> None:
    make, args, expected = START_CASES[case]
    config = tmp_path / "router.yaml"
    config.write_text(make(sample_model_factory("--name", "blue-0").url, pki))
    code, output = run_to_exit([*SERVE, "--config", str(config), *args])
    assert code == 2, output
    assert_unseen(output, expected)
    code, output = run_to_exit([sys.executable, "-m", "router.cli", "token", "--endpoint", "demo",
                                "--config", str(config)])
    assert code == 2 and MARKER not in output and "Traceback" not in output, output


def test_rejected_reloads_never_show_the_value(tmp_path: Path, pki: Pki,
                                               sample_model_factory: Callable[..., SampleModel]) -> None:
    url = sample_model_factory("--name", "blue-0").url
    good = with_tls_secret(url, pki, stringData=tls_pair(pki))
    router = start_router(tmp_path, good, "--ssl-secret", "router-tls", "--ssl-cname", CNAME)
    try:
        # each refusal waited for by what it says: a file without the TLS Secret also gets a tls.rejected
        for text, event, says in (
                (with_keys(url, data={"primaryKey": NOT_BASE64}), "config.rejected", "must be base64"),
                (with_keys(url, stringData={"primaryKey": MARKER}), "config.rejected", "at least 16 characters"),
                (with_tls_secret(url, pki, stringData={**tls_pair(pki), "key.pem": BAD_KEY_PEM}),
                 "tls.rejected", "key.pem: not a valid private key")):
            after = len(router.process.events)
            router.write_config(text)
            router.process.wait_for_event(event, timeout=10, after=after,
                                          where=lambda e, says=says: says in str(e.get("problems")))
    finally:
        router.stop()
    assert_unseen(router.process.output(), "key.pem: not a valid private key")


def test_certs_check_never_shows_the_key(tmp_path: Path, pki: Pki) -> None:
    pair = pki.pair(password="right-pass-0123")
    (tmp_path / "cert.pem").write_bytes(pair.cert)
    (tmp_path / "key.pem").write_bytes(pair.key)
    (tmp_path / "bad-key.pem").write_text(BAD_KEY_PEM)
    check = [sys.executable, "-m", "router.cli", "certs", "check", "--cert", str(tmp_path / "cert.pem")]
    code, output = run_to_exit([*check, "--key", str(tmp_path / "bad-key.pem")])
    assert code != 0
    assert_unseen(output, "not a valid private key")
    code, output = run_to_exit([*check, "--key", str(tmp_path / "key.pem"), "--key-password", f"{MARKER}-wrong"])
    assert code != 0
    assert_unseen(output, "does not decrypt the private key")
