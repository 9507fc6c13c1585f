"""The indexed Transfer events as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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
