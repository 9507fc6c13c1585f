"""The public book's price levels (`GET /market/book`), kept per slot in memory by every process that
answers it, and brought up to date from the orders changed since, at each read.

A slot's levels are built once from its open orders; a read then takes the change counter's last
committed number and the orders stamped above what it saw. Numbers are committed in the order they are
given (`MarketChange`), so once the counter reads n every change up to n is visible: a read answers
exactly what a GROUP BY over the slot would, from the handful of orders changed since the last read
instead of every open order (at 50k orders in a slot, tens of ms of the database's CPU per read). Each
order's latest row replaces what was known of it, so reading a change twice is harmless. It reads the
counter without taking its lock (a plain SELECT), so a reader never waits for a placement.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlmodel import col

from app.context import Context
from app.market.matching.types import BookLevels
from app.market.models import MarketChange, Order, OrderSide, OrderStatus

MAX_SLOTS = 32  # slots kept, the least recently read dropped first
REBUILD_AFTER = 5_000  # changes since a slot's last read (in every slot) past which it is read afresh

_COLUMNS = (
    col(Order.id),
    col(Order.slot_start),
    col(Order.side),
    col(Order.limit_price),
    col(Order.open_wh),
    col(Order.status),
    col(Order.counterpart_id),
)
_COUNTER = select(col(MarketChange.last_no)).where(col(MarketChange.id) == 1)


@dataclass(slots=True)
class _Slot:
    seen: int  # the change number these levels reflect
    orders: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id -> (side, price, open Wh)
    # (side, price) -> [open Wh, orders]: a level lasts while an open order has its price, as in a GROUP BY
    levels: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def put(self, row: Any) -> None:
        """The order's row as it is now replaces what the levels knew of it."""
        old = self.orders.pop(row.id, None)
        if old is not None:
            level = self.levels[(old[0], old[1])]
            level[0] -= old[2]
            level[1] -= 1
            if level[1] == 0:
                del self.levels[(old[0], old[1])]
        if row.status == OrderStatus.open and row.counterpart_id is None:
            side, price, wh = str(row.side), int(row.limit_price), int(row.open_wh)
            self.orders[row.id] = (side, price, wh)
            level = self.levels.setdefault((side, price), [0, 0])
            level[0] += wh
            level[1] += 1

    def render(self) -> BookLevels:
        bids = sorted(((p, q[0]) for (s, p), q in self.levels.items() if s == OrderSide.buy), reverse=True)
        asks = sorted((p, q[0]) for (s, p), q in self.levels.items() if s == OrderSide.sell)
        return {"bids": bids, "asks": asks}


class PublicLevels:
    """One database's public levels, shared by the threads of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: OrderedDict[datetime, _Slot] = OrderedDict()

    def read(self, conn: Connection, slot_start: datetime) -> BookLevels | None:
        """The slot's levels as committed now; None when the counter has no row yet (a fresh database:
        the caller asks the database)."""
        with self._lock:  # the counter read too: numbers then reach a slot in order
            current = conn.execute(_COUNTER).scalar()
            if current is None:
                return None
            slot = self._slots.get(slot_start)
            # not built, not read for long, or the database was replaced
            if slot is None or not slot.seen <= current <= slot.seen + REBUILD_AFTER:
                slot = _Slot(current)
                rows = conn.execute(
                    select(*_COLUMNS).where(
                        col(Order.slot_start) == slot_start,
                        col(Order.status) == OrderStatus.open,
                        col(Order.counterpart_id).is_(None),
                    )
                )
                for row in rows:
                    slot.put(row)
                self._slots[slot_start] = slot
            elif current > slot.seen:
                # by the change number's index alone (with the slot in the WHERE, a planner may take
                # the slot's index and scan its whole book)
                changed = select(*_COLUMNS).where(col(Order.change_no) > slot.seen)
                for row in conn.execute(changed):
                    if row.slot_start == slot_start:
                        slot.put(row)
                slot.seen = current
            self._slots.move_to_end(slot_start)
            while len(self._slots) > MAX_SLOTS:
                self._slots.popitem(last=False)
            return slot.render()


_MAKE_LOCK = threading.Lock()


def for_context(ctx: Context) -> PublicLevels:
    """The context's public levels, made on first use (tests build one Context per test over a database
    emptied in between, so the levels live with the Context, not with the engine)."""
    with _MAKE_LOCK:
        if ctx.public_levels is None:
            ctx.public_levels = PublicLevels()
        levels: PublicLevels = ctx.public_levels
        return levels
