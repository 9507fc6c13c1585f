"""Orders for delivery slots: placement, escrow authorisation, cancellation, the public book.

A buy order is authorised by a buyer-signed ERC-3009 ReceiveWithAuthorization for quantity x limit price and
enters the book at once; the escrow is locked on chain only when the order matches (`app/market/escrow.py`).
A sell order enters the book at once, capped by what its site can still deliver.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, case
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, func, select

from app.coin.service import chain_now, ensure_not_paused, latest_hash
from app.context import Context
from app.core.errors import AppError, Conflict, NotFound
from app.core.money import format_amount, parse_amount
from app.core.security import utcnow
from app.core.sql import MAX_INT_ID
from app.events.service import emit, emit_rows
from app.idempotency import service as idempotency
from app.market import engine, escrow
from app.market.errors import ExceedsSupply, NotAllowedToTrade, SlotRejected
from app.market.matching.types import escrow_amount
from app.market.models import EscrowStatus, Order, OrderSide, OrderStatus, lock_changes
from app.market.onchain import escrow_nonce
from app.market.rules import MarketRules
from app.market.schemas import BookLevel, BookPublic, OrderAuthorize, OrderChallenge, OrderCreate, OrderPublic
from app.market.tariff import TariffSchedule
from app.sites.service import sell_room
from app.spending import authorizer
from app.spending.errors import AuthorizationMissing
from app.spending.holds import check_available
from app.users.models import Role, User, UserStatus
from app.wallets import service as wallets
from app.wallets.models import Wallet, WalletKind
from common import clock
from ess_collector.models import Site
from wallet.models import OutgoingTx
from wallet.signer import LocalSigner
from wallet.typed_data import TokenDomain, receive_with_authorization, split_signature


def rules(ctx: Context) -> MarketRules:
    cached = ctx.market_rules
    if cached is None:
        s = ctx.settings
        cached = ctx.market_rules = MarketRules(
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
    used: list[Wallet] = []  # the buyer's wallet, as the placement read it: its answer needs its kind

    def make() -> Order:
        return _new_order(ctx, session, user, req, used=used)

    status, body = idempotency.create_once(
        session,
        f"{user.id}:orders.create",
        key,
        req.model_dump(mode="json"),
        kind="order",
        load=lambda order_id: session.get(Order, order_id),
        make=make,
        ident=lambda order: order.id,
        render=lambda order: to_public(session, ctx, order, used[0] if used else None).model_dump(
            mode="json"
        ),
    )
    if body.get("status") == OrderStatus.open:
        engine.kick(ctx)
    return status, body


def _new_order(
    ctx: Context,
    session: Session,
    user: User,
    req: OrderCreate,
    *,
    first_answer: bool = True,
    wallet: Wallet | None = None,
    used: list[Wallet] | None = None,
) -> Order:
    """`first_answer=False`: the caller authorises the escrow at once (the agent), with the exact balance
    check; the quoted one here would only repeat it. `wallet`: the buyer's active wallet, if the caller
    has it; `used` gets the wallet a buy order was placed from."""
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
        status=OrderStatus.pending_authorization,
        created_at=stamp,
        updated_at=stamp,
    )
    if req.side == OrderSide.sell:
        _check_sell(ctx, session, user, req, slot_start)
        order.site_id = req.site_id
        order.status = OrderStatus.open
        order.seq = order.change_no = engine.next_seq(session)  # one number: its priority and its change
        _insert(session, order)
        emit_rows(
            session,
            [
                {
                    "user_id": order.user_id,
                    "kind": "order.accepted",
                    "at": stamp,
                    "data": {
                        "order_id": order.id,
                        "side": OrderSide.sell,
                        "slot_start": slot_start.isoformat(),
                    },
                }
            ],
        )
        return order
    if req.site_id is not None:
        _own_site(session, user, req.site_id)  # where a buyer takes the energy: theirs, like a seller's
    order.site_id = req.site_id
    wallet = wallet or wallets.require_wallet(session, user.id or 0)
    if used is not None:
        used.append(wallet)
    ensure_not_paused(ctx)
    amount = escrow_amount(req.quantity_wh, price)
    if first_answer:  # for the user; the binding check is at authorisation, under the wallet's lock
        check_available(ctx, session, wallet.address, amount, "the escrow", exact=False)
    market = ctx.contracts["EnergyMarket"]
    order.wallet_address = wallet.address
    order.escrow_amount = amount
    order.valid_after, order.valid_before = 0, escrow.valid_before(r, slot_start, now, chain_now(ctx))
    order.typed_data = receive_with_authorization(
        TokenDomain(name=_coin_name(ctx), chain_id=ctx.chain_id, verifying_contract=ctx.coin.address),
        from_=wallet.address,
        to=market.address,
        value=amount,
        valid_after=order.valid_after,
        valid_before=order.valid_before,
        nonce=escrow_nonce(order.id, slot_start, req.quantity_wh, price),
    )
    # no change number yet: a pending order is in no book; its authorisation takes one (`_accept_escrow`)
    _insert(session, order)
    return order


# on the table, not the entity: the ORM's bulk-insert machinery cost more than the statement; built once, so
# its cache key is computed once
_ORDERS = Order.__table__  # type: ignore[attr-defined]
_INSERT_ORDER = _ORDERS.insert()


def _insert(session: Session, order: Order) -> None:
    """One INSERT, without the unit of work (a placement's hot path; an open order's change number is set);
    the order then belongs to the session as if loaded, so later changes to it are UPDATEs."""
    session.execute(_INSERT_ORDER, order.model_dump())
    make_transient_to_detached(order)
    session.add(order)


def _coin_name(ctx: Context) -> str:
    if ctx.cache.coin_name is None:
        ctx.cache.coin_name = str(ctx.coin.functions.name().call())
    return ctx.cache.coin_name


def _check_sell(ctx: Context, session: Session, user: User, req: OrderCreate, slot_start: datetime) -> None:
    if user.role != Role.prosumer:
        raise NotAllowedToTrade("only prosumers sell energy; consumers place buy orders")
    if req.site_id is None:
        raise AppError("a sell order names the site the energy comes from (site_id)")
    site = _own_site(session, user, req.site_id)
    if not site.enabled:
        raise Conflict(f"site {site.id} is disabled")
    committed = case(
        (
            col(Order.status).in_((OrderStatus.pending_authorization, OrderStatus.open, OrderStatus.filled)),
            col(Order.quantity_wh),
        ),
        else_=col(Order.filled_wh),
    )
    rows = session.exec(
        select(Order.slot_start, func.sum(committed))
        .where(
            col(Order.site_id) == site.id,
            col(Order.side) == OrderSide.sell,
            col(Order.slot_start) >= clock.now() - rules(ctx).slot,
        )
        .group_by(col(Order.slot_start))
    ).all()
    sold = {start: int(wh or 0) for start, wh in rows}
    room = sell_room(session, site, slot_start, sold, ctx.settings)
    if req.quantity_wh > room:
        raise ExceedsSupply(
            f"site {site.id} can deliver at most {room} Wh more in that slot: its battery and expected PV, "
            f"less the {sold.get(slot_start, 0)} Wh it already sells in that slot and what its other sells "
            f"and household need (asked {req.quantity_wh} Wh)"
        )


def sold_by_site(session: Session, slot_start: datetime) -> dict[int, int]:
    """Wh each site sold (matched) in a slot: what the collector's dispatch must deliver."""
    rows = session.exec(
        select(Order.site_id, func.sum(Order.filled_wh))
        .where(
            col(Order.side) == OrderSide.sell,
            col(Order.slot_start) == slot_start,
            col(Order.site_id).is_not(None),
        )
        .group_by(col(Order.site_id))
    ).all()
    return {site: int(wh or 0) for site, wh in rows if site is not None}


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


# The order and its owner's active wallet in one statement (an authorisation needs both).
_ORDER_AND_WALLET = (
    select(Order, Wallet)
    .outerjoin(Wallet, and_(col(Wallet.user_id) == col(Order.user_id), col(Wallet.active).is_(True)))
    .where(col(Order.id) == bindparam("order_id"))
)


def authorize(ctx: Context, session: Session, user: User, order_id: str, req: OrderAuthorize) -> Order:
    row = session.execute(_ORDER_AND_WALLET, {"order_id": order_id}).first()
    if row is None or row[0].user_id != user.id:
        raise NotFound(f"no order {order_id} of yours")
    order, wallet = row
    if order.status != OrderStatus.pending_authorization:
        raise Conflict(f"order {order_id} is already {order.status}")
    if rules(ctx).gate_closure(order.slot_start) <= clock.now():
        raise Conflict("the gate for this slot has closed")
    now = chain_now(ctx)
    if order.valid_before is None or now >= order.valid_before - 5:
        order.status, order.failure_reason = OrderStatus.failed, "authorization window passed"
        session.commit()
        raise AppError("the authorization window has passed; place the order again")
    if wallet is None:
        wallet = wallets.require_wallet(session, user.id or 0)  # its answer: no wallet yet
    if wallet.address != order.wallet_address:
        raise Conflict("the order was placed from another wallet")
    signed = authorizer.sign(ctx, session, wallet, order.typed_data or {}, req)
    _accept_escrow(ctx, session, order, wallet, signed.signature)
    return order


def place_for_agent(
    ctx: Context,
    session: Session,
    user: User,
    req: OrderCreate,
    link: Callable[[Order], None],
    *,
    wallet: Wallet | None = None,
    signer: Callable[[Wallet], LocalSigner] | None = None,
) -> Order:
    """An order the user's trading agent places (app/trading): the same rules and escrow as a manual
    order, a buy order's escrow signed with the custodial key the user authorised once for the profile
    (not per order). `link` adds the agent's own rows, committed in the order's transaction, so a crash
    leaves either both or neither. `wallet`: the user's active wallet, if the caller read it; `signer`:
    opens its key (the caller may keep it open for its next orders), else `wallets.signer_for`."""
    buying = req.side == OrderSide.buy
    wallet = (wallet or wallets.require_wallet(session, user.id or 0)) if buying else None
    order = _new_order(ctx, session, user, req, first_answer=False, wallet=wallet)
    link(order)
    if wallet is None:  # a sell
        ctx.commit_background(session)
        engine.kick(ctx)
        return order
    if wallet.kind != WalletKind.custodial:
        raise AuthorizationMissing("a linked wallet signs each escrow in its own app")
    key = signer(wallet) if signer is not None else wallets.signer_for(ctx, wallet)
    signature = key.sign_typed_data(order.typed_data or {})
    _accept_escrow(ctx, session, order, wallet, signature)
    return order


def _accept_escrow(ctx: Context, session: Session, order: Order, wallet: Wallet, signature: bytes) -> None:
    """Keeps a signed order's escrow authorisation, under the wallet's spending lock, and puts the order
    in the book; nothing goes on chain until it matches (app/market/escrow.py). Commits."""
    order_id = order.id
    split_signature(signature)  # a high-s signature would fail on chain, at the first match
    # Before the locks, so that the check under them answers from a recent balance: only a refusal asks
    # the chain while holding the change counter, which every order write waits for (PostgreSQL: the
    # other API process's too).
    custodial = wallet.kind == WalletKind.custodial
    check_available(
        ctx,
        session,
        wallet.address,
        order.escrow_amount,
        "the escrow",
        own_key=custodial,
        rechecked=True,
        before_locks=True,
    )
    # The change counter's lock first, as every order write takes it (`lock_changes`): its number is the
    # order's priority and change stamp, written by the compare-and-set with the rest of the authorisation
    # (one UPDATE of the order, which also sets these values on `order` in this session).
    seq = engine.next_seq(session)
    # Compare-and-set, as for transfers: of two concurrent authorisations only one passes. On the table, not
    # the entity: the ORM's update would look for the order among the session's objects to change it there,
    # which the values below do directly once the update has passed.
    values = escrow.authorised(signature, seq)
    authorise = (
        _ORDERS.update()
        .where(
            _ORDERS.c.id == order_id,
            _ORDERS.c.status == OrderStatus.pending_authorization,
            _ORDERS.c.escrow_status == EscrowStatus.none,
        )
        .values(values)
    )
    # rechecked: the escrow binds nothing until the order first matches, when `escrow.locks_for_batch` reads
    # the wallet's balance again and skips an order it no longer covers; a balance read within the last
    # second (as the placement just did) may answer yes here, and a no is the chain's answer
    with authorizer.authorising_spend(
        ctx, session, wallet, order.escrow_amount, "the escrow", authorise, rechecked=True
    ):
        escrow.accepted(session, order)
    for name, value in values.items():  # as stored: the order is not left dirty
        set_committed_value(order, name, value)
    engine.kick(ctx)


def cancel(ctx: Context, session: Session, user: User, order_id: str) -> Order:
    order = get_own(session, user, order_id)
    if order.status not in (OrderStatus.pending_authorization, OrderStatus.open):
        raise Conflict(f"order {order_id} is {order.status}: nothing left to cancel")
    if order.escrow_status == EscrowStatus.locking:
        raise Conflict("the escrow is being locked right now; cancel again in a few seconds")
    with engine.slot_lock(ctx):
        # the change counter's lock keeps the matcher of another API process (ESSX_WORKERS) out until this
        # commits (the matcher takes it first), and the refresh sees what that matcher committed
        lock_changes(session)
        session.refresh(order, with_for_update=True)
        if order.status not in (OrderStatus.pending_authorization, OrderStatus.open):
            raise Conflict(f"order {order_id} is {order.status}: nothing left to cancel")
        if order.escrow_status == EscrowStatus.locking:
            raise Conflict("the escrow is being locked right now; cancel again in a few seconds")
        order.status, order.open_wh, order.updated_at = OrderStatus.cancelled, 0, utcnow()
        if order.escrow_status == EscrowStatus.locked:
            escrow.release_one(ctx, session, order)
        escrow.close_unmatched(session, order)
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
        raise SlotRejected(f"slot_start must be aligned to {r.slot_minutes}-minute slots in UTC")
    levels = engine.public_levels(ctx, session, slot_start)
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


def to_public(session: Session, ctx: Context, o: Order, wallet: Wallet | None = None) -> OrderPublic:
    """`wallet`: the owner's active wallet, if the caller has it (a pending buy order's challenge says
    how that wallet authorises)."""
    challenge = None
    if o.status == OrderStatus.pending_authorization and o.side == OrderSide.buy and o.valid_before:
        expires = datetime.fromtimestamp(o.valid_before, UTC)
        if wallet is None or wallet.user_id != o.user_id or not wallet.active:
            wallet = wallets.active_wallet(session, o.user_id)
        if wallet is not None and wallet.kind == WalletKind.custodial:
            challenge = OrderChallenge(
                type="pin", otp_required=wallets.totp_enabled(session, o.user_id), expires_at=expires
            )
        else:
            challenge = OrderChallenge(type="signature", typed_data=o.typed_data, expires_at=expires)
    tx = session.get(OutgoingTx, o.lock_tx_id) if o.lock_tx_id else None

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
