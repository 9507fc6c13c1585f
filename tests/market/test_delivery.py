from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.settlement.delivery import TradeTerms, delivered_wh, settlement_amounts


def test_pro_rata_over_a_sellers_trades() -> None:
    trades = [TradeTerms("a", 600, 1, None), TradeTerms("b", 400, 1, 7)]
    # the seller exported only half; buyer 7 imported plenty; the consumer counts as having imported
    assert delivered_wh(trades, {1: 500}, {7: 10_000}) == {"a": 300, "b": 200}
    # the buyer's site imported less than bought: the buyer side limits
    assert delivered_wh(trades, {1: 5_000}, {7: 100}) == {"a": 600, "b": 100}
    # nothing measured for the seller: nothing delivered
    assert delivered_wh(trades, {}, {7: 100}) == {"a": 0, "b": 0}


@given(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=8),
    st.integers(0, 100_000),
    st.integers(0, 100_000),
)
def test_never_more_than_contracted_or_measured(qs: list[int], exported: int, imported: int) -> None:
    trades = [TradeTerms(str(i), q, 1, 2) for i, q in enumerate(qs)]
    got = delivered_wh(trades, {1: exported}, {2: imported})
    assert all(0 <= got[t.trade_id] <= t.quantity_wh for t in trades)
    assert sum(got.values()) <= min(exported, imported, sum(qs))


@given(st.integers(1, 2**32 - 1), st.integers(1, 10**21), st.integers(0, 10_000))
def test_settlement_conserves_the_trade_value(q: int, price: int, bps: int) -> None:
    for delivered in (0, q // 2, q):
        seller, buyer, penalty = settlement_amounts(q, price, delivered, bps)
        assert seller + buyer == q * price // 1000 and 0 <= penalty <= delivered * price // 1000
