"""Dispatch: how much of what sites sell is delivered, with and without commanding their batteries.

.venv/bin/python -m bench.bench_dispatch [--sites 20] [--seed 0] [--hours 24] [--no-clouds]

Each simulated site (the simulator's physics, in process, no network) sells in every 15-minute slot what
the site forecast (``ess_collector.forecast``) plans for it, with a 10 % margin, from the supply
estimate's expected PV (clear-sky curve) and load (default 500 W), the next 8 slots ahead. Three
copies of every site run the same day:

- ``none``: no dispatch: the battery stays in self-consumption (what happens today);
- ``open``: one command at the slot's start, from the same forecast (``dispatch.decide``);
- ``closed``: the command re-decided every minute for what is still to be exported, with the site's
  current PV and load power as the forecast for the rest of the slot.

Delivered is what settlement counts for a seller: min(exported, sold) per slot. Commands are applied
with the same register values ``dispatch.send_command`` writes (``dispatch.command_controls``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ess_collector.dispatch import MODE_ADDRESS, RATES_ADDRESS, DispatchCommand, command_controls, decide
from ess_collector.forecast import Battery, SlotOutlook, forecast
from ess_collector.simulator import SiteConfig, SiteSimulator
from ess_collector.supply import SupplyConfig, clear_sky_pv_wh

SLOT_S = 900
HORIZON = 8
START = datetime(2025, 6, 1, 15, 0, tzinfo=UTC)  # local (KST) midnight


@dataclass
class Tally:
    sold: int = 0
    delivered: int = 0
    slots_sold: int = 0
    slots_short: int = 0  # slots delivering under 95 % of the sell
    commands: int = 0
    per_slot: list[tuple[int, int]] = field(default_factory=list)


def battery_of(sim: SiteSimulator) -> Battery:
    c = sim.config
    return Battery(
        c.capacity_wh, sim.reading.soc_pct, c.reserve_pct, c.max_charge_w, c.max_discharge_w,
        c.efficiency_pct, c.efficiency_pct,
    )  # fmt: skip


def expected(cfg: SiteConfig, t: datetime, supply: SupplyConfig) -> tuple[int, int]:
    return clear_sky_pv_wh(cfg.pv_peak_w, t, 15, supply), supply.default_load_w * 15 // 60


def apply(sim: SiteSimulator, command: DispatchCommand) -> None:
    want = command_controls(command, sim.controls)
    rates = [(want.out_w_rte or 0) & 0xFFFF, (want.in_w_rte or 0) & 0xFFFF, 0, want.rvrt_tms or 0]
    assert sim.write(RATES_ADDRESS, rates) is None
    assert sim.write(MODE_ADDRESS, [want.mod or 0]) is None


def release(sim: SiteSimulator) -> None:
    assert sim.write(MODE_ADDRESS, [0]) is None


def run_site(sim: SiteSimulator, strategy: str, slots: int, supply: SupplyConfig, tally: Tally) -> None:
    for k in range(slots):
        t0 = START + timedelta(seconds=SLOT_S * k)
        outlook = [
            SlotOutlook(t, *expected(sim.config, t, supply))
            for t in (t0 + timedelta(seconds=SLOT_S * j) for j in range(HORIZON))
        ]
        sold = forecast(battery_of(sim), outlook, SLOT_S)[0].plan_sell_wh * 9 // 10
        exp0 = sim.reading.export_wh or 0
        if sold and strategy == "open":
            pv, load = outlook[0].pv_wh, outlook[0].load_wh
            d = decide(
                site_id=sim.site_id, slot_start=t0, slot_seconds=SLOT_S, now=t0, sold_wh=sold, bought_wh=0,
                expected_pv_wh=pv, expected_load_wh=load, battery=battery_of(sim),
            )  # fmt: skip
            if d.command:
                apply(sim, d.command)
                tally.commands += 1
        for m in range(SLOT_S // 60):
            now = t0 + timedelta(seconds=60 * m)
            if sold and strategy == "closed":
                left = SLOT_S - 60 * m
                todo = max(0, sold - ((sim.reading.export_wh or 0) - exp0))
                d = decide(
                    site_id=sim.site_id, slot_start=t0, slot_seconds=SLOT_S, now=now, sold_wh=todo,
                    bought_wh=0, expected_pv_wh=sim.pv_w * left // 3600,
                    expected_load_wh=sim.load_w * left // 3600, battery=battery_of(sim),
                )  # fmt: skip
                if d.command:
                    apply(sim, d.command)
                    tally.commands += 1
                elif sim.controls.mod:
                    release(sim)
            sim.advance_to(now + timedelta(seconds=60))
        exported = (sim.reading.export_wh or 0) - exp0
        if sold:
            delivered = min(exported, sold)
            tally.sold += sold
            tally.delivered += delivered
            tally.slots_sold += 1
            tally.slots_short += delivered * 100 < sold * 95
            tally.per_slot.append((sold, delivered))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--no-clouds", action="store_true")
    args = ap.parse_args(argv)
    supply = SupplyConfig()
    slots = args.hours * 3600 // SLOT_S
    out = {}
    for strategy in ("none", "open", "closed"):
        tally = Tally()
        for i in range(args.sites):
            cfg = SiteConfig.from_seed(args.seed, i, clouds=not args.no_clouds)
            run_site(SiteSimulator(i, args.seed, start=START, config=cfg), strategy, slots, supply, tally)
        out[strategy] = {
            "sold_wh": tally.sold,
            "delivered_wh": tally.delivered,
            "delivered_ratio": round(tally.delivered / tally.sold, 4) if tally.sold else None,
            "site_slots_selling": tally.slots_sold,
            "site_slots_under_95pct": tally.slots_short,
            "commands": tally.commands,
        }
    print(json.dumps({"sites": args.sites, "seed": args.seed, "clouds": not args.no_clouds} | out, indent=2))


if __name__ == "__main__":
    main()
