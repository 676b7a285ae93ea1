"""TLS termination: validated certificates, hardened contexts, rotation without restart.

- `material` parses a certificate chain and key (`PemPair`) with `cryptography` and
  checks them as a server's: key matches, chain order, validity, `sslCname` in the
  subjectAltName, passphrase; each problem is a message naming its input.
- `context` builds server SSL contexts (TLS 1.2+, forward-secret AEAD ciphers, no
  compression, no renegotiation, HTTP/1.1 by ALPN) and `ServerTls`, the listener's
  context whose certificate `update` replaces for new handshakes only; an invalid
  replacement is refused and the current one keeps serving.
- `sources` reads pairs from files or a Secret and polls them (`CertificateWatch`);
  in cluster mode `WatchedSecret` serves the Secret a cluster source watches (`SecretFeed`).
- `certs` is the `inference-router certs` tooling: a dev CA and server certificate,
  `check` (the same validation), and a Secret manifest.

`cryptography` is imported only in this package.
"""

from router.tls.context import HANDSHAKE_TIMEOUT, ServerTls, server_context
from router.tls.material import CertificateInfo, PemPair, validate
from router.tls.sources import (
    CertificateWatch,
    PemFiles,
    SecretDocument,
    SecretFeed,
    WatchedSecret,
    secret_data,
    secret_pair,
)

__all__ = ["HANDSHAKE_TIMEOUT", "CertificateInfo", "CertificateWatch", "PemFiles", "PemPair", "SecretDocument",
           "SecretFeed", "ServerTls", "WatchedSecret", "secret_data", "secret_pair", "server_context", "validate"]
