"""EnergyCoin's signed spending: EIP-2612 permit and ERC-3009 transfer/receive/cancel with authorization."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction

from tests.contracts import typed_data
from tests.contracts.chain import assert_reverts, deploy, events, latest_timestamp, send
from tests.contracts.conftest import COIN_NAME, COIN_SYMBOL

pytestmark = pytest.mark.usefixtures("chain_snapshot")

COIN = 10**18
KAIROS_CHAIN_ID = 1001
HOUR = 3600
PREFIX = "KIP7TransferAuthorization: "

Domain = dict[str, Any]  # EIP-712 domain, as typed_data.domain builds it
Message = dict[str, Any]  # an ERC-3009 authorization, as typed_data.authorization builds it


@pytest.fixture(scope="module")
def other_coin(w3: Web3, module_chain: None, admin: LocalAccount) -> Contract:
    """A second deployment with the same name: its domain differs from `coin`'s only by the address."""
    return deploy(w3, "EnergyCoin", admin, COIN_NAME, COIN_SYMBOL, admin.address)


@pytest.fixture(scope="module")
def domain(coin: Contract, chain_id: int) -> Domain:
    return typed_data.domain(COIN_NAME, chain_id, coin.address)


@pytest.fixture
def funded(w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount) -> int:
    """alice holds 100 coins."""
    send(w3, coin.functions.mint(alice.address, 100 * COIN), admin)
    return 100 * COIN


def random_nonce() -> bytes:
    return os.urandom(32)


@pytest.fixture
def message(w3: Web3, alice: LocalAccount, bob: LocalAccount) -> Message:
    """alice's authorisation to pay bob one coin, valid from now for an hour, under a fresh nonce."""
    return typed_data.authorization(
        alice.address, bob.address, COIN, 0, latest_timestamp(w3) + HOUR, random_nonce()
    )


# --- the domain ---------------------------------------------------------------------------------------


def test_domain_separator_and_typehashes(coin: Contract, domain: Domain) -> None:
    assert coin.functions.DOMAIN_SEPARATOR().call() == typed_data.domain_separator(domain)
    for getter, primary_type in [
        (coin.functions.TRANSFER_WITH_AUTHORIZATION_TYPEHASH, "TransferWithAuthorization"),
        (coin.functions.RECEIVE_WITH_AUTHORIZATION_TYPEHASH, "ReceiveWithAuthorization"),
        (coin.functions.CANCEL_AUTHORIZATION_TYPEHASH, "CancelAuthorization"),
    ]:
        assert getter().call() == keccak(text=typed_data.type_string(primary_type))
    assert typed_data.type_string("TransferWithAuthorization") == (
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
        "uint256 validBefore,bytes32 nonce)"
    )
    assert (
        typed_data.type_string("CancelAuthorization")
        == "CancelAuthorization(address authorizer,bytes32 nonce)"
    )


# --- EIP-2612 permit ----------------------------------------------------------------------------------


def permit_call(
    coin: Contract,
    signer: LocalAccount,
    d: Domain,
    owner: str,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> ContractFunction:
    message = {"owner": owner, "spender": spender, "value": value, "nonce": nonce, "deadline": deadline}
    sig = typed_data.sign(signer, d, "Permit", message)
    return coin.functions.permit(owner, spender, value, deadline, sig.v, sig.r, sig.s)


def test_permit_sets_allowance_and_consumes_the_nonce(
    w3: Web3,
    coin: Contract,
    domain: Domain,
    funded: int,
    alice: LocalAccount,
    bob: LocalAccount,
    carol: LocalAccount,
) -> None:
    deadline = latest_timestamp(w3) + HOUR
    call = permit_call(coin, alice, domain, alice.address, bob.address, 7 * COIN, 0, deadline)
    receipt = send(w3, call, carol)  # anyone may relay it
    (approval,) = events(coin, "Approval", receipt)
    assert approval["args"]["owner"] == alice.address
    assert approval["args"]["spender"] == bob.address
    assert coin.functions.allowance(alice.address, bob.address).call() == 7 * COIN
    assert coin.functions.nonces(alice.address).call() == 1
    send(w3, coin.functions.transferFrom(alice.address, bob.address, 7 * COIN), bob)
    assert coin.functions.balanceOf(bob.address).call() == 7 * COIN

    # Replaying the same signature: the nonce has moved on, so it no longer recovers to alice.
    assert_reverts(w3, call, carol, "KIP7Permit: invalid signature")


def test_permit_with_expired_deadline(
    w3: Web3, coin: Contract, domain: Domain, alice: LocalAccount, bob: LocalAccount
) -> None:
    deadline = latest_timestamp(w3) - 1
    call = permit_call(coin, alice, domain, alice.address, bob.address, COIN, 0, deadline)
    assert_reverts(w3, call, bob, "KIP7Permit: expired deadline")


def test_permit_signed_by_someone_else(
    w3: Web3, coin: Contract, domain: Domain, alice: LocalAccount, bob: LocalAccount
) -> None:
    deadline = latest_timestamp(w3) + HOUR
    call = permit_call(coin, bob, domain, alice.address, bob.address, COIN, 0, deadline)
    assert_reverts(w3, call, bob, "KIP7Permit: invalid signature")
    assert coin.functions.nonces(alice.address).call() == 0


def test_permit_signed_for_another_chain(
    w3: Web3, coin: Contract, alice: LocalAccount, bob: LocalAccount
) -> None:
    wrong = typed_data.domain(COIN_NAME, KAIROS_CHAIN_ID, coin.address)
    call = permit_call(coin, alice, wrong, alice.address, bob.address, COIN, 0, latest_timestamp(w3) + HOUR)
    assert_reverts(w3, call, bob, "KIP7Permit: invalid signature")


# --- ERC-3009 ------------------------------------------------------------------------------------------

KINDS = {
    "transfer": ("TransferWithAuthorization", "transferWithAuthorization"),
    "receive": ("ReceiveWithAuthorization", "receiveWithAuthorization"),
}


def authorized_call(
    coin: Contract,
    kind: str,
    signer: LocalAccount,
    d: Domain,
    message: Message,
) -> ContractFunction:
    primary_type, function_name = KINDS[kind]
    sig = typed_data.sign(signer, d, primary_type, message)
    fn: Callable[..., ContractFunction] = getattr(coin.functions, function_name)
    return fn(
        message["from"],
        message["to"],
        message["value"],
        message["validAfter"],
        message["validBefore"],
        message["nonce"],
        sig.v,
        sig.r,
        sig.s,
    )


def cancel_call(
    coin: Contract, signer: LocalAccount, d: Domain, authorizer: str, nonce: bytes
) -> ContractFunction:
    sig = typed_data.sign(signer, d, "CancelAuthorization", {"authorizer": authorizer, "nonce": nonce})
    return coin.functions.cancelAuthorization(authorizer, nonce, sig.v, sig.r, sig.s)


def submitter(kind: str, payee: LocalAccount, relayer: LocalAccount) -> LocalAccount:
    """receiveWithAuthorization must come from the payee; transferWithAuthorization from anyone."""
    return payee if kind == "receive" else relayer


@pytest.mark.parametrize("kind", KINDS)
def test_authorized_transfer_succeeds(
    w3: Web3,
    coin: Contract,
    domain: Domain,
    funded: int,
    kind: str,
    alice: LocalAccount,
    bob: LocalAccount,
    carol: LocalAccount,
) -> None:
    nonce = random_nonce()
    now = latest_timestamp(w3)
    message = typed_data.authorization(alice.address, bob.address, 4 * COIN, now - 1, now + HOUR, nonce)
    assert not coin.functions.authorizationState(alice.address, nonce).call()

    receipt = send(w3, authorized_call(coin, kind, alice, domain, message), submitter(kind, bob, carol))

    (used,) = events(coin, "AuthorizationUsed", receipt)
    assert used["args"]["authorizer"] == alice.address
    assert used["args"]["nonce"] == nonce
    (transfer,) = events(coin, "Transfer", receipt)
    assert (transfer["args"]["from"], transfer["args"]["to"]) == (alice.address, bob.address)
    assert coin.functions.balanceOf(bob.address).call() == 4 * COIN
    assert coin.functions.balanceOf(alice.address).call() == funded - 4 * COIN
    assert coin.functions.authorizationState(alice.address, nonce).call()
    assert not coin.functions.authorizationState(bob.address, nonce).call()


@pytest.mark.usefixtures("funded")
def test_receive_with_authorization_only_by_the_payee(
    w3: Web3,
    coin: Contract,
    domain: Domain,
    message: Message,
    alice: LocalAccount,
    bob: LocalAccount,
    carol: LocalAccount,
) -> None:
    call = authorized_call(coin, "receive", alice, domain, message)
    assert_reverts(w3, call, carol, PREFIX + "caller must be the payee")
    assert not coin.functions.authorizationState(alice.address, message["nonce"]).call()
    send(w3, call, bob)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "authorization is expired"),
        ("expires_now", "authorization is expired"),
        ("not_yet_valid", "authorization is not yet valid"),
        ("wrong_signer", "invalid signature"),
        ("wrong_chain_id", "invalid signature"),
        ("wrong_contract", "invalid signature"),
        ("tampered_value", "invalid signature"),
        ("reused_nonce", "authorization is used or canceled"),
        ("cancelled_nonce", "authorization is used or canceled"),
    ],
)
def test_authorized_transfer_failures(
    w3: Web3,
    coin: Contract,
    other_coin: Contract,
    domain: Domain,
    funded: int,
    chain_id: int,
    kind: str,
    case: str,
    reason: str,
    alice: LocalAccount,
    bob: LocalAccount,
    carol: LocalAccount,
) -> None:
    now = latest_timestamp(w3)
    nonce = random_nonce()
    message = typed_data.authorization(alice.address, bob.address, 2 * COIN, 0, now + HOUR, nonce)
    signer, sign_domain = alice, domain
    relayer = submitter(kind, bob, carol)

    if case == "expired":
        message["validBefore"] = now - 60
    elif case == "expires_now":
        # Every later block has timestamp >= now, and validity needs block.timestamp < validBefore.
        message["validBefore"] = now
    elif case == "not_yet_valid":
        message["validAfter"] = now + HOUR
        message["validBefore"] = now + 2 * HOUR
    elif case == "wrong_signer":
        signer = carol
    elif case == "wrong_chain_id":
        sign_domain = typed_data.domain(COIN_NAME, KAIROS_CHAIN_ID, coin.address)
    elif case == "wrong_contract":
        sign_domain = typed_data.domain(COIN_NAME, chain_id, other_coin.address)
    elif case == "reused_nonce":
        first = dict(message, value=COIN)
        send(w3, authorized_call(coin, kind, alice, domain, first), relayer)
    elif case == "cancelled_nonce":
        send(w3, cancel_call(coin, alice, domain, alice.address, nonce), carol)

    call = authorized_call(coin, kind, signer, sign_domain, message)
    if case == "tampered_value":
        # A valid signature over 2 coins, submitted for 3.
        args = [3 * COIN if a == 2 * COIN else a for a in call.args]
        call = getattr(coin.functions, KINDS[kind][1])(*args)

    balance_before = coin.functions.balanceOf(alice.address).call()
    assert_reverts(w3, call, relayer, PREFIX + reason)
    assert coin.functions.balanceOf(alice.address).call() == balance_before
    if case not in ("reused_nonce", "cancelled_nonce"):
        assert not coin.functions.authorizationState(alice.address, nonce).call()


@pytest.mark.usefixtures("funded")
def test_a_nonce_is_shared_between_transfer_and_receive(
    w3: Web3, coin: Contract, domain: Domain, message: Message, alice: LocalAccount, bob: LocalAccount
) -> None:
    send(w3, authorized_call(coin, "transfer", alice, domain, message), bob)
    call = authorized_call(coin, "receive", alice, domain, message)
    assert_reverts(w3, call, bob, PREFIX + "authorization is used or canceled")


@pytest.mark.usefixtures("funded")
def test_a_transfer_signature_is_not_a_receive_signature(
    w3: Web3, coin: Contract, domain: Domain, message: Message, alice: LocalAccount, bob: LocalAccount
) -> None:
    sig = typed_data.sign(alice, domain, "TransferWithAuthorization", message)
    call = coin.functions.receiveWithAuthorization(*message.values(), sig.v, sig.r, sig.s)
    assert_reverts(w3, call, bob, PREFIX + "invalid signature")


@pytest.mark.usefixtures("funded")
def test_authorized_transfer_while_paused(
    w3: Web3,
    coin: Contract,
    domain: Domain,
    message: Message,
    admin: LocalAccount,
    alice: LocalAccount,
    bob: LocalAccount,
) -> None:
    send(w3, coin.functions.pause(), admin)
    call = authorized_call(coin, "transfer", alice, domain, message)
    assert_reverts(w3, call, bob, "KIP7Pausable: token transfer while paused")
    send(w3, coin.functions.unpause(), admin)
    send(w3, call, bob)


def test_cancel_authorization(
    w3: Web3,
    coin: Contract,
    domain: Domain,
    alice: LocalAccount,
    bob: LocalAccount,
    carol: LocalAccount,
) -> None:
    nonce = random_nonce()

    forged_call = cancel_call(coin, bob, domain, alice.address, nonce)
    assert_reverts(w3, forged_call, carol, PREFIX + "invalid signature")
    assert not coin.functions.authorizationState(alice.address, nonce).call()

    call = cancel_call(coin, alice, domain, alice.address, nonce)
    receipt = send(w3, call, carol)
    (cancelled,) = events(coin, "AuthorizationCanceled", receipt)
    assert cancelled["args"]["authorizer"] == alice.address
    assert cancelled["args"]["nonce"] == nonce
    assert coin.functions.authorizationState(alice.address, nonce).call()

    assert_reverts(w3, call, carol, PREFIX + "authorization is used or canceled")


@pytest.mark.usefixtures("funded")
def test_cancel_of_a_used_nonce_reverts(
    w3: Web3, coin: Contract, domain: Domain, message: Message, alice: LocalAccount, bob: LocalAccount
) -> None:
    send(w3, authorized_call(coin, "transfer", alice, domain, message), bob)
    call = cancel_call(coin, alice, domain, alice.address, message["nonce"])
    assert_reverts(w3, call, bob, PREFIX + "authorization is used or canceled")
