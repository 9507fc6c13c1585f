"""The platform's copies of the EnergyMarket contract's formulas against the contract's own view functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.context import Context
from app.market.onchain import escrow_nonce, id32, unix


def test_the_escrow_nonce_is_the_contracts_and_refuses_what_its_types_cannot_hold(ctx: Context) -> None:
    market = ctx.contracts["EnergyMarket"]
    order_id, slot = "0123456789abcdef" * 2, datetime(2030, 1, 1, 10, 15, tzinfo=UTC)
    for quantity, price in ((1, 1), (500, 200 * 10**18), (2**32 - 1, 2**128 - 1)):
        on_chain = market.functions.escrowNonce(id32(order_id), unix(slot), quantity, price).call()
        assert escrow_nonce(order_id, slot, quantity, price) == bytes(on_chain)
    with pytest.raises(ValueError):
        escrow_nonce(order_id, slot, 2**32, 1)  # a uint32 quantity
    with pytest.raises(ValueError):
        escrow_nonce(order_id, slot, 1, 2**128)  # a uint128 price
