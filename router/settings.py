"""Router settings: one documented dataclass, filled from flags or `ROUTER_*` variables.

Names follow the Azure ML extension's settings (DESIGN §1); each flag is the
kebab-case name, each variable `ROUTER_` plus the upper snake-case name. Each field
is declared with `setting()`, whose help, group and unit make `serve --help` and the
README's settings table (`python -m router.settings --readme README.md` rewrites it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from router.errors import ConfigError

# The groups of `serve --help`, in the order a reader looks for them.
GROUPS = ("listeners and TLS", "resources and cluster", "replicas and balancing", "limits and timeouts",
          "drain", "observability", "peers and workers")


@dataclass(frozen=True, slots=True)
class Accepts:
    """What a setting accepts beyond its type, said in `--help` and in the message for a wrong value."""

    what: str  # "from 0 to 65535", "one of least_loaded, round_robin"
    test: Callable[[Any], bool]
    metavar: str = ""  # replaces the one made from the type and unit
    replaces_type: bool = False  # `what` says it all: "one of a, b" rather than "text one of a, b"


def between(low: int, high: int) -> Accepts:
    return Accepts(f"from {low} to {high}", lambda value: low <= value <= high)


def at_least(low: float) -> Accepts:
    return Accepts(f"at least {low:g}", lambda value: value >= low)


def above(low: float) -> Accepts:
    return Accepts(f"above {low:g}", lambda value: value > low)


def one_of(*choices: str) -> Accepts:
    return Accepts("one of " + ", ".join(choices), lambda value: value in choices,
                   metavar="{" + ",".join(choices) + "}", replaces_type=True)


def access_log_share(mode: str) -> float | None:
    """The share of successful requests an access-log mode keeps: on 1, off 0, sample=F F (0 < F <= 1)."""
    text = mode.strip().lower()
    if text in ("on", "true"):
        return 1.0
    if text in ("off", "false"):
        return 0.0
    if text.startswith("sample="):
        try:
            share = float(text[7:])
        except ValueError:
            return None
        if 0.0 < share <= 1.0:
            return share
    return None


def matching(pattern: str, what: str, *, or_empty: bool = False) -> Accepts:
    """Text that matches `pattern` in full (or is empty, with `or_empty`); `what` names it in messages."""
    compiled = re.compile(pattern)
    return Accepts(what, lambda text: (or_empty and not text) or compiled.fullmatch(text) is not None,
                   replaces_type=True)


ACCESS_LOG_MODE = Accepts("on, off or sample=F with 0 < F <= 1", lambda mode: access_log_share(mode) is not None,
                          metavar="{on,off,sample=F}", replaces_type=True)


def setting(default: Any, help: str, *, group: str, unit: str = "", accepts: Accepts | None = None,
            repr: bool = True) -> Any:
    """Declare one setting: its default, a one-line help, its `serve --help` group and unit (s, bytes, ...).

    The flag, the `ROUTER_` variable, `--help` and the README's settings table are all made from this;
    `accepts` bounds the value (checked for flags, variables and settings made in code alike).
    """
    assert group in GROUPS, group
    return field(default=default, repr=repr,
                 metadata={"help": help, "group": group, "unit": unit, "accepts": accepts})


_PORT = between(0, 65535)
_OBJECT_NAME = matching(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", "a Kubernetes object name (a-z, 0-9, '-', '.')")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterSettings:
    # listeners and TLS
    # plain HTTP is refused unless asked for: the router sits on the edge of a cluster
    allow_insecure_connections: bool = setting(
        False, "serve plain HTTP on --port; without it, and without a certificate, the router refuses to start",
        group="listeners and TLS")
    ssl_cert_pem_file: str | None = setting(
        None, "certificate chain (PEM, server first) for the TLS port; a changed file is picked up",
        group="listeners and TLS")
    ssl_key_pem_file: str | None = setting(
        None, "private key (PEM) of --ssl-cert-pem-file", group="listeners and TLS")
    ssl_secret: str | None = setting(
        None, "Secret with cert.pem and key.pem instead of the files (local mode: a document of --config)",
        group="listeners and TLS")
    ssl_cname: str | None = setting(
        None, "the name clients use: the certificate must cover it (in a cluster, also the scoringUri)",
        group="listeners and TLS")
    ssl_key_password: str | None = setting(
        None, "passphrase of an encrypted key; prefer the variable (a flag shows in ps)", group="listeners and TLS",
        repr=False)
    host: str = setting("0.0.0.0", "address to bind the scoring ports to (the admin port: --admin-host)",
                        group="listeners and TLS")
    port: int = setting(8080, "plain HTTP scoring port, only with --allow-insecure-connections (0: any free one)",
                        group="listeners and TLS", accepts=_PORT)
    tls_port: int = setting(8443, "HTTPS scoring port (0: any free one)", group="listeners and TLS", accepts=_PORT)
    admin_port: int = setting(9090, "/healthz, /readyz, /metrics: never on the public Service (0: any free one)",
                              group="listeners and TLS", accepts=_PORT)
    trusted_proxies: str = setting(
        "", "comma-separated addresses or networks whose X-Forwarded-* headers are kept and extended",
        group="listeners and TLS")
    admin_host: str = setting("127.0.0.1", "comma-separated addresses of the admin port; the chart binds the pod IP "
                              "and loopback", group="listeners and TLS")
    proxy_protocol: bool = setting(False, "read a PROXY protocol v1/v2 header (AWS NLB, HAProxy) before each scoring "
                                   "connection and take the client address from it; from --trusted-proxies only",
                                   group="listeners and TLS")
    # resources and cluster
    watch_namespace: str = setting("", "with --kubernetes: watch the resources of this namespace only (default: "
                                   "every namespace); the router's own Leases stay in its own",
                                   group="resources and cluster",
                                   accepts=matching(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
                                                    "a namespace name (a-z, 0-9, '-')", or_empty=True))
    status_lease: str = setting(
        "inference-router-status", "with --kubernetes: the Lease, in the router's namespace, whose holder writes "
        "status (one per installation)", group="resources and cluster", accepts=_OBJECT_NAME)
    config_poll_interval: float = setting(
        0.5, "how often the config file (local mode) and certificate files are checked for changes",
        group="resources and cluster", unit="s", accepts=above(0))
    # replicas and balancing
    balancing_policy: str = setting(
        "least_loaded", "how a free replica is chosen: least_loaded (load and latency aware) or round_robin",
        group="replicas and balancing", accepts=one_of("least_loaded", "round_robin"))
    upstream_idle_timeout: float = setting(
        4.0, "upstream connections idle this long are closed (model servers often keep 5 s)",
        group="replicas and balancing", unit="s", accepts=above(0))
    allow_loopback_replicas: bool = setting(
        False, "with --kubernetes: accept EndpointSlice addresses that are loopback or the router's own "
        "(replicas on the router's machine: tests, one-host demos)", group="replicas and balancing")
    replica_address_family: str = setting(
        "IPv4", "with --kubernetes: the address family of a dual-stack Service's replicas",
        group="replicas and balancing", accepts=one_of("IPv4", "IPv6"))
    autoscale_stable_window: float = setting(
        60.0, "autoscaling (scaleSettings type target_utilization): scale down only from the demand of this long",
        group="replicas and balancing", unit="s", accepts=above(0))
    autoscale_panic_window: float = setting(
        6.0, "autoscaling: scale up at once from the demand of this long (demand over twice the ready capacity: "
        "no scale-down)", group="replicas and balancing", unit="s", accepts=above(0))
    autoscale_lease: str = setting(
        "inference-router-autoscaler", "with --kubernetes: the Lease, in the router's namespace, whose holder "
        "scales deployments (one per installation)", group="replicas and balancing",
        accepts=_OBJECT_NAME)
    # limits and timeouts: what a client may send; each limit has its own status and JSON body
    max_request_body_bytes: int = setting(
        100 * 1024 * 1024, "a larger request body gets 413 (models take tensors, not uploads)",
        group="limits and timeouts", unit="bytes", accepts=at_least(1))
    max_header_count: int = setting(100, "headers in one request (trailers of a chunked body too); 431 beyond",
                                    group="limits and timeouts",
                                    accepts=at_least(1))
    max_header_bytes: int = setting(32 * 1024, "request line and headers together (trailers too); 431 beyond",
                                    group="limits and timeouts", unit="bytes", accepts=at_least(1))
    max_url_bytes: int = setting(8 * 1024, "request URL length; 414 beyond", group="limits and timeouts",
                                 unit="bytes", accepts=at_least(1))
    header_timeout: float = setting(
        10.0, "to receive a request's headers: 408 (a silent close if nothing came)", group="limits and timeouts",
        unit="s", accepts=above(0))
    body_timeout: float = setting(30.0, "between two pieces of a request body: 408", group="limits and timeouts",
                                  unit="s", accepts=above(0))
    keepalive_timeout: float = setting(60.0, "an idle client connection is closed after this",
                                       group="limits and timeouts", unit="s", accepts=above(0))
    max_connections: int = setting(10_000, "open client connections, TLS handshakes included; a new one beyond "
                                   "gets 503",
                                   group="limits and timeouts", accepts=at_least(1))
    max_connections_per_client: int = setting(
        0, "open connections from one client address (503 beyond; a trusted proxy is not counted); 0: a tenth "
        "of --max-connections",
        group="limits and timeouts", accepts=at_least(0))
    send_timeout: float = setting(60.0, "abort a client connection whose pending output has not moved for this long",
                                  group="limits and timeouts", unit="s", accepts=above(0))
    # drain
    drain_delay: float = setting(
        0.0, "on SIGTERM, keep serving this long with /readyz failing, so load balancers stop sending",
        group="drain", unit="s", accepts=at_least(0))
    drain_timeout: float = setting(30.0, "after --drain-delay, wait at most this long for requests in flight",
                                   group="drain", unit="s", accepts=at_least(0))
    # observability
    access_log: str = setting(
        "on", "one JSON line per request on stdout: on, off, or sample=F (a share F of successes; errors always)",
        group="observability", accepts=ACCESS_LOG_MODE)
    metrics: bool = setting(True, "per-request counting for /metrics; off only to measure what it costs",
                            group="observability")
    trace_export: str = setting(
        "off", "OpenTelemetry span export: off, otlp (OTEL_EXPORTER_OTLP_* variables) or console; needs the otel "
        "extra", group="observability", accepts=one_of("off", "otlp", "console"))
    debug_endpoints: bool = setting(False, "serve /debug/deployments on the admin port: replica addresses "
                                    "and load, for whoever reaches that port", group="observability")
    # peers and workers
    peers: str = setting("", "every router's peer address HOST:PORT, comma-separated, this one included: the "
                         "routers share each replica's slots (heartbeats; local mode, VMs)", group="peers and workers")
    peer_service: str = setting("", "in a cluster: the Service whose ready endpoints (port named peer) are the "
                                "routers sharing slots; membership by one Lease per router", group="peers and workers")
    peer_port: int = setting(9091, "the port routers call each other on, bound on --host (never public)",
                             group="peers and workers", accepts=_PORT)
    peer_key: str | None = setting(None, "the peers' shared key (prefer the variable, or --peer-key-file: a flag "
                                   "shows in ps)", group="peers and workers", repr=False)
    peer_key_file: str | None = setting(None, "a file holding the peers' shared key", group="peers and workers")
    peer_timeout: float = setting(5.0, "a router not heard from (its Lease not renewed) for this long has left: "
                                  "the others take its share", group="peers and workers", unit="s")

    @property
    def admin_hosts(self) -> tuple[str, ...]:
        return tuple(host.strip() for host in self.admin_host.split(",") if host.strip())

    @property
    def peer_addresses(self) -> tuple[str, ...]:
        return tuple(entry.strip() for entry in self.peers.split(",") if entry.strip())

    @property
    def tls_configured(self) -> bool:
        return bool(self.ssl_secret or (self.ssl_cert_pem_file and self.ssl_key_pem_file))

    def check(self) -> None:
        """Refuse values out of bounds and settings that contradict each other, naming the flags."""
        problems = [f"{spec.flag}: expected {spec.expected}, got {getattr(self, spec.name)!r}"
                    for spec in SPECS if spec.refuses(getattr(self, spec.name))]
        if not self.tls_configured and not self.allow_insecure_connections:
            problems.append("no TLS certificate is configured and plain HTTP is not allowed: set "
                            "--ssl-cert-pem-file and --ssl-key-pem-file (or --ssl-secret), or "
                            "--allow-insecure-connections (ROUTER_ALLOW_INSECURE_CONNECTIONS=true)")
        if bool(self.ssl_cert_pem_file) != bool(self.ssl_key_pem_file):
            problems.append("sslCertPemFile and sslKeyPemFile go together: set both or neither")
        if self.ssl_secret and self.ssl_cert_pem_file:
            problems.append("sslSecret and sslCertPemFile/sslKeyPemFile are two sources of the "
                            "certificate: set one of them")
        if not self.admin_hosts:
            problems.append("--admin-host: needs at least one address (127.0.0.1: this machine only)")
        if self.proxy_protocol and not self.trusted_proxies.strip(" ,"):
            problems.append("--proxy-protocol: needs --trusted-proxies (ROUTER_TRUSTED_PROXIES), the load "
                            "balancers' addresses or networks: a PROXY header from anyone else would let "
                            "them choose their own client address")
        problems += self._peer_problems()
        if problems:
            raise ConfigError(problems)

    def _peer_problems(self) -> list[str]:
        if not self.peers and not self.peer_service:
            return []
        if self.peers and self.peer_service:
            return ["--peers and --peer-service are two ways to find the other routers: set one of them"]
        problems = [f"--peers: {entry!r} is not HOST:PORT" for entry in self.peer_addresses
                    if host_and_port(entry) is None]
        if not self.peer_key and not self.peer_key_file:
            problems.append("--peer-key: routers that share slots need a shared key: set ROUTER_PEER_KEY or "
                            "--peer-key-file")
        if self.peer_key and self.peer_key_file:
            problems.append("--peer-key and --peer-key-file are two sources of the peers' key: set one of them")
        if self.peer_key is not None and (problem := peer_key_problem(self.peer_key.strip())):
            problems.append(f"--peer-key: {problem}")
        shortest = 3.0 if self.peer_service else 0.5  # a Lease is renewed every 2 s: it must outlast that
        if not self.peer_timeout >= shortest:
            problems.append(f"--peer-timeout: must be at least {shortest:g} s, got {self.peer_timeout}")
        return problems


PEER_KEY_MIN_LENGTH = 16


def peer_key_problem(key: str) -> str | None:
    """What is wrong with the peers' shared key (stripped), from the variable or the file; None: nothing.

    It travels as `Authorization: Bearer <key>`: printable ASCII without spaces."""
    if len(key) >= PEER_KEY_MIN_LENGTH and key.isascii() and key.isprintable() and " " not in key:
        return None
    return (f"must be at least {PEER_KEY_MIN_LENGTH} printable ASCII characters without spaces "
            "(openssl rand -base64 24 makes one)")


def host_and_port(entry: str) -> tuple[str, int] | None:
    """`HOST:PORT` (an IPv6 host in brackets) as its host, without the brackets, and port; None: not one."""
    host, _, port = entry.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        return None
    return host.strip("[]"), int(port)


_KINDS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}
_UNIT_METAVARS = {"s": "SECONDS", "bytes": "BYTES"}


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting as the command line, the environment and the README show it."""

    name: str
    kind: type
    default: Any
    help: str
    group: str
    unit: str
    accepts: Accepts | None

    @classmethod
    def of(cls, f: Field[Any]) -> Spec:
        kind = _KINDS[str(f.type).removesuffix(" | None")]
        meta = f.metadata
        assert "help" in meta, f"RouterSettings.{f.name}: declare it with setting(), for --help and the README"
        return cls(f.name, kind, f.default, meta["help"], meta["group"], meta["unit"], meta["accepts"])

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "ROUTER_" + self.name.upper()

    @property
    def metavar(self) -> str:
        if self.accepts and self.accepts.metavar:
            return self.accepts.metavar
        return _UNIT_METAVARS.get(self.unit) or self.name.rsplit("_", 1)[-1].upper()

    @property
    def expected(self) -> str:
        """What a value must be, for messages: "an integer from 0 to 65535"."""
        if self.accepts and self.accepts.replaces_type:
            return self.accepts.what
        kind = {bool: "true or false", int: "a number of bytes" if self.unit == "bytes" else "an integer",
                float: "a number of seconds" if self.unit == "s" else "a number", str: "text"}[self.kind]
        return f"{kind} {self.accepts.what}" if self.accepts else kind

    @property
    def default_text(self) -> str:
        value = self.default
        if value is None or value == "":
            return "none"
        if isinstance(value, bool):
            return str(value).lower()
        if self.unit == "s":
            return f"{value:g} s"
        if self.unit == "bytes":
            return f"{value} ({_binary(value)})" if value >= 1024 else f"{value}"
        return str(value)

    def refuses(self, value: object) -> bool:
        return value is not None and self.accepts is not None and not self.accepts.test(value)

    def parse(self, raw: str) -> object:
        """The value of a flag or variable; ValueError says what was expected and what came."""
        problem = ValueError(f"expected {self.expected}, got {raw!r}")
        value: object
        if self.kind is bool:
            text = raw.strip().lower()
            if text not in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
                raise problem
            value = text in ("true", "1", "yes", "on")
        else:
            try:
                value = self.kind(raw.strip() if self.kind is not str else raw)
            except ValueError:
                raise problem from None
        if self.refuses(value):
            raise problem
        return value

    def from_environ(self, environ: Mapping[str, str]) -> object:
        """The value of its `ROUTER_` variable, None when unset; ValueError names the variable."""
        if self.env not in environ:
            return None
        try:
            return self.parse(environ[self.env])
        except ValueError as exc:
            raise ValueError(f"{self.env}: {exc}") from None

    def parse_flag(self, raw: str) -> object:
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def describe(self) -> str:
        """The one-line help: what it does, then its default and variable."""
        return f"{self.help} (default: {self.default_text}; {self.env})"


def _binary(size: int) -> str:
    """A byte count of at least 1024 in the largest binary unit that divides it: 32768 is "32 KiB"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size / 1024:.1f} KiB"


SPECS = tuple(Spec.of(f) for f in fields(RouterSettings))


def spec(name: str) -> Spec:
    """The setting `name`, for a command that takes it too (the demo's ports)."""
    return next(spec for spec in SPECS if spec.name == name)


def add_arguments(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One flag per setting, in its group; an unset flag falls back to `ROUTER_<NAME>`, then the default.

    Returns the groups, so a command can add its own flags to them.
    """
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for spec in SPECS:
        text = spec.describe().replace("%", "%%")  # argparse formats help with %
        if spec.kind is bool:
            groups[spec.group].add_argument(spec.flag, dest=spec.name, action=argparse.BooleanOptionalAction,
                                            default=None, help=text)
        else:
            groups[spec.group].add_argument(spec.flag, dest=spec.name, default=None, type=spec.parse_flag,
                                            metavar=spec.metavar, help=text)
    return groups


def from_arguments(args: argparse.Namespace, environ: dict[str, str] | None = None) -> RouterSettings:
    """The settings: a flag (already parsed by argparse), else its variable, else the default."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, object] = {}
    problems: list[str] = []
    for spec in SPECS:
        value = getattr(args, spec.name, None)
        if value is None:
            try:
                value = spec.from_environ(environ)
            except ValueError as exc:
                problems.append(str(exc))
        if value is not None:
            values[spec.name] = value
    if problems:
        raise ConfigError(problems)
    settings = RouterSettings(**values)  # type: ignore[arg-type]
    settings.check()
    return settings


# The README's settings table, generated: `python -m router.settings --readme README.md`

TABLE_BEGIN = "<!-- settings table: made by `make readme` from router/settings.py -->"
TABLE_END = "<!-- end of settings table -->"


def markdown() -> str:
    """The settings table, group by group, as the README shows it."""
    lines = ["| flag | variable | default | what it does |", "|---|---|---|---|"]
    for group in GROUPS:
        specs = [spec for spec in SPECS if spec.group == group]
        if specs:
            lines.append(f"| **{group}** | | | |")
        for spec in specs:
            flag = f"`{spec.flag}`, `--no-{spec.flag[2:]}`" if spec.kind is bool else f"`{spec.flag} {spec.metavar}`"
            lines.append(f"| {flag} | `{spec.env}` | {spec.default_text} | {spec.help.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def with_table(readme: str) -> str:
    """`readme` with the text between the table's two markers replaced by `markdown()`."""
    pattern = re.compile(re.escape(TABLE_BEGIN) + r"\n.*?" + re.escape(TABLE_END), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"no settings table markers ({TABLE_BEGIN} ... {TABLE_END})")
    return pattern.sub(lambda _: f"{TABLE_BEGIN}\n{markdown()}{TABLE_END}", readme, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.settings", description="the settings table")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the settings table in Markdown")
    action.add_argument("--readme", metavar="FILE", help="rewrite the table between the markers in FILE")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(), end="")
        return 0
    with open(args.readme, encoding="utf-8") as f:
        text = f.read()
    try:
        new = with_table(text)
    except ValueError as exc:
        print(f"{args.readme}: {exc}", file=sys.stderr)
        return 1
    if new != text:
        with open(args.readme, "w", encoding="utf-8") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
