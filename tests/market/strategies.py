"""Hypothesis strategies for small, collision-rich books: few owners, few prices, small quantities."""

from __future__ import annotations

from hypothesis import strategies as st

from app.market.matching.types import Order, Side

OWNERS = ("alice", "bob", "carol", "dave")
MANY_OWNERS = tuple(f"user{i}" for i in range(40))


@st.composite
def order_fields(
    draw: st.DrawFn, max_price: int = 12, owners: tuple[str, ...] = OWNERS
) -> tuple[str, Side, int, int]:
    return (
        draw(st.sampled_from(owners)),
        draw(st.sampled_from([Side.BUY, Side.SELL])),
        draw(st.integers(1, 40)),
        draw(st.integers(1, max_price)),
    )


@st.composite
def order_lists(draw: st.DrawFn, max_size: int = 30) -> list[Order]:
    """Orders with unique ids and seqs, in seq order; owners either few (self-trade conflicts
    everywhere) or many (the fast paths where no owner can bind)."""
    owners = draw(st.sampled_from([OWNERS, MANY_OWNERS]))
    fields = draw(st.lists(order_fields(owners=owners), max_size=max_size))
    return [Order(f"o{i}", owner, side, qty, price, i) for i, (owner, side, qty, price) in enumerate(fields)]


# A continuous-book session: ("submit", fields) or ("cancel", k) cancelling the k-th submitted order.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), order_fields()),
        st.tuples(st.just("cancel"), st.integers(0, 60)),
    ),
    max_size=60,
)
