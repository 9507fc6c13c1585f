"""EIP-712 typed data: digests against the spec's vector and a hand computation, builders, validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_keys.datatypes import PrivateKey
from eth_utils import keccak

from wallet.signer import recover_typed_data
from wallet.typed_data import (
    SCHEMAS,
    SECP256K1_N,
    MalformedSignature,
    MalformedTypedData,
    TokenDomain,
    WrongChainId,
    WrongContract,
    WrongPrimaryType,
    cancel_authorization,
    nonce_for,
    normalize_signature,
    permit,
    receive_with_authorization,
    signable,
    split_signature,
    transfer_with_authorization,
    typed_data_digest,
    validate_typed_data,
)

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
DOMAIN = TokenDomain(name="Energy Coin", chain_id=1001, verifying_contract=TOKEN)

# The "Mail" example of the EIP-712 specification (eips.ethereum.org/EIPS/eip-712, its Example.js).
MAIL = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}


def transfer(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "from_": ALICE,
        "to": BOB,
        "value": 12_345 * 10**18,
        "valid_after": 0,
        "valid_before": 1_900_000_000,
        "nonce": nonce_for("transfer", 42),
    }
    return transfer_with_authorization(DOMAIN, **{**args, **overrides})


def hand_digest(type_string: str, field_types: list[str], values: list[Any]) -> bytes:
    """EIP-712 by hand with eth_abi: keccak(0x1901 || domainSeparator || hashStruct(message))."""
    domain_separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(
                    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
                ),
                keccak(text="Energy Coin"),
                keccak(text="1"),
                1001,
                TOKEN,
            ],
        )
    )
    struct_hash = keccak(encode(["bytes32", *field_types], [keccak(text=type_string), *values]))
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


# ---- digests ---------------------------------------------------------------------------------------------


def test_mail_example_digest_and_signature_match_the_spec() -> None:
    assert typed_data_digest(MAIL).hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    cow = keccak(text="cow")
    signed = Account.sign_typed_data(cow, full_message=MAIL)
    assert signed.v == 28
    assert signed.r == 0x4355C47D63924E8A72E509B65029052EB6C299D53A04E167C5775FD466751C9D
    assert signed.s == 0x07299936D304C153F6443DFA05F40FF007D72911B6F72307F996231605B91562
    assert recover_typed_data(MAIL, bytes(signed.signature)) == "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"


def test_transfer_with_authorization_digest_matches_a_hand_computation() -> None:
    nonce = nonce_for("transfer", 42)
    expected = hand_digest(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
        "uint256 validBefore,bytes32 nonce)",
        ["address", "address", "uint256", "uint256", "uint256", "bytes32"],
        [ALICE, BOB, 12_345 * 10**18, 0, 1_900_000_000, nonce],
    )
    assert typed_data_digest(transfer()) == expected


def test_receive_and_cancel_and_permit_digests_match_hand_computations() -> None:
    nonce = nonce_for("transfer", 7)
    receive = receive_with_authorization(
        DOMAIN, from_=ALICE, to=BOB, value=5, valid_after=10, valid_before=20, nonce=nonce
    )
    assert typed_data_digest(receive) == hand_digest(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
        "uint256 validBefore,bytes32 nonce)",
        ["address", "address", "uint256", "uint256", "uint256", "bytes32"],
        [ALICE, BOB, 5, 10, 20, nonce],
    )
    cancel = cancel_authorization(DOMAIN, authorizer=ALICE, nonce=nonce)
    assert typed_data_digest(cancel) == hand_digest(
        "CancelAuthorization(address authorizer,bytes32 nonce)", ["address", "bytes32"], [ALICE, nonce]
    )
    signed_permit = permit(DOMAIN, owner=ALICE, spender=BOB, value=2**256 - 1, nonce=3, deadline=99)
    assert typed_data_digest(signed_permit) == hand_digest(
        "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)",
        ["address", "address", "uint256", "uint256", "uint256"],
        [ALICE, BOB, 2**256 - 1, 3, 99],
    )


def test_schemas_spell_the_contract_typehashes() -> None:
    # The strings the contract hashes (contracts/src/extensions/KIP7TransferAuthorization.sol, KIP7Permit).
    expected = {
        "TransferWithAuthorization": "address from,address to,uint256 value,uint256 validAfter,"
        "uint256 validBefore,bytes32 nonce",
        "ReceiveWithAuthorization": "address from,address to,uint256 value,uint256 validAfter,"
        "uint256 validBefore,bytes32 nonce",
        "CancelAuthorization": "address authorizer,bytes32 nonce",
        "Permit": "address owner,address spender,uint256 value,uint256 nonce,uint256 deadline",
    }
    for name, fields in SCHEMAS.items():
        assert ",".join(f"{f['type']} {f['name']}" for f in fields) == expected[name]


def test_a_signature_over_the_builder_output_recovers_the_holder() -> None:
    key = PrivateKey(keccak(text="alice"))
    td = transfer(from_=key.public_key.to_checksum_address())
    signed = Account.sign_typed_data(key, full_message=td)
    assert recover_typed_data(td, bytes(signed.signature)) == key.public_key.to_checksum_address()


# ---- builders --------------------------------------------------------------------------------------------


def test_builder_output_is_wallet_json() -> None:
    td = transfer(to=BOB.lower())
    assert json.loads(json.dumps(td)) == td
    assert td["primaryType"] == "TransferWithAuthorization"
    assert td["domain"] == {
        "name": "Energy Coin",
        "version": "1",
        "chainId": 1001,
        "verifyingContract": TOKEN,
    }
    message = td["message"]
    assert message["value"] == str(12_345 * 10**18)  # beyond 2**53: a string, not a JSON number
    assert message["to"] == BOB  # checksummed
    assert message["nonce"] == "0x" + nonce_for("transfer", 42).hex()
    validate_typed_data(td, 1001, [TOKEN], "TransferWithAuthorization")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"value": -1}, "value"),
        ({"value": 2**256}, "value"),
        ({"value": True}, "value"),
        ({"to": "0x1234"}, "to"),
        ({"nonce": b"\x01" * 31}, "nonce"),
        ({"valid_after": 5, "valid_before": 5}, "validBefore"),
    ],
)
def test_builders_refuse_bad_values(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(MalformedTypedData, match=fragment):
        transfer(**overrides)


def test_nonce_for_is_deterministic_and_domain_separated() -> None:
    assert nonce_for("transfer", 42) == nonce_for("transfer", "42")
    assert len(nonce_for("transfer", 42)) == 32
    assert nonce_for("transfer", 42) != nonce_for("transfer", 43)
    assert nonce_for("transfer", 42) != nonce_for("refund", 42)
    assert nonce_for("transfer", 42) == keccak(text="essx/erc3009-nonce/v1/transfer/42")
    for kind in ("", "Transfer", "a/b", "x" * 65):
        with pytest.raises(ValueError):
            nonce_for(kind, 1)
    with pytest.raises(ValueError):
        nonce_for("transfer", "")


# ---- validation ------------------------------------------------------------------------------------------


def test_validate_accepts_every_builder() -> None:
    nonce = nonce_for("t", 1)
    for td in (
        transfer(),
        receive_with_authorization(
            DOMAIN, from_=ALICE, to=BOB, value=1, valid_after=0, valid_before=9, nonce=nonce
        ),
        cancel_authorization(DOMAIN, authorizer=ALICE, nonce=nonce),
        permit(DOMAIN, owner=ALICE, spender=BOB, value=1, nonce=0, deadline=9),
    ):
        validate_typed_data(td, 1001, [TOKEN.lower()], td["primaryType"])
        validate_typed_data(td, 1001, [TOKEN])  # any of our schemas


def test_validate_accepts_what_wallets_send() -> None:
    td = transfer()
    td["domain"]["chainId"] = "0x3e9"  # hex string chain id
    td["message"]["validAfter"] = 0  # JSON number
    validate_typed_data(td, 1001, [TOKEN], "TransferWithAuthorization")


def test_validate_names_the_wrong_chain_contract_and_primary_type() -> None:
    with pytest.raises(WrongChainId, match="chainId is 1001, expected 8217"):
        validate_typed_data(transfer(), 8217, [TOKEN], "TransferWithAuthorization")
    with pytest.raises(WrongContract, match=TOKEN):
        validate_typed_data(transfer(), 1001, [OTHER_CONTRACT], "TransferWithAuthorization")
    with pytest.raises(WrongPrimaryType, match="expected 'Permit'"):
        validate_typed_data(transfer(), 1001, [TOKEN], "Permit")
    with pytest.raises(WrongPrimaryType, match="not one we sign"):
        validate_typed_data(MAIL, 1, [MAIL["domain"]["verifyingContract"]])  # type: ignore[index]


def mutate(path: list[str], value: Any = None, delete: bool = False) -> dict[str, Any]:
    td = copy.deepcopy(transfer())
    target = td
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return td


@pytest.mark.parametrize(
    ("td", "fragment"),
    [
        ([], "JSON object"),
        (mutate(["extra"], 1), "exactly"),
        (mutate(["message"], delete=True), "exactly"),
        (mutate(["domain", "salt"], "0x" + "00" * 32), "domain must have exactly"),
        (mutate(["domain", "version"], "2"), "version"),
        (mutate(["domain", "chainId"], "one"), "chainId"),
        (mutate(["domain", "verifyingContract"], "0xnope"), "verifyingContract"),
        (
            mutate(
                ["types", "TransferWithAuthorization"], list(reversed(SCHEMAS["TransferWithAuthorization"]))
            ),
            "typehash",
        ),
        (mutate(["types", "Extra"], []), "typehash"),
        (mutate(["message", "value"], "-1"), "value"),
        (mutate(["message", "value"], "1e18"), "value"),
        (mutate(["message", "value"], str(2**256)), "value"),
        (mutate(["message", "value"], 1.5), "value"),
        (mutate(["message", "to"], "0x00"), "to"),
        (mutate(["message", "nonce"], "0x1234"), "nonce"),
        (mutate(["message", "nonce"], 5), "nonce"),
        (mutate(["message", "extra"], 1), "fields"),
        (mutate(["message", "validBefore"], "0"), "validBefore"),
    ],
)
def test_validate_rejects_malformed_typed_data(td: Any, fragment: str) -> None:
    with pytest.raises(MalformedTypedData, match=fragment):
        validate_typed_data(td, 1001, [TOKEN], "TransferWithAuthorization")


# ---- signatures ------------------------------------------------------------------------------------------


def test_split_signature_for_the_contract_call() -> None:
    signed = Account.sign_typed_data(keccak(text="cow"), full_message=MAIL)
    sig = bytes(signed.signature)
    v, r, s = split_signature(sig)
    assert (v, int.from_bytes(r, "big"), int.from_bytes(s, "big")) == (signed.v, signed.r, signed.s)
    assert split_signature("0x" + sig.hex()) == (v, r, s)
    assert split_signature(sig[:64] + bytes([v - 27])) == (v, r, s)  # v as 0/1
    assert normalize_signature(sig[:64] + bytes([v - 27])) == sig


def test_split_signature_rejects_malleable_and_malformed_signatures() -> None:
    sig = bytes(Account.sign_typed_data(keccak(text="cow"), full_message=MAIL).signature)
    high_s = (SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big")
    with pytest.raises(MalformedSignature, match="high-s"):
        split_signature(sig[:32] + high_s + bytes([55 - sig[64]]))
    for bad in (sig[:64], sig + b"\x00", sig[:64] + b"\x1d", "0xzz", b"\x00" * 65):
        with pytest.raises(MalformedSignature):
            split_signature(bad)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"message": {"value": 5}},  # an int, not a decimal string
        {"message": {"value": "0x05"}},  # hex: eth-account's path
        {"message": {"from": ALICE.lower()}},
        {"message": {"nonce": "0x" + "AB" * 32}},
        {"domain": {"chainId": "1001"}},
        {"domain": {"name": "Énergie ☀"}},
        {"domain": {"verifyingContract": TOKEN.lower()}},
        {"message": {"extra": "1"}},  # not ours: eth-account ignores unknown message keys
        {"message": {"to": BOB.replace("C44", "c44")}},  # a broken checksum: eth-account's path
    ],
)
def test_our_direct_digest_equals_eth_accounts_encoder(change: dict[str, dict[str, Any]]) -> None:
    td = receive_with_authorization(
        DOMAIN, from_=ALICE, to=BOB, value=5, valid_after=10, valid_before=20, nonce=nonce_for("order", "x")
    )
    for part, values in change.items():
        td[part].update(values)
    message = signable(td)
    assert typed_data_digest(td) == keccak(b"\x19" + message.version + message.header + message.body)
