"""Coin transfers as a chain of signed, recorded steps, relayed gas-free.

requested -> challenge_issued -> authorized -> signed -> submitted -> mined -> confirmed | failed

Authorised transfers are relayed in batches through AuthorizationRelay (many ERC-3009 authorizations per
transaction). The ERC-3009 nonce derives from the transfer id, so a transfer can move coins at most once
whatever is retried; every state change is committed before the next step starts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, or_
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from app.coin.service import chain_now, coin_name, ensure_not_paused, resolve_recipient
from app.context import Context
from app.core.crash import crash_point
from app.core.errors import AppError, Conflict, NotFound
from app.core.money import format_amount, parse_amount
from app.core.security import utcnow
from app.idempotency import service as idempotency
from app.spending import authorizer
from app.spending.holds import check_available
from app.transfers.batching import wake_batcher
from app.transfers.errors import AuthorizationExpired, NotYetValid
from app.transfers.models import StepKind, Transfer, TransferStatus, TransferStep
from app.transfers.schemas import Challenge, StepPublic, TransferAuthorize, TransferCreate, TransferPublic
from app.transfers.steps import StepLog, fail
from app.users.models import User
from app.wallets import service as wallets
from app.wallets.models import UserTotp, Wallet, WalletKind
from wallet.models import OutgoingTx
from wallet.relayer import TxStatus
from wallet.typed_data import (
    TokenDomain,
    nonce_for,
    transfer_with_authorization,
    typed_data_digest,
)

VALIDITY_SECONDS = 300

OPEN = (TransferStatus.pending_authorization, TransferStatus.authorized, TransferStatus.submitted)
TRANSFERS: Table = Transfer.__table__  # type: ignore[attr-defined]
INSERT_TRANSFER = TRANSFERS.insert()  # built once: its cache key is computed once
# Compare-and-set: of two concurrent authorizations only one passes. Core, built once.
AUTHORISE = (
    TRANSFERS.update()
    .where(
        TRANSFERS.c.id == bindparam("transfer_id"),
        TRANSFERS.c.status == TransferStatus.pending_authorization,
    )
    .values(status=TransferStatus.authorized, signature=bindparam("sig"), updated_at=bindparam("at"))
)


def _domain(ctx: Context) -> TokenDomain:
    return TokenDomain(name=coin_name(ctx), chain_id=ctx.chain_id, verifying_contract=ctx.coin.address)


def create(
    ctx: Context, session: Session, user: User, req: TransferCreate, key: str | None
) -> tuple[int, dict[str, Any]]:
    written: dict[str, Written] = {}  # what the answer shows of a new transfer, without reading it back
    return idempotency.create_once(
        session,
        f"{user.id}:transfers.create",
        key,
        req.model_dump(),
        kind="transfer",
        load=lambda transfer_id: get_transfer(session, transfer_id),
        make=lambda: _new_transfer(ctx, session, user, req, written),
        ident=lambda transfer: transfer.id,
        render=lambda transfer: _render_new(session, transfer, written.get(transfer.id)),
    )


@dataclass(frozen=True)
class Written:
    steps: list[StepPublic]
    otp_required: bool


def _render_new(session: Session, transfer: Transfer, written: Written | None) -> dict[str, Any]:
    if written is None:  # created by an earlier attempt with the same key
        return to_public(session, transfer).model_dump(mode="json")
    return to_public(session, transfer, written.steps, otp_required=written.otp_required).model_dump(
        mode="json"
    )


def _new_transfer(
    ctx: Context, session: Session, user: User, req: TransferCreate, written: dict[str, Written]
) -> Transfer:
    """Reads and checks everything first, then writes: on SQLite the first write takes the database's
    write lock until the commit, so the reads (the one-time code's enrolment too) stay out of it."""
    to_address, to_user_id = resolve_recipient(session, req.to)  # no query for an address
    wallet, otp_enrolled, owner = wallets.sender_and_recipient(session, user.id or 0, to_address)
    if to_user_id is None:
        to_user_id = owner
    amount = parse_amount(req.amount)
    if to_address == wallet.address:
        raise AppError("you cannot send coins to your own wallet")
    ensure_not_paused(ctx)
    # A first answer for the user; the binding check is at authorisation, under the wallet's lock.
    check_available(
        ctx,
        session,
        wallet.address,
        amount,
        "this transfer",
        exact=False,
        own_key=wallet.kind == WalletKind.custodial,
    )
    now = chain_now(ctx)
    transfer_id = uuid.uuid4().hex
    nonce = nonce_for("transfer", transfer_id)
    typed = transfer_with_authorization(
        _domain(ctx),
        from_=wallet.address,
        to=to_address,
        value=amount,
        valid_after=0,
        valid_before=now + VALIDITY_SECONDS,
        nonce=nonce,
    )
    custodial = wallet.kind == WalletKind.custodial
    otp_required = custodial and otp_enrolled
    stamp = utcnow()
    row: dict[str, Any] = {
        "id": transfer_id,
        "user_id": user.id or 0,
        "wallet_kind": wallet.kind,
        "from_address": wallet.address,
        "to_address": to_address,
        "to_user_id": to_user_id,
        "amount": amount,
        "memo": req.memo,
        "status": TransferStatus.pending_authorization,
        "nonce": "0x" + nonce.hex(),
        "valid_after": 0,
        "valid_before": now + VALIDITY_SECONDS,
        "typed_data": typed,
        "signature": None,
        "tx_id": None,
        "failure_reason": None,
        "created_at": stamp,
        "updated_at": stamp,
    }
    # One Core INSERT: the ORM's unit of work costs more than the statement, and the row is not read back.
    # The object only answers (`to_public`): built without the ORM's instrumented __init__, which cost
    # seven times as much for nothing the answer needs.
    session.execute(INSERT_TRANSFER, row)
    transfer = Transfer.model_construct(**row)
    steps = StepLog(session, [transfer], new=True)
    steps.add(transfer, StepKind.requested, to=to_address, amount=format_amount(amount), memo=req.memo)
    how = "pin" if custodial else "signature"
    steps.add(transfer, StepKind.challenge_issued, type=how, digest="0x" + typed_data_digest(typed).hex())
    steps.write()
    written[transfer.id] = Written(steps.steps_of(transfer.id), otp_required)
    return transfer


# Built once (every authorisation and every GET of a transfer reads one): its cache key is computed once.
_TRANSFER_BY_ID = select(Transfer).where(col(Transfer.id) == bindparam("transfer_id"))


# An authorisation's reads in one statement: the transfer, its sender's active wallet (None: none any
# more) and one-time-code enrolment (None: not enrolled).
_TO_AUTHORISE = (
    select(Transfer, Wallet, UserTotp)
    .outerjoin(Wallet, and_(col(Wallet.user_id) == col(Transfer.user_id), col(Wallet.active).is_(True)))
    .outerjoin(UserTotp, col(UserTotp.user_id) == col(Transfer.user_id))
    .where(col(Transfer.id) == bindparam("transfer_id"))
)


def get_transfer(session: Session, transfer_id: str) -> Transfer | None:
    return session.exec(_TRANSFER_BY_ID, params={"transfer_id": transfer_id}).first()


def get_own(session: Session, user: User, transfer_id: str, *, may_receive: bool = False) -> Transfer:
    """The sender's transfer; with `may_receive`, also one to this user once its sender authorised it
    (until then it is only a draft of the sender's, which its recipient must not see)."""
    transfer = get_transfer(session, transfer_id)
    visible = transfer is not None and (
        transfer.user_id == user.id
        or (may_receive and transfer.to_user_id == user.id and transfer.signature is not None)
    )
    if transfer is None or not visible:
        raise NotFound(f"no transfer {transfer_id} of yours")
    return transfer


def authorize(
    ctx: Context, session: Session, user: User, transfer_id: str, req: TransferAuthorize
) -> TransferPublic:
    """Checks the PIN (and code) or the signature, then authorises the spend; answers with the transfer
    as authorised, without reading back what it wrote."""
    row = session.exec(_TO_AUTHORISE, params={"transfer_id": transfer_id}).first()
    if row is None or row[0].user_id != user.id:
        raise NotFound(f"no transfer {transfer_id} of yours")
    transfer, wallet, enrolment = row
    if transfer.status != TransferStatus.pending_authorization:
        raise Conflict(f"transfer {transfer_id} is already {transfer.status}")
    now = chain_now(ctx)
    if now >= transfer.valid_before - 5:
        fail(session, transfer, "authorization expired before it was given")
        session.commit()
        raise AuthorizationExpired("the authorization window has passed; create a new transfer")
    if now <= transfer.valid_after:
        raise NotYetValid("this authorization is not valid yet")
    if wallet is None:
        raise NotFound(wallets.NO_WALLET)
    if wallet.address != transfer.from_address:
        raise Conflict("the transfer was created for another wallet")
    # Its steps so far, read before the first write (the PIN's attempt in `sign`), which on SQLite holds
    # the write lock until the commit. Only the compare-and-set that passes adds steps to a waiting transfer.
    steps = StepLog(session, [transfer], read=True)
    signed = authorizer.sign(
        ctx, session, wallet, transfer.typed_data, req, record_with_spend=True, enrolment=enrolment
    )
    signature = "0x" + signed.signature.hex()
    cas = {"transfer_id": transfer_id, "sig": signature, "at": utcnow()}
    with authorizer.authorising_spend(
        ctx, session, wallet, transfer.amount, "this transfer", AUTHORISE, signed, params=cas
    ):
        steps.add(transfer, StepKind.authorized, how=signed.how)
        steps.add(
            transfer,
            StepKind.signed,
            digest="0x" + signed.digest.hex(),
            signature=signature,
            signer=transfer.from_address,
        )
        steps.write()
    crash_point("transfer.after_sign")
    wake_batcher(ctx)  # the batcher relays every authorisation waiting, many per transaction
    # What the compare-and-set wrote, without reading the row back (nothing to flush: not "dirty").
    for name, value in (("status", TransferStatus.authorized), ("signature", signature)):
        set_committed_value(transfer, name, value)
    return to_public(session, transfer, steps.steps_of(transfer.id))


def to_public(
    session: Session, t: Transfer, known: list[StepPublic] | None = None, *, otp_required: bool | None = None
) -> TransferPublic:
    """The transfer as the API shows it; `known`: its steps, when the caller has them all already;
    `otp_required`: whether its sender must give a one-time code, when the caller knows."""
    if known is None:
        known = [
            StepPublic(seq=s.seq, kind=s.kind, at=s.at, details=s.details)
            for s in session.exec(
                select(TransferStep)
                .where(col(TransferStep.transfer_id) == t.id)
                .order_by(col(TransferStep.seq))
            )
        ]
    steps = known
    tx = session.get(OutgoingTx, t.tx_id) if t.tx_id else None
    tx_hash = None
    for step in steps:
        if step.kind in (StepKind.submitted, StepKind.mined):
            tx_hash = step.details.get("tx_hash", tx_hash)
    challenge = None
    if t.status == TransferStatus.pending_authorization:
        expires = datetime.fromtimestamp(t.valid_before, UTC)
        if t.wallet_kind == WalletKind.custodial:
            if otp_required is None:
                otp_required = wallets.totp_enabled(session, t.user_id)
            challenge = Challenge(type="pin", otp_required=otp_required, expires_at=expires)
        else:
            challenge = Challenge(type="signature", typed_data=t.typed_data, expires_at=expires)
    status = TransferStatus.submitted if t.status == TransferStatus.authorized else t.status
    return TransferPublic(
        id=t.id,
        status=status,
        from_address=t.from_address,
        to_address=t.to_address,
        to_user_id=t.to_user_id,
        amount=format_amount(t.amount),
        memo=t.memo,
        created_at=t.created_at,
        tx_hash=(tx.tx_hash if tx and tx.tx_hash else tx_hash),
        block_number=tx.block_number if tx and tx.status == TxStatus.confirmed else None,
        failure_reason=t.failure_reason,
        challenge=challenge,
        steps=steps,
    )


def list_for(session: Session, user: User, direction: str | None, limit: int) -> list[Transfer]:
    wallet = wallets.active_wallet(session, user.id or 0)
    incoming = and_(
        or_(
            col(Transfer.to_user_id) == user.id,
            col(Transfer.to_address) == (wallet.address if wallet else ""),
        ),
        col(Transfer.signature).is_not(None),  # recipients see a transfer once its sender authorised it
    )
    outgoing = col(Transfer.user_id) == user.id
    cond = {"in": incoming, "out": outgoing}.get(direction or "", or_(incoming, outgoing))
    q = select(Transfer).where(cond).order_by(col(Transfer.created_at).desc()).limit(limit)
    return list(session.exec(q))
