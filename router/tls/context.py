"""Server SSL contexts, and the listener context whose certificate can change while it serves.

A listening socket keeps the SSLContext it was created with, so rotation cannot replace
that object. Instead the listener's context carries an SNI callback, which OpenSSL runs
early in every handshake (with or without a server name from the client): it moves the
connection to the newest context (`SSLObject.context = ...`, documented in `ssl`). Every
context is built by `server_context`, so protocol and cipher settings are the same
whichever one a handshake ends up on. Connections already open keep the context they
shook hands with and finish normally; a refused replacement changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator

from router import logs, metrics
from router.errors import ConfigError
from router.tls.material import EXPIRY_WARNING_DAYS, CertificateInfo, PemPair, utc_now, validate

# TLS 1.2: forward-secret AEAD suites only (Mozilla's "intermediate" list); TLS 1.3 suites are all strong.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1:@SECLEVEL=2"
HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection may take to finish its handshake


def server_context(pair: PemPair, password: str | None = None) -> ssl.SSLContext:
    """A server context for `pair` (already validated): TLS 1.2+, strong ciphers, HTTP/1.1 by ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | ssl.OP_SINGLE_ECDH_USE | ssl.OP_NO_TICKET)
    context.set_alpn_protocols(["http/1.1"])
    try:
        with _private_file(pair.cert + b"\n" + pair.key) as path:
            context.load_cert_chain(path, password=password or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"{pair.cert_origin}, {pair.key_origin}: OpenSSL refuses the pair: {exc}"]) from None
    return context


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path to `data` for OpenSSL, which loads certificates only from files.

    The exact bytes validated are loaded (not the file again, which may have changed since),
    and the key never touches a disk: an anonymous memory file on Linux, else a file only the
    router's user can read, removed at once.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("router-tls", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="router-tls-") as directory:
        path = os.path.join(directory, "pair.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        yield path


def _digest(pair: PemPair) -> bytes:
    return hashlib.sha256(pair.cert + b"\0" + pair.key).digest()


class ServerTls:
    """The TLS listener's context and the certificate it serves; `update` rotates it.

    Built from a first pair (its problems stop the start); any source (files, a Secret
    from a file or a watch) then hands new pairs to `update`.
    """

    def __init__(self, pair: PemPair, *, password: str | None = None, cname: str | None = None) -> None:
        self.password = password
        self.cname = cname
        self.rotations = 0
        self.rejections = 0
        self.certificate, self._current = self._prepare(pair)
        self._digest = _digest(pair)
        self.listener = self._current
        self.listener.sni_callback = self._select
        self._log("tls.certificate", pair)

    def _prepare(self, pair: PemPair) -> tuple[CertificateInfo, ssl.SSLContext]:
        info = validate(pair, password=self.password, cname=self.cname)
        return info, server_context(pair, self.password)

    def update(self, pair: PemPair) -> bool:
        """Serve `pair` to new handshakes if it is valid; otherwise log why and keep the current one.

        Safe to call from a worker thread (the swap is one assignment).
        """
        digest = _digest(pair)
        if digest == self._digest:
            return True  # the same pair again (a resync): nothing to check, nothing to log
        try:
            info, context = self._prepare(pair)
        except ConfigError as exc:
            self.reject(exc.problems)
            return False
        self.certificate, self._current, self._digest = info, context, digest
        self.rotations += 1
        self._log("tls.rotated", pair)
        return True

    async def replace(self, read: Callable[[], PemPair]) -> None:
        """Serve what `read` returns (read and validated off the loop); a ConfigError from it is a
        rejected replacement: the current pair stays."""
        try:
            pair = await asyncio.to_thread(read)
        except ConfigError as exc:
            self.reject(exc.problems)
            return
        await asyncio.to_thread(self.update, pair)

    def reject(self, problems: list[str]) -> None:
        """Report a replacement that cannot be served (unreadable, invalid): the current one stays."""
        self.rejections += 1
        logs.event("tls.rejected", level=logging.ERROR, problems=problems,
                   note=f"the current certificate ({self.certificate.subject}) keeps serving")

    def _select(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                context: ssl.SSLContext) -> None:
        current = self._current
        if context is not current:
            connection.context = current

    def _log(self, event: str, pair: PemPair) -> None:
        metrics.set_certificate_expiry(self.certificate.not_after.timestamp())
        now = utc_now()
        logs.event(event, origin=pair.cert_origin, **self.certificate.log_fields(now))
        days = self.certificate.days_left(now)
        if days < EXPIRY_WARNING_DAYS:
            logs.event("tls.expiring", level=logging.WARNING, subject=self.certificate.subject,
                       not_after=self.certificate.not_after.isoformat(), days_left=round(days, 1),
                       note=f"the certificate expires in less than {EXPIRY_WARNING_DAYS} days: rotate it")

    def __repr__(self) -> str:
        c = self.certificate
        return (f"<ServerTls {c.subject} not_after={c.not_after.isoformat()} sha256={c.fingerprint[:16]} "
                f"rotations={self.rotations} rejections={self.rejections}>")
