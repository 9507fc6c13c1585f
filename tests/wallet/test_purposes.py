"""The relayer's completion registry (wallet/purposes.py): stored purpose strings, written by any version,
parse to one typed kind and dispatch to its one handler; a purpose nobody handles is logged."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from wallet.models import OutgoingTx
from wallet.purposes import Completions, Purpose, TxPurpose


def _tx(purpose: str) -> OutgoingTx:
    now = datetime.now(UTC)
    return OutgoingTx(
        id=7, chain_id=1, sender="0x" + "11" * 20, nonce=0, data="0x", gas=21_000, purpose=purpose,
        status="confirmed", created_at=now, updated_at=now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stored", "kind", "ref"),
    [  # the strings the code wrote before the kinds were typed
        ("coin_operation:12", TxPurpose.coin_operation, "12"),
        ("transfer_batch", TxPurpose.transfer_batch, None),
        ("trade_batch", TxPurpose.trade_batch, None),
        ("escrow_release:9f86d081884c7d65", TxPurpose.escrow_release, "9f86d081884c7d65"),
        ("escrow_release_batch", TxPurpose.escrow_release_batch, None),
        ("settle_batch", TxPurpose.settle_batch, None),
        ("withdraw_batch", TxPurpose.withdraw_batch, None),
        ("meter_anchor:1700000000", TxPurpose.meter_anchor, "1700000000"),
        ("production_reward:3", TxPurpose.production_reward, "3"),
    ],
)
def test_stored_purposes_parse_to_their_kind_and_back(stored: str, kind: TxPurpose, ref: str | None) -> None:
    purpose = Purpose.parse(stored)
    assert purpose == Purpose(kind, ref) and str(purpose) == stored


def test_unknown_kinds_and_ids() -> None:
    assert Purpose.parse("pending") is None and Purpose.parse("escrow_releases:1") is None
    assert Purpose.parse("") is None
    assert Purpose.parse("coin_operation:12") == Purpose.of(TxPurpose.coin_operation, 12)
    assert Purpose.of(TxPurpose.coin_operation, 12).ref_id == 12
    assert (
        Purpose(TxPurpose.escrow_release, "ab").ref_id is None
        and Purpose(TxPurpose.trade_batch).ref_id is None
    )


def test_each_final_transaction_goes_to_the_one_handler_of_its_kind(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, Purpose]] = []

    def releases(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
        seen.append(("release", purpose))

    def trades(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
        seen.append(("trades", purpose))

    c = Completions()
    c.register(TxPurpose.escrow_release, releases)
    c.register(TxPurpose.escrow_release_batch, releases)
    c.register(TxPurpose.trade_batch, trades)
    session = Session()
    for stored in ("escrow_release:5", "escrow_release_batch", "trade_batch"):
        c.dispatch(session, _tx(stored))
    assert seen == [
        ("release", Purpose(TxPurpose.escrow_release, "5")),
        ("release", Purpose(TxPurpose.escrow_release_batch)),
        ("trades", Purpose(TxPurpose.trade_batch)),
    ]
    with caplog.at_level(logging.WARNING, logger="wallet.purposes"):
        c.dispatch(session, _tx("settle_batch"))  # a kind of ours nobody registered
        c.dispatch(session, _tx("something_else:1"))  # not a kind at all
    assert len(seen) == 3
    assert [r.fields["purpose"] for r in caplog.records] == ["settle_batch", "something_else:1"]  # type: ignore[attr-defined]


def test_one_handler_per_kind() -> None:
    def mine(session: Session, tx: OutgoingTx, purpose: Purpose) -> None: ...

    def other(session: Session, tx: OutgoingTx, purpose: Purpose) -> None: ...

    c = Completions()
    c.register(TxPurpose.settle_batch, mine)
    c.register(TxPurpose.settle_batch, mine)  # the same function again (a second app on one context)
    with pytest.raises(ValueError, match="already handled"):
        c.register(TxPurpose.settle_batch, other)
    assert c.handler(TxPurpose.settle_batch) is mine
