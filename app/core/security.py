"""Password hashing (Argon2id) and JWT access/refresh tokens."""

from __future__ import annotations

import secrets
import uuid
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


def hash_secret(plain: str) -> str:
    return _hasher.hash(plain)


def verify_secret(hashed: str | None, plain: str) -> bool:
    try:
        return _hasher.verify(hashed or _DUMMY_HASH, plain) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_token(secret: str, user_id: int, kind: str, ttl: timedelta, **claims: Any) -> tuple[str, str]:
    """Returns (token, jti)."""
    now = utcnow()
    jti = uuid.uuid4().hex
    payload = {"sub": str(user_id), "type": kind, "iat": now, "exp": now + ttl, "jti": jti, **claims}
    return jwt.encode(payload, secret, algorithm=ALGORITHM), jti


def decode_token(secret: str, token: str, kind: str) -> dict[str, Any]:
    try:
        payload: dict[str, Any] = jwt.decode(token, secret, algorithms=[ALGORITHM])
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid token") from None
    if payload.get("type") != kind:
        raise Unauthorized(f"expected a {kind} token")
    return payload
