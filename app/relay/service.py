"""Kaia-native fee delegation: the user's wallet signs a type 0x31 transaction, we co-sign as fee payer.

Only calls of our own contracts and an allow-list of their functions are paid for, within a gas cap, and
only for the caller's own linked wallet. The local anvil chain cannot execute Kaia transaction types, so
there the request is validated and then answered with 501.
"""

from __future__ import annotations

from web3 import Web3

from app.context import Context
from app.core.errors import Forbidden
from app.relay.errors import NotOnThisChain, PolicyRejected
from app.relay.schemas import KaiaRelayResult
from wallet.kaia import FeeDelegationRejected, check_policy, send_raw_kaia, sign_as_fee_payer

ALLOWED_FUNCTIONS = (
    "transfer(address,uint256)",
    "approve(address,uint256)",
    "safeTransfer(address,uint256)",
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
    "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
    "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)",
    "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
)
MAX_GAS = 300_000


def selectors() -> set[bytes]:
    return {bytes(Web3.keccak(text=f))[:4] for f in ALLOWED_FUNCTIONS}


def relay_kaia(ctx: Context, sender_raw: bytes, expected_sender: str) -> KaiaRelayResult:
    try:
        tx = check_policy(
            sender_raw,
            allowed_targets={c.address for c in ctx.contracts.values()},
            allowed_selectors=selectors(),
            max_gas=MAX_GAS,
            chain_id=ctx.chain_id,
            max_gas_price=int(ctx.w3.eth.gas_price) * 2 if not ctx.settings.is_local else None,
        )
    except FeeDelegationRejected as exc:
        raise PolicyRejected(f"{exc.reason.value}: {exc.detail}") from None
    if tx.sender != expected_sender:
        raise Forbidden(
            f"the transaction is sent by {tx.sender}; only your own wallet {expected_sender} is sponsored"
        )
    if ctx.settings.is_local:
        raise NotOnThisChain(
            "Kaia fee delegation needs a Kaia node (ESSX_CHAIN=kairos or mainnet); the local anvil chain cannot "
            "execute type 0x31 transactions. The transaction passed every policy check."
        )
    try:  # a reverting call would still cost the fee payer its gas: try it first
        ctx.w3.eth.call({"from": tx.sender, "to": tx.to, "data": "0x" + tx.input.hex()})  # type: ignore[typeddict-item]
    except Exception as exc:
        raise PolicyRejected(f"the call would revert: {exc}") from None
    signed = sign_as_fee_payer(sender_raw, ctx.account, ctx.chain_id)
    send_raw_kaia(ctx.w3, signed.raw)
    return KaiaRelayResult(
        tx_hash=signed.tx_hash_hex, sender_tx_hash=signed.sender_tx_hash_hex, fee_payer=ctx.account.address
    )
