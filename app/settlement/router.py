"""Settlement decisions, price suggestions, monthly statements and the operator's market summary."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlmodel import col, func, or_, select

from app.api.deps import AdminUser, ContextDep, CurrentUser, SessionDep
from app.api.params import UtcTime
from app.audit import service as audit
from app.core import clock
from app.core.errors import AppError
from app.core.money import format_amount
from app.market.service import rules
from app.models import Order, Trade
from app.settlement import pricing, service

router = APIRouter(tags=["settlement"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])


class SettleDecision(BaseModel):
    rule: Literal["contracted", "measured"]
    reason: str = Field(min_length=3, max_length=500)


@admin_router.post("/slots/{slot_start}/settle", summary="Decide how an incomplete slot settles (admin)")
def settle_slot(
    slot_start: UtcTime, req: SettleDecision, ctx: ContextDep, session: SessionDep, admin: AdminUser
) -> dict[str, Any]:
    count, digest = service.decide(ctx, session, slot_start, req.rule, req.reason)
    audit.record(
        session,
        admin,
        "slot.settle",
        target=f"slot:{slot_start.isoformat()}",
        details={"rule": req.rule, "reason": req.reason, "trades": count, "decision_hash": digest},
    )
    return {
        "slot_start": slot_start.isoformat(),
        "rule": req.rule,
        "trades": count,
        "decision_hash": digest,
        "status": "settling",
    }


# -- price suggestion (the whitepaper's oracle) --------------------------------------------------------


@router.get("/market/price", summary="A suggested limit price for a slot")
def price_suggestion(
    slot_start: UtcTime,
    side: Literal["buy", "sell"],
    ctx: ContextDep,
    session: SessionDep,
    user: CurrentUser,
) -> dict[str, Any]:
    return pricing.suggest(ctx, session, user.id or 0, slot_start, side)


# -- statements --------------------------------------------------------------------------------------


def _month_range(month: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise AppError("month must be YYYY-MM") from None
    if start > clock.now():
        raise AppError(f"{month} is in the future")
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


@router.get("/statements", summary="Your monthly statement (JSON, or CSV with Accept: text/csv)")
def statement(
    month: str,
    ctx: ContextDep,
    session: SessionDep,
    user: CurrentUser,
    accept: str | None = Header(default=None),
) -> Any:
    start, end = _month_range(month)
    trades = list(
        session.exec(
            select(Trade)
            .where(
                or_(col(Trade.buyer_id) == user.id, col(Trade.seller_id) == user.id),
                col(Trade.slot_start) >= start,
                col(Trade.slot_start) < end,
            )
            .order_by(col(Trade.slot_start))
        )
    )
    tariff = rules(ctx).tariff
    # Settled and pending trades are summed apart: before settlement nothing is paid or earned yet, and a
    # pending trade's contracted energy and escrow are promises, not figures of the month.
    bought_wh = sold_wh = paid = received = refunded = penalised = savings = extra = settled = 0
    pending = {"trades": 0, "bought_wh": 0, "sold_wh": 0, "in_escrow": 0, "expected_income": 0}
    rows = []
    for t in trades:
        side = "buy" if t.buyer_id == user.id else "sell"
        if t.status != "settled":
            pending["trades"] += 1
            if side == "buy":
                pending["bought_wh"] += t.quantity_wh
                pending["in_escrow"] += t.value
            else:
                pending["sold_wh"] += t.quantity_wh
                pending["expected_income"] += t.value
        else:
            settled += 1
            wh = t.delivered_wh or 0
            if side == "buy":
                bought_wh += wh
                paid += t.paid or 0
                refunded += t.refunded or 0
                savings += wh * (tariff.retail_price(t.slot_start, 0) - t.price) // 1000
            else:
                sold_wh += wh
                received += t.paid or 0
                penalised += t.penalty or 0
                extra += wh * (t.price - tariff.floor(t.slot_start)) // 1000
        rows.append(
            [
                t.slot_start.isoformat(),
                side,
                t.id,
                t.quantity_wh,
                t.delivered_wh if t.status == "settled" else "",
                format_amount(t.price),
                t.status,
                format_amount(t.paid or 0),
                format_amount(t.refunded or 0),
                format_amount(t.penalty or 0),
            ]
        )
    body = {
        "month": month,
        "bought_wh": bought_wh,
        "sold_wh": sold_wh,
        "coins_paid": format_amount(paid),
        "coins_received": format_amount(received),
        "coins_refunded": format_amount(refunded),
        "coins_penalised": format_amount(penalised),
        "average_buy_price": format_amount(paid * 1000 // bought_wh) if bought_wh else None,
        "average_sell_price": format_amount(received * 1000 // sold_wh) if sold_wh else None,
        "savings_vs_retail": format_amount(savings),
        "extra_income_vs_feed_in": format_amount(extra),
        "trades": len(trades),
        "settled_trades": settled,
        "pending": {
            "trades": pending["trades"],
            "bought_wh": pending["bought_wh"],
            "sold_wh": pending["sold_wh"],
            "coins_in_escrow": format_amount(pending["in_escrow"]),
            "expected_income": format_amount(pending["expected_income"]),
        },
        "note": "figures at the top level count settled trades only (metered delivery, coins paid); "
        "`pending` holds the contracted, not yet settled trades",
    }
    if accept and "text/csv" in accept:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(
            [
                "slot_start",
                "side",
                "trade_id",
                "contracted_wh",
                "delivered_wh",
                "price",
                "status",
                "paid",
                "refunded",
                "penalty",
            ]
        )
        w.writerows(rows)
        w.writerow([])
        for k, v in body.items():
            for name, value in v.items() if isinstance(v, dict) else [(None, v)]:
                w.writerow([f"{k}_{name}" if name else k, value])
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="statement-{month}.csv"'},
        )
    return body


@admin_router.get("/market/summary", summary="Market volume, value and prices over a period (admin)")
def market_summary(
    session: SessionDep, _admin: AdminUser, from_: Annotated[UtcTime, Query(alias="from")], to: UtcTime
) -> dict[str, Any]:
    trades = list(
        session.exec(select(Trade).where(col(Trade.slot_start) >= from_, col(Trade.slot_start) < to))
    )
    demand = int(
        session.exec(
            select(func.coalesce(func.sum(Order.quantity_wh), 0)).where(
                col(Order.side) == "buy",
                col(Order.slot_start) >= from_,
                col(Order.slot_start) < to,
                col(Order.status).in_(("open", "filled", "expired", "cancelled")),
            )
        ).one()
    )
    volume = sum(t.quantity_wh for t in trades)
    value = sum(t.value for t in trades)
    by_slot: dict[str, dict[str, Any]] = {}
    for t in trades:
        s = by_slot.setdefault(t.slot_start.isoformat(), {"volume_wh": 0, "value": 0, "prices": set()})
        s["volume_wh"] += t.quantity_wh
        s["value"] += t.value
        s["prices"].add(t.price)
    return {
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "trades": len(trades),
        "volume_wh": volume,
        "value": format_amount(value),
        "average_price": format_amount(value * 1000 // volume) if volume else None,
        "demand_wh": demand,
        "share_of_demand_met_locally": f"{volume / demand:.3f}" if demand else None,
        "settled": sum(1 for t in trades if t.status == "settled"),
        "pending": sum(1 for t in trades if t.status != "settled"),
        "slots": [
            {
                "slot_start": k,
                "volume_wh": v["volume_wh"],
                "value": format_amount(v["value"]),
                "min_price": format_amount(min(v["prices"])),
                "max_price": format_amount(max(v["prices"])),
            }
            for k, v in sorted(by_slot.items())
        ],
    }
