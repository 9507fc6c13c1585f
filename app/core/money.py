"""Coin amounts and addresses as they enter the API: one grammar each, one parser each.

Amounts are int base units inside and decimal strings at the API, never floats. Every route that takes
an amount or an address calls `parse_amount` or `parse_address` (and `parse_account_ref` for a `to`
that may name a user); the schemas only document the grammar, so a bad value always gets the same
error (`InvalidAmount`, `InvalidAddress`, 422) wherever it is sent.
"""

from __future__ import annotations

import re
from typing import Annotated

from eth_utils import is_checksum_address, to_checksum_address
from pydantic import Field, StrictInt, StrictStr

from app.core.errors import InvalidAddress, InvalidAmount
from app.core.sql import MAX_INT_ID

DECIMALS = 18
MAX_UINT256 = 2**256 - 1
# ASCII digits only: `\d` would also match Arabic-Indic, full-width and other Unicode digits.
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]{1,18})?$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
MAX_AMOUNT_CHARS = 100  # a uint256 has 78 digits; longer text is refused before it is converted

_AMOUNT = re.compile(AMOUNT_PATTERN)
_ADDRESS = re.compile(ADDRESS_PATTERN)
_DIGITS = re.compile(r"^[0-9]{1,20}$")

AMOUNT_HELP = 'decimal string in coins: ASCII digits, optionally "." and 1 to 18 decimals, e.g. "12.5"'
AmountText = Annotated[
    str, Field(description=AMOUNT_HELP, examples=["12.5"], json_schema_extra={"pattern": AMOUNT_PATTERN})
]
AddressText = Annotated[
    str,
    Field(
        description="0x and 40 hex digits; mixed case must be a valid EIP-55 checksum",
        json_schema_extra={"pattern": ADDRESS_PATTERN},
    ),
]
# Strict: JSON true, 1.0 or 2e3 are not user ids.
AccountRef = Annotated[
    StrictStr | StrictInt,
    Field(description="a 0x address, or a user id (a JSON integer or a string of digits)"),
]


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_amount(text: object, *, allow_zero: bool = False) -> int:
    """'1.5' -> 1500000000000000000. Only AMOUNT_PATTERN is accepted (no sign, blanks, exponent, '_',
    '.5' or '1.', no non-ASCII digits); zero only with `allow_zero`; at most a uint256."""
    if not isinstance(text, str):
        raise InvalidAmount('amount must be a decimal string, e.g. "12.5"')
    if len(text) > MAX_AMOUNT_CHARS:
        raise InvalidAmount("amount is too large")
    if not _AMOUNT.fullmatch(text):
        if re.fullmatch(r"[0-9]+\.[0-9]{19,}", text):
            raise InvalidAmount(f"amount {_shown(text)} has more than {DECIMALS} decimal places")
        raise InvalidAmount(
            f"amount {_shown(text)} is not a plain decimal: write ASCII digits, optionally a point and 1 to "
            f'{DECIMALS} decimals, e.g. "12.5" (no sign, blanks, exponent or separators)'
        )
    whole, _, frac = text.partition(".")
    units = int(whole) * 10**DECIMALS + int(frac.ljust(DECIMALS, "0"))
    if units == 0 and not allow_zero:
        raise InvalidAmount(f"amount must be greater than zero, got {_shown(text)}")
    if units > MAX_UINT256:
        raise InvalidAmount("amount is too large")
    return units


def format_amount(units: int, decimals: int = DECIMALS) -> str:
    """1500000000000000000 -> '1.5'; exact, no trailing zeros."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(frac).rjust(decimals, '0').rstrip('0')}"


def parse_address(text: object) -> str:
    """A 0x-address (ADDRESS_PATTERN); mixed case must carry a valid EIP-55 checksum. Returns the
    checksum form."""
    if not isinstance(text, str) or not _ADDRESS.fullmatch(text):
        shown = _shown(text) if isinstance(text, str) else type(text).__name__
        raise InvalidAddress(f"{shown} is not an address: write 0x and 40 hex digits")
    body = text[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(text):
        raise InvalidAddress(
            f"{text!r} has a wrong EIP-55 checksum (check for a typo, or send it in lower case)"
        )
    return str(to_checksum_address(text))


def parse_account_ref(ref: object) -> str | int:
    """What a `to` names: a checksummed address (str) or a user id (int). A user id is a JSON integer or
    a string of ASCII digits (str.isdigit() would also pass '²', which int() refuses), within the range
    of the users.id column."""
    if isinstance(ref, bool):
        raise InvalidAddress("to must be a 0x address or a user id")
    if isinstance(ref, str) and not ref.startswith("0x"):
        if not _DIGITS.fullmatch(ref):
            raise InvalidAddress(f"to {_shown(ref)} is neither a 0x address nor a user id (ASCII digits)")
        ref = int(ref)
    if isinstance(ref, int):
        if not 1 <= ref <= MAX_INT_ID:
            raise InvalidAddress(f"to: a user id is between 1 and {MAX_INT_ID}")
        return ref
    return parse_address(ref)
