"""EnergyMarket on anvil: gas-free escrow locks, batched trade records with Merkle roots, settlement against
the MeterLedger or by decision, timeout refunds, pausing, and conservation of coins at every step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError
from web3.types import TxReceipt

from common.merkle import process_proof
from tests.contracts import typed_data
from tests.contracts.chain import assert_reverts, deploy, events, latest_timestamp, selector, send
from tests.contracts.conftest import COIN_NAME
from tests.contracts.test_meter_ledger import merkle_proof, merkle_root
from wallet.chain import ZERO_ADDRESS

pytestmark = pytest.mark.usefixtures("chain_snapshot")

COIN = 10**18
SLOT_SECONDS = 900
REFUND_TIMEOUT = 6 * 3600
PENALTY_BPS = 2_000  # 20 % of the shortfall value goes to the buyer
PRICE = 150 * 10**15  # 0.15 coin per kWh
LIMIT = 200 * 10**15
UINT32_MAX = 2**32 - 1
PLAIN_TRANSFER_GAS = 36_776  # a KIP-7 transfer to an existing holder (KAIA.md, measured on anvil)
NONCE_TAG = keccak(text="essx.market.escrow.v1")
TOTALS = [1_000, 800, 300, 500, 100, 100]


# --- the formulas the platform must reproduce (checked against the contract's pure functions) ---------


def escrow_amount(quantity_wh: int, limit_price: int) -> int:
    return -(-quantity_wh * limit_price // 1000)


def trade_value(quantity_wh: int, price: int) -> int:
    return quantity_wh * price // 1000


def settlement_amounts(
    quantity_wh: int, price: int, delivered_wh: int, penalty_bps: int = PENALTY_BPS
) -> tuple[int, int, int]:
    """(to seller, to buyer, penalty)."""
    value = trade_value(quantity_wh, price)
    earned = trade_value(delivered_wh, price)
    penalty = min((value - earned) * penalty_bps // 10_000, earned)
    return earned - penalty, value - (earned - penalty), penalty


def escrow_nonce(order_id: bytes, slot_start: int, quantity_wh: int, limit_price: int) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "uint64", "uint32", "uint128"],
            [NONCE_TAG, order_id, slot_start, quantity_wh, limit_price],
        )
    )


def trade_leaf(
    trade_id: bytes,
    buy_order_id: bytes,
    trade_no: int,
    seller: str,
    slot_start: int,
    quantity_wh: int,
    price: int,
    orders_hash: bytes,
    buyer: str,
) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "uint256", "address", "uint64", "uint32", "uint128", "bytes32", "address"],
            [trade_id, buy_order_id, trade_no, seller, slot_start, quantity_wh, price, orders_hash, buyer],
        )
    )


def error_data(signature: str, types: list[str] | None = None, args: list[Any] | None = None) -> str:
    """The revert data of a custom error, as web3 shows it in ContractCustomError."""
    return "0x" + (selector(signature) + encode(types or [], args or [])).hex()


def order_id(name: str) -> bytes:
    return keccak(text=f"order:{name}")


# --- a small client of the contract that also keeps the books the contract does not -----------------


@dataclass(frozen=True)
class TradeIn:
    trade_id: bytes
    buy_order_id: bytes
    fill: int
    seller: str
    slot_start: int
    quantity_wh: int
    price: int
    orders_hash: bytes

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.trade_id,
            self.buy_order_id,
            self.fill,
            self.seller,
            self.slot_start,
            self.quantity_wh,
            self.price,
            self.orders_hash,
        )


@dataclass
class Recorded:
    trade: TradeIn
    buyer: str
    trade_no: int
    batch_no: int
    batch_leaves: list[bytes]
    index: int

    @property
    def leaf(self) -> bytes:
        return self.batch_leaves[self.index]

    @property
    def value(self) -> int:
        return trade_value(self.trade.quantity_wh, self.trade.price)

    def terms(self) -> tuple[Any, ...]:
        t = self.trade
        return (
            t.trade_id,
            t.buy_order_id,
            self.trade_no,
            t.seller,
            t.slot_start,
            t.quantity_wh,
            t.price,
            t.orders_hash,
            self.buyer,
        )

    def proof(self) -> list[bytes]:
        return merkle_proof(self.batch_leaves, self.index)

    def settlement(self, delivered_wh: int) -> tuple[Any, ...]:
        return (*self.terms(), self.batch_no, delivered_wh, self.proof())

    def trade_proof(self) -> tuple[Any, ...]:
        return (*self.terms(), self.batch_no, self.proof())


@dataclass
class Market:
    w3: Web3
    market: Contract
    coin: Contract
    ledger: Contract
    operator: LocalAccount
    domain: dict[str, Any]
    orders: list[bytes] = field(default_factory=list)
    recorded: list[Recorded] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)
    fills: dict[bytes, int] = field(default_factory=dict)

    @property
    def f(self) -> Any:
        return self.market.functions

    def lock_call(
        self,
        buyer: LocalAccount,
        oid: bytes,
        slot: int,
        quantity_wh: int,
        limit: int,
        amount: int | None = None,
        nonce: bytes | None = None,
        signed_amount: int | None = None,
    ) -> ContractFunction:
        amount = escrow_amount(quantity_wh, limit) if amount is None else amount
        nonce = escrow_nonce(oid, slot, quantity_wh, limit) if nonce is None else nonce
        valid_before = latest_timestamp(self.w3) + 3600
        sig = typed_data.sign(
            buyer,
            self.domain,
            "ReceiveWithAuthorization",
            typed_data.authorization(
                buyer.address,
                self.market.address,
                amount if signed_amount is None else signed_amount,
                0,
                valid_before,
                nonce,
            ),
        )
        return self.f.lockEscrow(
            oid, buyer.address, amount, slot, quantity_wh, limit, 0, valid_before, nonce, sig.v, sig.r, sig.s
        )

    def lock_args(
        self, buyer: LocalAccount, oid: bytes, slot: int, quantity_wh: int, limit: int = LIMIT
    ) -> tuple[Any, ...]:
        """A `Lock` for `lockAndRecordTrades`: the buyer's signed authorisation, used only when it matches."""
        call = self.lock_call(buyer, oid, slot, quantity_wh, limit)
        args = call.args
        return (*args[:8], *args[9:])  # lockEscrow's arguments without the nonce

    def lock_and_record(self, locks: list[tuple[Any, ...]], trades: list[TradeIn]) -> TxReceipt:
        receipt = send(
            self.w3, self.f.lockAndRecordTrades(locks, [t.as_tuple() for t in trades]), self.operator
        )
        for lock in locks:
            self.orders.append(lock[0])
            self.accounts.add(lock[1])
        self._recorded(receipt, trades, {lock[0]: lock[1] for lock in locks})
        return receipt

    def lock(
        self, buyer: LocalAccount, oid: bytes, slot: int, quantity_wh: int, limit: int = LIMIT, **kw: Any
    ) -> TxReceipt:
        receipt = send(self.w3, self.lock_call(buyer, oid, slot, quantity_wh, limit, **kw), self.operator)
        self.orders.append(oid)
        self.accounts.add(buyer.address)
        self.check()
        return receipt

    def trade(
        self, name: str, oid: bytes, seller: str, slot: int, quantity_wh: int, price: int = PRICE
    ) -> TradeIn:
        """A trade with the order's next fill number (counted here, as the platform would)."""
        fill = self.fills.get(oid, 0)
        self.fills[oid] = fill + 1
        return TradeIn(
            keccak(text=f"trade:{name}"),
            oid,
            fill,
            seller,
            slot,
            quantity_wh,
            price,
            keccak(text=f"orders:{name}"),
        )

    def record(self, trades: list[TradeIn]) -> list[Recorded]:
        receipt = send(self.w3, self.f.recordTrades([t.as_tuple() for t in trades]), self.operator)
        return self._recorded(receipt, trades)

    def _recorded(
        self, receipt: TxReceipt, trades: list[TradeIn], locked: dict[bytes, str] | None = None
    ) -> list[Recorded]:
        """`locked`: the orders this batch locked, and their buyers (in their trades' leaves; else zero)."""
        buyers = {t.buy_order_id: (locked or {}).get(t.buy_order_id, ZERO_ADDRESS) for t in trades}
        (batch,) = events(self.market, "BatchRecorded", receipt)
        batch_no, first = batch["args"]["batchNo"], batch["args"]["firstTradeNo"]
        leaves = [
            trade_leaf(
                t.trade_id,
                t.buy_order_id,
                first + i,
                t.seller,
                t.slot_start,
                t.quantity_wh,
                t.price,
                t.orders_hash,
                buyers[t.buy_order_id],
            )
            for i, t in enumerate(trades)
        ]
        assert batch["args"]["root"] == merkle_root(leaves) == self.f.batchRoot(batch_no).call()
        assert batch["args"]["count"] == len(trades)
        logged = events(self.market, "TradeRecorded", receipt)
        assert [(e["args"]["tradeId"], e["args"]["buyOrderId"], e["args"]["tradeNo"]) for e in logged] == [
            (t.trade_id, t.buy_order_id, first + i) for i, t in enumerate(trades)
        ]
        done = [
            Recorded(t, buyers[t.buy_order_id], first + i, batch_no, leaves, i) for i, t in enumerate(trades)
        ]
        self.recorded.extend(done)
        self.accounts.update(t.seller for t in trades)
        self.check()
        return done

    def anchor(self, slot: int, root: bytes = b"\x11" * 32) -> bytes:
        """The slot's meter data anchored in the ledger (by the operator, here also the reporter)."""
        send(self.w3, self.ledger.functions.anchor(slot, root, 3, TOTALS), self.operator)
        return root

    def escrow(self, oid: bytes) -> dict[str, Any]:
        buyer, slot, limit, open_wh, available, fills, releasable = self.f.escrows(oid).call()
        return {
            "buyer": buyer,
            "slot": slot,
            "limit": limit,
            "open_wh": open_wh,
            "available": available,
            "fills": fills,
            "releasable": releasable,
        }

    def balance(self, account: str) -> int:
        return int(self.f.balances(account).call())

    def check(self) -> None:
        """Conservation: the coins the contract holds are exactly its orders' coins, its open trades' values
        and its credited balances, both by its own totals and by summing every order, trade and account."""
        held = self.coin.functions.balanceOf(self.market.address).call()
        escrowed, credited = self.f.totalEscrowed().call(), self.f.totalCredited().call()
        assert held == escrowed + credited
        in_orders = sum(self.escrow(o)["available"] for o in self.orders)
        in_trades = sum(r.value for r in self.recorded if not self.f.isTradeClosed(r.trade_no).call())
        assert escrowed == in_orders + in_trades
        assert credited == sum(self.balance(a) for a in self.accounts)
        for o in self.orders:
            e = self.escrow(o)
            assert e["available"] >= escrow_amount(e["open_wh"], e["limit"])


@pytest.fixture(scope="module")
def ledger(w3: Web3, module_chain: None, admin: LocalAccount) -> Contract:
    return deploy(w3, "MeterLedger", admin, admin.address)


@pytest.fixture(scope="module")
def market(w3: Web3, coin: Contract, ledger: Contract, admin: LocalAccount) -> Contract:
    contract = deploy(
        w3, "EnergyMarket", admin, coin.address, ledger.address, admin.address, REFUND_TIMEOUT, PENALTY_BPS
    )
    send(w3, contract.functions.grantRole(contract.functions.OPERATOR_ROLE().call(), admin.address), admin)
    return contract


@pytest.fixture
def mk(
    w3: Web3, market: Contract, coin: Contract, ledger: Contract, admin: LocalAccount, chain_id: int
) -> Market:
    return Market(w3, market, coin, ledger, admin, typed_data.domain(COIN_NAME, chain_id, coin.address))


@pytest.fixture
def slot(w3: Web3) -> int:
    """A 15-minute slot starting about two hours from now."""
    return (latest_timestamp(w3) // SLOT_SECONDS + 8) * SLOT_SECONDS


@pytest.fixture
def funded(
    chain_snapshot: None,
    w3: Web3,
    coin: Contract,
    admin: LocalAccount,
    alice: LocalAccount,
    bob: LocalAccount,
) -> None:
    """alice and bob (buyers) hold 1,000 coins each (inside the test's snapshot)."""
    for buyer in (alice, bob):
        send(w3, coin.functions.mint(buyer.address, 1_000 * COIN), admin)


def advance_to(w3: Web3, timestamp: int) -> None:
    w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


# --- deployment ---------------------------------------------------------------------------------------


def test_deployment_parameters_and_roles(
    w3: Web3, market: Contract, coin: Contract, ledger: Contract, admin: LocalAccount, alice: LocalAccount
) -> None:
    f = market.functions
    assert f.coin().call() == coin.address
    assert f.ledger().call() == ledger.address
    assert f.refundTimeout().call() == REFUND_TIMEOUT
    assert f.penaltyBps().call() == PENALTY_BPS
    assert f.OPERATOR_ROLE().call() == keccak(text="OPERATOR_ROLE")
    assert f.hasRole(b"\x00" * 32, admin.address).call()
    assert not f.hasRole(f.OPERATOR_ROLE().call(), alice.address).call()
    assert f.ESCROW_NONCE_TAG().call() == NONCE_TAG
    assert (f.tradeCount().call(), f.batchCount().call(), f.paused().call()) == (0, 0, False)
    zero = "0x" + "00" * 20
    for bad, error in (
        ((coin.address, ledger.address, admin.address, REFUND_TIMEOUT, 10_001), "InvalidParameter()"),
        ((coin.address, ledger.address, admin.address, 0, 0), "InvalidParameter()"),
        ((zero, ledger.address, admin.address, REFUND_TIMEOUT, 0), "ZeroAddress()"),
    ):
        with pytest.raises(ContractCustomError, match=error_data(error)):
            deploy(w3, "EnergyMarket", admin, *bad)


def test_python_formulas_match_the_contract(market: Contract) -> None:
    f = market.functions
    cases = [
        (1, 1, 0),
        (1500, 101, 700),
        (999, 1, 998),
        (3000, PRICE, 1234),
        (7, 10**18 + 1, 0),
        (UINT32_MAX, 2**80 - 1, 1),
    ]
    for q, p, d in cases:
        assert f.escrowAmount(q, p).call() == escrow_amount(q, p)
        assert f.tradeValue(q, p).call() == trade_value(q, p)
        assert tuple(f.settlementAmounts(q, p, d).call()) == settlement_amounts(q, p, d)
    assert escrow_amount(1500, 101) == 152 and trade_value(1500, 101) == 151  # up for escrow, down for trades
    oid = order_id("x")
    assert f.escrowNonce(oid, 1_800_000_000, 5, 7).call() == escrow_nonce(oid, 1_800_000_000, 5, 7)
    args = (
        keccak(text="t"),
        oid,
        9,
        Web3.to_checksum_address("0x" + "ab" * 20),
        1_800_000_000,
        5,
        7,
        keccak(text="h"),
        Web3.to_checksum_address("0x" + "cd" * 20),
    )
    assert f.tradeLeaf(*args).call() == trade_leaf(*args)


# --- escrow ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("funded")
def test_lock_escrow_with_a_buyer_signed_authorization(mk: Market, alice: LocalAccount, slot: int) -> None:
    w3, coin = mk.w3, mk.coin
    oid = order_id("a")
    eth_before = w3.eth.get_balance(alice.address)
    receipt = mk.lock(alice, oid, slot, 5_000, LIMIT)
    amount = escrow_amount(5_000, LIMIT)
    assert w3.eth.get_balance(alice.address) == eth_before  # gas-free for the buyer
    assert coin.functions.balanceOf(alice.address).call() == 1_000 * COIN - amount
    (event,) = events(mk.market, "EscrowLocked", receipt)
    assert event["args"] == {
        "orderId": oid,
        "buyer": alice.address,
        "slotStart": slot,
        "quantityWh": 5_000,
        "limitPrice": LIMIT,
        "amount": amount,
    }
    assert mk.escrow(oid) == {
        "buyer": alice.address,
        "slot": slot,
        "limit": LIMIT,
        "open_wh": 5_000,
        "available": amount,
        "fills": 0,
        "releasable": 0,
    }
    # The coin marks the nonce used: the authorization cannot be spent again anywhere.
    assert coin.functions.authorizationState(alice.address, escrow_nonce(oid, slot, 5_000, LIMIT)).call()


@pytest.mark.usefixtures("funded")
def test_a_signature_cannot_be_replayed_or_moved_to_another_order(
    mk: Market, alice: LocalAccount, bob: LocalAccount, slot: int
) -> None:
    w3, admin = mk.w3, mk.operator
    a, b = order_id("a"), order_id("b")
    nonce_a = escrow_nonce(a, slot, 5_000, LIMIT)
    first = mk.lock_call(alice, a, slot, 5_000, LIMIT)
    send(w3, first, admin)
    mk.orders.append(a)
    mk.accounts.add(alice.address)
    # The same transaction again: the order exists.
    assert_reverts(w3, first, admin, error_data("OrderExists(bytes32)", ["bytes32"], [a]))
    # A's signature (nonce bound to A's terms) for order B, or for A's id with other terms: nonce mismatch.
    for oid, quantity, limit in ((b, 5_000, LIMIT), (a, 5_000, LIMIT + 1), (b, 9_000, LIMIT)):
        expected = escrow_nonce(oid, slot, quantity, limit)
        moved = mk.lock_call(alice, oid, slot, quantity, limit, nonce=nonce_a)
        reason = error_data(
            "NonceMismatch(bytes32,bytes32,bytes32)", ["bytes32"] * 3, [oid, expected, nonce_a]
        )
        assert_reverts(w3, moved, admin, reason)
    # The right nonce for B but a signature over another amount: the coin refuses the signature.
    forged = mk.lock_call(alice, b, slot, 5_000, LIMIT, signed_amount=1)
    assert_reverts(w3, forged, admin, "KIP7TransferAuthorization: invalid signature")
    # alice signs for herself only: bob cannot be made to pay with alice's signature.
    good = mk.lock_call(alice, b, slot, 5_000, LIMIT)
    args = list(good.args)
    args[1] = bob.address
    assert_reverts(w3, mk.f.lockEscrow(*args), admin, "KIP7TransferAuthorization: invalid signature")
    # Only the operator locks with a signature.
    role = mk.f.OPERATOR_ROLE().call()
    assert_reverts(
        w3, good, bob, f"AccessControl: account {bob.address.lower()} is missing role 0x{role.hex()}"
    )
    mk.check()


@pytest.mark.usefixtures("funded")
def test_invalid_locks_revert(mk: Market, alice: LocalAccount, slot: int) -> None:
    w3, admin = mk.w3, mk.operator
    oid = order_id("a")
    required = escrow_amount(5_000, LIMIT)
    small = mk.lock_call(alice, oid, slot, 5_000, LIMIT, amount=required - 1)
    assert_reverts(
        w3,
        small,
        admin,
        error_data(
            "EscrowTooSmall(bytes32,uint256,uint256)",
            ["bytes32", "uint256", "uint256"],
            [oid, required, required - 1],
        ),
    )
    for quantity, limit, at in ((0, LIMIT, slot), (5_000, 0, slot), (5_000, 2**80, slot), (5_000, LIMIT, 0)):
        bad = mk.lock_call(alice, oid, at, quantity, limit, amount=required)
        assert_reverts(w3, bad, admin, error_data("InvalidOrder(bytes32)", ["bytes32"], [oid]))
    # A larger amount is fine: the excess is releasable at once.
    mk.lock(alice, oid, slot, 5_000, LIMIT, amount=required + 7)
    assert mk.escrow(oid)["releasable"] == 7


@pytest.mark.usefixtures("funded")
def test_lock_escrow_directly_with_approve(
    mk: Market, alice: LocalAccount, bob: LocalAccount, slot: int
) -> None:
    w3, coin = mk.w3, mk.coin
    oid = order_id("direct")
    amount = escrow_amount(2_000, LIMIT)
    send(w3, coin.functions.approve(mk.market.address, amount), alice)
    receipt = send(w3, mk.f.lockEscrowDirect(oid, slot, 2_000, LIMIT, amount), alice)
    mk.orders.append(oid)
    mk.accounts.add(alice.address)
    assert events(mk.market, "EscrowLocked", receipt)[0]["args"]["buyer"] == alice.address
    assert mk.escrow(oid)["available"] == amount
    send(w3, coin.functions.approve(mk.market.address, amount), bob)
    again = mk.f.lockEscrowDirect(oid, slot, 2_000, LIMIT, amount)
    assert_reverts(w3, again, bob, error_data("OrderExists(bytes32)", ["bytes32"], [oid]))
    # Without an allowance the coin refuses.
    other = mk.f.lockEscrowDirect(order_id("other"), slot, 2_000, LIMIT, amount * 2)
    assert_reverts(w3, other, alice, "KIP7: insufficient allowance")
    mk.check()


# --- trades ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("funded")
def test_record_trades_partial_fills_and_price_differences(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int
) -> None:
    a, b = order_id("a"), order_id("b")
    mk.lock(alice, a, slot, 5_000, LIMIT)
    mk.lock(bob, b, slot, 1_000, LIMIT)
    seller2 = Account.create().address
    recorded = mk.record(
        [
            mk.trade("1", a, carol.address, slot, 2_000, PRICE),
            mk.trade("2", b, seller2, slot, 1_000, LIMIT),
            mk.trade("3", a, seller2, slot, 1_000, 170 * 10**15),
        ]
    )
    assert [r.trade_no for r in recorded] == [0, 1, 2]
    assert (mk.f.tradeCount().call(), mk.f.batchCount().call()) == (3, 1)
    ea = mk.escrow(a)
    assert ea["open_wh"] == 2_000 and ea["fills"] == 2
    assert ea["available"] == escrow_amount(5_000, LIMIT) - trade_value(2_000, PRICE) - trade_value(
        1_000, 170 * 10**15
    )
    # Fills below the limit: the differences are the buyer's at once (releasable); the open part stays covered.
    assert ea["releasable"] == 2_000 * (LIMIT - PRICE) // 1000 + 1_000 * (LIMIT - 170 * 10**15) // 1000
    eb = mk.escrow(b)
    assert (eb["open_wh"], eb["available"], eb["releasable"]) == (0, 0, 0)
    # The remaining open quantity can still be filled, in a later batch, exactly to the end.
    more = mk.record([mk.trade("4", a, carol.address, slot, 2_000, LIMIT)])
    assert more[0].trade_no == 3 and more[0].batch_no == 1
    assert mk.escrow(a)["open_wh"] == 0
    for r in mk.recorded:
        assert process_proof(r.leaf, r.proof()) == mk.f.batchRoot(r.batch_no).call()


@pytest.mark.usefixtures("funded")
def test_escrow_is_locked_with_the_trades_that_use_it_in_one_batch(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int
) -> None:
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    a, b, c = order_id("la"), order_id("lb"), order_id("lc")
    lock_a, lock_b = mk.lock_args(alice, a, slot, 3_000), mk.lock_args(bob, b, slot, 1_000)
    mk.lock_args(carol, c, slot, 1_000)  # carol signed too, but her order never matches: never sent
    before = coin.functions.balanceOf(carol.address).call()
    trades = [
        mk.trade("l1", a, carol.address, slot, 1_000, PRICE),
        mk.trade("l2", b, carol.address, slot, 1_000, LIMIT),
        mk.trade("l3", a, bob.address, slot, 500, PRICE),
    ]
    # all or nothing: a forged authorisation in the batch records nothing and locks nothing
    forged = (*lock_b[:2], lock_b[2] + 1, *lock_b[3:])  # another amount than bob signed
    assert_reverts(
        w3,
        mk.f.lockAndRecordTrades([lock_a, forged], [t.as_tuple() for t in trades]),
        admin,
        "KIP7TransferAuthorization: invalid signature",
    )
    assert_reverts(
        w3,
        mk.f.lockAndRecordTrades([lock_a, lock_b], [t.as_tuple() for t in trades]),
        bob,
        "AccessControl: account",
    )
    assert mk.escrow(a)["buyer"] == "0x" + "00" * 20 and mk.f.tradeCount().call() == 0
    d = order_id("ld")  # bob's second order, filled in full below its limit in the same batch
    lock_d = mk.lock_args(bob, d, slot, 1_000)
    trades.append(mk.trade("l6", d, carol.address, slot, 1_000, PRICE))
    bob_before = coin.functions.balanceOf(bob.address).call()
    receipt = mk.lock_and_record([lock_a, lock_b, lock_d], trades)
    assert [e["args"]["orderId"] for e in events(mk.market, "EscrowLocked", receipt)] == [a, b, d]
    (batch,) = events(mk.market, "BatchRecorded", receipt)
    assert (batch["args"]["firstTradeNo"], batch["args"]["count"]) == (0, 4)
    # d's price difference went back at once; b was filled at its limit (nothing left), a is still open
    (released,) = events(mk.market, "EscrowReleased", receipt)
    difference = escrow_amount(1_000, LIMIT) - trade_value(1_000, PRICE)
    assert (released["args"]["orderId"], released["args"]["amount"]) == (d, difference)
    assert mk.escrow(d)["available"] == 0
    assert (
        coin.functions.balanceOf(bob.address).call()
        == bob_before - escrow_amount(1_000, LIMIT) - escrow_amount(1_000, LIMIT) + difference
    )
    ea = mk.escrow(a)
    assert (ea["open_wh"], ea["fills"]) == (1_500, 2)
    assert ea["available"] == escrow_amount(3_000, LIMIT) - trade_value(1_500, PRICE)
    assert mk.escrow(b)["open_wh"] == 0 and mk.escrow(c)["buyer"] == "0x" + "00" * 20
    assert coin.functions.balanceOf(carol.address).call() == before  # carol's unmatched order cost nothing
    # a lock is used once: the same authorisation in a later batch reverts (a is stored: OrderExists; b ended
    # in its batch and was not stored: the coin refuses the used authorisation)
    assert_reverts(
        w3,
        mk.f.lockAndRecordTrades([lock_a], [mk.trade("l4", a, carol.address, slot, 100).as_tuple()]),
        admin,
        error_data("OrderExists(bytes32)", ["bytes32"], [a]),
    )
    mk.fills[a] -= 1
    assert_reverts(
        w3,
        mk.f.lockAndRecordTrades([lock_b], [mk.trade("l4", a, carol.address, slot, 100).as_tuple()]),
        admin,
        "KIP7TransferAuthorization: authorization is used or canceled",
    )
    mk.fills[a] -= 1  # the reverted trade took no fill number
    # later fills of a locked order need no lock
    mk.lock_and_record([], [mk.trade("l5", a, carol.address, slot, 1_500, PRICE)])
    assert mk.escrow(a)["open_wh"] == 0
    mk.check()


@pytest.mark.usefixtures("funded")
def test_a_batch_closes_the_orders_that_can_match_no_more(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int
) -> None:
    """`lockRecordAndClose`: the call auction's orders expire at it, so the recording batch also closes them
    and sends each buyer what its order does not owe to the trades; no release transaction follows."""
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    a, b, c = order_id("ca"), order_id("cb"), order_id("cc")
    lock_a, lock_b = mk.lock_args(alice, a, slot, 3_000), mk.lock_args(bob, b, slot, 1_000)
    mk.lock_and_record([mk.lock_args(bob, c, slot, 2_000)], [mk.trade("c0", c, carol.address, slot, 500)])
    alice_before = coin.functions.balanceOf(alice.address).call()
    bob_before = coin.functions.balanceOf(bob.address).call()
    trades = [
        mk.trade("c1", a, carol.address, slot, 1_000, PRICE),
        mk.trade("c2", b, carol.address, slot, 1_000, PRICE),  # filled in full below its limit
        mk.trade("c3", c, carol.address, slot, 500, PRICE),  # c was locked by the earlier batch
    ]
    # only the operator; an order never locked cannot be closed (all or nothing)
    args = [[lock_a, lock_b], [t.as_tuple() for t in trades], [a, b, c]]
    assert_reverts(w3, mk.f.lockRecordAndClose(*args), bob, "AccessControl: account")
    unknown = order_id("never locked")
    assert_reverts(
        w3,
        mk.f.lockRecordAndClose(args[0], args[1], [a, unknown]),
        admin,
        error_data("UnknownOrder(bytes32)", ["bytes32"], [unknown]),
    )
    receipt = send(w3, mk.f.lockRecordAndClose(*args), admin)
    mk.orders.extend([a, b])
    mk.accounts.update({alice.address, bob.address})
    recorded = mk._recorded(receipt, trades, {a: alice.address, b: bob.address})
    assert [r.buyer for r in recorded] == [alice.address, bob.address, ZERO_ADDRESS]  # c's escrow names bob
    released = {e["args"]["orderId"]: e["args"] for e in events(mk.market, "EscrowReleased", receipt)}
    assert set(released) == {a, b, c}
    assert released[a]["cancelledWh"] == 2_000 and released[c]["cancelledWh"] == 1_000
    assert released[b]["amount"] == escrow_amount(1_000, LIMIT) - trade_value(1_000, PRICE)
    for oid in (a, b, c):
        e = mk.escrow(oid)
        assert (e["open_wh"], e["available"]) == (0, 0)
    # each buyer paid exactly its trades' values in this batch
    assert coin.functions.balanceOf(alice.address).call() == alice_before - trade_value(1_000, PRICE)
    assert coin.functions.balanceOf(bob.address).call() == (
        bob_before - trade_value(1_000, PRICE) + escrow_amount(2_000, LIMIT) - 2 * trade_value(500, PRICE)
    )
    # closed orders take no more fills (a keeps no escrow word: to recording it is unknown)
    late = mk.trade("c4", a, carol.address, slot, 1)
    assert_reverts(
        w3,
        mk.f.recordTrades([late.as_tuple()]),
        admin,
        error_data("UnknownOrder(bytes32)", ["bytes32"], [a]),
    )
    mk.fills[a] -= 1
    # a and b were locked and closed in this batch: nothing of them was stored (their buyers are in their
    # trades' leaves); to releases and refunds they are unknown, and the coin refuses the same lock again
    assert mk.escrow(a) == mk.escrow(order_id("none")) and mk.escrow(b) == mk.escrow(order_id("none"))
    assert mk.escrow(c)["slot"] == slot  # c was stored by its earlier batch
    unknown_a = error_data("UnknownOrder(bytes32)", ["bytes32"], [a])
    assert_reverts(w3, mk.f.releaseEscrows([c, a]), admin, unknown_a)
    assert_reverts(
        w3,
        mk.f.lockAndRecordTrades([lock_a], [mk.trade("c5", c, carol.address, slot, 1).as_tuple()]),
        admin,
        "KIP7TransferAuthorization: authorization is used or canceled",
    )
    # settlement refunds a shortfall to the buyer in the leaf (a: nothing stored) or in the escrow (c)
    root = mk.anchor(slot)
    forged = list(recorded[0].settlement(0))
    forged[8] = carol.address
    assert_reverts(
        w3,
        mk.f.settleTrades(slot, root, [tuple(forged)]),
        admin,
        error_data("InvalidProof(uint256)", ["uint256"], [recorded[0].trade_no]),
    )
    send(w3, mk.f.settleTrades(slot, root, [recorded[0].settlement(0), recorded[2].settlement(0)]), admin)
    assert mk.balance(alice.address) == recorded[0].value and mk.balance(bob.address) == recorded[2].value
    advance_to(w3, slot + REFUND_TIMEOUT)
    assert_reverts(w3, mk.f.refundExpired(a), alice, unknown_a)
    # and a refund after the timeout pays the leaf's buyer
    bob_wallet = coin.functions.balanceOf(bob.address).call()
    send(w3, mk.f.refundTrade(recorded[1].trade_proof()), carol)
    assert coin.functions.balanceOf(bob.address).call() == bob_wallet + recorded[1].value
    mk.fills[c] -= 1
    mk.check()


@pytest.mark.usefixtures("funded")
def test_record_trades_checks_each_trade(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int
) -> None:
    w3, admin = mk.w3, mk.operator
    a = order_id("a")
    mk.lock(alice, a, slot, 5_000, LIMIT)
    seller = carol.address

    def t(fill: int = 0, **kw: Any) -> TradeIn:
        base: dict[str, Any] = {
            "trade_id": keccak(text="t"),
            "buy_order_id": a,
            "fill": fill,
            "seller": seller,
            "slot_start": slot,
            "quantity_wh": 1_000,
            "price": PRICE,
            "orders_hash": keccak(text="h"),
        }
        base.update(kw)
        return TradeIn(**base)

    def rejects(trades: list[TradeIn], reason: str, sender: LocalAccount = admin) -> None:
        assert_reverts(w3, mk.f.recordTrades([x.as_tuple() for x in trades]), sender, reason)

    rejects(
        [t(price=LIMIT + 1)],
        error_data(
            "PriceAboveLimit(bytes32,uint256,uint256)",
            ["bytes32", "uint256", "uint256"],
            [a, LIMIT, LIMIT + 1],
        ),
    )
    rejects(
        [t(quantity_wh=5_001)],
        error_data(
            "QuantityExceedsOpen(bytes32,uint256,uint256)",
            ["bytes32", "uint256", "uint256"],
            [a, 5_000, 5_001],
        ),
    )
    rejects(
        [t(slot_start=slot + SLOT_SECONDS)],
        error_data(
            "SlotMismatch(bytes32,uint64,uint64)",
            ["bytes32", "uint64", "uint64"],
            [a, slot, slot + SLOT_SECONDS],
        ),
    )
    rejects(
        [t(fill=1)],
        error_data("FillOutOfOrder(bytes32,uint256,uint256)", ["bytes32", "uint256", "uint256"], [a, 0, 1]),
    )
    unknown = order_id("nope")
    rejects([t(buy_order_id=unknown)], error_data("UnknownOrder(bytes32)", ["bytes32"], [unknown]))
    rejects([t(quantity_wh=0)], error_data("InvalidTrade(bytes32)", ["bytes32"], [keccak(text="t")]))
    rejects(
        [t(seller="0x" + "00" * 20)], error_data("InvalidTrade(bytes32)", ["bytes32"], [keccak(text="t")])
    )
    rejects([], error_data("EmptyBatch()"))
    role = mk.f.OPERATOR_ROLE().call()
    rejects([t()], f"AccessControl: account {bob.address.lower()} is missing role 0x{role.hex()}", bob)
    # All or nothing: a good trade followed by a bad one records nothing.
    rejects(
        [t(), t(fill=1, price=LIMIT + 1)], "0x" + selector("PriceAboveLimit(bytes32,uint256,uint256)").hex()
    )
    assert mk.escrow(a)["fills"] == 0 and mk.f.tradeCount().call() == 0

    # A trade is recorded once: its (order, fill) slot is used, so the same trade (or batch) again fails.
    first = t()
    mk.record([first])
    mk.fills[a] = 1
    rejects(
        [first],
        error_data("FillOutOfOrder(bytes32,uint256,uint256)", ["bytes32", "uint256", "uint256"], [a, 1, 0]),
    )
    # Two fills of one order in one batch are fine when numbered in order.
    mk.record(
        [t(fill=1, trade_id=keccak(text="t2")), t(fill=2, trade_id=keccak(text="t3"), quantity_wh=3_000)]
    )
    assert mk.escrow(a)["open_wh"] == 0
    rejects(
        [t(fill=3)],
        error_data(
            "QuantityExceedsOpen(bytes32,uint256,uint256)", ["bytes32", "uint256", "uint256"], [a, 0, 1_000]
        ),
    )


@pytest.mark.usefixtures("funded")
def test_release_escrow_cancels_and_returns_what_is_not_needed(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int
) -> None:
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    a = order_id("a")
    mk.lock(alice, a, slot, 5_000, LIMIT)
    mk.record([mk.trade("1", a, carol.address, slot, 2_000, PRICE)])
    difference = trade_value(2_000, LIMIT) - trade_value(2_000, PRICE)
    before = coin.functions.balanceOf(alice.address).call()

    # The buyer takes the price difference out at once; it may not cancel open quantity.
    assert_reverts(
        w3,
        mk.f.releaseEscrow(a, 1),
        alice,
        error_data("NotAllowed(bytes32,address)", ["bytes32", "address"], [a, alice.address]),
    )
    assert_reverts(
        w3,
        mk.f.releaseEscrow(a, 0),
        bob,
        error_data("NotAllowed(bytes32,address)", ["bytes32", "address"], [a, bob.address]),
    )
    receipt = send(w3, mk.f.releaseEscrow(a, 0), alice)
    assert events(mk.market, "EscrowReleased", receipt)[0]["args"]["amount"] == difference
    assert coin.functions.balanceOf(alice.address).call() == before + difference
    mk.check()

    # The operator cancels 1,000 Wh of the 3,000 still open, then (gate closure) the rest; retries are harmless.
    send(w3, mk.f.releaseEscrow(a, 1_000), admin)
    assert mk.escrow(a)["open_wh"] == 2_000
    assert mk.escrow(a)["available"] == escrow_amount(2_000, LIMIT)
    assert_reverts(w3, mk.f.releaseEscrows([a]), alice, "is missing role")
    receipt = send(w3, mk.f.releaseEscrows([a]), admin)
    (event,) = events(mk.market, "EscrowReleased", receipt)
    assert (event["args"]["cancelledWh"], event["args"]["amount"]) == (2_000, escrow_amount(2_000, LIMIT))
    receipt = send(w3, mk.f.releaseEscrows([a]), admin)
    assert events(mk.market, "EscrowReleased", receipt)[0]["args"]["amount"] == 0
    e = mk.escrow(a)
    assert (e["open_wh"], e["available"]) == (0, 0)
    # Everything but the recorded trade's value is back with alice.
    assert coin.functions.balanceOf(alice.address).call() == 1_000 * COIN - trade_value(2_000, PRICE)
    unknown = order_id("nope")
    assert_reverts(
        w3, mk.f.releaseEscrow(unknown, 0), admin, error_data("UnknownOrder(bytes32)", ["bytes32"], [unknown])
    )
    mk.check()


# --- settlement -----------------------------------------------------------------------------------------


@pytest.fixture
def two_trades(
    mk: Market, funded: None, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int
) -> list[Recorded]:
    """alice buys 2,000 Wh from carol at PRICE (order limit LIMIT); bob buys 1,000 Wh from a new seller at LIMIT."""
    a, b = order_id("a"), order_id("b")
    mk.lock(alice, a, slot, 2_000, LIMIT)
    mk.lock(bob, b, slot, 1_000, LIMIT)
    return mk.record(
        [
            mk.trade("1", a, carol.address, slot, 2_000, PRICE),
            mk.trade("2", b, Account.create().address, slot, 1_000, LIMIT),
        ]
    )


def test_settlement_against_the_anchored_root_full_delivery(
    mk: Market, alice: LocalAccount, carol: LocalAccount, slot: int, two_trades: list[Recorded]
) -> None:
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    t1, t2 = two_trades
    root = mk.anchor(slot)
    receipt = send(w3, mk.f.settleTrades(slot, root, [t1.settlement(2_000), t2.settlement(1_000)]), admin)
    settled = events(mk.market, "TradeSettled", receipt)
    assert [
        (e["args"]["tradeNo"], e["args"]["toSeller"], e["args"]["toBuyer"], e["args"]["penalty"])
        for e in settled
    ] == [
        (t1.trade_no, t1.value, 0, 0),
        (t2.trade_no, t2.value, 0, 0),
    ]
    (slot_event,) = events(mk.market, "SlotSettled", receipt)
    assert slot_event["args"] == {"slotStart": slot, "ledgerRoot": root, "settled": 2}
    # Full delivery: the buyers get nothing from settlement (alice's price difference is still in her order).
    assert mk.balance(alice.address) == 0
    difference = trade_value(2_000, LIMIT) - trade_value(2_000, PRICE)
    assert mk.escrow(order_id("a"))["releasable"] == difference
    assert mk.balance(carol.address) == t1.value
    assert mk.balance(t2.trade.seller) == t2.value
    assert mk.f.isTradeClosed(t1.trade_no).call() and mk.f.isTradeClosed(t2.trade_no).call()
    mk.check()

    # Pull (the seller) and push (the operator, gas-free for the account).
    before = coin.functions.balanceOf(carol.address).call()
    send(w3, mk.f.withdraw(), carol)
    assert coin.functions.balanceOf(carol.address).call() == before + t1.value
    assert_reverts(
        w3, mk.f.withdraw(), carol, error_data("NothingToWithdraw(address)", ["address"], [carol.address])
    )
    assert_reverts(w3, mk.f.withdrawFor(alice.address), alice, "is missing role")
    send(w3, mk.f.withdrawForBatch([alice.address, t2.trade.seller, carol.address]), admin)
    assert coin.functions.balanceOf(t2.trade.seller).call() == t2.value
    # Gate closure (here late): the price difference goes home; the contract then holds nothing.
    before = coin.functions.balanceOf(alice.address).call()
    send(w3, mk.f.releaseEscrows([order_id("a"), order_id("b")]), admin)
    assert coin.functions.balanceOf(alice.address).call() == before + difference
    assert coin.functions.balanceOf(mk.market.address).call() == 0
    mk.check()

    # carol sells again after withdrawing: credited and withdrawn like the first time.
    c = order_id("c")
    mk.lock(alice, c, slot, 1_000, LIMIT)
    (t3,) = mk.record([mk.trade("3", c, carol.address, slot, 1_000, PRICE)])
    send(w3, mk.f.settleTrades(slot, root, [t3.settlement(1_000)]), admin)
    assert mk.balance(carol.address) == t3.value
    send(w3, mk.f.withdraw(), carol)
    assert mk.balance(carol.address) == 0
    mk.check()


def test_settlement_shortfall_pays_a_penalty_to_the_buyer(
    mk: Market,
    alice: LocalAccount,
    bob: LocalAccount,
    carol: LocalAccount,
    slot: int,
    two_trades: list[Recorded],
) -> None:
    w3, admin = mk.w3, mk.operator
    t1, t2 = two_trades
    root = mk.anchor(slot)
    receipt = send(w3, mk.f.settleTrades(slot, root, [t1.settlement(1_234), t2.settlement(0)]), admin)
    e1, e2 = events(mk.market, "TradeSettled", receipt)
    seller1, buyer1, penalty1 = settlement_amounts(2_000, PRICE, 1_234)
    assert penalty1 == (t1.value - trade_value(1_234, PRICE)) * PENALTY_BPS // 10_000 > 0
    assert (e1["args"]["toSeller"], e1["args"]["toBuyer"], e1["args"]["penalty"]) == (
        seller1,
        buyer1,
        penalty1,
    )
    # Nothing delivered: the seller earned nothing, so it can pay no penalty (no collateral); all back to bob.
    assert (
        e2["args"]["deliveredWh"],
        e2["args"]["toSeller"],
        e2["args"]["toBuyer"],
        e2["args"]["penalty"],
    ) == (0, 0, t2.value, 0)
    assert mk.balance(carol.address) == seller1
    assert mk.balance(alice.address) == buyer1
    assert mk.balance(bob.address) == t2.value
    mk.check()


def test_settlement_is_idempotent_per_trade(
    mk: Market, carol: LocalAccount, slot: int, two_trades: list[Recorded]
) -> None:
    w3, admin = mk.w3, mk.operator
    t1, t2 = two_trades
    root = mk.anchor(slot)
    send(w3, mk.f.settleTrades(slot, root, [t1.settlement(2_000)]), admin)
    balance = mk.balance(carol.address)
    # The retried batch (a crash after sending) settles only what is left, and says nothing about the rest.
    batch = mk.f.settleTrades(slot, root, [t1.settlement(2_000), t2.settlement(1_000)])
    assert batch.call({"from": admin.address}) == 1
    receipt = send(w3, batch, admin)
    assert [e["args"]["tradeNo"] for e in events(mk.market, "TradeSettled", receipt)] == [t2.trade_no]
    receipt = send(w3, batch, admin)
    assert events(mk.market, "TradeSettled", receipt) == []
    assert events(mk.market, "SlotSettled", receipt) == []
    # Even other delivered numbers cannot settle a closed trade twice.
    send(w3, mk.f.settleTrades(slot, root, [t1.settlement(0)]), admin)
    assert mk.balance(carol.address) == balance
    mk.check()


def test_settlement_checks(mk: Market, bob: LocalAccount, slot: int, two_trades: list[Recorded]) -> None:
    w3, admin = mk.w3, mk.operator
    t1, _ = two_trades
    root = keccak(text="ledger root")

    def rejects(fn: ContractFunction, reason: str, sender: LocalAccount = admin) -> None:
        assert_reverts(w3, fn, sender, reason)

    rejects(
        mk.f.settleTrades(slot, root, [t1.settlement(2_000)]),
        error_data("SlotNotAnchored(uint64)", ["uint64"], [slot]),
    )
    mk.anchor(slot, root)
    other = keccak(text="other")
    rejects(
        mk.f.settleTrades(slot, other, [t1.settlement(2_000)]),
        error_data(
            "LedgerRootMismatch(uint64,bytes32,bytes32)",
            ["uint64", "bytes32", "bytes32"],
            [slot, root, other],
        ),
    )
    rejects(
        mk.f.settleTrades(slot, root, [t1.settlement(2_001)]),
        error_data(
            "DeliveredExceedsQuantity(uint256,uint256,uint256)", ["uint256"] * 3, [t1.trade_no, 2_000, 2_001]
        ),
    )
    tampered = list(t1.settlement(2_000))
    tampered[6] = PRICE + 1  # a better price for the seller than the one recorded
    rejects(
        mk.f.settleTrades(slot, root, [tuple(tampered)]),
        error_data("InvalidProof(uint256)", ["uint256"], [t1.trade_no]),
    )
    tampered = list(t1.settlement(0))
    tampered[8] = bob.address  # the shortfall refund to someone else than the order's buyer
    rejects(
        mk.f.settleTrades(slot, root, [tuple(tampered)]),
        error_data("InvalidProof(uint256)", ["uint256"], [t1.trade_no]),
    )
    tampered = list(t1.settlement(2_000))
    tampered[9] = 5  # no such batch
    rejects(
        mk.f.settleTrades(slot, root, [tuple(tampered)]),
        error_data("UnknownBatch(uint256)", ["uint256"], [5]),
    )
    # A trade of this slot presented as another slot's (whose root is anchored too).
    later = slot + SLOT_SECONDS
    mk.anchor(later, root)
    rejects(
        mk.f.settleTrades(later, root, [t1.settlement(2_000)]),
        error_data(
            "SlotMismatch(bytes32,uint64,uint64)",
            ["bytes32", "uint64", "uint64"],
            [t1.trade.buy_order_id, later, slot],
        ),
    )
    rejects(mk.f.settleTrades(slot, root, []), error_data("EmptyBatch()"))
    rejects(mk.f.settleTrades(slot, root, [t1.settlement(2_000)]), "is missing role", bob)
    assert not mk.f.isTradeClosed(t1.trade_no).call()
    mk.check()


def batch_settlement(batch: list[Recorded], delivered: dict[int, int]) -> tuple[Any, ...]:
    """`settleBatches`' input for one recorded batch: the trades at the indexes in `delivered` (index ->
    delivered Wh) as calldata, the others as their leaves."""
    first = batch[0].trade_no
    leaves = [b"\0" * 32 if i in delivered else r.leaf for i, r in enumerate(batch)]
    rows = [
        (
            i,
            r.trade.trade_id,
            r.trade.buy_order_id,
            r.trade.seller,
            r.trade.quantity_wh,
            r.trade.price,
            r.trade.orders_hash,
            r.buyer,
            d,
        )
        for i, d in sorted(delivered.items())
        for r in [batch[i]]
    ]
    return (batch[0].batch_no, first, leaves, rows)


@pytest.mark.usefixtures("funded")
def test_settle_batches_checks_each_batch_root_once(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int
) -> None:
    """`settleBatches`: trades as calldata, the batch's other trades as leaves, no proofs; the same payouts
    as `settleTrades`; idempotent; every forgery changes the root."""
    w3, admin = mk.w3, mk.operator
    a, b, c = order_id("sa"), order_id("sb"), order_id("sc")
    mk.lock(alice, a, slot, 3_000, LIMIT)  # stored: zero buyer in the leaf
    mk.lock_and_record(  # b locked in the batch: bob in the leaf
        [mk.lock_args(bob, b, slot, 1_000)],
        [
            mk.trade("s1", a, carol.address, slot, 2_000, PRICE),
            mk.trade("s2", b, carol.address, slot, 1_000, PRICE),
            mk.trade("s3", a, bob.address, slot, 1_000, PRICE),
        ],
    )
    batch = mk.recorded[-3:]
    other = slot + SLOT_SECONDS
    mk.lock(alice, c, other, 1_000, LIMIT)
    (late,) = mk.record([mk.trade("s4", c, carol.address, other, 1_000, PRICE)])
    root = mk.anchor(slot)
    mk.anchor(other, root)

    def rejects(items: list[tuple[Any, ...]], reason: str, s: int = slot) -> None:
        assert_reverts(w3, mk.f.settleBatches(s, root, items), admin, reason)

    invalid = error_data("InvalidBatch(uint256)", ["uint256"], [batch[0].batch_no])
    good = batch_settlement(batch, {0: 2_000, 1: 500})
    rows = [list(r) for r in good[3]]
    rows[0][5] = PRICE + 1  # a better price than recorded
    rejects([(*good[:3], [tuple(r) for r in rows])], invalid)
    rows = [list(r) for r in good[3]]
    rows[1][7] = alice.address  # the shortfall refund to another buyer
    rejects([(*good[:3], [tuple(r) for r in rows])], invalid)
    rejects([(good[0], good[1] + 1, good[2], good[3])], invalid)  # another first trade number
    rejects([(*good[:3], [good[3][1], good[3][0]])], invalid)  # indexes not increasing
    rejects([(*good[:3], [good[3][0], good[3][0]])], invalid)  # the same trade twice
    rejects([(*good[:3], [(5, *good[3][0][1:])])], invalid)  # beyond the batch
    rejects(
        [good], error_data("InvalidBatch(uint256)", ["uint256"], [batch[0].batch_no]), other
    )  # other slot
    rejects(
        [batch_settlement([late], {0: 1_000})],
        error_data("InvalidBatch(uint256)", ["uint256"], [late.batch_no]),
    )
    over = batch_settlement(batch, {2: 1_001})
    rejects(
        [over],
        error_data(
            "DeliveredExceedsQuantity(uint256,uint256,uint256)",
            ["uint256", "uint256", "uint256"],
            [batch[2].trade_no, 1_000, 1_001],
        ),
    )
    rejects([(9, 0, [b"\1" * 32], [])], error_data("UnknownBatch(uint256)", ["uint256"], [9]))
    assert_reverts(w3, mk.f.settleBatches(slot, root, [good]), bob, "AccessControl: account")
    unanchored = slot + 2 * SLOT_SECONDS
    assert_reverts(
        w3,
        mk.f.settleBatches(unanchored, root, [good]),
        admin,
        error_data("SlotNotAnchored(uint64)", ["uint64"], [unanchored]),
    )

    receipt = send(w3, mk.f.settleBatches(slot, root, [good]), admin)
    assert events(mk.market, "TradeSettled", receipt) == []  # the deliveries are in the calldata
    (slot_event,) = events(mk.market, "SlotSettled", receipt)
    assert slot_event["args"]["settled"] == 2
    to_seller, to_buyer, _ = settlement_amounts(1_000, PRICE, 500)
    assert mk.balance(carol.address) == batch[0].value + to_seller
    assert mk.balance(bob.address) == to_buyer  # the leaf's buyer
    assert [mk.f.isTradeClosed(r.trade_no).call() for r in batch] == [True, True, False]
    mk.check()
    # again, with the third trade: the first two are skipped, alice (stored escrow) gets the shortfall
    again = batch_settlement(batch, {0: 2_000, 1: 500, 2: 0})
    assert mk.f.settleBatches(slot, root, [again]).call({"from": admin.address}) == 1
    send(w3, mk.f.settleBatches(slot, root, [again]), admin)
    assert (
        mk.balance(alice.address) == batch[2].value
        and mk.balance(carol.address) == batch[0].value + to_seller
    )
    assert mk.f.settleBatches(slot, root, [again]).call({"from": admin.address}) == 0
    # the other slot's trade, by an admin decision
    decision = keccak(text="as contracted")
    receipt = send(
        w3, mk.f.settleBatchesByDecision(other, decision, [batch_settlement([late], {0: 1_000})]), admin
    )
    (decided,) = events(mk.market, "SlotSettledByDecision", receipt)
    assert decided["args"]["settled"] == 1
    mk.check()


def test_settlement_by_admin_decision(
    mk: Market, carol: LocalAccount, slot: int, two_trades: list[Recorded]
) -> None:
    w3, admin = mk.w3, mk.operator
    t1, t2 = two_trades
    decision = keccak(text="admin decision 42: as contracted, meter data incomplete")
    assert_reverts(
        w3,
        mk.f.settleTradesByDecision(slot, b"\x00" * 32, [t1.settlement(2_000)]),
        admin,
        error_data("EmptyDecision()"),
    )
    receipt = send(
        w3, mk.f.settleTradesByDecision(slot, decision, [t1.settlement(2_000), t2.settlement(1_000)]), admin
    )
    (event,) = events(mk.market, "SlotSettledByDecision", receipt)
    assert event["args"] == {"slotStart": slot, "decisionHash": decision, "settled": 2}
    assert mk.balance(carol.address) == t1.value
    mk.check()


# --- refunds after the timeout --------------------------------------------------------------------------


def test_buyer_refunds_escrow_and_trades_after_the_timeout_only(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int, funded: None
) -> None:
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    a = order_id("a")
    mk.lock(alice, a, slot, 5_000, LIMIT)
    t1, t2 = mk.record(
        [
            mk.trade("1", a, carol.address, slot, 1_000, PRICE),
            mk.trade("2", a, bob.address, slot, 1_000, PRICE),
        ]
    )
    available_at = slot + REFUND_TIMEOUT
    too_early = error_data("RefundNotYetAvailable(uint256)", ["uint256"], [available_at])
    assert_reverts(w3, mk.f.refundExpired(a), alice, too_early)
    assert_reverts(w3, mk.f.refundTrade(t1.trade_proof()), alice, too_early)
    advance_to(w3, available_at - 2)
    assert_reverts(w3, mk.f.refundExpired(a), alice, too_early)  # mined at available_at - 1

    # The platform is gone: the buyer takes everything back itself, paying its own gas.
    advance_to(w3, available_at)
    receipt = send(w3, mk.f.refundExpired(a), alice)
    assert (
        events(mk.market, "EscrowRefunded", receipt)[0]["args"]["amount"]
        == escrow_amount(5_000, LIMIT) - 2 * t1.value
    )
    assert_reverts(w3, mk.f.refundExpired(a), alice, error_data("NothingToRefund(bytes32)", ["bytes32"], [a]))
    receipt = send(w3, mk.f.refundTrade(t1.trade_proof()), alice)
    assert events(mk.market, "TradeRefunded", receipt)[0]["args"]["amount"] == t1.value
    assert_reverts(
        w3,
        mk.f.refundTrade(t1.trade_proof()),
        alice,
        error_data("TradeClosed(uint256)", ["uint256"], [t1.trade_no]),
    )
    forged = list(t2.trade_proof())
    forged[5] = 3_000  # claim a bigger trade than recorded
    assert_reverts(
        w3,
        mk.f.refundTrade(tuple(forged)),
        bob,
        error_data("InvalidProof(uint256)", ["uint256"], [t2.trade_no]),
    )
    mk.check()

    # Anyone may trigger a refund; the coins always go to the buyer. A late settlement skips refunded trades.
    send(w3, mk.f.refundTrade(t2.trade_proof()), bob)
    assert coin.functions.balanceOf(alice.address).call() == 1_000 * COIN
    mk.anchor(slot)
    assert (
        mk.f.settleTrades(slot, b"\x11" * 32, [t1.settlement(1_000), t2.settlement(1_000)]).call(
            {"from": admin.address}
        )
        == 0
    )
    mk.check()


def test_a_settled_trade_cannot_be_refunded(
    mk: Market, alice: LocalAccount, slot: int, two_trades: list[Recorded]
) -> None:
    w3, admin = mk.w3, mk.operator
    t1, _ = two_trades
    send(w3, mk.f.settleTrades(slot, mk.anchor(slot), [t1.settlement(2_000)]), admin)
    advance_to(w3, slot + REFUND_TIMEOUT)
    assert_reverts(
        w3,
        mk.f.refundTrade(t1.trade_proof()),
        alice,
        error_data("TradeClosed(uint256)", ["uint256"], [t1.trade_no]),
    )
    mk.check()


# --- pausing --------------------------------------------------------------------------------------------


def test_pause_stops_new_business_but_never_refunds_or_withdrawals(
    mk: Market,
    alice: LocalAccount,
    bob: LocalAccount,
    carol: LocalAccount,
    slot: int,
    two_trades: list[Recorded],
) -> None:
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    t1, t2 = two_trades
    root = mk.anchor(slot)
    send(w3, mk.f.settleTrades(slot, root, [t1.settlement(1_000)]), admin)  # a shortfall: alice is owed
    assert_reverts(w3, mk.f.pause(), bob, "is missing role")
    send(w3, mk.f.pause(), admin)
    paused = "Pausable: paused"
    c = order_id("c")
    assert_reverts(w3, mk.lock_call(alice, c, slot, 1_000, LIMIT), admin, paused)
    send(w3, coin.functions.approve(mk.market.address, COIN), alice)
    assert_reverts(w3, mk.f.lockEscrowDirect(c, slot, 1_000, LIMIT, COIN), alice, paused)
    assert_reverts(
        w3,
        mk.f.recordTrades([mk.trade("x", order_id("a"), carol.address, slot, 1).as_tuple()]),
        admin,
        paused,
    )
    assert_reverts(w3, mk.f.settleTrades(slot, root, [t2.settlement(1_000)]), admin, paused)
    assert_reverts(w3, mk.f.settleTradesByDecision(slot, root, [t2.settlement(1_000)]), admin, paused)
    # Money always goes home: withdrawals, releases and timeout refunds work while paused.
    send(w3, mk.f.withdraw(), carol)
    send(w3, mk.f.withdrawFor(alice.address), admin)
    send(w3, mk.f.releaseEscrow(order_id("a"), 0), admin)
    advance_to(w3, slot + REFUND_TIMEOUT)
    send(w3, mk.f.refundTrade(t2.trade_proof()), bob)
    mk.check()
    send(w3, mk.f.unpause(), admin)
    mk.lock(alice, c, slot, 1_000, LIMIT)


# --- gas ------------------------------------------------------------------------------------------------


def test_recording_costs_under_a_third_of_a_transfer_per_trade(
    mk: Market, alice: LocalAccount, bob: LocalAccount, slot: int
) -> None:
    """100 trades, each with its own buy order (the worst case: one cold escrow per trade)."""
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    n = 100
    quantity = 3_000
    send(w3, coin.functions.mint(alice.address, n * escrow_amount(quantity, LIMIT) + 2 * COIN), admin)
    send(w3, coin.functions.transfer(bob.address, COIN), alice)  # bob becomes a holder
    transfer = send(w3, coin.functions.transfer(bob.address, COIN), alice)  # to an existing holder
    assert transfer["gasUsed"] == PLAIN_TRANSFER_GAS
    nonce = w3.eth.get_transaction_count(admin.address, "pending")
    hashes = []
    oids = [order_id(f"gas{i}") for i in range(n)]
    for i, oid in enumerate(oids):
        params: dict[str, Any] = {
            "from": admin.address,
            "nonce": nonce + i,
            "gas": 300_000,
            "chainId": w3.eth.chain_id,
        }
        tx = mk.lock_call(alice, oid, slot, quantity, LIMIT).build_transaction(params)  # type: ignore[arg-type]
        hashes.append(w3.eth.send_raw_transaction(admin.sign_transaction(tx).rawTransaction))
    for h in hashes:
        assert w3.eth.wait_for_transaction_receipt(h)["status"] == 1
    mk.orders.extend(oids)
    mk.accounts.add(alice.address)
    sellers = [Account.create().address for _ in range(n)]
    trades = [
        TradeIn(
            keccak(text=f"trade{i}"),
            oid,
            0,
            sellers[i],
            slot,
            2_000,
            PRICE + i * 10**12,
            keccak(text=f"h{i}"),
        )
        for i, oid in enumerate(oids)
    ]
    receipt = send(w3, mk.f.recordTrades([t.as_tuple() for t in trades]), admin)
    per_trade = receipt["gasUsed"] / n
    assert per_trade <= PLAIN_TRANSFER_GAS / 3, per_trade


# --- a random life cycle with awkward numbers ----------------------------------------------------------


def test_random_life_cycle_conserves_every_coin(
    mk: Market, alice: LocalAccount, bob: LocalAccount, carol: LocalAccount, slot: int, funded: None
) -> None:
    """Odd quantities and prices (escrow rounds up, trades round down), partial fills over several batches,
    settlement with random shortfalls, gate-closure releases, timeout refunds and withdrawals: the contract's
    books balance after every step and at the end every coin is back in a wallet."""
    w3, coin, admin = mk.w3, mk.coin, mk.operator
    rng = random.Random(20_240_611)
    buyers = {alice.address: alice, bob.address: bob}
    sellers = [carol.address, Account.create().address]
    start = {a: coin.functions.balanceOf(a).call() for a in [*buyers, *sellers]}
    orders = []
    for i in range(6):
        oid = order_id(f"r{i}")
        limit = rng.choice([1, 7, 101, 999_999, 10**15 + 3, LIMIT + 13])
        mk.lock(rng.choice(list(buyers.values())), oid, slot, rng.randint(1, 9_999), limit)
        orders.append((oid, limit))
    for b in range(3):
        trades: list[TradeIn] = []
        for k in range(rng.randint(1, 6)):
            oid, limit = rng.choice(orders)
            open_wh = mk.escrow(oid)["open_wh"] - sum(t.quantity_wh for t in trades if t.buy_order_id == oid)
            if open_wh > 0:
                quantity = rng.randint(1, open_wh)
                trades.append(
                    mk.trade(f"r{b}.{k}", oid, rng.choice(sellers), slot, quantity, rng.randint(1, limit))
                )
        if trades:
            mk.record(trades)
    send(w3, mk.f.releaseEscrows([oid for oid, _ in orders]), admin)  # gate closure
    mk.check()
    root = mk.anchor(slot)
    to_settle = mk.recorded[: len(mk.recorded) // 2 + 1]
    send(
        w3,
        mk.f.settleTrades(slot, root, [r.settlement(rng.randint(0, r.trade.quantity_wh)) for r in to_settle]),
        admin,
    )
    mk.check()
    advance_to(w3, slot + REFUND_TIMEOUT)
    for r in mk.recorded[len(to_settle) :]:
        send(w3, mk.f.refundTrade(r.trade_proof()), alice)
    mk.check()
    send(w3, mk.f.withdrawForBatch(sorted(mk.accounts)), admin)
    mk.check()
    assert coin.functions.balanceOf(mk.market.address).call() == 0
    end = {a: coin.functions.balanceOf(a).call() for a in start}
    assert sum(end.values()) == sum(start.values())
