"""Custodial and linked wallets, spending authorisation (PIN and one-time code, each with an attempt
limit that holds under parallel requests; a one-time code is used once)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple, NoReturn

import pyotp
from sqlalchemy import Table, bindparam, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select
from web3 import Web3

from app.context import Context
from app.core.errors import Conflict, NotFound
from app.core.money import parse_address
from app.core.security import utcnow
from app.users.models import User
from app.wallets import attempts, pins
from app.wallets.errors import LinkRejected, OtpLocked, OtpRequired, WalletLocked, WrongOtp, WrongPin
from app.wallets.models import LinkChallenge, UserTotp, Wallet, WalletKind
from wallet import siwe
from wallet.envelope import MasterKey, SealedSecret, aad_for, open_sealed, rewrap, seal
from wallet.secrets import CustodialKey, new_custodial_key, open_signer
from wallet.signer import LocalSigner

PIN_MAX_FAILURES = 5
PIN_LOCKOUT = timedelta(minutes=15)
WALLETS: Table = Wallet.__table__  # type: ignore[attr-defined]
PIN_ATTEMPTS = attempts.AttemptLimit(
    WALLETS.c.id, WALLETS.c.pin_failures, WALLETS.c.locked_until, PIN_MAX_FAILURES, PIN_LOCKOUT
)
OTP_MAX_FAILURES = 5
OTP_LOCKOUT = timedelta(minutes=15)
TOTPS: Table = UserTotp.__table__  # type: ignore[attr-defined]
OTP_ATTEMPTS = attempts.AttemptLimit(
    TOTPS.c.user_id, TOTPS.c.failures, TOTPS.c.locked_until, OTP_MAX_FAILURES, OTP_LOCKOUT
)
LINK_TTL = timedelta(minutes=10)


def master_key(ctx: Context) -> MasterKey:
    return MasterKey.from_setting(ctx.settings.secret("wallet_master_key"))


# Built once: the hot paths (every transfer, order and mint) run them with new parameters only.
_ACTIVE_WALLET = select(Wallet).where(
    col(Wallet.user_id) == bindparam("user_id"), col(Wallet.active).is_(True)
)
_TOTP = select(UserTotp).where(col(UserTotp.user_id) == bindparam("user_id"))
_RECIPIENT = aliased(Wallet)
_SENDER_AND_RECIPIENT = (
    select(
        Wallet,
        UserTotp.enabled,
        select(_RECIPIENT.user_id)
        .where(_RECIPIENT.address == bindparam("to_address"), col(_RECIPIENT.active).is_(True))
        .limit(1)
        .scalar_subquery(),
    )
    .outerjoin(UserTotp, col(UserTotp.user_id) == col(Wallet.user_id))
    .where(col(Wallet.user_id) == bindparam("user_id"), col(Wallet.active).is_(True))
)
NO_WALLET = "you have no wallet yet: create one (POST /api/v1/wallets) or link one"
_TOTP_ENABLED = select(UserTotp.enabled).where(col(UserTotp.user_id) == bindparam("user_id"))
_USER_OF_ADDRESS = (
    select(col(Wallet.user_id))
    .where(col(Wallet.address) == bindparam("address"), col(Wallet.active).is_(True))
    .limit(1)
)


def active_wallet(session: Session, user_id: int) -> Wallet | None:
    return session.exec(_ACTIVE_WALLET, params={"user_id": user_id}).first()


def user_of_address(session: Session, address: str) -> int | None:
    """The user whose active wallet has `address` (one column)."""
    return session.execute(_USER_OF_ADDRESS, {"address": address}).scalar()


def require_wallet(session: Session, user_id: int) -> Wallet:
    wallet = active_wallet(session, user_id)
    if wallet is None:
        raise NotFound(NO_WALLET)
    return wallet


class SenderAndRecipient(NamedTuple):
    wallet: Wallet  # the sender's active wallet
    otp_enrolled: bool  # the sender has a one-time code enrolled (`totp_enabled`)
    recipient_id: int | None  # the user whose active wallet has the recipient's address (`user_of_address`)


def sender_and_recipient(session: Session, user_id: int, to_address: str) -> SenderAndRecipient:
    """`require_wallet`, `totp_enabled` and the recipient's `user_of_address` in one query, where a
    transfer's creation needs all three."""
    row = session.exec(_SENDER_AND_RECIPIENT, params={"user_id": user_id, "to_address": to_address}).first()
    if row is None:
        raise NotFound(NO_WALLET)
    return SenderAndRecipient(row[0], bool(row[1]), row[2])


def _ensure_none(session: Session, user: User) -> None:
    if active_wallet(session, user.id or 0) is not None:
        raise Conflict("you already have an active wallet")


def create_custodial(ctx: Context, session: Session, user: User, pin: str) -> Wallet:
    _ensure_none(session, user)
    key = new_custodial_key(master_key(ctx), user.id)
    wallet = Wallet(
        user_id=user.id or 0,
        kind=WalletKind.custodial,
        address=key.address,
        sealed_key=key.sealed.to_text(),
        pin_hash=pins.hash_pin(ctx, user.id or 0, pin),
        created_at=utcnow(),
    )
    session.add(wallet)
    session.flush()
    return wallet


def _locked_detail(what: str, until: datetime | None) -> str:
    when = f"until {until.isoformat(timespec='seconds')}" if until else "for a while"
    return f"too many wrong {what}; locked {when}"


def check_pin(ctx: Context, session: Session, wallet: Wallet, pin: str) -> None:
    """Keyed-hash check (pins.py), at most PIN_MAX_FAILURES wrong PINs per lock window however many
    requests run at once (attempts.py: the attempt is reserved before the PIN is checked, and a wrong one
    is committed before it is answered).
    A legacy Argon2id hash is replaced by the keyed hash in the commit that records the success. Commits
    the session."""
    record_success = verify_pin(ctx, session, wallet, pin)
    record_success(session)
    session.commit()


def verify_pin(ctx: Context, session: Session, wallet: Wallet, pin: str) -> Callable[[Session], None]:
    """`check_pin` without its last commit: returns the success's record (the attempt count starting
    over, a legacy hash replaced) for the caller to write in the transaction that acts on the PIN, and
    again in a transaction of its own if that one rolls back (app/spending/authorizer.py). The attempt
    itself is counted here in the session's transaction: a wrong PIN's count is committed before it is
    answered, a right one's with the act it authorises.
    A keyed hash is checked first and its attempt counted in one statement (attempts.settle_in), whose
    row lock the record then finds held: written already, unless the transaction ended meanwhile. A legacy
    Argon2id hash is slow: its attempt is reserved before it is checked (attempts.reserve_in), so a locked
    wallet costs no Argon2 per guess."""
    pins.pepper(ctx)  # before the attempt holds SQLite's write lock: its first use may insert it
    if pins.needs_rehash(wallet.pin_hash):
        return _verify_legacy_pin(ctx, session, wallet, pin)
    right = pins.verify_pin(ctx, wallet.pin_hash, wallet.user_id, pin)
    attempt = attempts.settle_in(session, PIN_ATTEMPTS, wallet.id, right)
    if attempt is None:  # locked: the check's result is dropped, a right PIN waits as a wrong one does
        raise WalletLocked(_locked_detail("PINs", attempts.locked_until(session, PIN_ATTEMPTS, wallet.id)))
    if right:
        written_in = session.get_transaction()

        def record_success(into: Session) -> None:
            if into is session and written_in is not None and into.get_transaction() is written_in:
                return  # settle_in wrote it in this transaction, which holds the row's lock since
            attempts.reset(into, PIN_ATTEMPTS, wallet.id)

        return record_success
    _answer_wrong_pin(session, attempt)


def _verify_legacy_pin(ctx: Context, session: Session, wallet: Wallet, pin: str) -> Callable[[Session], None]:
    attempt = attempts.reserve_in(session, PIN_ATTEMPTS, wallet.id)
    if attempt is None:
        raise WalletLocked(_locked_detail("PINs", attempts.locked_until(session, PIN_ATTEMPTS, wallet.id)))
    if pins.verify_pin(ctx, wallet.pin_hash, wallet.user_id, pin):
        new_hash = pins.hash_pin(ctx, wallet.user_id, pin)

        def record_success(into: Session) -> None:
            _set_pin_hash(into, wallet, new_hash)
            attempts.reset(into, PIN_ATTEMPTS, wallet.id)

        return record_success
    _answer_wrong_pin(session, attempt)


def _answer_wrong_pin(session: Session, attempt: attempts.Attempt) -> NoReturn:
    session.commit()  # a wrong PIN's count, before the answer says so
    if attempt.locks:
        raise WalletLocked("too many wrong PINs; the wallet is locked for 15 minutes")
    left = PIN_MAX_FAILURES - attempt.number
    raise WrongPin(f"wrong PIN ({left} attempts left before a 15-minute lock)")


def _set_pin_hash(session: Session, wallet: Wallet, pin_hash: str) -> None:
    session.execute(
        update(Wallet)
        .where(col(Wallet.id) == wallet.id)
        .values(pin_hash=pin_hash)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(wallet, "pin_hash", pin_hash)


def change_pin(ctx: Context, session: Session, wallet: Wallet, old_pin: str, new_pin: str) -> None:
    if wallet.kind != WalletKind.custodial:
        raise Conflict("a linked wallet has no PIN: its own app authorises spending")
    check_pin(ctx, session, wallet, old_pin)
    wallet.pin_hash = pins.hash_pin(ctx, wallet.user_id, new_pin)
    session.add(wallet)


def signer_for(ctx: Context, wallet: Wallet) -> LocalSigner:
    key = CustodialKey(address=wallet.address, sealed=SealedSecret.from_text(wallet.sealed_key or ""))
    return open_signer(
        master_key(ctx),
        key,
        wallet.user_id,
        chain_id=ctx.chain_id,
        allowed_contracts=[c.address for c in ctx.contracts.values()],
    )


# -- TOTP (RFC 6238) --------------------------------------------------------------------------------


def totp_setup(ctx: Context, session: Session, user: User) -> tuple[str, str]:
    existing = session.get(UserTotp, user.id)
    if existing is not None and existing.enabled:
        raise Conflict("a one-time code is already enrolled")
    secret = pyotp.random_base32()
    sealed = seal(master_key(ctx), secret.encode(), f"totp:{user.id}".encode()).to_text()
    if existing is None:
        existing = UserTotp(user_id=user.id or 0, sealed_secret=sealed, created_at=utcnow())
    existing.sealed_secret, existing.enabled, existing.last_counter = sealed, False, -1
    session.add(existing)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name="ESSX")
    return secret, uri


def _totp(ctx: Context, row: UserTotp) -> pyotp.TOTP:
    secret = open_sealed(
        master_key(ctx), SealedSecret.from_text(row.sealed_secret), f"totp:{row.user_id}".encode()
    )
    return pyotp.TOTP(secret.decode())


def check_otp(
    ctx: Context, session: Session, user_id: int, code: str | None, *, enrolling: bool = False
) -> bool:
    """True when a code was required and accepted. Each time step's code is accepted once (a
    compare-and-set on last_counter), and at most OTP_MAX_FAILURES wrong codes are checked per lock
    window (reserved before checking, like PINs). Commits the session."""
    return check_otp_of(ctx, session, otp_enrolment(session, user_id), user_id, code, enrolling=enrolling)


def otp_enrolment(session: Session, user_id: int) -> UserTotp | None:
    """The user's one-time code enrolment, if any, for `check_otp_of`."""
    return session.exec(_TOTP, params={"user_id": user_id}).first()


def check_otp_of(
    ctx: Context,
    session: Session,
    row: UserTotp | None,
    user_id: int,
    code: str | None,
    *,
    enrolling: bool = False,
) -> bool:
    """`check_otp` with the user's enrolment read already (`otp_enrolment`): before the transaction's first
    write, which on SQLite holds the database's write lock until the commit."""
    if row is None or (not row.enabled and not enrolling):
        if enrolling:
            raise NotFound("start with POST /api/v1/auth/totp/setup")
        return False
    if not code:
        raise OtpRequired("this account needs a one-time code (otp)")
    where = col(UserTotp.user_id) == user_id
    attempt = attempts.reserve(session, OTP_ATTEMPTS, user_id)
    if attempt is None:
        raise OtpLocked(
            _locked_detail("one-time codes", attempts.locked_until(session, OTP_ATTEMPTS, user_id))
        )
    totp = _totp(ctx, row)
    now = utcnow().timestamp()
    for drift in (0, -1, 1):  # one step of clock drift either way
        counter = int(now // totp.interval) + drift
        if hmac.compare_digest(totp.generate_otp(counter).encode(), code.encode()):
            # Of parallel uses of one code, only one moves last_counter past it.
            won = session.exec(  # type: ignore[call-overload]
                update(UserTotp)
                .where(where, col(UserTotp.last_counter) < counter)
                .values(last_counter=counter, enabled=True, failures=0, locked_until=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if won.rowcount == 1:
                set_committed_value(row, "last_counter", counter)
                set_committed_value(row, "enabled", True)
                return True
            if attempt.locks:
                break
            raise WrongOtp("this one-time code was already used; wait for the next one")
    if attempt.locks:
        raise OtpLocked("too many wrong one-time codes; locked for 15 minutes")
    left = OTP_MAX_FAILURES - attempt.number
    raise WrongOtp(f"wrong one-time code ({left} attempts left before a 15-minute lock)")


def totp_enabled(session: Session, user_id: int) -> bool:
    return bool(session.exec(_TOTP_ENABLED, params={"user_id": user_id}).first())


# -- linking a mobile wallet (EIP-4361 style message, personal_sign) ------------------------------


def link_challenge(ctx: Context, session: Session, user: User, address: str) -> LinkChallenge:
    checked = parse_address(address)
    _ensure_none(session, user)
    now = utcnow()
    nonce = siwe.new_nonce()
    domain = f"{ctx.settings.host}:{ctx.settings.port}"
    message = siwe.build_message(
        domain,
        checked,
        f"http://{domain}/api/v1/wallets/link",
        ctx.chain_id,
        nonce,
        now.replace(microsecond=0),
        (now + LINK_TTL).replace(microsecond=0),
        "Link this wallet to your ESSX account. This costs nothing and moves no coins.",
    )
    row = LinkChallenge(
        nonce=nonce, user_id=user.id or 0, address=checked, message=message, expires_at=now + LINK_TTL
    )
    session.add(row)
    return row


def link(ctx: Context, session: Session, user: User, address: str, message: str, signature: str) -> Wallet:
    checked = parse_address(address)
    _ensure_none(session, user)
    try:
        parsed = siwe.parse_message(message)
    except siwe.SiweError as exc:
        raise LinkRejected(f"malformed link message: {exc}") from None
    challenge = session.get(LinkChallenge, parsed.nonce)
    if challenge is None or challenge.user_id != user.id or challenge.message != message:
        raise LinkRejected("this message was not issued to you: ask for a new challenge")
    if challenge.used_at is not None:
        raise LinkRejected("this challenge was already used")
    domain = f"{ctx.settings.host}:{ctx.settings.port}"
    try:
        siwe.verify(
            message, signature, domain, checked, ctx.chain_id, utcnow(), expected_nonce=challenge.nonce
        )
    except (siwe.SiweError, ValueError) as exc:
        raise LinkRejected(str(exc)) from None
    challenge.used_at = utcnow()
    session.add(challenge)
    wallet = Wallet(user_id=user.id or 0, kind=WalletKind.linked, address=checked, created_at=utcnow())
    session.add(wallet)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("you already have an active wallet") from None
    return wallet


# -- master key rotation -----------------------------------------------------------------------------


def rotate_master_key(session: Session, old: MasterKey, new: MasterKey) -> int:
    """Re-wraps every data key (wallet keys, TOTP secrets, the service's own secrets such as the PIN
    pepper); ciphertexts and addresses stay."""

    count = pins.rotate_service_secrets(session, old, new)
    for w in session.exec(select(Wallet).where(col(Wallet.sealed_key).is_not(None))):
        sealed = SealedSecret.from_text(w.sealed_key or "")
        w.sealed_key = rewrap(old, new, sealed, aad_for(w.user_id, w.address)).to_text()
        session.add(w)
        count += 1
    for t in session.exec(select(UserTotp)):
        t.sealed_secret = rewrap(
            old, new, SealedSecret.from_text(t.sealed_secret), f"totp:{t.user_id}".encode()
        ).to_text()
        session.add(t)
        count += 1
    return count


def balance_of(ctx: Context, address: str) -> tuple[int, int]:
    """The coin balance of an address and the block it was read at (GET /wallets/me, /accounts/.../balance)."""
    block = int(ctx.w3.eth.block_number)
    value = int(ctx.coin.functions.balanceOf(Web3.to_checksum_address(address)).call(block_identifier=block))
    return value, block
