"""EnergyCoin as a KIP-7 token: metadata, KIP-13 interface ids, minting, safe transfers, roles, pausing."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from tests.contracts.chain import assert_reverts, deploy, events, interface_id, send
from tests.contracts.conftest import COIN_NAME, COIN_SYMBOL
from wallet.chain import ZERO_ADDRESS

pytestmark = pytest.mark.usefixtures("chain_snapshot")

COIN = 10**18
DEFAULT_ADMIN_ROLE = b"\x00" * 32

# Each interface's own functions, as KIP-13 defines its id (inherited functions are not part of it).
INTERFACES: dict[str, tuple[str, tuple[str, ...]]] = {
    "IKIP7": (
        "0x65787371",
        (
            "totalSupply()",
            "balanceOf(address)",
            "transfer(address,uint256)",
            "allowance(address,address)",
            "approve(address,uint256)",
            "transferFrom(address,address,uint256)",
            "safeTransfer(address,uint256,bytes)",
            "safeTransfer(address,uint256)",
            "safeTransferFrom(address,address,uint256,bytes)",
            "safeTransferFrom(address,address,uint256)",
        ),
    ),
    "IKIP7Metadata": ("0xa219a025", ("name()", "symbol()", "decimals()")),
    "IKIP7Mintable": (
        "0xeab83e20",
        ("mint(address,uint256)", "isMinter(address)", "addMinter(address)", "renounceMinter()"),
    ),
    "IKIP7Burnable": ("0x3b5a0bf8", ("burn(uint256)", "burnFrom(address,uint256)")),
    "IKIP7Pausable": (
        "0x4d5507ff",
        ("paused()", "pause()", "unpause()", "isPauser(address)", "addPauser(address)", "renouncePauser()"),
    ),
    "IKIP13": ("0x01ffc9a7", ("supportsInterface(bytes4)",)),
    "IAccessControl": (
        "0x7965db0b",
        (
            "hasRole(bytes32,address)",
            "getRoleAdmin(bytes32)",
            "grantRole(bytes32,address)",
            "revokeRole(bytes32,address)",
            "renounceRole(bytes32,address)",
        ),
    ),
    "IAccessControlEnumerable": (
        "0x5a05180f",
        ("getRoleMember(bytes32,uint256)", "getRoleMemberCount(bytes32)"),
    ),
}


def abi_signatures(contract: Contract) -> set[str]:
    return {
        f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
        for item in contract.abi
        if item["type"] == "function"
    }


def mint(w3: Web3, coin: Contract, minter: LocalAccount, to: str, amount: int) -> None:
    send(w3, coin.functions.mint(to, amount), minter)


def test_metadata_and_initial_roles(coin: Contract, admin: LocalAccount, alice: LocalAccount) -> None:
    assert coin.functions.name().call() == COIN_NAME
    assert coin.functions.symbol().call() == COIN_SYMBOL
    assert coin.functions.decimals().call() == 18
    assert coin.functions.totalSupply().call() == 0
    minter_role = coin.functions.MINTER_ROLE().call()
    pauser_role = coin.functions.PAUSER_ROLE().call()
    assert minter_role == keccak(text="KIP7_MINTER_ROLE")
    assert pauser_role == keccak(text="KIP7_PAUSER_ROLE")
    for role in (DEFAULT_ADMIN_ROLE, minter_role, pauser_role):
        assert coin.functions.hasRole(role, admin.address).call()
        assert not coin.functions.hasRole(role, alice.address).call()
        assert coin.functions.getRoleMemberCount(role).call() == 1
    assert coin.functions.isMinter(admin.address).call()
    assert coin.functions.isPauser(admin.address).call()
    assert not coin.functions.paused().call()


def test_constructor_refuses_zero_admin(w3: Web3, admin: LocalAccount) -> None:
    with pytest.raises(ContractLogicError, match="EnergyCoin: admin is the zero address"):
        deploy(w3, "EnergyCoin", admin, COIN_NAME, COIN_SYMBOL, ZERO_ADDRESS)


@pytest.mark.parametrize("name", INTERFACES)
def test_interface_ids_are_computed_from_selectors_and_supported(coin: Contract, name: str) -> None:
    expected, signatures = INTERFACES[name]
    computed = interface_id(*signatures)
    assert "0x" + computed.hex() == expected
    # The claim is honest: every function of the interface is in the token's ABI.
    assert set(signatures) <= abi_signatures(coin)
    assert coin.functions.supportsInterface(computed).call()


@pytest.mark.parametrize("unsupported", ["0xffffffff", "0x00000000", "0x9d188c22", "0x12345678"])
def test_unsupported_interface_ids(coin: Contract, unsupported: str) -> None:
    assert not coin.functions.supportsInterface(bytes.fromhex(unsupported[2:])).call()


def test_mint_by_minter(w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount) -> None:
    receipt = send(w3, coin.functions.mint(alice.address, 5 * COIN), admin)
    assert receipt["gasUsed"] < 80_000
    (event,) = events(coin, "Transfer", receipt)
    assert event["args"]["from"] == ZERO_ADDRESS
    assert event["args"]["to"] == alice.address
    assert event["args"]["value"] == 5 * COIN
    assert coin.functions.balanceOf(alice.address).call() == 5 * COIN
    assert coin.functions.totalSupply().call() == 5 * COIN


def test_mint_by_non_minter_reverts(w3: Web3, coin: Contract, alice: LocalAccount) -> None:
    assert_reverts(
        w3, coin.functions.mint(alice.address, COIN), alice, "KIP7Mintable: must have minter role to mint"
    )
    assert coin.functions.totalSupply().call() == 0


def test_mint_to_a_contract_without_the_hook(w3: Web3, coin: Contract, admin: LocalAccount) -> None:
    # Issuing is a plain mint: a contract (an escrow, say) need not implement onKIP7Received.
    plain = deploy(w3, "NonReceiverMock", admin)
    mint(w3, coin, admin, plain.address, COIN)
    assert coin.functions.balanceOf(plain.address).call() == COIN


def test_transfer_and_transfer_from(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    mint(w3, coin, admin, alice.address, 10 * COIN)
    receipt = send(w3, coin.functions.transfer(bob.address, 3 * COIN), alice)
    assert receipt["gasUsed"] < 60_000
    send(w3, coin.functions.approve(bob.address, 2 * COIN), alice)
    send(w3, coin.functions.transferFrom(alice.address, bob.address, 2 * COIN), bob)
    assert coin.functions.balanceOf(alice.address).call() == 5 * COIN
    assert coin.functions.balanceOf(bob.address).call() == 5 * COIN
    assert coin.functions.allowance(alice.address, bob.address).call() == 0
    assert_reverts(
        w3, coin.functions.transfer(bob.address, 6 * COIN), alice, "KIP7: transfer amount exceeds balance"
    )


def test_safe_transfer_to_an_eoa(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    mint(w3, coin, admin, alice.address, 2 * COIN)
    send(w3, coin.functions.safeTransfer(bob.address, COIN), alice)
    send(w3, coin.functions.safeTransfer(bob.address, COIN, b"memo"), alice)
    assert coin.functions.balanceOf(bob.address).call() == 2 * COIN


def test_safe_transfer_calls_the_receiver_hook(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    receiver = deploy(w3, "KIP7ReceiverMock", admin)
    mint(w3, coin, admin, alice.address, 10 * COIN)

    send(w3, coin.functions.safeTransfer(receiver.address, 3 * COIN, b"\x01\x02order-7"), alice)
    assert receiver.functions.calls().call() == 1
    assert receiver.functions.lastToken().call() == coin.address
    assert receiver.functions.lastOperator().call() == alice.address
    assert receiver.functions.lastFrom().call() == alice.address
    assert receiver.functions.lastAmount().call() == 3 * COIN
    assert receiver.functions.lastData().call() == b"\x01\x02order-7"

    # safeTransferFrom: the operator is the spender, `from` the holder.
    send(w3, coin.functions.approve(bob.address, 4 * COIN), alice)
    send(w3, coin.functions.safeTransferFrom(alice.address, receiver.address, 4 * COIN, b"x"), bob)
    assert receiver.functions.calls().call() == 2
    assert receiver.functions.lastOperator().call() == bob.address
    assert receiver.functions.lastFrom().call() == alice.address
    assert receiver.functions.lastAmount().call() == 4 * COIN
    assert receiver.functions.lastData().call() == b"x"
    assert coin.functions.balanceOf(receiver.address).call() == 7 * COIN


def test_safe_transfer_to_a_contract_without_the_hook_reverts(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount
) -> None:
    plain = deploy(w3, "NonReceiverMock", admin)
    mint(w3, coin, admin, alice.address, 2 * COIN)
    reason = "KIP7: transfer to non KIP7Receiver implementer"
    assert_reverts(w3, coin.functions.safeTransfer(plain.address, COIN), alice, reason)
    assert_reverts(w3, coin.functions.safeTransfer(plain.address, COIN, b"data"), alice, reason)
    # A plain transfer does not call the hook (KIP-7), so it succeeds.
    send(w3, coin.functions.transfer(plain.address, COIN), alice)
    assert coin.functions.balanceOf(plain.address).call() == COIN


def test_burn_and_burn_from(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    mint(w3, coin, admin, alice.address, 10 * COIN)
    send(w3, coin.functions.burn(2 * COIN), alice)
    send(w3, coin.functions.approve(bob.address, 3 * COIN), alice)
    send(w3, coin.functions.burnFrom(alice.address, 3 * COIN), bob)
    assert coin.functions.balanceOf(alice.address).call() == 5 * COIN
    assert coin.functions.totalSupply().call() == 5 * COIN
    assert_reverts(w3, coin.functions.burnFrom(alice.address, 1), bob, "KIP7: insufficient allowance")
    assert_reverts(w3, coin.functions.burn(6 * COIN), alice, "KIP7: burn amount exceeds balance")


def test_role_grant_and_revoke(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    minter_role = coin.functions.MINTER_ROLE().call()
    missing_admin = f"AccessControl: account {bob.address.lower()} is missing role 0x{'00' * 32}"
    assert_reverts(w3, coin.functions.grantRole(minter_role, bob.address), bob, missing_admin)

    send(w3, coin.functions.grantRole(minter_role, alice.address), admin)
    assert coin.functions.isMinter(alice.address).call()
    send(w3, coin.functions.mint(bob.address, COIN), alice)

    send(w3, coin.functions.revokeRole(minter_role, alice.address), admin)
    assert not coin.functions.isMinter(alice.address).call()
    assert_reverts(
        w3, coin.functions.mint(bob.address, COIN), alice, "KIP7Mintable: must have minter role to mint"
    )
    assert coin.functions.balanceOf(bob.address).call() == COIN


def test_kip7_role_helpers(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    missing_admin = f"AccessControl: account {bob.address.lower()} is missing role 0x{'00' * 32}"
    assert_reverts(w3, coin.functions.addMinter(bob.address), bob, missing_admin)
    assert_reverts(w3, coin.functions.addPauser(bob.address), bob, missing_admin)

    send(w3, coin.functions.addMinter(alice.address), admin)
    send(w3, coin.functions.addPauser(alice.address), admin)
    assert coin.functions.isMinter(alice.address).call()
    assert coin.functions.isPauser(alice.address).call()
    send(w3, coin.functions.pause(), alice)
    send(w3, coin.functions.unpause(), alice)

    send(w3, coin.functions.renounceMinter(), alice)
    send(w3, coin.functions.renouncePauser(), alice)
    assert not coin.functions.isMinter(alice.address).call()
    assert not coin.functions.isPauser(alice.address).call()


def test_pause_blocks_balance_changes_and_unpause_restores(
    w3: Web3, coin: Contract, admin: LocalAccount, alice: LocalAccount, bob: LocalAccount
) -> None:
    mint(w3, coin, admin, alice.address, 10 * COIN)
    assert_reverts(
        w3, coin.functions.pause(), alice, "KIP7PresetMinterPauser: must have pauser role to pause"
    )

    receipt = send(w3, coin.functions.pause(), admin)
    assert events(coin, "Paused", receipt)[0]["args"]["account"] == admin.address
    assert coin.functions.paused().call()
    paused = "KIP7Pausable: token transfer while paused"
    assert_reverts(w3, coin.functions.transfer(bob.address, COIN), alice, paused)
    assert_reverts(w3, coin.functions.safeTransfer(bob.address, COIN), alice, paused)
    assert_reverts(w3, coin.functions.mint(bob.address, COIN), admin, paused)
    assert_reverts(w3, coin.functions.burn(COIN), alice, paused)
    send(w3, coin.functions.approve(bob.address, COIN), alice)  # approvals move no coins
    assert_reverts(w3, coin.functions.transferFrom(alice.address, bob.address, COIN), bob, paused)
    assert_reverts(
        w3, coin.functions.unpause(), alice, "KIP7PresetMinterPauser: must have pauser role to unpause"
    )

    send(w3, coin.functions.unpause(), admin)
    assert not coin.functions.paused().call()
    send(w3, coin.functions.transfer(bob.address, COIN), alice)
    send(w3, coin.functions.mint(bob.address, COIN), admin)
    assert coin.functions.balanceOf(bob.address).call() == 2 * COIN
