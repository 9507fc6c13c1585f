"""Choosing a mechanism by name and bringing it back after a restart, through the one interface."""

from __future__ import annotations

import json

import pytest

from app.market import (
    MECHANISMS,
    MatchingError,
    Mechanism,
    Order,
    Side,
    create_mechanism,
    rebuild_mechanism,
    restore_mechanism,
)


def session(mechanism: Mechanism) -> None:
    mechanism.submit(Order("b1", "alice", Side.BUY, 500, 120, 1))
    mechanism.submit(Order("s1", "bob", Side.SELL, 200, 100, 2))
    mechanism.submit(Order("s2", "carol", Side.SELL, 200, 130, 3))


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_snapshot_restore_and_rebuild_give_the_same_gate_closure(name: str) -> None:
    mechanism = create_mechanism(name)
    assert mechanism.name == name and not mechanism.closed
    session(mechanism)
    restored = restore_mechanism(json.loads(json.dumps(mechanism.snapshot())))
    rebuilt = rebuild_mechanism(name, mechanism.open_orders(), last_seq=3)
    expected = mechanism.close()
    assert restored.close() == expected
    assert rebuilt.close() == expected
    assert mechanism.closed


def test_both_mechanisms_expire_what_they_did_not_match() -> None:
    continuous = create_mechanism("pay_as_bid")
    session(continuous)
    closure = continuous.close()
    assert closure.price is None  # its fills happened on submit, each at the bid
    assert {o.id: o.quantity_wh for o in closure.expired} == {"b1": 300, "s2": 200}
    auction = create_mechanism("pay_as_clear")
    session(auction)
    closure = auction.close()
    assert closure.price == 110 and [f.quantity_wh for f in closure.fills] == [200]
    assert {o.id: o.quantity_wh for o in closure.expired} == {"b1": 300, "s2": 200}


def test_unknown_mechanism_is_refused() -> None:
    with pytest.raises(MatchingError):
        create_mechanism("pay_as_you_like")
    with pytest.raises(MatchingError):
        restore_mechanism({"mechanism": "pay_as_you_like"})
