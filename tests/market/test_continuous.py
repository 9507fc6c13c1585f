"""Continuous pay-as-bid: hand-made books for each rule, then properties against a naive model."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings

from app.market.matching.continuous import ContinuousBook
from app.market.matching.types import Fill, MatchingError, Order, Side, escrow_amount, trade_value
from tests.market.reference import NaiveContinuousBook, filled_by_order
from tests.market.strategies import operations

BUY, SELL = Side.BUY, Side.SELL


def book_with(*orders: tuple[str, str, Side, int, int]) -> ContinuousBook:
    book = ContinuousBook()
    for seq, (oid, owner, side, qty, price) in enumerate(orders):
        assert book.submit(Order(oid, owner, side, qty, price, seq)) == []
    return book


def test_orders_that_do_not_cross_rest() -> None:
    book = book_with(("b1", "alice", BUY, 100, 90), ("s1", "bob", SELL, 100, 110))
    assert book.levels() == {"bids": [(90, 100)], "asks": [(110, 100)]}
    assert (book.best_bid(), book.best_ask()) == (90, 110)


def test_incoming_buy_pays_its_own_bid_and_the_remainder_rests() -> None:
    book = book_with(("s1", "bob", SELL, 300, 80))
    fills = book.submit(Order("b1", "alice", BUY, 500, 100, 10))
    assert fills == [Fill("b1", "s1", 300, 100)]  # pay-as-bid: the buyer's 100, not the ask's 80
    assert book.levels() == {"bids": [(100, 200)], "asks": []}


def test_incoming_sell_trades_at_the_resting_bid() -> None:
    book = book_with(("b1", "alice", BUY, 300, 120))
    assert book.submit(Order("s1", "bob", SELL, 100, 90, 10)) == [Fill("b1", "s1", 100, 120)]
    assert book.levels() == {"bids": [(120, 200)], "asks": []}


def test_better_price_first_then_earlier_seq() -> None:
    book = book_with(
        ("s_late_cheap", "bob", SELL, 100, 95),  # seq 0
        ("s_early", "carol", SELL, 100, 97),  # seq 1
        ("s_late", "dave", SELL, 100, 97),  # seq 2
    )
    book.submit(Order("s_cheapest", "bob", SELL, 50, 90, 3))
    fills = book.submit(Order("b1", "alice", BUY, 320, 100, 4))
    assert [(f.sell_order_id, f.quantity_wh) for f in fills] == [
        ("s_cheapest", 50),
        ("s_late_cheap", 100),
        ("s_early", 100),
        ("s_late", 70),
    ]
    assert book.levels()["asks"] == [(97, 30)]


def test_never_trades_beyond_either_limit() -> None:
    book = book_with(("s1", "bob", SELL, 100, 101))
    assert book.submit(Order("b1", "alice", BUY, 100, 100, 5)) == []
    assert book.levels() == {"bids": [(100, 100)], "asks": [(101, 100)]}


def test_self_trade_is_skipped_and_the_own_order_keeps_resting() -> None:
    book = book_with(("own_ask", "alice", SELL, 100, 80), ("other_ask", "bob", SELL, 100, 90))
    fills = book.submit(Order("b1", "alice", BUY, 150, 100, 5))
    assert fills == [Fill("b1", "other_ask", 100, 100)]
    # alice's bid and ask now rest across each other: only other owners can trade with them.
    assert book.levels() == {"bids": [(100, 50)], "asks": [(80, 100)]}
    assert book.submit(Order("b2", "carol", BUY, 100, 85, 6)) == [Fill("b2", "own_ask", 100, 85)]


def test_cancel_returns_the_open_quantity_once() -> None:
    book = book_with(("b1", "alice", BUY, 500, 100))
    book.submit(Order("s1", "bob", SELL, 200, 100, 5))
    assert book.cancel("b1") == 300
    assert book.cancel("b1") == 0
    assert book.cancel("unknown") == 0
    assert book.levels() == {"bids": [], "asks": []}


def test_cancel_in_the_middle_of_a_level_keeps_time_priority() -> None:
    book = book_with(*((f"s{i}", f"u{i}", SELL, 10, 50) for i in range(100)))
    for i in range(1, 99):
        assert book.cancel(f"s{i}") == 10
    fills = book.submit(Order("b", "alice", BUY, 15, 60, 1000))
    assert [(f.sell_order_id, f.quantity_wh) for f in fills] == [("s0", 10), ("s99", 5)]


def test_refuses_duplicates_old_seqs_and_late_orders() -> None:
    book = book_with(("b1", "alice", BUY, 100, 90))
    with pytest.raises(MatchingError):
        book.submit(Order("b1", "alice", BUY, 100, 90, 10))
    with pytest.raises(MatchingError):
        book.submit(Order("b2", "alice", BUY, 100, 90, 0))
    closure = book.close()
    assert closure.expired == [Order("b1", "alice", BUY, 100, 90, 0)] and closure.fills == []
    assert book.closed and len(book) == 0
    with pytest.raises(MatchingError):
        book.submit(Order("b3", "alice", BUY, 100, 90, 20))
    assert book.close().expired == []


def test_close_expires_the_remaining_quantity() -> None:
    book = book_with(("b1", "alice", BUY, 500, 100), ("s1", "bob", SELL, 100, 120))
    book.submit(Order("s2", "carol", SELL, 200, 100, 5))
    closure = book.close()
    assert closure.expired == [Order("b1", "alice", BUY, 300, 100, 0), Order("s1", "bob", SELL, 100, 120, 1)]


def test_snapshot_is_plain_json_and_restores_the_book() -> None:
    book = book_with(("b1", "alice", BUY, 500, 100), ("s1", "alice", SELL, 100, 90))
    book.submit(Order("s2", "bob", SELL, 200, 100, 7))
    state = json.loads(json.dumps(book.snapshot()))
    restored = ContinuousBook.restore(state)
    assert restored.open_orders() == book.open_orders() and restored.last_seq == 7
    with pytest.raises(MatchingError):
        restored.submit(Order("b9", "carol", BUY, 1, 1, 7))  # the seq check survives the restart
    with pytest.raises(MatchingError):
        ContinuousBook.restore({**state, "mechanism": "pay_as_clear"})
    rebuilt = ContinuousBook.from_orders(reversed(book.open_orders()), last_seq=7)
    assert rebuilt.snapshot() == book.snapshot()
    book.close()
    assert ContinuousBook.restore(json.loads(json.dumps(book.snapshot()))).closed


def run_session(ops: list, book: ContinuousBook, model: NaiveContinuousBook | None, start: int = 0) -> list:
    """Apply operations to the book (and the model); return everything observable, for comparison."""
    trace: list = []
    for n, (kind, arg) in enumerate(ops, start=start):
        if kind == "submit":
            owner, side, qty, price = arg
            order = Order(f"o{n}", owner, side, qty, price, n)
            fills = book.submit(order)
            if model is not None:
                assert fills == model.submit(order), "fills differ from the naive price-time model"
            trace.append(fills)
        elif n:
            oid = f"o{arg % n}"  # any earlier id: open, filled, cancelled or never used
            removed = book.cancel(oid)
            if model is not None:
                assert removed == model.cancel(oid)
            trace.append(removed)
        trace.append(book.levels())
    return trace


@settings(max_examples=200, deadline=None)
@given(ops=operations)
def test_matches_exactly_like_the_naive_price_time_model(ops: list) -> None:
    # The model takes, in order, every crossing resting order of another owner sorted by price then
    # seq: agreeing with it fill by fill means no better or earlier order of another owner is skipped.
    book = ContinuousBook()
    model = NaiveContinuousBook()
    run_session(ops, book, model)
    assert book.open_orders() == sorted(model.resting, key=lambda o: o.seq)


@settings(max_examples=200, deadline=None)
@given(ops=operations)
def test_fill_invariants(ops: list) -> None:
    book = ContinuousBook()
    orders: dict[str, Order] = {}
    fills: list[Fill] = []
    cancelled: dict[str, int] = {}
    for n, (kind, arg) in enumerate(ops):
        if kind == "submit":
            owner, side, qty, price = arg
            order = Order(f"o{n}", owner, side, qty, price, n)
            orders[order.id] = order
            fills += book.submit(order)
        elif n:
            oid = f"o{arg % n}"
            cancelled[oid] = cancelled.get(oid, 0) + book.cancel(oid)
    for f in fills:
        buy, sell = orders[f.buy_order_id], orders[f.sell_order_id]
        assert buy.side is BUY and sell.side is SELL
        assert buy.owner != sell.owner
        assert f.quantity_wh > 0
        assert sell.limit_price <= f.price == buy.limit_price
    filled = filled_by_order(fills)
    resting = {o.id: o.quantity_wh for o in book.open_orders()}
    for oid, order in orders.items():
        # conservation: filled + cancelled + still open == original, never more than the order.
        assert filled.get(oid, 0) + cancelled.get(oid, 0) + resting.get(oid, 0) == order.quantity_wh
        if order.side is BUY:
            paid = sum(trade_value(f.quantity_wh, f.price) for f in fills if f.buy_order_id == oid)
            assert paid <= escrow_amount(order.quantity_wh, order.limit_price)


@settings(max_examples=100, deadline=None)
@given(before=operations, after=operations)
def test_snapshot_and_rebuild_behave_identically_afterwards(before: list, after: list) -> None:
    book = ContinuousBook()
    run_session(before, book, None)
    restored = ContinuousBook.restore(json.loads(json.dumps(book.snapshot())))
    rebuilt = ContinuousBook.from_orders(book.open_orders(), last_seq=book.last_seq)
    start = len(before) + 1
    expected = run_session(after, book, None, start)
    assert run_session(after, restored, None, start) == expected
    assert run_session(after, rebuilt, None, start) == expected
