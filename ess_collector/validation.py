"""Judging one decoded reading against the site's limits and the last accepted counters.

Pure functions over a small per-site state, so every rule is testable without a device or a database.
The rules (docs/collector.md, "Quality flags"):

- a read that failed, or a reading without all six energy counters, is ``missing``;
- a heartbeat that did not advance (or, without a heartbeat, a device clock that did not) is ``stale``;
- a counter below the accepted one (not a 32-bit wrap) is ``reset``: nothing is subtracted, the reading
  becomes a *candidate* baseline. The next reading decides: back above the old baseline means it was a
  glitch (the old baseline stays, its energy is counted once); above the candidate means a real reset
  (re-baseline at the candidate; the energy between the two is unknown, never guessed);
- a power outside its limit, SoC outside 0-100, an energy delta above limit x elapsed time, or counters
  that break load = pv + import - export + discharge - charge are ``out_of_range``;
- only ``ok`` readings are accepted: their counter deltas since the previous accepted reading are the
  energy the collector counts, so a rejected reading never costs energy (the next accepted one bridges it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from .config import CollectorConfig
from .sunspec import Reading

ENERGY = ("pv_wh", "load_wh", "import_wh", "export_wh", "battery_charge_wh", "battery_discharge_wh")
WRAP = 1 << 32  # acc32 counters wrap like the registers do

OK, MISSING, STALE, OUT_OF_RANGE, RESET = "ok", "missing", "stale", "out_of_range", "reset"


@dataclass(frozen=True)
class Limits:
    """Nominal maxima of one site, in W, already including the range margin."""

    pv_w: int
    grid_w: int
    battery_w: int
    load_w: int
    pv_min_w: int  # an inverter draws a little at night

    @classmethod
    def for_site(cls, pv_nameplate_w: int, battery_capacity_wh: int, cfg: CollectorConfig) -> Limits:
        m = cfg.range_margin
        pv = int(pv_nameplate_w * m)
        grid = int(cfg.site_max_grid_w * m)
        battery = int(battery_capacity_wh * cfg.battery_max_c_rate * m)
        return cls(pv_w=pv, grid_w=grid, battery_w=battery, load_w=pv + grid + battery, pv_min_w=-50)

    def counter_w(self) -> tuple[int, ...]:
        """Power limit of each energy counter, in ENERGY order."""
        return (self.pv_w, self.load_w, self.grid_w, self.grid_w, self.battery_w, self.battery_w)


@dataclass(frozen=True)
class Baseline:
    ts: datetime
    counters: tuple[int, ...]
    read_wall_s: float = 0.0  # how long the reads of the poll it came from took (0 after a restart)


# A device that updated between the model reads of one poll serves counters that far apart. The allowance
# covers at most this much wall time of reads: a slower poll is the device's problem, not extra tolerance.
MAX_READ_SKEW_WALL_S = 1.0


@dataclass
class SiteState:
    """What the collector remembers about a site between polls (rebuilt from the database on start)."""

    site_id: int
    limits: Limits
    baseline: Baseline | None = None
    candidate: Baseline | None = None  # counters that went backwards, waiting for the next reading
    last_heartbeat: int | None = None
    last_device_time: datetime | None = None
    last_values: tuple[Any, ...] | None = None
    failures: int = 0
    backoff_until: datetime | None = None
    stale_run: int = 0
    imbalance_run: int = 0
    open_faults: set[str] = field(default_factory=set)
    answered: bool = False


@dataclass(frozen=True)
class Verdict:
    quality: str
    detail: str | None = None
    accepted: bool = False
    interval_start: datetime | None = None
    deltas: tuple[int, ...] | None = None
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    stale: bool = False
    imbalance: bool = False
    baseline: Baseline | None = None  # the state's baseline and candidate after this reading
    candidate: Baseline | None = None


def counters_of(r: Reading) -> tuple[int, ...] | None:
    values = tuple(getattr(r, f) for f in ENERGY)
    return None if any(v is None for v in values) else values  # type: ignore[return-value]


def values_of(r: Reading) -> tuple[Any, ...]:
    return (r.pv_w, r.load_w, r.grid_w, r.battery_w, r.soc_pct, *(getattr(r, f) for f in ENERGY))


def range_problems(r: Reading, limits: Limits) -> list[str]:
    problems = []
    checks = (
        ("pv_w", r.pv_w, limits.pv_min_w, limits.pv_w),
        ("load_w", r.load_w, 0, limits.load_w),
        ("grid_w", r.grid_w, -limits.grid_w, limits.grid_w),
        ("battery_w", r.battery_w, -limits.battery_w, limits.battery_w),
    )
    for name, value, lo, hi in checks:
        if value is not None and not lo <= value <= hi:
            problems.append(f"{name}={value} outside {lo}..{hi}")
    if r.soc_pct is not None and not Decimal(0) <= r.soc_pct <= Decimal(100):
        problems.append(f"soc_pct={r.soc_pct} outside 0..100")
    return problems


def _forward_deltas(old: tuple[int, ...], new: tuple[int, ...], limit_wh: list[int]) -> list[int] | None:
    """Per-counter deltas, allowing a 32-bit wrap; None if any counter went backwards."""
    deltas = []
    for o, n, cap in zip(old, new, limit_wh, strict=True):
        if n >= o:
            deltas.append(n - o)
        elif n + WRAP - o <= cap:  # the register wrapped, by no more than the site could produce
            deltas.append(n + WRAP - o)
        else:
            return None
    return deltas


def _limits_wh(limits: Limits, seconds: float, cfg: CollectorConfig) -> list[int]:
    return [int(w * max(seconds, 0) / 3600) + cfg.counter_slack_wh for w in limits.counter_w()]


def _delta_problems(deltas: list[int], limit_wh: list[int]) -> list[str]:
    return [
        f"{name} +{d} Wh above {cap} Wh"
        for name, d, cap in zip(ENERGY, deltas, limit_wh, strict=True)
        if d > cap
    ]


def _read_skew_wh(r: Reading, base: Baseline, cfg: CollectorConfig) -> float:
    """How far the counters of an interval may disagree because the device updated while a poll read its
    models, at the interval's start (the baseline's poll) and at its end: every flow at the power the device
    reports, for as long as the reads lasted (capped)."""
    wall_s = min(r.read_wall_s, MAX_READ_SKEW_WALL_S) + min(base.read_wall_s, MAX_READ_SKEW_WALL_S)
    power_w = sum(abs(w) for w in (r.pv_w, r.load_w, r.grid_w, r.battery_w) if w is not None)
    return power_w * wall_s * cfg.clock_speed / 3600  # the device's flows over that span in energy time


def _imbalance(deltas: list[int], cfg: CollectorConfig, drift_wh: float = 0.0) -> str | None:
    """``drift_wh``: how far the counters may disagree because the device updated between the model reads
    of one poll (each counter moving at most at its power limit while the reads lasted)."""
    pv, load, imp, exp, cha, dis = deltas
    expected = pv + imp - exp + dis - cha
    tolerance = max(cfg.balance_tolerance_wh, (pv + imp + dis) * cfg.balance_tolerance_pct / 100) + drift_wh
    if abs(load - expected) > tolerance:
        return f"imbalance: load +{load} Wh vs pv + import - export + discharge - charge = {expected} Wh"
    return None


def assess(state: SiteState, r: Reading, ts: datetime, cfg: CollectorConfig) -> Verdict:
    """The verdict on reading ``r`` received at ``ts``; does not change ``state`` (see ``remember``)."""
    base, cand = state.baseline, state.candidate
    counters = counters_of(r)
    if counters is None:
        gone = [f for f in ENERGY if getattr(r, f) is None]
        return Verdict(MISSING, f"not implemented: {', '.join(gone)}", baseline=base, candidate=cand)
    if _is_stale(state, r):
        return Verdict(STALE, "heartbeat not advancing", stale=True, baseline=base, candidate=cand)
    problems = range_problems(r, state.limits)
    if base is None:  # the first counters of this site: a baseline, no interval yet
        if problems:
            return Verdict(OUT_OF_RANGE, "; ".join(problems), baseline=base, candidate=cand)
        return Verdict(OK, accepted=True, baseline=Baseline(ts, counters, r.read_wall_s), candidate=None)

    seconds = (ts - base.ts).total_seconds()
    limit_wh = _limits_wh(state.limits, seconds, cfg)
    deltas = _forward_deltas(base.counters, counters, limit_wh)
    events: list[tuple[str, dict[str, Any]]] = []
    interval_start, origin = base.ts, base
    if deltas is None:
        confirmed = _confirms_reset(state, counters, ts, cfg)
        if confirmed is None:
            backwards = {f: [o, n] for f, o, n in zip(ENERGY, base.counters, counters, strict=True) if n < o}
            events.append(("counter_reset", {"backwards": backwards}))
            return Verdict(
                RESET,
                "counter went backwards: " + ", ".join(f"{f} {o}->{n}" for f, (o, n) in backwards.items()),
                events=tuple(events),
                baseline=base,
                candidate=Baseline(ts, counters, r.read_wall_s),
            )
        assert cand is not None  # a reset is confirmed only against a candidate
        deltas, interval_start, origin = confirmed, cand.ts, cand
        events.append(("rebaseline", {"from": list(base.counters), "to": list(cand.counters)}))
        limit_wh = _limits_wh(state.limits, (ts - interval_start).total_seconds(), cfg)
    elif cand is not None:
        events.append(("counter_glitch", {"ignored": list(cand.counters)}))

    problems += _delta_problems(deltas, limit_wh)
    imbalance = None if problems else _imbalance(deltas, cfg, _read_skew_wh(r, origin, cfg))
    if problems or imbalance:
        detail = "; ".join([*problems, imbalance] if imbalance else problems)
        events.append(("out_of_range", {"detail": detail}))
        # A rebaseline is still pending: the candidate stays until a reading passes every check.
        return Verdict(
            OUT_OF_RANGE,
            detail,
            events=tuple(events),
            imbalance=bool(imbalance),
            baseline=base,
            candidate=cand,
        )
    return Verdict(
        OK,
        accepted=True,
        interval_start=interval_start,
        deltas=tuple(deltas),
        events=tuple(events),
        baseline=Baseline(ts, counters, r.read_wall_s),
        candidate=None,
    )


def _confirms_reset(
    state: SiteState, counters: tuple[int, ...], ts: datetime, cfg: CollectorConfig
) -> list[int] | None:
    """Deltas from the reset candidate when ``counters`` continue from it plausibly, else None."""
    cand = state.candidate
    if cand is None:
        return None
    limit_wh = _limits_wh(state.limits, (ts - cand.ts).total_seconds(), cfg)
    deltas = [n - c for c, n in zip(cand.counters, counters, strict=True)]
    if any(d < 0 for d in deltas) or _delta_problems(deltas, limit_wh):
        return None
    return deltas


def _is_stale(state: SiteState, r: Reading) -> bool:
    if not state.answered:
        return False
    if r.heartbeat is not None:
        return r.heartbeat == state.last_heartbeat
    if r.device_time is not None:
        return r.device_time == state.last_device_time
    return values_of(r) == state.last_values  # no liveness signal at all: frozen values are all we have


def remember(state: SiteState, r: Reading, verdict: Verdict) -> None:
    """Fold an answered reading and its verdict into the state."""
    state.answered = True
    state.last_heartbeat, state.last_device_time = r.heartbeat, r.device_time
    state.last_values = values_of(r)
    state.baseline, state.candidate = verdict.baseline, verdict.candidate
    state.stale_run = state.stale_run + 1 if verdict.stale else 0
    if verdict.imbalance:
        state.imbalance_run += 1
    elif verdict.accepted:
        state.imbalance_run = 0


def copy_state(state: SiteState) -> SiteState:
    """A copy to update tentatively: the real state changes only after the database commit."""
    return replace(state, open_faults=set(state.open_faults))
