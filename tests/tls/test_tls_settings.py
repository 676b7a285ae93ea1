"""The TLS settings from flags and `ROUTER_*` variables (DESIGN §1)."""

from __future__ import annotations

import argparse

import pytest

from router.errors import ConfigError
from router.settings import RouterSettings, add_arguments, from_arguments


def settings(*flags: str, environ: dict[str, str] | None = None) -> RouterSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(list(flags)), environ or {})


def test_the_key_password_comes_from_the_flag_or_the_variable_and_is_never_shown() -> None:
    tls = ("--ssl-cert-pem-file", "/c.pem", "--ssl-key-pem-file", "/k.pem")
    assert settings(*tls, "--ssl-key-password", "from-flag").ssl_key_password == "from-flag"
    got = settings(*tls, environ={"ROUTER_SSL_KEY_PASSWORD": "from-env-0193"})
    assert got.ssl_key_password == "from-env-0193"
    assert "from-env-0193" not in repr(got) and "ssl_key_password" not in repr(got)
    assert settings(*tls).ssl_key_password is None


def test_tls_settings_from_the_environment() -> None:
    got = settings(environ={"ROUTER_SSL_SECRET": "router-tls", "ROUTER_SSL_CNAME": "router.example"})
    assert (got.ssl_secret, got.ssl_cname, got.tls_configured) == ("router-tls", "router.example", True)


def test_a_secret_and_files_are_one_source_too_many() -> None:
    with pytest.raises(ConfigError) as caught:
        settings("--ssl-secret", "router-tls", "--ssl-cert-pem-file", "/c.pem", "--ssl-key-pem-file", "/k.pem")
    assert caught.value.problems == ["sslSecret and sslCertPemFile/sslKeyPemFile are two sources of the "
                                     "certificate: set one of them"]
