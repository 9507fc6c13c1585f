"""A user's wallet: custodial (key sealed with envelope encryption) or linked (a mobile wallet's address);
its TOTP enrolment and the challenges that link a mobile wallet."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from common.dbtypes import utc_column


class WalletKind(enum.StrEnum):
    custodial = "custodial"  # we hold the key, sealed; the user authorises with a PIN (and a one-time code)
    linked = "linked"  # a mobile wallet's address; the user signs in their wallet app


class Wallet(SQLModel, table=True):
    __tablename__ = "wallets"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    kind: str = Field(max_length=16)  # WalletKind
    address: str = Field(max_length=42, index=True)
    active: bool = True
    sealed_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    pin_hash: str | None = Field(default=None, max_length=200)
    pin_failures: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column(nullable=False))


class UserTotp(SQLModel, table=True):
    __tablename__ = "user_totp"

    user_id: int = Field(primary_key=True, foreign_key="users.id")
    sealed_secret: str = Field(sa_column=Column(Text, nullable=False))
    enabled: bool = False
    last_counter: int = -1  # the last accepted time step: a code is accepted only once
    # Wrong codes since the last right one (reserved before checking); the limit locks until locked_until.
    failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    locked_until: datetime | None = Field(default=None, sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column(nullable=False))


class LinkChallenge(SQLModel, table=True):
    __tablename__ = "link_challenges"

    nonce: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="users.id", index=True)
    address: str = Field(max_length=42)
    message: str = Field(sa_column=Column(Text, nullable=False))
    expires_at: datetime = Field(sa_column=utc_column(nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=utc_column())


class ServiceSecret(SQLModel, table=True):
    """A secret of the service itself (the PIN pepper), sealed under the master key like a wallet key and
    re-wrapped with it by `essx rotate-master-key`."""

    __tablename__ = "service_secrets"

    name: str = Field(primary_key=True, max_length=64)
    sealed: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
