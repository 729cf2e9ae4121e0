// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Staking} from "./Staking.sol";

/// @title Node ids bound to the accounts that stake for them
/// @notice A node id is the node's Ed25519 root key. The EVM has no Ed25519 precompile, so the
/// contract cannot check the node's signature over the binding: it stores the signature and
/// nodes verify it off-chain when they read the registry (`registrationMessage` gives the exact
/// signed bytes). A registration whose signature does not verify is ignored by every node; for
/// that reason an id may be claimed by several accounts, and a squatter cannot lock a node out.
contract NodeRegistry {
    /// @notice One account's registration.
    struct Registration {
        bytes32 nodeId;
        Staking.Role role;
        bytes32 sigR;
        bytes32 sigS;
    }

    /// @notice Domain of the signed binding.
    bytes public constant DOMAIN = "vAIn/chain/registry/v1";

    /// @notice Where stake is read.
    Staking public immutable staking;
    mapping(address account => Registration) private registrations;
    mapping(bytes32 nodeId => address[]) private claims;

    event Registered(bytes32 indexed nodeId, address indexed account, Staking.Role role, bytes32 sigR, bytes32 sigS);
    event Deregistered(bytes32 indexed nodeId, address indexed account);

    /// @notice The account's stake does not back the role.
    error NotStaked(address account, Staking.Role role);
    /// @notice The account is registered already (deregister first).
    error AlreadyRegistered(address account, bytes32 nodeId);
    /// @notice The account has no registration.
    error NotRegistered(address account);
    /// @notice A node id of zero.
    error ZeroNodeId();

    constructor(Staking staking_) {
        staking = staking_;
    }

    /// @notice The bytes a node signs to bind itself to `account` in `role`:
    /// DOMAIN ‖ chain id (32 bytes) ‖ this contract (20) ‖ account (20) ‖ role (1).
    function registrationMessage(address account, Staking.Role role) public view returns (bytes memory) {
        return abi.encodePacked(DOMAIN, block.chainid, address(this), account, uint8(role));
    }

    /// @notice Bind the caller to `nodeId` in `role`, with the node's Ed25519 signature (r, s)
    /// over `registrationMessage(msg.sender, role)`. The caller's stake must back the role.
    function register(bytes32 nodeId, Staking.Role role, bytes32 sigR, bytes32 sigS) external {
        if (nodeId == bytes32(0)) revert ZeroNodeId();
        bytes32 current = registrations[msg.sender].nodeId;
        if (current != bytes32(0)) revert AlreadyRegistered(msg.sender, current);
        if (!staking.meetsMinimum(msg.sender, role)) revert NotStaked(msg.sender, role);
        registrations[msg.sender] = Registration(nodeId, role, sigR, sigS);
        claims[nodeId].push(msg.sender);
        emit Registered(nodeId, msg.sender, role, sigR, sigS);
    }

    /// @notice Remove the caller's registration.
    function deregister() external {
        bytes32 nodeId = registrations[msg.sender].nodeId;
        if (nodeId == bytes32(0)) revert NotRegistered(msg.sender);
        delete registrations[msg.sender];
        emit Deregistered(nodeId, msg.sender);
    }

    /// @notice The registration of `account` (node id zero when none).
    function registrationOf(address account) external view returns (Registration memory) {
        return registrations[account];
    }

    /// @notice Whether `account` is registered in `role` and its stake backs the role now.
    function isActive(address account, Staking.Role role) public view returns (bool) {
        Registration storage r = registrations[account];
        return r.nodeId != bytes32(0) && r.role == role && staking.meetsMinimum(account, role);
    }

    /// @notice How many accounts ever claimed `nodeId`.
    function claimCount(bytes32 nodeId) external view returns (uint256) {
        return claims[nodeId].length;
    }

    /// @notice Accounts that claimed `nodeId`, `limit` from `offset` (a claim whose account has
    /// since deregistered or re-registered elsewhere is still listed: check `registrationOf`).
    function claimsOf(bytes32 nodeId, uint256 offset, uint256 limit) external view returns (address[] memory out) {
        address[] storage all = claims[nodeId];
        if (offset >= all.length) return new address[](0);
        uint256 end = offset + limit > all.length ? all.length : offset + limit;
        out = new address[](end - offset);
        for (uint256 i = offset; i < end; i++) {
            out[i - offset] = all[i];
        }
    }
}
