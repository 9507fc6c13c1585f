from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from app.core.money import AccountRef, AmountText
from app.users.schemas import UserPublic


class GrantStatus(StrEnum):
    """What approving a user did about its approval grant (app/coin/grants.py)."""

    none = "none"  # no grant configured
    minted = "minted"  # the mint is prepared: the user had a wallet
    pending_wallet = "pending_wallet"  # paid when the user creates or links a wallet


class ApproveResult(BaseModel):
    user: UserPublic
    grant: str
    grant_status: GrantStatus
    grant_tx_hash: str | None = None


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


class NativeCurrency(BaseModel):
    name: str
    symbol: str
    decimals: int


class WalletNetwork(BaseModel):
    """What a browser wallet needs to add and switch to our chain (EIP-3085 wallet_addEthereumChain)."""

    chain_id_hex: str = Field(description="the chain id as wallets want it, e.g. 0x3e9")
    chain_name: str
    rpc_urls: list[str] = Field(description="public endpoints only; empty when none is configured")
    native_currency: NativeCurrency
    block_explorer_urls: list[str] | None


class CoinInfo(BaseModel):
    address: str
    name: str
    symbol: str
    decimals: int
    total_supply: str
    chain_id: int
    paused: bool
    icon_url: str = Field(description="the coin's 256 px PNG icon on this service (for wallet_watchAsset)")
    network: WalletNetwork


class CoinHistoryEntry(BaseModel):
    """One mint or burn as the chain recorded it (the transfer index), with our record of why."""

    kind: str  # mint | burn
    reason: str  # mint | burn | grant | production_reward | unknown (minted by another minter)
    account: str
    amount: str
    tx_hash: str
    block_number: int
    block_time: datetime | None
    memo: str | None = None
    actor_email: str | None = None


class CoinHistory(BaseModel):
    items: list[CoinHistoryEntry]
    indexed_to_block: int | None


class Balance(BaseModel):
    address: str
    balance: str
    balance_units: str
    block_number: int
