// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title VAIN, the network's token
/// @notice A fixed supply is minted once, at deployment. Minting more is possible only after the
/// owner — the governance timelock once the network is deployed — has enabled it.
contract VainToken is ERC20, ERC20Permit, ERC20Votes, Ownable {
    /// @notice Whether the owner may mint.
    bool public mintingEnabled;

    /// @notice Governance switched minting on or off.
    event MintingEnabled(bool enabled);

    /// @notice `mint` was called while minting is disabled.
    error MintingDisabled();

    constructor(address holder, uint256 supply, address initialOwner)
        ERC20("vAIn", "VAIN")
        ERC20Permit("vAIn")
        Ownable(initialOwner)
    {
        _mint(holder, supply);
    }

    /// @notice Switch minting on or off (governance only).
    function setMintingEnabled(bool enabled) external onlyOwner {
        mintingEnabled = enabled;
        emit MintingEnabled(enabled);
    }

    /// @notice Mint `amount` to `to` (governance only, and only while minting is enabled).
    function mint(address to, uint256 amount) external onlyOwner {
        if (!mintingEnabled) revert MintingDisabled();
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
