"""Tokens for `aml_token` endpoints: short-lived, endpoint-scoped JWTs signed with HMAC.

The signing key is the endpoint Secret's `tokenSigningKey`, or, when the Secret has
none, one derived from its `primaryKey`; either way, rotating it invalidates every
token signed before. A token names its endpoint as audience, so it opens no other.
Checked tokens are remembered per routing table (by their exact bytes, until they
expire), so the signature is computed once per token, not once per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime
from typing import Any

import jwt

from router.errors import ConfigError, Unauthorized

ISSUER = "inference-router"
LEEWAY_S = 30  # clock skew allowed between the issuer and the router
MAX_TTL_S = 24 * 3600
_CACHE_SIZE = 4096
_TTL = re.compile(r"(\d+)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def signing_key(secret_data: dict[str, str] | Any) -> bytes | None:
    """The HMAC key for an endpoint's tokens, from its Secret's data."""
    if secret_data.get("tokenSigningKey"):
        return str(secret_data["tokenSigningKey"]).encode()
    if secret_data.get("primaryKey"):
        return hmac.new(str(secret_data["primaryKey"]).encode(), b"inference-router token signing",
                        hashlib.sha256).digest()
    return None


def parse_ttl(text: str) -> int:
    match = _TTL.fullmatch(text.strip().lower())
    if not match:
        raise ConfigError([f"--ttl: expected a duration like 30m, 1h or 3600, got {text!r}"])
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 60 <= seconds <= MAX_TTL_S:
        raise ConfigError([f"--ttl: must be from 1 minute to 24 hours, got {text!r}"])
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
            raise Unauthorized(f"endpoint {self.endpoint!r} has no token signing key")
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience=self.endpoint, issuer=ISSUER,
                                leeway=LEEWAY_S, options={"require": ["exp", "aud", "iss"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is for another endpoint") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = float(claims["exp"])
