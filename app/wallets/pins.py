"""PIN hashes: HMAC-SHA-256 over (user id, PIN) under a pepper sealed with the master key.

A PIN authorises online spending; it never protects keys at rest (the master key opens every custodial
key without it), and six digits fall to any offline search, slow hash or not. What protects a PIN is the
attempt limit (attempts.py), so its check is a keyed hash, not a memory-hard one: an attacker with the
database but not the master key cannot test a single guess (docs/security.md). Argon2id hashes written
before this stay valid and are replaced on their next successful check.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.context import Context
from app.core.security import utcnow, verify_secret
from app.wallets.models import ServiceSecret
from wallet.envelope import MasterKey, SealedSecret, open_sealed, rewrap, seal

PEPPER = "pin_pepper"
PREFIX = "hmac-sha256$"


def _aad(name: str) -> bytes:
    return f"service-secret:{name}".encode()


def pepper(ctx: Context) -> bytes:
    """The PIN pepper, created by the first process that needs it (whichever wins the insert) and kept
    open in memory after the first read: it is needed on every PIN check."""
    cached = ctx.service_secrets.get(PEPPER)
    if cached is not None:
        return cached
    master = MasterKey.from_setting(ctx.settings.secret("wallet_master_key"))
    with Session(ctx.engine) as session:
        row = session.get(ServiceSecret, PEPPER)
        if row is None:
            sealed = seal(master, os.urandom(32), _aad(PEPPER)).to_text()
            session.add(ServiceSecret(name=PEPPER, sealed=sealed, created_at=utcnow()))
            try:
                session.commit()
            except IntegrityError:  # another process created it first: use theirs
                session.rollback()
            row = session.get(ServiceSecret, PEPPER)
        assert row is not None
        value = open_sealed(master, SealedSecret.from_text(row.sealed), _aad(PEPPER))
    ctx.service_secrets[PEPPER] = value
    return value


def hash_pin(ctx: Context, user_id: int, pin: str) -> str:
    mac = hmac.new(pepper(ctx), f"{user_id}:{pin}".encode(), hashlib.sha256)
    return PREFIX + mac.hexdigest()


def verify_pin(ctx: Context, stored: str | None, user_id: int, pin: str) -> bool:
    """True when `pin` matches `stored`, a keyed hash or a legacy Argon2id hash (see needs_rehash)."""
    if stored is None:
        return False
    if stored.startswith(PREFIX):
        return hmac.compare_digest(stored, hash_pin(ctx, user_id, pin))
    return verify_secret(stored, pin)


def needs_rehash(stored: str | None) -> bool:
    """A legacy Argon2id PIN hash, to be replaced by the keyed hash once the PIN proved right."""
    return stored is not None and not stored.startswith(PREFIX)


def rotate_service_secrets(session: Session, old: MasterKey, new: MasterKey) -> int:
    count = 0
    for row in session.exec(select(ServiceSecret).order_by(col(ServiceSecret.name))):
        row.sealed = rewrap(old, new, SealedSecret.from_text(row.sealed), _aad(row.name)).to_text()
        session.add(row)
        count += 1
    return count
