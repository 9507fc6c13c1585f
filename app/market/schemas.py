from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.params import RowId, UtcTime
from app.core.money import AMOUNT_HELP, AmountText


class OrderCreate(BaseModel):
    side: Literal["buy", "sell"]
    slot_start: UtcTime
    quantity_wh: int = Field(gt=0, lt=2**32)
    limit_price: AmountText = Field(description="coins per kWh: " + AMOUNT_HELP)
    site_id: RowId | None = Field(default=None, description="sellers: the site the energy comes from")
    counterpart_id: RowId | None = Field(default=None, description="a direct offer to this user only")


class OrderAuthorize(BaseModel):
    pin: str | None = Field(default=None, pattern=r"^[0-9]{4,12}$")
    otp: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    signature: str | None = Field(default=None, max_length=200)


class OrderChallenge(BaseModel):
    type: str  # pin | signature
    otp_required: bool = False
    typed_data: dict[str, Any] | None = None
    expires_at: datetime


class OrderPublic(BaseModel):
    id: str
    side: str
    slot_start: datetime
    quantity_wh: int
    open_wh: int
    filled_wh: int
    limit_price: str
    site_id: int | None
    counterpart_id: int | None
    status: str
    escrow_amount: str
    escrow_status: str
    escrow_tx_hash: str | None
    failure_reason: str | None
    challenge: OrderChallenge | None
    created_at: datetime


class OrderList(BaseModel):
    items: list[OrderPublic]


class BookLevel(BaseModel):
    price: str
    quantity_wh: int


class BookPublic(BaseModel):
    slot_start: datetime
    floor: str
    ceiling: str
    gate_closure: datetime
    mechanism: str
    bids: list[BookLevel]
    asks: list[BookLevel]


class MarketInfo(BaseModel):
    slot_minutes: int
    gate_closure_minutes: int
    horizon_hours: int
    mechanism: str
    price_unit: str
    tariff: dict[str, Any]
    next_slots: list[dict[str, Any]]


class TradePublic(BaseModel):
    id: str
    slot_start: datetime
    quantity_wh: int
    price: str
    value: str
    status: str
    side: str  # the caller's side
    buy_order_id: str
    sell_order_id: str
    buy_order_hash: str
    sell_order_hash: str
    orders_hash: str
    record_tx_hash: str | None
    trade_no: int | None
    contracted_wh: int
    measured_wh: int | None
    settled_wh: int | None
    paid: str | None
    refunded: str | None
    penalty: str | None
    settle_rule: str | None
    settle_tx_hash: str | None
    refund_proof: dict[str, Any] | None = (
        None  # what EnergyMarket.refundTrade needs, if the platform vanished
    )
    created_at: datetime


class TradeList(BaseModel):
    items: list[TradePublic]
