// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @dev The ERC-3009 function of the energy coin that the relay calls.
interface ITransferWithAuthorization {
    function transferWithAuthorization(
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

/// @title AuthorizationRelay
/// @notice Submits many user-signed ERC-3009 transfers in one transaction, so the platform's relayer pays
/// the gas of a whole batch at once. Each item is isolated: a failing authorization (expired, reused, wrong
/// signer, paused coin) is reported by `RelayFailed` and does not revert the others. Successful items emit
/// the token's own `AuthorizationUsed`. Anyone may call it: every item carries its signer's authorization,
/// and a nonce can be used only once, so relaying twice moves nothing twice.
contract AuthorizationRelay {
    struct Authorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    ITransferWithAuthorization public immutable token;

    event RelayFailed(address indexed authorizer, bytes32 indexed nonce, bytes reason);

    constructor(address token_) {
        token = ITransferWithAuthorization(token_);
    }

    function relay(Authorization[] calldata items) external returns (uint256 succeeded) {
        for (uint256 i = 0; i < items.length; ++i) {
            Authorization calldata a = items[i];
            try token.transferWithAuthorization(
                a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, a.v, a.r, a.s
            ) {
                ++succeeded;
            } catch (bytes memory reason) {
                emit RelayFailed(a.from, a.nonce, reason);
            }
        }
    }
}
