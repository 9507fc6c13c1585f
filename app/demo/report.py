"""The demo's report: Markdown with PNG charts, from the public API and the chain itself."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from app.core.money import DECIMALS, format_amount, parse_amount
from app.demo import community as cm
from app.users.models import Role
from contracts.artifacts import load_artifact
from contracts.deploy import load_deployment
from wallet.chain import connect, raw_call
from wallet.localchain import LOCAL_CHAIN_ID

if TYPE_CHECKING:
    from app.demo.run import Api, DemoState
    from app.demo.service import ServiceHandle


@dataclass
class HouseholdResult:
    name: str
    role: str
    pv_kw: str
    battery_kwh: str
    pv_wh: int
    load_wh: int
    bought_wh: int
    sold_wh: int
    paid: int
    received: int
    savings: int  # against buying the same energy at the retail tariff
    extra: int  # against selling it at the feed-in price


@dataclass
class ChainStats:
    transactions: int
    gas: int
    by_call: dict[str, tuple[int, int]]  # "Contract.function" -> (count, gas)

    def gas_per_trade(self, trades: int) -> int | None:
        """Everything the platform sent, per trade; None without trades."""
        return self.gas // trades if trades else None


def months(start: datetime, end: datetime) -> list[str]:
    out, t = [], start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while t < end:
        out.append(f"{t:%Y-%m}")
        t = (t + timedelta(days=32)).replace(day=1)
    return out


def chain_stats(chain_url: str, deployments_dir: Path, first_block: int) -> ChainStats:
    """Every transaction mined since ``first_block``, grouped by contract and function (JSON-RPC only)."""
    deployment = load_deployment(deployments_dir, LOCAL_CHAIN_ID)
    names: dict[str, str] = {}
    selectors: dict[str, str] = {}
    if deployment is not None:
        for name, address in deployment.contracts.items():
            names[address.lower()] = name
            for selector, fn in _selectors(name).items():
                selectors.setdefault(selector, fn)
    w3 = connect([chain_url])

    def rpc(method: str, *params: Any) -> Any:
        return raw_call(w3, method, list(params))  # the blocks and receipts as sent: hex strings

    last = int(rpc("eth_blockNumber"), 16)
    by_call: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    count = gas = 0
    for n in range(first_block + 1, last + 1):
        block = rpc("eth_getBlockByNumber", hex(n), True)
        if not block["transactions"]:
            continue
        receipts = {r["transactionHash"]: r for r in rpc("eth_getBlockReceipts", hex(n))}
        for tx in block["transactions"]:
            used = int(receipts[tx["hash"]]["gasUsed"], 16)
            to = (tx.get("to") or "").lower()
            key = f"{names.get(to, to or 'create')}.{selectors.get(tx['input'][:10], tx['input'][:10])}"
            by_call[key][0] += 1
            by_call[key][1] += used
            count, gas = count + 1, gas + used
    return ChainStats(count, gas, {k: (v[0], v[1]) for k, v in sorted(by_call.items())})


def _selectors(contract: str) -> dict[str, str]:
    from eth_utils import function_abi_to_4byte_selector

    out: dict[str, str] = {}
    for item in load_artifact(contract).abi:
        if item.get("type") == "function":
            out["0x" + function_abi_to_4byte_selector(cast(Any, item)).hex()] = item["name"]
    return out


def collect(api: Api, state: DemoState) -> dict[str, Any]:
    """Everything the report shows, read through the public API."""
    start, end = state.trading_start, state.trading_end
    admin = state.admin_token
    span = {"from": start.isoformat(), "to": end.isoformat()}
    summary = api.call("GET", "/admin/market/summary", admin, params=span)
    tariff = api.call("GET", "/market")["tariff"]
    slots = []
    t = start
    while t < end:
        band = api.call("GET", "/market/price", admin, params={"slot_start": t.isoformat(), "side": "buy"})
        slots.append({"slot_start": t, "floor": band["band"]["floor"], "retail": first_tier(tariff, t)})
        t += state.slot
    assert state.clock.start is not None
    flows = cm.flows_without_market(
        state.households,
        state.options.seed,
        state.clock.start,
        [b["slot_start"] for b in slots],
        state.options.slot_minutes,
    )
    energy: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    households = []
    for h in state.households:
        pv = load = 0
        if h.site_id is not None:
            rows = api.call(
                "GET",
                f"/sites/{h.site_id}/slots",
                h.token,
                params={"from": start.isoformat(), "to": end.isoformat(), "limit": 3000},
            )
            for row in rows:
                key = datetime.fromisoformat(row["slot_start"]).isoformat()
                for f in ("pv_wh", "load_wh", "import_wh", "export_wh"):
                    energy[key][f] += row[f] or 0
                pv += row["pv_wh"] or 0
                load += row["load_wh"] or 0
        totals: dict[str, int] = defaultdict(int)
        for month in months(start, end):
            st = api.call("GET", "/statements", h.token, params={"month": month})
            totals["bought_wh"] += st["bought_wh"]
            totals["sold_wh"] += st["sold_wh"]
            totals["paid"] += parse_amount(st["coins_paid"], allow_zero=True)
            totals["received"] += parse_amount(st["coins_received"], allow_zero=True)
            totals["savings"] += parse_amount(st["savings_vs_retail"], allow_zero=True)
            totals["extra"] += parse_amount(st["extra_income_vs_feed_in"], allow_zero=True)
        households.append(
            HouseholdResult(
                name=h.name,
                role=h.role,
                pv_kw=f"{h.config.pv_peak_w / 1000:.1f}" if h.config else "-",
                battery_kwh=f"{h.config.capacity_wh / 1000:.1f}" if h.config else "-",
                pv_wh=pv,
                load_wh=load,
                **totals,
            )
        )
    return {"summary": summary, "bands": slots, "energy": energy, "households": households, "flows": flows}


def first_tier(tariff: dict[str, Any], when: datetime) -> str:
    """The first retail tier's price at ``when`` (summer or not, local time): what the statements' savings
    count against, so the report's retail line and its savings column use the same tariff."""
    local = when + timedelta(hours=float(tariff["utc_offset_hours"]))
    tiers = tariff["summer_tiers"] if local.month in tariff["summer_months"] else tariff["tiers"]
    return str(tiers[0]["price"])


@dataclass(frozen=True)
class LocalVolume:
    """Totals of the local-volume table: the community's feasible local volume without the market and
    what the market contracted and delivered."""

    export_wh: int
    import_wh: int
    feasible_wh: int
    contracted_wh: int
    delivered_wh: int

    @property
    def delivered_over_contracted(self) -> float | None:
        return self.delivered_wh / self.contracted_wh if self.contracted_wh else None

    @property
    def delivered_share(self) -> float | None:
        """Delivered energy as a share of the feasible local volume."""
        return self.delivered_wh / self.feasible_wh if self.feasible_wh else None

    @property
    def contracted_share(self) -> float | None:
        return self.contracted_wh / self.feasible_wh if self.feasible_wh else None


def local_volume(data: dict[str, Any]) -> tuple[list[tuple[cm.SlotFlows, int, int]], LocalVolume]:
    """Per slot (flows without the market, contracted Wh, delivered Wh) and the totals."""
    by_slot = {x["slot_start"]: x for x in data["summary"]["slots"]}
    rows = []
    for f in data["flows"]:
        x = by_slot.get(f.slot_start.isoformat(), {})
        rows.append((f, int(x.get("volume_wh", 0)), int(x.get("delivered_wh", 0))))
    total = LocalVolume(
        export_wh=sum(f.export_wh for f, _, _ in rows),
        import_wh=sum(f.import_wh for f, _, _ in rows),
        feasible_wh=sum(f.feasible_wh for f, _, _ in rows),
        contracted_wh=sum(c for _, c, _ in rows),
        delivered_wh=sum(d for _, _, d in rows),
    )
    return rows, total


def write_report(api: Api, svc: ServiceHandle, state: DemoState, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(api, state)
    chain = chain_stats(svc.chain_url, svc.data_dir / "deployments", state.first_block)
    charts = draw_charts(data, state, out_dir)
    text = render(data, chain, state, charts)
    path = out_dir / "report.md"
    path.write_text(text)
    (out_dir / "report.json").write_text(json.dumps(summary_json(data, chain, state), indent=2))
    return path


def summary_json(data: dict[str, Any], chain: ChainStats, state: DemoState) -> dict[str, Any]:
    s = data["summary"]
    rows, total = local_volume(data)
    return {
        "households": len(state.households),
        "trading_start": state.trading_start.isoformat(),
        "trading_end": state.trading_end.isoformat(),
        "orders": state.orders,
        "orders_rejected": len(state.rejected),
        "trades": s["trades"],
        "settled": s["settled"],
        "volume_wh": s["volume_wh"],
        "delivered_wh": s["delivered_wh"],
        "share_of_demand_met_locally": s["share_of_demand_met_locally"],
        "transactions": chain.transactions,
        "gas": chain.gas,
        "gas_per_trade": chain.gas_per_trade(int(s["trades"])),
        "feasible_wh": total.feasible_wh,
        "delivered_over_contracted": _ratio(total.delivered_over_contracted),
        "share_of_feasible_delivered": _ratio(total.delivered_share),
        "share_of_feasible_contracted": _ratio(total.contracted_share),
        "slots": [
            {
                "slot_start": f.slot_start.isoformat(),
                "export_wh": f.export_wh,
                "import_wh": f.import_wh,
                "feasible_wh": f.feasible_wh,
                "contracted_wh": c,
                "delivered_wh": d,
            }
            for f, c, d in rows
        ],
    }


def _ratio(x: float | None) -> str | None:
    """A ratio to three decimals, None when it has no denominator (the text shows "-")."""
    return None if x is None else f"{x:.3f}"


# -- charts ---------------------------------------------------------------------------------------------


def draw_charts(data: dict[str, Any], state: DemoState, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    bands = data["bands"]
    x = [b["slot_start"] for b in bands]
    by_slot = {s["slot_start"]: s for s in data["summary"]["slots"]}

    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    ax.step(
        x,
        [float(b["retail"]) for b in bands],
        where="post",
        label="retail tariff (first tier, as in the savings)",
        color="#c0392b",
    )
    ax.step(x, [float(b["floor"]) for b in bands], where="post", label="feed-in price", color="#7f8c8d")
    traded = [(b["slot_start"], by_slot.get(b["slot_start"].isoformat())) for b in bands]
    points = [(t, s) for t, s in traded if s]
    if points:
        ax.vlines(
            [t for t, _ in points],
            [float(s["min_price"]) for _, s in points],
            [float(s["max_price"]) for _, s in points],
            color="#2471a3",
            linewidth=3,
        )
        ax.plot(
            [t for t, _ in points],
            [float(Decimal(s["value"]) * 1000 / s["volume_wh"]) for _, s in points],
            "o",
            color="#2471a3",
            label="local trades (average, range)",
        )
    ax.set_ylabel("coins per kWh")
    files["prices"] = _save(fig, ax, "Prices over the day", out_dir / "prices.png", dates=True)

    energy = data["energy"]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    keys = [b["slot_start"].isoformat() for b in bands]
    width = state.slot.total_seconds() / 86400 / 2.5  # matplotlib dates count in days
    edges = [*x, x[-1] + state.slot] if x else []  # steps span each whole slot

    def steps(field: str) -> list[float]:
        values = [energy[k][field] / 1000 for k in keys]
        return [*values, values[-1]] if values else []

    ax.step(edges, steps("pv_wh"), where="post", label="PV production (sites)", color="#f1c40f")
    ax.step(edges, steps("load_wh"), where="post", label="consumption (sites)", color="#8e44ad")
    ax.step(edges, steps("export_wh"), where="post", label="grid export (sites)", color="#7f8c8d")
    ax.bar(
        x,
        [by_slot.get(k, {}).get("volume_wh", 0) / 1000 for k in keys],
        width=width,
        label="traded locally",
        color="#27ae60",
        align="edge",
    )
    ax.set_ylabel("kWh per slot")
    files["energy"] = _save(fig, ax, "Community energy and local trade", out_dir / "energy.png", dates=True)

    hs = data["households"]
    fig, ax = plt.subplots(figsize=(9, max(3, 0.3 * len(hs) + 1)), dpi=110)
    labels = [h.name for h in hs]
    ax.barh(
        labels,
        [h.savings / 10**DECIMALS for h in hs],
        label="saved against the retail tariff",
        color="#27ae60",
    )
    ax.barh(
        labels,
        [h.extra / 10**DECIMALS for h in hs],
        left=[h.savings / 10**DECIMALS for h in hs],
        label="earned above the feed-in price",
        color="#f39c12",
    )
    ax.invert_yaxis()
    ax.set_xlabel("coins")
    files["savings"] = _save(
        fig, ax, "What each household gained by trading locally", out_dir / "savings.png"
    )
    return files


def _save(fig: Any, ax: Any, title: str, path: Path, *, dates: bool = False) -> str:
    """Titles the chart, writes it as PNG and frees it; returns the file name for the report."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.legend(loc="best")
    if dates:
        fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


# -- text -----------------------------------------------------------------------------------------------


def _kwh(wh: int) -> str:
    return f"{wh / 1000:,.1f}"


def _coins(units: int) -> str:
    return f"{Decimal(format_amount(units)):,.0f}"


def _local_volume_lines(data: dict[str, Any], gas_per_trade: int | None) -> list[str]:
    rows, t = local_volume(data)
    lines = [
        "## Local volume: feasible, contracted, delivered",
        "",
        "*Feasible* is what local trade could at most have moved: per slot the smaller of the community's "
        "grid export and grid import **without the market** (the same simulated sites, seed and start run "
        "again in self-consumption, no dispatch; consumers import their whole load), summed over the slots. "
        "*Contracted* is what the trades agreed; *delivered* is what settlement paid for, as metered.",
        "",
        "| | |",
        "|---|---:|",
        f"| feasible local volume | {_kwh(t.feasible_wh)} kWh |",
        f"| contracted | {_kwh(t.contracted_wh)} kWh |",
        f"| delivered (metered, settled) | {_kwh(t.delivered_wh)} kWh |",
        f"| **delivered / contracted** | **{_ratio(t.delivered_over_contracted) or '-'}** |",
        f"| **share of the feasible volume traded, by delivered energy** | **{_ratio(t.delivered_share) or '-'}** |",
        f"| share of the feasible volume traded, by contracted energy | {_ratio(t.contracted_share) or '-'} |",
        f"| gas per trade (everything the platform sent / trades) | {'-' if gas_per_trade is None else f'{gas_per_trade:,}'} |",
        "",
        "The shares can exceed 1: batteries discharged on command deliver energy that would otherwise have "
        "stayed in them, beyond what the community exported without the market.",
        "",
        "| slot (UTC) | export kWh (no market) | import kWh (no market) | feasible kWh | contracted kWh | "
        "delivered kWh |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f, c, d in rows:
        lines.append(
            f"| {f.slot_start:%m-%d %H:%M} | {_kwh(f.export_wh)} | {_kwh(f.import_wh)} | "
            f"{_kwh(f.feasible_wh)} | {_kwh(c)} | {_kwh(d)} |"
        )
    lines.append(
        f"| **total** | {_kwh(t.export_wh)} | {_kwh(t.import_wh)} | **{_kwh(t.feasible_wh)}** | "
        f"**{_kwh(t.contracted_wh)}** | **{_kwh(t.delivered_wh)}** |"
    )
    return lines


def render(data: dict[str, Any], chain: ChainStats, state: DemoState, charts: dict[str, str]) -> str:
    s, hs, opts = data["summary"], data["households"], state.options
    energy = data["energy"]
    pv = sum(v["pv_wh"] for v in energy.values())
    load = sum(v["load_wh"] for v in energy.values())
    imported = sum(v["import_wh"] for v in energy.values())
    exported = sum(v["export_wh"] for v in energy.values())
    delivered = int(s["delivered_wh"])  # the traded span's trades; statements cover whole months
    prosumers = sum(1 for h in hs if h.role == Role.prosumer)
    settled = int(s["settled"])
    gas_per_trade = chain.gas_per_trade(int(s["trades"]))
    lines = [
        "# ESSX community demo",
        "",
        f"{len(hs)} households ({prosumers} prosumers with PV and a battery, {len(hs) - prosumers} consumers) "
        f"traded for {opts.hours} h of energy time, {state.trading_start:%Y-%m-%d %H:%M} to "
        f"{state.trading_end:%Y-%m-%d %H:%M} UTC, in {opts.slot_minutes}-minute slots (call auction at gate "
        f"closure), at {opts.speed:g}x: {(time.time() - state.wall_trading) / 60:.1f} wall minutes. Every number "
        "below was read back from the service's public API and from the chain.",
        "",
        "## Energy",
        "",
        "| | kWh |",
        "|---|---:|",
        f"| PV produced by the sites | {_kwh(pv)} |",
        f"| consumed at the sites | {_kwh(load)} |",
        f"| sites' grid import | {_kwh(imported)} |",
        f"| sites' grid export | {_kwh(exported)} |",
        f"| contracted locally (trades) | {_kwh(int(s['volume_wh']))} |",
        f"| delivered and settled locally (metered) | {_kwh(delivered)} |",
        "",
        f"Share of the buy orders' energy met by local trades (contracted): "
        f"**{s['share_of_demand_met_locally'] or '-'}**. A trade pays only for the energy the seller's meter "
        "shows as exported in its slot (and a buyer's site as imported); the rest of the escrow goes back to "
        "the buyer.",
        "",
        f"![Community energy and local trade]({charts['energy']})",
        "",
        *_local_volume_lines(data, gas_per_trade),
        "",
        "## Market",
        "",
        f"Orders placed: {state.orders['buy']} buy, {state.orders['sell']} sell ({len(state.rejected)} refused by "
        f"the service, e.g. after a gate closed). Trades: {s['trades']} ({settled} settled), "
        f"{_kwh(int(s['volume_wh']))} kWh worth {Decimal(s['value']):,.0f} coins, average "
        f"{Decimal(s['average_price'] or 0):,.1f} coins/kWh.",
        "",
        f"![Prices over the day]({charts['prices']})",
        "",
        "Retail is the tariff's first tier, the one the households' savings below are counted against.",
        "",
        "| slot (UTC) | traded kWh | price min | price max | retail (first tier) | feed-in |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    by_slot = {x["slot_start"]: x for x in s["slots"]}
    for b in data["bands"]:
        x = by_slot.get(b["slot_start"].isoformat())
        traded = (
            f"{_kwh(x['volume_wh'])} | {Decimal(x['min_price']):,.1f} | {Decimal(x['max_price']):,.1f}"
            if x
            else "- | - | -"
        )
        lines.append(
            f"| {b['slot_start']:%m-%d %H:%M} | {traded} | {Decimal(b['retail']):,.1f} | {Decimal(b['floor']):,.1f} |"
        )
    lines += [
        "",
        "## Households",
        "",
        "Savings: what buyers did not pay against the retail tariff's first tier; extra income: what sellers "
        "earned above "
        "the feed-in price (both in coins, 1 coin = 1 KRW in the default tariff).",
        "",
        "| household | PV kW | battery kWh | PV kWh | used kWh | bought kWh | sold kWh | paid | received | saved | extra income |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in hs:
        lines.append(
            f"| {h.name} | {h.pv_kw} | {h.battery_kwh} | {_kwh(h.pv_wh) if h.role == 'prosumer' else '-'} | "
            f"{_kwh(h.load_wh) if h.role == 'prosumer' else '-'} | {_kwh(h.bought_wh)} | {_kwh(h.sold_wh)} | "
            f"{_coins(h.paid)} | {_coins(h.received)} | {_coins(h.savings)} | {_coins(h.extra)} |"
        )
    lines += [
        f"| **community** | | | {_kwh(sum(h.pv_wh for h in hs))} | {_kwh(sum(h.load_wh for h in hs))} | "
        f"{_kwh(sum(h.bought_wh for h in hs))} | {_kwh(sum(h.sold_wh for h in hs))} | "
        f"{_coins(sum(h.paid for h in hs))} | {_coins(sum(h.received for h in hs))} | "
        f"**{_coins(sum(h.savings for h in hs))}** | **{_coins(sum(h.extra for h in hs))}** |",
        "",
        f"![Savings]({charts['savings']})",
        "",
        "## On chain",
        "",
        f"{chain.transactions} transactions since the service started, {chain.gas:,} gas in all"
        + ("" if gas_per_trade is None else f", {gas_per_trade:,} gas per trade")
        + ". Every one was sent and paid for by the platform's relayer: no household held the chain's native "
        "coin. Wallets were funded by mints; buy orders sign their escrow authorisation, used on chain only "
        "when they match, in the batch that records the trades; trades are settled in batches; each slot's "
        "meter data is anchored once.",
        "",
        "| contract.function | transactions | gas |",
        "|---|---:|---:|",
    ]
    for key, (count, gas) in chain.by_call.items():
        lines.append(f"| {key} | {count} | {gas:,} |")
    if state.rejected:
        lines += ["", "## Orders the service refused", ""]
        lines += [f"- {text}" for text in state.rejected[:20]]
        if len(state.rejected) > 20:
            lines.append(f"- ... and {len(state.rejected) - 20} more")
    lines.append("")
    return "\n".join(lines)
