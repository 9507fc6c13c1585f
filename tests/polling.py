"""Waiting for background work (relayer, market loop, a restarted process) without fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T], until: Callable[[T], object] = bool, timeout: float = 30, every: float = 0.1
) -> T:
    """Calls `probe` until `until(value)` holds (by default: the value is truthy) or `timeout` seconds have
    passed; returns the last value, so the caller's assert shows what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


FINAL_TRANSFER = ("confirmed", "failed")


def transfer_is_final(body: dict) -> bool:
    return body["status"] in FINAL_TRANSFER


# The steps of a transfer that ends well, in order, as GET /transfers/{id} lists them.
TRANSFER_STEPS = ["requested", "challenge_issued", "authorized", "signed", "submitted", "mined", "confirmed"]
