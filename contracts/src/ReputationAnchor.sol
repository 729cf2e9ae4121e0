// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {Staking} from "./Staking.sol";

/// @title A public trace of what aggregators accepted and what the ledger agreed on
/// @notice Per round, an active aggregator anchors the Merkle root of the updates it accepted
/// (the root of the round's signed close) and the digest of the checkpoint it produced (kept in
/// the `RoundAnchored` event: storing it too would put an anchor above 100k gas). Per
/// epoch, active validators attest the ledger's state digest. Anyone can then prove from the
/// chain alone that an update was accepted in a round (`verifyInclusion`). The tree is the
/// node's: leaf = keccak256(0x00 ‖ sender ‖ update digest), inner nodes keccak-256 of the
/// sorted pair (docs/protocol.md, "Merkle root of accepted updates").
contract ReputationAnchor {
    /// @notice Who may anchor and attest.
    NodeRegistry public immutable registry;
    mapping(bytes32 model => mapping(uint64 round => bytes32)) private roots;
    /// @notice One past the last anchored round of a model (0: none yet).
    mapping(bytes32 model => uint64) public nextRound;
    /// @notice Validators attesting each digest of an epoch.
    mapping(uint64 epoch => mapping(bytes32 digest => uint256)) public attestations;
    /// @notice Whether a validator attested an epoch.
    mapping(uint64 epoch => mapping(address validator => bool)) public attested;

    event RoundAnchored(
        bytes32 indexed model, uint64 indexed round, bytes32 root, bytes32 checkpoint, address indexed aggregator
    );
    event EpochAttested(uint64 indexed epoch, bytes32 digest, address indexed validator, uint256 count);

    /// @notice The caller is not a registered aggregator / validator with enough stake.
    error NotAuthorized(address account, Staking.Role role);
    /// @notice The round was anchored already, or a later one was.
    error RoundOutOfOrder(bytes32 model, uint64 round, uint64 next);
    /// @notice The validator attested this epoch already.
    error AlreadyAttested(uint64 epoch, address validator);

    constructor(NodeRegistry registry_) {
        registry = registry_;
    }

    /// @notice Anchor a round: rounds of a model are anchored in increasing order, each once.
    function anchorRound(bytes32 model, uint64 round, bytes32 root, bytes32 checkpoint) external {
        if (!registry.isActive(msg.sender, Staking.Role.Aggregator)) {
            revert NotAuthorized(msg.sender, Staking.Role.Aggregator);
        }
        uint64 next = nextRound[model];
        if (round < next) revert RoundOutOfOrder(model, round, next);
        nextRound[model] = round + 1;
        roots[model][round] = root;
        emit RoundAnchored(model, round, root, checkpoint, msg.sender);
    }

    /// @notice Attest the ledger's state digest at the end of `epoch`.
    function attestEpoch(uint64 epoch, bytes32 digest) external {
        if (!registry.isActive(msg.sender, Staking.Role.Validator)) {
            revert NotAuthorized(msg.sender, Staking.Role.Validator);
        }
        if (attested[epoch][msg.sender]) revert AlreadyAttested(epoch, msg.sender);
        attested[epoch][msg.sender] = true;
        uint256 count = ++attestations[epoch][digest];
        emit EpochAttested(epoch, digest, msg.sender, count);
    }

    /// @notice The root anchored for a round (zero when none was, or when the round accepted
    /// no update).
    function rootOf(bytes32 model, uint64 round) external view returns (bytes32) {
        return roots[model][round];
    }

    /// @notice The leaf of an update: keccak256(0x00 ‖ sender ‖ update digest).
    function leafOf(bytes32 sender, bytes32 updateDigest) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x00), sender, updateDigest));
    }

    /// @notice Whether `proof` shows `leaf` among the updates accepted in `round` of `model`.
    function verifyInclusion(bytes32 model, uint64 round, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        bytes32 root = roots[model][round];
        return root != bytes32(0) && MerkleProof.verifyCalldata(proof, root, leaf);
    }
}
