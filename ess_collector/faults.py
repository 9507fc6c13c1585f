"""When a site's faults open and close.

Device-reported faults (inverter FAULT state or alarm code, battery FAULT state or alarm code) follow the
latest answer. Conditions the collector infers need a run of polls, so one lost packet or one late
heartbeat does not page anybody: comm_lost after N failed polls in a row, stale after N stale readings,
imbalance after N unbalanced ones. Each closes on the first poll that shows the condition gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import CollectorConfig
from .models import SiteStatus
from .sunspec import BATTERY_FAULT_STATE, INVERTER_FAULT_STATE, Reading
from .validation import SiteState, Verdict

INVERTER, BATTERY, COMM_LOST, STALE, IMBALANCE = (
    "inverter_fault", "battery_fault", "comm_lost", "stale", "imbalance",
)  # fmt: skip
ALARM_INVERTER, ALARM_BATTERY = 1, 2  # vendor AlmCode bits


@dataclass(frozen=True)
class FaultChange:
    kind: str
    open: bool  # True = opens, False = closes
    detail: str | None = None


def set_fault(state: SiteState, kind: str, active: bool, detail: str | None) -> list[FaultChange]:
    if active and kind not in state.open_faults:
        state.open_faults.add(kind)
        return [FaultChange(kind, True, detail)]
    if not active and kind in state.open_faults:
        state.open_faults.discard(kind)
        return [FaultChange(kind, False)]
    return []


def after_failure(state: SiteState, cfg: CollectorConfig) -> list[FaultChange]:
    """A poll that got no usable answer (``state.failures`` already counts it).

    The detail never says why (refused, timed out, something else answering): the owner sees it, and a
    site must not work as a port scanner. The cause is in the reading's detail, which only admins see."""
    if state.failures < cfg.comm_lost_polls:
        return []
    return set_fault(state, COMM_LOST, True, f"no valid answer for {state.failures} polls")


def after_answer(state: SiteState, r: Reading, verdict: Verdict, cfg: CollectorConfig) -> list[FaultChange]:
    """A poll that got an answer (``remember`` already folded it into ``state``)."""
    changes = set_fault(state, COMM_LOST, False, None)
    if verdict.stale:  # a frozen device's states are as old as its values: judge them when it thaws
        return changes + set_fault(
            state, STALE, state.stale_run >= cfg.stale_polls, f"{state.stale_run} stale readings in a row"
        )
    changes += set_fault(state, STALE, False, None)
    alarm = r.alarm_code or 0
    if r.inverter_state is not None or r.alarm_code is not None:
        inverter = r.inverter_state == INVERTER_FAULT_STATE or bool(alarm & ALARM_INVERTER)
        changes += set_fault(
            state, INVERTER, inverter, f"inverter state {r.inverter_state}, alarms {r.inverter_alarms}"
        )
    if r.battery_state is not None or r.alarm_code is not None:
        battery = r.battery_state == BATTERY_FAULT_STATE or bool(alarm & ALARM_BATTERY)
        changes += set_fault(
            state, BATTERY, battery, f"battery state {r.battery_state}, alarms {r.battery_alarms}"
        )
    if verdict.imbalance:
        changes += set_fault(state, IMBALANCE, state.imbalance_run >= cfg.imbalance_polls, verdict.detail)
    elif verdict.accepted:
        changes += set_fault(state, IMBALANCE, False, None)
    return changes


def site_status(state: SiteState) -> SiteStatus:
    if COMM_LOST in state.open_faults:
        return SiteStatus.offline
    if state.open_faults:
        return SiteStatus.fault
    return SiteStatus.online if state.answered else SiteStatus.unknown
