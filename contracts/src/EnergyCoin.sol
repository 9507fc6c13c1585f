// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import "@klaytn/contracts/KIP/token/KIP7/KIP7.sol";
import "@klaytn/contracts/KIP/token/KIP7/extensions/KIP7Burnable.sol";
import "@klaytn/contracts/KIP/token/KIP7/extensions/KIP7Mintable.sol";
import "@klaytn/contracts/KIP/token/KIP7/extensions/KIP7Pausable.sol";
import "@klaytn/contracts/KIP/token/KIP7/extensions/draft-KIP7Permit.sol";
import "./extensions/KIP7TransferAuthorization.sol";

/// @title EnergyCoin: the community's KIP-7 money
/// @notice Roles (AccessControl): DEFAULT_ADMIN_ROLE manages roles, MINTER_ROLE mints, PAUSER_ROLE pauses.
/// While paused every balance change (transfer, mint, burn, permit-based or authorized transfers) reverts.
/// Gas-free spending: EIP-2612 `permit` (sequential nonces) and ERC-3009 transfer/receive with
/// authorization (random nonces), both EIP-712 under the domain (name, "1", chain id, this address).
contract EnergyCoin is
    KIP7,
    KIP7Burnable,
    KIP7Mintable,
    KIP7Pausable,
    KIP7Permit,
    KIP7TransferAuthorization
{
    constructor(
        string memory name_,
        string memory symbol_,
        address admin
    ) KIP7(name_, symbol_) KIP7Permit(name_) {
        require(admin != address(0), "EnergyCoin: admin is the zero address");
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
    }

    /// @notice Create `amount` coins for `account` (minter only).
    /// @dev Plain `_mint`, unlike the library's `_safeMint`: issuing coins must not depend on the receiver
    /// implementing `onKIP7Received` (a market escrow contract, say). KIP-7 calls the hook only on
    /// `safeTransfer`/`safeTransferFrom`.
    function mint(address account, uint256 amount) public override returns (bool) {
        require(hasRole(MINTER_ROLE, _msgSender()), "KIP7Mintable: must have minter role to mint");
        _mint(account, amount);
        return true;
    }

    /// @notice KIP-13: IKIP7, IKIP7Metadata, IKIP7Mintable, IKIP7Burnable, IKIP7Pausable, IKIP13,
    /// IAccessControl and IAccessControlEnumerable.
    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(KIP7, KIP7Burnable, KIP7Mintable, KIP7Pausable)
        returns (bool)
    {
        return
            interfaceId == type(IKIP7Burnable).interfaceId ||
            interfaceId == type(IKIP7Mintable).interfaceId ||
            interfaceId == type(IKIP7Pausable).interfaceId ||
            KIP7.supportsInterface(interfaceId) ||
            AccessControlEnumerable.supportsInterface(interfaceId);
    }

    function _beforeTokenTransfer(address from, address to, uint256 amount) internal override(KIP7, KIP7Pausable) {
        super._beforeTokenTransfer(from, to, amount);
    }
}
