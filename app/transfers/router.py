from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.api.deps import IdempotencyKey, SessionDep
from app.transfers import service
from app.transfers.schemas import TransferAuthorize, TransferCreate, TransferList, TransferPublic
from app.users.deps import CallerDep, CurrentUser, in_unit_of_work

router = APIRouter(prefix="/transfers", tags=["transfers"])


# The two money routes of a transfer are `async` and make one thread-pool call each, for the user, the
# work and the unit of work (`in_unit_of_work`): as plain `def` routes with a `CurrentUser`, each request
# took two hops, which cost more CPU than several of its statements. Their context and token come as one
# dependency (`CallerDep`) and they open their session in that call: FastAPI's solving of each further
# dependency (the context, the session's generator) cost more than the function it called.
@router.post(
    "", summary="Start a coin transfer to an address or user", response_model=TransferPublic, status_code=201
)
async def create_transfer(req: TransferCreate, who: CallerDep, key: IdempotencyKey = None) -> JSONResponse:
    status, body = await in_unit_of_work(
        who, lambda session, user: service.create(who.ctx, session, user, req, key)
    )
    return JSONResponse(status_code=status, content=body)


@router.post(
    "/{transfer_id}/authorize",
    summary="Authorise a transfer (PIN and code, or a signature)",
    response_model=TransferPublic,
)
async def authorize_transfer(transfer_id: str, req: TransferAuthorize, who: CallerDep) -> JSONResponse:
    # Serialised here, once: a returned model is validated against response_model again, then encoded.
    answer = await in_unit_of_work(
        who,
        lambda session, user: service.authorize(who.ctx, session, user, transfer_id, req).model_dump(
            mode="json"
        ),
    )
    return JSONResponse(content=answer)


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
