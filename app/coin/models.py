"""Admin coin operations (mint, burn, pause, unpause)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from app.core.db import BigAmount
from common.dbtypes import utc_column


class CoinOperationKind(enum.StrEnum):
    mint = "mint"
    burn = "burn"
    pause = "pause"
    unpause = "unpause"
    grant = "grant"  # coins a new user receives on registration (app/users/grants.py)


class CoinOperationStatus(enum.StrEnum):
    submitted = "submitted"
    confirmed = "confirmed"
    failed = "failed"


class CoinOperation(SQLModel, table=True):
    """One admin action on the coin (mint, burn, pause, unpause) and the transaction that carries it."""

    __tablename__ = "coin_operations"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # CoinOperationKind
    actor_id: int = Field(foreign_key="users.id")
    account: str | None = Field(default=None, max_length=42)  # recipient of a mint, holder of a burn
    amount: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    memo: str | None = Field(default=None, max_length=500)
    tx_id: int | None = Field(default=None, foreign_key="outgoing_tx.id")
    status: str = Field(max_length=16)  # CoinOperationStatus
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
