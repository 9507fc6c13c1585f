from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.api.deps import ContextDep, IdempotencyKey, SessionDep
from app.transfers import service
from app.transfers.schemas import TransferAuthorize, TransferCreate, TransferList, TransferPublic
from app.users.deps import CurrentUser

router = APIRouter(prefix="/transfers", tags=["transfers"])


@router.post(
    "", summary="Start a coin transfer to an address or user", response_model=TransferPublic, status_code=201
)
def create_transfer(
    req: TransferCreate, ctx: ContextDep, session: SessionDep, user: CurrentUser, key: IdempotencyKey = None
) -> JSONResponse:
    status, body = service.create(ctx, session, user, req, key)
    return JSONResponse(status_code=status, content=body)


@router.post(
    "/{transfer_id}/authorize",
    summary="Authorise a transfer (PIN and code, or a signature)",
    response_model=TransferPublic,
)
def authorize_transfer(
    transfer_id: str, req: TransferAuthorize, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> TransferPublic:
    return service.authorize(ctx, session, user, transfer_id, req)


@router.get(
    "/{transfer_id}",
    summary="One transfer you sent or received, with its steps",
    response_model=TransferPublic,
)
def get_transfer(transfer_id: str, session: SessionDep, user: CurrentUser) -> TransferPublic:
    return service.to_public(session, service.get_own(session, user, transfer_id, may_receive=True))


@router.get("", summary="Your transfers", response_model=TransferList)
def list_transfers(
    session: SessionDep,
    user: CurrentUser,
    direction: Literal["in", "out"] | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> TransferList:
    return TransferList(
        items=[service.to_public(session, t) for t in service.list_for(session, user, direction, limit)]
    )
