"""Issuing the energy coin: admin mint, burn, pause and unpause, each a recorded on-chain transaction."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlmodel import Session, col, or_, select
from web3 import Web3

from app.audit import service as audit
from app.coin.models import CoinOperation, CoinOperationKind, CoinOperationStatus
from app.coin.schemas import (
    CoinHistory,
    CoinHistoryEntry,
    CoinInfo,
    CoinOperationPublic,
    NativeCurrency,
    WalletNetwork,
)
from app.context import BalanceRead, Context
from app.core.config import NETWORKS, Settings
from app.core.errors import AppError, ChainRejected, CoinPaused, NotFound, ServiceUnavailable
from app.core.money import format_amount, parse_account_ref
from app.core.security import utcnow
from app.idempotency import service as idempotency
from app.indexer.models import IndexerCheckpoint, TransferEvent
from app.indexer.service import CHECKPOINT
from app.users.models import User
from app.wallets.service import active_wallet
from common.abi_words import address_word, uint_word
from wallet.chain import ZERO_ADDRESS, raw_call
from wallet.models import OutgoingTx, TxAttempt
from wallet.purposes import Completions, Purpose, TxPurpose
from wallet.relayer import FINAL, TxRejected, TxStatus

log = logging.getLogger(__name__)
PURPOSE = TxPurpose.coin_operation


def resolve_recipient(session: Session, to: object) -> tuple[str, int | None]:
    """A 0x address, or a user id whose active wallet receives the coins: (address, user id or None).

    A missing user and a user without a wallet get the same answer, so `to` cannot be used to find out
    which user ids exist."""
    ref = parse_account_ref(to)
    if isinstance(ref, str):
        return ref, None
    wallet = active_wallet(session, ref)
    if wallet is None:
        raise NotFound(f"user {ref} cannot receive coins: no such user, or no wallet yet")
    return wallet.address, ref


def resolve_account(session: Session, to: object) -> str:
    """A 0x address, or a user id whose active wallet receives the coins."""
    return resolve_recipient(session, to)[0]


ICON_URL = "/ui/coin-icon.png"  # app/web/static/coin-icon.png, 256 x 256
KAIA_NETWORKS = {  # chain id -> (name, block explorer)
    1001: ("Kaia Kairos Testnet", "https://kairos.kaiascan.io"),
    8217: ("Kaia Mainnet", "https://kaiascan.io"),
}


def wallet_network(settings: Settings, chain_id: int) -> WalletNetwork:
    """Our chain as a browser wallet adds it. Only public endpoints: ESSX_RPC_URLS may hold an API key."""
    name, explorer = KAIA_NETWORKS.get(chain_id, (f"Chain {chain_id}", None))
    if settings.is_local:
        name = "ESSX local chain (anvil)"
    if settings.wallet_rpc_url:
        urls = [settings.wallet_rpc_url]
    elif settings.is_local:
        urls = settings.chain_urls[:1]
    else:
        urls = list(NETWORKS.get(settings.chain, (chain_id, []))[1])  # custom: none unless configured
    return WalletNetwork(
        chain_id_hex=hex(chain_id),
        chain_name=name,
        rpc_urls=urls,
        native_currency=NativeCurrency(name="KAIA", symbol="KAIA", decimals=18),
        block_explorer_urls=[explorer] if explorer else None,
    )


COIN_INFO_TTL = 1.0  # seconds: one block on Kaia


def cached_coin_info(ctx: Context) -> CoinInfo | None:
    """coin_info's answer while it is fresh, without any I/O (None: call coin_info)."""
    cached = ctx.cache.coin_info
    if cached is not None and time.monotonic() - cached[1] < COIN_INFO_TTL:
        info: CoinInfo = cached[0]
        return info
    return None


def coin_info(ctx: Context) -> CoinInfo:
    """The coin's public facts. Supply and pause state are read from the chain at most once per
    COIN_INFO_TTL (a dashboard polls this); our own mint, burn and pause routes drop the cache at once."""
    fresh = cached_coin_info(ctx)
    if fresh is not None:
        return fresh
    now = time.monotonic()
    static = ctx.cache.coin_static
    if not static:
        f = ctx.coin.functions
        static.update(name=f.name().call(), symbol=f.symbol().call(), decimals=int(f.decimals().call()))
    info = CoinInfo(
        address=ctx.coin.address,
        total_supply=format_amount(int(ctx.coin.functions.totalSupply().call())),
        chain_id=ctx.chain_id,
        paused=bool(ctx.coin.functions.paused().call()),
        icon_url=ICON_URL,
        network=wallet_network(ctx.settings, ctx.chain_id),
        **static,
    )
    ctx.cache.coin_info = (info, now)
    return info


def to_public(
    session: Session, op: CoinOperation, tx: OutgoingTx | None, status: str | None = None
) -> CoinOperationPublic:
    return CoinOperationPublic(
        id=op.id or 0,
        kind=op.kind,
        account=op.account,
        amount=format_amount(op.amount) if op.amount is not None else None,
        memo=op.memo,
        status=status or op.status,
        tx_hash=(tx.tx_hash or latest_hash(session, tx.id or 0)) if tx else None,
        block_number=tx.block_number if tx else None,
        error=tx.error if tx else None,
        created_at=op.created_at,
    )


def latest_hash(session: Session, tx_id: int) -> str | None:
    """The hash of the newest signed version (a replacement may have superseded the first)."""
    attempt = session.exec(
        select(TxAttempt).where(col(TxAttempt.tx_id) == tx_id).order_by(col(TxAttempt.id).desc())
    ).first()
    return attempt.tx_hash if attempt else None


def register_completions(completions: Completions) -> None:
    completions.register(PURPOSE, on_tx_final)


_OPS: Table = CoinOperation.__table__  # type: ignore[attr-defined]
_USERS: Table = User.__table__  # type: ignore[attr-defined]
_INSERT_OPERATION = insert(_OPS).returning(_OPS.c.id)
# Built once, executed with the operation's id and its new status: the finished operation and its actor's
# email in one statement (no ORM load of the user), without rebuilding the statement on each completion.
_FINISH_OPERATION = (
    update(_OPS)
    .where(_OPS.c.id == bindparam("op_id"), _OPS.c.status == CoinOperationStatus.submitted)
    .returning(
        _OPS.c.kind,
        _OPS.c.actor_id,
        _OPS.c.account,
        _OPS.c.amount,
        select(_USERS.c.email).where(_USERS.c.id == _OPS.c.actor_id).scalar_subquery(),
    )
)


def on_tx_final(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
    """Runs in the relayer's transaction when a coin operation's transaction is final, also after a
    restart, so the operation and its audit entry are finished exactly once: the status moves by a
    compare-and-set from `submitted` (one Core statement, no ORM load and flush of the operation)."""
    if purpose.ref_id is None:
        return
    status = CoinOperationStatus.confirmed if tx.status == TxStatus.confirmed else CoinOperationStatus.failed
    op = session.execute(_FINISH_OPERATION, {"op_id": purpose.ref_id, "status": status}).first()
    if op is None:  # no such operation, or finished already
        return
    kind, actor_id, account, amount, actor_email = op
    details: dict[str, Any] = {
        "operation": purpose.ref_id,
        "tx_hash": tx.tx_hash,
        "block_number": tx.block_number,
    }
    if amount is not None:
        details["amount"] = format_amount(amount)
    if tx.error:
        details["error"] = tx.error
    audit.record_by(
        session, actor_id, actor_email, f"coin.{kind}", target=account, details=details, outcome=status
    )


def final_status(tx: OutgoingTx | None, op: CoinOperation) -> str:
    """The operation's status once its transaction is final, as on_tx_final wrote it in the same database
    transaction that made the row final: no second read of the operation."""
    if tx is None or op.status != CoinOperationStatus.submitted or tx.status not in FINAL:
        return op.status
    return CoinOperationStatus.confirmed if tx.status == TxStatus.confirmed else CoinOperationStatus.failed


def execute(
    ctx: Context,
    session: Session,
    admin: User,
    kind: CoinOperationKind,
    key: str | None,
    body: dict[str, Any],
    build: Any,
) -> tuple[int, dict[str, Any]]:
    """Runs one admin coin operation under an Idempotency-Key.

    `build(session)` validates and returns (account, amount, call data, gas limit or None to estimate it);
    any AppError it raises is a 4xx that changes nothing on chain (it is still audited as rejected)."""
    claim = idempotency.claim(session, f"{admin.id}:coin.{kind}", key, body)
    if claim.replay:
        return claim.record.response_status or 200, claim.record.response_body or {}
    try:
        return _run_operation(ctx, session, admin, kind, body, build, claim)
    except Exception:
        # Whatever went wrong (a 4xx, or an unexpected error that becomes a 500), the key is free at once:
        # forgotten if nothing was started, else its lease ends so that a retry resumes the operation.
        idempotency.release(session, claim.record)
        lost = idempotency.lost_to(session, claim.record)  # a concurrent request took the key first
        if lost is None:
            raise
        return lost


def _run_operation(
    ctx: Context,
    session: Session,
    admin: User,
    kind: str,
    body: dict[str, Any],
    build: Any,
    claim: idempotency.Claim,
) -> tuple[int, dict[str, Any]]:
    op: CoinOperation | None = None
    fresh = False  # this request prepared the transaction (it is open, not final: no first read in wait)
    if claim.resumed and claim.record.resource:
        started = Purpose.parse(claim.record.resource)  # `coin_operation:<id>`, as attached below
        if started is None or started.ref_id is None:
            raise ValueError(f"idempotency record names no coin operation: {claim.record.resource!r}")
        op = session.get(CoinOperation, started.ref_id)
    if op is None:
        try:
            account, amount, data, gas = build(session)
            tx = ctx.relayer.prepare(
                session, to=ctx.coin.address, data=data, purpose=PURPOSE, gas=gas
            )  # its id follows
        except (AppError, TxRejected) as exc:
            idempotency.release(session, claim.record)
            reason = exc.detail if isinstance(exc, AppError) else exc.reason
            audit.record(
                session,
                admin,
                f"coin.{kind}",
                details={"request": body, "reason": reason},
                outcome="rejected",
            )
            session.commit()
            if isinstance(exc, TxRejected):
                raise ChainRejected(f"the chain would reject this {kind}: {exc.reason}") from None
            raise
        op = CoinOperation(
            kind=kind,
            actor_id=admin.id or 0,
            account=account,
            amount=amount,
            memo=body.get("memo"),
            tx_id=tx.id,
            status=CoinOperationStatus.submitted,
            created_at=utcnow(),
        )
        # Core statements: the ORM's flush of the new operation and of the changed purpose cost more
        op.id = session.execute(_INSERT_OPERATION, op.model_dump(exclude={"id"})).scalar_one()
        ctx.relayer.set_purpose(session, tx, Purpose.of(PURPOSE, op.id))
        idempotency.attach(session, claim.record, str(Purpose.of(PURPOSE, op.id)))
        session.commit()  # nonce, signed bytes, operation and idempotency record: one transaction
        fresh = True
    assert op.tx_id is not None
    tx_row = ctx.relayer.wait(op.tx_id, timeout=ctx.settings.tx_timeout_seconds, fresh=fresh)
    ctx.cache.coin_info = None  # the supply or pause state may have changed
    public = to_public(session, op, tx_row, final_status(tx_row, op))
    status = 202 if public.status == CoinOperationStatus.submitted else 200
    answer = public.model_dump(mode="json")
    if status == 200:
        idempotency.finish(session, claim.record, status, answer)
    return status, answer


PAUSED = "0x5c975abb"  # paused()


def _word(address: str) -> str:
    """An address as one ABI word (hex, no 0x) of raw call data."""
    return address_word(address).hex()


def _coin_state(ctx: Context, data: str) -> int:
    """A raw eth_call of the coin returning one word; a node that cannot be reached is a 503, not a 500."""
    try:
        return int(raw_call(ctx.w3, "eth_call", [{"to": ctx.coin.address, "data": data}, "latest"]), 16)
    except Exception as exc:
        raise ServiceUnavailable(
            f"cannot read the coin's state from the chain: {type(exc).__name__}"
        ) from None


def ensure_not_paused(ctx: Context) -> None:
    """Refuses while the coin is paused. The answer is cached for a second (it is read on every money
    request); our own pause and unpause routes drop the cache at once. A raw eth_call, as balance_now."""
    cached = ctx.cache.paused
    now = time.monotonic()
    if cached is None or now - cached[1] > 1.0:
        cached = ctx.cache.paused = (_coin_state(ctx, PAUSED) != 0, now)
    if cached[0]:
        raise CoinPaused()


MINT = "0x40c10f19"  # mint(address,uint256)
HAS_ROLE = "0x91d14854"  # hasRole(bytes32,address)
# KIP7Mintable.MINTER_ROLE (@klaytn/contracts: keccak256("KIP7_MINTER_ROLE"), not OpenZeppelin's name)
MINTER_ROLE = Web3.keccak(text="KIP7_MINTER_ROLE").hex().removeprefix("0x")
# Gas limit of EnergyCoin.mint, signed without an eth_estimateGas (a round trip and ~1.5 ms of CPU per
# mint). Measured on anvil (Cancun rules, as Kaia since its Cancun fork): 72,994 for the first mint ever
# (supply and balance from zero), 38,794 to an existing holder; the amount does not change it. 150,000 is
# twice the worst case. Only the gas used is paid, and Kaia's computation-cost cap (150M) is far above.
MINT_GAS = 150_000
# Amounts from here on may overflow the supply (a revert only an estimate foresees): they are estimated.
MINT_ESTIMATE_FROM = 2**128
MINTER_CHECK_TTL = 60.0  # seconds: a revoked minter role is seen within this


def mint_call(account: str, amount: int) -> str:
    """The call data of mint(account, amount) (web3's contract layer costs more CPU than the rest of it)."""
    return MINT + _word(account) + uint_word(amount).hex()


def mint_gas(ctx: Context, account: str, amount: int) -> int | None:
    """The gas limit for mint(account, amount) without an estimate, after refusing what would revert: the
    zero address, a paused coin (ensure_not_paused's one-second cache) and a relayer without the minter role
    (read at most once a minute). None (estimate it) for an amount that might overflow the supply. A mint
    that still reverts (a pause by another process within the last second) is recorded as failed."""
    if int(account, 16) == 0:
        raise ChainRejected("the chain would reject this mint: a mint to the zero address")
    ensure_not_paused(ctx)
    if amount >= MINT_ESTIMATE_FROM:
        return None
    minter = ctx.relayer.address
    seen = ctx.cache.minter_seen
    if seen is None or time.monotonic() - seen > MINTER_CHECK_TTL:
        if not _coin_state(ctx, HAS_ROLE + MINTER_ROLE + _word(minter)):
            raise ChainRejected("the chain would reject this mint: the relayer has no minter role")
        ctx.cache.minter_seen = time.monotonic()
    return MINT_GAS


BALANCE_OF = "0x70a08231"  # balanceOf(address)


def balance_now(ctx: Context, address: str) -> int:
    """The latest balance in one call (the hot path of transfers and orders). A raw eth_call: web3's
    contract layer (ABI lookup, checksums, formatters) cost more CPU than the round trip itself. Every read
    is remembered (`recent_balance`)."""
    account = Web3.to_checksum_address(address)  # refuses anything that is not an address
    call = {"to": ctx.coin.address, "data": BALANCE_OF + _word(account)}
    read_before = utcnow()  # before the read: every spend mined after the read is recorded after this
    value = int(raw_call(ctx.w3, "eth_call", [call, "latest"]), 16)
    balances = ctx.cache.balances
    if len(balances) > 10_000:
        balances.clear()
    balances[account] = BalanceRead(value, read_before, time.monotonic())
    return value


def recent_balance(ctx: Context, account: str, max_age: float) -> BalanceRead | None:
    """This process's latest read of `account`'s balance (a checksum address) if at most `max_age` seconds
    old, else None. The chain decides: a caller that a stale answer could mislead reads it again."""
    read = ctx.cache.balances.get(account)
    if read is None or time.monotonic() - read.at > max_age:
        return None
    return read


BALANCE_QUOTE_SECONDS = 1.0  # one block on Kaia


def balance_quote(ctx: Context, address: str) -> int:
    """The balance this process read within the last second (an authorisation reads it exactly, under
    the wallet's lock), else the latest. Only for answers that bind nothing: a transfer's creation checks
    it as a courtesy, its authorisation checks the exact balance again."""
    read = recent_balance(ctx, Web3.to_checksum_address(address), BALANCE_QUOTE_SECONDS)
    return read.value if read is not None else balance_now(ctx, address)


def coin_name(ctx: Context) -> str:
    """The token's name (its EIP-712 domain name): set in the constructor, so read once per process."""
    if ctx.cache.coin_name is None:
        ctx.cache.coin_name = str(ctx.coin.functions.name().call())
    return ctx.cache.coin_name


def get_operation(session: Session, op_id: int) -> tuple[CoinOperation, OutgoingTx | None]:
    op = session.get(CoinOperation, op_id)
    if op is None:
        raise NotFound(f"no coin operation {op_id}")
    return op, session.get(OutgoingTx, op.tx_id) if op.tx_id else None


def chain_now(ctx: Context) -> int:
    """Seconds since the epoch as the chain sees it (never behind our clock): ERC-3009 windows are checked
    against block time, which can drift from the wall clock on a development chain."""
    cached = ctx.cache.chain_now
    wall = int(time.time())
    if cached is not None and time.monotonic() - cached[1] < 1.0:
        return max(wall, cached[0] + int(time.monotonic() - cached[1]))
    block_ts = int(ctx.w3.eth.get_block("latest")["timestamp"])
    ctx.cache.chain_now = (block_ts, time.monotonic())
    return max(wall, block_ts)


def history(session: Session, limit: int, before_block: int | None) -> CoinHistory:
    """Every mint and burn the transfer index holds (Transfer from or to the zero address), newest first,
    with the reason our records give: an admin mint or burn, an approval grant, a production reward. The
    index follows the chain, so mints made before this process started, or by another minter, are there
    too (reason `unknown` for the latter)."""
    q = (
        select(TransferEvent)
        .where(
            or_(
                col(TransferEvent.from_address) == ZERO_ADDRESS, col(TransferEvent.to_address) == ZERO_ADDRESS
            )
        )
        .order_by(col(TransferEvent.block_number).desc(), col(TransferEvent.log_index).desc())
        .limit(limit)
    )
    if before_block is not None:
        q = q.where(col(TransferEvent.block_number) < before_block)
    events = list(session.exec(q))
    hashes = {e.tx_hash for e in events} | {e.tx_hash.lower() for e in events}
    purposes = {
        (tx.tx_hash or "").lower(): tx.purpose
        for tx in session.exec(select(OutgoingTx).where(col(OutgoingTx.tx_hash).in_(hashes)))
    }
    items = []
    for e in events:
        kind = CoinOperationKind.mint if e.from_address == ZERO_ADDRESS else CoinOperationKind.burn
        entry = CoinHistoryEntry(
            kind=kind,
            reason="unknown",
            account=e.to_address if kind == CoinOperationKind.mint else e.from_address,
            amount=format_amount(e.value),
            tx_hash=e.tx_hash,
            block_number=e.block_number,
            block_time=e.block_time,
        )
        purpose = Purpose.parse(purposes.get(e.tx_hash.lower(), ""))
        tx_kind, ident = (purpose.kind, purpose.ref_id) if purpose else (None, None)
        if tx_kind == PURPOSE and ident is not None and (op := session.get(CoinOperation, ident)):
            entry.reason, entry.memo = op.kind, op.memo
            actor = session.get(User, op.actor_id)
            entry.actor_email = actor.email if actor else None
        elif tx_kind == TxPurpose.production_reward:
            entry.reason = "production_reward"
        items.append(entry)
    checkpoint = session.get(IndexerCheckpoint, CHECKPOINT)
    return CoinHistory(items=items, indexed_to_block=checkpoint.block_number if checkpoint else None)
