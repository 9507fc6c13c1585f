"""Coin routes: public reading, and admin issuance (each money route needs an Idempotency-Key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError
from pydantic.json_schema import SkipJsonSchema
from sqlmodel import Session

from app.api.deps import ContextDep, IdempotencyKey, SessionDep
from app.api.params import BlockNumber, RowId
from app.coin import grants, service
from app.coin.errors import InsufficientBalance
from app.coin.models import CoinOperationKind
from app.coin.schemas import (
    ApproveResult,
    Balance,
    BurnRequest,
    CoinHistory,
    CoinInfo,
    CoinOperationPublic,
    MintRequest,
    PauseRequest,
)
from app.core.errors import Conflict
from app.core.money import format_amount, parse_address, parse_amount
from app.indexer import service as indexer
from app.indexer.schemas import TransferPage
from app.users.deps import AdminUser, BearerToken, CurrentUser, as_user
from app.users.models import User
from app.wallets.service import balance_of

router = APIRouter(tags=["coin"])
admin_router = APIRouter(prefix="/admin/coin", tags=["admin"])
approval_router = APIRouter(prefix="/admin/users", tags=["admin"])  # approving a user mints its grant


@approval_router.post(
    "/{user_id}/approve",
    summary="Approve a user, minting the approval grant (admin)",
    response_model=ApproveResult,
)
def approve(user_id: RowId, ctx: ContextDep, session: SessionDep, admin: AdminUser) -> ApproveResult:
    result = grants.approve_user(ctx, session, user_id, admin)
    session.commit()
    ctx.relayer.kick()
    return result


@router.get("/coin", summary="The energy coin: address, supply, decimals, paused", response_model=CoinInfo)
async def get_coin(ctx: ContextDep) -> CoinInfo:
    # Answered on the event loop while cached; reading the chain blocks, so that goes to the thread pool.
    cached = service.cached_coin_info(ctx)
    return cached if cached is not None else await run_in_threadpool(service.coin_info, ctx)


@router.get(
    "/accounts/{address}/balance",
    summary="The coin balance of an address, read from the chain",
    response_model=Balance,
)
def get_balance(address: str, ctx: ContextDep) -> Balance:
    checked = parse_address(address)
    value, block = balance_of(ctx, checked)
    return Balance(
        address=checked, balance=format_amount(value), balance_units=str(value), block_number=block
    )


@router.get(
    "/accounts/{address}/transfers",
    summary="Coin transfers in and out of an address (indexed)",
    response_model=TransferPage,
)
def get_transfers(
    address: str,
    session: SessionDep,
    _user: CurrentUser,
    limit: int = Query(50, ge=1, le=500),
    before_block: BlockNumber | None = None,
) -> TransferPage:
    checked = parse_address(address)
    return indexer.transfers_of(session, checked, limit, before_block)


def _respond(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(status_code=status, content=body)


# Read as any JSON value, checked against MintRequest only after the admin (in `mint`'s one thread-pool
# call): a non-admin learns nothing of the body's shape and gets 403, not a 422. The value comes through
# as a MintRequest when it is one; the JSON schema still documents MintRequest alone.
MintBody = Annotated[MintRequest | SkipJsonSchema[Any], Field(union_mode="left_to_right")]


def _checked(body: Any) -> MintRequest:
    """The mint body as FastAPI checks a body model, with the same 422 when it is not one."""
    if isinstance(body, MintRequest):
        return body
    try:
        return MintRequest.model_validate(body, from_attributes=True)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in errors]) from None


@admin_router.post(
    "/mint",
    summary="Mint coins to an address or user (admin)",
    response_model=CoinOperationPublic,
    responses={202: {"model": CoinOperationPublic}},
)
async def mint(
    body: MintBody, ctx: ContextDep, session: SessionDep, token: BearerToken, key: IdempotencyKey = None
) -> JSONResponse:
    def work(admin: User) -> tuple[int, dict[str, Any]]:
        req = _checked(body)

        def build(s: Session) -> tuple[str, int, str, int | None]:
            account = service.resolve_account(s, req.to)
            amount = parse_amount(req.amount)
            gas = service.mint_gas(ctx, account, amount)  # refuses what would revert; checks the pause
            return account, amount, service.mint_call(account, amount), gas

        return service.execute(ctx, session, admin, CoinOperationKind.mint, key, req.model_dump(), build)

    # One thread-pool call for the admin and the mint (an `AdminUser` dependency is a hop of its own).
    return _respond(*await as_user(session, token, work, admin=True))


@admin_router.post(
    "/burn",
    summary="Burn coins from the treasury or a holder (admin)",
    response_model=CoinOperationPublic,
    responses={202: {"model": CoinOperationPublic}},
)
def burn(
    req: BurnRequest, ctx: ContextDep, session: SessionDep, admin: AdminUser, key: IdempotencyKey = None
) -> JSONResponse:
    def build(s: Session) -> tuple[str, int, str, None]:
        amount = parse_amount(req.amount)
        holder = service.resolve_account(s, req.from_) if req.from_ is not None else ctx.account.address
        service.ensure_not_paused(ctx)
        balance, _ = balance_of(ctx, holder)
        if balance < amount:
            raise InsufficientBalance(
                f"{holder} holds {format_amount(balance)}, cannot burn {format_amount(amount)}"
            )
        if holder == ctx.account.address:
            return holder, amount, ctx.coin.encodeABI(fn_name="burn", args=[amount]), None
        return holder, amount, ctx.coin.encodeABI(fn_name="burnFrom", args=[holder, amount]), None

    return _respond(
        *service.execute(
            ctx, session, admin, CoinOperationKind.burn, key, req.model_dump(by_alias=True), build
        )
    )


def _pause_route(kind: CoinOperationKind, want_paused: bool) -> Any:
    def route(
        req: PauseRequest, ctx: ContextDep, session: SessionDep, admin: AdminUser, key: IdempotencyKey = None
    ) -> JSONResponse:
        def build(_s: Session) -> tuple[None, None, str, None]:
            if bool(ctx.coin.functions.paused().call()) == want_paused:
                raise Conflict(f"the coin is already {'paused' if want_paused else 'unpaused'}")
            return None, None, ctx.coin.encodeABI(fn_name=kind, args=[]), None

        answer = service.execute(ctx, session, admin, kind, key, req.model_dump(), build)
        ctx.cache.paused = None  # every later request reads the new state
        return _respond(*answer)

    route.__name__ = kind
    return route


admin_router.post(
    "/pause",
    summary="Pause the coin: no transfers, mints or burns (admin)",
    response_model=CoinOperationPublic,
)(_pause_route(CoinOperationKind.pause, True))
admin_router.post("/unpause", summary="Unpause the coin (admin)", response_model=CoinOperationPublic)(
    _pause_route(CoinOperationKind.unpause, False)
)


@admin_router.get(
    "/operations/{op_id}",
    summary="One mint, burn or pause operation and its transaction (admin)",
    response_model=CoinOperationPublic,
)
def get_operation(op_id: RowId, session: SessionDep, _admin: AdminUser) -> CoinOperationPublic:
    op, tx = service.get_operation(session, op_id)
    return service.to_public(session, op, tx)


@admin_router.get(
    "/history", response_model=CoinHistory, summary="Every mint and burn of the coin, from the chain index"
)
def coin_history(
    session: SessionDep,
    _admin: AdminUser,
    limit: int = Query(50, ge=1, le=500),
    before_block: int | None = Query(None, ge=0),
) -> CoinHistory:
    """Every mint and burn on chain (from the transfer index), newest first, with the reason we recorded."""
    return service.history(session, limit, before_block)
