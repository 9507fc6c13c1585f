"""Readiness checks: the database, the chain, our contracts and the relayer's balance."""

from __future__ import annotations

from prometheus_client import Gauge
from sqlalchemy import text
from sqlmodel import Session

from app.context import Context
from app.core.money import format_amount, parse_amount
from app.ops.schemas import Readiness, RelayerCheck

RELAYER_BALANCE = Gauge("essx_relayer_balance_kei", "Native balance of the relayer account")
CHAIN_HEAD = Gauge("essx_chain_head_block", "Latest block seen by /readyz")


def readiness(ctx: Context) -> Readiness:
    ready = Readiness(status="ok")
    ok = True
    try:
        with Session(ctx.engine) as s:
            s.exec(text("SELECT 1"))  # type: ignore[call-overload]
        ready.database = "ok"
    except Exception as exc:
        ok, ready.database = False, f"error: {type(exc).__name__}"
    try:
        chain_id = int(ctx.w3.eth.chain_id)
        ready.chain = "ok"
        ready.chain_id = chain_id
        if chain_id != ctx.settings.expected_chain_id:
            ok, ready.chain = (
                False,
                f"wrong chain id {chain_id}, expected {ctx.settings.expected_chain_id}",
            )
        head = int(ctx.w3.eth.block_number)
        CHAIN_HEAD.set(head)
        ready.block_number = head
        code = ctx.w3.eth.get_code(ctx.coin.address)
        ready.contracts = "ok" if len(code) > 0 else "missing"
        ok = ok and len(code) > 0
        balance = ctx.relayer.balance()
        RELAYER_BALANCE.set(balance)
        minimum = parse_amount(ctx.settings.relayer_min_balance, allow_zero=True)
        ready.relayer = RelayerCheck(address=ctx.relayer.address, balance=format_amount(balance))
        if balance < minimum:
            ready.relayer.alert = f"balance below {ctx.settings.relayer_min_balance}: top it up"
            ok = False
    except Exception as exc:
        ok, ready.chain = False, f"unreachable: {type(exc).__name__}"
    if ctx.settings.demo_sites_failure:  # `essx run` could not start its simulated sites
        ok, ready.demo_sites = False, ctx.settings.demo_sites_failure
    ready.status = "ok" if ok else "unavailable"
    return ready
