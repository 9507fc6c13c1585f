"""The optional production reward: N coin per kWh of anchored PV energy, minted to the site's owner.

Exactly once per site-slot: the ``production_rewards`` row (unique per site and slot) is written in the
same database transaction as the relayer's mint transaction, so a retry, a crash or a second process
either finds the row or writes nothing. Only slots anchored while the policy was on carry a rate
(``ledger_slots.reward_per_kwh``), so switching it on never pays for the past. An owner without a wallet
gets a ``no_wallet`` row that is minted once a wallet exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from web3 import Web3
from web3.contract import Contract

from common import clock
from common.lease import Lease
from ess_collector.models import LedgerSlot, LedgerStatus, ProductionReward, RewardStatus, Site, SlotEnergy
from wallet.models import OutgoingTx
from wallet.purposes import Purpose, TxPurpose
from wallet.relayer import Relayer, TxRejected, TxStatus

log = logging.getLogger(__name__)
PURPOSE = TxPurpose.production_reward
MAX_SLOTS_PER_RUN = 4


def _now() -> datetime:
    return clock.now()


def reward_amount(pv_wh: int, per_kwh: int) -> int:
    return pv_wh * per_kwh // 1000


WalletOf = Callable[[Session, int], str | None]
"""The address of a user's active wallet, or None: the app owns wallets, the collector only asks."""


def _mint(session: Session, relayer: Relayer, coin: Contract, reward: ProductionReward) -> None:
    to = Web3.to_checksum_address(reward.to_address or "")
    data = coin.encodeABI(fn_name="mint", args=[to, reward.amount])
    tx = relayer.prepare(session, to=coin.address, data=data, purpose=Purpose.of(PURPOSE, reward.id))
    reward.status, reward.tx_id, reward.updated_at = RewardStatus.submitted, tx.id, _now()
    session.add(reward)


def reward_due(
    engine: Engine, relayer: Relayer, coin: Contract, wallet_of: WalletOf, *, lease: Lease | None = None
) -> int:
    """Create and mint the rewards of confirmed anchored slots; returns how many mints were prepared."""
    minted = 0
    with Session(engine) as session:
        slots = session.exec(
            select(LedgerSlot)
            .where(
                col(LedgerSlot.status) == LedgerStatus.confirmed,
                col(LedgerSlot.rewards_done).is_(False),
                col(LedgerSlot.reward_per_kwh).is_not(None),
            )
            .order_by(col(LedgerSlot.slot_start))
            .limit(MAX_SLOTS_PER_RUN)
        ).all()
        slot_ids = [s.id for s in slots]
    for slot_id in slot_ids:
        with Session(engine, expire_on_commit=False) as session:
            if lease is not None:
                lease.fence(session)
            ledger = session.get(LedgerSlot, slot_id)
            if ledger is None or ledger.rewards_done or not ledger.reward_per_kwh:
                continue
            try:
                minted += _reward_slot(session, relayer, coin, ledger, wallet_of)
                ledger.rewards_done = True
                session.add(ledger)
                session.commit()
            except (TxRejected, IntegrityError) as exc:  # e.g. the coin is paused: retried next run
                session.rollback()
                log.warning(
                    "production reward deferred", extra={"fields": {"slot": slot_id, "error": str(exc)}}
                )
        relayer.kick()
    minted += _retry_waiting(engine, relayer, coin, wallet_of, lease)
    return minted


def _reward_slot(
    session: Session, relayer: Relayer, coin: Contract, ledger: LedgerSlot, wallet_of: WalletOf
) -> int:
    rows = session.exec(
        select(SlotEnergy, Site)
        .join(Site, col(Site.id) == col(SlotEnergy.site_id))
        .where(col(SlotEnergy.slot_start) == ledger.slot_start, col(SlotEnergy.leaf).is_not(None))
        .order_by(col(SlotEnergy.site_id))
    ).all()
    minted = 0
    for record, site in rows:
        amount = reward_amount(record.pv_wh or 0, ledger.reward_per_kwh or 0)
        if amount <= 0:
            continue
        now = _now()
        address = wallet_of(session, site.owner_id)
        reward = ProductionReward(
            site_id=record.site_id,
            slot_start=record.slot_start,
            owner_id=site.owner_id,
            pv_wh=record.pv_wh or 0,
            amount=amount,
            to_address=address,
            status=RewardStatus.no_wallet,
            created_at=now,
            updated_at=now,
        )
        session.add(reward)
        session.flush()  # the unique (site, slot) constraint fires here, before any mint is prepared
        if address is not None:
            _mint(session, relayer, coin, reward)
            minted += 1
    return minted


def _retry_waiting(
    engine: Engine, relayer: Relayer, coin: Contract, wallet_of: WalletOf, lease: Lease | None
) -> int:
    minted = 0
    with Session(engine, expire_on_commit=False) as session:
        waiting = session.exec(
            select(ProductionReward).where(col(ProductionReward.status) == RewardStatus.no_wallet).limit(100)
        ).all()
        for reward in waiting:
            address = wallet_of(session, reward.owner_id)
            if address is None:
                continue
            if lease is not None:
                lease.fence(session)
            reward.to_address = address
            try:
                _mint(session, relayer, coin, reward)
            except TxRejected:
                session.rollback()
                return minted
            session.commit()
            minted += 1
    if minted:
        relayer.kick()
    return minted


def on_reward_final(session: Session, tx: OutgoingTx, purpose: Purpose) -> None:
    """Completion of ``production_reward``: a reward's mint is final."""
    reward = session.get(ProductionReward, purpose.ref_id) if purpose.ref_id is not None else None
    if reward is None or reward.status != RewardStatus.submitted:
        return
    reward.status = RewardStatus.confirmed if tx.status == TxStatus.confirmed else RewardStatus.failed
    reward.updated_at = _now()
    session.add(reward)
