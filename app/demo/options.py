"""What `essx demo` is asked to do (kept apart from the run, so the CLI reads it without importing the run)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path


class Traders(StrEnum):
    """Who places the households' orders (`--traders`)."""

    automatic = "automatic"  # each household's trading profile (app/trading)
    manual = "manual"  # the demo, order by order


@dataclass(frozen=True)
class DemoOptions:
    households: int = 20
    hours: int = 24
    speed: float = 720.0
    slot_minutes: int = 60
    seed: int = 0
    consumer_share: float = 0.25
    funding: str = "20000"  # coins minted to every household before trading
    poll_interval_s: float = 0.5  # wall seconds between polls of every site
    data_dir: Path = Path("data/demo")
    out_dir: Path | None = None  # default: <data_dir>/report
    keep_running: bool = False
    workers: int = 8  # households acting at the same time
    start: datetime | None = None  # first traded slot (energy time, in the past); default: end about now
    traders: Traders = Traders.automatic

    @property
    def gate_minutes(self) -> int:
        """Gate closure before each slot: the market's default, shorter for short slots."""
        return 5 if self.slot_minutes >= 15 else 1

    def check(self) -> None:
        if not 1 <= self.households <= 200:
            raise ValueError("--households must be between 1 and 200")
        if not 1 <= self.hours <= 24 * 7:
            raise ValueError("--hours must be between 1 and 168")
        if not 1 <= self.speed <= 3600:
            raise ValueError("--speed must be between 1 and 3600")
        if self.slot_minutes not in (5, 10, 15, 20, 30, 60):
            raise ValueError("--slot-minutes must be one of 5, 10, 15, 20, 30, 60")
        if self.start is not None:
            if self.start.tzinfo is None:
                raise ValueError("--start needs a time zone, e.g. 2026-11-21T01:00:00Z")
            if self.start + timedelta(hours=self.hours) > datetime.now(UTC):
                raise ValueError(
                    "--start plus --hours must lie in the past (the chain's clock is the wall clock)"
                )
        if self.slot_minutes * 60 / self.speed < 1.0:
            raise ValueError(
                f"a {self.slot_minutes}-minute slot would last under a wall second at speed {self.speed:g}: "
                "lower --speed or raise --slot-minutes"
            )
