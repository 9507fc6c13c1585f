"""Coin transfers as a chain of signed, recorded steps, relayed gas-free.

requested -> challenge_issued -> authorized -> signed -> submitted -> mined -> confirmed | failed

Authorised transfers are relayed in batches through AuthorizationRelay (many ERC-3009 authorizations per
transaction). The ERC-3009 nonce derives from the transfer id, so a transfer can move coins at most once
whatever is retried; every state change is committed before the next step starts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from app import idempotency
from app.coin.service import chain_now, coin_name, ensure_not_paused, resolve_recipient
from app.context import Context
from app.core.crash import crash_point
from app.core.errors import AppError, Conflict, NotFound
from app.core.money import format_amount, parse_amount
from app.core.security import utcnow
from app.events.service import emit_rows
from app.models import Transfer, TransferStep, User, Wallet
from app.transfers.schemas import Challenge, StepPublic, TransferAuthorize, TransferCreate, TransferPublic
from app.transfers.spending import authorising_spend, check_available
from app.wallets import service as wallets
from wallet.models import OutgoingTx
from wallet.signer import recover_digest
from wallet.typed_data import (
    TokenDomain,
    nonce_for,
    split_signature,
    transfer_with_authorization,
    typed_data_digest,
)

VALIDITY_SECONDS = 300

OPEN = ("pending_authorization", "authorized", "submitted")


class AuthorizationExpired(AppError):
    status_code = 422


class NotYetValid(AppError):
    status_code = 422


class WrongSigner(AppError):
    status_code = 422


class AuthorizationMissing(AppError):
    status_code = 422


class StepLog:
    """Appends steps to some transfers, and the matching live events for the sender (and for the
    recipient once final); `write()` stores them, in as many statements as there are tables, whatever
    the number of transfers (a batch of 150 too). The transfers' last sequence numbers are read in one
    query; `new=True` for transfers created just now, `read=True` to read their steps so far as well, so
    that an answer can show every step without reading them again (`steps_of`)."""

    def __init__(
        self, session: Session, transfers: Iterable[Transfer], *, new: bool = False, read: bool = False
    ) -> None:
        self.session = session
        ids = [t.id for t in transfers]
        self._keep = new or read
        self._steps: dict[str, list[StepPublic]] = {i: [] for i in ids}
        self._rows: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        if new or not ids:
            self._next = dict.fromkeys(ids, 1)
        elif read:
            table = TransferStep.__table__  # type: ignore[attr-defined]
            query = table.select().where(table.c.transfer_id.in_(ids)).order_by(table.c.seq)
            for row in session.execute(query):
                step = StepPublic(seq=row.seq, kind=row.kind, at=row.at, details=row.details)
                self._steps[row.transfer_id].append(step)
            self._next = {i: (self._steps[i][-1].seq if self._steps[i] else 0) + 1 for i in ids}
        else:
            rows = session.exec(
                select(TransferStep.transfer_id, func.max(TransferStep.seq))
                .where(col(TransferStep.transfer_id).in_(ids))
                .group_by(col(TransferStep.transfer_id))
            ).all()
            last = {tid: int(seq or 0) for tid, seq in rows}
            self._next = {i: last.get(i, 0) + 1 for i in ids}

    def add(self, transfer: Transfer, kind: str, **details: Any) -> None:
        seq = self._next[transfer.id]
        self._next[transfer.id] = seq + 1
        at = utcnow()
        self._rows.append(
            {"transfer_id": transfer.id, "seq": seq, "kind": kind, "at": at, "details": details}
        )
        if self._keep:
            self._steps[transfer.id].append(StepPublic(seq=seq, kind=kind, at=at, details=details))
        data = {"transfer_id": transfer.id, "step": kind, **details}
        self._events.append({"user_id": transfer.user_id, "kind": "transfer.step", "at": at, "data": data})
        if kind == "confirmed" and transfer.to_user_id is not None:
            received = {
                "transfer_id": transfer.id,
                "amount": format_amount(transfer.amount),
                "from_address": transfer.from_address,
            }
            self._events.append(
                {"user_id": transfer.to_user_id, "kind": "transfer.received", "at": at, "data": received}
            )

    def write(self) -> None:
        """Stores the steps added so far, in the session's transaction (after its pending changes, such
        as a new transfer row the steps refer to)."""
        if not self._rows:
            return
        self.session.flush()
        self.session.execute(TransferStep.__table__.insert(), self._rows)  # type: ignore[attr-defined]
        emit_rows(self.session, self._events)
        self._rows, self._events = [], []

    def steps_of(self, transfer_id: str) -> list[StepPublic]:
        return list(self._steps[transfer_id])


def _domain(ctx: Context) -> TokenDomain:
    return TokenDomain(name=coin_name(ctx), chain_id=ctx.chain_id, verifying_contract=ctx.coin.address)


def create(
    ctx: Context, session: Session, user: User, req: TransferCreate, key: str | None
) -> tuple[int, dict[str, Any]]:
    written: dict[str, list[StepPublic]] = {}  # the new transfer's steps, to answer without reading them
    return idempotency.create_once(
        session,
        f"{user.id}:transfers.create",
        key,
        req.model_dump(),
        kind="transfer",
        load=lambda transfer_id: session.get(Transfer, transfer_id),
        make=lambda: _new_transfer(ctx, session, user, req, written),
        ident=lambda transfer: transfer.id,
        render=lambda transfer: to_public(session, transfer, written.get(transfer.id)).model_dump(
            mode="json"
        ),
    )


def _new_transfer(
    ctx: Context, session: Session, user: User, req: TransferCreate, written: dict[str, list[StepPublic]]
) -> Transfer:
    wallet = wallets.require_wallet(session, user.id or 0)
    to_address, to_user_id = resolve_recipient(session, req.to)
    if to_user_id is None:
        to_user_id = _user_of(session, to_address)
    amount = parse_amount(req.amount)
    if to_address == wallet.address:
        raise AppError("you cannot send coins to your own wallet")
    ensure_not_paused(ctx)
    # A first answer for the user; the binding check is at authorisation, under the wallet's lock.
    check_available(ctx, session, wallet.address, amount, "this transfer", exact=False)
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
    stamp = utcnow()
    transfer = Transfer(
        id=transfer_id,
        user_id=user.id or 0,
        wallet_kind=wallet.kind,
        from_address=wallet.address,
        to_address=to_address,
        to_user_id=to_user_id,
        amount=amount,
        memo=req.memo,
        status="pending_authorization",
        nonce="0x" + nonce.hex(),
        valid_after=0,
        valid_before=now + VALIDITY_SECONDS,
        typed_data=typed,
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(transfer)
    steps = StepLog(session, [transfer], new=True)
    steps.add(transfer, "requested", to=to_address, amount=format_amount(amount), memo=req.memo)
    how = "pin" if wallet.kind == "custodial" else "signature"
    steps.add(transfer, "challenge_issued", type=how, digest="0x" + typed_data_digest(typed).hex())
    steps.write()
    written[transfer.id] = steps.steps_of(transfer.id)
    return transfer


def _user_of(session: Session, address: str) -> int | None:
    wallet = session.exec(
        select(Wallet).where(col(Wallet.address) == address, col(Wallet.active).is_(True))
    ).first()
    return wallet.user_id if wallet else None


def get_own(session: Session, user: User, transfer_id: str, *, may_receive: bool = False) -> Transfer:
    """The sender's transfer; with `may_receive`, also one to this user once its sender authorised it
    (until then it is only a draft of the sender's, which its recipient must not see)."""
    transfer = session.get(Transfer, transfer_id)
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
    transfer = get_own(session, user, transfer_id)
    if transfer.status != "pending_authorization":
        raise Conflict(f"transfer {transfer_id} is already {transfer.status}")
    now = chain_now(ctx)
    if now >= transfer.valid_before - 5:
        _fail(session, transfer, "authorization expired before it was given")
        session.commit()
        raise AuthorizationExpired("the authorization window has passed; create a new transfer")
    if now <= transfer.valid_after:
        raise NotYetValid("this authorization is not valid yet")
    wallet = wallets.require_wallet(session, user.id or 0)
    if wallet.address != transfer.from_address:
        raise Conflict("the transfer was created for another wallet")
    if wallet.kind == "custodial":
        if req.pin is None:
            raise AuthorizationMissing("a custodial wallet authorises with its pin (and otp when enrolled)")
        wallets.check_pin(ctx, session, wallet, req.pin)
        used_otp = wallets.check_otp(ctx, session, user.id or 0, req.otp)
        signature, digest = wallets.signer_for(ctx, wallet).sign_typed_data_with_digest(transfer.typed_data)
        how = "pin+otp" if used_otp else "pin"
    else:
        if req.signature is None:
            raise AuthorizationMissing("a linked wallet authorises with a signature over typed_data")
        try:
            signature = bytes.fromhex(req.signature.removeprefix("0x"))
            digest = typed_data_digest(transfer.typed_data)
            signer = recover_digest(digest, signature)
            split_signature(signature)
        except ValueError:
            raise WrongSigner("the signature is malformed") from None
        if signer != transfer.from_address:
            raise WrongSigner(
                f"the signature recovers to {signer}, not {transfer.from_address}: sign exactly the typed_data "
                "this transfer returned (our chain id and coin contract)"
            )
        how = "signature"

    def still_pending() -> bool:
        status = session.exec(select(Transfer.status).where(col(Transfer.id) == transfer_id)).one()
        return bool(status == "pending_authorization")

    with authorising_spend(ctx, session, wallet, transfer.amount, "this transfer", still_pending):
        # Compare-and-set: of two concurrent authorizations only one passes.
        changed = session.exec(  # type: ignore[call-overload]
            update(Transfer)
            .where(col(Transfer.id) == transfer_id, col(Transfer.status) == "pending_authorization")
            .values(status="authorized", signature="0x" + signature.hex(), updated_at=utcnow())
        )
        if changed.rowcount != 1:
            raise Conflict(f"transfer {transfer_id} was authorised by another request")
        steps = StepLog(session, [transfer], read=True)
        steps.add(transfer, "authorized", how=how)
        steps.add(
            transfer,
            "signed",
            digest="0x" + digest.hex(),
            signature="0x" + signature.hex(),
            signer=transfer.from_address,
        )
        steps.write()
    crash_point("transfer.after_sign")
    wake_batcher(ctx)  # the batcher relays every authorisation waiting, many per transaction
    # What the compare-and-set wrote, without reading the row back (nothing to flush: not "dirty").
    for name, value in (("status", "authorized"), ("signature", "0x" + signature.hex())):
        set_committed_value(transfer, name, value)
    return to_public(session, transfer, steps.steps_of(transfer.id))


def _fail(session: Session, transfer: Transfer, reason: str, steps: StepLog | None = None) -> None:
    """Marks `transfer` failed; its step goes into `steps` (written by its owner), or is written now."""
    transfer.status, transfer.failure_reason, transfer.updated_at = "failed", reason, utcnow()
    session.add(transfer)
    log = steps or StepLog(session, [transfer])
    log.add(transfer, "failed", reason=reason)
    if steps is None:
        log.write()


def to_public(session: Session, t: Transfer, known: list[StepPublic] | None = None) -> TransferPublic:
    """The transfer as the API shows it; `known`: its steps, when the caller has them all already."""
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
        if step.kind in ("submitted", "mined"):
            tx_hash = step.details.get("tx_hash", tx_hash)
    challenge = None
    if t.status == "pending_authorization":
        expires = datetime.fromtimestamp(t.valid_before, UTC)
        if t.wallet_kind == "custodial":
            otp = wallets.totp_enabled(session, t.user_id)
            challenge = Challenge(type="pin", otp_required=otp, expires_at=expires)
        else:
            challenge = Challenge(type="signature", typed_data=t.typed_data, expires_at=expires)
    status = "submitted" if t.status == "authorized" else t.status
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
        block_number=tx.block_number if tx and tx.status == "confirmed" else None,
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


# -- relaying in batches ----------------------------------------------------------------------------

from app.transfers.batching import submit_batch, wake_batcher  # noqa: E402  (the batcher uses the helpers above)

__all__ = ["StepLog", "authorize", "create", "get_own", "list_for", "submit_batch", "to_public"]
