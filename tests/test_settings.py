"""Router settings from flags and `ROUTER_*` variables (DESIGN §1)."""

from __future__ import annotations

import argparse

import pytest

from router.errors import ConfigError
from router.settings import RouterSettings, add_arguments, from_arguments
from tests.settings_helpers import INSECURE, refused, settings


def test_defaults() -> None:
    got = settings("--allow-insecure-connections")
    assert got == RouterSettings(allow_insecure_connections=True)
    assert (got.host, got.port, got.tls_port, got.admin_port) == ("0.0.0.0", 8080, 8443, 9090)
    assert got.ssl_cert_pem_file is None and got.ssl_key_pem_file is None and got.ssl_secret is None
    assert got.ssl_cname is None
    assert not got.tls_configured


def test_every_setting_has_a_kebab_case_flag() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    for name in ("--allow-insecure-connections", "--ssl-cert-pem-file", "--ssl-key-pem-file", "--ssl-secret",
                 "--ssl-cname", "--port", "--tls-port", "--admin-port", "--host"):
        assert name in flags


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1", "yes", "on", " true "])
def test_insecure_connections_from_the_environment(value: str) -> None:
    assert settings(environ={"ROUTER_ALLOW_INSECURE_CONNECTIONS": value}).allow_insecure_connections


@pytest.mark.parametrize("value", ["false", "0", "no", "off", ""])
def test_a_false_environment_value_does_not_allow_insecure(value: str) -> None:
    problems = refused(environ={"ROUTER_ALLOW_INSECURE_CONNECTIONS": value})
    assert "--allow-insecure-connections" in problems


def test_every_setting_from_the_environment() -> None:
    got = settings(environ={**INSECURE, "ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": "8000",
                            "ROUTER_TLS_PORT": "8001", "ROUTER_ADMIN_PORT": "8002",
                            "ROUTER_SSL_CERT_PEM_FILE": "/c.pem", "ROUTER_SSL_KEY_PEM_FILE": "/k.pem",
                            "ROUTER_SSL_CNAME": "router.example", "ROUTER_DRAIN_DELAY": "1.5",
                            "ROUTER_MAX_REQUEST_BODY_BYTES": "1024"})
    assert (got.host, got.port, got.tls_port, got.admin_port) == ("127.0.0.1", 8000, 8001, 8002)
    assert (got.ssl_cert_pem_file, got.ssl_key_pem_file, got.ssl_cname) == ("/c.pem", "/k.pem", "router.example")
    assert got.drain_delay == 1.5 and got.max_request_body_bytes == 1024
    assert got.tls_configured


def test_flags_are_converted() -> None:
    got = settings("--allow-insecure-connections", "--port", "0", "--admin-port", "0", "--host", "::1",
                   "--drain-timeout", "2.5", "--config-poll-interval", "0.2")
    assert (got.port, got.admin_port, got.host) == (0, 0, "::1")
    assert isinstance(got.port, int) and got.drain_timeout == 2.5 and got.config_poll_interval == 0.2


def test_a_flag_beats_the_environment() -> None:
    environ = {**INSECURE, "ROUTER_PORT": "5678", "ROUTER_HOST": "10.0.0.1"}
    got = settings("--port", "1234", environ=environ)
    assert got.port == 1234
    assert got.host == "10.0.0.1"  # no flag: the variable still counts


def test_the_insecure_flag_beats_a_false_variable() -> None:
    got = settings("--allow-insecure-connections", environ={"ROUTER_ALLOW_INSECURE_CONNECTIONS": "false"})
    assert got.allow_insecure_connections


def test_an_explicit_environ_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_PORT", "1111")
    monkeypatch.setenv("ROUTER_ALLOW_INSECURE_CONNECTIONS", "true")
    assert settings("--allow-insecure-connections", environ={}).port == 8080
    refused(environ={})  # the process's ROUTER_ALLOW_INSECURE_CONNECTIONS is not read either


def test_without_environ_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_PORT", "1111")
    monkeypatch.setenv("ROUTER_ALLOW_INSECURE_CONNECTIONS", "true")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    got = from_arguments(parser.parse_args([]))
    assert got.port == 1111 and got.allow_insecure_connections


def test_a_bad_boolean_variable_is_named() -> None:
    problems = refused(environ={"ROUTER_ALLOW_INSECURE_CONNECTIONS": "maybe"})
    assert "ROUTER_ALLOW_INSECURE_CONNECTIONS" in problems and "maybe" in problems


def flag_error(capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """A wrong flag value stops argparse as an unknown flag does: exit 2, the message on stderr."""
    with pytest.raises(SystemExit) as caught:
        settings("--allow-insecure-connections", *flags)
    assert caught.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "accepts"), [
    ("--port", "http", "an integer from 0 to 65535"),
    ("--port", "65536", "an integer from 0 to 65535"),
    ("--admin-port", "-1", "an integer from 0 to 65535"),
    ("--drain-delay", "abc", "a number of seconds at least 0"),
    ("--drain-timeout", "-1", "a number of seconds at least 0"),
    ("--header-timeout", "0", "a number of seconds above 0"),
    ("--max-connections", "0", "an integer at least 1"),
    ("--max-request-body-bytes", "1e6", "a number of bytes at least 1"),
    ("--balancing-policy", "fastest", "one of least_loaded, round_robin"),
    ("--trace-export", "jaeger", "one of off, otlp, console"),
    ("--access-log", "sample=2", "on, off or sample=F with 0 < F <= 1"),
    ("--status-lease", "Router Lease", "a Kubernetes object name (a-z, 0-9, '-', '.')"),
    ("--watch-namespace", "models.v1", "a namespace name (a-z, 0-9, '-')"),
])
def test_a_wrong_flag_value_names_the_flag_what_it_got_and_what_it_accepts(
        capsys: pytest.CaptureFixture[str], flag: str, value: str, accepts: str) -> None:
    message = flag_error(capsys, flag, value)
    assert f"argument {flag}: expected {accepts}, got {value!r}" in message


@pytest.mark.parametrize(("variable", "value", "accepts"), [
    ("ROUTER_PORT", "eighty", "an integer from 0 to 65535"),
    ("ROUTER_TLS_PORT", "8443.5", "an integer from 0 to 65535"),
    ("ROUTER_DRAIN_DELAY", "1s", "a number of seconds at least 0"),
    ("ROUTER_BALANCING_POLICY", "fastest", "one of least_loaded, round_robin"),
    ("ROUTER_METRICS", "maybe", "true or false"),
    ("ROUTER_SEND_TIMEOUT", "0", "a number of seconds above 0"),
    ("ROUTER_MAX_CONNECTIONS_PER_CLIENT", "-1", "an integer at least 0"),
    ("ROUTER_AUTOSCALE_LEASE", "-autoscaler", "a Kubernetes object name (a-z, 0-9, '-', '.')"),
    ("ROUTER_WATCH_NAMESPACE", "Models", "a namespace name (a-z, 0-9, '-')"),
])
def test_a_wrong_variable_names_the_variable_what_it_got_and_what_it_accepts(
        variable: str, value: str, accepts: str) -> None:
    problems = refused("--allow-insecure-connections", environ={variable: value})
    assert f"{variable}: expected {accepts}, got {value!r}" in problems


def test_every_wrong_variable_is_reported_at_once() -> None:
    problems = refused("--allow-insecure-connections", environ={"ROUTER_PORT": "x", "ROUTER_DRAIN_DELAY": "y"})
    assert "ROUTER_PORT" in problems and "ROUTER_DRAIN_DELAY" in problems


def test_settings_made_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError) as caught:
        RouterSettings(allow_insecure_connections=True, port=70000, balancing_policy="fastest").check()
    assert caught.value.problems == ["--port: expected an integer from 0 to 65535, got 70000",
                                     "--balancing-policy: expected one of least_loaded, round_robin, got 'fastest'"]


def test_kubernetes_names_are_checked_as_every_other_setting_is() -> None:
    with pytest.raises(ConfigError) as caught:
        RouterSettings(allow_insecure_connections=True, status_lease="Status", watch_namespace="a_b").check()
    assert caught.value.problems == [
        "--watch-namespace: expected a namespace name (a-z, 0-9, '-'), got 'a_b'",
        "--status-lease: expected a Kubernetes object name (a-z, 0-9, '-', '.'), got 'Status'"]
    got = settings("--allow-insecure-connections", "--status-lease", "router.status", "--watch-namespace", "models")
    assert (got.status_lease, got.watch_namespace) == ("router.status", "models")
    assert settings("--allow-insecure-connections", "--watch-namespace", "").watch_namespace == ""  # every one


def test_metrics_can_be_turned_off_by_flag_and_on_again() -> None:
    assert settings("--allow-insecure-connections").metrics
    assert not settings("--allow-insecure-connections", "--no-metrics").metrics
    assert settings("--allow-insecure-connections", "--metrics", environ={"ROUTER_METRICS": "false"}).metrics
    assert not settings("--allow-insecure-connections", environ={"ROUTER_METRICS": "false"}).metrics


def test_neither_tls_nor_insecure_says_what_to_set() -> None:
    problems = refused()
    for hint in ("--ssl-cert-pem-file", "--ssl-key-pem-file", "--allow-insecure-connections",
                 "ROUTER_ALLOW_INSECURE_CONNECTIONS=true"):
        assert hint in problems


@pytest.mark.parametrize("flags", [
    ("--ssl-cert-pem-file", "/tls/cert.pem", "--ssl-key-pem-file", "/tls/key.pem"),
    ("--ssl-secret", "router-tls"),
])
def test_tls_alone_is_enough(flags: tuple[str, ...]) -> None:
    got = settings(*flags)
    assert got.tls_configured and not got.allow_insecure_connections


@pytest.mark.parametrize("flag", ["--ssl-cert-pem-file", "--ssl-key-pem-file"])
def test_a_certificate_needs_its_key(flag: str) -> None:
    # without a complete pair TLS is not configured, so the router refuses ...
    assert "--allow-insecure-connections" in refused(flag, "/tls/file.pem")
    # ... and when plain HTTP is allowed, the half pair is still an error, naming both settings
    problems = refused(flag, "/tls/file.pem", "--allow-insecure-connections")
    assert "sslCertPemFile" in problems and "sslKeyPemFile" in problems


def test_the_settings_are_immutable() -> None:
    got = settings("--allow-insecure-connections")
    with pytest.raises(AttributeError):
        got.port = 1  # type: ignore[misc]
