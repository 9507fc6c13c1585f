"""ABI words by hand, for the hot paths whose arguments are all static types (a relay batch's call data,
an escrow nonce): such an encoding is the arguments' 32-byte words side by side, and eth_abi's general
encoder cost several times the CPU. Each refuses what its type cannot hold, as eth_abi does (ValueError)."""

from __future__ import annotations


def uint_word(value: int, bits: int = 256) -> bytes:
    """A uint<bits> as its 32-byte word."""
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{value} does not fit a uint{bits}")
    return value.to_bytes(32, "big")


def address_word(address: str) -> bytes:
    """A 0x-prefixed 20-byte address as its 32-byte word."""
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{address} is not an address")
    return raw.rjust(32, b"\0")


def bytes32_word(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError("a bytes32 field needs exactly 32 bytes")
    return bytes(value)
