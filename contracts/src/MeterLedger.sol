// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import "@klaytn/contracts/access/AccessControl.sol";
import "@klaytn/contracts/utils/cryptography/MerkleProof.sol";

/// @title MeterLedger: on-chain commitments to per-slot meter data
/// @notice A reporter anchors each delivery slot once: the Merkle root of the slot's readings, how many
/// readings it covers, and six energy totals in Wh (pv, load, grid import, grid export, battery charge,
/// battery discharge). Anyone can later check that a reading belongs to an anchored slot.
/// @dev One record takes two storage slots (root; count, block number and the totals packed as uint32), so
/// anchoring costs the same for every slot whatever its count. A total must fit uint32 (4,294,967,295 Wh,
/// about 4.29 GWh per slot); the block number is stored as uint32 (enough for 136 years of 1 s blocks).
contract MeterLedger is AccessControl {
    bytes32 public constant REPORTER_ROLE = keccak256("REPORTER_ROLE");

    uint256 public constant TOTALS = 6;

    struct Record {
        bytes32 root;
        uint32 count;
        uint32 blockNumber;
        uint32 pv;
        uint32 load;
        uint32 gridImport;
        uint32 gridExport;
        uint32 batteryCharge;
        uint32 batteryDischarge;
    }

    mapping(uint64 => Record) private _records;

    event SlotAnchored(uint64 indexed slotStart, bytes32 root, uint32 count, uint256[6] totals);

    error AlreadyAnchored(uint64 slotStart);
    error EmptyAnchor(uint64 slotStart);
    error TotalOutOfRange(uint256 index, uint256 value);

    constructor(address admin) {
        require(admin != address(0), "MeterLedger: admin is the zero address");
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(REPORTER_ROLE, admin);
    }

    /// @notice Anchor slot `slotStart` (unix seconds of its start). Once per slot: a second anchor reverts
    /// with AlreadyAnchored, so a retried anchoring transaction can never overwrite the first.
    function anchor(
        uint64 slotStart,
        bytes32 root,
        uint32 count,
        uint256[6] calldata totals
    ) external onlyRole(REPORTER_ROLE) {
        Record storage record = _records[slotStart];
        if (record.blockNumber != 0) revert AlreadyAnchored(slotStart);
        if (root == bytes32(0) || count == 0) revert EmptyAnchor(slotStart);
        for (uint256 i = 0; i < TOTALS; i++) {
            if (totals[i] > type(uint32).max) revert TotalOutOfRange(i, totals[i]);
        }
        require(block.number <= type(uint32).max, "MeterLedger: block number out of range");

        _records[slotStart] = Record({
            root: root,
            count: count,
            blockNumber: uint32(block.number),
            pv: uint32(totals[0]),
            load: uint32(totals[1]),
            gridImport: uint32(totals[2]),
            gridExport: uint32(totals[3]),
            batteryCharge: uint32(totals[4]),
            batteryDischarge: uint32(totals[5])
        });
        emit SlotAnchored(slotStart, root, count, totals);
    }

    /// @notice The anchored record of `slotStart`; all zero (blockNumber 0) when the slot is not anchored.
    function records(uint64 slotStart)
        external
        view
        returns (bytes32 root, uint32 count, uint256[6] memory totals, uint64 blockNumber)
    {
        Record storage record = _records[slotStart];
        totals = [
            uint256(record.pv),
            record.load,
            record.gridImport,
            record.gridExport,
            record.batteryCharge,
            record.batteryDischarge
        ];
        return (record.root, record.count, totals, record.blockNumber);
    }

    function isAnchored(uint64 slotStart) external view returns (bool) {
        return _records[slotStart].blockNumber != 0;
    }

    /// @notice True when `proof` connects `leaf` to the root anchored for `slotStart` (sorted-pair keccak
    /// Merkle tree, as OpenZeppelin's MerkleProof). False for a slot that is not anchored.
    /// @dev This proves that `leaf` is a node of the tree. The verifier must compute `leaf` itself from the
    /// reading (with an encoding that cannot be mistaken for an inner node, e.g. a double keccak of the
    /// ABI-encoded reading) and never accept a leaf hash from the party being checked.
    function verify(uint64 slotStart, bytes32 leaf, bytes32[] calldata proof) external view returns (bool) {
        bytes32 root = _records[slotStart].root;
        return root != bytes32(0) && MerkleProof.processProof(proof, leaf) == root;
    }
}
