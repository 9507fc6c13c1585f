from __future__ import annotations

from fastapi import APIRouter, status
from sqlmodel import Session

from app.api.deps import ContextDep, SessionDep
from app.context import Context
from app.core.money import format_amount
from app.users.deps import CurrentUser
from app.users.models import User
from app.wallets import service
from app.wallets.models import Wallet
from app.wallets.schemas import (
    LinkChallengePublic,
    LinkChallengeRequest,
    LinkRequest,
    PinChange,
    TotpSetup,
    TotpVerify,
    WalletCreate,
    WalletPublic,
    WalletWithBalances,
)

router = APIRouter(prefix="/wallets", tags=["wallets"])
totp_router = APIRouter(prefix="/auth/totp", tags=["auth"])


def _public(session, wallet: Wallet) -> WalletPublic:  # type: ignore[no-untyped-def]
    return WalletPublic(
        id=wallet.id or 0,
        kind=wallet.kind,
        address=wallet.address,
        created_at=wallet.created_at,
        locked_until=wallet.locked_until,
        totp_enabled=service.totp_enabled(session, wallet.user_id),
    )


def _added(ctx: Context, session: Session, user: User, wallet: Wallet) -> WalletPublic:
    """A new wallet of either kind: pays a pending approval grant (app/coin/grants.py), then shows it."""
    ctx.wallet_added(session, user, wallet)
    return _public(session, wallet)


@router.post(
    "",
    summary="Create your custodial wallet, protected by a PIN",
    response_model=WalletPublic,
    status_code=status.HTTP_201_CREATED,
)
def create_wallet(req: WalletCreate, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> WalletPublic:
    wallet = service.create_custodial(ctx, session, user, req.pin)
    return _added(ctx, session, user, wallet)


@router.get("/me", summary="Your wallet and its balances", response_model=WalletWithBalances)
def my_wallet(ctx: ContextDep, session: SessionDep, user: CurrentUser) -> WalletWithBalances:
    wallet = service.require_wallet(session, user.id or 0)
    coin, block = service.balance_of(ctx, wallet.address)
    native = int(ctx.w3.eth.get_balance(wallet.address, block_identifier=block))  # type: ignore[arg-type]
    return WalletWithBalances(
        **_public(session, wallet).model_dump(),
        balance=format_amount(coin),
        native_balance=format_amount(native),
        block_number=block,
    )


@router.post("/me/pin", summary="Change your wallet's PIN", status_code=status.HTTP_204_NO_CONTENT)
def change_pin(req: PinChange, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> None:
    wallet = service.require_wallet(session, user.id or 0)
    service.change_pin(ctx, session, wallet, req.old_pin, req.new_pin)


@router.post(
    "/link/challenge",
    summary="The message to sign to link your own wallet",
    response_model=LinkChallengePublic,
)
def link_challenge(
    req: LinkChallengeRequest, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> LinkChallengePublic:
    row = service.link_challenge(ctx, session, user, req.address)
    return LinkChallengePublic(message=row.message, expires_at=row.expires_at)


@router.post(
    "/link",
    summary="Link your own wallet with a signed challenge",
    response_model=WalletPublic,
    status_code=status.HTTP_201_CREATED,
)
def link(req: LinkRequest, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> WalletPublic:
    wallet = service.link(ctx, session, user, req.address, req.message, req.signature)
    return _added(ctx, session, user, wallet)


@totp_router.post("/setup", summary="Start enrolling a one-time code app (TOTP)", response_model=TotpSetup)
def totp_setup(ctx: ContextDep, session: SessionDep, user: CurrentUser) -> TotpSetup:
    secret, uri = service.totp_setup(ctx, session, user)
    return TotpSetup(secret=secret, otpauth_uri=uri)


@totp_router.post("/verify", summary="Finish enrolling TOTP with a first code")
def totp_verify(req: TotpVerify, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> dict[str, bool]:
    service.check_otp(ctx, session, user.id or 0, req.code, enrolling=True)
    return {"enabled": True}
