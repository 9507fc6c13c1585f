from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.api.deps import ContextDep, IdempotencyKey, SessionDep
from app.transfers import service
from app.transfers.schemas import TransferAuthorize, TransferCreate, TransferList, TransferPublic
from app.users.deps import BearerToken, CurrentUser, as_user

router = APIRouter(prefix="/transfers", tags=["transfers"])


# The two money routes of a transfer are `async` and make one thread-pool call each, for the user and the
# work (`as_user`): as plain `def` routes with a `CurrentUser`, each request took two hops, which cost more CPU than
# several of its statements.
@router.post(
    "", summary="Start a coin transfer to an address or user", response_model=TransferPublic, status_code=201
)
async def create_transfer(
    req: TransferCreate, ctx: ContextDep, session: SessionDep, token: BearerToken, key: IdempotencyKey = None
) -> JSONResponse:
    status, body = await as_user(session, token, lambda user: service.create(ctx, session, user, req, key))
    return JSONResponse(status_code=status, content=body)


@router.post(
    "/{transfer_id}/authorize",
    summary="Authorise a transfer (PIN and code, or a signature)",
    response_model=TransferPublic,
)
async def authorize_transfer(
    transfer_id: str, req: TransferAuthorize, ctx: ContextDep, session: SessionDep, token: BearerToken
) -> JSONResponse:
    answer = await as_user(
        session, token, lambda user: service.authorize(ctx, session, user, transfer_id, req)
    )
    # Serialised here, once: a returned model is validated against response_model again, then encoded.
    return JSONResponse(content=answer.model_dump(mode="json"))


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
