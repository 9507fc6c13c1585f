"""Password hashing (Argon2id) and JWT access/refresh tokens."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.core.errors import Unauthorized

# OWASP minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the user does not exist, so a missing user takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
ALGORITHM = "HS256"
# Every claim we read must be there: a token without `exp` would never expire.
REQUIRED_CLAIMS = ["exp", "iat", "sub", "type", "jti", "fam", "ep"]
MAX_ID = 2**31 - 1  # users.id (and the session epoch) are 32-bit INTEGER columns on PostgreSQL
# Tokens already checked, with their expiry: a client sends the same access token with every request,
# and checking it again (base64, JSON, HMAC, claims) cost more CPU than the rest of a cheap request's
# authentication. Keyed by the whole token (and secret and kind): a token that differs in any byte is
# checked afresh. Bounded: emptied when full (only tokens we signed get in).
_CHECKED: dict[tuple[str, str, str], tuple[TokenClaims, int]] = {}
CHECKED_TOKENS_KEPT = 10_000
_clock = time.time  # seconds since 1970, as PyJWT reads `exp`


def hash_secret(plain: str) -> str:
    return _hasher.hash(plain)


def verify_secret(hashed: str | None, plain: str) -> bool:
    try:
        return _hasher.verify(hashed or _DUMMY_HASH, plain) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    kind: str  # access | refresh
    jti: str
    family: str  # the login session: every access and refresh token issued from one login shares it
    epoch: int  # the user's session epoch when issued (a password change moves it on)


def create_token(
    secret: str, user_id: int, kind: str, ttl: timedelta, *, family: str, epoch: int, **claims: Any
) -> tuple[str, str]:
    """Returns (token, jti)."""
    now = utcnow()
    jti = uuid.uuid4().hex
    payload = {
        "sub": str(user_id),
        "type": kind,
        "iat": now,
        "exp": now + ttl,
        "jti": jti,
        "fam": family,
        "ep": epoch,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), jti


def _bounded_int(value: Any) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if type(value) is int and 0 <= value <= MAX_ID:
        return value
    return None


def decode_token(secret: str, token: str, kind: str) -> TokenClaims:
    """The claims of a token we signed, of this kind and not expired; anything else is a 401."""
    key = (secret, token, kind)
    checked = _CHECKED.get(key)
    if checked is not None:
        claims, expires = checked
        if _clock() < expires:  # PyJWT's rule: expired once `exp <= now`
            return claims
        _CHECKED.pop(key, None)
        raise Unauthorized("token expired")
    claims, expires = _check_token(secret, token, kind)
    if len(_CHECKED) >= CHECKED_TOKENS_KEPT:
        _CHECKED.clear()
    _CHECKED[key] = (claims, expires)
    return claims


def _check_token(secret: str, token: str, kind: str) -> tuple[TokenClaims, int]:
    """The claims of a token we signed (of this kind, not expired) and its expiry (seconds since 1970)."""
    try:
        payload: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid token") from None
    if payload["type"] != kind:
        raise Unauthorized(f"not an {kind} token" if kind == "access" else f"not a {kind} token")
    user_id = _bounded_int(payload["sub"]) if isinstance(payload["sub"], str) else None
    epoch = _bounded_int(payload["ep"]) if type(payload["ep"]) is int else None
    jti, family = payload["jti"], payload["fam"]
    if user_id is None or epoch is None or not _short_str(jti) or not _short_str(family):
        raise Unauthorized("invalid token")
    claims = TokenClaims(user_id=user_id, kind=kind, jti=jti, family=family, epoch=epoch)
    return claims, int(payload["exp"])


def _short_str(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64
