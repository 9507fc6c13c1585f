"""Pick a slot's mechanism by name, and bring one back after a restart."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.market.matching import MatchingError, Mechanism, Order
from app.market.matching_auction import CallAuctionBook
from app.market.matching_continuous import ContinuousBook

MECHANISMS: dict[str, type[ContinuousBook] | type[CallAuctionBook]] = {
    ContinuousBook.name: ContinuousBook,
    CallAuctionBook.name: CallAuctionBook,
}


def _mechanism_class(name: str) -> type[ContinuousBook] | type[CallAuctionBook]:
    try:
        return MECHANISMS[name]
    except KeyError:
        raise MatchingError(f"unknown matching mechanism {name!r}; known: {sorted(MECHANISMS)}") from None


def create_mechanism(name: str) -> Mechanism:
    return _mechanism_class(name)()


def restore_mechanism(state: dict[str, Any]) -> Mechanism:
    """Inverse of `Mechanism.snapshot()`."""
    return _mechanism_class(str(state.get("mechanism"))).restore(state)


def rebuild_mechanism(name: str, open_orders: Iterable[Order], last_seq: int | None = None) -> Mechanism:
    """Rebuild from the database's open orders (remaining quantities) and the slot's highest seq."""
    return _mechanism_class(name).from_orders(open_orders, last_seq=last_seq)
