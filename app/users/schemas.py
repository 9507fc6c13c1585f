from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Form
from pydantic import BaseModel, ConfigDict, EmailStr, Field


class UserRegister(BaseModel):
    email: EmailStr
    password: str = Field(min_length=8, max_length=128)
    display_name: str = Field(min_length=1, max_length=100)
    role: Literal["prosumer", "consumer"]


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    display_name: str
    role: str
    status: str
    created_at: datetime
    approved_at: datetime | None = None


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=4096)


class ApproveResult(BaseModel):
    user: UserPublic
    grant: str
    grant_status: str  # none | minted | pending_wallet
    grant_tx_hash: str | None = None


class LoginForm:
    """The OAuth2 password form (what Swagger UI's Authorize button sends), bounded like the columns the
    login throttle keeps its keys in; scope and client fields are accepted and ignored."""

    def __init__(
        self,
        username: Annotated[str, Form(min_length=1, max_length=320, description="the e-mail address")],
        password: Annotated[
            str, Form(min_length=1, max_length=1024, json_schema_extra={"format": "password"})
        ],
        grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
        scope: Annotated[str, Form(max_length=1024)] = "",
    ) -> None:
        self.username = username
        self.password = password
