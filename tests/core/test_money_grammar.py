"""One grammar for amounts, addresses and `to`: the parsers accept exactly what the documented patterns say."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.core.errors import InvalidAddress, InvalidAmount
from app.core.money import (
    ADDRESS_PATTERN,
    AMOUNT_PATTERN,
    MAX_INT_ID,
    MAX_UINT256,
    format_amount,
    parse_account_ref,
    parse_address,
    parse_amount,
)

# Text made mostly of what amounts are made of, plus what attackers and typos add.
AMOUNT_CHARS = "0123456789" * 3 + ".." + "+-_ eE,x\n" + "\u0665\uff15\u00b2\u0967"


def _accepts(text: str) -> bool:
    try:
        parse_amount(text, allow_zero=True)
    except InvalidAmount:
        return False
    return True


@given(st.integers(min_value=0, max_value=MAX_UINT256))
@example(0)
@example(1)
@example(MAX_UINT256)
def test_format_then_parse_round_trips_and_stays_in_the_grammar(units: int) -> None:
    text = format_amount(units)
    assert re.fullmatch(AMOUNT_PATTERN, text)
    assert parse_amount(text, allow_zero=True) == units


@given(st.text(alphabet=AMOUNT_CHARS, max_size=30))
@example("+1")
@example(" 1 ")
@example(".5")
@example("1.")
@example("1_000")
@example("1e3")
@example("1\n")
def test_the_parser_accepts_exactly_the_grammar(text: str) -> None:
    assert _accepts(text) == bool(re.fullmatch(AMOUNT_PATTERN, text))


@given(st.from_regex(r"\A[0-9]{1,40}(\.[0-9]{1,18})?\Z"))
def test_every_grammatical_amount_means_its_decimal_value(text: str) -> None:
    assert parse_amount(text, allow_zero=True) == Fraction(text) * 10**18  # exact, unlike Decimal's 28 digits
    assert parse_amount(format_amount(parse_amount(text, allow_zero=True)), allow_zero=True) == parse_amount(
        text, allow_zero=True
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0", "greater than zero"),
        ("0.000", "greater than zero"),
        ("1.0000000000000000001", "more than 18 decimal places"),
        ("+1", "not a plain decimal"),
        ("\u0661", "not a plain decimal"),  # ARABIC-INDIC DIGIT ONE
        ("\uff11", "not a plain decimal"),  # FULLWIDTH DIGIT ONE
        ("1" * 79, "too large"),
        ("9" * 5000, "too large"),  # refused before any conversion (int() limits 4300 digits)
    ],
)
def test_refusals_say_why(text: str, why: str) -> None:
    with pytest.raises(InvalidAmount, match=why):
        parse_amount(text)


def test_only_a_string_is_an_amount() -> None:
    for value in (1, 1.5, None, b"1", ["1"]):
        with pytest.raises(InvalidAmount):
            parse_amount(value)


@given(st.binary(min_size=20, max_size=20))
def test_every_spelling_of_an_address_maps_to_its_checksum_form(raw: bytes) -> None:
    lower = "0x" + raw.hex()
    good = parse_address(lower)
    assert re.fullmatch(ADDRESS_PATTERN, good) and good.lower() == lower
    assert parse_address(good) == good == parse_address("0x" + raw.hex().upper())
    letters = [i for i, c in enumerate(good) if i >= 2 and c.isalpha()]
    if letters:
        i = letters[0]
        flipped = good[:i] + good[i].swapcase() + good[i + 1 :]
        body = flipped[2:]
        if body != body.lower() and body != body.upper():  # mixed case, and not the checksum form
            with pytest.raises(InvalidAddress, match="checksum"):
                parse_address(flipped)


@pytest.mark.parametrize(
    "text",
    [
        "70997970c51812dc3a010c7d01b50e0d17dc79c8",
        "0X70997970c51812dc3a010c7d01b50e0d17dc79c8",
        " 0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
        "0x70997970c51812dc3a010c7d01b50e0d17dc79c8\n",
        "0x70997970c51812dc3a010c7d01b50e0d17dc79c",
        "0x70997970c51812dc3a010c7d01b50e0d17dc79c8a",
        "0x\uff170997970c51812dc3a010c7d01b50e0d17dc79c",
    ],
)
def test_addresses_outside_the_grammar(text: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_address(text)


def test_account_refs() -> None:
    good = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert parse_account_ref(good.lower()) == good
    assert parse_account_ref(7) == 7 and parse_account_ref("7") == 7 and parse_account_ref("007") == 7
    assert parse_account_ref(MAX_INT_ID) == MAX_INT_ID
    for bad in (
        "\u00b2",
        "\u0667",
        "+7",
        " 7",
        "7 ",
        "",
        "0",
        0,
        -7,
        MAX_INT_ID + 1,
        2**64,
        "9" * 30,
        True,
        None,
    ):
        with pytest.raises(InvalidAddress):
            parse_account_ref(bad)
