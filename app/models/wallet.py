"""A user's wallet: custodial (key sealed with envelope encryption) or linked (a mobile wallet's address)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from app.models.user import utc_column


class Wallet(SQLModel, table=True):
    __tablename__ = "wallets"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    kind: str = Field(max_length=16)  # custodial | linked
    address: str = Field(max_length=42, index=True)
    active: bool = True
    sealed_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    pin_hash: str | None = Field(default=None, max_length=200)
    pin_failures: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=utc_column())
    created_at: datetime = Field(sa_column=utc_column(nullable=False))


class ServiceSecret(SQLModel, table=True):
    """A secret of the service itself (the PIN pepper), sealed under the master key like a wallet key and
    re-wrapped with it by `essx rotate-master-key`."""

    __tablename__ = "service_secrets"

    name: str = Field(primary_key=True, max_length=64)
    sealed: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
