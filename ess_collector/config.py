"""The collector's knobs in one plain object, so the library never reads the service's settings itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from common import clock

from .netpolicy import DEFAULT_SITE_NETWORKS, IPNetwork


@dataclass(frozen=True)
class CollectorConfig:
    slot_minutes: int = 15
    poll_interval_s: float = 5.0
    timeout_s: float = 1.5  # per device and try; one retry follows
    max_backoff_s: float = 60.0
    comm_lost_polls: int = 3  # failed polls in a row before a comm_lost fault opens
    stale_polls: int = 3  # stale readings in a row before a stale fault opens
    imbalance_polls: int = 3  # unbalanced readings in a row before an imbalance fault opens
    # The longest interval between accepted readings whose energy may be split across a slot boundary
    # by time; a longer one leaves both slots incomplete instead of guessing where the energy belongs.
    max_gap_s: float = 60.0
    complete_ratio: float = 0.9  # good polls / expected polls for "complete"
    anchor_grace_s: float = 60.0
    site_max_grid_w: int = 25_000  # connection limit for import/export checks
    battery_max_c_rate: float = 1.0  # battery power limit = capacity x this per hour
    range_margin: float = 1.2  # powers and energies may exceed their nominal limit by 20 %
    counter_slack_wh: int = 2  # two Wh-floored counter readings differ by up to 1 Wh each
    balance_tolerance_wh: int = 10
    balance_tolerance_pct: float = 3.0  # of the interval's energy throughput
    catchup_days: int = 7  # aggregation never reaches further back than this after a long stop
    clock_speed: float = 1.0  # energy seconds per wall second (common/clock.py); above 1 only in demos
    # Where sites may be: every address a site's host resolves to must be inside (checked at each connect)
    site_networks: tuple[IPNetwork, ...] = DEFAULT_SITE_NETWORKS

    @property
    def slot(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes)

    @property
    def poll_step_s(self) -> float:
        """Energy time between two polls (the poll interval is wall time)."""
        return self.poll_interval_s * self.clock_speed

    @property
    def expected_polls(self) -> int:
        return max(1, round(self.slot_minutes * 60 / self.poll_step_s))

    @property
    def settle(self) -> timedelta:
        """A slot is aggregated this long after its end: the reading that closes it has arrived."""
        return timedelta(seconds=self.max_gap_s + self.poll_step_s)

    @property
    def anchor_delay(self) -> timedelta:
        """Anchoring waits for the grace delay, and never less than aggregation needs."""
        return max(timedelta(seconds=self.anchor_grace_s), self.settle)

    def slot_start(self, t: datetime) -> datetime:
        """The start of the UTC-aligned slot holding ``t``."""
        return clock.slot_start(t, self.slot_minutes)

    def is_slot_start(self, t: datetime) -> bool:
        return (
            t.tzinfo is not None and t.microsecond == 0 and int(t.timestamp()) % (self.slot_minutes * 60) == 0
        )
