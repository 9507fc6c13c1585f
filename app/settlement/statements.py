"""Monthly statements (JSON and CSV) and the operator's market summary: read-only views of the trades."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, or_, select

from app.context import Context
from app.core.errors import AppError
from app.core.money import format_amount
from app.market.models import Order, OrderSide, OrderStatus, Trade, TradeStatus
from app.market.service import rules
from common import clock

# Buy orders that entered the book (the demand the market saw), whatever became of them.
PLACED = (OrderStatus.open, OrderStatus.filled, OrderStatus.expired, OrderStatus.cancelled)


def month_range(month: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise AppError("month must be YYYY-MM") from None
    if start > clock.now():
        raise AppError(f"{month} is in the future")
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def monthly(
    ctx: Context, session: Session, user_id: int, month: str
) -> tuple[dict[str, Any], list[list[Any]]]:
    """The statement's figures and one row per trade of `user_id` in `month` (YYYY-MM)."""
    start, end = month_range(month)
    trades = list(
        session.exec(
            select(Trade)
            .where(
                or_(col(Trade.buyer_id) == user_id, col(Trade.seller_id) == user_id),
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
        side = OrderSide.buy if t.buyer_id == user_id else OrderSide.sell
        if t.status != TradeStatus.settled:
            pending["trades"] += 1
            if side == OrderSide.buy:
                pending["bought_wh"] += t.quantity_wh
                pending["in_escrow"] += t.value
            else:
                pending["sold_wh"] += t.quantity_wh
                pending["expected_income"] += t.value
        else:
            settled += 1
            wh = t.delivered_wh or 0
            if side == OrderSide.buy:
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
                t.delivered_wh if t.status == TradeStatus.settled else "",
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
    return body, rows


def as_csv(body: dict[str, Any], rows: list[list[Any]]) -> str:
    """One line per trade, a blank line, then the figures as name,value lines."""
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
    return buf.getvalue()


def market_summary(session: Session, from_: datetime, to: datetime) -> dict[str, Any]:
    trades = list(
        session.exec(select(Trade).where(col(Trade.slot_start) >= from_, col(Trade.slot_start) < to))
    )
    demand = int(
        session.exec(
            select(func.coalesce(func.sum(Order.quantity_wh), 0)).where(
                col(Order.side) == OrderSide.buy,
                col(Order.slot_start) >= from_,
                col(Order.slot_start) < to,
                col(Order.status).in_(PLACED),
            )
        ).one()
    )
    volume = sum(t.quantity_wh for t in trades)
    value = sum(t.value for t in trades)
    # Metered delivery of the settled trades of this span (at most what they contracted).
    delivered = sum(t.delivered_wh or 0 for t in trades if t.status == TradeStatus.settled)
    by_slot: dict[str, dict[str, Any]] = {}
    for t in trades:
        s = by_slot.setdefault(
            t.slot_start.isoformat(), {"volume_wh": 0, "delivered_wh": 0, "value": 0, "prices": set()}
        )
        s["volume_wh"] += t.quantity_wh
        s["delivered_wh"] += (t.delivered_wh or 0) if t.status == TradeStatus.settled else 0
        s["value"] += t.value
        s["prices"].add(t.price)
    return {
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "trades": len(trades),
        "volume_wh": volume,
        "delivered_wh": delivered,
        "value": format_amount(value),
        "average_price": format_amount(value * 1000 // volume) if volume else None,
        "demand_wh": demand,
        "share_of_demand_met_locally": f"{volume / demand:.3f}" if demand else None,
        "settled": sum(1 for t in trades if t.status == TradeStatus.settled),
        "pending": sum(1 for t in trades if t.status != TradeStatus.settled),
        "slots": [
            {
                "slot_start": k,
                "volume_wh": v["volume_wh"],
                "delivered_wh": v["delivered_wh"],
                "value": format_amount(v["value"]),
                "min_price": format_amount(min(v["prices"])),
                "max_price": format_amount(max(v["prices"])),
            }
            for k, v in sorted(by_slot.items())
        ],
    }
