from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from fastapi.testclient import TestClient
from web3 import Web3

from app.context import Context
from tests.api.wallet_helpers import user_with_linked_wallet
from wallet.kaia import KaiaTx, TxType, sign_as_sender


def _raw(
    ctx: Context, account, *, to: str | None = None, data: bytes | None = None, gas: int = 100_000
) -> str:
    call = (
        data
        if data is not None
        else bytes.fromhex(ctx.coin.encodeABI(fn_name="transfer", args=[Account.create().address, 1])[2:])
    )
    tx = KaiaTx(
        type=TxType(0x31),
        nonce=0,
        gas_price=25 * 10**9,
        gas=gas,
        sender=account.address,
        to=to or ctx.coin.address,
        value=0,
        input=call,
    )
    return "0x" + sign_as_sender(tx, account, ctx.chain_id).hex()


def test_fee_delegation_policy_then_501_on_the_local_chain(client: TestClient, ctx: Context) -> None:
    _u, headers, account = user_with_linked_wallet(client)
    r = client.post("/api/v1/relay/kaia", json={"raw_transaction": _raw(ctx, account)}, headers=headers)
    assert r.status_code == 501 and "Kaia node" in r.json()["detail"]
    # someone else's transaction is not sponsored for this user
    r = client.post(
        "/api/v1/relay/kaia", json={"raw_transaction": _raw(ctx, Account.create())}, headers=headers
    )
    assert r.status_code == 403
    # a contract that is not ours, a function not on the list, a gas limit above the cap, garbage
    for raw in (
        _raw(ctx, account, to=Account.create().address),
        _raw(
            ctx,
            account,
            data=bytes.fromhex(ctx.coin.encodeABI(fn_name="mint", args=[account.address, 1])[2:]),
        ),
        _raw(ctx, account, gas=10_000_000),
        "0x31deadbeef",
        "not hex",
    ):
        r = client.post("/api/v1/relay/kaia", json={"raw_transaction": raw}, headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "PolicyRejected", r.text


def test_a_caver_js_sender_transaction_with_its_placeholder_fee_payer_is_accepted(
    client: TestClient, ctx: Context
) -> None:
    """caver-js hands over a zero-address fee payer with signature [[0x01, 0x, 0x]]: that is no fee payer
    (Kaia's ethers-ext reads it so too), not `already_has_fee_payer`."""
    vectors = json.loads(
        (Path(__file__).parents[1] / "data/kaia/caver-js-placeholder-vectors.json").read_text()
    )
    (v,) = (v for v in vectors["vectors"] if v["chainId"] == ctx.chain_id and v["typeByte"] == 0x31)
    _u, headers, _account = user_with_linked_wallet(client, Account.from_key(v["senderPrivateKey"]))
    # caver-js signed a call of an arbitrary contract address: sponsor that address in this test
    target = ctx.w3.eth.contract(address=Web3.to_checksum_address(v["tx"]["to"]), abi=ctx.coin.abi)
    ctx.contracts["CaverTarget"] = target
    r = client.post(
        "/api/v1/relay/kaia", json={"raw_transaction": v["caver"]["senderSignedRaw"]}, headers=headers
    )
    assert r.status_code == 501 and "passed every policy check" in r.json()["detail"], r.text
