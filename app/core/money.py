"""Coin amounts: int base units inside, decimal strings at the API, never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from app.core.errors import InvalidAddress, InvalidAmount

DECIMALS = 18
MAX_UINT256 = 2**256 - 1


def parse_amount(text: object, decimals: int = DECIMALS, *, allow_zero: bool = False) -> int:
    """'1.5' -> 1500000000000000000. Rejects non-strings, zero, negatives and over-precise values."""
    if not isinstance(text, str):
        raise InvalidAmount('amount must be a decimal string, e.g. "12.5"')
    s = text.strip()
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise InvalidAmount(f"amount {text!r} is not a decimal number") from None
    if not value.is_finite() or "e" in s.lower():
        raise InvalidAmount(f"amount {text!r} must be written as plain digits")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidAmount(f"amount must be greater than zero, got {text!r}")
    with localcontext() as exact:
        exact.prec = 200  # scaleb rounds to the context's precision (28 digits by default)
        units = value.scaleb(decimals)
    if units != units.to_integral_value():
        raise InvalidAmount(f"amount {text!r} has more than {decimals} decimal places")
    result = int(units)
    if result > MAX_UINT256:
        raise InvalidAmount("amount is too large")
    return result


def format_amount(units: int, decimals: int = DECIMALS) -> str:
    """1500000000000000000 -> '1.5'; exact, no trailing zeros."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(frac).rjust(decimals, '0').rstrip('0')}"


def parse_address(text: object) -> str:
    """A 0x-address; mixed case must carry a valid EIP-55 checksum. Returns the checksum form."""
    if not isinstance(text, str) or not is_hex_address(text):
        raise InvalidAddress(f"{text!r} is not a 20-byte hex address")
    body = text[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(text):
        raise InvalidAddress(f"{text!r} has a wrong EIP-55 checksum")
    return str(to_checksum_address(text))
