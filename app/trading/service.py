"""Trading profiles: validation, the one-time authorisation that enables the agent, revocation.

Every check runs before anything is written (a refused profile changes nothing). Enabling is a spend
authorisation like a transfer's: a custodial wallet's PIN (and one-time code when enrolled), or a linked
wallet's EIP-712 signature over the profile; it then covers the agent's orders up to the daily limit, not
per order. Turning the profile off (PUT enabled=false or DELETE) cancels the agent's open orders and
releases their escrow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from app.coin.service import balance_now
from app.context import Context
from app.core.errors import Conflict
from app.core.money import format_amount, parse_amount
from app.core.security import utcnow
from app.core.sql import MAX_INT_ID
from app.market import engine
from app.market import service as market
from app.market.matching.types import escrow_amount
from app.market.models import EscrowStatus, Order, OrderSide, OrderStatus
from app.spending import authorizer
from app.spending.authorizer import Factor
from app.spending.errors import AuthorizationMissing, WrongSigner
from app.trading.errors import ProfileNotAuthorized, ProfileRejected
from app.trading.models import AgentAction, AgentActivity, AgentOrder, TradingProfile
from app.trading.schemas import ActivityPublic, ProfilePublic, ProfileSettings, ProfileUpdate
from app.users.models import Role, User
from app.wallets import service as wallets
from app.wallets.models import WalletKind
from ess_collector.models import Site

PROFILE_TYPES = [
    {"name": "user", "type": "uint256"},
    {"name": "site", "type": "uint256"},
    {"name": "sellFloor", "type": "uint256"},
    {"name": "buyCeiling", "type": "uint256"},
    {"name": "reservePct", "type": "uint256"},
    {"name": "maxWhPerSlot", "type": "uint256"},
    {"name": "expectedUseWh", "type": "uint256"},
    {"name": "dailyLimit", "type": "uint256"},
    {"name": "version", "type": "uint256"},
]


def get_profile(session: Session, user_id: int) -> TradingProfile | None:
    return session.get(TradingProfile, user_id)


def widest_band(ctx: Context) -> tuple[int, int]:
    """The lowest floor and highest ceiling of any slot: a profile price outside it fits no slot."""
    tariff = market.rules(ctx).tariff
    floor = min(p.feed_in_price for p in tariff.periods)
    ceiling = max(t.price for t in (*tariff.tiers, *tariff.summer_tiers))
    return floor, ceiling


def _validated(ctx: Context, session: Session, user: User, req: ProfileSettings) -> dict[str, Any]:
    """The profile's columns from a request, or ProfileRejected / NotFound saying what is wrong."""
    floor, ceiling = widest_band(ctx)
    prices: dict[str, int | None] = {}
    for name in ("sell_floor", "buy_ceiling"):
        text = getattr(req, name)
        price = None if text is None else parse_amount(text)
        if price is not None and not floor <= price <= ceiling:
            raise ProfileRejected(
                f"{name} {format_amount(price)} is outside the market's price band: from the lowest feed-in "
                f"price {format_amount(floor)} to the top retail tariff {format_amount(ceiling)} coins per kWh"
            )
        prices[name] = price
    limit = parse_amount(req.daily_limit, allow_zero=True)
    if req.site_id is not None:
        site = session.get(Site, req.site_id) if req.site_id <= MAX_INT_ID else None
        if site is None or site.owner_id != user.id:
            raise ProfileRejected(f"site {req.site_id} is not one of your sites")
    if req.enabled:
        if user.role == Role.admin:
            raise ProfileRejected("admins operate the market; they do not trade")
        wallet = wallets.active_wallet(session, user.id or 0)
        if wallet is None:
            raise ProfileRejected("you have no wallet yet: create or link one before enabling the agent")
        balance = balance_now(ctx, wallet.address)
        if limit > balance:
            raise ProfileRejected(
                f"the daily limit {format_amount(limit)} is above your balance {format_amount(balance)} coins"
            )
        if req.site_id is None and req.expected_use_wh is None:
            raise ProfileRejected("without a site, say what you expect to use per slot (expected_use_wh)")
    return {
        "enabled": req.enabled,
        "site_id": req.site_id,
        "sell_floor": prices["sell_floor"],
        "buy_ceiling": prices["buy_ceiling"],
        "reserve_pct": req.reserve_pct,
        "max_wh_per_slot": req.max_wh_per_slot,
        "expected_use_wh": req.expected_use_wh,
        "daily_limit": limit,
    }


def typed_data(ctx: Context, user: User, values: dict[str, Any], version: int) -> dict[str, Any]:
    """What a linked wallet signs to enable the agent with these settings (EIP-712, this chain)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "TradingProfile": PROFILE_TYPES,
        },
        "domain": {"name": "ESSX automatic trading", "version": "1", "chainId": ctx.chain_id},
        "primaryType": "TradingProfile",
        "message": {
            "user": user.id or 0,
            "site": values["site_id"] or 0,
            "sellFloor": values["sell_floor"] or 0,
            "buyCeiling": values["buy_ceiling"] or 0,
            "reservePct": values["reserve_pct"],
            "maxWhPerSlot": values["max_wh_per_slot"],
            "expectedUseWh": values["expected_use_wh"] or 0,
            "dailyLimit": values["daily_limit"],
            "version": version,
        },
    }


def typed_data_for(ctx: Context, session: Session, user: User, req: ProfileSettings) -> dict[str, Any]:
    values = _validated(ctx, session, user, req.model_copy(update={"enabled": True}))
    profile = get_profile(session, user.id or 0)
    return typed_data(ctx, user, values, (profile.version if profile else 0) + 1)


def _authorize(
    ctx: Context, session: Session, user: User, req: ProfileUpdate, values: dict[str, Any], version: int
) -> Factor:
    """The wallet's factors for enabling the agent (app/spending/authorizer.py: verify), refused as
    ProfileNotAuthorized. Recorded as pin (with or without a one-time code) or signature."""
    wallet = wallets.require_wallet(session, user.id or 0)
    try:
        how = authorizer.verify(ctx, session, wallet, typed_data(ctx, user, values, version), req)
    except AuthorizationMissing:
        raise ProfileNotAuthorized(
            "enabling the agent needs your wallet's pin (and otp when enrolled)"
            if wallet.kind == WalletKind.custodial
            else "a linked wallet enables the agent with a signature over POST /api/v1/trading/profile/typed-data"
        ) from None
    except WrongSigner as exc:
        raise ProfileNotAuthorized(
            "the signature is malformed"
            if exc.signer is None
            else f"the signature recovers to {exc.signer}, not your wallet {wallet.address}"
        ) from None
    return Factor.signature if how == Factor.signature else Factor.pin


def put_profile(ctx: Context, session: Session, user: User, req: ProfileUpdate) -> TradingProfile:
    values = _validated(ctx, session, user, req)
    profile = get_profile(session, user.id or 0)
    version = (profile.version if profile else 0) + 1
    authorized_by = _authorize(ctx, session, user, req, values, version) if req.enabled else None
    if profile is None:
        profile = TradingProfile(user_id=user.id or 0, updated_at=utcnow())
    was_enabled = profile.enabled
    for name, value in values.items():
        setattr(profile, name, value)
    profile.version, profile.updated_at = version, utcnow()
    if req.enabled:
        profile.authorized_by, profile.authorized_at = authorized_by, utcnow()
        note(session, user.id or 0, AgentAction.enabled, f"enabled by {authorized_by}")
    else:
        profile.authorized_by = profile.authorized_at = None
        if was_enabled:
            note(session, user.id or 0, AgentAction.disabled, "turned off by you")
    session.add(profile)
    session.commit()
    if not req.enabled:
        cancel_agent_orders(ctx, session, user, "the profile was turned off")
    return profile


def disable(ctx: Context, session: Session, user: User) -> TradingProfile:
    profile = get_profile(session, user.id or 0)
    if profile is None:
        raise Conflict("you have no trading profile")
    if profile.enabled:
        profile.enabled, profile.authorized_by, profile.authorized_at = False, None, None
        profile.version, profile.updated_at = profile.version + 1, utcnow()
        session.add(profile)
        note(session, user.id or 0, AgentAction.disabled, "revoked by you")
        session.commit()
    cancel_agent_orders(ctx, session, user, "the profile was turned off")
    return profile


def cancel_agent_orders(ctx: Context, session: Session, user: User, reason: str) -> int:
    """Cancels every open order the agent placed for `user` (releasing their escrow). An escrow still
    being locked is left to the agent's next pass, which cancels it once open (the profile is off)."""
    rows = session.exec(
        select(AgentOrder, Order)
        .join(Order, col(Order.id) == col(AgentOrder.order_id))
        .where(
            col(AgentOrder.user_id) == user.id,
            col(Order.status).in_((OrderStatus.pending_authorization, OrderStatus.open)),
        )
    ).all()
    cancelled = 0
    for link, order in rows:
        if order.escrow_status == EscrowStatus.locking:
            continue
        try:
            cancel_order(ctx, session, user, link, order, reason)
        except Conflict:  # matched, expired or cancelled by the agent's pass meanwhile: nothing to cancel
            session.rollback()
            continue
        cancelled += 1
    return cancelled


def cancel_order(
    ctx: Context, session: Session, user: User, link: AgentOrder, order: Order, reason: str
) -> None:
    """One of the agent's orders cancelled through the market's own cancel (one commit, with the note).

    The market's lock is taken before anything is written: the cancel takes it anyway, and a session
    that wrote first would hold the database's write lock while the agent's pass, holding the market's
    lock, waits for it (SQLite: every writer stalled until the busy timeout, seen in `essx demo` when
    the profiles are turned off while the agent runs)."""
    with engine.slot_lock(ctx):
        link.live_key = None
        session.add(link)
        note(session, user.id or 0, AgentAction.cancelled, reason, order=order, quantity_wh=order.open_wh)
        market.cancel(ctx, session, user, order.id)


def note(
    session: Session,
    user_id: int,
    action: AgentAction,
    reason: str,
    *,
    order: Order | None = None,
    slot_start: datetime | None = None,
    side: str | None = None,
    quantity_wh: int | None = None,
    price: int | None = None,
) -> None:
    session.add(
        AgentActivity(
            user_id=user_id,
            at=utcnow(),
            action=action,
            slot_start=order.slot_start if order else slot_start,
            side=order.side if order else side,
            order_id=order.id if order else None,
            quantity_wh=quantity_wh,
            price=order.limit_price if order and price is None else price,
            reason=reason[:300],
        )
    )


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def spent_today(session: Session, user_id: int, now: datetime) -> int:
    """Buy escrow the agent committed today (UTC): the whole escrow of live orders, the filled part of
    ended ones (a cancelled order's released remainder is free again)."""
    rows = session.exec(
        select(Order)
        .join(AgentOrder, col(AgentOrder.order_id) == col(Order.id))
        .where(
            col(AgentOrder.user_id) == user_id,
            col(AgentOrder.side) == OrderSide.buy,
            col(AgentOrder.placed_at) >= day_start(now),
            col(AgentOrder.placed_at) < day_start(now) + timedelta(days=1),
        )
    ).all()
    total = 0
    for o in rows:
        live = o.status in (OrderStatus.pending_authorization, OrderStatus.open)
        total += o.escrow_amount if live else escrow_amount(o.filled_wh, o.limit_price)
    return total


def to_public(session: Session, profile: TradingProfile | None, user_id: int) -> ProfilePublic:
    if profile is None:
        profile = TradingProfile(user_id=user_id, updated_at=utcnow())
        updated: datetime | None = None
    else:
        updated = profile.updated_at

    def money(v: int | None) -> str | None:
        return None if v is None else format_amount(v)

    return ProfilePublic(
        enabled=profile.enabled,
        site_id=profile.site_id,
        sell_floor=money(profile.sell_floor),
        buy_ceiling=money(profile.buy_ceiling),
        reserve_pct=profile.reserve_pct,
        max_wh_per_slot=profile.max_wh_per_slot,
        expected_use_wh=profile.expected_use_wh,
        daily_limit=format_amount(profile.daily_limit),
        spent_today=format_amount(spent_today(session, user_id, utcnow())),
        authorized_by=profile.authorized_by,
        authorized_at=profile.authorized_at,
        version=profile.version,
        updated_at=updated,
    )


def activity(session: Session, user_id: int, limit: int) -> list[ActivityPublic]:
    rows = session.exec(
        select(AgentActivity)
        .where(col(AgentActivity.user_id) == user_id)
        .order_by(col(AgentActivity.id).desc())
        .limit(limit)
    ).all()
    return [
        ActivityPublic(
            id=a.id or 0,
            at=a.at,
            action=a.action,
            slot_start=a.slot_start,
            side=a.side,
            order_id=a.order_id,
            quantity_wh=a.quantity_wh,
            price=None if a.price is None else format_amount(a.price),
            reason=a.reason,
        )
        for a in rows
    ]
