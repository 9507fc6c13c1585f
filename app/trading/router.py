"""Trading routes: the user's trading profile and what the agent did."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.api.deps import ContextDep, SessionDep
from app.trading import service
from app.trading.schemas import ActivityList, ProfilePublic, ProfileSettings, ProfileTypedData, ProfileUpdate
from app.users.deps import CurrentUser

router = APIRouter(prefix="/trading", tags=["trading"])


@router.get("/profile", summary="Your automatic trading profile", response_model=ProfilePublic)
def get_profile(session: SessionDep, user: CurrentUser) -> ProfilePublic:
    return service.to_public(session, service.get_profile(session, user.id or 0), user.id or 0)


@router.put(
    "/profile",
    summary="Set your trading profile; enabling it is authorised once (PIN and code, or a signature)",
    response_model=ProfilePublic,
)
def put_profile(req: ProfileUpdate, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> ProfilePublic:
    profile = service.put_profile(ctx, session, user, req)
    return service.to_public(session, profile, user.id or 0)


@router.delete(
    "/profile",
    summary="Turn the agent off: its open orders are cancelled and their escrow released",
    response_model=ProfilePublic,
)
def delete_profile(ctx: ContextDep, session: SessionDep, user: CurrentUser) -> ProfilePublic:
    profile = service.disable(ctx, session, user)
    return service.to_public(session, profile, user.id or 0)


@router.post(
    "/profile/typed-data",
    summary="What a linked wallet signs to enable these settings (EIP-712)",
    response_model=ProfileTypedData,
)
def profile_typed_data(
    req: ProfileSettings, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> ProfileTypedData:
    return ProfileTypedData(typed_data=service.typed_data_for(ctx, session, user, req))


@router.get("/activity", summary="What the agent did for you, and why", response_model=ActivityList)
def activity(session: SessionDep, user: CurrentUser, limit: int = Query(100, ge=1, le=500)) -> ActivityList:
    return ActivityList(items=service.activity(session, user.id or 0, limit))
