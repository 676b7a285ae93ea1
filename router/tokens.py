"""Tokens for `aml_token` endpoints: short-lived, endpoint-scoped JWTs signed with HMAC.

The signing key is the endpoint Secret's `tokenSigningKey`, or, when the Secret has
none, one derived from its `primaryKey` (PBKDF2-HMAC-SHA256 salted with the endpoint's
namespace and name, so a token is no cheap oracle for guessing `primaryKey` and one
key shared by two endpoints signs different tokens); either way, rotating it
invalidates every token signed before. A token names its endpoint as audience, so it
opens no other, and must say when it was issued: a lifetime over 24 hours is refused.
Checked tokens are remembered per routing table (by their exact bytes, until they
expire), so the signature is computed once per token, not once per request.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import jwt

from router.errors import INVALID_CREDENTIALS, ConfigError, Unauthorized

ISSUER = "inference-router"
LEEWAY_S = 30  # clock skew allowed between the issuer and the router
MAX_TTL_S = 24 * 3600
KDF_ITERATIONS = 100_000  # about 70 ms once per key and endpoint (cached), as much per guess offline
_CACHE_SIZE = 4096
_TTL = re.compile(r"(\d+)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def signing_key(secret_data: Mapping[str, str], namespace: str, endpoint: str) -> bytes | None:
    """The HMAC key for an endpoint's tokens, from its Secret's data."""
    if secret_data.get("tokenSigningKey"):
        return str(secret_data["tokenSigningKey"]).encode()
    if secret_data.get("primaryKey"):
        return derived_key(str(secret_data["primaryKey"]), f"{namespace}/{endpoint}")
    return None


_derived: dict[bytes, bytes] = {}  # by a digest of key and salt: no key kept in memory after its rotation


def derived_key(primary_key: str, salt: str) -> bytes:
    """A routing table is rebuilt on every change: derived once per key and salt."""
    seen = hashlib.sha256(salt.encode() + b"\0" + primary_key.encode()).digest()
    key = _derived.get(seen)
    if key is None:
        if len(_derived) >= 1024:
            _derived.clear()
        key = _derived[seen] = hashlib.pbkdf2_hmac("sha256", primary_key.encode(),
                                                   b"inference-router token signing:" + salt.encode(), KDF_ITERATIONS)
    return key


def parse_ttl(text: str, name: str = "--ttl") -> int:
    """Seconds from a duration like 30m, 1h or 3600; `name` is what the caller calls it, for messages."""
    shown = text if len(text) <= 20 else text[:17] + "..."
    match = _TTL.fullmatch(text.strip().lower())
    if not match:
        raise ConfigError([f"{name}: expected a duration like 30m, 1h or 3600, got {shown!r}"])
    digits = match.group(1).lstrip("0") or "0"
    # more digits than any lifetime has: not converted (int() refuses thousands of digits)
    seconds = int(digits) * _UNITS[match.group(2)] if len(digits) <= 9 else MAX_TTL_S + 1
    if not 60 <= seconds <= MAX_TTL_S:
        raise ConfigError([f"{name}: must be from 1 minute to 24 hours, got {shown!r}"])
    return seconds


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def issue(endpoint: str, key: bytes, ttl_s: int = 3600, now: float | None = None) -> dict[str, str]:
    """A token for `endpoint`, answered as Azure ML answers: accessToken, expiryTimeUtc, refreshAfterTimeUtc."""
    now = time.time() if now is None else now
    expires = int(now) + ttl_s
    claims = {"iss": ISSUER, "aud": endpoint, "iat": int(now), "nbf": int(now), "exp": expires}
    token = jwt.encode(claims, key, algorithm="HS256")
    return {"accessToken": token, "expiryTimeUtc": _utc(expires), "refreshAfterTimeUtc": _utc(now + ttl_s / 2)}


class TokenChecker:
    """Checks bearer tokens for one endpoint with one key; remembers the good ones until they expire."""

    __slots__ = ("_cache", "endpoint", "key")

    def __init__(self, endpoint: str, key: bytes | None) -> None:
        self.endpoint = endpoint
        self.key = key
        self._cache: dict[bytes, float] = {}

    def check(self, token: bytes, now: float | None = None) -> None:
        now = time.time() if now is None else now
        expires = self._cache.get(token)
        if expires is not None:
            if now <= expires + LEEWAY_S:
                return
            del self._cache[token]
        if self.key is None:
            raise Unauthorized(INVALID_CREDENTIALS)  # (its Secret's problem is in its status and log)
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience=self.endpoint, issuer=ISSUER,
                                leeway=LEEWAY_S, options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is for another endpoint") from None
        except jwt.PyJWTError:
            raise Unauthorized(INVALID_CREDENTIALS) from None
        if not all(isinstance(claims[name], int | float) for name in ("exp", "iat")):  # PyJWT takes "123"
            raise Unauthorized(INVALID_CREDENTIALS)
        if claims["exp"] - claims["iat"] > MAX_TTL_S:  # what the issuer promises: a client could not mint more
            raise Unauthorized("the token's lifetime (exp - iat) is over 24 hours")
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = float(claims["exp"])
