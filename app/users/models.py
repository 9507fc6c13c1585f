"""Users, their refresh tokens, ended sessions and login throttling."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from common.dbtypes import utc_column


class Role(enum.StrEnum):
    admin = "admin"
    prosumer = "prosumer"
    consumer = "consumer"


class UserStatus(enum.StrEnum):
    pending = "pending"  # prosumers wait for an admin's approval before they may trade
    approved = "approved"
    disabled = "disabled"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False, index=True))
    password_hash: str
    display_name: str = Field(max_length=100)
    role: str = Field(max_length=16)
    status: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    approved_at: datetime | None = Field(default=None, sa_column=utc_column())
    approved_by: int | None = Field(default=None, foreign_key="users.id")
    # Every token carries the epoch it was issued in; a password change moves it on, ending every session.
    session_epoch: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class RefreshToken(SQLModel, table=True):
    """Refresh tokens rotate: each is used once; a reused one revokes the whole family."""

    __tablename__ = "refresh_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="users.id", index=True)
    family: str = Field(max_length=64, index=True)
    expires_at: datetime = Field(sa_column=utc_column(nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=utc_column())


class RevokedTokenFamily(SQLModel, table=True):
    """Sessions ended by a logout or a reused refresh token: their access tokens are refused until
    they could have expired anyway (then the row may go)."""

    __tablename__ = "revoked_token_families"

    family: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="users.id")
    revoked_at: datetime = Field(sa_column=utc_column(nullable=False))
    expires_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))


class LoginThrottle(SQLModel, table=True):
    """Wrong-password counters (app/users/throttle.py). `pair:` rows (account and client): the run of
    failures, `window_start` its last attempt, `locked_until` the back-off. `client:` rows: failures in
    the window that began at `window_start`."""

    __tablename__ = "login_throttle"

    key: str = Field(primary_key=True, max_length=400)
    failures: int = 0
    window_start: datetime = Field(sa_column=utc_column(nullable=False))
    locked_until: datetime | None = Field(default=None, sa_column=utc_column())
