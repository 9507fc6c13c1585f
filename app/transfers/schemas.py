from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.core.money import AccountRef, AmountText


class TransferCreate(BaseModel):
    to: AccountRef
    amount: AmountText
    memo: str | None = Field(default=None, max_length=500)


class TransferAuthorize(BaseModel):
    pin: str | None = Field(default=None, pattern=r"^[0-9]{4,12}$")
    otp: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    signature: str | None = Field(default=None, max_length=200)


class StepPublic(BaseModel):
    seq: int
    kind: str
    at: datetime
    details: dict[str, Any]


class Challenge(BaseModel):
    type: str  # pin | signature
    otp_required: bool = False
    typed_data: dict[str, Any] | None = None
    expires_at: datetime


class TransferPublic(BaseModel):
    id: str
    status: str
    from_address: str
    to_address: str
    to_user_id: int | None
    amount: str
    memo: str | None
    created_at: datetime
    tx_hash: str | None
    block_number: int | None
    failure_reason: str | None
    challenge: Challenge | None
    steps: list[StepPublic]


class TransferList(BaseModel):
    items: list[TransferPublic]
