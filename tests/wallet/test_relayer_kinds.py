"""Relayers that share one service account: each acts only on its purpose kinds, and a completion runs once
even when two relayers handle the same kind (the service and the standalone collector both finish anchors
and reward mints). Real anvil, real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, col, select

from app.context import Context
from app.sites.worker import COLLECTOR_KINDS
from tests.polling import wait_until
from wallet.models import OutgoingTx, TxAttempt
from wallet.purposes import Purpose, TxPurpose
from wallet.relayer import OPEN, Relayer, TxStatus


class Finished:
    """A completion handler that records every call (thread-safe: relayer threads call it)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __call__(self, session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
        with self._lock:
            self.calls.append((tx.id or 0, tx.status))


def _relayer(ctx: Context, kinds: frozenset[TxPurpose] | None, **handlers: Finished) -> Relayer:
    relayer = Relayer(ctx.engine, ctx.w3, ctx.relayer.signer, ctx.chain_id, kinds=kinds)
    for kind, handler in handlers.items():
        relayer.completions.register(TxPurpose(kind), handler)
    return relayer


def _prepare(ctx: Context, purpose: Purpose, holder: str, amount: int) -> int:
    data = str(ctx.coin.encodeABI(fn_name="mint", args=[holder, amount]))
    with Session(ctx.engine) as s:
        row = ctx.relayer.prepare(s, to=ctx.coin.address, data=data, purpose=purpose)
        s.commit()
        assert row.id is not None
        return row.id


def _row(ctx: Context, tx_id: int) -> OutgoingTx:
    with Session(ctx.engine) as s:
        row = s.get(OutgoingTx, tx_id)
        assert row is not None
        return row


def _sent_attempts(ctx: Context, tx_id: int) -> int:
    with Session(ctx.engine) as s:
        rows = s.exec(select(TxAttempt).where(col(TxAttempt.tx_id) == tx_id)).all()
        return sum(1 for a in rows if a.sent_at is not None)


def test_the_collector_relayer_leaves_a_transfer_batch_to_the_service(ctx: Context, dev_accounts) -> None:
    holder = dev_accounts[2].address
    before = ctx.coin.functions.balanceOf(holder).call()
    batch_done, anchors_done, anchors_done_svc = Finished(), Finished(), Finished()
    # The transfer batch takes the lower nonce: the collector's anchor behind it waits on the chain for it.
    batch = _prepare(ctx, Purpose.of(TxPurpose.transfer_batch, 1), holder, 11)
    anchor = _prepare(ctx, Purpose.of(TxPurpose.meter_anchor, 1_700_000_000), holder, 13)
    collector = _relayer(ctx, COLLECTOR_KINDS, meter_anchor=anchors_done, production_reward=Finished())
    for _ in range(3):
        collector.step()
    assert _row(ctx, batch).status == TxStatus.pending and _sent_attempts(ctx, batch) == 0
    assert _row(ctx, anchor).status == TxStatus.sent  # sent, held by the node behind the missing nonce
    assert ctx.coin.functions.balanceOf(holder).call() == before
    assert collector.wait(batch, timeout=1).status == TxStatus.pending  # it never sends nor finishes it
    assert batch_done.calls == [] and anchors_done.calls == []

    service = _relayer(ctx, None, transfer_batch=batch_done, meter_anchor=anchors_done_svc)
    assert service.wait(batch, timeout=20).status == TxStatus.confirmed
    assert batch_done.calls == [(batch, TxStatus.confirmed)]  # by the service, with its handler
    # The gap is filled: the anchor is mined; whichever relayer sees it first finishes it, once.
    assert collector.wait(anchor, timeout=20).status == TxStatus.confirmed
    service.step()
    collector.step()
    assert len(anchors_done.calls) + len(anchors_done_svc.calls) == 1
    assert batch_done.calls == [(batch, TxStatus.confirmed)]
    assert ctx.coin.functions.balanceOf(holder).call() == before + 24


def test_a_relayer_for_kinds_without_their_handlers_refuses_to_start(ctx: Context) -> None:
    relayer = _relayer(ctx, COLLECTOR_KINDS, meter_anchor=Finished())
    with pytest.raises(ValueError, match="production_reward"):
        relayer.start()
    assert not relayer.worker.running


def test_a_stale_relayer_neither_finishes_again_nor_reopens_a_final_transaction(
    ctx: Context, dev_accounts
) -> None:
    """Two relayers read the same open rows; one finishes them first. The other, acting on what it read,
    must not run the completion a second time nor move the rows back to sent."""
    holder = dev_accounts[2].address
    first_done, second_done = Finished(), Finished()
    first = _relayer(ctx, COLLECTOR_KINDS, meter_anchor=first_done, production_reward=first_done)
    second = _relayer(ctx, COLLECTOR_KINDS, meter_anchor=second_done, production_reward=second_done)
    ids = [_prepare(ctx, Purpose.of(TxPurpose.production_reward, i), holder, i + 1) for i in range(3)]

    def open_rows() -> tuple[Session, list[OutgoingTx]]:
        s = Session(ctx.engine, expire_on_commit=False)
        rows = s.exec(
            select(OutgoingTx).where(col(OutgoingTx.status).in_(OPEN)).order_by(col(OutgoingTx.nonce))
        ).all()
        return s, list(rows)

    stale_session, stale_pending = open_rows()  # the second relayer's view: all three pending
    first.step()  # sends them (automine: mined at once)
    stale_sent_session, stale_sent = open_rows()  # the second relayer's later view: all three sent
    # automine mines each at once, but anvil may answer the send before its block is there (a loaded machine)
    last_nonce = max(r.nonce for r in stale_sent)
    wait_until(lambda: ctx.w3.eth.get_transaction_count(first.address), lambda n: n > last_nonce)
    first.step()  # finishes them
    assert [r.status for r in map(lambda i: _row(ctx, i), ids)] == [TxStatus.confirmed] * 3
    assert sorted(i for i, _ in first_done.calls) == ids

    latest = int(ctx.w3.eth.block_number)
    with stale_sent_session:  # would finish them again
        second._watch(stale_sent_session, stale_sent, latest)
    with stale_session:  # would re-send them and mark them sent
        second._broadcast(stale_session, stale_pending, latest)
        second._commit(stale_session)
    assert second_done.calls == []
    assert [_row(ctx, i).status for i in ids] == [TxStatus.confirmed] * 3
    second.step()
    assert second_done.calls == [] and len(first_done.calls) == 3


def test_two_relayers_running_together_finish_each_transaction_once(ctx: Context, dev_accounts) -> None:
    """The service's relayer and the collector's, both running, both handling the collector's kinds."""
    holder = dev_accounts[3].address
    before = ctx.coin.functions.balanceOf(holder).call()
    service_done, collector_done = Finished(), Finished()
    service = _relayer(ctx, None, meter_anchor=service_done, production_reward=service_done)
    collector = _relayer(ctx, COLLECTOR_KINDS, meter_anchor=collector_done, production_reward=collector_done)
    service.start()
    collector.start()
    try:
        ids = []
        for i in range(12):
            kind = TxPurpose.meter_anchor if i % 2 else TxPurpose.production_reward
            ids.append(_prepare(ctx, Purpose.of(kind, i), holder, 1))
            service.kick()
            collector.kick()
        rows = [service.wait(i, timeout=30) for i in ids]
        assert all(r.status == TxStatus.confirmed for r in rows)
    finally:
        collector.stop()
        service.stop()
    calls = service_done.calls + collector_done.calls
    assert sorted(i for i, _ in calls) == sorted(ids)  # each exactly once, by one or the other
    assert ctx.coin.functions.balanceOf(holder).call() == before + 12


def test_the_collector_relayer_bumps_its_own_stuck_anchor_but_not_one_waiting_for_the_service(
    ctx: Context, dev_accounts
) -> None:
    """An anchor behind a transfer batch that the service has not sent waits for the service: bumping its
    fee would not get it mined sooner, only dearer. Alone and stuck, it is bumped as always."""
    holder = dev_accounts[2].address
    ctx.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        collector = Relayer(
            ctx.engine, ctx.w3, ctx.relayer.signer, ctx.chain_id, kinds=COLLECTOR_KINDS, replace_after=0.0
        )
        batch = _prepare(ctx, Purpose.of(TxPurpose.transfer_batch, 2), holder, 1)
        anchor = _prepare(ctx, Purpose.of(TxPurpose.meter_anchor, 1_700_000_900), holder, 1)
        for _ in range(3):
            collector.step()
        with Session(ctx.engine) as s:
            assert len(s.exec(select(TxAttempt).where(col(TxAttempt.tx_id) == anchor)).all()) == 1
        service = Relayer(ctx.engine, ctx.w3, ctx.relayer.signer, ctx.chain_id, replace_after=600.0)
        service.step()  # sends the batch
        ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        service.step()  # finishes it (and the anchor, mined in the same block)
        assert _row(ctx, batch).status == TxStatus.confirmed
        stuck = _prepare(ctx, Purpose.of(TxPurpose.meter_anchor, 1_700_001_800), holder, 1)
        collector.step()  # sent
        collector.step()  # not mined after replace_after, nothing of another kind before it: bumped
        with Session(ctx.engine) as s:
            assert len(s.exec(select(TxAttempt).where(col(TxAttempt.tx_id) == stuck)).all()) == 2
        ctx.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        assert collector.wait(stuck, timeout=10).status == TxStatus.confirmed
    finally:
        ctx.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
