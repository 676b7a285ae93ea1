"""Router settings: one documented dataclass, filled from flags or `ROUTER_*` variables.

Names follow the Azure ML extension's settings (DESIGN §1); each flag is the
kebab-case name, each variable `ROUTER_` plus the upper snake-case name.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from typing import Any

from router.errors import ConfigError

# The groups of `serve --help`, in the order a reader looks for them.
GROUPS = ("listeners and TLS", "resources and cluster", "replicas and balancing", "limits and timeouts",
          "drain", "observability", "peers and workers")


def setting(default: Any, help: str, *, group: str, unit: str = "", repr: bool = True) -> Any:
    """Declare one setting: its default, a one-line help, its `serve --help` group and unit (s, bytes, ...).

    The flag, the `ROUTER_` variable, `--help` and the README's settings table are all made from this.
    """
    assert group in GROUPS, group
    return field(default=default, repr=repr, metadata={"help": help, "group": group, "unit": unit})


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterSettings:
    # plain HTTP is refused unless asked for: the router sits on the edge of a cluster
    allow_insecure_connections: bool = False
    ssl_cert_pem_file: str | None = None
    ssl_key_pem_file: str | None = None
    ssl_secret: str | None = None  # a Secret with cert.pem and key.pem (local mode: a document of the config file)
    ssl_cname: str | None = None  # the name clients use: the certificate must cover it
    # the passphrase of an encrypted sslKeyPemFile; prefer the variable (a flag shows in `ps`)
    ssl_key_password: str | None = field(default=None, repr=False)
    host: str = "0.0.0.0"
    port: int = 8080  # plain HTTP, only with allow_insecure_connections
    tls_port: int = 8443
    admin_port: int = 9090  # /healthz, /readyz, /metrics: never on the public Service
    # a request body larger than this gets 413; models take tensors, not uploads
    max_request_body_bytes: int = 100 * 1024 * 1024
    # how often the config file (local mode) and the certificate files are checked for changes
    config_poll_interval: float = 0.5
    # on SIGTERM: keep serving this long so load balancers see /readyz fail ...
    drain_delay: float = 0.0
    # ... then wait at most this long for requests in flight
    drain_timeout: float = 30.0
    # upstream connections idle longer than this are closed (model servers often keep 5 s)
    upstream_idle_timeout: float = 4.0
    # how a free replica is chosen: least_loaded (load and latency aware) or round_robin
    balancing_policy: str = "least_loaded"
    # What a client may send; each limit is answered with its own status and JSON body.
    max_header_count: int = 100  # headers in one request; 431 beyond
    max_header_bytes: int = 32 * 1024  # request line and headers together; 431 beyond
    max_url_bytes: int = 8 * 1024  # 414 beyond
    header_timeout: float = 10.0  # to receive a request's headers: 408 (a silent close if nothing came)
    body_timeout: float = 30.0  # between two pieces of a request body: 408
    keepalive_timeout: float = 60.0  # an idle client connection is closed after this
    max_connections: int = 10_000  # open client connections; a new one beyond gets 503 and is closed
    max_connections_per_client: int = setting(
        0, "open connections from one client address (503 beyond); 0: a tenth of --max-connections",
        group="limits and timeouts")
    send_timeout: float = setting(60.0, "abort a client connection whose pending output has not moved for this long",
                                  group="limits and timeouts", unit="s")
    trusted_proxies: str = ""  # comma-separated addresses or networks whose X-Forwarded-* are kept
    # One JSON line per request on stdout: on, off, or sample=F (a share F of successes; errors always)
    access_log: str = "on"
    # Per-request counting for /metrics; off only to measure what it costs (loadtests/bench.py)
    metrics: bool = True
    # OpenTelemetry span export: off, otlp (OTEL_EXPORTER_OTLP_* variables) or console; needs the otel extra
    trace_export: str = "off"

    @property
    def tls_configured(self) -> bool:
        return bool(self.ssl_secret or (self.ssl_cert_pem_file and self.ssl_key_pem_file))

    def check(self) -> None:
        if not self.tls_configured and not self.allow_insecure_connections:
            raise ConfigError(["no TLS certificate is configured and plain HTTP is not allowed: set "
                               "--ssl-cert-pem-file and --ssl-key-pem-file (or --ssl-secret), or "
                               "--allow-insecure-connections (ROUTER_ALLOW_INSECURE_CONNECTIONS=true)"])
        if bool(self.ssl_cert_pem_file) != bool(self.ssl_key_pem_file):
            raise ConfigError(["sslCertPemFile and sslKeyPemFile go together: set both or neither"])
        if self.ssl_secret and self.ssl_cert_pem_file:
            raise ConfigError(["sslSecret and sslCertPemFile/sslKeyPemFile are two sources of the "
                               "certificate: set one of them"])
        for name in ("port", "tls_port", "admin_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError([f"{name}: must be a port number from 0 to 65535, got {value}"])
        if self.balancing_policy not in ("least_loaded", "round_robin"):
            raise ConfigError([f"balancing_policy: must be least_loaded or round_robin, got {self.balancing_policy!r}"])
        for name in ("max_header_count", "max_header_bytes", "max_url_bytes", "max_connections",
                     "max_request_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError([f"{name}: must be at least 1, got {getattr(self, name)}"])
        for name in ("header_timeout", "body_timeout", "keepalive_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError([f"{name}: must be a positive number of seconds, got {getattr(self, name)}"])


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; an unset flag falls back to `ROUTER_<NAME>`, then the default."""
    for f in fields(RouterSettings):
        if f.type == "bool":
            parser.add_argument(_flag(f.name), dest=f.name, action="store_const", const=True, default=None)
        else:
            parser.add_argument(_flag(f.name), dest=f.name, default=None, metavar=f.name.upper())


def from_arguments(args: argparse.Namespace, environ: dict[str, str] | None = None) -> RouterSettings:
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(RouterSettings):
        raw = getattr(args, f.name, None)
        source = _flag(f.name)
        if raw is None:
            raw = environ.get("ROUTER_" + f.name.upper())
            source = "ROUTER_" + f.name.upper()
        if raw is None:
            continue
        values[f.name] = _convert(f.type, raw, source)
    settings = RouterSettings(**values)  # type: ignore[arg-type]
    settings.check()
    return settings


def _convert(kind: object, raw: object, source: str) -> object:
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
        raise ConfigError([f"{source}: expected true or false, got {raw!r}"])
    try:
        if kind == "int":
            return int(str(raw))
        if kind == "float":
            return float(str(raw))
    except ValueError:
        raise ConfigError([f"{source}: expected a number, got {raw!r}"]) from None
    return str(raw)
