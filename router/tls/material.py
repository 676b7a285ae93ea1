"""A certificate chain and its private key, parsed and checked before OpenSSL sees them.

OpenSSL loads a pair whose certificate has expired, whose chain is reversed or whose
names do not cover the router's: clients then fail, far from the cause. Every such
problem is found here instead, with a message naming the input (the file or Secret
key it came from) and what to change. The same checks run at start, on every
rotation, and in `inference-router certs check`.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from router.errors import ConfigError

_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)
_KEY_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----\r?\n.*?-----END \1-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PasswordName:
    """How the caller takes a key's passphrase, for the messages about it."""

    name: str  # "sslKeyPassword does not decrypt the private key"
    hint: str  # "the private key is protected by a passphrase: set sslKeyPassword (...)"


SERVE_PASSWORD = PasswordName("sslKeyPassword", "set sslKeyPassword (--ssl-key-password or ROUTER_SSL_KEY_PASSWORD)")
EXPIRY_WARNING_DAYS = 14
# Clocks in a cluster differ by seconds, and issuers such as cert-manager start a certificate's
# validity at the moment they sign it: refusing it then would keep the old one until the next change.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class PemPair:
    """The bytes of a certificate chain and its key, and where each came from (for messages)."""

    cert: bytes
    key: bytes
    cert_origin: str
    key_origin: str

    def __repr__(self) -> str:  # never the key
        return f"PemPair({self.cert_origin!r}, {self.key_origin!r})"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What `certs check` prints and the router logs about the certificate it serves."""

    subject: str
    names: tuple[str, ...]  # subjectAltName entries, "DNS:x" or "IP:x"
    chain: tuple[tuple[str, str], ...]  # (subject, issuer) of each certificate, server first
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str  # SHA-256 of the server certificate, hex

    def days_left(self, now: datetime.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    def log_fields(self, now: datetime.datetime) -> dict[str, Any]:
        return {"subject": self.subject, "names": list(self.names), "issuer": self.chain[0][1],
                "not_after": self.not_after.isoformat(), "days_left": round(self.days_left(now), 1),
                "sha256": self.fingerprint}


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def validate(pair: PemPair, *, password: str | None = None, cname: str | None = None,
             now: datetime.datetime | None = None, password_name: PasswordName = SERVE_PASSWORD) -> CertificateInfo:
    """Check `pair` as a server's certificate; raise ConfigError listing every problem found."""
    problems: list[str] = []
    chain = _certificates(pair, problems)
    key = _private_key(pair, password, password_name, problems)
    if problems:
        raise ConfigError(problems)
    leaf = chain[0]
    # a chain led by a CA certificate is reported as out of order: its key is the server's, not the CA's
    if key is not None and not _is_ca(leaf) and _public_der(key.public_key()) != _public_der(leaf.public_key()):
        problems.append(f"{pair.key_origin}: the private key does not match the certificate "
                        f"({_name(leaf.subject)}) in {pair.cert_origin}")
    problems += [f"{pair.cert_origin}: {p}" for p in _chain_problems(chain)]
    problems += [f"{pair.cert_origin}: {p}" for p in _validity_problems(chain, now or utc_now())]
    if cname is not None and not covers(leaf, cname):
        shown = ", ".join(san_names(leaf)) or "none"
        problems.append(f"{pair.cert_origin}: sslCname {cname!r} is not covered by the certificate's "
                        f"subjectAltName ({shown})")
    if problems:
        raise ConfigError(problems)
    return CertificateInfo(
        subject=_name(leaf.subject), names=san_names(leaf),
        chain=tuple((_name(c.subject), _name(c.issuer)) for c in chain),
        not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex())


def _certificates(pair: PemPair, problems: list[str]) -> list[x509.Certificate]:
    blocks = _CERT_BLOCK.findall(pair.cert)
    if not blocks:
        hint = " (it looks like DER: convert it with `openssl x509 -inform der`)" if pair.cert[:1] == b"\x30" else ""
        problems.append(f"{pair.cert_origin}: not PEM: no '-----BEGIN CERTIFICATE-----' block{hint}")
        return []
    chain = []
    for number, block in enumerate(blocks, start=1):
        try:
            chain.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            problems.append(f"{pair.cert_origin}: certificate {number} is not a valid certificate: {exc}")
    return chain


def _private_key(pair: PemPair, password: str | None, named: PasswordName,
                 problems: list[str]) -> PrivateKeyTypes | None:
    found = list(_KEY_BLOCK.finditer(pair.key))
    if len(found) != 1:
        problems.append(f"{pair.key_origin}: not PEM: no '-----BEGIN ... PRIVATE KEY-----' block" if not found
                        else f"{pair.key_origin}: holds {len(found)} private keys, expected one")
        return None
    block = found[0].group(0)
    encrypted = found[0].group(1) == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block
    if encrypted and not password:
        problems.append(f"{pair.key_origin}: the private key is protected by a passphrase: {named.hint}")
        return None
    try:
        return serialization.load_pem_private_key(block, password.encode() if encrypted and password else None)
    except TypeError:  # encrypted in a way the block's header did not show
        problems.append(f"{pair.key_origin}: the private key is protected by a passphrase: {named.hint}")
    except ValueError as exc:
        problems.append(f"{pair.key_origin}: {named.name} does not decrypt the private key" if encrypted
                        else f"{pair.key_origin}: not a valid private key: {exc}")
    except UnsupportedAlgorithm as exc:
        problems.append(f"{pair.key_origin}: unsupported private key: {exc}")
    return None


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _chain_problems(chain: list[x509.Certificate]) -> list[str]:
    order = "the server certificate first, then its intermediates, then (optionally) the root"
    if _is_ca(chain[0]):
        servers = [n for n, c in enumerate(chain, start=1) if not _is_ca(c)]
        if not servers:
            return [f"certificate 1 ({_name(chain[0].subject)}) is a CA certificate, and no server certificate "
                    f"follows; expected {order}"]
        return [f"chain out of order: certificate {servers[0]} ({_name(chain[servers[0] - 1].subject)}) is the "
                f"server certificate, after the CA certificate {_name(chain[0].subject)}; expected {order}"]
    problems = []
    for number, (cert, issuer) in enumerate(itertools.pairwise(chain), start=1):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            problems.append(f"chain out of order: certificate {number + 1} ({_name(issuer.subject)}) did not "
                            f"issue certificate {number} ({_name(cert.subject)}, issued by {_name(cert.issuer)}); "
                            f"expected {order}")
    try:
        usage = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in usage and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage:
            problems.append(f"certificate 1 ({_name(chain[0].subject)}) is not for servers: its extendedKeyUsage "
                            "lacks serverAuth")
    except x509.ExtensionNotFound:
        pass
    return problems


def _validity_problems(chain: list[x509.Certificate], now: datetime.datetime) -> list[str]:
    problems = []
    for number, cert in enumerate(chain, start=1):
        if now + CLOCK_SKEW < cert.not_valid_before_utc:
            problems.append(f"certificate {number} ({_name(cert.subject)}) is not valid yet: not before "
                            f"{cert.not_valid_before_utc.isoformat()}")
        elif now > cert.not_valid_after_utc:
            problems.append(f"certificate {number} ({_name(cert.subject)}) expired on "
                            f"{cert.not_valid_after_utc.isoformat()}")
    return problems


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "no subject"


# Names: RFC 6125 §6.4 as browsers apply it.

def san_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (*(f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)),
            *(f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)))


def covers(cert: x509.Certificate, cname: str) -> bool:
    """True when the certificate's subjectAltName covers `cname` (the subject's CN never counts)."""
    try:
        address = ipaddress.ip_address(cname)
    except ValueError:
        address = None
    for entry in san_names(cert):
        kind, _, value = entry.partition(":")
        if kind == "IP" and address is not None and ipaddress.ip_address(value) == address:
            return True
        if kind == "DNS" and address is None and name_matches(value, cname):
            return True
    return False


def _normal(name: str) -> str:
    name = name.strip().rstrip(".").lower()
    try:
        return name if name.isascii() else name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def name_matches(pattern: str, host: str) -> bool:
    """Does the DNS name `pattern` (from a certificate) cover `host`?

    A wildcard counts only as the whole left-most label of a name with at least two more
    labels (`*.example.com`), and stands for exactly one non-empty label: `*.example.com`
    covers `a.example.com`, not `example.com` nor `a.b.example.com`. Partial wildcards
    (`w*.example.com`), which RFC 6125 allows but CAs no longer issue, never match.
    A `sslCname` that is itself a wildcard matches only the same wildcard.
    """
    pattern, host = _normal(pattern), _normal(host)
    if not pattern or not host:
        return False
    if pattern == host:
        return True
    first, _, rest = pattern.partition(".")
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    label, _, host_rest = host.partition(".")
    return bool(label) and label != "*" and host_rest == rest
