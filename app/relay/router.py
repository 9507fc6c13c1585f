"""Kaia fee delegation (the rules are in service.py)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ContextDep, SessionDep
from app.relay.errors import PolicyRejected
from app.relay.schemas import KaiaRelayRequest, KaiaRelayResult
from app.relay.service import relay_kaia
from app.users.deps import CurrentUser
from app.wallets.service import require_wallet

router = APIRouter(prefix="/relay", tags=["relay"])


@router.post(
    "/kaia", summary="Pay the fee of your own Kaia fee-delegated transaction", response_model=KaiaRelayResult
)
def relay_kaia_route(
    req: KaiaRelayRequest, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> KaiaRelayResult:
    try:
        raw = bytes.fromhex(req.raw_transaction.removeprefix("0x"))
    except ValueError:
        raise PolicyRejected("raw_transaction is not hex") from None
    wallet = require_wallet(session, user.id or 0)
    return relay_kaia(ctx, raw, wallet.address)
