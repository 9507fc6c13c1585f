// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import "@klaytn/contracts/KIP/token/KIP7/IKIP7Receiver.sol";

/// @dev Test only: accepts KIP-7 safe transfers and records the last `onKIP7Received` call.
contract KIP7ReceiverMock is IKIP7Receiver {
    address public lastToken;
    address public lastOperator;
    address public lastFrom;
    uint256 public lastAmount;
    bytes public lastData;
    uint256 public calls;

    event Received(address indexed token, address operator, address from, uint256 amount, bytes data);

    function onKIP7Received(
        address operator,
        address from,
        uint256 amount,
        bytes calldata data
    ) external override returns (bytes4) {
        lastToken = msg.sender;
        lastOperator = operator;
        lastFrom = from;
        lastAmount = amount;
        lastData = data;
        calls += 1;
        emit Received(msg.sender, operator, from, amount, data);
        return IKIP7Receiver.onKIP7Received.selector;
    }
}
