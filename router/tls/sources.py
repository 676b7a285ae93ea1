"""Where certificates come from, and the watch that rotates them.

A source reads a `PemPair` and says cheaply whether its input may have changed:
`PemFiles` (sslCertPemFile and sslKeyPemFile) and `SecretDocument` (in local mode, the
Secret named by sslSecret inside the config file). In cluster mode the Secret comes from
the cluster source's watch instead (`SecretFeed`): `WatchedSecret` turns each version into
a pair through `secret_pair` and hands it to `ServerTls.update`.

The watch polls, like the config file's: it sees in-place writes, renames and the
symlink swaps of Kubernetes Secret volumes alike, and reads a change only once it has
settled, so a cert and key replaced one after the other are mostly seen together (a
half-replaced pair is refused, and the next change is read again).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from router import files
from router.discovery.documents import parse_document, yaml_problem
from router.errors import ConfigError
from router.model import Secret
from router.settings import RouterSettings
from router.tls.context import ServerTls
from router.tls.material import PemPair

MAX_PEM_BYTES = 1 << 20  # a long chain is a few KiB: a bigger file is a mistake (a wrong path, a device)
MAX_CONFIG_BYTES = 64 << 20
CERT_KEYS = (("cert.pem", "key.pem"), ("tls.crt", "tls.key"))  # ours; the kubernetes.io/tls type's

Signature = tuple[files.Signature, ...]


class PemSource(Protocol):
    def signature(self) -> Signature:
        """Changes whenever the input may have changed (file metadata, not content)."""
        ...

    def read(self) -> PemPair:
        """The pair now; ConfigError naming the input when it cannot be read."""
        ...


def _read(path: Path, origin: str, limit: int = MAX_PEM_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError([f"{origin}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > limit:
        raise ConfigError([f"{origin}: larger than {limit // 1024} KiB: not a certificate or key file"])
    return data


class PemFiles:
    def __init__(self, cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> None:
        self.cert, self.key = Path(cert), Path(key)

    def signature(self) -> Signature:
        return files.signature(self.cert), files.signature(self.key)

    def read(self) -> PemPair:
        cert_origin, key_origin = f"sslCertPemFile {self.cert}", f"sslKeyPemFile {self.key}"
        problems = []
        data: list[bytes] = []
        for path, origin in ((self.cert, cert_origin), (self.key, key_origin)):
            try:
                data.append(_read(path, origin))
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)
        return PemPair(data[0], data[1], cert_origin, key_origin)

    def __repr__(self) -> str:
        return f"PemFiles({str(self.cert)!r}, {str(self.key)!r})"


class SecretDocument:
    """The Secret document named `name` in a multi-document YAML file (local mode's sslSecret)."""

    def __init__(self, path: str | os.PathLike[str], name: str) -> None:
        self.path, self.name = Path(path), name

    def signature(self) -> Signature:
        return (files.signature(self.path),)

    def read(self) -> PemPair:
        origin = f"sslSecret {self.name} in {self.path}"
        try:
            docs = list(yaml.safe_load_all(_read(self.path, origin, MAX_CONFIG_BYTES)))
        except yaml.YAMLError as exc:  # its text quotes the lines around the error, key.pem's included
            raise ConfigError([yaml_problem(exc, origin)]) from None
        found = [doc for doc in docs if isinstance(doc, dict) and doc.get("kind") == "Secret"
                 and isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name") == self.name]
        if len(found) != 1:
            raise ConfigError([f"{origin}: expected one Secret document named {self.name!r}, found {len(found)}"])
        return secret_pair(secret_data(found[0], origin), origin)

    def __repr__(self) -> str:
        return f"SecretDocument({str(self.path)!r}, {self.name!r})"


def secret_data(doc: Mapping[str, object], origin: str) -> dict[str, str]:
    """A Secret document's values, decoded by the one Secret validator (`stringData` wins, as in Kubernetes).

    Its problems are named from `origin` (which says what the Secret is for), not from the document."""
    given = doc.get("metadata")
    metadata: dict[str, object] = dict(given) if isinstance(given, dict) else {}
    try:
        secret = parse_document({**doc, "apiVersion": "v1", "kind": "Secret",
                                 "metadata": {**metadata, "name": "tls"}})  # the name is not what is checked
    except ConfigError as exc:
        raise ConfigError([f"{origin}: {problem.split(': ', 1)[1]}" for problem in exc.problems]) from None
    assert isinstance(secret, Secret)
    return dict(secret.data)


def secret_pair(data: Mapping[str, str | bytes], origin: str) -> PemPair:
    """The pair in a Secret's decoded data: `cert.pem` and `key.pem` (or `tls.crt` and `tls.key`)."""
    for cert_key, key_key in CERT_KEYS:
        if cert_key in data and key_key in data:
            cert, key = data[cert_key], data[key_key]
            return PemPair(cert.encode() if isinstance(cert, str) else cert,
                           key.encode() if isinstance(key, str) else key,
                           f"{origin}: {cert_key}", f"{origin}: {key_key}")
    raise ConfigError([f"{origin}: needs the keys cert.pem and key.pem (or tls.crt and tls.key); "
                       f"has {', '.join(sorted(data)) or 'none'}"])


def source_for(settings: RouterSettings, *, config_path: str | os.PathLike[str] | None) -> PemSource:
    """The certificate source the settings name; sslSecret reads the config file (local mode)."""
    if settings.ssl_cert_pem_file and settings.ssl_key_pem_file:
        return PemFiles(settings.ssl_cert_pem_file, settings.ssl_key_pem_file)
    if settings.ssl_secret and config_path is not None:
        return SecretDocument(config_path, settings.ssl_secret)
    raise ConfigError(["no TLS certificate source: set sslCertPemFile and sslKeyPemFile, "
                       "or sslSecret with --kubernetes or a config file that holds that Secret"])


class CertificateWatch:
    """A source, the TLS state built from its first pair, and the poll that rotates it."""

    def __init__(self, source: PemSource, *, password: str | None = None, cname: str | None = None,
                 poll_interval: float = 0.5) -> None:
        self.source = source
        self.poll_interval = poll_interval
        self._seen = source.signature()  # before the read: a change during it is read again
        self.tls = ServerTls(source.read(), password=password, cname=cname)

    @classmethod
    def from_settings(cls, settings: RouterSettings, *,
                      config_path: str | os.PathLike[str] | None) -> CertificateWatch:
        return cls(source_for(settings, config_path=config_path), password=settings.ssl_key_password,
                   cname=settings.ssl_cname, poll_interval=settings.config_poll_interval)

    async def run(self) -> None:
        """Poll forever; hand each settled change to `ServerTls.update` (parsing runs off the loop)."""
        async for _ in files.settled_changes(self.source.signature, self._seen, self.poll_interval):
            await self.tls.replace(self.source.read)

    def __repr__(self) -> str:
        return f"<CertificateWatch {self.source!r} {self.tls!r}>"


@runtime_checkable
class SecretFeed(Protocol):
    """A cluster source, as sslSecret needs it: one named Secret, watched (`KubernetesSource`)."""

    async def follow_secret(self, name: str, on_change: Callable[[Mapping[str, Any] | None], None]) -> str:
        """Call `on_change` with the Secret (None while there is none) after its first list and on
        every change; return its namespace once listed (ConfigError if it cannot be listed)."""
        ...


class WatchedSecret:
    """sslSecret in cluster mode: the Secret as a `SecretFeed` delivers it, served and rotated."""

    def __init__(self, name: str, *, password: str | None = None, cname: str | None = None) -> None:
        self.name, self.origin = name, f"sslSecret {name}"
        self.password, self.cname = password, cname
        self._secret: Mapping[str, Any] | None = None
        self._changed = asyncio.Event()
        self.tls: ServerTls  # set by `follow`

    @classmethod
    async def from_settings(cls, settings: RouterSettings, feed: SecretFeed) -> WatchedSecret:
        assert settings.ssl_secret
        watched = cls(settings.ssl_secret, password=settings.ssl_key_password, cname=settings.ssl_cname)
        await watched.follow(feed)
        return watched

    async def follow(self, feed: SecretFeed) -> None:
        """Wait for the Secret's first list and serve it: missing or invalid, a ConfigError stops the start."""
        namespace = await feed.follow_secret(self.name, self._offer)
        self.origin = f"sslSecret {self.name} in namespace {namespace}"
        self._changed.clear()
        self.tls = ServerTls(self._pair(), password=self.password, cname=self.cname)

    def _offer(self, secret: Mapping[str, Any] | None) -> None:
        self._secret = secret
        self._changed.set()

    def _pair(self) -> PemPair:
        if self._secret is None:
            raise ConfigError([f"{self.origin}: no such Secret (create it with cert.pem and key.pem, "
                               "or tls.crt and tls.key)"])
        return secret_pair(secret_data(self._secret, self.origin), self.origin)

    async def run(self) -> None:
        """Serve the latest version after each change (validation runs off the loop); refuse a bad one."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.tls.replace(self._pair)

    def __repr__(self) -> str:
        return f"<WatchedSecret {self.origin} {getattr(self, 'tls', '(not listed yet)')!r}>"
