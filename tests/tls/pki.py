"""Certificates for the TLS tests, made with the router's own tooling (`router.tls.certs`).

A few odd certificates the tooling never makes on purpose (an RSA key, a client-only
certificate) are built here with `cryptography` directly.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from router.tls import PemPair
from router.tls.certs import Issued, dev_ca, server_certificate
from tests.routing import connect

CNAME = "router.test"
MINUTE = datetime.timedelta(minutes=1)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


@dataclass
class Pki:
    """A dev CA, its files, and server certificates it issues."""

    ca: Issued
    directory: Path

    @property
    def ca_file(self) -> Path:
        path = self.directory / "ca.pem"
        if not path.exists():
            path.write_bytes(self.ca.cert_pem())
        return path

    def server(self, cname: str = CNAME, **kwargs: object) -> Issued:
        return server_certificate(self.ca, cname, **kwargs)  # type: ignore[arg-type]

    def pair(self, server: Issued | None = None, *, chain: bool = True, password: str | None = None,
             cert: bytes | None = None, key: bytes | None = None) -> PemPair:
        server = server or self.server()
        cert_pem = server.cert_pem() + (self.ca.cert_pem() if chain else b"")
        return PemPair(cert if cert is not None else cert_pem,
                       key if key is not None else server.key_pem(password), "cert.pem", "key.pem")

    def write(self, directory: Path, pair: PemPair, *, atomic: bool = True, gap: float = 0) -> tuple[Path, Path]:
        """cert.pem, then `gap` seconds later key.pem, in `directory`: replaced by rename, or rewritten in place."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = directory / "cert.pem", directory / "key.pem"
        for path, data in zip(paths, (pair.cert, pair.key), strict=True):
            if path.name == "key.pem":
                time.sleep(gap)
            if atomic:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            else:
                with open(path, "wb") as f:
                    f.write(data)
        return paths

    def client(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client context that trusts only this CA (and checks host names)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        for name, version in versions.items():
            setattr(context, name, version)
        return context


def fingerprint(der: bytes | None) -> str:
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def served_fingerprint(port: int, context: ssl.SSLContext, server_hostname: str | None = CNAME) -> str:
    """The SHA-256 of the certificate a new handshake to 127.0.0.1:port presents."""
    with connect(port) as sock, context.wrap_socket(sock, server_hostname=server_hostname) as tls:
        return fingerprint(tls.getpeercert(binary_form=True))


def leaf_fingerprint(issued: Issued) -> str:
    return fingerprint(issued.cert.public_bytes(serialization.Encoding.DER))


def odd_certificate(ca: Issued, *, rsa_bits: int | None = None, client_only: bool = False) -> tuple[bytes, bytes]:
    """A server certificate with an RSA key of `rsa_bits`, or one for clients only: (cert PEM, key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits or 2048)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client_only else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CNAME)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - DAY).not_valid_after(now() + DAY)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(CNAME)]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM) + ca.cert_pem(), key_pem


def new_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    return Pki(dev_ca(), directory)
