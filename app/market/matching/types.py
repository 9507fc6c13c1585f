"""Shared vocabulary of the matching engines: orders, fills, money rounding, the public book.

Pure logic: no database, no web framework, no chain. Money is integer coin base units, energy integer
Wh, prices integer base units per kWh. The mechanisms themselves live in `continuous` (pay-as-bid) and
`auction` (pay-as-clear).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, TypedDict

WH_PER_KWH = 1000
SNAPSHOT_VERSION = 1


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class MatchingError(ValueError):
    """An order or a state the matching engine refuses (bad fields, duplicate id, closed book...)."""


def _require_int(name: str, value: object, minimum: int) -> None:
    # `type(...) is int` rather than isinstance: bool is an int subclass and True is not a quantity.
    if type(value) is not int or value < minimum:
        raise MatchingError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Order:
    """An order for one delivery slot, with its *open* quantity."""

    id: str
    owner: str
    side: Side
    quantity_wh: int
    limit_price: int
    seq: int  # arrival order: the time priority, strictly increasing per book

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise MatchingError("order id must be a non-empty string")
        if not isinstance(self.owner, str) or not self.owner:
            raise MatchingError("order owner must be a non-empty string")
        if not isinstance(self.side, Side):
            try:
                object.__setattr__(self, "side", Side(self.side))
            except ValueError as exc:
                raise MatchingError(f"side must be 'buy' or 'sell', got {self.side!r}") from exc
        _require_int("quantity_wh", self.quantity_wh, 1)
        _require_int("limit_price", self.limit_price, 1)
        _require_int("seq", self.seq, 0)

    @property
    def is_buy(self) -> bool:
        return self.side is Side.BUY

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "side": self.side.value,
            "quantity_wh": self.quantity_wh,
            "limit_price": self.limit_price,
            "seq": self.seq,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        return cls(
            id=data["id"],
            owner=data["owner"],
            side=Side(data["side"]),
            quantity_wh=data["quantity_wh"],
            limit_price=data["limit_price"],
            seq=data["seq"],
        )


class Fill(NamedTuple):
    """One matched trade between a buy order and a sell order at one price.

    A NamedTuple rather than a frozen dataclass: the auction creates one per pairing and a frozen
    dataclass costs about three times as much to build.
    """

    buy_order_id: str
    sell_order_id: str
    quantity_wh: int
    price: int

    @property
    def value(self) -> int:
        return trade_value(self.quantity_wh, self.price)


def trade_value(quantity_wh: int, price: int) -> int:
    """Coins the buyer pays for one fill: rounded *down* (the seller absorbs < 1 base unit per fill).

    Rounding down per fill and up for escrow (`escrow_amount`) is what makes escrow always enough:
    sum(floor(q_i * p_i / 1000)) <= floor(sum(q_i) * limit / 1000) <= ceil(quantity * limit / 1000)
    whenever every p_i <= limit and sum(q_i) <= quantity.
    """
    return quantity_wh * price // WH_PER_KWH


def escrow_amount(quantity_wh: int, limit_price: int) -> int:
    """Coins a buy order locks when accepted: its quantity at its limit price, rounded *up*."""
    return -(-quantity_wh * limit_price // WH_PER_KWH)


class BookLevels(TypedDict):
    """The public, anonymous book: (price, total open Wh) per level, best first on each side."""

    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


def aggregate_levels(orders: Iterable[Order], depth: int | None = None) -> BookLevels:
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for order in orders:
        levels = bids if order.side is Side.BUY else asks
        levels[order.limit_price] = levels.get(order.limit_price, 0) + order.quantity_wh
    bid_levels = sorted(bids.items(), reverse=True)
    ask_levels = sorted(asks.items())
    if depth is not None:
        bid_levels, ask_levels = bid_levels[:depth], ask_levels[:depth]
    return {"bids": bid_levels, "asks": ask_levels}


@dataclass(frozen=True, slots=True)
class AuctionResult:
    """Outcome of a uniform-price call auction: one price for every fill (None when nothing traded)."""

    price: int | None
    fills: list[Fill] = field(default_factory=list)

    @property
    def volume_wh(self) -> int:
        return sum(f.quantity_wh for f in self.fills)


@dataclass(frozen=True, slots=True)
class GateClosure:
    """What closing a slot's book produces: the last fills and the orders that expire unmatched.

    `expired` carries each unmatched order with its remaining open quantity: the service releases
    exactly that part of the buyer's escrow.
    """

    price: int | None
    fills: list[Fill]
    expired: list[Order]


def snapshot_state(name: str, orders: list[Order], last_seq: int, closed: bool) -> dict[str, Any]:
    return {
        "mechanism": name,
        "version": SNAPSHOT_VERSION,
        "last_seq": last_seq,
        "closed": closed,
        "orders": [o.to_json() for o in orders],
    }


def parse_snapshot(name: str, state: dict[str, Any]) -> tuple[list[Order], int, bool]:
    if state.get("mechanism") != name:
        raise MatchingError(f"snapshot is for {state.get('mechanism')!r}, not {name!r}")
    if state.get("version") != SNAPSHOT_VERSION:
        raise MatchingError(f"unsupported snapshot version {state.get('version')!r}")
    orders = [Order.from_json(o) for o in state["orders"]]
    last_seq = state["last_seq"]
    _require_int("last_seq", last_seq, -1)
    return orders, last_seq, bool(state["closed"])
