"""The trading domain's tables: profiles, the agent's orders and what it did."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from common.dbtypes import BigAmount, utc_column


class AgentAction(StrEnum):
    enabled = "enabled"
    disabled = "disabled"
    placed = "placed"
    cancelled = "cancelled"
    skipped = "skipped"


class TradingProfile(SQLModel, table=True):
    """One per user. Prices are base units per kWh; None means "follow the price suggestion"."""

    __tablename__ = "trading_profiles"

    user_id: int = Field(primary_key=True, foreign_key="users.id")
    enabled: bool = False
    site_id: int | None = Field(default=None, foreign_key="sites.id")
    sell_floor: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    buy_ceiling: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    reserve_pct: int = 20
    max_wh_per_slot: int = 5000
    expected_use_wh: int | None = None  # consumers (no site): what they expect to use per slot
    daily_limit: int = Field(default=0, sa_column=Column(BigAmount, nullable=False))  # buy escrow per UTC day
    authorized_by: str | None = Field(default=None, max_length=16)  # pin | signature
    authorized_at: datetime | None = Field(default=None, sa_column=utc_column())
    version: int = 0  # moves on with every change: a linked wallet signs the version it enables
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


class AgentOrder(SQLModel, table=True):
    """An order the agent placed. ``live_key`` ("user:slot:side") is set while the order is the agent's
    current one for that slot and side; it is unique, so no pass (or crashed and repeated pass) can hold
    two live orders for one slot and side. The link commits in the order's own transaction."""

    __tablename__ = "trading_agent_orders"
    __table_args__ = (Index("ix_trading_agent_orders_user_placed", "user_id", "placed_at"),)

    order_id: str = Field(primary_key=True, foreign_key="orders.id", max_length=32)
    user_id: int = Field(foreign_key="users.id")
    slot_start: datetime = Field(sa_column=utc_column(nullable=False))
    side: str = Field(max_length=4)
    live_key: str | None = Field(default=None, max_length=64, unique=True)
    placed_at: datetime = Field(sa_column=utc_column(nullable=False))


class AgentActivity(SQLModel, table=True):
    """What the agent did for a user, and why (shown on the dashboard)."""

    __tablename__ = "trading_activity"
    __table_args__ = (Index("ix_trading_activity_user_id", "user_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id")
    at: datetime = Field(sa_column=utc_column(nullable=False))
    action: str = Field(max_length=16)  # AgentAction
    slot_start: datetime | None = Field(default=None, sa_column=utc_column())
    side: str | None = Field(default=None, max_length=4)
    order_id: str | None = Field(default=None, max_length=32)
    quantity_wh: int | None = None
    price: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    reason: str = Field(max_length=300)
