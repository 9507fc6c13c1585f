"""The initial coin grant of an approved prosumer: minted once, when both approval and a wallet exist.

Approval (`approve_user`, the admin route) pays it when the user already has a wallet; a wallet created or
linked later pays it through `Context.on_wallet_added` (wired in app/main.py), since the wallets domain
sits below the coin."""

from __future__ import annotations

from sqlmodel import Session, col, select

from app.audit import service as audit
from app.coin.models import CoinOperation, CoinOperationKind, CoinOperationStatus
from app.coin.schemas import ApproveResult, GrantStatus
from app.coin.service import latest_hash
from app.context import Context
from app.core.security import utcnow
from app.users import service as users
from app.users.models import Role, User, UserStatus
from app.users.schemas import UserPublic
from app.wallets.models import Wallet
from app.wallets.service import active_wallet
from wallet.purposes import Purpose, TxPurpose


def pay_pending_grant(ctx: Context, session: Session, user: User, wallet: Wallet) -> CoinOperation | None:
    """Prepares the grant's mint in the caller's transaction (the relayer sends it after the commit)."""
    amount = users.approval_grant(ctx.settings)
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


def approve_user(ctx: Context, session: Session, user_id: int, admin: User) -> ApproveResult:
    """Approves a user and, when the user has a wallet already, prepares the grant's mint; audited. The
    caller commits (the relayer sends the mint after the commit)."""
    user = users.get_user(session, user_id)
    users.approve(session, user, admin)
    grant = users.approval_grant(ctx.settings)
    grant_status = GrantStatus.none if grant == 0 else GrantStatus.pending_wallet
    grant_tx = None
    wallet = active_wallet(session, user.id or 0)
    if wallet is not None:  # pay_pending_grant pays nothing when no grant is configured
        op = pay_pending_grant(ctx, session, user, wallet)
        if op is not None:
            grant_status, grant_tx = GrantStatus.minted, op.tx_id
    audit.record(
        session,
        admin,
        "user.approve",
        target=f"user:{user_id}",
        details={"grant": ctx.settings.approval_grant, "grant_status": grant_status},
    )
    session.flush()
    return ApproveResult(
        user=UserPublic.model_validate(user),
        grant=ctx.settings.approval_grant,
        grant_status=grant_status,
        grant_tx_hash=latest_hash(session, grant_tx) if grant_tx else None,
    )
