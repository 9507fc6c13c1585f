"""The market's matching mechanisms as pure logic: no database, web framework or chain in here."""

from app.market.matching import (
    AuctionResult,
    BookLevels,
    Fill,
    GateClosure,
    MatchingError,
    Mechanism,
    Order,
    Side,
    aggregate_levels,
    escrow_amount,
    trade_value,
)
from app.market.matching_auction import CallAuctionBook, clear_call_auction, clearing_price
from app.market.matching_continuous import ContinuousBook
from app.market.matching_registry import MECHANISMS, create_mechanism, rebuild_mechanism, restore_mechanism

__all__ = [
    "MECHANISMS",
    "AuctionResult",
    "BookLevels",
    "CallAuctionBook",
    "ContinuousBook",
    "Fill",
    "GateClosure",
    "MatchingError",
    "Mechanism",
    "Order",
    "Side",
    "aggregate_levels",
    "clear_call_auction",
    "clearing_price",
    "create_mechanism",
    "escrow_amount",
    "rebuild_mechanism",
    "restore_mechanism",
    "trade_value",
]
