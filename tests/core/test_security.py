"""The production cost of password hashing (the suite itself hashes cheaply: tests/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.core import security
from app.core.errors import Unauthorized


def test_passwords_are_hashed_with_owasps_argon2id_minimum() -> None:
    # The dummy hash is made at import with the service's own hasher, before the suite swaps it.
    assert security._DUMMY_HASH.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_a_hash_checks_only_its_own_secret() -> None:
    hashed = security.hash_secret("correct horse battery")
    assert security.verify_secret(hashed, "correct horse battery")
    assert not security.verify_secret(hashed, "correct horse batterY")
    assert not security.verify_secret(None, "correct horse battery")  # a missing user never passes
    assert not security.verify_secret("not a hash", "correct horse battery")


def _token(secret: str = "s" * 32, kind: str = "access", ttl: timedelta = timedelta(minutes=5)) -> str:
    return security.create_token(secret, 7, kind, ttl, family="fam", epoch=3)[0]


def test_a_checked_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token()
    claims = security.decode_token("s" * 32, token, "access")
    assert (claims.user_id, claims.family, claims.epoch) == (7, "fam", 3)
    expires = security._CHECKED["s" * 32, token, "access"][1]
    monkeypatch.setattr(security, "_clock", lambda: expires - 0.5)
    assert security.decode_token("s" * 32, token, "access") == claims
    monkeypatch.setattr(security, "_clock", lambda: expires)  # PyJWT: expired once exp <= now
    with pytest.raises(Unauthorized, match="token expired"):
        security.decode_token("s" * 32, token, "access")


def test_a_remembered_token_is_no_pass_for_another_token_secret_or_kind() -> None:
    token = _token()
    security.decode_token("s" * 32, token, "access")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthorized, match="invalid token"):
        security.decode_token("s" * 32, forged, "access")
    with pytest.raises(Unauthorized, match="invalid token"):
        security.decode_token("t" * 32, token, "access")
    with pytest.raises(Unauthorized, match="not a refresh token"):
        security.decode_token("s" * 32, token, "refresh")
    with pytest.raises(Unauthorized, match="token expired"):
        security.decode_token("s" * 32, _token(ttl=timedelta(seconds=-1)), "access")


def test_the_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "CHECKED_TOKENS_KEPT", 3)
    monkeypatch.setattr(security, "_CHECKED", {})
    for _ in range(7):
        security.decode_token("s" * 32, _token(), "access")
        assert len(security._CHECKED) <= 3
