from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.core.money import AccountRef, AmountText


class MintRequest(BaseModel):
    to: AccountRef
    amount: AmountText
    memo: str | None = Field(default=None, max_length=500)


class BurnRequest(BaseModel):
    amount: AmountText
    from_: AccountRef | None = Field(
        default=None,
        alias="from",
        description="holder to burn from (needs an allowance to the platform); default: the platform treasury",
    )
    memo: str | None = Field(default=None, max_length=500)


class PauseRequest(BaseModel):
    memo: str | None = Field(default=None, max_length=500)


class CoinOperationPublic(BaseModel):
    id: int
    kind: str
    account: str | None
    amount: str | None
    memo: str | None
    status: str  # submitted | confirmed | failed
    tx_hash: str | None
    block_number: int | None
    error: str | None = None
    created_at: datetime


class CoinInfo(BaseModel):
    address: str
    name: str
    symbol: str
    decimals: int
    total_supply: str
    chain_id: int
    paused: bool


class Balance(BaseModel):
    address: str
    balance: str
    balance_units: str
    block_number: int


class TransferPublic(BaseModel):
    tx_hash: str
    log_index: int
    block_number: int
    block_time: datetime | None
    from_address: str
    to_address: str
    value: str
    direction: str  # in | out | self


class TransferPage(BaseModel):
    address: str
    items: list[TransferPublic]
    indexed_to_block: int | None
