"""Accounts, logins with throttling, rotating refresh tokens, and admin approval of prosumers."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.errors import Conflict, NotFound, TooManyRequests, Unauthorized
from app.core.security import create_token, decode_token, hash_secret, utcnow, verify_secret
from app.models import LoginThrottle, RefreshToken, Role, User, UserStatus
from app.users.schemas import TokenPair, UserRegister


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(session: Session, email: str, password: str, display_name: str, role: Role) -> User:
    status = UserStatus.pending if role == Role.prosumer else UserStatus.approved
    user = User(
        email=normalise_email(email),
        password_hash=hash_secret(password),
        display_name=display_name.strip(),
        role=role,
        status=status,
        created_at=utcnow(),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"an account for {user.email} already exists") from None
    return user


def register(session: Session, data: UserRegister) -> User:
    return create_user(session, data.email, data.password, data.display_name, Role(data.role))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def _throttle(session: Session, key: str, settings: Settings) -> LoginThrottle:
    row = session.get(LoginThrottle, key)
    now = utcnow()
    if row is None:
        row = LoginThrottle(key=key, failures=0, window_start=now)
        session.add(row)
    locked = row.locked_until
    if locked is not None:
        locked = locked if locked.tzinfo else locked.replace(tzinfo=now.tzinfo)
        if locked > now:
            wait = int((locked - now).total_seconds()) + 1
            raise TooManyRequests(f"too many failed logins; try again in {wait} s")
    return row


def authenticate(session: Session, settings: Settings, email: str, password: str, client: str) -> User:
    """Failures are counted per account and per client address; the limit locks both for a while."""
    email = normalise_email(email)
    keys = [f"email:{email}", f"client:{client}"]
    rows = [_throttle(session, k, settings) for k in keys]
    user = session.exec(select(User).where(col(User.email) == email)).first()
    ok = verify_secret(user.password_hash if user else None, password)
    now = utcnow()
    window = timedelta(minutes=settings.login_lockout_minutes)
    for row in rows:
        if ok:
            row.failures, row.window_start, row.locked_until = 0, now, None
            continue
        start = row.window_start if row.window_start.tzinfo else row.window_start.replace(tzinfo=now.tzinfo)
        if now - start > window:
            row.failures, row.window_start = 0, now
        row.failures += 1
        # Per client the limit is wider, so one attacker cannot lock out a shared office address at once.
        limit = settings.login_max_failures * (1 if row.key.startswith("email:") else 4)
        if row.failures >= limit:
            row.locked_until = now + window
        session.add(row)
    session.commit()  # failed attempts count even though the request fails
    if not ok or user is None:
        raise Unauthorized("wrong email or password")
    if user.status == UserStatus.disabled:
        raise Unauthorized("this account is disabled")
    return user


def issue_tokens(session: Session, settings: Settings, user: User, family: str | None = None) -> TokenPair:
    secret = settings.secret("jwt_secret")
    access_ttl = timedelta(minutes=settings.access_token_minutes)
    access, _ = create_token(secret, user.id or 0, "access", access_ttl, role=user.role)
    refresh_ttl = timedelta(days=settings.refresh_token_days)
    family = family or uuid.uuid4().hex
    refresh, jti = create_token(secret, user.id or 0, "refresh", refresh_ttl, fam=family)
    session.add(RefreshToken(jti=jti, user_id=user.id or 0, family=family, expires_at=utcnow() + refresh_ttl))
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=int(access_ttl.total_seconds()))


def refresh_tokens(session: Session, settings: Settings, token: str) -> TokenPair:
    payload = decode_token(settings.secret("jwt_secret"), token, "refresh")
    row = session.get(RefreshToken, payload["jti"])
    if row is None:
        raise Unauthorized("unknown refresh token")
    if row.used_at is not None:
        # A refresh token used twice was stolen or replayed: end the whole family.
        for other in session.exec(select(RefreshToken).where(col(RefreshToken.family) == row.family)):
            other.used_at = other.used_at or utcnow()
            session.add(other)
        session.commit()
        raise Unauthorized("refresh token already used; please log in again")
    row.used_at = utcnow()
    session.add(row)
    user = get_user(session, row.user_id)
    if user.status == UserStatus.disabled:
        raise Unauthorized("this account is disabled")
    return issue_tokens(session, settings, user, family=row.family)


def approve(session: Session, user: User, admin: User) -> User:
    if user.status == UserStatus.approved:
        raise Conflict(f"user {user.id} is already approved")
    if user.status == UserStatus.disabled:
        raise Conflict(f"user {user.id} is disabled")
    user.status = UserStatus.approved
    user.approved_at = utcnow()
    user.approved_by = admin.id
    session.add(user)
    return user


def list_users(session: Session, status: str | None) -> list[User]:
    q = select(User).order_by(col(User.id))
    if status:
        q = q.where(col(User.status) == status)
    return list(session.exec(q))


def approval_grant(settings: Settings) -> int:
    from app.core.money import parse_amount

    return parse_amount(settings.approval_grant, allow_zero=True)
