from __future__ import annotations

from eth_account import Account
from fastapi.testclient import TestClient

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
