// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";

/// @title Per-epoch token rewards, claimed with a Merkle proof
/// @notice A publisher posts, per epoch, the root of a tree of (index, account, amount) — the
/// contributors weighted by the ledger's reputation and accepted updates — and its total; each
/// leaf is claimed once. Leaves are OpenZeppelin's standard double hash:
/// keccak256(keccak256(abi.encode(index, account, amount))), pairs sorted. The admin (the
/// governance timelock) grants the publisher role and caps each epoch's total.
contract Rewards is AccessControl {
    using SafeERC20 for IERC20;
    using BitMaps for BitMaps.BitMap;

    /// @notice Role allowed to publish an epoch's root.
    bytes32 public constant PUBLISHER_ROLE = keccak256("PUBLISHER_ROLE");

    /// @notice A published epoch.
    struct Epoch {
        bytes32 root;
        uint256 total;
        uint256 claimed;
    }

    /// @notice The reward token.
    IERC20 public immutable token;
    /// @notice Largest total one epoch may distribute.
    uint256 public maxPerEpoch;
    mapping(uint64 epoch => Epoch) private epochs;
    mapping(uint64 epoch => BitMaps.BitMap) private claimedLeaves;

    event EpochPublished(uint64 indexed epoch, bytes32 root, uint256 total);
    event Claimed(uint64 indexed epoch, uint256 index, address indexed account, uint256 amount);
    event MaxPerEpochSet(uint256 cap);

    /// @notice The epoch has a root already.
    error EpochAlreadyPublished(uint64 epoch);
    /// @notice No root was published for the epoch.
    error UnknownEpoch(uint64 epoch);
    /// @notice The total is above the cap.
    error OverCap(uint256 total, uint256 cap);
    /// @notice The leaf was claimed already.
    error AlreadyClaimed(uint64 epoch, uint256 index);
    /// @notice The proof does not lead to the epoch's root.
    error InvalidProof();
    /// @notice Claims would exceed the epoch's published total.
    error ExceedsTotal(uint64 epoch, uint256 total);

    constructor(IERC20 token_, uint256 maxPerEpoch_, address admin) {
        token = token_;
        maxPerEpoch = maxPerEpoch_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit MaxPerEpochSet(maxPerEpoch_);
    }

    /// @notice Publish an epoch's root and total (publisher only, once per epoch).
    function publish(uint64 epoch, bytes32 root, uint256 total) external onlyRole(PUBLISHER_ROLE) {
        if (epochs[epoch].root != bytes32(0)) revert EpochAlreadyPublished(epoch);
        if (total > maxPerEpoch) revert OverCap(total, maxPerEpoch);
        epochs[epoch] = Epoch(root, total, 0);
        emit EpochPublished(epoch, root, total);
    }

    /// @notice Pay leaf `index` of `epoch` — `amount` to `account` — once.
    function claim(uint64 epoch, uint256 index, address account, uint256 amount, bytes32[] calldata proof) external {
        Epoch storage e = epochs[epoch];
        if (e.root == bytes32(0)) revert UnknownEpoch(epoch);
        if (claimedLeaves[epoch].get(index)) revert AlreadyClaimed(epoch, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, e.root, leaf)) revert InvalidProof();
        if (e.claimed + amount > e.total) revert ExceedsTotal(epoch, e.total);
        claimedLeaves[epoch].set(index);
        e.claimed += amount;
        token.safeTransfer(account, amount);
        emit Claimed(epoch, index, account, amount);
    }

    /// @notice Whether leaf `index` of `epoch` was claimed.
    function isClaimed(uint64 epoch, uint256 index) external view returns (bool) {
        return claimedLeaves[epoch].get(index);
    }

    /// @notice A published epoch (zeros when none).
    function epochOf(uint64 epoch) external view returns (Epoch memory) {
        return epochs[epoch];
    }

    /// @notice Cap each epoch's total (admin only).
    function setMaxPerEpoch(uint256 cap) external onlyRole(DEFAULT_ADMIN_ROLE) {
        maxPerEpoch = cap;
        emit MaxPerEpochSet(cap);
    }
}
