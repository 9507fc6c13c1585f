"""What the automatic trader sells and buys for a site, slot by slot: pure rules, no database.

A sell is only worth placing if the site can deliver it: the collector's dispatch (ess_collector/dispatcher.py)
discharges the battery to export what was sold, within the battery's power limit and down to its reserve,
while the household's own load comes first. So the sell side plans on a *pessimistic* outlook and the
buy side on an *optimistic* one (a prosumer's purchase is delivered only if its meter imports it):

- the battery is followed from now (``ess_collector.forecast``): through the rest of the slot in delivery
  (its remaining commitments, PV and load, pro rata), through slots whose gate has closed (their
  commitments only), then the open slots jointly, with every commitment kept, the power limits,
  efficiencies and the reserve;
- sell side: PV is the estimate scaled by how the measured PV compares with what the estimate expected
  over the last slot (clouds persist; never above the estimate), less ``PV_SELL_MARGIN_PCT``; load is the
  larger of the estimate and the measured load, plus ``LOAD_SELL_MARGIN_PCT``. Without a measurement
  the estimate's PV counts at the margin only and its load with the margin;
- buy side: PV is the estimate, load the smaller of the estimate and the measured load, less
  ``LOAD_BUY_MARGIN_PCT``; the battery is assumed to deliver the sells planned above. A battery whose
  state of charge is unknown might cover the load: nothing is bought for it.

Energies are integer Wh; rounding errs towards trading less.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from ess_collector.forecast import Battery, SlotOutlook, forecast, stored_after

PV_SELL_MARGIN_PCT = 20  # of the scaled PV: the sky changes within the hour
LOAD_SELL_MARGIN_PCT = 50  # on the load: a household's load swings and ramps (morning and evening peaks)
LOAD_BUY_MARGIN_PCT = 20  # off the load a purchase is sized on: the battery may cover more than expected
QTY_SLACK_WH = 100  # a live order this much (or 20 %) smaller than wanted is kept: small orders drift
MIN_SKY_W = 50  # below this expected PV (night, dawn) the measured ratio says nothing: count no PV


@dataclass(frozen=True)
class Measured:
    """What the site's meter showed over about the last slot: mean PV and load power, and the mean PV
    power the estimate expected over the same time."""

    pv_w: int
    load_w: int
    expected_pv_w: int

    @property
    def sky_pct(self) -> int:
        """Measured PV as a percentage of the expectation, at most 100; 0 when nothing was expected."""
        if self.expected_pv_w < MIN_SKY_W:
            return 0
        return max(0, min(100, self.pv_w * 100 // self.expected_pv_w))


@dataclass(frozen=True)
class SlotInput:
    """One slot of the run: the supply estimate's expectation and what is committed already."""

    slot_start: datetime
    pv_wh: int
    load_wh: int
    sold_wh: int = 0  # matched, and open orders other than the agent's own live one
    bought_wh: int = 0
    gate_open: bool = True  # the agent may still place orders for it


@dataclass(frozen=True)
class SlotPlan:
    slot_start: datetime
    sell_wh: int
    buy_wh: int
    pv_wh: int  # the sell side's PV and load (what the agent tells the user)
    load_wh: int
    battery_wh: int  # stored at the slot's start, sell side
    keep_wh: int  # what the battery must still hold at the slot's end for the later slots


def sell_outlook(slot: SlotInput, measured: Measured | None, slot_seconds: int) -> SlotOutlook:
    """The slot as the sell side sees it: less PV and more load than expected."""
    sky = measured.sky_pct if measured is not None else 100
    pv = slot.pv_wh * sky * (100 - PV_SELL_MARGIN_PCT) // 10_000
    load = slot.load_wh
    if measured is not None:
        load = max(load, measured.load_w * slot_seconds // 3600)
    load = -(-load * (100 + LOAD_SELL_MARGIN_PCT) // 100)
    return SlotOutlook(slot.slot_start, pv, load, slot.sold_wh, slot.bought_wh)


def buy_outlook(slot: SlotInput, measured: Measured | None, slot_seconds: int, sold_wh: int) -> SlotOutlook:
    """The slot as the buy side sees it: the expected PV, less load, and ``sold_wh`` sold."""
    load = slot.load_wh
    if measured is not None:
        load = min(load, -(-measured.load_w * slot_seconds // 3600))
    load = load * (100 - LOAD_BUY_MARGIN_PCT) // 100
    return SlotOutlook(slot.slot_start, slot.pv_wh, load, sold_wh, slot.bought_wh)


def _scaled(o: SlotOutlook, num: int, den: int) -> SlotOutlook:
    return SlotOutlook(
        o.slot_start,
        o.pv_wh * num // den,
        -(-o.load_wh * num // den),
        -(-o.sold_wh * num // den),
        o.bought_wh * num // den,
    )


def _with_stored(battery: Battery, stored_wh: int) -> Battery:
    """The battery holding ``stored_wh``. The percentage is rounded up by one digit of the context's precision
    where the division is inexact, so that ``stored_wh`` reads back unchanged (floored, it lost 1 Wh)."""
    if battery.capacity_wh == 0:
        return battery
    soc = Decimal(stored_wh) * 100 / battery.capacity_wh
    if battery.capacity_wh * soc // 100 < stored_wh:
        soc = min(soc.next_plus(), Decimal(100))
    return replace(battery, soc_pct=soc)


def _advance(
    battery: Battery,
    current: SlotOutlook | None,
    seconds_left: int,
    slot_seconds: int,
    closed: list[SlotOutlook],
) -> Battery:
    """The battery at the start of the first open slot: after the rest of the slot in delivery and the
    slots whose gate has closed, trading only their commitments."""
    if battery.soc_pct is None:
        return battery
    if current is not None and seconds_left > 0:
        part = _scaled(current, seconds_left, slot_seconds)
        battery = _with_stored(battery, stored_after(battery, part, seconds_left))
    for o in closed:
        battery = _with_stored(battery, stored_after(battery, o, slot_seconds))
    return battery


def plan_site(
    battery: Battery,
    slots: list[SlotInput],
    slot_seconds: int,
    *,
    current: SlotInput | None = None,
    seconds_left: int = 0,
    measured: Measured | None = None,
) -> list[SlotPlan]:
    """Per open slot of ``slots`` (consecutive, oldest first; slots whose gate has closed lead): what to
    sell and what to buy. ``current``: the slot in delivery, ``seconds_left`` of it to go."""
    closed = [s for s in slots if not s.gate_open]
    open_ = [s for s in slots if s.gate_open]
    if slots[: len(closed)] != closed:
        raise ValueError("slots whose gate has closed come first")
    if not open_:
        return []
    # sell side
    pess = [sell_outlook(s, measured, slot_seconds) for s in slots]
    cur_pess = sell_outlook(current, measured, slot_seconds) if current is not None else None
    start = _advance(battery, cur_pess, seconds_left, slot_seconds, pess[: len(closed)])
    sells = forecast(start, pess[len(closed) :], slot_seconds)
    # buy side: the planned sells are delivered too
    opt = [buy_outlook(s, measured, slot_seconds, s.sold_wh) for s in slots]
    cur_opt = buy_outlook(current, measured, slot_seconds, current.sold_wh) if current is not None else None
    stored = _advance(battery, cur_opt, seconds_left, slot_seconds, opt[: len(closed)])
    out = []
    for s, o, f in zip(open_, opt[len(closed) :], sells, strict=True):
        # Slot by slot, each covering only its own need: a purchase held for a later slot would be
        # covered by the battery now instead of imported.
        o = replace(o, sold_wh=o.sold_wh + f.plan_sell_wh)
        buy = forecast(stored, [o], slot_seconds)[0].buy_wh
        stored = _with_stored(stored, stored_after(stored, o, slot_seconds))
        if battery.soc_pct is None or f.plan_sell_wh > 0:
            buy = 0
        out.append(
            SlotPlan(
                slot_start=s.slot_start,
                sell_wh=f.plan_sell_wh,
                buy_wh=buy,
                pv_wh=f.pv_wh,
                load_wh=f.load_wh,
                battery_wh=f.battery_wh,
                keep_wh=f.keep_wh,
            )
        )
    return out


def keep_live(
    *,
    open_wh: int,
    live_price: int,
    want_wh: int,
    want_price: int,
    price_step: int,
    near_gate: bool,
) -> bool:
    """Whether a live order stays as it is (hysteresis: every reprice of a buy releases and signs escrow
    again). Never larger than wanted: what is sold must be deliverable. Far from the gate it stays while
    its price is within one step of the suggestion and it falls short of the wanted size by at most 20 %
    or ``QTY_SLACK_WH``; near the gate the last suggestion counts, within a fifth of a step, 10 % or half
    the slack."""
    if want_wh <= 0 or open_wh > want_wh:
        return False
    tolerance = price_step // 5 if near_gate else price_step
    short = max(want_wh // 10, QTY_SLACK_WH // 2) if near_gate else max(want_wh // 5, QTY_SLACK_WH)
    return abs(live_price - want_price) <= tolerance and open_wh >= want_wh - short
