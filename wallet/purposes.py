"""What each relayed transaction is for, and who finishes it once it is final.

``OutgoingTx.purpose`` stores ``kind`` or ``kind:ref`` (``coin_operation:12``, ``meter_anchor:1700000000``),
the same text as before the kinds were typed, so rows written by any version dispatch alike. The kinds are
listed here, at the bottom, because the relayer stores them; the rules that finish a transaction stay in
the domain that made it, which registers its handler for its kinds in ``Completions`` when the process
starts (``app/main.py``, ``app/sites/worker.py``). The relayer dispatches each final transaction once, to
the one handler of its kind, inside its own database transaction; a purpose nobody handles is logged.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session

from wallet.models import OutgoingTx

log = logging.getLogger(__name__)


class TxPurpose(enum.StrEnum):
    coin_operation = "coin_operation"  # ref: the CoinOperation's id (app/coin/service.py, app/coin/grants.py)
    transfer_batch = "transfer_batch"  # app/transfers/batching.py
    trade_batch = "trade_batch"  # app/market/recording.py (trades and escrow locks)
    escrow_release = "escrow_release"  # ref: the order's id (app/market/escrow.py)
    escrow_release_batch = "escrow_release_batch"  # app/market/escrow.py
    settle_batch = "settle_batch"  # app/settlement
    withdraw_batch = "withdraw_batch"  # app/settlement: pushes payouts, nothing to finish
    meter_anchor = "meter_anchor"  # ref: the slot's unix time (ess_collector/anchoring.py)
    production_reward = "production_reward"  # ref: the ProductionReward's id (ess_collector/rewards.py)


@dataclass(frozen=True)
class Purpose:
    kind: TxPurpose
    ref: str | None = None

    def __str__(self) -> str:
        return self.kind.value if self.ref is None else f"{self.kind.value}:{self.ref}"

    @classmethod
    def of(cls, kind: TxPurpose, ref: object) -> Purpose:
        return cls(kind, str(ref))

    @classmethod
    def parse(cls, stored: str) -> Purpose | None:
        """The purpose of a stored row; None when its kind is not one of ours."""
        kind, sep, ref = stored.partition(":")
        try:
            return cls(TxPurpose(kind), ref if sep else None)
        except ValueError:
            return None

    @property
    def ref_id(self) -> int | None:
        """The reference as a row id, when it is one."""
        return int(self.ref) if self.ref is not None and self.ref.isdigit() else None


Completion = Callable[[Session, OutgoingTx, Purpose], None]


class Completions:
    """One handler per purpose kind; ``dispatch`` runs the handler of a final transaction's kind."""

    def __init__(self) -> None:
        self._handlers: dict[TxPurpose, Completion] = {}

    def register(self, kind: TxPurpose, handler: Completion) -> None:
        """Registering the same function again (a second app on one context) replaces it; a different
        function for a kind that has one is a mistake: two domains would each think they own the kind."""
        current = self._handlers.get(kind)
        if current is not None and _name(current) != _name(handler):
            raise ValueError(f"purpose {kind} is already handled by {_name(current)}")
        self._handlers[kind] = handler

    def handler(self, kind: TxPurpose) -> Completion | None:
        return self._handlers.get(kind)

    def dispatch(self, session: Session, tx: OutgoingTx) -> None:
        purpose = Purpose.parse(tx.purpose)
        handler = self._handlers.get(purpose.kind) if purpose is not None else None
        if purpose is None or handler is None:
            log.warning(
                "final transaction with a purpose nobody handles",
                extra={"fields": {"tx": tx.id, "purpose": tx.purpose, "status": tx.status}},
            )
            return
        handler(session, tx, purpose)


def _name(handler: Callable[..., object]) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', repr(handler))}"
