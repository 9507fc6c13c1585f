"""LocalSigner: refuses foreign chains and contracts, hides its key, and its signatures recover."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.datatypes import PrivateKey, Signature
from eth_utils import keccak

from wallet import signer as signer_module
from wallet.signer import (
    LocalSigner,
    SignedTransaction,
    Signer,
    SigningFailed,
    SigningRefused,
    recover_digest,
    recover_personal_message,
    recover_typed_data,
)
from wallet.typed_data import MalformedSignature, TokenDomain, nonce_for, permit, transfer_with_authorization

KEY_BYTES = keccak(text="essx signer test key")
KEY = PrivateKey(KEY_BYTES)
ADDRESS = KEY.public_key.to_checksum_address()
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
CHAIN_ID = 1001


def make_signer(key: Any = KEY) -> LocalSigner:
    return LocalSigner(key, chain_id=CHAIN_ID, allowed_contracts=[TOKEN.lower()])


def authorization(chain_id: int = CHAIN_ID, contract: str = TOKEN) -> dict[str, Any]:
    return transfer_with_authorization(
        TokenDomain("Energy Coin", chain_id, contract),
        from_=ADDRESS,
        to=BOB,
        value=10**18,
        valid_after=0,
        valid_before=2**40,
        nonce=nonce_for("transfer", 1),
    )


def tx(**overrides: Any) -> dict[str, Any]:
    base = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": 0,
        "to": TOKEN,
        "value": 0,
        "data": "0x",
        "gas": 60_000,
        "maxFeePerGas": 50 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    return {**base, **overrides}


def assert_no_key(text: str) -> None:
    assert KEY_BYTES.hex() not in text.lower()


def test_typed_data_signature_recovers_and_equals_eth_account() -> None:
    s = make_signer()
    td = authorization()
    signature = s.sign_typed_data(td)
    assert len(signature) == 65 and signature[64] in (27, 28)
    assert recover_typed_data(td, signature) == ADDRESS
    # RFC 6979 signatures are deterministic: byte-equal to eth-account's own path.
    assert signature == bytes(Account.sign_typed_data(KEY, full_message=td).signature)


def test_signs_permit_too() -> None:
    td = permit(
        TokenDomain("Energy Coin", CHAIN_ID, TOKEN), owner=ADDRESS, spender=BOB, value=1, nonce=0, deadline=9
    )
    assert recover_typed_data(td, make_signer().sign_typed_data(td)) == ADDRESS


@pytest.mark.parametrize(
    ("td", "reason"),
    [
        (authorization(chain_id=8217), "chainId is 8217, expected 1001"),
        (authorization(contract=OTHER_CONTRACT), "not one of our deployed contracts"),
    ],
)
def test_refuses_foreign_chain_and_contract(td: dict[str, Any], reason: str) -> None:
    with pytest.raises(SigningRefused, match=reason) as info:
        make_signer().sign_typed_data(td)
    assert_no_key(str(info.value))


def test_refuses_typed_data_that_is_not_one_of_our_schemas() -> None:
    td = authorization()
    td["primaryType"] = "Mail"
    with pytest.raises(SigningRefused, match="primaryType"):
        make_signer().sign_typed_data(td)
    td = authorization()
    del td["domain"]["chainId"]
    with pytest.raises(SigningRefused, match="domain"):
        make_signer().sign_typed_data(td)


def test_repr_str_and_pickle_never_show_the_key() -> None:
    s = make_signer()
    for text in (repr(s), str(s), f"{s}", f"{s!r}"):
        assert_no_key(text)
        assert ADDRESS in text
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert not hasattr(s, "key") and not hasattr(s, "__dict__")


def test_constructors_agree() -> None:
    from_account = make_signer(Account.from_key(KEY_BYTES))
    from_bytes = LocalSigner.from_key_bytes(KEY_BYTES, chain_id=CHAIN_ID, allowed_contracts=[TOKEN])
    assert make_signer().address == from_account.address == from_bytes.address == ADDRESS
    assert from_bytes.allowed_contracts == frozenset({TOKEN})
    assert isinstance(from_bytes, Signer)


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b"\x00" * 32, b"\xff" * 32])
def test_from_key_bytes_refuses_invalid_keys_without_echoing_them(bad: bytes) -> None:
    with pytest.raises(ValueError) as info:
        LocalSigner.from_key_bytes(bad, chain_id=CHAIN_ID, allowed_contracts=[])
    assert "ff" * 8 not in str(info.value) and "01" * 8 not in str(info.value)


def test_sign_transaction_returns_raw_bytes_and_hash_that_recover() -> None:
    signed = make_signer().sign_transaction(tx())
    assert isinstance(signed, SignedTransaction)
    assert signed.hash == keccak(signed.raw)
    assert Account.recover_transaction(signed.raw) == ADDRESS
    legacy = make_signer().sign_transaction(
        {"chainId": CHAIN_ID, "nonce": 1, "to": BOB, "value": 1, "gas": 21_000, "gasPrice": 25 * 10**9}
    )
    assert Account.recover_transaction(legacy.raw) == ADDRESS


@pytest.mark.parametrize(
    ("transaction", "reason"),
    [
        (tx(chainId=8217), "chainId is 8217"),
        ({k: v for k, v in tx().items() if k != "chainId"}, "chainId is None"),
        (tx(**{"from": BOB}), "not this signer"),
    ],
)
def test_sign_transaction_refuses_other_chains_and_senders(transaction: dict[str, Any], reason: str) -> None:
    with pytest.raises(SigningRefused, match=reason):
        make_signer().sign_transaction(transaction)


def test_sign_transaction_accepts_its_own_from_in_any_case() -> None:
    assert make_signer().sign_transaction(tx(**{"from": ADDRESS.lower()})).raw


@pytest.mark.parametrize(
    "transaction",
    [
        tx(),
        tx(nonce=7, value=3, data="0x40c10f19" + "00" * 63 + "01", gas=150_000),
        tx(nonce=2**40, maxFeePerGas=0, maxPriorityFeePerGas=0),
        {k: v for k, v in tx(data="0x6080").items() if k != "to"},  # a contract creation
        tx(type="0x2", value=10**30),
    ],
)
def test_eip1559_transactions_are_signed_byte_for_byte_as_eth_account_signs_them(
    transaction: dict[str, Any],
) -> None:
    ours = make_signer().sign_transaction(transaction)
    theirs = Account.sign_transaction(transaction, KEY_BYTES)
    assert ours.raw == bytes(theirs.rawTransaction) and ours.hash == bytes(theirs.hash)


def test_what_the_direct_encoding_does_not_cover_is_left_to_eth_account() -> None:
    signer = make_signer()
    listed = tx(accessList=[{"address": TOKEN, "storageKeys": []}])
    assert signer.sign_transaction(listed).raw == bytes(
        Account.sign_transaction(listed, KEY_BYTES).rawTransaction
    )
    for refused in (tx(gas="60000"), tx(to=TOKEN.lower())):  # eth-account's validation refuses these
        with pytest.raises((TypeError, ValueError)):
            signer.sign_transaction(refused)


def test_a_signature_that_does_not_recover_is_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signer_module.Account, "recover_transaction", lambda raw: BOB)
    legacy = {"chainId": CHAIN_ID, "nonce": 1, "to": BOB, "value": 1, "gas": 21_000, "gasPrice": 25 * 10**9}
    with pytest.raises(SigningFailed):
        make_signer().sign_transaction(legacy)
    other = PrivateKey(keccak(text="another key")).public_key
    monkeypatch.setattr(Signature, "recover_public_key_from_msg_hash", lambda self, digest: other)
    with pytest.raises(SigningFailed):
        make_signer().sign_transaction(tx())


def test_recover_personal_message() -> None:
    message = "link my wallet\nnonce 123"
    signed = Account.sign_message(encode_defunct(text=message), KEY)
    assert recover_personal_message(message, bytes(signed.signature)) == ADDRESS
    assert recover_personal_message(message, signed.signature.hex()) == ADDRESS
    assert recover_personal_message(message + ".", bytes(signed.signature)) != ADDRESS
    with pytest.raises(MalformedSignature):
        recover_personal_message(message, b"\x01" * 64)


def test_recover_digest_agrees_with_eth_account_and_refuses_what_recovers_to_nobody() -> None:
    """The direct libsecp256k1 recovery gives eth-account's answer, for both v and many keys; a signature
    that recovers to no public key, or a digest that is not 32 bytes, is malformed."""
    for i in range(40):
        account = Account.from_key(keccak(text=f"essx recover {i}"))
        digest = keccak(text=f"digest {i}")
        signature = bytes(Account._sign_hash(digest, account.key).signature)
        assert recover_digest(digest, signature) == account.address
        assert recover_digest(digest, "0x" + signature.hex()) == account.address
        assert recover_digest(keccak(digest), signature) != account.address
    digest = keccak(text="digest")
    with pytest.raises(MalformedSignature):  # r = 5: no point of the curve has that x
        recover_digest(digest, (5).to_bytes(32, "big") + (1).to_bytes(32, "big") + bytes([27]))
    with pytest.raises(MalformedSignature):
        recover_digest(digest[:31], bytes(Account._sign_hash(digest, KEY_BYTES).signature))
