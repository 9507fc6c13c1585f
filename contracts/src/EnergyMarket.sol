// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import "@klaytn/contracts/access/AccessControl.sol";
import "@klaytn/contracts/security/Pausable.sol";

/// The part of EnergyCoin (KIP-7 + ERC-3009) the market uses.
interface IMarketCoin {
    function transfer(address to, uint256 amount) external returns (bool);

    function transferFrom(address from, address to, uint256 amount) external returns (bool);

    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}

/// The part of MeterLedger the market uses.
interface IMarketLedger {
    function records(uint64 slotStart)
        external
        view
        returns (bytes32 root, uint32 count, uint256[6] memory totals, uint64 blockNumber);
}

/// @title EnergyMarket: escrow, trade records and settlement for the community energy market
/// @notice Matching happens off chain; this contract holds the buyers' coins and checks only what it must.
///
/// Buy orders (escrows). The operator (the platform's relayer, OPERATOR_ROLE) locks a buy order's coins with
/// the buyer's ERC-3009 `ReceiveWithAuthorization` (gas-free for the buyer), or the buyer locks them itself
/// with approve + `lockEscrowDirect`. An order is (buyer, slot, quantity in Wh, limit price in coin base units
/// per kWh) and holds `available` coins, never less than `escrowAmount(openWh, limitPrice)`.
///
/// Trades. `recordTrades` takes a batch of matched trades. Each must name an open buy order of the same slot,
/// a price at or below the order's limit, a quantity within the order's open quantity, and the order's next
/// fill number (so a trade can never be recorded twice). Its value, `tradeValue(q, p)`, moves from the order
/// to the trade. Trades are not stored one by one: the batch's trades become leaves of a Merkle tree whose
/// root is stored once per batch, and each trade gets a sequential trade number. Settlement and refunds
/// present a trade's terms with its Merkle proof; one bit per trade number records that it is closed.
/// This keeps recording under a third of the gas of one token transfer per trade.
///
/// Price differences. A fill below the order's limit leaves coins in the order that its open quantity no
/// longer needs (`releasable`). They belong to the buyer at once: the buyer or the operator can send them to
/// the buyer with `releaseEscrow(orderId, 0)`, and `releaseEscrows` at gate closure sends them together with
/// the unmatched part. (Recording does not pay them out itself: that would cost a second storage write per
/// trade.)
///
/// Settlement pays from the trade: the seller gets `tradeValue(delivered, price)` minus the penalty, the
/// buyer the rest, credited to balances inside the contract (pull: `withdraw`, or the operator pushes with
/// `withdrawFor`). Settlement is idempotent: a trade already settled or refunded is skipped silently.
///
/// Funds are never stuck: after `slotStart + refundTimeout` anyone may return an order's coins
/// (`refundExpired`) or an unsettled trade's value (`refundTrade`) to the buyer. Pausing (admin) stops new
/// locks, trades and settlements; releases, refunds and withdrawals always work.
///
/// Rounding (base units, Wh, prices per kWh): a trade's value is rounded down, `floor(q * p / 1000)`; an
/// order's escrow is rounded up, `ceil(Q * L / 1000)`. So every fill of an order is always covered.
/// @dev Invariant: coin.balanceOf(this) >= totalEscrowed + totalCredited (equal unless someone transfers coins
/// to the contract directly), where totalEscrowed = sum of orders' `available` + values of open trades and
/// totalCredited = sum of `balances`.
contract EnergyMarket is AccessControl, Pausable {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// Domain tag of the ERC-3009 nonce that binds a buyer's signature to one order's terms.
    bytes32 public constant ESCROW_NONCE_TAG = keccak256("essx.market.escrow.v1");
    uint256 public constant WH_PER_KWH = 1000;
    uint256 public constant BPS = 10_000;

    IMarketCoin public immutable coin;
    IMarketLedger public immutable ledger;
    /// Seconds after a slot's start after which anyone can refund its unsettled escrow and trades.
    uint64 public immutable refundTimeout;
    /// Share of a trade's shortfall value (contracted minus delivered) that the seller pays to the buyer.
    uint16 public immutable penaltyBps;

    /// A matched trade as the operator records it. Its Merkle leaf is
    /// `tradeLeaf(tradeId, buyOrderId, tradeNo, seller, slotStart, quantityWh, price, ordersHash)`: these eight
    /// words with `fill` replaced by the trade number the contract assigns.
    struct Trade {
        bytes32 tradeId; // the platform's id for the trade (a label; in the leaf and the events)
        bytes32 buyOrderId; // the escrow the trade is paid from
        uint16 fill; // this trade's number among the buy order's fills: 0, 1, 2, ... in recording order
        address seller;
        uint64 slotStart;
        uint32 quantityWh;
        uint128 price; // coin base units per kWh
        bytes32 ordersHash; // the platform's hash of both orders' terms
    }

    /// A buy order's escrow authorisation, used by `lockAndRecordTrades` when the order first matches: the
    /// `lockEscrow` arguments without the nonce (derived from the terms).
    struct Lock {
        bytes32 orderId;
        address buyer;
        uint256 amount;
        uint64 slotStart;
        uint32 quantityWh;
        uint128 limitPrice;
        uint256 validAfter;
        uint256 validBefore;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// A recorded trade (the nine leaf words, its batch and Merkle proof) and the energy delivered for it.
    struct Settlement {
        bytes32 tradeId;
        bytes32 buyOrderId;
        uint64 tradeNo;
        address seller;
        uint64 slotStart; // must be the settle call's slot
        uint32 quantityWh;
        uint128 price;
        bytes32 ordersHash;
        address buyer; // as in the leaf: the buyer if the order was locked in the trade's batch, else zero
        uint64 batchNo;
        uint32 deliveredWh;
        bytes32[] proof;
    }

    /// A recorded trade (the nine leaf words, its batch and Merkle proof), for `refundTrade`.
    struct TradeProof {
        bytes32 tradeId;
        bytes32 buyOrderId;
        uint64 tradeNo;
        address seller;
        uint64 slotStart;
        uint32 quantityWh;
        uint128 price;
        bytes32 ordersHash;
        address buyer;
        uint64 batchNo;
        bytes32[] proof;
    }

    /// A trade settled by `settleBatches`: its leaf words except the trade number (the batch's first + index)
    /// and the slot (the call's), and the energy delivered for it.
    struct BatchTrade {
        uint32 index; // position in the batch; strictly increasing within a BatchSettlement
        bytes32 tradeId;
        bytes32 buyOrderId;
        address seller;
        uint32 quantityWh;
        uint128 price;
        bytes32 ordersHash;
        address buyer; // as in the leaf
        uint32 deliveredWh;
    }

    /// One recorded batch in `settleBatches`: every leaf of the batch in order (those of the trades settled
    /// here may be zero: the contract computes them), so the root is checked once, with no per-trade proofs.
    struct BatchSettlement {
        uint64 batchNo;
        uint64 firstTradeNo;
        bytes32[] leaves;
        BatchTrade[] trades;
    }

    // One escrow: a packed word that recording reads and writes (so a trade touches one storage slot), and
    // the buyer. Word layout, low to high bits: openWh uint32 | available uint88 | limitPrice uint80 |
    // slotStart uint40 | fills uint16. limitPrice and slotStart are never zero, so a locked order's word is
    // never zero.
    struct Escrow {
        uint256 packed;
        address buyer;
    }

    uint256 private constant MASK16 = (1 << 16) - 1;
    uint256 private constant MASK32 = (1 << 32) - 1;
    uint256 private constant MASK40 = (1 << 40) - 1;
    uint256 private constant MASK80 = (1 << 80) - 1;
    uint256 private constant MASK88 = (1 << 88) - 1;
    uint256 private constant AVAILABLE_SHIFT = 32;
    uint256 private constant LIMIT_SHIFT = 120;
    uint256 private constant SLOT_SHIFT = 200;
    uint256 private constant FILLS_SHIFT = 240;

    mapping(bytes32 => Escrow) private _escrows;
    /// Raw balances: 0 for an account never credited, else its balance + 1. A slot once used never returns to
    /// zero, so crediting an account after it withdrew updates a slot (5k gas) instead of creating one (22.1k).
    mapping(address => uint256) private _balances;
    mapping(uint256 => bytes32) private _batchRoots;
    /// One bit per trade number: set when the trade is settled or refunded.
    mapping(uint256 => uint256) private _closedTrades;

    uint64 private _batchCount;
    uint64 private _tradeCount;
    uint128 private _totalEscrowed;
    uint128 private _totalCredited;

    event EscrowLocked(
        bytes32 indexed orderId,
        address indexed buyer,
        uint64 slotStart,
        uint32 quantityWh,
        uint128 limitPrice,
        uint256 amount
    );
    event EscrowReleased(bytes32 indexed orderId, address indexed buyer, uint32 cancelledWh, uint256 amount);
    event EscrowRefunded(bytes32 indexed orderId, address indexed buyer, uint256 amount);
    event TradeRecorded(bytes32 indexed tradeId, bytes32 indexed buyOrderId, uint256 tradeNo);
    event BatchRecorded(uint256 indexed batchNo, uint256 firstTradeNo, uint256 count, bytes32 root);
    event TradeSettled(
        uint256 indexed tradeNo,
        bytes32 indexed tradeId,
        uint32 deliveredWh,
        uint256 toSeller,
        uint256 toBuyer,
        uint256 penalty
    );
    event SlotSettled(uint64 indexed slotStart, bytes32 ledgerRoot, uint256 settled);
    event SlotSettledByDecision(uint64 indexed slotStart, bytes32 decisionHash, uint256 settled);
    event TradeRefunded(uint256 indexed tradeNo, bytes32 indexed tradeId, address indexed buyer, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    error ZeroAddress();
    error InvalidParameter();
    error EmptyBatch();
    error OrderExists(bytes32 orderId);
    error UnknownOrder(bytes32 orderId);
    error InvalidOrder(bytes32 orderId);
    error EscrowTooSmall(bytes32 orderId, uint256 required, uint256 amount);
    error NonceMismatch(bytes32 orderId, bytes32 expected, bytes32 nonce);
    error NotAllowed(bytes32 orderId, address caller);
    error SlotMismatch(bytes32 orderId, uint64 orderSlot, uint64 tradeSlot);
    error PriceAboveLimit(bytes32 orderId, uint256 limitPrice, uint256 price);
    error QuantityExceedsOpen(bytes32 orderId, uint256 openWh, uint256 quantityWh);
    error FillOutOfOrder(bytes32 orderId, uint256 expected, uint256 fill);
    error InvalidTrade(bytes32 tradeId);
    error UnknownBatch(uint256 batchNo);
    error InvalidProof(uint256 tradeNo);
    error TradeClosed(uint256 tradeNo);
    error DeliveredExceedsQuantity(uint256 tradeNo, uint256 quantityWh, uint256 deliveredWh);
    error SlotNotAnchored(uint64 slotStart);
    error LedgerRootMismatch(uint64 slotStart, bytes32 anchored, bytes32 given);
    error EmptyDecision();
    error RefundNotYetAvailable(uint256 availableAt);
    error NothingToRefund(bytes32 orderId);
    error NothingToWithdraw(address account);
    error TransferFailed();
    error InvalidBatch(uint256 batchNo);

    constructor(address coin_, address ledger_, address admin, uint64 refundTimeout_, uint16 penaltyBps_) {
        if (coin_ == address(0) || ledger_ == address(0) || admin == address(0)) revert ZeroAddress();
        if (refundTimeout_ == 0 || penaltyBps_ > BPS) revert InvalidParameter();
        coin = IMarketCoin(coin_);
        ledger = IMarketLedger(ledger_);
        refundTimeout = refundTimeout_;
        penaltyBps = penaltyBps_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------------------------------------------
    // Escrow
    // ------------------------------------------------------------------------------------------------------

    /// @notice Lock a buy order's coins, gas-free for the buyer: pulls `amount` from `buyer` with the coin's
    /// `receiveWithAuthorization` (to = this contract), which the buyer signed with
    /// `nonce == escrowNonce(orderId, slotStart, quantityWh, limitPrice)`, so the signature is good for this
    /// order and these terms only. `amount` must be at least `escrowAmount(quantityWh, limitPrice)`; any
    /// excess is releasable at once.
    function lockEscrow(
        bytes32 orderId,
        address buyer,
        uint256 amount,
        uint64 slotStart,
        uint32 quantityWh,
        uint128 limitPrice,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external onlyRole(OPERATOR_ROLE) whenNotPaused {
        bytes32 expected = escrowNonce(orderId, slotStart, quantityWh, limitPrice);
        if (nonce != expected) revert NonceMismatch(orderId, expected, nonce);
        _openStoredEscrow(orderId, buyer, amount, slotStart, quantityWh, limitPrice);
        coin.receiveWithAuthorization(buyer, address(this), amount, validAfter, validBefore, nonce, v, r, s);
    }

    /// @notice Lock a buy order's coins from the caller's own wallet (after `approve(market, amount)`), for
    /// wallets that pay their own gas. Order ids are the platform's: lock only ids the platform gave you.
    function lockEscrowDirect(
        bytes32 orderId,
        uint64 slotStart,
        uint32 quantityWh,
        uint128 limitPrice,
        uint256 amount
    ) external whenNotPaused {
        _openStoredEscrow(orderId, msg.sender, amount, slotStart, quantityWh, limitPrice);
        if (!coin.transferFrom(msg.sender, address(this), amount)) revert TransferFailed();
    }

    /// @notice Cancel up to `cancelWh` of the order's open quantity (type(uint32).max: all of it) and send the
    /// buyer every coin the order no longer needs: the cancelled part and the price differences of fills below
    /// the limit. Operator: any `cancelWh` (cancellation). The buyer: `cancelWh` 0 only (take out price
    /// differences at once). Safe to retry: the cancelled quantity is capped at the open quantity. Works while
    /// paused.
    function releaseEscrow(bytes32 orderId, uint32 cancelWh) external returns (uint256 released) {
        address buyer = _escrows[orderId].buyer;
        if (!hasRole(OPERATOR_ROLE, msg.sender) && !(msg.sender == buyer && cancelWh == 0)) {
            revert NotAllowed(orderId, msg.sender);
        }
        released = _release(orderId, cancelWh);
    }

    /// @notice Operator, at gate closure: close each order (cancel all of its open quantity) and send each buyer
    /// everything its order does not owe to recorded trades (the unmatched part and the price differences).
    /// Idempotent. Works while paused.
    function releaseEscrows(bytes32[] calldata orderIds) external onlyRole(OPERATOR_ROLE) returns (uint256 total) {
        for (uint256 i = 0; i < orderIds.length; ++i) {
            total += _release(orderIds[i], type(uint32).max);
        }
    }

    /// @notice After `slotStart + refundTimeout`, anyone may send the buyer everything the order still holds
    /// (its open part and any price differences; trades are refunded with `refundTrade`). The order closes.
    function refundExpired(bytes32 orderId) external returns (uint256 amount) {
        Escrow storage e = _escrows[orderId];
        uint256 packed = e.packed;
        if (packed == 0) revert UnknownOrder(orderId);
        uint256 availableAt = ((packed >> SLOT_SHIFT) & MASK40) + refundTimeout;
        if (block.timestamp < availableAt) revert RefundNotYetAvailable(availableAt);
        amount = (packed >> AVAILABLE_SHIFT) & MASK88;
        if (amount == 0) revert NothingToRefund(orderId);
        e.packed = packed & ~(MASK32 | (MASK88 << AVAILABLE_SHIFT));
        _totalEscrowed -= uint128(amount);
        address buyer = e.buyer;
        _pay(buyer, amount);
        emit EscrowRefunded(orderId, buyer, amount);
    }

    // ------------------------------------------------------------------------------------------------------
    // Trades
    // ------------------------------------------------------------------------------------------------------

    /// @notice Record a batch of matched trades (all or nothing). Per trade: the buy order exists, has the
    /// trade's slot, a limit >= price, open quantity >= quantity, and `fill` is its next fill number; the
    /// seller is not zero and the quantity not zero. The trade's value `tradeValue(q, p)` moves from the order
    /// to the trade. Trade numbers are sequential from `firstTradeNo`; the leaves
    /// `tradeLeaf(tradeId, buyOrderId, tradeNo, seller, slotStart, quantityWh, price, ordersHash)` in batch order
    /// form a sorted-pair Merkle tree (pairs (2i, 2i+1) hashed in sorted order, an odd last node carried up
    /// unchanged) whose root is stored as batch `batchNo`. Gas: about 11.3k per trade in batches of 100 when
    /// every trade has its own buy order, less when orders repeat.
    function recordTrades(Trade[] calldata trades)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 batchNo, uint256 firstTradeNo)
    {
        return _recordBatch(trades);
    }

    /// @notice One matching pass on chain (all or nothing): lock the escrow of each buy order that matched for
    /// the first time (each `Lock` as in `lockEscrow`, nonce `escrowNonce(orderId, slotStart, quantityWh,
    /// limitPrice)`), then record `trades` as `recordTrades` does, then release what a locked order filled in
    /// full no longer needs (its price differences; `EscrowReleased`). A buy order that never matches is
    /// never locked, so it costs no gas; its signed authorisation expires unused.
    function lockAndRecordTrades(Lock[] calldata locks, Trade[] calldata trades)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 batchNo, uint256 firstTradeNo)
    {
        return _lockAndRecord(locks, trades, new bytes32[](0));
    }

    /// @notice `lockAndRecordTrades`, then close the orders `closeIds` as `releaseEscrows` does (cancel their
    /// open quantity, send each buyer everything its order does not owe to recorded trades). For orders that
    /// can match no more when their trades are recorded (a call auction's orders expire at it): their release
    /// rides in the batch, where the buyer's coin balance is already warm, instead of a transaction of its own.
    /// An order locked and closed in the same batch keeps no storage at all: its state lives in transient
    /// storage for the length of the call, and its buyer goes into its trades' leaves (for settlement and
    /// refunds). Its id cannot be locked again by the operator: the coin has used the authorisation's nonce.
    function lockRecordAndClose(Lock[] calldata locks, Trade[] calldata trades, bytes32[] calldata closeIds)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 batchNo, uint256 firstTradeNo)
    {
        return _lockAndRecord(locks, trades, closeIds);
    }

    /// Locks into transient storage, records, closes `closeIds`, then stores the escrow word of each order
    /// locked here that can still be filled. An order with nothing open and nothing left is not stored (to
    /// `_release` and `refundExpired` it is unknown); one filled in full below its limit gets its price
    /// differences back first.
    function _lockAndRecord(Lock[] calldata locks, Trade[] calldata trades, bytes32[] memory closeIds)
        private
        returns (uint256 batchNo, uint256 firstTradeNo)
    {
        for (uint256 i = 0; i < locks.length; ++i) {
            Lock calldata l = locks[i];
            bytes32 nonce = escrowNonce(l.orderId, l.slotStart, l.quantityWh, l.limitPrice);
            uint256 packed = _openEscrow(l.orderId, l.buyer, l.amount, l.slotStart, l.quantityWh, l.limitPrice);
            uint256 key = _packedKey(l.orderId);
            if (_tload(key) != 0) revert OrderExists(l.orderId); // twice in this batch
            _tstore(key, packed);
            _tstore(key + 1, uint256(uint160(l.buyer)));
            coin.receiveWithAuthorization(
                l.buyer, address(this), l.amount, l.validAfter, l.validBefore, nonce, l.v, l.r, l.s
            );
        }
        (batchNo, firstTradeNo) = _recordBatch(trades);
        for (uint256 i = 0; i < closeIds.length; ++i) {
            bytes32 orderId = closeIds[i];
            uint256 key = _packedKey(orderId);
            uint256 packed = _tload(key);
            if (packed != 0) {
                _tstore(key, _releaseWord(orderId, address(uint160(_tload(key + 1))), packed, type(uint32).max));
            } else {
                packed = _escrows[orderId].packed;
                // locked and filled in full at its limit before: nothing to cancel or release
                if (packed == 0 || packed & MASK32 != 0 || (packed >> AVAILABLE_SHIFT) & MASK88 != 0) {
                    _release(orderId, type(uint32).max);
                }
            }
        }
        for (uint256 i = 0; i < locks.length; ++i) {
            bytes32 orderId = locks[i].orderId;
            uint256 key = _packedKey(orderId);
            uint256 packed = _tload(key);
            _tstore(key, 0);
            _tstore(key + 1, 0);
            if (packed & MASK32 != 0) {
                (_escrows[orderId].packed, _escrows[orderId].buyer) = (packed, locks[i].buyer);
            } else if ((packed >> AVAILABLE_SHIFT) & MASK88 != 0) {
                // filled in full in this batch: its price differences go back now, while the buyer's balance
                // is warm, instead of in a release transaction of their own
                _releaseWord(orderId, locks[i].buyer, packed, 0);
            }
        }
    }

    function _recordBatch(Trade[] calldata trades) private returns (uint256 batchNo, uint256 firstTradeNo) {
        uint256 n = trades.length;
        if (n == 0) revert EmptyBatch();
        batchNo = _batchCount;
        firstTradeNo = _tradeCount;
        bytes32[] memory nodes = new bytes32[](n);
        uint256 offset;
        assembly {
            offset := trades.offset
        }
        for (uint256 i = 0; i < n; ++i) {
            // Trade is static (eight words), so trade i starts at offset + 256 * i.
            nodes[i] = _recordOne(offset + (i << 8), firstTradeNo + i);
        }
        bytes32 root = _merkleRoot(nodes);
        _batchRoots[batchNo] = root;
        _batchCount = uint64(batchNo + 1);
        _tradeCount = uint64(firstTradeNo + n);
        emit BatchRecorded(batchNo, firstTradeNo, n, root);
    }

    /// Records the trade whose ABI encoding starts at calldata offset `p`; returns its leaf. The hot path is
    /// assembly: one check of all conditions, then `_recordError` finds and reports the first failing one. The
    /// fields are read raw: each is range-checked by a comparison (fill = the order's uint16 fill count, slot =
    /// the order's uint40 slot, price <= the order's uint80 limit, quantity <= the order's uint32 open quantity,
    /// seller < 2^160), so the leaf only ever holds clean ABI words.
    function _recordOne(uint256 p, uint256 tradeNo) private returns (bytes32 leaf) {
        bytes32 topic = TradeRecorded.selector;
        bool ok;
        assembly {
            let orderId := calldataload(add(p, 0x20))
            mstore(0x00, orderId)
            mstore(0x20, _escrows.slot)
            let key := keccak256(0x00, 0x40)
            // an order locked in this batch lives in transient storage until the batch ends
            let packed := tload(key)
            let inBatch := iszero(iszero(packed))
            let buyer := 0 // in the leaf: the buyer of an order locked in this batch, else zero (stored)
            switch inBatch
            case 0 {
                packed := sload(key)
            }
            default {
                buyer := tload(add(key, 1))
            }
            let quantityWh := calldataload(add(p, 0xa0))
            let price := calldataload(add(p, 0xc0))
            ok := and(iszero(iszero(packed)), eq(calldataload(add(p, 0x80)), and(shr(SLOT_SHIFT, packed), MASK40)))
            ok := and(ok, iszero(gt(price, and(shr(LIMIT_SHIFT, packed), MASK80))))
            ok := and(ok, and(iszero(iszero(quantityWh)), iszero(gt(quantityWh, and(packed, MASK32)))))
            let word := calldataload(add(p, 0x40)) // fill
            ok := and(ok, and(eq(word, shr(FILLS_SHIFT, packed)), lt(word, MASK16)))
            word := calldataload(add(p, 0x60)) // seller
            ok := and(ok, and(iszero(iszero(word)), iszero(shr(160, word))))
            // quantityWh < 2^32 and price < 2^80 when ok, so the product cannot overflow.
            let value := div(mul(quantityWh, price), WH_PER_KWH)
            ok := and(ok, iszero(gt(value, and(shr(AVAILABLE_SHIFT, packed), MASK88))))
            if ok {
                // open quantity and available go down, fills goes up; no field can borrow (checked above).
                let next := add(sub(sub(packed, quantityWh), shl(AVAILABLE_SHIFT, value)), shl(FILLS_SHIFT, 1))
                switch inBatch
                case 0 {
                    sstore(key, next)
                }
                default {
                    tstore(key, next)
                }
                // The leaf: keccak256 of the trade's eight words with `fill` replaced by the trade number, and
                // the buyer of an order locked in this batch (such an order may keep no storage at all; a stored
                // escrow names its buyer itself, and reading it here would cost every trade a cold slot).
                let m := mload(0x40)
                calldatacopy(m, p, 0x100)
                mstore(add(m, 0x40), tradeNo)
                mstore(add(m, 0x100), buyer)
                leaf := keccak256(m, 0x120)
                // TradeRecorded(tradeId, buyOrderId, tradeNo)
                mstore(m, tradeNo)
                log3(m, 0x20, topic, calldataload(p), orderId)
            }
        }
        if (!ok) _recordError(p);
    }

    /// The slow path of `_recordOne`: reverts with the first condition the trade at calldata offset `p` fails.
    function _recordError(uint256 p) private view {
        bytes32 orderId = bytes32(_word(p + 0x20));
        uint256 packed = _tload(_packedKey(orderId));
        if (packed == 0) packed = _escrows[orderId].packed;
        if (packed == 0) revert UnknownOrder(orderId);
        uint256 field = _word(p + 0x80); // slotStart
        uint256 orderSlot = (packed >> SLOT_SHIFT) & MASK40;
        if (field != orderSlot) revert SlotMismatch(orderId, uint64(orderSlot), uint64(field));
        uint256 price = _word(p + 0xc0);
        uint256 limitPrice = (packed >> LIMIT_SHIFT) & MASK80;
        if (price > limitPrice) revert PriceAboveLimit(orderId, limitPrice, price);
        uint256 quantityWh = _word(p + 0xa0);
        if (quantityWh > packed & MASK32) revert QuantityExceedsOpen(orderId, packed & MASK32, quantityWh);
        field = _word(p + 0x40); // fill
        if (field != packed >> FILLS_SHIFT || field == MASK16) revert FillOutOfOrder(orderId, packed >> FILLS_SHIFT, field);
        // zero quantity, zero or malformed seller, or (never while the escrow invariant holds) value > available
        revert InvalidTrade(bytes32(_word(p)));
    }

    function _word(uint256 p) private pure returns (uint256 w) {
        assembly {
            w := calldataload(p)
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // Settlement
    // ------------------------------------------------------------------------------------------------------

    /// @notice Settle trades of `slotStart` against its anchored meter data: the slot must be anchored in the
    /// MeterLedger with exactly `ledgerRoot`. Returns how many trades were settled now (trades already settled
    /// or refunded are skipped without an event, so a retried batch is harmless).
    function settleTrades(uint64 slotStart, bytes32 ledgerRoot, Settlement[] calldata s)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 settled)
    {
        _requireAnchored(slotStart, ledgerRoot);
        settled = _settle(slotStart, s);
        if (settled > 0) emit SlotSettled(slotStart, ledgerRoot, settled);
    }

    /// @notice Settle trades of `slotStart` batch by batch against its anchored meter data (the checks of
    /// `settleTrades`): each batch's trades settled here come as calldata, the batch's other trades as leaves,
    /// and the batch root is recomputed once (no proofs); credits go to balances (a payee repeated in the call
    /// costs a warm update); no event per trade (the deliveries are in the calldata), one `SlotSettled`.
    /// Trades already settled or refunded are skipped. Reverts `InvalidBatch` when the leaves do not give the
    /// batch's root (wrong terms, slot, first trade number, buyer, or a trade of another slot presented).
    function settleBatches(uint64 slotStart, bytes32 ledgerRoot, BatchSettlement[] calldata b)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 settled)
    {
        _requireAnchored(slotStart, ledgerRoot);
        settled = _settleBatches(slotStart, b);
        if (settled > 0) emit SlotSettled(slotStart, ledgerRoot, settled);
    }

    /// @notice `settleBatches` by an admin decision (as `settleTradesByDecision`).
    function settleBatchesByDecision(uint64 slotStart, bytes32 decisionHash, BatchSettlement[] calldata b)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 settled)
    {
        if (decisionHash == bytes32(0)) revert EmptyDecision();
        settled = _settleBatches(slotStart, b);
        if (settled > 0) emit SlotSettledByDecision(slotStart, decisionHash, settled);
    }

    /// Reverts unless `slotStart` is anchored in the MeterLedger with exactly `ledgerRoot`.
    function _requireAnchored(uint64 slotStart, bytes32 ledgerRoot) private view {
        (bytes32 anchored, , , uint64 anchoredAt) = ledger.records(slotStart);
        if (anchoredAt == 0) revert SlotNotAnchored(slotStart);
        if (anchored != ledgerRoot) revert LedgerRootMismatch(slotStart, anchored, ledgerRoot);
    }

    function _settleBatches(uint64 slotStart, BatchSettlement[] calldata b) private returns (uint256 settled) {
        if (b.length == 0) revert EmptyBatch();
        uint256 moved;
        for (uint256 i = 0; i < b.length; ++i) {
            _checkBatch(slotStart, b[i]);
            (uint256 count, uint256 amount) = _settleBatch(b[i]);
            settled += count;
            moved += amount;
        }
        if (moved > 0) {
            _totalEscrowed -= uint128(moved);
            _totalCredited += uint128(moved);
        }
    }

    /// Reverts unless the batch's leaves, with those of the trades settled here computed, give its root.
    function _checkBatch(uint64 slotStart, BatchSettlement calldata x) private view {
        bytes32 root = _batchRoots[x.batchNo];
        if (root == bytes32(0)) revert UnknownBatch(x.batchNo);
        bytes32[] memory nodes = x.leaves;
        uint256 n = x.trades.length;
        if (n == 0) revert EmptyBatch();
        uint256 next; // the smallest index the next trade may have
        for (uint256 j = 0; j < n; ++j) {
            BatchTrade calldata t = x.trades[j];
            if (t.index < next || t.index >= nodes.length) revert InvalidBatch(x.batchNo);
            next = uint256(t.index) + 1;
            nodes[t.index] = _batchLeaf(slotStart, uint256(x.firstTradeNo) + t.index, t);
        }
        if (_merkleRoot(nodes) != root) revert InvalidBatch(x.batchNo);
    }

    function _batchLeaf(uint64 slotStart, uint256 tradeNo, BatchTrade calldata t) private pure returns (bytes32) {
        return
            tradeLeaf(
                t.tradeId,
                t.buyOrderId,
                tradeNo,
                t.seller,
                slotStart,
                t.quantityWh,
                t.price,
                t.ordersHash,
                t.buyer
            );
    }

    /// Settles the checked batch's trades that are still open; returns how many and the coins credited.
    function _settleBatch(BatchSettlement calldata x) private returns (uint256 settled, uint256 moved) {
        for (uint256 j = 0; j < x.trades.length; ++j) {
            BatchTrade calldata t = x.trades[j];
            uint256 tradeNo = uint256(x.firstTradeNo) + t.index;
            (uint256 word, uint256 bit) = (tradeNo >> 8, 1 << (tradeNo & 255));
            uint256 bits = _closedTrades[word];
            if (bits & bit != 0) continue; // already settled or refunded
            if (t.deliveredWh > t.quantityWh) revert DeliveredExceedsQuantity(tradeNo, t.quantityWh, t.deliveredWh);
            _closedTrades[word] = bits | bit;
            (uint256 toSeller, uint256 toBuyer, ) = settlementAmounts(t.quantityWh, t.price, t.deliveredWh);
            if (toSeller > 0) _credit(t.seller, toSeller);
            if (toBuyer > 0) _credit(_buyerOf(t.buyer, t.buyOrderId), toBuyer);
            moved += toSeller + toBuyer;
            ++settled;
        }
    }

    /// @notice Settle trades of `slotStart` by an admin decision (meter data incomplete; e.g. "as contracted":
    /// deliveredWh = quantityWh), without a ledger check. `decisionHash` identifies the recorded decision.
    function settleTradesByDecision(uint64 slotStart, bytes32 decisionHash, Settlement[] calldata s)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 settled)
    {
        if (decisionHash == bytes32(0)) revert EmptyDecision();
        settled = _settle(slotStart, s);
        if (settled > 0) emit SlotSettledByDecision(slotStart, decisionHash, settled);
    }

    /// @notice After `slotStart + refundTimeout`, anyone may send an unsettled trade's value back to its buyer.
    function refundTrade(TradeProof calldata t) external returns (uint256 amount) {
        uint256 availableAt = uint256(t.slotStart) + refundTimeout;
        if (block.timestamp < availableAt) revert RefundNotYetAvailable(availableAt);
        uint256 tradeNo = t.tradeNo;
        (uint256 word, uint256 bit) = (tradeNo >> 8, 1 << (tradeNo & 255));
        uint256 bits = _closedTrades[word];
        if (bits & bit != 0) revert TradeClosed(tradeNo);
        _verify(t.batchNo, tradeNo, _leafAt(t), t.proof);
        _closedTrades[word] = bits | bit;
        amount = tradeValue(t.quantityWh, t.price);
        address buyer = _buyerOf(t.buyer, t.buyOrderId);
        if (amount > 0) {
            _totalEscrowed -= uint128(amount);
            _pay(buyer, amount);
        }
        emit TradeRefunded(tradeNo, t.tradeId, buyer, amount);
    }

    // ------------------------------------------------------------------------------------------------------
    // Balances
    // ------------------------------------------------------------------------------------------------------

    /// @notice Send the caller its balance (settlement proceeds and refunds). Works while paused.
    function withdraw() external returns (uint256 amount) {
        amount = _withdraw(msg.sender);
        if (amount == 0) revert NothingToWithdraw(msg.sender);
    }

    /// @notice Operator: push `account`'s balance to its wallet (gas-free for the account). Works while paused.
    function withdrawFor(address account) external onlyRole(OPERATOR_ROLE) returns (uint256 amount) {
        amount = _withdraw(account);
        if (amount == 0) revert NothingToWithdraw(account);
    }

    /// @notice Operator: push the balances of `accounts`; zero balances are skipped. Works while paused.
    function withdrawForBatch(address[] calldata accounts) external onlyRole(OPERATOR_ROLE) returns (uint256 total) {
        for (uint256 i = 0; i < accounts.length; ++i) {
            total += _withdraw(accounts[i]);
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // Admin
    // ------------------------------------------------------------------------------------------------------

    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------------------------------------------
    // Views and the formulas the platform must reproduce
    // ------------------------------------------------------------------------------------------------------

    /// @notice An order's escrow; all zero for an unknown order. `releasable` is what the order no longer needs
    /// (price differences of fills below the limit), which `releaseEscrow(orderId, 0)` sends to the buyer.
    function escrows(bytes32 orderId)
        external
        view
        returns (
            address buyer,
            uint64 slotStart,
            uint128 limitPrice,
            uint32 openWh,
            uint256 available,
            uint16 fills,
            uint256 releasable
        )
    {
        Escrow storage e = _escrows[orderId];
        uint256 packed = e.packed;
        buyer = e.buyer;
        openWh = uint32(packed & MASK32);
        available = (packed >> AVAILABLE_SHIFT) & MASK88;
        limitPrice = uint128((packed >> LIMIT_SHIFT) & MASK80);
        slotStart = uint64((packed >> SLOT_SHIFT) & MASK40);
        fills = uint16(packed >> FILLS_SHIFT);
        releasable = available - escrowAmount(openWh, limitPrice);
    }

    /// @notice Coins credited to `account` (settlement proceeds and refunds) and not yet withdrawn.
    function balances(address account) external view returns (uint256) {
        uint256 raw = _balances[account];
        return raw == 0 ? 0 : raw - 1;
    }

    function batchRoot(uint256 batchNo) external view returns (bytes32) {
        return _batchRoots[batchNo];
    }

    function batchCount() external view returns (uint256) {
        return _batchCount;
    }

    function tradeCount() external view returns (uint256) {
        return _tradeCount;
    }

    /// @notice True once trade `tradeNo` is settled or refunded.
    function isTradeClosed(uint256 tradeNo) external view returns (bool) {
        return _closedTrades[tradeNo >> 8] & (1 << (tradeNo & 255)) != 0;
    }

    /// @notice Coins held for orders and open trades.
    function totalEscrowed() external view returns (uint256) {
        return _totalEscrowed;
    }

    /// @notice Coins credited to balances and not yet withdrawn.
    function totalCredited() external view returns (uint256) {
        return _totalCredited;
    }

    /// @notice The ERC-3009 nonce a buyer signs to lock the escrow of this order (binds id and terms).
    function escrowNonce(bytes32 orderId, uint64 slotStart, uint32 quantityWh, uint128 limitPrice)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(ESCROW_NONCE_TAG, orderId, slotStart, quantityWh, limitPrice));
    }

    /// @notice Coins a buy order of `quantityWh` at `limitPrice` must lock: rounded up.
    function escrowAmount(uint256 quantityWh, uint256 limitPrice) public pure returns (uint256) {
        return (quantityWh * limitPrice + WH_PER_KWH - 1) / WH_PER_KWH;
    }

    /// @notice What a trade (or a delivered part of it) costs: rounded down.
    function tradeValue(uint256 quantityWh, uint256 price) public pure returns (uint256) {
        return (quantityWh * price) / WH_PER_KWH;
    }

    /// @notice How settlement splits a trade: the seller gets `tradeValue(delivered, price) - penalty`, the
    /// buyer the rest of `tradeValue(quantity, price)`; penalty = floor(shortfall value * penaltyBps / 10000),
    /// at most what the seller earned (the seller posts no collateral).
    function settlementAmounts(uint256 quantityWh, uint256 price, uint256 deliveredWh)
        public
        view
        returns (uint256 toSeller, uint256 toBuyer, uint256 penalty)
    {
        uint256 value = tradeValue(quantityWh, price);
        uint256 earned = tradeValue(deliveredWh, price);
        penalty = ((value - earned) * penaltyBps) / BPS;
        if (penalty > earned) penalty = earned;
        toSeller = earned - penalty;
        toBuyer = value - toSeller;
    }

    /// @notice The Merkle leaf of a recorded trade: keccak256(abi.encode(tradeId, buyOrderId, tradeNo, seller,
    /// slotStart, quantityWh, price, ordersHash, buyer)); buyer is the buy order's when the order was locked in
    /// the trade's own batch, else zero (the order's stored escrow names it).
    function tradeLeaf(
        bytes32 tradeId,
        bytes32 buyOrderId,
        uint256 tradeNo,
        address seller,
        uint64 slotStart,
        uint32 quantityWh,
        uint128 price,
        bytes32 ordersHash,
        address buyer
    ) public pure returns (bytes32) {
        return keccak256(
            abi.encode(tradeId, buyOrderId, tradeNo, seller, slotStart, quantityWh, price, ordersHash, buyer)
        );
    }

    // ------------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------------

    function _openStoredEscrow(
        bytes32 orderId,
        address buyer,
        uint256 amount,
        uint64 slotStart,
        uint32 quantityWh,
        uint128 limitPrice
    ) private {
        _escrows[orderId].packed = _openEscrow(orderId, buyer, amount, slotStart, quantityWh, limitPrice);
        _escrows[orderId].buyer = buyer;
    }

    function _openEscrow(
        bytes32 orderId,
        address buyer,
        uint256 amount,
        uint64 slotStart,
        uint32 quantityWh,
        uint128 limitPrice
    ) private returns (uint256 packed) {
        if (buyer == address(0)) revert ZeroAddress();
        Escrow storage e = _escrows[orderId];
        if (e.buyer != address(0)) revert OrderExists(orderId);
        if (
            quantityWh == 0 ||
            limitPrice == 0 ||
            limitPrice > MASK80 ||
            slotStart == 0 ||
            slotStart > MASK40 ||
            amount > MASK88
        ) revert InvalidOrder(orderId);
        uint256 required = escrowAmount(quantityWh, limitPrice);
        if (amount < required) revert EscrowTooSmall(orderId, required, amount);
        packed =
            uint256(quantityWh) |
            (amount << AVAILABLE_SHIFT) |
            (uint256(limitPrice) << LIMIT_SHIFT) |
            (uint256(slotStart) << SLOT_SHIFT);
        _totalEscrowed += uint128(amount);
        emit EscrowLocked(orderId, buyer, slotStart, quantityWh, limitPrice, amount);
    }

    function _release(bytes32 orderId, uint32 cancelWh) private returns (uint256 released) {
        Escrow storage e = _escrows[orderId];
        uint256 packed = e.packed;
        if (packed == 0) revert UnknownOrder(orderId); // never stored (or closed in the batch that locked it)
        uint256 available = (packed >> AVAILABLE_SHIFT) & MASK88;
        packed = _releaseWord(orderId, e.buyer, packed, cancelWh);
        e.packed = packed;
        released = available - ((packed >> AVAILABLE_SHIFT) & MASK88);
    }

    /// Cancels up to `cancelWh` of an escrow word's open quantity, pays the buyer what the word no longer needs
    /// and returns the new word (the caller stores it).
    function _releaseWord(bytes32 orderId, address buyer, uint256 packed, uint32 cancelWh)
        private
        returns (uint256)
    {
        uint256 openWh = packed & MASK32;
        uint256 available = (packed >> AVAILABLE_SHIFT) & MASK88;
        uint256 cancelled = cancelWh < openWh ? cancelWh : openWh;
        openWh -= cancelled;
        uint256 keep = escrowAmount(openWh, (packed >> LIMIT_SHIFT) & MASK80);
        uint256 released = available - keep;
        if (released > 0) {
            _totalEscrowed -= uint128(released);
            _pay(buyer, released);
        }
        emit EscrowReleased(orderId, buyer, uint32(cancelled), released);
        return (packed & ~(MASK32 | (MASK88 << AVAILABLE_SHIFT))) | openWh | (keep << AVAILABLE_SHIFT);
    }

    function _settle(uint64 slotStart, Settlement[] calldata s) private returns (uint256 settled) {
        uint256 n = s.length;
        if (n == 0) revert EmptyBatch();
        uint256 moved; // from escrow to balances
        for (uint256 i = 0; i < n; ++i) {
            (bool done, uint256 amount) = _settleOne(slotStart, s[i]);
            if (done) {
                moved += amount;
                ++settled;
            }
        }
        if (moved > 0) {
            _totalEscrowed -= uint128(moved);
            _totalCredited += uint128(moved);
        }
    }

    /// Settles one trade unless it is closed already; returns whether it did and the coins it credited.
    function _settleOne(uint64 slotStart, Settlement calldata x) private returns (bool, uint256 moved) {
        uint256 tradeNo = x.tradeNo;
        (uint256 word, uint256 bit) = (tradeNo >> 8, 1 << (tradeNo & 255));
        uint256 bits = _closedTrades[word];
        if (bits & bit != 0) return (false, 0); // already settled or refunded
        if (x.slotStart != slotStart) revert SlotMismatch(x.buyOrderId, slotStart, x.slotStart);
        _verify(x.batchNo, tradeNo, _leafAt(x), x.proof);
        if (x.deliveredWh > x.quantityWh) revert DeliveredExceedsQuantity(tradeNo, x.quantityWh, x.deliveredWh);
        _closedTrades[word] = bits | bit;

        (uint256 toSeller, uint256 toBuyer, uint256 penalty) = settlementAmounts(x.quantityWh, x.price, x.deliveredWh);
        if (toSeller > 0) _credit(x.seller, toSeller);
        if (toBuyer > 0) _credit(_buyerOf(x.buyer, x.buyOrderId), toBuyer);
        emit TradeSettled(tradeNo, x.tradeId, x.deliveredWh, toSeller, toBuyer, penalty);
        return (true, toSeller + toBuyer);
    }

    /// The leaf of a Settlement or TradeProof: keccak256 of the struct's first eight (static) words. Those words
    /// are validated by the Solidity accessors the callers use (tradeNo, seller, slotStart, quantity, price).
    function _leafAt(Settlement calldata x) private pure returns (bytes32 leaf) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            calldatacopy(m, x, 0x120)
            leaf := keccak256(m, 0x120)
        }
    }

    function _leafAt(TradeProof calldata x) private pure returns (bytes32 leaf) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            calldatacopy(m, x, 0x120)
            leaf := keccak256(m, 0x120)
        }
    }

    function _verify(uint256 batchNo, uint256 tradeNo, bytes32 leaf, bytes32[] calldata proof) private view {
        bytes32 root = _batchRoots[batchNo];
        if (root == bytes32(0)) revert UnknownBatch(batchNo);
        bytes32 node = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            node = _hashPair(node, proof[i]);
        }
        if (node != root) revert InvalidProof(tradeNo);
    }

    /// Bottom-up, in place: pairs (2i, 2i+1) are hashed sorted; an odd last node is carried up unchanged.
    function _merkleRoot(bytes32[] memory nodes) private pure returns (bytes32 root) {
        assembly ("memory-safe") {
            let n := mload(nodes)
            let base := add(nodes, 0x20)
            for {} gt(n, 1) {} {
                let m := 0
                for { let i := 0 } lt(i, n) { i := add(i, 2) } {
                    let a := mload(add(base, shl(5, i)))
                    let j := add(i, 1)
                    if lt(j, n) {
                        let b := mload(add(base, shl(5, j)))
                        if gt(a, b) {
                            let t := a
                            a := b
                            b := t
                        }
                        mstore(0x00, a)
                        mstore(0x20, b)
                        a := keccak256(0x00, 0x40)
                    }
                    mstore(add(base, shl(5, m)), a)
                    m := add(m, 1)
                }
                n := m
            }
            root := mload(base)
        }
    }

    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32 h) {
        (bytes32 lo, bytes32 hi) = a < b ? (a, b) : (b, a);
        assembly ("memory-safe") {
            mstore(0x00, lo)
            mstore(0x20, hi)
            h := keccak256(0x00, 0x40)
        }
    }

    /// A trade's buyer: the one in its leaf, or (zero there) its stored escrow's.
    function _buyerOf(address inLeaf, bytes32 buyOrderId) private view returns (address) {
        return inLeaf != address(0) ? inLeaf : _escrows[buyOrderId].buyer;
    }

    /// The storage key of an order's escrow word; the same key holds it in transient storage while the batch
    /// that locked it runs.
    function _packedKey(bytes32 orderId) private pure returns (uint256 key) {
        assembly ("memory-safe") {
            mstore(0x00, orderId)
            mstore(0x20, _escrows.slot)
            key := keccak256(0x00, 0x40)
        }
    }

    function _tload(uint256 key) private view returns (uint256 v) {
        assembly ("memory-safe") {
            v := tload(key)
        }
    }

    function _tstore(uint256 key, uint256 v) private {
        assembly ("memory-safe") {
            tstore(key, v)
        }
    }

    function _credit(address account, uint256 amount) private {
        uint256 raw = _balances[account];
        _balances[account] = raw == 0 ? amount + 1 : raw + amount;
    }

    function _withdraw(address account) private returns (uint256 amount) {
        uint256 raw = _balances[account];
        if (raw <= 1) return 0;
        amount = raw - 1;
        _balances[account] = 1;
        _totalCredited -= uint128(amount);
        _pay(account, amount);
        emit Withdrawn(account, amount);
    }

    function _pay(address to, uint256 amount) private {
        if (!coin.transfer(to, amount)) revert TransferFailed();
    }
}
