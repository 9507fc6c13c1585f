"""The trading profile and the agent's activity at the API (money as decimal strings)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.api.params import RowId
from app.core.money import AMOUNT_HELP, AmountText

SUGGESTION = "null: follow the price suggestion (GET /api/v1/market/price) in every slot"


class ProfileSettings(BaseModel):
    enabled: bool
    site_id: RowId | None = Field(
        default=None, description="your site the agent trades for; none: buy side only"
    )
    sell_floor: AmountText | None = Field(
        default=None, description="lowest sell price, " + AMOUNT_HELP + "; " + SUGGESTION
    )
    buy_ceiling: AmountText | None = Field(default=None, description="highest buy price; " + SUGGESTION)
    reserve_pct: int = Field(
        default=20, ge=0, le=100, description="battery charge the agent never sells below (0-100 %)"
    )
    max_wh_per_slot: int = Field(
        default=5000, gt=0, lt=2**31, description="the most the agent trades per slot"
    )
    expected_use_wh: int | None = Field(
        default=None, ge=0, lt=2**31, description="without a site: what you expect to use per slot (Wh)"
    )
    daily_limit: AmountText = Field(
        default="0", description="the most buy escrow the agent may commit per UTC day"
    )


class ProfileUpdate(ProfileSettings):
    """Enabling is authorised once: a custodial wallet with its PIN (and one-time code when enrolled), a
    linked wallet with a signature over the typed data of POST /trading/profile/typed-data."""

    pin: str | None = Field(default=None, pattern=r"^[0-9]{4,12}$")
    otp: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    signature: str | None = Field(default=None, max_length=200)


class ProfilePublic(BaseModel):
    enabled: bool
    site_id: int | None
    sell_floor: str | None
    buy_ceiling: str | None
    reserve_pct: int
    max_wh_per_slot: int
    expected_use_wh: int | None
    daily_limit: str
    spent_today: str
    authorized_by: str | None
    authorized_at: datetime | None
    version: int
    updated_at: datetime | None


class ProfileTypedData(BaseModel):
    typed_data: dict[str, Any]


class ActivityPublic(BaseModel):
    id: int
    at: datetime
    action: str
    slot_start: datetime | None
    side: str | None
    order_id: str | None
    quantity_wh: int | None
    price: str | None
    reason: str


class ActivityList(BaseModel):
    items: list[ActivityPublic]
