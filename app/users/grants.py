"""The initial coin grant of an approved prosumer: minted once, when both approval and a wallet exist."""

from __future__ import annotations

from sqlmodel import Session, col, select

from app.coin.models import CoinOperation, CoinOperationKind, CoinOperationStatus
from app.context import Context
from app.core.security import utcnow
from app.users.models import Role, User, UserStatus
from app.users.service import approval_grant
from app.wallets.models import Wallet
from wallet.purposes import Purpose, TxPurpose


def pay_pending_grant(ctx: Context, session: Session, user: User, wallet: Wallet) -> CoinOperation | None:
    """Prepares the grant's mint in the caller's transaction (the relayer sends it after the commit)."""
    amount = approval_grant(ctx.settings)
    if amount == 0 or user.role != Role.prosumer or user.status != UserStatus.approved:
        return None
    memo = f"approval grant for user {user.id}"
    paid = session.exec(
        select(CoinOperation).where(
            col(CoinOperation.kind) == CoinOperationKind.grant, col(CoinOperation.memo) == memo
        )
    ).first()
    if paid is not None:
        return None
    data = ctx.coin.encodeABI(fn_name="mint", args=[wallet.address, amount])
    op = CoinOperation(
        kind=CoinOperationKind.grant,
        actor_id=user.approved_by or user.id or 0,
        account=wallet.address,
        amount=amount,
        memo=memo,
        status=CoinOperationStatus.submitted,
        created_at=utcnow(),
    )
    session.add(op)
    session.flush()
    tx = ctx.relayer.prepare(
        session, to=ctx.coin.address, data=data, purpose=Purpose.of(TxPurpose.coin_operation, op.id)
    )
    op.tx_id = tx.id
    session.add(op)
    return op
