"""EnergyMarket on anvil: gas per recorded and settled trade against one KIP-7 transfer per trade, trades
recorded and settled per second with 1-second blocks, and the time to settle a slot of 1,000 trades.

.venv/bin/python -m bench.bench_market_gas [--gas-trades 1000] [--throughput-trades 3000] [--e2e-trades 1000]

Starts its own anvil (wallet.localchain.AnvilNode), deploys EnergyCoin, MeterLedger and EnergyMarket, and
prints one JSON object per measurement. Set-up (minting, locking escrow) runs with automine; the timed
throughput phases switch anvil to 1-second interval mining.

Worst case throughout the gas phases: every trade has its own buy order (so recording touches one cold
escrow per trade) and, in the "distinct sellers" settlement phases, its own never-paid seller (so
settlement creates one new balance per trade). The "recurring sellers" phase settles trades of 20 sellers
who already have a balance in the contract.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt, Wei

from app.market.onchain import trade_leaf_of
from bench.service import machine
from common.merkle import layers, proof_from_layers
from contracts.artifacts import deploy_contract, load_artifact
from wallet.chain import ZERO_ADDRESS
from wallet.localchain import ANVIL_DEV_KEYS, AnvilNode, free_port
from wallet.typed_data import EIP712_DOMAIN_FIELDS, SCHEMAS

COIN_NAME = "ESSX Energy Coin"
COIN = 10**18
SLOT_SECONDS = 900
REFUND_TIMEOUT = 6 * 3600
PENALTY_BPS = 2_000
LIMIT = 200 * 10**15  # coin base units per kWh
QUANTITY_WH = 3_000
BATCH = 100
FEES = {"maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9}
NONCE_TAG = keccak(text="essx.market.escrow.v1")
TOTALS = [1_000, 800, 300, 500, 100, 100]


# --- the market's formulas (the same as the contract's pure functions) ------------------------------------


def escrow_amount(quantity_wh: int, limit_price: int) -> int:
    return -(-quantity_wh * limit_price // 1000)


def escrow_nonce(order_id: bytes, slot_start: int, quantity_wh: int, limit_price: int) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "uint64", "uint32", "uint128"],
            [NONCE_TAG, order_id, slot_start, quantity_wh, limit_price],
        )
    )


def merkle_layers(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """The contract's batch tree: common.merkle's sorted-pair tree over the leaves in recording order."""
    return layers(leaves, sort=False)


@dataclass(frozen=True)
class Trade:
    trade_id: bytes
    buy_order_id: bytes
    seller: str
    slot_start: int
    quantity_wh: int
    price: int
    orders_hash: bytes
    buyer: str

    def record_tuple(self, fill: int = 0) -> tuple[Any, ...]:
        return (
            self.trade_id,
            self.buy_order_id,
            fill,
            self.seller,
            self.slot_start,
            self.quantity_wh,
            self.price,
            self.orders_hash,
        )

    def leaf_words(self, trade_no: int) -> tuple[Any, ...]:
        return (
            self.trade_id,
            self.buy_order_id,
            trade_no,
            self.seller,
            self.slot_start,
            self.quantity_wh,
            self.price,
            self.orders_hash,
            self.buyer,
        )

    def leaf(self, trade_no: int) -> bytes:
        return trade_leaf_of(self.leaf_words(trade_no))


@dataclass(frozen=True)
class Call:
    to: str
    data: HexBytes
    trades: int = 0


LOCK_TYPES = [
    "bytes32",
    "address",
    "uint256",
    "uint64",
    "uint32",
    "uint128",
    "uint256",
    "uint256",
    "bytes32",
    "uint8",
]
LOCK_TYPES += ["bytes32", "bytes32"]
LOCK = f"lockEscrow({','.join(LOCK_TYPES)})"
TRADE_TUPLE = "(bytes32,bytes32,uint16,address,uint64,uint32,uint128,bytes32)"
RECORD = f"recordTrades({TRADE_TUPLE}[])"
LOCK_TUPLE = "(bytes32,address,uint256,uint64,uint32,uint128,uint256,uint256,uint8,bytes32,bytes32)"
LOCK_AND_RECORD = f"lockAndRecordTrades({LOCK_TUPLE}[],{TRADE_TUPLE}[])"
LOCK_RECORD_CLOSE = f"lockRecordAndClose({LOCK_TUPLE}[],{TRADE_TUPLE}[],bytes32[])"
SETTLE_TUPLE = (
    "(bytes32,bytes32,uint64,address,uint64,uint32,uint128,bytes32,address,uint64,uint32,bytes32[])"
)
SETTLE = f"settleTrades(uint64,bytes32,{SETTLE_TUPLE}[])"
BATCH_SETTLEMENT = (
    "(uint64,uint64,bytes32[],(uint32,bytes32,bytes32,address,uint32,uint128,bytes32,address,uint32)[])"
)
SETTLE_BATCHES = f"settleBatches(uint64,bytes32,{BATCH_SETTLEMENT}[])"


def abi_call(to: str, signature: str, types: list[str], args: list[Any], trades: int = 0) -> Call:
    return Call(to, HexBytes(keccak(text=signature)[:4] + encode(types, args)), trades)


@dataclass
class Batch:
    batch_no: int
    first_trade_no: int
    trades: list[Trade]
    layers: list[list[bytes]]

    def settlement(self, index: int, delivered_wh: int) -> tuple[Any, ...]:
        t = self.trades[index]
        return (
            *t.leaf_words(self.first_trade_no + index),
            self.batch_no,
            delivered_wh,
            proof_from_layers(self.layers, index),
        )


# --- the chain --------------------------------------------------------------------------------------------


class Chain:
    def __init__(self, url: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 120}))
        self.admin: LocalAccount = Account.from_key(ANVIL_DEV_KEYS[0])
        self.chain_id = int(self.w3.eth.chain_id)
        self.nonce = int(self.w3.eth.get_transaction_count(self.admin.address))
        self.timed = False

    def rpc(self, method: str, params: list[Any]) -> Any:
        return self.w3.provider.make_request(method, params)  # type: ignore[arg-type]

    def deploy(self, name: str, *args: Any) -> Contract:
        artifact = load_artifact(name)
        address = deploy_contract(self.w3, artifact, self.admin, *args)
        self.nonce = int(self.w3.eth.get_transaction_count(self.admin.address))
        return self.w3.eth.contract(address=address, abi=artifact.abi)

    def sign(self, fn: ContractFunction, gas: int, sender: LocalAccount | None = None) -> bytes:
        sender = sender or self.admin
        if sender is self.admin:
            nonce = self.nonce
            self.nonce += 1
        else:
            nonce = int(self.w3.eth.get_transaction_count(sender.address, "pending"))
        params: dict[str, Any] = {
            "from": sender.address,
            "nonce": nonce,
            "gas": gas,
            "chainId": self.chain_id,
            **FEES,
        }
        tx = fn.build_transaction(params)  # type: ignore[arg-type]
        return bytes(sender.sign_transaction(tx).rawTransaction)

    def sign_call(self, call: Call, gas: int | None = None) -> bytes:
        """Sign a pre-encoded call (eth_abi encodes a 500-trade batch ~15x faster than web3's encoder)."""
        gas = self.estimate_call(call) if gas is None else gas
        tx = {
            "to": call.to,
            "data": call.data,
            "value": 0,
            "nonce": self.nonce,
            "gas": gas,
            "chainId": self.chain_id,
            "type": 2,
            **FEES,
        }
        self.nonce += 1
        return bytes(self.admin.sign_transaction(tx).rawTransaction)

    def estimate_call(self, call: Call) -> int:
        """What a relayer does: estimate, plus 20 %. Keeps blocks packed (inclusion is by gas limit)."""
        tx = {"from": self.admin.address, "to": call.to, "data": call.data}
        return int(self.w3.eth.estimate_gas(tx) * 1.2)  # type: ignore[arg-type]

    def run_calls(self, calls: Iterable[Call], gas: int | None = None) -> list[TxReceipt]:
        return self.submit([self.sign_call(c, gas) for c in calls])

    def submit(self, raws: list[bytes]) -> list[TxReceipt]:
        """Send signed transactions in nonce order and wait for them. Outside the timed phases (automine)
        they are queued and then packed into full blocks with evm_mine: automine would make one block per
        transaction, which for thousands of set-up transactions is slow on a loaded machine."""
        if self.timed:
            return self.wait([self.send_raw(r) for r in raws])
        self.rpc("evm_setAutomine", [False])
        try:
            hashes = [self.send_raw(r) for r in raws]
            while int(self.rpc("txpool_status", [])["result"]["pending"], 16) > 0:
                self.rpc("evm_mine", [])
        finally:
            self.rpc("evm_setAutomine", [True])
        return self.wait(hashes)

    def send_raw(self, raw: bytes) -> HexBytes:
        return self.w3.eth.send_raw_transaction(raw)

    def wait(self, hashes: Iterable[HexBytes]) -> list[TxReceipt]:
        receipts = [
            self.w3.eth.wait_for_transaction_receipt(h, timeout=300, poll_latency=0.05) for h in hashes
        ]
        failed = [r["transactionHash"].hex() for r in receipts if r["status"] != 1]
        if failed:
            raise RuntimeError(f"{len(failed)} transactions failed, first {failed[0]}")
        return receipts

    def estimate(self, fn: ContractFunction) -> int:
        """What a relayer does: estimate, plus 20 %. Keeps blocks packed (inclusion is by gas limit)."""
        return int(fn.estimate_gas({"from": self.admin.address}) * 1.2)

    def run(self, fns: Iterable[tuple[ContractFunction, int]]) -> list[TxReceipt]:
        """Sign and send in nonce order without waiting, then wait for all receipts."""
        return self.submit([self.sign(fn, gas) for fn, gas in fns])

    def interval_mining(self, seconds: int | None) -> None:
        self.timed = seconds is not None
        if seconds is None:
            self.rpc("evm_setIntervalMining", [0])
            self.rpc("evm_setAutomine", [True])
        else:
            self.rpc("evm_setAutomine", [False])
            self.rpc("evm_setIntervalMining", [seconds])


@dataclass
class Market:
    chain: Chain
    coin: Contract
    ledger: Contract
    market: Contract
    buyers: list[LocalAccount]
    orders: int = 0
    buyer_of: dict[bytes, str] = field(default_factory=dict)
    batches: int = 0
    trades: int = 0
    _next_trade_no: int = 0  # trade numbers follow recording order (one sender, nonce order)

    @property
    def f(self) -> Any:
        return self.market.functions

    def lock_orders(self, n: int, slot: int) -> list[bytes]:
        """n buy orders of QUANTITY_WH at LIMIT, spread over the buyers, locked with signed authorizations."""
        signed = self.sign_locks(n, slot)
        self.chain.run_calls(
            [abi_call(self.market.address, LOCK, LOCK_TYPES, args) for args in signed], gas=250_000
        )
        return [args[0] for args in signed]

    def sign_locks(self, n: int, slot: int) -> list[list[Any]]:
        """n buyers' signed escrow authorisations: `lockEscrow`'s arguments (the nonce is the 9th)."""
        domain = {
            "name": COIN_NAME,
            "version": "1",
            "chainId": self.chain.chain_id,
            "verifyingContract": self.coin.address,
        }
        amount = escrow_amount(QUANTITY_WH, LIMIT)
        out = []
        for _ in range(n):
            oid = keccak(text=f"order:{self.orders}")
            buyer = self.buyers[self.orders % len(self.buyers)]
            self.orders += 1
            self.buyer_of[oid] = buyer.address
            nonce = escrow_nonce(oid, slot, QUANTITY_WH, LIMIT)
            message = {
                "from": buyer.address,
                "to": self.market.address,
                "value": amount,
                "validAfter": 0,
                "validBefore": 2**48,
                "nonce": nonce,
            }
            sig = buyer.sign_message(
                encode_typed_data(
                    full_message={
                        "types": {
                            "EIP712Domain": EIP712_DOMAIN_FIELDS,
                            "ReceiveWithAuthorization": SCHEMAS["ReceiveWithAuthorization"],
                        },
                        "primaryType": "ReceiveWithAuthorization",
                        "domain": domain,
                        "message": message,
                    }
                )
            )
            args = [oid, buyer.address, amount, slot, QUANTITY_WH, LIMIT, 0, 2**48, nonce, sig.v]
            args += [sig.r.to_bytes(32, "big"), sig.s.to_bytes(32, "big")]
            out.append(args)
        return out

    def make_trades(
        self, order_ids: list[bytes], sellers: list[str], slot: int, locked_in_batch: bool = False
    ) -> list[Trade]:
        """`locked_in_batch`: the orders are locked by the recording batch itself, so the leaves name their
        buyers (a stored escrow names its buyer itself: zero in the leaf)."""
        trades = []
        for i, oid in enumerate(order_ids):
            n = self.trades + i
            trades.append(
                Trade(
                    keccak(text=f"trade:{n}"),
                    oid,
                    sellers[i % len(sellers)],
                    slot,
                    2_000 + n % 1_000,
                    LIMIT - 50 * 10**15 + n * 10**9,  # below the limit: every fill leaves a price difference
                    keccak(text=f"orders:{n}"),
                    self.buyer_of[oid] if locked_in_batch else ZERO_ADDRESS,
                )
            )
        self.trades += len(order_ids)
        return trades

    def record_calls(self, trades: list[Trade]) -> tuple[list[Batch], list[Call]]:
        batches, calls = [], []
        for start in range(0, len(trades), BATCH):
            chunk = trades[start : start + BATCH]
            first = self._next_trade_no
            batches.append(
                Batch(
                    self.batches,
                    first,
                    chunk,
                    merkle_layers([t.leaf(first + i) for i, t in enumerate(chunk)]),
                )
            )
            self.batches += 1
            self._next_trade_no += len(chunk)
            types = ["(bytes32,bytes32,uint16,address,uint64,uint32,uint128,bytes32)[]"]
            calls.append(
                abi_call(self.market.address, RECORD, types, [[t.record_tuple() for t in chunk]], len(chunk))
            )
        return batches, calls

    def settle_call(
        self, slot: int, root: bytes, batches: list[Batch], deliver: Callable[[Trade], int]
    ) -> Call:
        items = [b.settlement(i, deliver(t)) for b in batches for i, t in enumerate(b.trades)]
        types = ["uint64", "bytes32", f"{SETTLE_TUPLE}[]"]
        return abi_call(self.market.address, SETTLE, types, [slot, root, items], len(items))

    def settle_batches_call(
        self, slot: int, root: bytes, batches: list[Batch], deliver: Callable[[Trade], int]
    ) -> Call:
        """`settleBatches`: each batch's trades as calldata, its root recomputed once, no proofs."""
        items = []
        for b in batches:
            trades = [
                (
                    i,
                    t.trade_id,
                    t.buy_order_id,
                    t.seller,
                    t.quantity_wh,
                    t.price,
                    t.orders_hash,
                    t.buyer,
                    deliver(t),
                )
                for i, t in enumerate(b.trades)
            ]
            items.append((b.batch_no, b.first_trade_no, [b"\0" * 32] * len(b.trades), trades))
        types = ["uint64", "bytes32", f"{BATCH_SETTLEMENT}[]"]
        count = sum(len(b.trades) for b in batches)
        return abi_call(self.market.address, SETTLE_BATCHES, types, [slot, root, items], count)


def full_or_short(t: Trade) -> int:
    """Nine trades in ten delivered in full, one in ten short by a third (buyer refund + penalty)."""
    return t.quantity_wh if int.from_bytes(t.trade_id[:2], "big") % 10 else t.quantity_wh * 2 // 3


def setup(chain: Chain, buyers: int) -> Market:
    admin = chain.admin.address
    coin = chain.deploy("EnergyCoin", COIN_NAME, "EEC", admin)
    ledger = chain.deploy("MeterLedger", admin)
    market = chain.deploy("EnergyMarket", coin.address, ledger.address, admin, REFUND_TIMEOUT, PENALTY_BPS)
    chain.run([(market.functions.grantRole(market.functions.OPERATOR_ROLE().call(), admin), 100_000)])
    accounts = [Account.create() for _ in range(buyers)]
    chain.run([(coin.functions.mint(a.address, 10**9 * COIN), 100_000) for a in accounts])
    return Market(chain, coin, ledger, market, accounts)


def transfer_baseline(chain: Chain, m: Market) -> dict[str, int]:
    """Gas of one plain KIP-7 transfer (a whole transaction), to an existing holder and to a new one."""
    holder = m.buyers[1].address
    payer = m.buyers[0]
    chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_transaction(
            {"from": chain.admin.address, "to": payer.address, "value": Wei(10**18)}
        )
    )
    chain.nonce = int(chain.w3.eth.get_transaction_count(chain.admin.address))
    existing = chain.wait([chain.send_raw(chain.sign(m.coin.functions.transfer(holder, 1), 100_000, payer))])[
        0
    ]
    new = chain.wait(
        [chain.send_raw(chain.sign(m.coin.functions.transfer(Account.create().address, 1), 100_000, payer))]
    )[0]
    return {"existing_holder": int(existing["gasUsed"]), "new_holder": int(new["gasUsed"])}


def per_trade(receipts: list[TxReceipt], trades: int) -> float:
    return sum(int(r["gasUsed"]) for r in receipts) / trades


def ratio(gas: float, baseline: int) -> float:
    return round(gas / baseline, 3)


def gas_phase(chain: Chain, m: Market, n: int, recurring: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base = transfer_baseline(chain, m)
    out.append({"bench": "kip7_transfer_baseline", **base})
    slot = (int(chain.w3.eth.get_block("latest")["timestamp"]) // SLOT_SECONDS + 4) * SLOT_SECONDS

    # n trades with distinct orders and distinct fresh sellers, then `recurring` trades of 20 sellers.
    order_ids = m.lock_orders(n + recurring, slot)
    fresh = [Account.create().address for _ in range(n)]
    regulars = [Account.create().address for _ in range(20)]
    trades = m.make_trades(order_ids[:n], fresh, slot) + m.make_trades(order_ids[n:], regulars, slot)
    batches, calls = m.record_calls(trades)
    receipts = chain.run_calls(calls, gas=2_000_000)
    for batch in (batches[0], batches[-1]):
        assert m.f.batchRoot(batch.batch_no).call() == batch.layers[-1][0], (
            "Python tree differs from the contract's"
        )
    gas = per_trade(receipts, len(trades))
    out.append(
        {
            "bench": "record_gas_per_trade",
            "batch": BATCH,
            "trades": len(trades),
            "distinct_buy_orders": True,
            "gas_per_trade": round(gas),
            "vs_transfer_existing_holder": ratio(gas, base["existing_holder"]),
            "vs_transfer_new_holder": ratio(gas, base["new_holder"]),
            "target": "<= 0.333 of a transfer to an existing holder",
        }
    )

    root = keccak(text=f"ledger root {slot}")
    chain.run([(m.ledger.functions.anchor(slot, root, 100, TOTALS), 200_000)])
    distinct = batches[: n // BATCH]
    regular = batches[n // BATCH :]
    runs: list[tuple[str, list[list[Batch]]]] = [
        # Half of the distinct-seller trades in batches of 100, the other half in batches of 500.
        ("distinct sellers", [[b] for b in distinct[: len(distinct) // 2]]),
        ("distinct sellers", [distinct[i : i + 5] for i in range(len(distinct) // 2, len(distinct), 5)]),
        # Recurring sellers (from their second trade on they hold a balance): one batch of 100, then 500s.
        ("20 recurring sellers", [regular[:1]]),
        ("20 recurring sellers", [regular[i : i + 5] for i in range(1, len(regular), 5)]),
    ]
    for sellers, groups in runs:
        if not groups:
            continue
        calls = [m.settle_call(slot, root, group, full_or_short) for group in groups]
        receipts = chain.run_calls(calls)
        count = sum(c.trades for c in calls)
        gas = per_trade(receipts, count)
        out.append(
            {
                "bench": "settle_gas_per_trade",
                "sellers": sellers,
                "batch": max(c.trades for c in calls),
                "trades": count,
                "gas_per_trade": round(gas),
                "vs_transfer_existing_holder": ratio(gas, base["existing_holder"]),
                "vs_transfer_new_holder": ratio(gas, base["new_holder"]),
            }
        )

    # Paying out: push every balance to its wallet (200 accounts per transaction).
    accounts = sorted({t.seller for t in trades} | {b.address for b in m.buyers})
    with_balance = [a for a in accounts if m.f.balances(a).call() > 0]
    pushes = [m.f.withdrawForBatch(with_balance[i : i + 200]) for i in range(0, len(with_balance), 200)]
    receipts = chain.run([(fn, chain.estimate(fn)) for fn in pushes])
    out.append(
        {
            "bench": "push_payout_gas_per_account",
            "accounts": len(with_balance),
            "per_transaction": 200,
            "gas_per_account": round(per_trade(receipts, len(with_balance))),
            "note": "withdrawForBatch: one coin transfer per account, mostly to new holders",
        }
    )
    # Gate closure: release what the orders no longer need (price differences), 200 orders per transaction.
    releases = [m.f.releaseEscrows(order_ids[i : i + 200]) for i in range(0, len(order_ids), 200)]
    receipts = chain.run([(fn, chain.estimate(fn)) for fn in releases])
    out.append(
        {
            "bench": "release_escrows_gas_per_order",
            "orders": len(order_ids),
            "gas_per_order": round(per_trade(receipts, len(order_ids))),
            "note": "releaseEscrows: one coin transfer per order to its buyer (100 buyers, existing holders)",
        }
    )
    held = m.coin.functions.balanceOf(m.market.address).call()
    assert held == m.f.totalEscrowed().call() + m.f.totalCredited().call()
    return out


def lifecycle_phase(chain: Chain, m: Market, orders: int, trades: int, sellers: int) -> list[dict[str, Any]]:
    """Everything the platform sends for one slot of a community day, divided by the trades: `orders` buy
    orders signed, `trades` of them matched once each (the demo's ratio: ~6 orders per trade), with the
    per-order locks of the old path and the batched lock-on-match path, then settlement, gate-closure
    release and payout push. The meter anchoring is the collector's and is left out of all paths.
    `lock_on_match_close_in_batch`: the call auction's case, where the orders can match no more when their
    trades are recorded, so the batch also closes them (`lockRecordAndClose`) and no release follows."""
    out: list[dict[str, Any]] = []
    pool = [Account.create().address for _ in range(sellers)]
    paths = ("lock_every_order", "lock_on_match_batched", "lock_on_match_close_in_batch")
    for offset, path in enumerate(paths):
        slot = (
            int(chain.w3.eth.get_block("latest")["timestamp"]) // SLOT_SECONDS + 40 + offset
        ) * SLOT_SECONDS
        signed = m.sign_locks(orders, slot)
        matched = signed[:trades]
        tx_trades = m.make_trades([a[0] for a in matched], pool, slot, path != "lock_every_order")
        batches, record = m.record_calls(tx_trades)
        receipts: dict[str, list[TxReceipt]] = {}
        if path == "lock_every_order":
            locks = [abi_call(m.market.address, LOCK, LOCK_TYPES, a) for a in signed]
            receipts["lock"] = chain.run_calls(locks, gas=250_000)
            receipts["record"] = chain.run_calls(record, gas=2_000_000)
            locked = [a[0] for a in signed]
        else:
            assert len(record) == 1, "one matching pass: one batch"
            items = [t.record_tuple() for t in tx_trades]
            lock_items = [(*a[:8], *a[9:]) for a in matched]
            call = abi_call(
                m.market.address,
                LOCK_AND_RECORD,
                [f"{LOCK_TUPLE}[]", f"{TRADE_TUPLE}[]"],
                [lock_items, items],
                len(items),
            )
            if path == "lock_on_match_close_in_batch":
                locked = []
                call = abi_call(
                    m.market.address,
                    LOCK_RECORD_CLOSE,
                    [f"{LOCK_TUPLE}[]", f"{TRADE_TUPLE}[]", "bytes32[]"],
                    [lock_items, items, [a[0] for a in matched]],
                    len(items),
                )
            else:
                locked = [a[0] for a in matched]
            receipts["lock_and_record"] = chain.run_calls([call])
        assert m.f.batchRoot(batches[0].batch_no).call() == batches[0].layers[-1][0]
        root = keccak(text=f"ledger root {slot}")
        chain.run([(m.ledger.functions.anchor(slot, root, 100, TOTALS), 200_000)])
        settle = m.settle_call if path == "lock_every_order" else m.settle_batches_call
        receipts["settle"] = chain.run_calls([settle(slot, root, batches, full_or_short)])
        if locked:
            release = m.f.releaseEscrows(locked)
            receipts["release"] = chain.run([(release, chain.estimate(release))])
        payees = sorted(set(pool) | {a[1] for a in matched})
        payees = [a for a in payees if m.f.balances(a).call() > 0]
        push = m.f.withdrawForBatch(payees)
        receipts["payout"] = chain.run([(push, chain.estimate(push))])
        total = sum(int(r["gasUsed"]) for rs in receipts.values() for r in rs)
        unmatched = 0
        if path == "lock_every_order":  # an unmatched order's lock and its share of the release
            unmatched = round(
                per_trade(receipts["lock"][trades:], orders - trades)
                + per_trade(receipts["release"], len(locked))
            )
        out.append(
            {
                "bench": "lifecycle_gas_per_settled_trade",
                "path": path,
                "orders": orders,
                "trades": trades,
                "sellers": sellers,
                "transactions": sum(len(rs) for rs in receipts.values()),
                "gas_per_trade": round(total / trades),
                "by_step_per_trade": {k: round(per_trade(rs, trades)) for k, rs in receipts.items()},
                "gas_per_unmatched_order": unmatched,
            }
        )
    held = m.coin.functions.balanceOf(m.market.address).call()
    assert held == m.f.totalEscrowed().call() + m.f.totalCredited().call()
    return out


def throughput_row(
    bench: str, batch: int, receipts: list[TxReceipt], trades: int, elapsed: float, gas_limit: int
) -> dict[str, Any]:
    """A timed phase at 1-second blocks: trades per second, blocks used, and gas per trade."""
    gas = per_trade(receipts, trades)
    return {
        "bench": bench,
        "block_time_s": 1,
        "trades": trades,
        "batch": batch,
        "seconds": round(elapsed, 2),
        "trades_per_s": round(trades / elapsed),
        "blocks": len({int(r["blockNumber"]) for r in receipts}),
        "gas_per_trade": round(gas),
        "trades_per_block_at_gas_limit": int(gas_limit // gas),
    }


def throughput_phase(chain: Chain, m: Market, n: int, e2e: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    slot = (int(chain.w3.eth.get_block("latest")["timestamp"]) // SLOT_SECONDS + 8) * SLOT_SECONDS
    e2e_slot = slot + SLOT_SECONDS
    sellers = [Account.create().address for _ in range(50)]
    # Set-up with automine: the orders of both phases, the e2e slot's trades, both slots anchored.
    order_ids = m.lock_orders(n, slot)
    e2e_orders = m.lock_orders(e2e, e2e_slot)
    trades = m.make_trades(order_ids, sellers, slot)
    e2e_trades = m.make_trades(e2e_orders, sellers, e2e_slot)
    root = keccak(text=f"ledger root {slot}")
    e2e_root = keccak(text=f"ledger root {e2e_slot}")
    chain.run(
        [
            (m.ledger.functions.anchor(slot, root, 100, TOTALS), 200_000),
            (m.ledger.functions.anchor(e2e_slot, e2e_root, 100, TOTALS), 200_000),
        ]
    )
    e2e_batches, calls = m.record_calls(e2e_trades)
    chain.run_calls(calls, gas=2_000_000)
    gas_limit = int(chain.w3.eth.get_block("latest")["gasLimit"])

    chain.interval_mining(1)
    try:
        # Trades recorded per second: 100-trade batches encoded, estimated, signed and sent back to back.
        t0 = time.perf_counter()
        batches, calls = m.record_calls(trades)
        receipts = chain.run_calls(calls)
        elapsed = time.perf_counter() - t0
        out.append(throughput_row("record_throughput", BATCH, receipts, len(trades), elapsed, gas_limit))
        # Trades settled per second: 500-trade batches (50 recurring sellers, 100 buyers).
        t0 = time.perf_counter()
        calls = [
            m.settle_call(slot, root, batches[i : i + 5], full_or_short) for i in range(0, len(batches), 5)
        ]
        receipts = chain.run_calls(calls)
        elapsed = time.perf_counter() - t0
        out.append(throughput_row("settle_throughput", 500, receipts, len(trades), elapsed, gas_limit))
        # End to end: a slot of `e2e` recorded trades whose meter data is anchored: build the settlements
        # (Merkle proofs), settle in batches of 500 until final, then push every payout to its wallet.
        t0 = time.perf_counter()
        calls = [
            m.settle_call(e2e_slot, e2e_root, e2e_batches[i : i + 5], full_or_short)
            for i in range(0, len(e2e_batches), 5)
        ]
        chain.run_calls(calls)
        settled = time.perf_counter() - t0
        payees = sorted({t.seller for t in e2e_trades} | {b.address for b in m.buyers})
        payees = [a for a in payees if m.f.balances(a).call() > 0]
        pushes = [m.f.withdrawForBatch(payees[i : i + 200]) for i in range(0, len(payees), 200)]
        chain.run([(fn, chain.estimate(fn)) for fn in pushes])
        paid = time.perf_counter() - t0
        assert all(
            m.f.isTradeClosed(b.first_trade_no + i).call() for b in e2e_batches for i in range(len(b.trades))
        )
        out.append(
            {
                "bench": "settle_slot_end_to_end",
                "block_time_s": 1,
                "trades": len(e2e_trades),
                "batch": 500,
                "settled_s": round(settled, 2),
                "settled_and_paid_out_s": round(paid, 2),
                "payees": len(payees),
            }
        )
    finally:
        chain.interval_mining(None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--gas-trades", type=int, default=1_000, help="trades with distinct sellers (multiple of 200)"
    )
    parser.add_argument("--recurring-trades", type=int, default=600, help="trades of 20 recurring sellers")
    parser.add_argument("--throughput-trades", type=int, default=3_000)
    parser.add_argument("--e2e-trades", type=int, default=1_000)
    parser.add_argument("--buyers", type=int, default=100)
    parser.add_argument("--lifecycle-orders", type=int, default=180, help="buy orders in one community slot")
    parser.add_argument("--lifecycle-trades", type=int, default=30, help="of which matched (one trade each)")
    parser.add_argument("--lifecycle-sellers", type=int, default=10)
    parser.add_argument("--only-lifecycle", action="store_true", help="skip the gas and throughput phases")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}), flush=True)
    node = AnvilNode(port=free_port(), block_time=None).start()
    try:
        chain = Chain(node.url)
        info = chain.rpc("anvil_nodeInfo", []).get("result", {})
        gas_limit = int(chain.w3.eth.get_block("latest")["gasLimit"])
        print(json.dumps({"chain": "anvil", "hardfork": info.get("hardFork"), "block_gas_limit": gas_limit}))
        m = setup(chain, args.buyers)
        base = transfer_baseline(chain, m)
        for row in lifecycle_phase(
            chain, m, args.lifecycle_orders, args.lifecycle_trades, args.lifecycle_sellers
        ):
            row["vs_transfer_existing_holder"] = ratio(row["gas_per_trade"], base["existing_holder"])
            print(json.dumps(row), flush=True)
        if args.only_lifecycle:
            return
        for row in gas_phase(chain, m, args.gas_trades, args.recurring_trades):
            print(json.dumps(row), flush=True)
        for row in throughput_phase(chain, m, args.throughput_trades, args.e2e_trades):
            print(json.dumps(row), flush=True)
    finally:
        node.stop()


if __name__ == "__main__":
    main()
