"""`essx demo`: a community of households trading for a simulated day, through the public API.

It starts its own ESSX service (`essx run` in its own data folder, so a real installation never sees the
made-up households) whose energy clock runs ``speed`` times faster than the wall clock
(common/clock.py), serves the households' simulated sites over Modbus TCP on the same clock, registers
and funds the community, and lets one automatic trader per household place orders around the price
suggestion. The collector, the market, the chain and settlement are the real ones. At the end it writes a
report (docs/demo.md explains it).

The simulated period lies in the past and ends about when the demo does: the chain's clock is the wall
clock, and nothing on chain may look as if it happened before it was mined.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from app.core.money import format_amount, parse_amount
from app.demo import community as cm
from app.demo.options import DemoOptions, Traders
from app.demo.service import ServiceHandle, child_service
from app.market.models import OrderSide
from app.users.models import Role
from common.clock import EnergyClock, slot_start
from ess_collector.simulator import SimulatorCluster, ThreadedCluster
from wallet.chain import connect

NEVER = datetime.min.replace(tzinfo=UTC)
ADMIN_EMAIL = "operator@essx-demo.example.com"
ADMIN_PASSWORD = "demo-operator-password"


@dataclass
class DemoState:
    """What the run learned; the report is written from it and from the API."""

    options: DemoOptions
    clock: EnergyClock
    households: list[cm.Household]
    trading_start: datetime = NEVER
    trading_end: datetime = NEVER
    first_block: int = 0
    wall_started: float = field(default_factory=time.time)
    wall_trading: float = 0.0
    orders: dict[str, int] = field(default_factory=lambda: {"buy": 0, "sell": 0})
    rejected: list[str] = field(default_factory=list)
    admin_token: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def slot(self) -> timedelta:
        return timedelta(minutes=self.options.slot_minutes)

    def note_rejection(self, text: str) -> None:
        with self.lock:
            self.rejected.append(text)


def align(t: datetime, slot: timedelta) -> datetime:
    return slot_start(t, int(slot.total_seconds()) // 60)


def plan_clock(opts: DemoOptions, wall_now: float, setup_wall_s: float) -> EnergyClock:
    """Energy time at ``wall_now``: far enough before the first traded slot for the setup (warm-up, in
    which the collector already reads the sites), and by default far enough back that the traded hours
    end no later than the wall clock."""
    slot = timedelta(minutes=opts.slot_minutes)
    warm_up = timedelta(seconds=setup_wall_s * opts.speed) + slot
    if opts.start is not None:
        start = align(opts.start.astimezone(UTC) - warm_up, slot)
    else:
        start = align(
            datetime.fromtimestamp(wall_now, UTC) - warm_up - timedelta(hours=opts.hours) - slot, slot
        )
    return EnergyClock(speed=opts.speed, start=start, anchor=wall_now)


def service_env(opts: DemoOptions, clock: EnergyClock) -> dict[str, str]:
    assert clock.start is not None
    poll_step = opts.poll_interval_s * opts.speed  # energy seconds between two polls
    return {
        "ESSX_CLOCK_SPEED": f"{opts.speed:g}",
        "ESSX_CLOCK_START": clock.start.isoformat(),
        "ESSX_CLOCK_ANCHOR": repr(clock.anchor),
        "ESSX_SLOT_MINUTES": str(opts.slot_minutes),
        "ESSX_POLL_INTERVAL_SECONDS": f"{opts.poll_interval_s:g}",
        "ESSX_COLLECTOR_TIMEOUT_SECONDS": "0.5",
        "ESSX_COLLECTOR_MAX_GAP_SECONDS": f"{max(60.0, 3 * poll_step):g}",
        "ESSX_COLLECTOR_JOB_SECONDS": "1",
        "ESSX_ANCHOR_GRACE_SECONDS": "60",
        "ESSX_GATE_CLOSURE_MINUTES": str(opts.gate_minutes),
        "ESSX_MARKET_MECHANISM": "call",
        "ESSX_DEMO_SITES": "0",
        "ESSX_LOCAL_BLOCK_TIME": "1",
        "ESSX_COLLECTOR_ENABLED": "true",
    }


KEEP_ALIVE = httpx.Limits(keepalive_expiry=2.0)


class Api:
    """A thin client of the public API that raises with the service's own error text."""

    def __init__(self, base: str) -> None:
        # idle connections are dropped before uvicorn's 5-second keep-alive ends: reusing one the server is
        # closing at that moment fails with "connection reset"
        self.http = httpx.Client(base_url=f"{base}/api/v1", timeout=60, limits=KEEP_ALIVE)

    def call(self, method: str, path: str, token: str = "", **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(5):
            try:
                r = self.http.request(method, path, headers=headers, **kw)
            except httpx.TransportError:
                if method != "GET" or attempt == 4:  # only reads are repeated blindly
                    raise
                time.sleep(0.5)
                continue
            if r.status_code == 503 and attempt < 4:  # a busy database asks to retry
                time.sleep(float(r.headers.get("Retry-After", "0.5")))
                continue
            break
        if r.status_code >= 400:
            raise ApiError(r.status_code, f"{method} {path}: {r.status_code} {r.text[:300]}")
        return (
            r.json()
            if r.content and r.headers.get("content-type", "").startswith("application/json")
            else None
        )

    def login(self, email: str, password: str) -> str:
        body = self.call("POST", "/auth/token", data={"username": email, "password": password})
        return str(body["access_token"])

    def close(self) -> None:
        self.http.close()


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


# -- setting the community up ----------------------------------------------------------------------------


def setup_community(
    api: Api, svc: ServiceHandle, state: DemoState, ports: list[int], pool: ThreadPoolExecutor
) -> None:
    admin = state.admin_token = svc.admin_token(ADMIN_EMAIL, ADMIN_PASSWORD)
    prosumers = [h for h in state.households if h.role == Role.prosumer]
    for h, port in zip(prosumers, ports, strict=True):
        h.port = port

    def join(h: cm.Household) -> None:
        api.call(  # answers alike whether or not the email had an account: the account is read below
            "POST",
            "/auth/register",
            json={"email": h.email, "password": cm.PASSWORD, "display_name": h.name, "role": h.role},
        )
        h.token = api.login(h.email, cm.PASSWORD)
        user = api.call("GET", "/users/me", h.token)
        h.user_id = int(user["id"])
        if user["status"] != "approved":  # consumers need no approval; prosumers do
            api.call("POST", f"/admin/users/{h.user_id}/approve", admin)
        api.call("POST", "/wallets", h.token, json={"pin": cm.PIN})
        api.call(
            "POST",
            "/admin/coin/mint",
            admin,
            json={"to": h.user_id, "amount": state.options.funding, "memo": "demo funding"},
            headers={"Idempotency-Key": f"demo-fund-{h.index}"},
        )
        if h.config is not None:
            site = api.call(
                "POST",
                "/sites",
                h.token,
                json={
                    "name": f"{h.name.split(' (')[0]} PV + ESS",
                    "host": "127.0.0.1",
                    "port": h.port,
                    "device_id": 1,
                    "pv_nameplate_w": h.config.pv_peak_w,
                    "battery_capacity_wh": h.config.capacity_wh,
                    "reserve_soc_pct": h.config.reserve_pct,
                    "max_charge_w": h.config.max_charge_w,
                    "max_discharge_w": h.config.max_discharge_w,
                },
            )
            h.site_id = int(site["id"])
        if state.options.traders == Traders.automatic:
            enable_agent(api, state, h)

    list(pool.map(join, state.households))


def enable_agent(api: Api, state: DemoState, h: cm.Household) -> None:
    """The household's trading profile: the platform's agent trades for it, following the price
    suggestion; a consumer states its mean expected use per slot."""
    opts = state.options
    use = None
    if h.config is None:
        day = [
            state.clock.now().replace(hour=0, minute=0, second=0, microsecond=0) + k * state.slot
            for k in range(24 * 60 // opts.slot_minutes)
        ]
        use = sum(cm.consumer_load_wh(opts.seed, h.index, s, opts.slot_minutes) for s in day) // len(day)
    api.call(
        "PUT",
        "/trading/profile",
        h.token,
        json={
            "enabled": True,
            "site_id": h.site_id,
            "reserve_pct": h.config.reserve_pct if h.config is not None else 0,
            "max_wh_per_slot": 100_000,
            "expected_use_wh": use,
            "daily_limit": opts.funding,
            "pin": cm.PIN,
        },
    )


# -- trading -------------------------------------------------------------------------------------------


def trade_slot(api: Api, state: DemoState, h: cm.Household, slot_start: datetime, rng: random.Random) -> None:
    """One household's decision for one slot: an order around the suggested price, authorised with the
    PIN when it is a purchase (the escrow lock is relayed gas-free)."""
    opts = state.options
    slot_iso = slot_start.isoformat()
    supply = None
    if h.site_id is not None:
        supply = api.call("GET", f"/sites/{h.site_id}/supply", h.token, params={"slot_start": slot_iso})
    load = (
        cm.consumer_load_wh(opts.seed, h.index, slot_start, opts.slot_minutes) if h.config is None else None
    )
    intent = cm.decide(h, supply, load)
    if intent is None:
        return
    suggestion = api.call(
        "GET", "/market/price", h.token, params={"slot_start": slot_iso, "side": intent.side}
    )
    floor = parse_amount(suggestion["band"]["floor"])
    ceiling = parse_amount(suggestion["retail_price"])  # the household's own tier: never above it
    price = cm.limit_price(parse_amount(suggestion["suggested_price"]), floor, ceiling, intent.side, rng)
    body: dict[str, Any] = {
        "side": intent.side,
        "slot_start": slot_iso,
        "quantity_wh": intent.quantity_wh,
        "limit_price": format_amount(price),
    }
    if intent.side == OrderSide.sell:
        body["site_id"] = h.site_id
    try:
        order = api.call("POST", "/orders", h.token, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        if intent.side == OrderSide.buy:
            api.call("POST", f"/orders/{order['id']}/authorize", h.token, json={"pin": cm.PIN})
    except ApiError as exc:  # e.g. a gate that closed meanwhile, or not enough coins left: the trader skips
        if exc.status >= 500:
            raise
        state.note_rejection(str(exc))
        return
    with state.lock:
        state.orders[intent.side] += 1
        h.orders.append(order["id"])


def market_counts(api: Api, state: DemoState) -> tuple[int, int, int]:
    """(trades, settled, pending) in the traded period, from the operator's summary."""
    s = api.call(
        "GET",
        "/admin/market/summary",
        state.admin_token,
        params={"from": state.trading_start.isoformat(), "to": state.trading_end.isoformat()},
    )
    return int(s["trades"]), int(s["settled"]), int(s["pending"])


def run_market(api: Api, state: DemoState, pool: ThreadPoolExecutor, console: Console) -> None:
    opts, clock, slot = state.options, state.clock, state.slot
    gate = timedelta(minutes=opts.gate_minutes)
    # Orders must be in, and buyers' escrows authorised, before the gate; leave a wall second for it.
    margin = gate + timedelta(seconds=1.5 * opts.speed)
    first = align(clock.now(), slot) + slot
    if opts.start is not None:
        first = max(first, align(opts.start, slot))
    while clock.now() > first - margin:
        first += slot
    state.trading_start, state.trading_end = first, first + timedelta(hours=opts.hours)
    state.wall_trading = time.time()
    rng = random.Random(opts.seed)
    traded: set[datetime] = set()
    agents_stopped = False
    futures: list[Any] = []
    total = (state.trading_end - state.trading_start).total_seconds()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[sim]}"),
        TextColumn(
            "trades {task.fields[trades]} · settled {task.fields[settled]} · orders {task.fields[orders]}"
        ),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("simulated day", total=total, sim="", trades=0, settled=0, orders=0)
        last_count = 0.0
        counts = (0, 0, 0)
        while True:
            now = clock.now()
            nxt = align(now, slot) + slot
            for s in (nxt, nxt + slot):  # this slot's successor and the one after, while their gate is open
                manual = opts.traders == Traders.manual
                if (
                    manual
                    and state.trading_start <= s < state.trading_end
                    and s not in traded
                    and now < s - margin
                ):
                    traded.add(s)
                    seeds = [rng.randrange(2**32) for _ in state.households]
                    futures += [
                        pool.submit(trade_slot, api, state, h, s, random.Random(k))
                        for h, k in zip(state.households, seeds, strict=True)
                    ]
            for f in [f for f in futures if f.done()]:
                futures.remove(f)
                f.result()  # a server error stops the demo with its message
            if time.monotonic() - last_count > 1.0:
                counts = market_counts(api, state)
                last_count = time.monotonic()
            done = min(total, max(0.0, (now - state.trading_start).total_seconds()))
            progress.update(
                task,
                completed=done,
                sim=f"{min(now, state.trading_end):%Y-%m-%d %H:%M} UTC",
                trades=counts[0],
                settled=counts[1],
                orders=sum(state.orders.values()),
            )
            if opts.traders == Traders.automatic and not agents_stopped and now >= state.trading_end - margin:
                # the traded period ends: the agents stop, cancelling their orders for later slots
                agents_stopped = True
                futures += [
                    pool.submit(api.call, "DELETE", "/trading/profile", h.token) for h in state.households
                ]
            if now >= state.trading_end + timedelta(minutes=opts.slot_minutes / 2) and not futures:
                break
            time.sleep(0.2)
        # The last slots are anchored and settled a few wall seconds after they end.
        wait = progress.add_task("settling the last slots", total=None, sim="", trades=0, settled=0, orders=0)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = market_counts(api, state)
            progress.update(wait, trades=counts[0], settled=counts[1], orders=sum(state.orders.values()))
            if counts[2] == 0 and clock.now() > state.trading_end + 4 * slot:
                break
            time.sleep(1.0)
        progress.update(wait, total=1, completed=1)
    if opts.traders == Traders.automatic:
        count_agent_orders(api, state)


def count_agent_orders(api: Api, state: DemoState) -> None:
    """The orders the households' agents placed in the traded period (repriced ones count each time)."""
    for h in state.households:
        for o in api.call("GET", "/orders", h.token)["items"]:
            if (
                state.trading_start.isoformat()
                <= o["slot_start"].replace("Z", "+00:00")
                < state.trading_end.isoformat()
            ):
                state.orders[o["side"]] += 1
                h.orders.append(o["id"])


def run_demo(
    opts: DemoOptions, console: Console, *, on_ready: Callable[[ServiceHandle, DemoState], None] | None = None
) -> Path:
    """Runs the whole demo; returns the report's path."""
    from app.demo.report import write_report

    opts.check()
    households = cm.plan_community(opts.households, seed=opts.seed, consumer_share=opts.consumer_share)
    setup_estimate = 12 + 1.0 * opts.households  # wall seconds to start the service and register everyone
    clock = plan_clock(opts, time.time() + 5, setup_estimate)
    state = DemoState(opts, clock, households)
    if opts.data_dir.exists():
        shutil.rmtree(opts.data_dir)  # the demo's own folder: a fresh community each time
    out_dir = opts.out_dir or opts.data_dir / "report"
    prosumers = [h for h in households if h.config is not None]
    assert clock.start is not None
    sites = SimulatorCluster(
        len(prosumers),
        seed=opts.seed,
        start=clock.start,
        speed=opts.speed,
        anchor=clock.anchor,
        configs=[h.config for h in prosumers if h.config is not None],
    )
    console.print(
        f"[bold]ESSX community demo[/]: {len(prosumers)} prosumers and {len(households) - len(prosumers)} "
        f"consumers, {opts.hours} h at {opts.speed:g}x ({opts.slot_minutes}-minute slots)"
    )
    with (
        ThreadedCluster(sites) as cluster,
        ThreadPoolExecutor(opts.workers) as pool,
        child_service(opts.data_dir, service_env(opts, clock)) as svc,
    ):
        api = Api(svc.base)
        try:
            console.print(f"service at {svc.base} (dashboard: {svc.base}/), setting up the community ...")
            state.first_block = _block_number(svc.chain_url)
            setup_community(api, svc, state, cluster.ports, pool)
            console.print(
                f"community ready in {time.time() - state.wall_started:.0f} s; energy time is now "
                f"{clock.now():%Y-%m-%d %H:%M} UTC"
            )
            run_market(api, state, pool, console)
            report = write_report(api, svc, state, out_dir)
            console.print(f"[green]report written[/]: {report}")
            if on_ready is not None:
                on_ready(svc, state)
            if opts.keep_running:
                console.print(
                    f"the demo service keeps running at {svc.base}/ (operator {ADMIN_EMAIL} / "
                    f"{ADMIN_PASSWORD}; households {households[0].email} ... / {cm.PASSWORD}); Ctrl-C stops it"
                )
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
        finally:
            api.close()
    return report


def _block_number(chain_url: str) -> int:
    return int(connect([chain_url]).eth.block_number)
