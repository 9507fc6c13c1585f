from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

PASSWORD = Field(min_length=8, max_length=128)
NO_CONTROL_CHARS = r"^[^\x00-\x1f\x7f]+$"


class UserRegister(BaseModel):
    email: EmailStr  # at most 254 characters, no control characters (email-validator)
    password: str = PASSWORD
    display_name: str = Field(min_length=1, max_length=100, pattern=NO_CONTROL_CHARS)
    role: Literal["prosumer", "consumer"]


class RegisterAccepted(BaseModel):
    """The same answer whether the email was new or already had an account (nothing tells which)."""

    email: str
    detail: str = (
        "if this email had no account yet, it has one now: log in with it (prosumers trade once approved)"
    )


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    display_name: str
    role: str
    status: str
    created_at: datetime
    approved_at: datetime | None = None


class LoginForm(BaseModel):
    """The OAuth2 password form; its other fields (grant_type, scope, client_id) are ignored."""

    username: str = Field(min_length=1, max_length=320, pattern=NO_CONTROL_CHARS, description="your email")
    password: str = Field(min_length=1, max_length=1024)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=2048)


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(default=None, max_length=2048)


class PasswordChange(BaseModel):
    old_password: str = Field(min_length=1, max_length=128)
    new_password: str = PASSWORD
