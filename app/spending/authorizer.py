"""The one way to authorise a spend from a user's wallet: a transfer, a buy order's escrow, and whatever
spends next.

An act that moves no coins but needs the same factors (enabling the trading agent) calls `verify(...)`:
step 1's checks, without signing.

Two steps for a spend, in this order:
1. `sign(...)`: the wallet's factors (PIN and one-time code for a custodial wallet, which we then sign
   with; the holder's own signature for a linked one) over the spend's EIP-712 typed data. The factor
   checks may commit the session themselves (attempt counters), so they come before step 2.
2. `authorising_spend(...)`: under the wallet's row lock, the caller's compare-and-set must still match
   (else 409: another request authorised it meanwhile); it makes the spend a hold, and the balance less
   every hold authorised and not mined (`holds`, this one included) must not go below zero (else 422,
   and the compare-and-set is rolled back); the caller's block records the rest, and everything commits
   together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from sqlalchemy import Update
from sqlmodel import Session

from app.context import Context
from app.core.errors import Conflict
from app.core.sql import lock_rows
from app.spending.errors import AuthorizationMissing, WrongSigner
from app.spending.holds import check_available
from app.wallets import service as wallets
from app.wallets.models import UserTotp, Wallet, WalletKind
from wallet.signer import recover_digest
from wallet.typed_data import split_signature, typed_data_digest


class Factors(Protocol):
    """What a request brings to authorise a spend (TransferAuthorize, OrderAuthorize, ...)."""

    pin: str | None
    otp: str | None
    signature: str | None


class Factor(StrEnum):
    """What authorised: the PIN (a custodial wallet without a one-time code app), the PIN and a code, or
    the linked wallet holder's signature."""

    pin = "pin"
    pin_otp = "pin+otp"
    signature = "signature"


@dataclass(frozen=True)
class Signed:
    signature: bytes  # r || s || v
    digest: bytes  # the EIP-712 digest signed
    how: Factor
    # The right PIN's record (its attempt counter starting over), written with the spend it authorises.
    record_success: Callable[[Session], None] | None = None


def sign(
    ctx: Context,
    session: Session,
    wallet: Wallet,
    typed_data: Mapping[str, Any],
    factors: Factors,
    *,
    record_with_spend: bool = False,
    enrolment: UserTotp | Literal["unread"] | None = "unread",
) -> Signed:
    """The wallet's signature over `typed_data`, given the request's factors; refuses with
    AuthorizationMissing or WrongSigner (422), or the wallet's PIN and one-time-code errors.
    `record_with_spend`: a right PIN's record is left to `authorising_spend(..., signed)` (one commit
    fewer); else it is committed here. `enrolment`: the user's one-time-code enrolment, when the caller
    read it already (`wallets.otp_enrolment`)."""
    if wallet.kind == WalletKind.custodial:
        pin = _require_pin(factors)
        # Read and sign first: the PIN's attempt is the transaction's first write, and it holds the wallet's
        # row lock (SQLite: the database's write lock) until the spend commits. The signature is used only
        # once the PIN (and code) proved right; the key never needed the PIN to open.
        totp = wallets.otp_enrolment(session, wallet.user_id) if isinstance(enrolment, str) else enrolment
        signature, digest = wallets.signer_for(ctx, wallet).sign_typed_data_with_digest(typed_data)
        record_success = wallets.verify_pin(ctx, session, wallet, pin)
        try:
            used_otp = wallets.check_otp_of(ctx, session, totp, wallet.user_id, factors.otp)
        except BaseException:
            _record_alone(session, record_success)
            raise
        how = Factor.pin_otp if used_otp else Factor.pin
        if not record_with_spend:
            record_success(session)
            session.commit()
            return Signed(signature, digest, how)
        return Signed(signature, digest, how, record_success)
    signature, digest = _holder_signature(
        wallet,
        typed_data,
        factors,
        "sign exactly the typed_data you were given (our chain id and coin contract)",
    )
    return Signed(signature, digest, Factor.signature)


def verify(
    ctx: Context, session: Session, wallet: Wallet, typed_data: Mapping[str, Any], factors: Factors
) -> Factor:
    """The same checks as `sign` for an act that moves no coins (enabling the trading agent), signing
    nothing: a custodial wallet's PIN and one-time code, with their attempt limits and lockout, or a linked
    wallet holder's signature over `typed_data`. Refuses as `sign` does; returns the factors that passed."""
    if wallet.kind == WalletKind.custodial:
        return Factor.pin_otp if _custodial_factors(ctx, session, wallet, factors) else Factor.pin
    _holder_signature(wallet, typed_data, factors, "sign exactly the typed_data you were given")
    return Factor.signature


def _custodial_factors(ctx: Context, session: Session, wallet: Wallet, factors: Factors) -> bool:
    """Checks the PIN, then the one-time code when enrolled (each may commit its attempt counter);
    True when a code was used."""
    wallets.check_pin(ctx, session, wallet, _require_pin(factors))
    return wallets.check_otp(ctx, session, wallet.user_id, factors.otp)


def _require_pin(factors: Factors) -> str:
    """The request's PIN, which a custodial wallet needs to authorise anything."""
    if factors.pin is None:
        raise AuthorizationMissing("a custodial wallet authorises with its pin (and otp when enrolled)")
    return factors.pin


def _holder_signature(
    wallet: Wallet, typed_data: Mapping[str, Any], factors: Factors, hint: str
) -> tuple[bytes, bytes]:
    """The linked wallet holder's signature over `typed_data` and its digest, checked to recover to the
    wallet's address."""
    if factors.signature is None:
        raise AuthorizationMissing("a linked wallet authorises with a signature over typed_data")
    try:
        signature = bytes.fromhex(factors.signature.removeprefix("0x"))
        digest = typed_data_digest(typed_data)
        signer = recover_digest(digest, signature)
        split_signature(signature)
    except ValueError:
        raise WrongSigner("the signature is malformed") from None
    if signer != wallet.address:
        raise WrongSigner(f"the signature recovers to {signer}, not {wallet.address}: {hint}", signer=signer)
    return signature, digest


def _record_alone(session: Session, record: Callable[[Session], None]) -> None:
    """Writes a right PIN's record in a transaction of its own (the one it came with rolled back)."""
    session.rollback()
    record(session)
    session.commit()


@contextmanager
def authorising_spend(
    ctx: Context,
    session: Session,
    wallet: Wallet,
    amount: int,
    what: str,
    compare_and_set: Update,
    signed: Signed | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    rechecked: bool = False,
) -> Iterator[None]:
    """Authorises a spend of `amount` from `wallet` by running `compare_and_set` (an UPDATE whose WHERE
    says "still waiting for its authorisation" and whose SET makes it authorised, which also makes it a
    hold on the wallet):

        with authorising_spend(ctx, session, wallet, amount, "this transfer", update(Transfer)...):
            ...record the steps of the authorisation...

    The wallet's row lock, held until the end of the block, runs the authorisations spending from one
    address one at a time. Any error rolls back, which also releases the lock. `signed`: its right PIN's
    record is written in this transaction (one commit fewer), or alone if this one rolls back. `params`:
    the compare-and-set's parameters (a statement built once, with bind parameters). `rechecked`:
    the spend's coins are checked against the chain again before they move (a buy order's escrow), so a
    balance read within the last second may answer yes (`holds.check_available`)."""
    record = signed.record_success if signed is not None else None
    try:
        if record is None:
            # Per address, not per row: two accounts may have linked the same mobile wallet.
            table = Wallet.__table__  # type: ignore[attr-defined]
            lock_rows(session, table, table.c.address == wallet.address)
        else:
            # A right PIN is an UPDATE of this custodial wallet's row: the check's own in this transaction
            # (then `record` writes nothing), or the record's here when a commit came between (the one-time
            # code's). Either takes the row's lock (SQLite: the write lock) until the end, before the
            # compare-and-set, so it is the lock. No other row has the address: only our key could have
            # linked it elsewhere, and it signs no link message.
            record(session)
        if compare_and_set.whereclause is None:
            raise TypeError("a compare-and-set names the state it expects")
        # The compare-and-set first: a duplicate authorisation gets 409, not a balance refusal. It makes the
        # spend one of the wallet's holds, so the balance check counts it with the others.
        if session.execute(compare_and_set, params).rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"{what} was authorised, or has ended, in another request meanwhile")
        # A linked wallet's spend that is not `rechecked` (a transfer, which binds at once) reads the chain
        # (one eth_call): its holder may have moved coins on chain since any earlier read, which none of our
        # records show, so a recent balance less our holds is no lower bound. Answered from it, the spend
        # would be authorised and then fail in its relay batch (the relay isolates it; the transfer ends
        # failed after a 200). The read leaves only what is mined after it, as for any spend.
        own_key = wallet.kind == WalletKind.custodial
        check_available(
            ctx,
            session,
            wallet.address,
            amount,
            what,
            own_key=own_key,
            counted=True,
            rechecked=rechecked,
        )
        yield
        session.commit()
    except BaseException:
        session.rollback()
        if record is not None:
            _record_alone(session, record)
        raise
