"""Orders for delivery slots and the trades matched from them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Connection, Index, event, text
from sqlmodel import Field, Session, SQLModel

from app.spending.holds import Hold, register
from common.dbtypes import BigAmount, utc_column


class OrderSide(enum.StrEnum):
    buy = "buy"
    sell = "sell"


class OrderStatus(enum.StrEnum):
    """pending_authorization -> open -> filled | cancelled | expired; failed when the escrow could not lock."""

    pending_authorization = "pending_authorization"
    open = "open"
    filled = "filled"
    cancelled = "cancelled"
    expired = "expired"
    failed = "failed"


class EscrowStatus(enum.StrEnum):
    """A buy order's escrow: none -> authorized -> locking -> locked -> releasing -> released, or unused
    (authorised, never matched)."""

    none = "none"
    authorized = "authorized"
    locking = "locking"
    locked = "locked"
    releasing = "releasing"
    released = "released"
    unused = "unused"  # authorised, never matched: nothing was ever locked


class TradeStatus(enum.StrEnum):
    """matched -> recording -> recorded -> settling -> settled; refunded (the buyer reclaimed after the
    timeout)."""

    matched = "matched"
    recording = "recording"
    recorded = "recorded"
    settling = "settling"
    settled = "settled"
    refunded = "refunded"


class SettleRule(enum.StrEnum):
    """How a trade's delivered energy was decided (`Trade.settle_rule`): from the anchored meter data, or
    by an admin for a slot whose data is incomplete (as contracted, or as measured so far)."""

    measured = "measured"
    contracted = "contracted"
    measured_by_admin = "measured_by_admin"
    contracted_by_admin = "contracted_by_admin"


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_slot_status", "slot_start", "status"),
        # what a site already offers in a slot (the sell check): not a scan of the slot's whole book
        Index("ix_orders_site_slot", "site_id", "slot_start"),
    )

    id: str = Field(primary_key=True, max_length=32)  # uuid4 hex; the escrow's on-chain id derives from it
    user_id: int = Field(foreign_key="users.id", index=True)
    side: str = Field(max_length=4)  # OrderSide
    slot_start: datetime = Field(sa_column=utc_column(nullable=False))
    quantity_wh: int
    open_wh: int  # still matchable
    filled_wh: int = 0
    limit_price: int = Field(sa_column=Column(BigAmount, nullable=False))  # base units per kWh
    site_id: int | None = Field(default=None, foreign_key="sites.id")
    counterpart_id: int | None = Field(default=None, foreign_key="users.id")  # a direct offer names one
    status: str = Field(max_length=24, index=True)  # OrderStatus
    seq: int | None = Field(default=None, index=True)  # time priority once in the book
    wallet_address: str | None = Field(default=None, max_length=42)
    escrow_amount: int = Field(default=0, sa_column=Column(BigAmount, nullable=False))
    escrow_status: str = Field(
        default=EscrowStatus.none, max_length=16
    )  # none | authorized | locking | locked | releasing | released ; unused (never matched)
    typed_data: dict | None = Field(default=None, sa_column=Column(JSON))
    valid_after: int | None = None
    valid_before: int | None = None
    signature: str | None = Field(default=None, max_length=140)
    lock_tx_id: int | None = Field(default=None, foreign_key="outgoing_tx.id")
    release_tx_id: int | None = Field(default=None, foreign_key="outgoing_tx.id")
    failure_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))
    # stamped on every insert and update from `market_changes`: what the matcher's book has not seen yet
    change_no: int | None = Field(default=None, sa_column=Column(BigInteger, index=True))


# A buy order's authorised escrow holds its coins until the lock is mined (app/spending/holds.py); from
# `locked` on they have left the wallet (a release returns part of them: counting it as gone only errs low).
register(
    Hold(
        Order.escrow_amount,
        Order.wallet_address,
        Order.escrow_status,
        (EscrowStatus.authorized, EscrowStatus.locking),
        spent=(EscrowStatus.locked, EscrowStatus.releasing, EscrowStatus.released),
        changed_at=Order.updated_at,  # stamped when the batch's receipt marks the escrow locked
    )
)


class MarketChange(SQLModel, table=True):
    """One row: the last change number given to an order (and the last seq, which comes from it).

    Numbers are taken with `UPDATE ... RETURNING`, which holds the row's lock (PostgreSQL) or the write
    lock (SQLite) until commit, so they are committed in the order they are given: a reader that has seen
    number n has seen every number below it. The market worker relies on that to keep its book current.
    """

    __tablename__ = "market_changes"

    id: int = Field(primary_key=True)
    last_no: int = Field(sa_column=Column(BigInteger, nullable=False))


_BUMP = text("UPDATE market_changes SET last_no = last_no + :step WHERE id = 1 RETURNING last_no")
# the row may be missing (a wiped database): start above every number already in use
_START = text(
    "INSERT INTO market_changes (id, last_no) VALUES (1, (SELECT COALESCE(MAX(seq), 0) FROM orders) "
    "+ (SELECT COALESCE(MAX(change_no), 0) FROM orders)) ON CONFLICT (id) DO NOTHING"
)


def next_change(conn: Connection, step: int = 1) -> int:
    """The next change number (step 0: the current one), locking the counter until the commit."""
    no = conn.execute(_BUMP, {"step": step}).scalar()
    if no is None:
        conn.execute(_START)
        no = conn.execute(_BUMP, {"step": step}).scalar_one()
    return int(no)


@event.listens_for(Order, "before_insert")
@event.listens_for(Order, "before_update")
def _stamp_change(_mapper: Any, conn: Connection, order: Order) -> None:
    order.change_no = next_change(conn)


class Trade(SQLModel, table=True):
    __tablename__ = "trades"

    id: str = Field(primary_key=True, max_length=32)
    slot_start: datetime = Field(sa_column=utc_column(nullable=False, index=True))
    buy_order_id: str = Field(foreign_key="orders.id", index=True, max_length=32)
    sell_order_id: str = Field(foreign_key="orders.id", index=True, max_length=32)
    buyer_id: int = Field(foreign_key="users.id", index=True)
    seller_id: int = Field(foreign_key="users.id", index=True)
    quantity_wh: int
    price: int = Field(sa_column=Column(BigAmount, nullable=False))
    value: int = Field(sa_column=Column(BigAmount, nullable=False))
    buy_limit_price: int = Field(sa_column=Column(BigAmount, nullable=False))
    orders_hash: str = Field(max_length=66)
    status: str = Field(max_length=16, index=True)  # TradeStatus
    trade_no: int | None = None  # the contract's sequence number, from the TradeRecorded event
    record_tx_id: int | None = Field(default=None, foreign_key="outgoing_tx.id")
    batch_no: int | None = None
    proof: dict | None = Field(default=None, sa_column=Column(JSON))  # what refundTrade needs
    measured_wh: int | None = None
    delivered_wh: int | None = None
    paid: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    refunded: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    penalty: int | None = Field(default=None, sa_column=Column(BigAmount, nullable=True))
    settle_rule: str | None = Field(default=None, max_length=24)  # SettleRule
    settle_tx_id: int | None = Field(default=None, foreign_key="outgoing_tx.id")
    created_at: datetime = Field(sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(sa_column=utc_column(nullable=False))


def lock_changes(session: Session) -> None:
    """Take the change counter's lock before locking any order row: every order write takes it (the
    stamp), the matcher first of all, so taking it first keeps two writers from waiting on each other."""
    next_change(session.connection(), 0)
