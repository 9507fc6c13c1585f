"""Envelope encryption: round trips, every failure mode typed and silent about keys, rotation."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.envelope import (
    EnvelopeError,
    InvalidMasterKey,
    MalformedSealedSecret,
    MasterKey,
    SealedSecret,
    UnsealError,
    WrongMasterKey,
    aad_for,
    open_sealed,
    rewrap,
    seal,
)
from wallet.secrets import CustodialKey, KeyAddressMismatch, new_custodial_key, open_signer

RAW_KEY = bytes(range(32))
OTHER_RAW_KEY = bytes(range(1, 33))
MASTER = MasterKey(RAW_KEY)
OTHER = MasterKey(OTHER_RAW_KEY)
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
AAD = aad_for(7, ALICE)
SECRET = b"\x11" * 32

# Everything a message must never contain: the master keys in every encoding we accept.
FORBIDDEN = [
    f(k)
    for k in (RAW_KEY, OTHER_RAW_KEY)
    for f in (
        bytes.hex,
        lambda b: base64.b64encode(b).decode(),
        lambda b: base64.urlsafe_b64encode(b).decode(),
    )
]


def assert_silent(exc: BaseException) -> None:
    text = f"{exc} {exc!r}"
    assert not any(secret in text for secret in FORBIDDEN)
    assert SECRET.hex() not in text


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=512), aad=st.binary(max_size=128))
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    sealed = seal(MASTER, plaintext, aad)
    assert open_sealed(MASTER, sealed, aad) == plaintext
    assert open_sealed(MASTER, SealedSecret.from_bytes(sealed.to_bytes()), aad) == plaintext
    assert open_sealed(MASTER, SealedSecret.from_text(sealed.to_text()), aad) == plaintext
    assert len(plaintext) < 16 or plaintext not in sealed.to_bytes()  # short ones may occur by chance


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_flipped_bit_is_detected(data: st.DataObject) -> None:
    stored = bytearray(seal(MASTER, SECRET, AAD).to_bytes())
    # Byte 0 is the version and bytes 1-8 the key id: those fail as malformed / wrong key instead.
    index = data.draw(st.integers(min_value=9, max_value=len(stored) - 1))
    stored[index] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(UnsealError) as info:
        open_sealed(MASTER, SealedSecret.from_bytes(bytes(stored)), AAD)
    assert_silent(info.value)


def test_each_seal_uses_fresh_randomness() -> None:
    a, b = seal(MASTER, SECRET, AAD), seal(MASTER, SECRET, AAD)
    assert a.ciphertext != b.ciphertext and a.wrapped_key != b.wrapped_key and a.nonce != b.nonce


def test_wrong_master_key_is_refused_by_id() -> None:
    sealed = seal(MASTER, SECRET, AAD)
    with pytest.raises(WrongMasterKey, match=MASTER.key_id) as info:
        open_sealed(OTHER, sealed, AAD)
    assert_silent(info.value)


def test_wrong_master_key_with_a_forged_id_fails_authentication() -> None:
    forged = dataclasses.replace(seal(MASTER, SECRET, AAD), master_key_id=OTHER.key_id)
    with pytest.raises(UnsealError) as info:
        open_sealed(OTHER, forged, AAD)
    assert_silent(info.value)


def test_wrong_aad_fails_for_another_user_or_address() -> None:
    sealed = seal(MASTER, SECRET, AAD)
    for aad in (aad_for(8, ALICE), aad_for(7, BOB), b""):
        with pytest.raises(UnsealError) as info:
            open_sealed(MASTER, sealed, aad)
        assert_silent(info.value)
    assert open_sealed(MASTER, sealed, aad_for("7", ALICE.lower())) == SECRET  # same binding


def test_swapping_wrapped_keys_between_records_fails() -> None:
    a, b = seal(MASTER, SECRET, AAD), seal(MASTER, b"other", AAD)
    spliced = dataclasses.replace(a, wrapped_key=b.wrapped_key, wrap_nonce=b.wrap_nonce)
    with pytest.raises(UnsealError):
        open_sealed(MASTER, spliced, AAD)


def test_rewrap_keeps_plaintext_and_ciphertext() -> None:
    sealed = seal(MASTER, SECRET, AAD)
    rotated = rewrap(MASTER, OTHER, sealed, AAD)
    assert rotated.master_key_id == OTHER.key_id
    assert (rotated.ciphertext, rotated.nonce) == (sealed.ciphertext, sealed.nonce)
    assert rotated.wrapped_key != sealed.wrapped_key
    assert open_sealed(OTHER, rotated, AAD) == SECRET
    with pytest.raises(WrongMasterKey):
        open_sealed(MASTER, rotated, AAD)
    assert rewrap(MASTER, OTHER, rotated, AAD) is rotated  # an interrupted rotation can run again


def test_rewrap_checks_key_and_aad() -> None:
    sealed = seal(MASTER, SECRET, AAD)
    with pytest.raises(WrongMasterKey):
        rewrap(OTHER, MasterKey(b"\x05" * 32), sealed, AAD)
    with pytest.raises(UnsealError):
        rewrap(MASTER, OTHER, sealed, aad_for(8, ALICE))


def test_master_key_settings() -> None:
    expected_id = hashlib.sha256(RAW_KEY).digest()[:8].hex()
    for setting in (
        RAW_KEY.hex(),
        "0x" + RAW_KEY.hex().upper(),
        base64.b64encode(RAW_KEY).decode(),
        base64.urlsafe_b64encode(RAW_KEY).decode() + "\n",
    ):
        assert MasterKey.from_setting(setting).key_id == expected_id
    generated = MasterKey.generate_setting()
    assert generated != MasterKey.generate_setting()
    assert len(MasterKey.from_setting(generated).key_id) == 16


@pytest.mark.parametrize(
    "setting",
    ["", "change-me", RAW_KEY.hex()[:-2], base64.b64encode(RAW_KEY[:31]).decode(), RAW_KEY.hex() + "00"],
)
def test_bad_master_key_settings_are_refused_without_echo(setting: str) -> None:
    with pytest.raises(InvalidMasterKey) as info:
        MasterKey.from_setting(setting)
    assert not setting or setting not in str(info.value)


def test_master_key_repr_and_pickle_hide_the_key() -> None:
    assert repr(MASTER) == f"MasterKey(key_id={MASTER.key_id!r})"
    assert not any(secret in repr(MASTER) for secret in FORBIDDEN)
    with pytest.raises(TypeError):
        pickle.dumps(MASTER)
    sealed = seal(MASTER, SECRET, AAD)
    assert sealed.ciphertext.hex() not in repr(sealed)


@pytest.mark.parametrize(
    "mutation",
    [
        lambda b: b[:60],
        lambda b: b"\x02" + b[1:],
        lambda b: b[: 1 + 8 + 12 + 12 + 48 + 15],
    ],
)
def test_malformed_records_are_refused(mutation: object) -> None:
    stored = seal(MASTER, SECRET, AAD).to_bytes()
    with pytest.raises(MalformedSealedSecret):
        SealedSecret.from_bytes(mutation(stored))  # type: ignore[operator]


def test_malformed_text_is_refused() -> None:
    text = seal(MASTER, SECRET, AAD).to_text()
    for bad in ("", "not base64!", text[:-4] + "!!!!"):
        with pytest.raises(MalformedSealedSecret):
            SealedSecret.from_text(bad)
    assert issubclass(MalformedSealedSecret, EnvelopeError)


def test_aad_binds_user_and_address_unambiguously() -> None:
    assert aad_for(7, ALICE) == aad_for("7", ALICE.lower())
    assert aad_for(7, ALICE) != aad_for(17, ALICE)
    assert aad_for('7","', ALICE) != aad_for(7, ALICE)
    with pytest.raises(ValueError):
        aad_for(7, "0x1234")


def test_custodial_key_round_trip() -> None:
    key = new_custodial_key(MASTER, 7)
    assert key.sealed.master_key_id == MASTER.key_id
    signer = open_signer(MASTER, key, 7, chain_id=1001, allowed_contracts=[])
    assert signer.address == key.address
    assert new_custodial_key(MASTER, 7).address != key.address
    with pytest.raises(UnsealError):
        open_signer(MASTER, key, 8, chain_id=1001, allowed_contracts=[])


def test_custodial_key_with_a_swapped_address_is_refused() -> None:
    key = new_custodial_key(MASTER, 7)
    other = new_custodial_key(MASTER, 7)
    # Same user, the other key's address: the aad no longer matches, so it fails before deriving.
    with pytest.raises(UnsealError):
        open_signer(
            MASTER,
            CustodialKey(address=other.address, sealed=key.sealed),
            7,
            chain_id=1,
            allowed_contracts=[],
        )
    # Resealed under the wrong address on purpose: the derived address check catches it.
    plaintext = open_sealed(MASTER, key.sealed, aad_for(7, key.address))
    forged = CustodialKey(address=other.address, sealed=seal(MASTER, plaintext, aad_for(7, other.address)))
    with pytest.raises(KeyAddressMismatch):
        open_signer(MASTER, forged, 7, chain_id=1, allowed_contracts=[])
