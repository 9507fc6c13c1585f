"""The relayer against a real anvil node and a real database."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, col, select

from app.context import Context
from wallet.models import NonceCounter, OutgoingTx, TxAttempt
from wallet.purposes import TxPurpose
from wallet.relayer import Relayer
from wallet.signer import LocalSigner, Signer, SigningRefused


def _mint_data(ctx: Context, to: str, amount: int) -> str:
    return str(ctx.coin.encodeABI(fn_name="mint", args=[to, amount]))


def _relayer(ctx: Context, **kw: float) -> Relayer:
    """Another relayer (a process of its own) over the same database, node and signer."""
    return Relayer(ctx.engine, ctx.w3, ctx.relayer.signer, ctx.chain_id, **kw)


def _prepare_mint(ctx: Context, relayer: Relayer, holder: str, amount: int, purpose: str = "t") -> int | None:
    """A mint stored by `relayer` (nonce, signed bytes and row, committed in one transaction), not yet sent."""
    with Session(ctx.engine) as s:
        row = relayer.prepare(s, to=ctx.coin.address, data=_mint_data(ctx, holder, amount), purpose=purpose)
        s.commit()
        return row.id


def test_signed_but_never_broadcast_is_finished_after_a_restart(ctx: Context, dev_accounts) -> None:
    holder = dev_accounts[2].address
    before = ctx.coin.functions.balanceOf(holder).call()
    # "Process 1": stores nonce, signed bytes and row in one transaction, then dies before broadcasting.
    tx_id = _prepare_mint(ctx, ctx.relayer, holder, 7, purpose="test")
    assert ctx.coin.functions.balanceOf(holder).call() == before
    # "Process 2": a fresh relayer over the same database finishes it, once.
    fresh = _relayer(ctx)
    assert tx_id is not None
    done = fresh.wait(tx_id, timeout=20)
    assert done.status == "confirmed" and done.block_number
    again = _relayer(ctx)
    again.step()
    again.step()
    assert ctx.coin.functions.balanceOf(holder).call() == before + 7


def test_broadcast_then_crash_does_not_pay_twice(ctx: Context, dev_accounts) -> None:
    holder = dev_accounts[3].address
    before = ctx.coin.functions.balanceOf(holder).call()
    tx_id = _prepare_mint(ctx, ctx.relayer, holder, 5, purpose="test")
    ctx.relayer.step()  # broadcast (automine: mined at once) but "dies" before recording the receipt
    assert tx_id is not None
    # A new process re-sends the same stored bytes: the node knows them, nothing is paid twice.
    fresh = _relayer(ctx)
    with Session(ctx.engine) as s:
        s.get(OutgoingTx, tx_id).status = "pending"  # type: ignore[union-attr]
        s.commit()
    assert fresh.wait(tx_id, timeout=20).status == "confirmed"
    assert ctx.coin.functions.balanceOf(holder).call() == before + 5


def test_nonces_are_sequential_and_owned(ctx: Context, dev_accounts) -> None:
    holder = dev_accounts[1].address
    ids = []
    with Session(ctx.engine) as s:
        for i in range(20):
            ids.append(
                ctx.relayer.prepare(
                    s, to=ctx.coin.address, data=_mint_data(ctx, holder, i + 1), purpose="t"
                ).id
            )
        s.commit()
    rows = [ctx.relayer.wait(i, timeout=30) for i in ids if i is not None]
    assert all(r.status == "confirmed" for r in rows)
    nonces = [r.nonce for r in rows]
    assert nonces == list(range(nonces[0], nonces[0] + 20))
    with Session(ctx.engine) as s:
        counter = s.exec(select(NonceCounter)).one()
        assert counter.next_nonce == nonces[-1] + 1
        assert len(s.exec(select(TxAttempt).where(col(TxAttempt.tx_id).in_(ids))).all()) == 20


def test_stuck_transaction_is_replaced_with_a_fee_bump(
    ctx: Context, dev_accounts, manual_mining: None
) -> None:
    holder = dev_accounts[2].address
    relayer = _relayer(ctx, replace_after=0.0)
    tx_id = _prepare_mint(ctx, relayer, holder, 1)
    relayer.step()  # sent
    relayer.step()  # not mined after replace_after: replaced
    with Session(ctx.engine) as s:
        attempts = s.exec(select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(col(TxAttempt.id))).all()
    assert len(attempts) >= 2
    first, second = attempts[0], attempts[1]
    assert second.max_fee_per_gas * 100 >= first.max_fee_per_gas * 110
    assert second.max_priority_fee_per_gas * 100 >= first.max_priority_fee_per_gas * 110
    ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert tx_id is not None
    done = _relayer(ctx).wait(tx_id, timeout=10)
    assert done.status == "confirmed"
    assert done.tx_hash in {a.tx_hash for a in attempts}  # whichever version got mined is recorded


def test_fee_bumps_stop_at_the_cap(ctx: Context, dev_accounts, manual_mining: None) -> None:
    holder = dev_accounts[2].address
    relayer = _relayer(ctx, replace_after=0.0)
    tx_id = _prepare_mint(ctx, relayer, holder, 1)
    relayer.max_fee = relayer.fees().max_fee * 114 // 100  # below one bump (+15%)
    relayer.step()  # sent
    relayer.step()  # stuck, but a bump would cross the cap: it waits
    relayer.step()
    with Session(ctx.engine) as s:
        attempts = s.exec(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).all()
    assert len(attempts) == 1
    relayer.max_fee = None  # without the cap the same row is bumped
    relayer.step()
    with Session(ctx.engine) as s:
        assert len(s.exec(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).all()) == 2
    ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert tx_id is not None
    assert _relayer(ctx).wait(tx_id, timeout=10).status == "confirmed"


def test_a_replacement_stored_but_never_sent_is_sent_by_the_next_relayer(
    ctx: Context, dev_accounts, manual_mining: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relayer that stored a fee-bumped replacement and died before sending it (or lost its lease):
    the next relayer must send those stored bytes, or the nonce and everything behind it stalls."""
    holder = dev_accounts[2].address
    before = ctx.coin.functions.balanceOf(holder).call()
    first = _relayer(ctx, replace_after=0.0)
    tx_id = _prepare_mint(ctx, first, holder, 3)
    first.step()  # sent
    with Session(ctx.engine) as s:
        old_hash = s.exec(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).one().tx_hash

    def dies(attempt: TxAttempt) -> None:
        raise SystemExit("killed between storing the replacement and sending it")

    monkeypatch.setattr(first, "_send", dies)
    with pytest.raises(SystemExit):
        first.step()  # not mined after replace_after: a replacement is stored, then the process dies
    with Session(ctx.engine) as s:
        attempts = s.exec(select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(col(TxAttempt.id))).all()
        assert len(attempts) == 2 and attempts[1].sent_at is None
        new_hash = attempts[1].tx_hash
    # the node forgets the first version (a restarted node, or a pool that dropped it)
    ctx.w3.provider.make_request("anvil_dropTransaction", [old_hash])  # type: ignore[arg-type]
    nxt = _relayer(ctx, replace_after=600.0)
    nxt.step()
    ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert tx_id is not None
    done = nxt.wait(tx_id, timeout=10)
    assert (done.status, done.tx_hash) == ("confirmed", new_hash)
    assert ctx.coin.functions.balanceOf(holder).call() == before + 3


def test_the_relayer_signs_through_a_signer_and_keeps_no_key(ctx: Context, dev_accounts) -> None:
    """The relayer holds a Signer (wallet/signer.py), not the key; a signer bound to another chain refuses,
    and neither the refusal nor the relayer's state shows the key."""
    key = ctx.account.key.hex().removeprefix("0x")
    assert isinstance(ctx.relayer.signer, Signer) and not hasattr(ctx.relayer, "account")
    assert key not in repr(vars(ctx.relayer)) and key not in repr(ctx.relayer.signer)
    other_chain = LocalSigner(ctx.account, chain_id=ctx.chain_id + 1, allowed_contracts=[ctx.coin.address])
    relayer = Relayer(ctx.engine, ctx.w3, other_chain, ctx.chain_id)
    data = _mint_data(ctx, dev_accounts[2].address, 1)
    with Session(ctx.engine) as s, pytest.raises(SigningRefused) as refused:
        relayer.prepare(s, to=ctx.coin.address, data=data, purpose=TxPurpose.coin_operation)
    assert key not in str(refused.value) and key not in repr(refused.value)
    with Session(ctx.engine) as s:
        assert s.exec(select(OutgoingTx)).first() is None  # nothing stored


def test_a_pass_waiting_for_a_block_reads_no_rows_until_one_comes(
    ctx: Context, dev_accounts, manual_mining: None
) -> None:
    """Once every open row has left, a pass only asks for the block number until a new block (or a kick)."""
    from sqlalchemy import event

    holder = dev_accounts[2].address
    relayer = _relayer(ctx, idle_interval=60.0)  # no time-out of the quiet state during the test
    tx_id = _prepare_mint(ctx, relayer, holder, 1)
    assert tx_id is not None
    relayer.step()  # sent
    relayer.step()  # looks at the (same) block once more: the row is sent, nothing is due
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(ctx.engine, "before_cursor_execute", count)
    try:
        assert relayer.step() is True  # busy, but no new block: no statement
        assert statements == []
        relayer.kick()  # a kick (a new row of this process) reads the rows again
        relayer.step()
        assert statements
        ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        relayer.step()  # the new block: the receipt is read and the row made final
    finally:
        event.remove(ctx.engine, "before_cursor_execute", count)
    with Session(ctx.engine) as s:
        row = s.get(OutgoingTx, tx_id)
        assert row is not None and row.status == "confirmed"


def test_a_waiter_is_told_when_its_transaction_is_final(ctx: Context, dev_accounts) -> None:
    """With the worker running in this process, wait returns once the worker made the row final."""
    holder = dev_accounts[2].address
    relayer = _relayer(ctx, idle_interval=0.05)
    relayer.start()
    try:
        tx_ids = [_prepare_mint(ctx, relayer, holder, 1) for _ in range(3)]
        for tx_id in tx_ids:
            assert tx_id is not None
            assert relayer.wait(tx_id, timeout=30).status == "confirmed"
        assert relayer._waiters == {}  # nothing left behind
    finally:
        relayer.stop()


def test_a_told_waiter_is_handed_its_final_row_without_reading_it(ctx: Context, dev_accounts) -> None:
    """A waiter on a row it has just committed (``fresh``) reads nothing: the worker hands it the row it
    made final, as committed (hash, block); a row final before the waiter came is handed over too."""
    from sqlalchemy import event

    relayer = _relayer(ctx, idle_interval=0.05)
    relayer.start()
    reads: list[str] = []

    def count(*args: object) -> None:
        if threading.current_thread() is waiter:
            reads.append(str(args[2]))

    waiter = threading.current_thread()
    try:
        tx_id = _prepare_mint(ctx, relayer, dev_accounts[2].address, 1)
        assert tx_id is not None
        event.listen(ctx.engine, "before_cursor_execute", count)
        try:
            row = relayer.wait(tx_id, timeout=30, fresh=True)
            again = relayer.wait(tx_id, timeout=30, fresh=True)  # final already: handed over at once
        finally:
            event.remove(ctx.engine, "before_cursor_execute", count)
        assert reads == []
        assert row.status == "confirmed" and again is row
        with Session(ctx.engine) as s:
            stored = s.get(OutgoingTx, tx_id)
            assert stored is not None
            assert (stored.status, stored.tx_hash, stored.block_number) == (
                row.status,
                row.tx_hash,
                row.block_number,
            )
    finally:
        relayer.stop()


def test_a_waiter_on_standby_polls_the_database_at_its_pace(ctx: Context, dev_accounts) -> None:
    """On standby (another process runs the worker) a waiter reads its row every few polls, not in a loop."""
    from sqlalchemy import event

    relayer = _relayer(ctx)
    relayer.standby = True
    tx_id = _prepare_mint(ctx, relayer, dev_accounts[2].address, 1)  # never sent: nobody runs a worker
    assert tx_id is not None
    reads: list[str] = []

    def count(*args: object) -> None:
        reads.append(str(args[2]))

    event.listen(ctx.engine, "before_cursor_execute", count)
    try:
        assert relayer.wait(tx_id, timeout=0.5).status == "pending"
    finally:
        event.remove(ctx.engine, "before_cursor_execute", count)
    assert 1 <= len(reads) <= 10  # one read per 0.2 s poll (a busy loop made hundreds)


def test_send_tells_known_bytes_and_used_nonces_from_other_error_answers(
    ctx: Context, dev_accounts, caplog: pytest.LogCaptureFixture
) -> None:
    """Re-sending bytes the node knows (or whose nonce it has used) is quiet: the watcher resolves both.
    Any other error answer is logged, and a node that cannot be reached raises (the pass is retried)."""
    from wallet.chain import ChainUnreachable, connect
    from wallet.localchain import free_port

    relayer = _relayer(ctx)
    tx_id = _prepare_mint(ctx, relayer, dev_accounts[2].address, 1)
    with Session(ctx.engine) as s:
        attempt = s.exec(select(TxAttempt).where(col(TxAttempt.tx_id) == tx_id)).one()
    caplog.set_level("WARNING", logger="wallet.relayer")
    relayer._send(attempt)
    relayer._send(attempt)  # known to the node (pending), or its nonce used (mined): no warning
    ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    relayer._send(attempt)
    assert not [r for r in caplog.records if r.getMessage() == "broadcast failed"]
    garbage = TxAttempt(tx_id=0, tx_hash="0x00", raw="0x02c0", max_fee_per_gas=0, max_priority_fee_per_gas=0)
    relayer._send(garbage)
    assert [r for r in caplog.records if r.getMessage() == "broadcast failed"]
    dead = Relayer(
        ctx.engine, connect([f"http://127.0.0.1:{free_port()}"], timeout=1), ctx.relayer.signer, ctx.chain_id
    )
    with pytest.raises(ChainUnreachable):
        dead._send(attempt)


def test_the_receipts_of_a_block_are_read_in_one_batch(ctx: Context, dev_accounts) -> None:
    """Watching a block with several of our transactions asks for their receipts in one JSON-RPC batch."""
    from wallet.chain import connect

    w3 = connect([ctx.w3.provider.current_url])  # type: ignore[attr-defined]
    relayer = Relayer(ctx.engine, w3, ctx.relayer.signer, ctx.chain_id)
    calls: list[str] = []
    batches: list[list[str]] = []
    single, batch = w3.provider.make_request, w3.provider.batch  # type: ignore[attr-defined]

    def make_request(method: str, params: object) -> object:
        calls.append(method)
        return single(method, params)  # type: ignore[arg-type]

    def batched(requests: list[tuple[str, list[object]]]) -> list[object]:
        batches.append([method for method, _ in requests])
        return batch(requests)  # type: ignore[no-any-return]

    w3.provider.make_request = make_request  # type: ignore[method-assign]
    w3.provider.batch = batched  # type: ignore[attr-defined]
    ctx.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        ids = [_prepare_mint(ctx, relayer, dev_accounts[3].address, 1) for _ in range(3)]
        relayer.step()  # sends the three
        ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        relayer.step()  # the new block: their receipts
    finally:
        ctx.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    with Session(ctx.engine) as s:
        assert [s.get(OutgoingTx, i).status for i in ids] == ["confirmed"] * 3  # type: ignore[union-attr]
    assert "eth_getTransactionReceipt" not in calls
    assert batches == [["eth_getTransactionReceipt"] * 3]


def test_an_idle_pass_asks_once_and_still_finds_rows_of_another_process(ctx: Context, dev_accounts) -> None:
    """After a pass that found no open row, a pass without a kick runs one query (is any row open?), not
    the read of the rows; a row another process stored (it kicks its own relayer, not this one) is still
    found, sent and finished by this relayer's next passes."""
    from sqlalchemy import event

    relayer = _relayer(ctx)
    while relayer.step():  # whatever earlier tests left open is finished first
        ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert relayer.step() is False  # nothing open
    statements: list[str] = []

    def count(*args: object) -> None:
        if threading.current_thread() is this:  # not another test's worker on the engine
            statements.append(str(args[2]))

    this = threading.current_thread()

    event.listen(ctx.engine, "before_cursor_execute", count)
    try:
        assert relayer.step() is False
        assert len(statements) == 1 and "LIMIT" in statements[0]
    finally:
        event.remove(ctx.engine, "before_cursor_execute", count)
    tx_id = _prepare_mint(ctx, _relayer(ctx), dev_accounts[2].address, 1)  # "another process"
    assert tx_id is not None
    assert relayer.step() is True  # found without a kick, and sent
    with Session(ctx.engine) as s:
        row = s.get(OutgoingTx, tx_id)
        assert row is not None and row.status != "pending"
    assert relayer.wait(tx_id, timeout=30).status == "confirmed"
