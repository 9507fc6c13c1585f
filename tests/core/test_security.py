"""The production cost of password hashing (the suite itself hashes cheaply: tests/conftest.py)."""

from __future__ import annotations

from app.core import security


def test_passwords_are_hashed_with_owasps_argon2id_minimum() -> None:
    # The dummy hash is made at import with the service's own hasher, before the suite swaps it.
    assert security._DUMMY_HASH.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_a_hash_checks_only_its_own_secret() -> None:
    hashed = security.hash_secret("correct horse battery")
    assert security.verify_secret(hashed, "correct horse battery")
    assert not security.verify_secret(hashed, "correct horse batterY")
    assert not security.verify_secret(None, "correct horse battery")  # a missing user never passes
    assert not security.verify_secret("not a hash", "correct horse battery")
