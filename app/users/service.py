"""Accounts, throttled logins, rotating refresh tokens, ended sessions, and admin approval of prosumers."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta

from sqlalchemy import bindparam, delete, exists, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.errors import Conflict, NotFound, Unauthorized
from app.core.money import parse_amount
from app.core.security import TokenClaims, create_token, decode_token, hash_secret, utcnow, verify_secret
from app.users import throttle
from app.users.models import RefreshToken, RevokedTokenFamily, Role, User, UserStatus
from app.users.schemas import TokenPair, UserRegister
from common.sql import insert_ignore


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _add_user(session: Session, email: str, password_hash: str, display_name: str, role: Role) -> User:
    """Raises IntegrityError (session rolled back) when the email is taken."""
    status = UserStatus.pending if role == Role.prosumer else UserStatus.approved
    user = User(
        email=normalise_email(email),
        password_hash=password_hash,
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
        raise
    return user


def create_user(session: Session, email: str, password: str, display_name: str, role: Role) -> User:
    try:
        return _add_user(session, email, hash_secret(password), display_name, role)
    except IntegrityError:
        raise Conflict(f"an account for {normalise_email(email)} already exists") from None


def register(session: Session, data: UserRegister) -> None:
    """Creates the account unless the email is taken, and says nothing about which happened: the password
    is hashed either way (the same time), and an existing account is left as it was."""
    password_hash = hash_secret(data.password)
    with contextlib.suppress(IntegrityError):
        _add_user(session, data.email, password_hash, data.display_name, Role(data.role))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def _check_password(
    session: Session, settings: Settings, email: str, password: str, client: str
) -> User | None:
    """The user when the password is right. The attempt is counted before Argon2 runs (throttle.py)."""
    attempt = throttle.reserve(session, settings, email, client)
    user = session.exec(select(User).where(col(User.email) == email)).first()
    if not verify_secret(user.password_hash if user else None, password) or user is None:
        return None
    throttle.succeeded(session, attempt)
    return user


def authenticate(session: Session, settings: Settings, email: str, password: str, client: str) -> User:
    user = _check_password(session, settings, normalise_email(email), password, client)
    if user is None:
        raise Unauthorized("wrong email or password")
    if user.status == UserStatus.disabled:
        raise Unauthorized("this account is disabled")
    return user


# -- tokens and sessions -------------------------------------------------------------------------------


def issue_tokens(session: Session, settings: Settings, user: User, family: str | None = None) -> TokenPair:
    """An access and a refresh token of one session (family): a new one at login, the same on refresh."""
    secret = settings.secret("jwt_secret")
    family = family or uuid.uuid4().hex
    epoch = user.session_epoch
    access_ttl = timedelta(minutes=settings.access_token_minutes)
    access, _ = create_token(
        secret, user.id or 0, "access", access_ttl, family=family, epoch=epoch, role=user.role
    )
    refresh_ttl = timedelta(days=settings.refresh_token_days)
    refresh, jti = create_token(secret, user.id or 0, "refresh", refresh_ttl, family=family, epoch=epoch)
    session.add(RefreshToken(jti=jti, user_id=user.id or 0, family=family, expires_at=utcnow() + refresh_ttl))
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=int(access_ttl.total_seconds()))


# Built once (this runs on every request): the user, and whether its token family was revoked, in one
# statement whose cache key is computed once; only the bound values change.
_TOKEN_USER = select(
    User,
    exists().where(col(RevokedTokenFamily.family) == bindparam("family")).label("revoked"),
).where(col(User.id) == bindparam("user_id"))


def access_claims(settings: Settings, token: str) -> TokenClaims:
    """The claims of a valid access token (signature, kind, expiry): no database, a 401 otherwise."""
    return decode_token(settings.secret("jwt_secret"), token, "access")


def user_for_access_token(session: Session, settings: Settings, token: str) -> User:
    """The user of a valid access token whose session has not ended (logout, password change)."""
    return user_for_claims(session, access_claims(settings, token))


def user_for_claims(session: Session, claims: TokenClaims) -> User:
    """The user of an access token's checked claims, while its session has not ended."""
    row = session.execute(_TOKEN_USER, {"user_id": claims.user_id, "family": claims.family}).first()
    if row is None or row[0].status == UserStatus.disabled:
        raise Unauthorized("unknown or disabled user")
    user, family_revoked = row
    if claims.epoch != user.session_epoch or family_revoked:
        raise Unauthorized("this session has ended; please log in again")
    return user


def refresh_tokens(session: Session, settings: Settings, token: str) -> TokenPair:
    claims = decode_token(settings.secret("jwt_secret"), token, "refresh")
    row = session.get(RefreshToken, claims.jti)
    if row is None or row.user_id != claims.user_id:
        raise Unauthorized("unknown refresh token")
    if row.used_at is not None:
        # Used twice: stolen or replayed (or its session was ended). End the whole family.
        revoke_family(session, settings, row.user_id, row.family)
        session.commit()
        raise Unauthorized("refresh token already used or its session ended; please log in again")
    row.used_at = utcnow()
    session.add(row)
    user = get_user(session, row.user_id)
    if user.status == UserStatus.disabled:
        raise Unauthorized("this account is disabled")
    if claims.epoch != user.session_epoch:
        raise Unauthorized("this session has ended; please log in again")
    return issue_tokens(session, settings, user, family=row.family)


def revoke_family(session: Session, settings: Settings, user_id: int, family: str) -> None:
    """Ends one session: its refresh tokens are spent, its access tokens refused until they expire."""
    now = utcnow()
    session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family) == family, col(RefreshToken.used_at).is_(None))
        .values(used_at=now)
    )
    # Kept until the longest access token of the family could expire (a minute more for clock skew).
    expires = now + timedelta(minutes=settings.access_token_minutes + 1)
    row = {"family": family, "user_id": user_id, "revoked_at": now, "expires_at": expires}
    insert_ignore(session, RevokedTokenFamily.__table__, [row])  # type: ignore[attr-defined]
    session.execute(delete(RevokedTokenFamily).where(col(RevokedTokenFamily.expires_at) < now))


def logout(session: Session, settings: Settings, refresh_token: str | None, access_token: str | None) -> None:
    """Ends the session of the refresh token given, or else of the bearer access token."""
    secret = settings.secret("jwt_secret")
    if refresh_token:
        claims = decode_token(secret, refresh_token, "refresh")
    elif access_token:
        claims = decode_token(secret, access_token, "access")
    else:
        raise Unauthorized("send the refresh token in the body, or an access token (Authorization: Bearer)")
    if session.get(User, claims.user_id) is None:
        raise Unauthorized("unknown user")
    revoke_family(session, settings, claims.user_id, claims.family)


def change_password(
    session: Session, settings: Settings, user: User, old: str, new: str, client: str
) -> TokenPair:
    """Ends every session of the user (all refresh families; access tokens by the session epoch) and
    returns a new session for the caller. The old password is throttled like a login."""
    if _check_password(session, settings, user.email, old, client) is None:
        raise Unauthorized("wrong password")
    new_hash = hash_secret(new)
    # One atomic step: of two concurrent changes, each ends the sessions the other had issued.
    session.execute(
        update(User)
        .where(col(User.id) == user.id)
        .values(password_hash=new_hash, session_epoch=col(User.session_epoch) + 1)
    )
    session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.user_id) == user.id, col(RefreshToken.used_at).is_(None))
        .values(used_at=utcnow())
    )
    session.refresh(user)
    return issue_tokens(session, settings, user)


# -- administration --------------------------------------------------------------------------------------


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

    return parse_amount(settings.approval_grant, allow_zero=True)
