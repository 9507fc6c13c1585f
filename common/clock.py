"""Energy time: what the market, settlement and the collector call "now".

In production it is the wall clock. For a demo (`essx demo`) the energy side of the service can run
faster than real time: simulated time = ``start + speed x (wall time - anchor)``. Every process of one
installation (API, collector, simulators) is given the same three settings and so agrees on the time
without talking to the others.

Only energy time is simulated: slots, gate closure, readings, aggregation, anchoring and settlement.
Security keeps the wall clock (tokens, one-time codes, lock-outs, signature validity windows, the
relayer's time-outs), and so does the chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class EnergyClock:
    speed: float = 1.0
    start: datetime | None = None  # simulated time at ``anchor``; None: the wall clock
    anchor: float = 0.0  # Unix wall time at which simulated time was ``start``

    def now(self) -> datetime:
        if self.start is None:
            return datetime.now(UTC)
        return self.start + timedelta(seconds=self.speed * (time.time() - self.anchor))

    @property
    def simulated(self) -> bool:
        return self.start is not None


_clock = EnergyClock()


def configure(speed: float = 1.0, start: datetime | None = None, anchor: float | None = None) -> EnergyClock:
    """Sets this process's energy clock; with no ``start`` it is the wall clock again."""
    global _clock
    if speed <= 0:
        raise ValueError("the clock speed must be positive")
    if start is not None and start.tzinfo is None:
        raise ValueError("the clock start needs a time zone")
    if start is None and speed != 1.0:
        start = datetime.now(UTC)
    _clock = EnergyClock(
        speed=speed,
        start=start.astimezone(UTC) if start is not None else None,
        anchor=time.time() if anchor is None else anchor,
    )
    return _clock


def configure_from(settings: object) -> EnergyClock:
    """From the service settings (``clock_speed``, ``clock_start``, ``clock_anchor``)."""
    return configure(
        getattr(settings, "clock_speed", 1.0),
        getattr(settings, "clock_start", None),
        getattr(settings, "clock_anchor", None),
    )


def current() -> EnergyClock:
    return _clock


def now() -> datetime:
    """Energy time now (timezone-aware UTC)."""
    return _clock.now()


def speed() -> float:
    return _clock.speed


# Times the service takes from outside lie in [EARLIEST, LATEST): a slot on, a day back or local time
# never leaves the calendar (datetime overflows before year 1 and after 9999).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def in_range(t: datetime) -> bool:
    """``t`` (timezone-aware) lies in [EARLIEST, LATEST); aware times compare without overflowing."""
    return EARLIEST <= t < LATEST


def slot_start(t: datetime, slot_minutes: int) -> datetime:
    """The start of the UTC-aligned slot holding ``t`` (slot lengths divide a day, so slots start at
    UTC midnight too); the one rule the market, the collector and the demo share."""
    step = slot_minutes * 60
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, UTC)
