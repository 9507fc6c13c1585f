"""Request and answer of the Kaia fee-delegation relay."""

from __future__ import annotations

from pydantic import BaseModel, Field


class KaiaRelayRequest(BaseModel):
    raw_transaction: str = Field(
        description="0x-hex of the sender-signed fee-delegated transaction (type 0x31)",
        max_length=2 + 2 * 32 * 1024,  # Kaia nodes take transactions of at most 32 KiB
    )


class KaiaRelayResult(BaseModel):
    tx_hash: str
    sender_tx_hash: str
    fee_payer: str
