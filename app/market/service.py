"""Orders for delivery slots: placement, escrow authorisation, cancellation, the public book.

A buy order escrows quantity x limit price in the EnergyMarket contract through a buyer-signed ERC-3009
ReceiveWithAuthorization, relayed gas-free exactly like a transfer; it enters the book only once the
escrow is locked on chain. A sell order enters the book at once, capped by its site's supply estimate.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from app import idempotency
from app.coin.service import chain_now, ensure_not_paused
from app.context import Context
from app.core import clock
from app.core.errors import AppError, Conflict, NotFound
from app.core.money import format_amount, parse_amount
from app.core.security import utcnow
from app.core.sql import MAX_INT_ID
from app.events.service import emit
from app.market import aggregate_levels, engine, escrow_amount
from app.market.onchain import escrow_nonce, id32, unix
from app.market.rules import MarketRules
from app.market.schemas import BookLevel, BookPublic, OrderAuthorize, OrderChallenge, OrderCreate, OrderPublic
from app.market.tariff import TariffSchedule
from app.models import Order, Role, Site, User, UserStatus, Wallet
from app.transfers.service import AuthorizationMissing, WrongSigner
from app.transfers.spending import authorising_spend, check_available
from app.wallets import service as wallets
from wallet.models import OutgoingTx
from wallet.relayer import TxRejected
from wallet.signer import recover_typed_data
from wallet.typed_data import TokenDomain, receive_with_authorization, split_signature

VALIDITY_SECONDS = 300


class NotAllowedToTrade(AppError):
    status_code = 403


class ExceedsSupply(AppError):
    status_code = 422


def rules(ctx: Context) -> MarketRules:
    cached = ctx.extras.get("market_rules")
    if cached is None:
        s = ctx.settings
        cached = ctx.extras["market_rules"] = MarketRules(
            s.slot_minutes,
            s.gate_closure_minutes,
            s.market_horizon_hours,
            s.market_mechanism,
            TariffSchedule.load(s.tariff_file),
        )
    return cached


def _can_trade(user: User) -> None:
    if user.status != UserStatus.approved:
        raise NotAllowedToTrade("your account awaits an admin's approval before you may trade")
    if user.role == Role.admin:
        raise NotAllowedToTrade("admins operate the market; they do not trade")


def create(
    ctx: Context, session: Session, user: User, req: OrderCreate, key: str | None
) -> tuple[int, dict[str, Any]]:
    status, body = idempotency.create_once(
        session,
        f"{user.id}:orders.create",
        key,
        req.model_dump(mode="json"),
        kind="order",
        load=lambda order_id: session.get(Order, order_id),
        make=lambda: _new_order(ctx, session, user, req),
        ident=lambda order: order.id,
        render=lambda order: to_public(session, ctx, order).model_dump(mode="json"),
    )
    if body.get("status") == "open":
        engine.kick(ctx)
    return status, body


def _new_order(ctx: Context, session: Session, user: User, req: OrderCreate) -> Order:
    _can_trade(user)
    r = rules(ctx)
    now = clock.now()
    slot_start = r.check_slot(req.slot_start, now)
    price = parse_amount(req.limit_price)
    r.check_price(slot_start, price)
    if req.counterpart_id is not None:
        other = session.get(User, req.counterpart_id) if 1 <= req.counterpart_id <= MAX_INT_ID else None
        if other is None:
            raise NotFound(f"no user with id {req.counterpart_id}")
        if other.id == user.id:
            raise AppError("a direct offer names someone else")
    stamp = utcnow()
    order = Order(
        id=uuid.uuid4().hex,
        user_id=user.id or 0,
        side=req.side,
        slot_start=slot_start,
        quantity_wh=req.quantity_wh,
        open_wh=req.quantity_wh,
        limit_price=price,
        counterpart_id=req.counterpart_id,
        status="pending_authorization",
        created_at=stamp,
        updated_at=stamp,
    )
    if req.side == "sell":
        _check_sell(ctx, session, user, req, slot_start)
        order.site_id = req.site_id
        order.status = "open"
        order.seq = engine.next_seq(session)
        session.add(order)
        session.flush()
        emit(
            session,
            user.id,
            "order.accepted",
            order_id=order.id,
            side="sell",
            slot_start=slot_start.isoformat(),
        )
        return order
    if req.site_id is not None:
        _own_site(session, user, req.site_id)  # where a buyer takes the energy: theirs, like a seller's
    order.site_id = req.site_id
    wallet = wallets.require_wallet(session, user.id or 0)
    ensure_not_paused(ctx)
    amount = escrow_amount(req.quantity_wh, price)
    # A first answer for the user; the binding check is at authorisation, under the wallet's lock.
    check_available(ctx, session, wallet.address, amount, "the escrow")
    now_s = chain_now(ctx)
    market = ctx.contracts["EnergyMarket"]
    order.wallet_address = wallet.address
    order.escrow_amount = amount
    order.valid_after, order.valid_before = 0, now_s + VALIDITY_SECONDS
    order.typed_data = receive_with_authorization(
        TokenDomain(name=_coin_name(ctx), chain_id=ctx.chain_id, verifying_contract=ctx.coin.address),
        from_=wallet.address,
        to=market.address,
        value=amount,
        valid_after=order.valid_after,
        valid_before=order.valid_before,
        nonce=escrow_nonce(order.id, slot_start, req.quantity_wh, price),
    )
    session.add(order)
    session.flush()
    return order


def _coin_name(ctx: Context) -> str:
    name = ctx.extras.get("coin_name")
    if name is None:
        name = ctx.extras["coin_name"] = ctx.coin.functions.name().call()
    return str(name)


def _check_sell(ctx: Context, session: Session, user: User, req: OrderCreate, slot_start: datetime) -> None:
    if user.role != Role.prosumer:
        raise NotAllowedToTrade("only prosumers sell energy; consumers place buy orders")
    if req.site_id is None:
        raise AppError("a sell order names the site the energy comes from (site_id)")
    site = _own_site(session, user, req.site_id)
    if not site.enabled:
        raise Conflict(f"site {site.id} is disabled")
    from app.sites.service import estimate_supply

    estimate = estimate_supply(session, site, slot_start, ctx.settings)
    offered = session.exec(
        select(func.coalesce(func.sum(Order.quantity_wh), 0)).where(
            col(Order.site_id) == site.id,
            col(Order.side) == "sell",
            col(Order.slot_start) == slot_start,
            col(Order.status).in_(("open", "filled")),
        )
    ).one()
    room = estimate.supply_wh - int(offered)
    if req.quantity_wh > room:
        raise ExceedsSupply(
            f"site {site.id} can deliver about {estimate.supply_wh} Wh in that slot and {int(offered)} Wh are "
            f"already offered: at most {max(room, 0)} Wh more"
        )


def _own_site(session: Session, user: User, site_id: int) -> Site:
    """The caller's site; another user's site gets exactly the answer of a missing one."""
    site = session.get(Site, site_id) if 1 <= site_id <= MAX_INT_ID else None
    if site is None or site.owner_id != user.id:
        raise NotFound(f"no site {site_id} of yours")
    return site


def get_own(session: Session, user: User, order_id: str) -> Order:
    order = session.get(Order, order_id)
    if order is None or order.user_id != user.id:
        raise NotFound(f"no order {order_id} of yours")
    return order


def authorize(ctx: Context, session: Session, user: User, order_id: str, req: OrderAuthorize) -> Order:
    order = get_own(session, user, order_id)
    if order.status != "pending_authorization":
        raise Conflict(f"order {order_id} is already {order.status}")
    if rules(ctx).gate_closure(order.slot_start) <= clock.now():
        raise Conflict("the gate for this slot has closed")
    now = chain_now(ctx)
    if order.valid_before is None or now >= order.valid_before - 5:
        order.status, order.failure_reason = "failed", "authorization window passed"
        session.commit()
        raise AppError("the authorization window has passed; place the order again")
    wallet = wallets.require_wallet(session, user.id or 0)
    if wallet.address != order.wallet_address:
        raise Conflict("the order was placed from another wallet")
    typed = order.typed_data or {}
    if wallet.kind == "custodial":
        if req.pin is None:
            raise AuthorizationMissing("a custodial wallet authorises with its pin (and otp when enrolled)")
        wallets.check_pin(session, wallet, req.pin)
        wallets.check_otp(ctx, session, user.id or 0, req.otp)
        signature = wallets.signer_for(ctx, wallet).sign_typed_data(typed)
    else:
        if req.signature is None:
            raise AuthorizationMissing("a linked wallet authorises with a signature over typed_data")
        try:
            signature = bytes.fromhex(req.signature.removeprefix("0x"))
            signer = recover_typed_data(typed, signature)
        except ValueError:
            raise WrongSigner("the signature is malformed") from None
        if signer != order.wallet_address:
            raise WrongSigner(f"the signature recovers to {signer}, not {order.wallet_address}")
    _lock_escrow(ctx, session, order, wallet, signature)
    return order


def place_for_agent(
    ctx: Context, session: Session, user: User, req: OrderCreate, link: Callable[[Order], None]
) -> Order:
    """An order the user's trading agent places (app/trading): the same rules and escrow as a manual
    order, a buy order's escrow signed with the custodial key the user authorised once for the profile
    (not per order). `link` adds the agent's own rows, committed in the order's transaction, so a crash
    leaves either both or neither."""
    order = _new_order(ctx, session, user, req)
    link(order)
    if order.side == "sell":
        ctx.commit_background(session)
        engine.kick(ctx)
        return order
    wallet = wallets.require_wallet(session, user.id or 0)
    if wallet.kind != "custodial":
        raise AuthorizationMissing("a linked wallet signs each escrow in its own app")
    signature = wallets.signer_for(ctx, wallet).sign_typed_data(order.typed_data or {})
    _lock_escrow(ctx, session, order, wallet, signature)
    return order


def _lock_escrow(ctx: Context, session: Session, order: Order, wallet: Wallet, signature: bytes) -> None:
    """Stores the escrow lock transaction for a signed order, under the wallet's spending lock; commits."""
    order_id = order.id
    v, r, s = split_signature(signature)
    market = ctx.contracts["EnergyMarket"]
    data = market.encodeABI(
        fn_name="lockEscrow",
        args=[
            id32(order.id),
            order.wallet_address,
            order.escrow_amount,
            unix(order.slot_start),
            order.quantity_wh,
            order.limit_price,
            order.valid_after,
            order.valid_before,
            escrow_nonce(order.id, order.slot_start, order.quantity_wh, order.limit_price),
            v,
            r,
            s,
        ],
    )

    def still_pending() -> bool:
        row = session.exec(select(Order.status, Order.escrow_status).where(col(Order.id) == order_id)).one()
        return tuple(row) == ("pending_authorization", "none")

    with authorising_spend(ctx, session, wallet, order.escrow_amount, "the escrow", still_pending):
        # Compare-and-set, as for transfers: of two concurrent authorisations only one passes.
        changed = session.exec(  # type: ignore[call-overload]
            update(Order)
            .where(
                col(Order.id) == order_id,
                col(Order.status) == "pending_authorization",
                col(Order.escrow_status) == "none",
            )
            .values(escrow_status="locking")
        )
        if changed.rowcount != 1:
            raise Conflict(f"order {order_id} was authorised by another request")
        try:
            tx = ctx.relayer.prepare(session, to=market.address, data=data, purpose=f"escrow_lock:{order.id}")
        except TxRejected as exc:
            raise AppError(f"the escrow cannot be locked: {exc.reason}") from None
        order.signature = "0x" + signature.hex()
        order.escrow_status, order.lock_tx_id, order.updated_at = "locking", tx.id, utcnow()
        session.add(order)
    ctx.relayer.kick()


def cancel(ctx: Context, session: Session, user: User, order_id: str) -> Order:
    order = get_own(session, user, order_id)
    if order.status not in ("pending_authorization", "open"):
        raise Conflict(f"order {order_id} is {order.status}: nothing left to cancel")
    if order.escrow_status == "locking":
        raise Conflict("the escrow is being locked right now; cancel again in a few seconds")
    with engine.slot_lock(ctx):
        # the row lock keeps the matcher of another API process (ESSX_WORKERS, PostgreSQL) out until this
        # commits, and the refresh sees what that matcher committed
        session.refresh(order, with_for_update=True)
        if order.status not in ("pending_authorization", "open"):
            raise Conflict(f"order {order_id} is {order.status}: nothing left to cancel")
        if order.escrow_status == "locking":
            raise Conflict("the escrow is being locked right now; cancel again in a few seconds")
        order.status, order.open_wh, order.updated_at = "cancelled", 0, utcnow()
        if order.escrow_status == "locked":
            engine.release_escrow(ctx, session, order)
        session.add(order)
        emit(session, user.id, "order.cancelled", order_id=order.id)
        session.commit()
    ctx.relayer.kick()
    return order


def list_own(session: Session, user: User, status: str | None, slot_start: datetime | None) -> list[Order]:
    q = select(Order).where(col(Order.user_id) == user.id).order_by(col(Order.created_at).desc()).limit(500)
    if status:
        q = q.where(col(Order.status) == status)
    if slot_start:
        q = q.where(col(Order.slot_start) == slot_start.astimezone(UTC))
    return list(session.exec(q))


def book(ctx: Context, session: Session, slot_start: datetime) -> BookPublic:
    r = rules(ctx)
    if slot_start.tzinfo is None:
        slot_start = slot_start.replace(tzinfo=UTC)
    if slot_start != r.slot_of(slot_start):
        from app.market.rules import SlotRejected

        raise SlotRejected(f"slot_start must be aligned to {r.slot_minutes}-minute slots in UTC")
    levels = aggregate_levels(engine.book_orders(session, slot_start))
    floor, ceiling = r.band(slot_start)
    return BookPublic(
        slot_start=slot_start,
        floor=format_amount(floor),
        ceiling=format_amount(ceiling),
        gate_closure=r.gate_closure(slot_start),
        mechanism=r.mechanism,
        bids=[BookLevel(price=format_amount(p), quantity_wh=q) for p, q in levels["bids"]],
        asks=[BookLevel(price=format_amount(p), quantity_wh=q) for p, q in levels["asks"]],
    )


def to_public(session: Session, ctx: Context, o: Order) -> OrderPublic:
    challenge = None
    if o.status == "pending_authorization" and o.side == "buy" and o.valid_before:
        expires = datetime.fromtimestamp(o.valid_before, UTC)
        wallet = wallets.active_wallet(session, o.user_id)
        if wallet is not None and wallet.kind == "custodial":
            challenge = OrderChallenge(
                type="pin", otp_required=wallets.totp_enabled(session, o.user_id), expires_at=expires
            )
        else:
            challenge = OrderChallenge(type="signature", typed_data=o.typed_data, expires_at=expires)
    tx = session.get(OutgoingTx, o.lock_tx_id) if o.lock_tx_id else None
    from app.coin.service import latest_hash

    return OrderPublic(
        id=o.id,
        side=o.side,
        slot_start=o.slot_start,
        quantity_wh=o.quantity_wh,
        open_wh=o.open_wh,
        filled_wh=o.filled_wh,
        limit_price=format_amount(o.limit_price),
        site_id=o.site_id,
        counterpart_id=o.counterpart_id,
        status=o.status,
        escrow_amount=format_amount(o.escrow_amount),
        escrow_status=o.escrow_status,
        escrow_tx_hash=(tx.tx_hash or latest_hash(session, tx.id or 0)) if tx else None,
        failure_reason=o.failure_reason,
        challenge=challenge,
        created_at=o.created_at,
    )
