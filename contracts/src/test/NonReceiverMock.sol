// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @dev Test only: a contract without `onKIP7Received` (and without a fallback), so safe transfers to it revert.
contract NonReceiverMock {
    uint256 public pokes;

    function poke() external {
        pokes += 1;
    }
}
