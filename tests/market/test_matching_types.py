"""Orders, fills, money rounding and the public book."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.market.matching.types import (
    Fill,
    MatchingError,
    Order,
    Side,
    aggregate_levels,
    escrow_amount,
    trade_value,
)


def test_order_accepts_side_as_string_and_round_trips_json() -> None:
    order = Order("o1", "alice", "buy", 1500, 120, 7)  # type: ignore[arg-type]
    assert order.side is Side.BUY and order.is_buy
    assert Order.from_json(json.loads(json.dumps(order.to_json()))) == order


@pytest.mark.parametrize(
    "fields",
    [
        ("", "alice", Side.BUY, 1, 1, 0),
        ("o1", "", Side.BUY, 1, 1, 0),
        ("o1", "alice", "hold", 1, 1, 0),
        ("o1", "alice", Side.BUY, 0, 1, 0),
        ("o1", "alice", Side.BUY, 1, 0, 0),
        ("o1", "alice", Side.BUY, 1, 1, -1),
        ("o1", "alice", Side.BUY, 1.5, 1, 0),
        ("o1", "alice", Side.BUY, True, 1, 0),
    ],
)
def test_order_rejects_bad_fields(fields: tuple) -> None:
    with pytest.raises(MatchingError):
        Order(*fields)


def test_trade_value_rounds_down_and_escrow_rounds_up() -> None:
    assert trade_value(1500, 101) == 151  # 151.5 -> the seller absorbs the half unit
    assert escrow_amount(1500, 101) == 152
    assert trade_value(2000, 100) == escrow_amount(2000, 100) == 200
    assert Fill("b", "s", 1500, 101).value == 151


@settings(max_examples=100, deadline=None)
@given(
    quantity=st.integers(1, 10**7),
    limit=st.integers(1, 10**21),
    parts=st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 10**21)), min_size=1, max_size=8),
)
def test_escrow_always_covers_the_trades_of_an_order(
    quantity: int, limit: int, parts: list[tuple[int, int]]
) -> None:
    # Any split of at most `quantity` into fills at prices <= limit costs at most the escrow.
    total = 0
    left = quantity
    for q, p in parts:
        q = min(q, left)
        left -= q
        total += trade_value(q, min(p, limit) or 1)
    assert total <= escrow_amount(quantity, limit)


def test_aggregate_levels_sums_per_price_best_first_without_identities() -> None:
    orders = [
        Order("a", "alice", Side.BUY, 100, 10, 1),
        Order("b", "bob", Side.BUY, 50, 12, 2),
        Order("c", "carol", Side.BUY, 25, 10, 3),
        Order("d", "dave", Side.SELL, 70, 15, 4),
        Order("e", "alice", Side.SELL, 30, 14, 5),
    ]
    assert aggregate_levels(orders) == {"bids": [(12, 50), (10, 125)], "asks": [(14, 30), (15, 70)]}
    assert aggregate_levels(orders, depth=1) == {"bids": [(12, 50)], "asks": [(14, 30)]}
    assert aggregate_levels([]) == {"bids": [], "asks": []}
