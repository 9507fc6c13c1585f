from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.errors import InvalidAddress, InvalidAmount
from app.core.money import format_amount, parse_address, parse_amount


@given(st.integers(min_value=1, max_value=2**200))
def test_format_then_parse_is_exact(units: int) -> None:
    assert parse_amount(format_amount(units)) == units


@pytest.mark.parametrize(
    "text", ["0", "-1", "0.0000000000000000001", "abc", "1e18", "NaN", "Infinity", "", " "]
)
def test_bad_amounts(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text)


def test_amount_examples() -> None:
    assert parse_amount("1.5") == 1_500_000_000_000_000_000
    assert format_amount(1_500_000_000_000_000_000) == "1.5"
    assert format_amount(1) == "0.000000000000000001"


def test_addresses() -> None:
    good = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert parse_address(good.lower()) == good
    with pytest.raises(InvalidAddress, match="checksum"):
        parse_address("0x70997970c51812dc3A010C7d01b50e0d17dc79C8")
    with pytest.raises(InvalidAddress):
        parse_address("0x1234")
