"""What a site can still sell, and must buy, in each of a run of upcoming slots (pure arithmetic).

The old supply estimate counted the whole battery above its reserve in every slot and ignored its power
limit, so a 10 kWh battery was allowed 19.5 kWh of sells in three slots. Here one battery is followed
through the run, slot by slot, with integer Wh:

- per slot the battery moves at most ``max_discharge_w`` / ``max_charge_w`` x the slot length;
- it never goes below the reserve nor above the capacity;
- charging stores ``charge_efficiency_pct`` of the energy, discharging delivers ``discharge_efficiency_pct``
  of what it draws (95 % each way, about 90 % round trip, like the simulator);
- energy already committed (sold, bought) in any slot of the run is a fixed flow of that slot, and what a
  later slot needs (its committed sells and the household's own deficit, as far as the battery's power
  can cover them) is kept in the battery: ``keep_wh``, computed backwards from the end of the run.

Two answers per slot:

- ``sell_wh`` / ``buy_wh``: the most this slot can still sell, and what it must buy, with every commitment
  kept. This is the market's cap on a new sell order (recompute after each commitment: the caps of two
  slots are not meant to be added up);
- ``plan_sell_wh`` / ``plan_buy_wh``: an allocation that holds jointly, selling the most in the earliest
  slots. The automatic trader can place all of these at once; their sum never exceeds the energy above
  the reserve (after losses) plus the run's PV surplus.

Rounding always errs towards selling less: gains are floored, costs are rounded up. Expected PV and load
per slot come from the supply estimate (``ess_collector.supply``: the same history means, clear-sky curve
and default load); ``outlook_from_estimate`` and ``battery_from_estimate`` take them from its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Protocol


@dataclass(frozen=True)
class Battery:
    """The latest state and the limits of a site's battery. ``soc_pct`` None = unknown: counted as at
    the reserve, so an unknown battery sells nothing (as the supply estimate does)."""

    capacity_wh: int
    soc_pct: Decimal | None
    reserve_pct: Decimal | int
    max_charge_w: int
    max_discharge_w: int
    charge_efficiency_pct: int = 95
    discharge_efficiency_pct: int = 95

    def __post_init__(self) -> None:
        if self.capacity_wh < 0 or self.max_charge_w < 0 or self.max_discharge_w < 0:
            raise ValueError("capacity and power limits must not be negative")
        if not 0 <= self.reserve_pct <= 100 or (self.soc_pct is not None and not 0 <= self.soc_pct <= 100):
            raise ValueError("state of charge and reserve are percentages 0-100")
        if not (0 < self.charge_efficiency_pct <= 100 and 0 < self.discharge_efficiency_pct <= 100):
            raise ValueError("efficiencies are percentages 1-100")

    @property
    def reserve_wh(self) -> int:
        return min(self.capacity_wh, -int(-Decimal(self.capacity_wh) * Decimal(self.reserve_pct) // 100))

    @property
    def stored_wh(self) -> int:
        """Stored energy now (floored); an unknown SoC counts as the reserve."""
        if self.soc_pct is None:
            return self.reserve_wh
        return int(Decimal(self.capacity_wh) * self.soc_pct // 100)

    @property
    def round_trip_pct(self) -> Decimal:
        return Decimal(self.charge_efficiency_pct * self.discharge_efficiency_pct) / 100


@dataclass(frozen=True)
class SlotOutlook:
    """One upcoming slot: expected PV and household load, and what is already committed."""

    slot_start: datetime
    pv_wh: int
    load_wh: int
    sold_wh: int = 0  # sells already committed (open or matched orders)
    bought_wh: int = 0  # buys already committed

    def __post_init__(self) -> None:
        if min(self.pv_wh, self.load_wh, self.sold_wh, self.bought_wh) < 0:
            raise ValueError("energies must not be negative")

    @property
    def net_wh(self) -> int:
        """What the slot gives the battery (+) or needs from it (-) once its commitments are traded."""
        return self.pv_wh - self.load_wh - self.sold_wh + self.bought_wh


@dataclass(frozen=True)
class SlotForecast:
    slot_start: datetime
    pv_wh: int
    load_wh: int
    sold_wh: int
    bought_wh: int
    sell_wh: int  # the most this slot can still sell, every commitment of the run kept
    buy_wh: int  # the household's own load in this slot that neither PV nor battery can cover
    undeliverable_wh: int  # committed sells of this slot that cannot be delivered
    plan_sell_wh: int  # jointly feasible: selling plan_sell_wh in every slot of the run at once
    plan_buy_wh: int
    battery_wh: int  # stored at the slot's start (commitments only traded, buys made as advised)
    keep_wh: int  # what the battery must still hold at the slot's end for the later slots


@dataclass(frozen=True)
class _Limits:
    capacity: int
    reserve: int
    charge: int  # Wh per slot, AC side
    discharge: int
    eta_c: int
    eta_d: int

    def gain(self, charged: int) -> int:
        return charged * self.eta_c // 100

    def cost(self, delivered: int) -> int:
        return -(-delivered * 100 // self.eta_d)

    def room(self, stored: int) -> int:
        """The most AC energy charging can take: the largest charge whose (floored) gain still fits.
        Flooring the room itself instead would stop short of a full battery that ``_keep``, counting
        floored gains, expects to be reached (a cap then let a later slot's own needs claim 1 Wh that
        an earlier commitment was promised). Any fraction of a Wh beyond the capacity is spilled."""
        if stored >= self.capacity:
            return 0
        return ((self.capacity - stored + 1) * 100 - 1) // self.eta_c


def forecast(battery: Battery, slots: Sequence[SlotOutlook], slot_seconds: int) -> list[SlotForecast]:
    """Per slot of a run of consecutive slots (oldest first): what can be sold and must be bought."""
    if slot_seconds <= 0:
        raise ValueError("slot_seconds must be positive")
    step = timedelta(seconds=slot_seconds)
    for a, b in pairwise(slots):
        if b.slot_start - a.slot_start != step:
            raise ValueError(f"slots must be consecutive: {a.slot_start} then {b.slot_start}")
    lim = _limits(battery, slot_seconds)
    keep = _keep(lim, slots)
    start = min(max(battery.stored_wh, 0), lim.capacity)
    path = plan = start
    out: list[SlotForecast] = []
    for k, s in enumerate(slots):
        sell, buy, undeliverable, _ = _slot(lim, s.net_wh, s.sold_wh, path, keep[k + 1])
        plan_sell, plan_buy, _, plan_most = _slot(lim, s.net_wh, s.sold_wh, plan, keep[k + 1])
        out.append(
            SlotForecast(
                slot_start=s.slot_start,
                pv_wh=s.pv_wh,
                load_wh=s.load_wh,
                sold_wh=s.sold_wh,
                bought_wh=s.bought_wh,
                sell_wh=sell,
                buy_wh=buy,
                undeliverable_wh=undeliverable,
                plan_sell_wh=plan_sell,
                plan_buy_wh=plan_buy,
                battery_wh=path,
                keep_wh=keep[k + 1],
            )
        )
        path = _after(lim, path, _traded_only(lim, s.net_wh, path, keep[k + 1]))
        plan = _after(lim, plan, plan_most)
    return out


def stored_after(battery: Battery, slot: SlotOutlook, seconds: int) -> int:
    """Stored Wh after a slot (or the rest of one, ``seconds`` long, with its energies for that time)
    in which only its commitments are traded: a surplus is stored as far as it fits, a deficit is covered
    down to the reserve within the power limit."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    lim = _limits(battery, seconds)
    stored = min(max(battery.stored_wh, 0), lim.capacity)
    return _after(lim, stored, _traded_only(lim, slot.net_wh, stored, lim.reserve))


def _limits(battery: Battery, slot_seconds: int) -> _Limits:
    return _Limits(
        capacity=battery.capacity_wh,
        reserve=battery.reserve_wh,
        charge=battery.max_charge_w * slot_seconds // 3600,
        discharge=battery.max_discharge_w * slot_seconds // 3600,
        eta_c=battery.charge_efficiency_pct,
        eta_d=battery.discharge_efficiency_pct,
    )


def sell_cap(battery: Battery, slots: Sequence[SlotOutlook], slot_seconds: int, slot_start: datetime) -> int:
    """The most a new sell order for the slot at ``slot_start`` (one of ``slots``) may add, with every
    commitment of the run kept: energy sold earlier in the run has left the battery, and later slots'
    sells and own deficits keep their share of it."""
    for f in forecast(battery, slots, slot_seconds):
        if f.slot_start == slot_start:
            return f.sell_wh
    raise ValueError(f"{slot_start.isoformat()} is not a slot of the run")


def _keep(lim: _Limits, slots: Sequence[SlotOutlook]) -> list[int]:
    """keep[k]: the least stored energy at the start of slot k that covers every later slot's net need
    (as far as the power limit lets the battery cover it), counting later surpluses as stored."""
    keep = [lim.reserve] * (len(slots) + 1)
    for k in range(len(slots) - 1, -1, -1):
        net = slots[k].net_wh
        if net >= 0:
            keep[k] = max(lim.reserve, keep[k + 1] - lim.gain(min(net, lim.charge)))
        else:
            keep[k] = min(lim.capacity, keep[k + 1] + lim.cost(min(-net, lim.discharge)))
    return keep


def _most(lim: _Limits, net: int, stored: int, keep_after: int) -> int:
    """The battery's largest AC flow in a slot (+ = discharge, - = charge) that leaves at least
    ``keep_after`` stored; below it, the slot's own surplus is stored towards it (never grid energy)."""
    if stored >= keep_after:
        return min(lim.discharge, (stored - keep_after) * lim.eta_d // 100)
    short = -(-(keep_after - stored) * 100 // lim.eta_c)
    return -min(max(net, 0), short, lim.charge, lim.room(stored))


def _slot(lim: _Limits, net: int, sold: int, stored: int, keep_after: int) -> tuple[int, int, int, int]:
    """(sell, buy, undeliverable, battery flow) when the slot sells all it can."""
    most = _most(lim, net, stored, keep_after)
    balance = net + most
    if balance >= 0:
        return balance, 0, 0, most
    undeliverable = min(sold, -balance)  # the battery covers the household first, export gets the rest
    return 0, -balance - undeliverable, undeliverable, most


def _traded_only(lim: _Limits, net: int, stored: int, keep_after: int) -> int:
    """The battery's flow when only the commitments are traded: surplus stored as far as it fits,
    a deficit covered down to ``keep_after`` (the rest is bought, as ``buy_wh`` advises)."""
    if net >= 0:
        return -min(net, lim.charge, lim.room(stored))
    return min(-net, max(0, _most(lim, net, stored, keep_after)))


def _after(lim: _Limits, stored: int, flow: int) -> int:
    return stored - lim.cost(flow) if flow >= 0 else stored + lim.gain(-flow)


# ---- from the supply estimate -------------------------------------------------------------------------


class SupplyLike(Protocol):
    """What is used of ``ess_collector.supply.SupplyEstimate`` (its expected PV and load, its SoC)."""

    @property
    def slot_start(self) -> datetime: ...
    @property
    def expected_pv_wh(self) -> int: ...
    @property
    def expected_load_wh(self) -> int: ...
    @property
    def battery_above_reserve_wh(self) -> int: ...
    @property
    def soc_pct(self) -> Decimal | None: ...
    @property
    def battery_capacity_wh(self) -> int: ...
    @property
    def reserve_soc_pct(self) -> int: ...


def outlook_from_estimate(estimate: SupplyLike, sold_wh: int = 0, bought_wh: int = 0) -> SlotOutlook:
    """A slot's outlook from the supply estimate of that slot: the same PV curve and load profile."""
    return SlotOutlook(
        slot_start=estimate.slot_start,
        pv_wh=estimate.expected_pv_wh,
        load_wh=estimate.expected_load_wh,
        sold_wh=sold_wh,
        bought_wh=bought_wh,
    )


def battery_from_estimate(
    estimate: SupplyLike,
    *,
    max_charge_w: int,
    max_discharge_w: int,
    charge_efficiency_pct: int = 95,
    discharge_efficiency_pct: int = 95,
) -> Battery:
    """The battery as the supply estimate saw it. An estimate that counted no battery although its SoC
    is above the reserve found that SoC too old: the SoC is then unknown."""
    soc = estimate.soc_pct
    if soc is not None and estimate.battery_above_reserve_wh == 0 and soc > estimate.reserve_soc_pct:
        soc = None
    return Battery(
        capacity_wh=estimate.battery_capacity_wh,
        soc_pct=None if soc is None else min(max(Decimal(soc), Decimal(0)), Decimal(100)),
        reserve_pct=estimate.reserve_soc_pct,
        max_charge_w=max_charge_w,
        max_discharge_w=max_discharge_w,
        charge_efficiency_pct=charge_efficiency_pct,
        discharge_efficiency_pct=discharge_efficiency_pct,
    )
