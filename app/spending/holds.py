"""What a wallet may still spend: its chain balance minus what it has already authorised.

A transfer or an escrow authorised but not yet mined has not left the chain balance, so the balance alone
would let a wallet with 5 coins authorise twenty transfers of 5 (nineteen would then fail on chain, at the
relayer's expense). Every kind of spend registers where its authorised-but-unmined amounts are, beside its
table (`register`: app/transfers/models.py, app/market/models.py; the spending domain sits below the
domains that spend, so it cannot import their tables); `authorizer.authorising_spend` refuses a spend
these holds leave uncovered. Every process that serves spends imports all of them (app/routes.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from app.coin.errors import InsufficientBalance
from app.coin.service import balance_now, balance_quote
from app.context import Context
from app.core.money import format_amount


@dataclass(frozen=True)
class Hold:
    """Rows of one table that hold coins of a wallet: `amount` from `address` while `status` is one of
    `holding` (authorised, not mined yet)."""

    amount: Any
    address: Any
    status: Any
    holding: tuple[str, ...]


HOLDS: list[Hold] = []  # one per table, appended when its models module is imported


def register(hold: Hold) -> Hold:
    HOLDS.append(hold)
    return hold


def reserved(session: Session, address: str) -> int:
    """Coins of `address` promised to authorised spends that are not mined yet (summed here: amounts are
    stored as decimal text, uint256 being wider than any SQL integer)."""
    total = 0
    for hold in HOLDS:
        amounts = session.exec(
            select(hold.amount).where(col(hold.address) == address, col(hold.status).in_(hold.holding))
        ).all()
        total += sum(int(a) for a in amounts)
    return total


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
