"""`inference-router certs`: dev certificates, checks of a pair, Secret manifests.

    certs dev --cname NAME --out DIR [--ip IP]...  a CA and a server certificate for NAME,
                                                   127.0.0.1, ::1 and each IP: writes ca.pem,
                                                   ca-key.pem, cert.pem (server, then CA), key.pem
    certs check --cert F --key F [--cname NAME]    the router's own validation; prints subject,
                                                   names, issuer chain, expiry; exit 1 if invalid
    certs secret --cert F --key F [--name N]       a Kubernetes Secret manifest for the pair, after a
                                                   `---`, so it can be appended to a resources file

`dev` reuses the CA already in DIR (ca.pem, ca-key.pem), so a client trusting it keeps
doing so when the server certificate is made again (a new name, or a rotation). Files
are replaced by rename, so a router watching them never reads half a file.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from router.errors import ConfigError
from router.tls.context import server_context
from router.tls.material import CertificateInfo, PasswordName, PemPair, utc_now, validate
from router.tls.sources import PemFiles

_DNS_NAME = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
                       re.IGNORECASE)
_SECRET_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: str | None = None) -> bytes:
        encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                      else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _builder(subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey,
             not_before: datetime.datetime, not_after: datetime.datetime) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)] if len(subject) <= 64 else [])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def dev_ca(name: str = "inference-router dev CA", *, days: int = 3650, issuer: Issued | None = None,
           path_length: int = 0) -> Issued:
    """A self-signed root CA, or an intermediate CA signed by `issuer`; it signs server certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    builder = _builder(name, issuer.cert.subject if issuer else None, key, now - datetime.timedelta(minutes=1),
                       now + datetime.timedelta(days=days))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    cert = (builder
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(issuer.key if issuer else key, hashes.SHA256()))
    return Issued(cert, key)


def server_certificate(ca: Issued, cname: str, *, ips: Sequence[str] = (), days: int = 365,
                       not_before: datetime.datetime | None = None,
                       not_after: datetime.datetime | None = None) -> Issued:
    """A server certificate signed by `ca` for `cname` (a DNS name or an IP), loopback and `ips`."""
    names: list[x509.GeneralName] = []
    addresses = [*LOOPBACK, *(ipaddress.ip_address(ip) for ip in ips)]
    try:
        addresses.insert(0, ipaddress.ip_address(cname))
    except ValueError:
        if not _DNS_NAME.fullmatch(cname) or len(cname) > 253:
            raise ConfigError([f"--cname: {cname!r} is not a DNS name or an IP address"]) from None
        names.append(x509.DNSName(cname.lower()))
    names += [x509.IPAddress(ip) for ip in dict.fromkeys(addresses)]
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    start = not_before or now - datetime.timedelta(minutes=1)
    cert = (_builder(cname, ca.cert.subject, key, start, not_after or start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Issued(cert, key)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write by rename: a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _load_ca(out: Path) -> Issued | None:
    cert_path, key_path = out / "ca.pem", out / "ca-key.pem"
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError([f"{out}: cannot reuse the CA in ca.pem and ca-key.pem ({exc}); remove them "
                           "to make a new CA"]) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc < utc_now():
        raise ConfigError([f"{out}: the CA in ca.pem and ca-key.pem is expired or not one of ours; "
                           "remove them to make a new CA"])
    return Issued(cert, key)


def write_dev_certificates(out: Path, cname: str, *, ips: Sequence[str] = (), days: int = 365
                           ) -> tuple[Issued, bool]:
    """The server certificate written, and whether the CA already in `out` was reused."""
    out.mkdir(parents=True, exist_ok=True)
    ca = _load_ca(out)
    reused = ca is not None
    if ca is None:
        ca = dev_ca()
        write_private(out / "ca-key.pem", ca.key_pem())
        write_private(out / "ca.pem", ca.cert_pem(), 0o644)
    server = server_certificate(ca, cname, ips=ips, days=days)
    write_private(out / "key.pem", server.key_pem())
    write_private(out / "cert.pem", server.cert_pem() + ca.cert_pem(), 0o644)
    return server, reused


def describe(info: CertificateInfo) -> str:
    days = info.days_left(utc_now())
    chain = [f"{n}. {subject}  (issued by {issuer})" for n, (subject, issuer) in enumerate(info.chain, start=1)]
    return "\n".join([f"subject:  {info.subject}", f"names:    {', '.join(info.names) or 'none'}",
                      "chain:    " + "\n          ".join(chain),
                      f"expires:  {info.not_after.isoformat()} (in {days:.0f} days)", f"sha256:   {info.fingerprint}"])


# these commands take the passphrase as --key-password, not as `serve`'s sslKeyPassword
_KEY_PASSWORD = PasswordName("--key-password", "pass --key-password (or set ROUTER_SSL_KEY_PASSWORD)")


def check(pair: PemPair, *, password: str | None = None, cname: str | None = None) -> CertificateInfo:
    """What the router checks at start: the validation, then OpenSSL loading the pair."""
    info = validate(pair, password=password, cname=cname, password_name=_KEY_PASSWORD)
    server_context(pair, password)
    return info


def secret_manifest(pair: PemPair, name: str, namespace: str | None = None) -> str:
    if not _SECRET_NAME.fullmatch(name) or len(name) > 253:
        raise ConfigError([f"--name: {name!r} is not a valid Secret name (a DNS-1123 subdomain)"])
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    # `---` first: appended to a resources file, the Secret is a document of its own
    return "---\n" + yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
                           "data": {"cert.pem": base64.b64encode(pair.cert).decode(),
                                    "key.pem": base64.b64encode(pair.key).decode()}}, sort_keys=False)


# The command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    dev = commands.add_parser("dev", help="a dev CA and a server certificate for a name")
    dev.add_argument("--cname", required=True, help="the DNS name clients use (required; 127.0.0.1 and ::1 "
                     "are always covered too)")
    dev.add_argument("--out", required=True, type=Path, help="directory for ca.pem, ca-key.pem, cert.pem, key.pem "
                     "(required; a CA already there is reused)")
    dev.add_argument("--ip", action="append", default=[], help="one more IP address to cover, repeatable "
                     "(default: none)")
    dev.add_argument("--days", type=int, default=365, help="validity of the server certificate in days "
                       "(default: 365)")
    dev.set_defaults(func=_run_dev)
    for name, help_text, func in (("check", "validate a certificate and key as the router does", _run_check),
                                  ("secret", "print a Kubernetes Secret manifest for a pair", _run_secret)):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--cert", required=True, type=Path, help="certificate chain, PEM, server first (required)")
        sub.add_argument("--key", required=True, type=Path, help="private key, PEM (required)")
        sub.add_argument("--cname", help="a name the certificate must cover (default: none checked)")
        sub.add_argument("--key-password", help="passphrase of the key (default: ROUTER_SSL_KEY_PASSWORD)")
        sub.set_defaults(func=func)
    commands.choices["secret"].add_argument("--name", default="inference-router-tls",
                                            help="the Secret's name (default: inference-router-tls)")
    commands.choices["secret"].add_argument("--namespace", help="the Secret's namespace (default: none, "
                                            "kubectl's current one)")


def _pair(args: argparse.Namespace) -> tuple[PemPair, str | None]:
    password = args.key_password or os.environ.get("ROUTER_SSL_KEY_PASSWORD") or None
    return PemFiles(args.cert, args.key).read(), password


def _run_dev(args: argparse.Namespace) -> int:
    try:
        for ip in args.ip:
            ipaddress.ip_address(ip)
    except ValueError as exc:
        return _fail(2, [f"--ip: {exc}"])
    if not 1 <= args.days <= 3650:
        return _fail(2, [f"--days: must be from 1 to 3650, got {args.days}"])
    try:
        _, reused = write_dev_certificates(args.out, args.cname, ips=args.ip, days=args.days)
    except ConfigError as exc:
        return _fail(2, exc.problems)
    except OSError as exc:
        return _fail(2, [f"{args.out}: cannot write: {exc.strerror or exc}"])
    out, name = args.out, args.cname
    ca = (f"reused the CA in {out / 'ca.pem'} and {out / 'ca-key.pem'}" if reused else
          f"wrote the CA: {out / 'ca.pem'} (give it to clients) and {out / 'ca-key.pem'} (its key)")
    print(f"{ca}\nwrote the certificate for {name}: {out / 'cert.pem'} and {out / 'key.pem'}\n"
          f"serve:  inference-router serve --config FILE --ssl-cert-pem-file {out / 'cert.pem'} "
          f"--ssl-key-pem-file {out / 'key.pem'} --ssl-cname {name}\n"
          f"client: curl --cacert {out / 'ca.pem'} --resolve {name}:8443:127.0.0.1 https://{name}:8443/...")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    try:
        pair, password = _pair(args)
        info = check(pair, password=password, cname=args.cname)
    except ConfigError as exc:
        return _fail(1, exc.problems)
    print(describe(info))
    print("ok: the router accepts this pair" + (f" for {args.cname}" if args.cname else ""))
    return 0


def _run_secret(args: argparse.Namespace) -> int:
    try:
        pair, password = _pair(args)
        check(pair, password=password, cname=args.cname)
        print(secret_manifest(pair, args.name, args.namespace), end="")
    except ConfigError as exc:
        return _fail(1, exc.problems)
    return 0


def _fail(code: int, problems: list[str]) -> int:
    print("\n".join(["inference-router certs: invalid:" if code == 1 else "inference-router certs: cannot run:",
                     *(f"  {p}" for p in problems)]), file=sys.stderr)
    return code
