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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Numeric,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlmodel import Session

from app.coin.errors import InsufficientBalance
from app.coin.service import BALANCE_QUOTE_SECONDS, balance_now, balance_quote, recent_balance
from app.context import Context
from app.core.money import format_amount


@dataclass(frozen=True)
class Hold:
    """Rows of one table that hold coins of a wallet: `amount` from `address` while `status` is one of
    `holding` (authorised, not mined yet); once `status` is one of `spent` the coins have left the wallet
    on chain, and `changed_at` is at or after the moment our records learnt it."""

    amount: Any
    address: Any
    status: Any
    holding: tuple[str, ...]
    # Where known: the states in which the coins have left the wallet on chain, and the column stamped
    # when our records learnt it. A custodial wallet's balance is answered without an eth_call only
    # while every registered hold says so (`_spendable_from_recent_balance`).
    spent: tuple[str, ...] = ()
    changed_at: Any = None


HOLDS: list[Hold] = []  # one per table, appended when its models module is imported


def register(hold: Hold) -> Hold:
    """Count ``hold``'s spends; it replaces an earlier hold on the same table (a models module imported
    again must not count every spend twice)."""
    table = hold.amount.class_.__tablename__
    HOLDS[:] = [h for h in HOLDS if h.amount.class_.__tablename__ != table]
    HOLDS.append(hold)
    _queries.clear()
    return hold


# A custodial wallet's chain balance, read by an eth_call, is reused this long by this process (see
# `_spendable_from_recent_balance`); CLOCK_MARGIN widens the window of spends counted against it, against clock skew
# between the service's processes.
OWN_KEY_BALANCE_SECONDS = 10.0
# A spend checked again against the chain before its coins move (`check_available(..., rechecked=True)`)
# reuses a balance read this recently, whoever holds the key.
RECHECKED_BALANCE_SECONDS = BALANCE_QUOTE_SECONDS
CLOCK_MARGIN = timedelta(seconds=2)


def _column(attribute: Any) -> Any:
    """The table column behind a model's attribute."""
    return attribute.property.columns[0]


def _holds_query(with_spent: bool, dialect: str) -> Any:
    """One statement over every kind of spend (it runs on every create and authorisation), built once: its
    compiled form and cache key are reused; the statuses are plain equalities, not an IN list expanded at
    each run. Plain Core, on the tables' columns: the ORM's execution path cost more than the query. It
    answers one row (the sum; on SQLite the amounts in one text): one row per hold cost more than the
    query (13 % of a signature buy's CPU with 190 open buy orders)."""
    parts = []
    for hold in HOLDS:
        status = _column(hold.status)
        counted: ColumnElement[bool] = or_(*(status == s for s in hold.holding))
        if with_spent:
            gone = or_(*(status == s for s in hold.spent))
            counted = or_(counted, and_(gone, _column(hold.changed_at) >= bindparam("since")))
        address = _column(hold.address)
        parts.append(
            select(_column(hold.amount).label("amount")).where(address == bindparam("address"), counted)
        )
    amount = union_all(*parts).subquery().c.amount
    if dialect == "sqlite":
        # SQLite's SUM is 64-bit (an overflow is an error) and reads wider text as a float: the amounts
        # come back as one comma-separated text, summed here (a third of the CPU of one row per hold)
        return select(func.group_concat(amount, literal_column("','")))
    return select(func.sum(cast(amount, Numeric)))  # exact


_queries: dict[tuple[bool, str], Any] = {}  # built on first use, after every hold has registered


def _query(with_spent: bool, dialect: str) -> Any:
    query = _queries.get((with_spent, dialect))
    if query is None:
        query = _queries[with_spent, dialect] = _holds_query(with_spent, dialect)
    return query


def reserved(session: Session, address: str, *, spent_since: datetime | None = None) -> int:
    """Coins of `address` promised to authorised spends that are not mined yet (summed exactly: amounts
    are stored as decimal text, uint256 being wider than any SQL integer; SQLite's are summed here). With
    `spent_since`, also the spends our records saw leave the wallet at or after that moment."""
    dialect = session.get_bind().dialect.name
    if spent_since is None:
        total = session.execute(_query(False, dialect), {"address": address}).scalar()
    else:
        total = session.execute(_query(True, dialect), {"address": address, "since": spent_since}).scalar()
    if total is None:  # no holds
        return 0
    return sum(map(int, total.split(","))) if isinstance(total, str) else int(total)


def available(ctx: Context, session: Session, address: str, *, exact: bool = True) -> int:
    """Balance minus reservations. The reservations are read first: a transfer mined in between is then
    counted twice (refusing too much, safe); the other order could miss it and allow too much. Not
    `exact`: a balance read up to a second ago (balance_quote), for a first answer that binds nothing."""
    held = reserved(session, address)
    if not exact:
        return balance_quote(ctx, address) - held
    return balance_now(ctx, address) - held  # remembered for `_spendable_from_recent_balance`


def _spendable_from_recent_balance(
    ctx: Context, session: Session, address: str, max_age: float = OWN_KEY_BALANCE_SECONDS
) -> int | None:
    """A lower bound of what a wallet may spend, from this process's recent read of its balance and our
    records of its spends, without asking the chain; None if no balance of it was read within `max_age`
    seconds. Sound for a custodial wallet (below); for a linked one only where the spend is checked
    against the chain again before its coins move (`rechecked`).

    Only we hold a custodial wallet's key, and it signs only the spends listed in HOLDS (never an
    approval or a permit that `transferFrom` or `burnFrom` could draw on), so coins leave it only
    through those spends. A new kind of spend must be added to HOLDS, with its `spent` states.
    A balance B read at moment T reflects every spend mined before the read; a spend mined after it is
    either still holding, or our records marked it spent after T. So B less the holding spends and less
    the spends marked spent since T (some of those counted twice: only lower) is at most the exact answer;
    coins received since T are missing (only lower too). Callers that find it short ask the chain.
    `check_available(..., rechecked=True)` uses the same answer for a linked wallet too, read within the
    last second, where the spend is checked against the chain again before its coins move."""
    if not _answers_from_reads():
        return None  # a kind of spend that does not say when its coins left: ask the chain
    # Wallet addresses are stored checksummed, as balance_now keys its reads; another spelling only misses.
    read = recent_balance(ctx, address, max_age)
    if read is None:
        return None
    return read.value - reserved(session, address, spent_since=read.read_before - CLOCK_MARGIN)


def _answers_from_reads() -> bool:
    """Whether every kind of spend says when its coins left the wallet, as `_spendable_from_recent_balance`
    needs to answer from a balance read earlier."""
    return all(hold.spent and hold.changed_at is not None for hold in HOLDS)


def check_available(
    ctx: Context,
    session: Session,
    address: str,
    amount: int,
    what: str,
    *,
    exact: bool = True,
    own_key: bool = False,
    counted: bool = False,
    rechecked: bool = False,
    before_locks: bool = False,
) -> None:
    """Refuses (InsufficientBalance) a spend of `amount` its wallet cannot cover. `counted`: the spend is
    among the holds already (its compare-and-set ran in this transaction). `own_key`: a custodial wallet
    (its key is ours alone): a recent balance of it with our own record of its spends may answer yes
    without an eth_call; a no is always checked against the chain, so the answer is the exact one.
    `rechecked`: the spend moves no coins yet and is checked again against the chain before it does (a buy
    order's escrow, when the order first matches: app/market/escrow.py); a yes may then come the same way
    from a balance read within the last second (RECHECKED_BALANCE_SECONDS) for any wallet. A linked
    wallet's owner may have spent since behind our back, which the later check catches as it would one
    spent a moment after an exact read; a no is the chain's answer here too.

    `before_locks`: the same spend's check is made again under the caller's locks (with the same
    `own_key` and `rechecked`), and this call comes before the caller takes them (the wallet's, and any it
    takes before that one, like the market's change counter, which every order write waits for). It
    refuses nothing and reads no holds: it only makes sure the check under the locks finds a balance read
    recently enough to answer from, reading it from the chain now if this process has none (a phone takes
    longer than RECHECKED_BALANCE_SECONDS to sign), so that no eth_call waits while the locks are held;
    only a refusal there still asks the chain. Without `own_key` or `rechecked` it does nothing: that
    check asks the chain anyway."""
    needed = 0 if counted else amount
    max_age = OWN_KEY_BALANCE_SECONDS if own_key else RECHECKED_BALANCE_SECONDS
    if before_locks:
        if (own_key or rechecked) and _answers_from_reads() and recent_balance(ctx, address, max_age) is None:
            balance_now(ctx, address)
        return
    if own_key or rechecked:
        lower = _spendable_from_recent_balance(ctx, session, address, max_age)
        if lower is not None and needed <= lower:
            return
    left = available(ctx, session, address, exact=exact)
    if needed > left:
        has = left + amount - needed  # what the wallet had for this spend
        raise InsufficientBalance(
            f"{what} needs {format_amount(amount)} coins; the wallet has {format_amount(max(has, 0))} available "
            "(its balance less what it has already authorised)"
        )
