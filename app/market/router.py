"""Market routes: rules, the public book, orders, trades."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlmodel import col, or_, select

from app.api.deps import ContextDep, IdempotencyKey, SessionDep
from app.api.params import UtcTime
from app.coin.service import latest_hash
from app.core.errors import NotFound
from app.core.money import format_amount
from app.market import service
from app.market.models import Order, OrderSide, OrderStatus, Trade, TradeStatus
from app.market.onchain import order_hash
from app.market.schemas import (
    BookPublic,
    MarketInfo,
    OrderAuthorize,
    OrderCreate,
    OrderList,
    OrderPublic,
    TradeList,
    TradePublic,
)
from app.users.deps import BearerToken, CurrentUser, as_user
from app.users.models import User
from common import clock
from wallet.models import OutgoingTx

router = APIRouter(tags=["market"])


@router.get("/market", summary="The market's rules, tariff and the next slots", response_model=MarketInfo)
def market_info(ctx: ContextDep) -> MarketInfo:
    r = service.rules(ctx)
    now = clock.now()
    first = r.slot_of(now) + r.slot
    slots = []
    for i in range(4):
        start = first + i * r.slot
        floor, ceiling = r.band(start)
        slots.append(
            {
                "slot_start": start.isoformat(),
                "gate_closure": r.gate_closure(start).isoformat(),
                "floor": format_amount(floor),
                "ceiling": format_amount(ceiling),
                "period": r.tariff.period(start).name,
            }
        )
    return MarketInfo(
        slot_minutes=r.slot_minutes,
        gate_closure_minutes=r.gate_closure_minutes,
        horizon_hours=r.horizon_hours,
        mechanism="continuous pay-as-bid"
        if r.mechanism == "continuous"
        else "uniform-price call auction at gate closure",
        price_unit="coins per kWh",
        tariff={
            "tiers": [{"up_to_kwh": t.up_to_kwh, "price": format_amount(t.price)} for t in r.tariff.tiers],
            "summer_tiers": [
                {"up_to_kwh": t.up_to_kwh, "price": format_amount(t.price)} for t in r.tariff.summer_tiers
            ],
            "summer_months": list(r.tariff.summer_months),
            "periods": [
                {
                    "name": p.name,
                    "start_hour": p.start_hour,
                    "end_hour": p.end_hour,
                    "feed_in_price": format_amount(p.feed_in_price),
                }
                for p in r.tariff.periods
            ],
            "utc_offset_hours": r.tariff.utc_offset_hours,
        },
        next_slots=slots,
    )


@router.get("/market/book", summary="The public order book of one slot", response_model=BookPublic)
def market_book(slot_start: UtcTime, ctx: ContextDep, session: SessionDep) -> BookPublic:
    return service.book(ctx, session, slot_start)


# The two placement routes are `async` and make one thread-pool call each, for the user and the work
# (`as_user`), as the transfer routes do: a `CurrentUser` dependency and a plain `def` route took two hops
# per request. The answer is rendered here once; a returned model would be validated again against
# `response_model`.
@router.post(
    "/orders",
    summary="Place a buy or sell order for a delivery slot",
    response_model=OrderPublic,
    status_code=201,
)
async def place_order(
    req: OrderCreate, ctx: ContextDep, session: SessionDep, token: BearerToken, key: IdempotencyKey = None
) -> JSONResponse:
    status, body = await as_user(session, token, lambda user: service.create(ctx, session, user, req, key))
    return JSONResponse(status_code=status, content=body)


@router.post(
    "/orders/{order_id}/authorize",
    summary="Authorise an order's escrow (PIN and code, or a signature)",
    response_model=OrderPublic,
)
async def authorize_order(
    order_id: str, req: OrderAuthorize, ctx: ContextDep, session: SessionDep, token: BearerToken
) -> JSONResponse:
    def work(user: User) -> dict[str, Any]:
        order = service.authorize(ctx, session, user, order_id, req)
        return service.to_public(session, ctx, order).model_dump(mode="json")

    return JSONResponse(content=await as_user(session, token, work))


@router.delete(
    "/orders/{order_id}", summary="Cancel an open order and release its escrow", response_model=OrderPublic
)
def cancel_order(order_id: str, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> OrderPublic:
    return service.to_public(session, ctx, service.cancel(ctx, session, user, order_id))


@router.get("/orders/{order_id}", summary="One of your orders", response_model=OrderPublic)
def get_order(order_id: str, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> OrderPublic:
    return service.to_public(session, ctx, service.get_own(session, user, order_id))


@router.get("/orders", summary="Your orders", response_model=OrderList)
def list_orders(
    ctx: ContextDep,
    session: SessionDep,
    user: CurrentUser,
    status: Annotated[str | None, Query(max_length=24)] = None,
    slot_start: UtcTime | None = None,
) -> OrderList:
    return OrderList(
        items=[
            service.to_public(session, ctx, o) for o in service.list_own(session, user, status, slot_start)
        ]
    )


@router.get("/offers", summary="Direct offers naming you", response_model=OrderList)
def direct_offers(ctx: ContextDep, session: SessionDep, user: CurrentUser) -> OrderList:
    """Direct offers naming the caller; accept one by placing the opposite order with counterpart_id set."""
    rows = session.exec(
        select(Order)
        .where(col(Order.counterpart_id) == user.id, col(Order.status) == OrderStatus.open)
        .order_by(col(Order.slot_start))
    ).all()
    return OrderList(items=[service.to_public(session, ctx, o) for o in rows])


def trade_public(session: SessionDep, t: Trade, user: User) -> TradePublic:
    def tx_hash(tx_id: int | None) -> str | None:
        if tx_id is None:
            return None
        tx = session.get(OutgoingTx, tx_id)
        return (tx.tx_hash if tx and tx.tx_hash else None) or latest_hash(session, tx_id)

    buy, sell = session.get(Order, t.buy_order_id), session.get(Order, t.sell_order_id)

    def h(o: Order | None) -> str:
        if o is None:
            return ""
        return "0x" + order_hash(o.id, o.user_id, o.side, o.slot_start, o.quantity_wh, o.limit_price).hex()

    return TradePublic(
        id=t.id,
        slot_start=t.slot_start,
        quantity_wh=t.quantity_wh,
        price=format_amount(t.price),
        value=format_amount(t.value),
        status=t.status,
        side=OrderSide.buy if t.buyer_id == user.id else OrderSide.sell,
        buy_order_id=t.buy_order_id,
        sell_order_id=t.sell_order_id,
        buy_order_hash=h(buy),
        sell_order_hash=h(sell),
        orders_hash=t.orders_hash,
        record_tx_hash=tx_hash(t.record_tx_id),
        trade_no=t.trade_no,
        contracted_wh=t.quantity_wh,
        measured_wh=t.measured_wh,
        settled_wh=t.delivered_wh if t.status == TradeStatus.settled else None,
        paid=format_amount(t.paid) if t.paid is not None else None,
        refunded=format_amount(t.refunded) if t.refunded is not None else None,
        penalty=format_amount(t.penalty) if t.penalty is not None else None,
        settle_rule=t.settle_rule,
        settle_tx_hash=tx_hash(t.settle_tx_id),
        refund_proof=(
            {
                "trade_no": t.trade_no,
                "batch_no": t.batch_no,
                "seller": (t.proof or {}).get("seller"),
                "buyer": (t.proof or {}).get("buyer"),  # the leaf's: zero when the escrow is stored
                "leaf": (t.proof or {}).get("leaf"),
                "proof": (t.proof or {}).get("proof"),
            }
            if t.trade_no is not None
            else None
        ),
        created_at=t.created_at,
    )


@router.get("/trades", summary="Your trades", response_model=TradeList)
def list_trades(
    session: SessionDep,
    user: CurrentUser,
    slot_start: UtcTime | None = None,
    since: UtcTime | None = Query(None, description="trades of slots from this time"),
    limit: int = Query(200, ge=1, le=1000),
) -> TradeList:
    q = (
        select(Trade)
        .where(or_(col(Trade.buyer_id) == user.id, col(Trade.seller_id) == user.id))
        .order_by(col(Trade.slot_start).desc(), col(Trade.created_at).desc())
        .limit(limit)
    )
    if slot_start:
        q = q.where(col(Trade.slot_start) == slot_start)
    if since:
        q = q.where(col(Trade.slot_start) >= since)
    return TradeList(items=[trade_public(session, t, user) for t in session.exec(q)])


@router.get(
    "/trades/{trade_id}",
    summary="One of your trades, with its on-chain record and refund proof",
    response_model=TradePublic,
)
def get_trade(trade_id: str, session: SessionDep, user: CurrentUser) -> TradePublic:
    t = session.get(Trade, trade_id)
    if t is None or user.id not in (t.buyer_id, t.seller_id):
        raise NotFound(f"no trade {trade_id} of yours")
    return trade_public(session, t, user)
