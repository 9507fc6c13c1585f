"""Slot energies from accepted intervals (pure): tiling, splits at boundaries, gaps, holes, statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from ess_collector.aggregation import Interval, Sample, compute_slot
from ess_collector.config import CollectorConfig
from ess_collector.models import SlotStatus

CFG = CollectorConfig(slot_minutes=15, poll_interval_s=5, max_gap_s=60)
S = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)
E = S + timedelta(minutes=15)


def at(seconds: float) -> datetime:
    return S + timedelta(seconds=seconds)


def chain(times: list[float], per_second: int = 2) -> tuple[list[Interval], list[Sample]]:
    """Accepted readings at ``times`` (seconds from S), each counting per_second Wh of PV per second."""
    intervals, samples = [], []
    for a, b in pairwise(times):
        d = int((b - a) * per_second)
        intervals.append(Interval(at(a), at(b), (d, d, 0, 0, 0, 0)))
    for t in times:
        samples.append(Sample(at(t), "ok", (7200, 7200, 0, 0), 500))
    return intervals, samples


def test_polls_on_the_boundaries_tile_the_slot_exactly() -> None:
    iv, sm = chain([i * 5 for i in range(0, 181)])  # 0 .. 900 s
    r = compute_slot(S, CFG, iv, sm)
    assert r.status == SlotStatus.complete and r.good_polls == 180 and r.expected_polls == 180
    assert r.energies == (1800, 1800, 0, 0, 0, 0)
    assert r.power_stats["pv_w_avg"] == 7200 and r.soc_start_tenths == 500


def test_a_short_interval_across_the_boundary_is_split_by_time_without_losing_a_wh() -> None:
    times = [-3.0, *[2.0 + 5 * i for i in range(180)], 902.0]  # polls 2 s after each 5 s mark
    iv, sm = chain(times, per_second=3)
    this = compute_slot(S, CFG, iv, sm)
    before = compute_slot(S - CFG.slot, CFG, iv, sm)
    after = compute_slot(E, CFG, iv, sm)
    assert this.status == SlotStatus.complete and this.energies is not None
    assert this.energies[0] == 900 * 3  # 3 s of the first interval and 2 s of the last are ours
    total = sum(sum(r.energies[:1]) for r in (before, this, after) if r.energies)
    assert total == sum(i.deltas[0] for i in iv)  # the split conserves every Wh


def test_missing_polls_inside_the_slot_give_recovered_with_exact_energy() -> None:
    times = [0.0, *[5.0 * i for i in range(1, 100)], 700.0, *[5.0 * i for i in range(141, 181)]]
    iv, sm = chain(times)
    r = compute_slot(S, CFG, iv, sm)
    assert r.status == SlotStatus.recovered and r.energies == (1800, 1800, 0, 0, 0, 0)
    assert r.good_polls < 0.9 * r.expected_polls


def test_a_long_gap_across_the_boundary_makes_both_slots_incomplete() -> None:
    times = [*[5.0 * i for i in range(0, 175)], 1000.0, 1005.0]  # offline from 870 s to 1000 s
    iv, sm = chain(times)
    this, after = compute_slot(S, CFG, iv, sm), compute_slot(E, CFG, iv, sm)
    assert this.status == SlotStatus.incomplete and this.energies == (
        1740,
        1740,
        0,
        0,
        0,
        0,
    )  # only what was measured
    assert after.status == SlotStatus.incomplete


def test_a_rebaseline_hole_makes_the_slot_incomplete() -> None:
    iv, sm = chain([5.0 * i for i in range(0, 181)])
    holed = [*iv[:50], Interval(at(255), at(260), (10, 10, 0, 0, 0, 0)), *iv[52:]]  # 250..255 unknown
    assert compute_slot(S, CFG, holed, sm).status == SlotStatus.incomplete


def test_no_readings_at_all_is_incomplete_with_null_energies() -> None:
    r = compute_slot(S, CFG, [], [])
    assert r.status == SlotStatus.incomplete and r.energies is None and r.good_polls == 0
    assert r.soc_start_tenths is None and r.power_stats["pv_w_max"] is None


def test_a_slot_not_yet_closed_by_a_later_reading_is_incomplete() -> None:
    iv, sm = chain([5.0 * i for i in range(0, 170)])
    assert compute_slot(S, CFG, iv, sm).status == SlotStatus.incomplete
