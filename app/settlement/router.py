"""Settlement decisions, price suggestions, monthly statements and the operator's market summary."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from app.api.deps import ContextDep, SessionDep
from app.api.params import UtcTime
from app.audit import service as audit
from app.market.models import TradeStatus
from app.settlement import pricing, service, statements
from app.settlement.schemas import SettleDecision
from app.users.deps import AdminUser, CurrentUser

router = APIRouter(tags=["settlement"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])


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
        "status": TradeStatus.settling,
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


@router.get("/statements", summary="Your monthly statement (JSON, or CSV with Accept: text/csv)")
def statement(
    month: str,
    ctx: ContextDep,
    session: SessionDep,
    user: CurrentUser,
    accept: str | None = Header(default=None),
) -> Any:
    body, rows = statements.monthly(ctx, session, user.id or 0, month)
    if accept and "text/csv" in accept:
        return Response(
            statements.as_csv(body, rows),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="statement-{month}.csv"'},
        )
    return body


@admin_router.get("/market/summary", summary="Market volume, value and prices over a period (admin)")
def market_summary(
    session: SessionDep, _admin: AdminUser, from_: Annotated[UtcTime, Query(alias="from")], to: UtcTime
) -> dict[str, Any]:
    return statements.market_summary(session, from_, to)
