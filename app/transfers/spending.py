"""What a wallet may still spend: its chain balance minus what it has already authorised.

A transfer or an escrow authorised but not yet mined has not left the chain balance, so the balance alone
would let a wallet with 5 coins authorise twenty transfers of 5 (nineteen would then fail on chain, at the
relayer's expense). Every authorisation of a spend therefore runs inside `authorising_spend`, which
serialises the authorisations of one wallet and refuses one the wallet cannot cover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlmodel import Session, col, select

from app.coin.service import InsufficientBalance, balance_now, balance_quote
from app.context import Context
from app.core.errors import Conflict
from app.core.money import format_amount
from app.core.sql import lock_rows
from app.models import Order, Transfer, Wallet

# Authorised but not final: the coins are still in the wallet, promised to the chain.
RESERVING_TRANSFERS = ("authorized", "submitted")
RESERVING_ESCROWS = ("authorized", "locking")


def reserved(session: Session, address: str) -> int:
    """Coins of `address` promised to authorised transfers and escrows that are not mined yet (summed
    here: amounts are stored as decimal text, uint256 being wider than any SQL integer)."""
    transfers = session.exec(
        select(Transfer.amount).where(
            col(Transfer.from_address) == address, col(Transfer.status).in_(RESERVING_TRANSFERS)
        )
    ).all()
    escrows = session.exec(
        select(Order.escrow_amount).where(
            col(Order.wallet_address) == address, col(Order.escrow_status).in_(RESERVING_ESCROWS)
        )
    ).all()
    return sum(int(a) for a in transfers) + sum(int(a) for a in escrows)


def available(ctx: Context, session: Session, address: str, *, exact: bool = True) -> int:
    """Balance minus reservations. The reservations are read first: a transfer mined in between is then
    counted twice (refusing too much, safe); the other order could miss it and allow too much. Not
    `exact`: a balance read up to a second ago (balance_quote), for a first answer that binds nothing."""
    held = reserved(session, address)
    return (balance_now if exact else balance_quote)(ctx, address) - held


def check_available(
    ctx: Context, session: Session, address: str, amount: int, what: str, *, exact: bool = True
) -> None:
    left = available(ctx, session, address, exact=exact)
    if amount > left:
        raise InsufficientBalance(
            f"{what} needs {format_amount(amount)} coins; the wallet has {format_amount(max(left, 0))} available "
            "(its balance less what it has already authorised)"
        )


@contextmanager
def authorising_spend(
    ctx: Context,
    session: Session,
    wallet: Wallet,
    amount: int,
    what: str,
    still_pending: Callable[[], bool],
) -> Iterator[None]:
    """The one way to authorise a spend of `amount` from `wallet`:

        with authorising_spend(ctx, session, wallet, amount, "this transfer", still_pending):
            ...compare-and-set the transfer or order to its authorised state...

    Takes the wallet's row lock (held until the end of the block), so the authorisations spending from
    one address run one at a time; refuses with Conflict (409) when `still_pending()`, read under the lock, says
    another request authorised this one meanwhile, and with InsufficientBalance (422) when the balance
    less reservations cannot cover `amount`; then runs the block and commits. Any error rolls back,
    which also releases the lock. Enter it after the PIN, one-time code or signature checks: those may
    commit the session themselves."""
    try:
        # Per address, not per row: two accounts may have linked the same mobile wallet.
        table = Wallet.__table__  # type: ignore[attr-defined]
        lock_rows(session, table, table.c.address == wallet.address)
        if not still_pending():
            raise Conflict(f"{what} was authorised, or has ended, in another request meanwhile")
        check_available(ctx, session, wallet.address, amount, what)
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise
