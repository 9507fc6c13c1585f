from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.core.money import AddressText

PIN = Field(pattern=r"^[0-9]{4,12}$", description="4 to 12 digits")


class WalletCreate(BaseModel):
    pin: str = PIN


class PinChange(BaseModel):
    old_pin: str = PIN
    new_pin: str = PIN


class LinkChallengeRequest(BaseModel):
    address: AddressText


class LinkChallengePublic(BaseModel):
    message: str
    expires_at: datetime


class LinkRequest(BaseModel):
    address: AddressText
    message: str = Field(max_length=4096)
    signature: str = Field(max_length=200)


class WalletPublic(BaseModel):
    id: int
    kind: str
    address: str
    created_at: datetime
    locked_until: datetime | None = None
    totp_enabled: bool = False


class WalletWithBalances(WalletPublic):
    balance: str
    native_balance: str
    block_number: int


class TotpSetup(BaseModel):
    secret: str
    otpauth_uri: str


class TotpVerify(BaseModel):
    code: str = Field(pattern=r"^[0-9]{6}$")
