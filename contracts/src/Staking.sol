// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title Stake behind a node's roles
/// @notice Accounts stake VAIN; a role (client, aggregator, validator) needs a minimum stake.
/// Unstaking waits an unbonding delay, so a node cannot misbehave and leave with its stake
/// before governance reacts. Only the owner — the governance timelock — slashes and sets
/// the parameters.
contract Staking is Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice The roles a stake can back; the same numbering as the node's roles.
    enum Role {
        Client,
        Aggregator,
        Validator
    }

    /// @notice Stake waiting out the unbonding delay.
    struct Unbonding {
        uint256 amount;
        uint64 releaseAt;
    }

    /// @notice Longest unbonding delay governance may set.
    uint64 public constant MAX_UNBONDING_DELAY = 365 days;

    /// @notice The staked token.
    IERC20 public immutable token;
    /// @notice Seconds between an unstake request and the withdrawal it allows.
    uint64 public unbondingDelay;
    /// @notice Bonded stake per account.
    mapping(address account => uint256) public stakeOf;
    /// @notice Stake leaving, per account.
    mapping(address account => Unbonding) public unbondingOf;
    /// @notice Minimum bonded stake per role.
    mapping(Role role => uint256) public minimumStake;
    /// @notice Sum of bonded stake.
    uint256 public totalStaked;

    event Staked(address indexed account, uint256 amount, uint256 total);
    event UnstakeRequested(address indexed account, uint256 amount, uint64 releaseAt);
    event Withdrawn(address indexed account, uint256 amount);
    event Slashed(address indexed account, uint256 amount, address indexed recipient);
    event MinimumStakeSet(Role indexed role, uint256 amount);
    event UnbondingDelaySet(uint64 delay);

    /// @notice An amount of zero.
    error ZeroAmount();
    /// @notice More was asked than is staked.
    error InsufficientStake(uint256 staked, uint256 requested);
    /// @notice The unbonding delay has not passed yet.
    error StillBonding(uint64 releaseAt, uint64 now_);
    /// @notice Nothing is waiting to be withdrawn.
    error NothingToWithdraw();
    /// @notice A delay above `MAX_UNBONDING_DELAY`.
    error DelayTooLong(uint64 delay);

    constructor(IERC20 token_, uint64 unbondingDelay_, uint256[3] memory minimums, address initialOwner)
        Ownable(initialOwner)
    {
        if (unbondingDelay_ > MAX_UNBONDING_DELAY) revert DelayTooLong(unbondingDelay_);
        token = token_;
        unbondingDelay = unbondingDelay_;
        for (uint8 r = 0; r < 3; r++) {
            minimumStake[Role(r)] = minimums[r];
            emit MinimumStakeSet(Role(r), minimums[r]);
        }
        emit UnbondingDelaySet(unbondingDelay_);
    }

    /// @notice Bond `amount` more (the caller must have approved it).
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        token.safeTransferFrom(msg.sender, address(this), amount);
        stakeOf[msg.sender] += amount;
        totalStaked += amount;
        emit Staked(msg.sender, amount, stakeOf[msg.sender]);
    }

    /// @notice Start unbonding `amount`; every pending amount is released together, one delay
    /// after the latest request.
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 staked = stakeOf[msg.sender];
        if (amount > staked) revert InsufficientStake(staked, amount);
        stakeOf[msg.sender] = staked - amount;
        totalStaked -= amount;
        Unbonding storage u = unbondingOf[msg.sender];
        u.amount += amount;
        u.releaseAt = uint64(block.timestamp) + unbondingDelay;
        emit UnstakeRequested(msg.sender, amount, u.releaseAt);
    }

    /// @notice Withdraw what has finished unbonding.
    function withdraw() external nonReentrant {
        Unbonding memory u = unbondingOf[msg.sender];
        if (u.amount == 0) revert NothingToWithdraw();
        if (block.timestamp < u.releaseAt) revert StillBonding(u.releaseAt, uint64(block.timestamp));
        delete unbondingOf[msg.sender];
        token.safeTransfer(msg.sender, u.amount);
        emit Withdrawn(msg.sender, u.amount);
    }

    /// @notice Take up to `amount` of an account's stake, bonded first, then unbonding, and
    /// send it to `recipient` (governance only).
    function slash(address account, uint256 amount, address recipient) external onlyOwner nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 fromBonded = amount < stakeOf[account] ? amount : stakeOf[account];
        stakeOf[account] -= fromBonded;
        totalStaked -= fromBonded;
        uint256 rest = amount - fromBonded;
        Unbonding storage u = unbondingOf[account];
        uint256 fromUnbonding = rest < u.amount ? rest : u.amount;
        u.amount -= fromUnbonding;
        uint256 taken = fromBonded + fromUnbonding;
        if (taken > 0) token.safeTransfer(recipient, taken);
        emit Slashed(account, taken, recipient);
    }

    /// @notice Whether `account`'s bonded stake backs `role`.
    function meetsMinimum(address account, Role role) public view returns (bool) {
        uint256 staked = stakeOf[account];
        return staked > 0 && staked >= minimumStake[role];
    }

    /// @notice Set a role's minimum stake (governance only).
    function setMinimumStake(Role role, uint256 amount) external onlyOwner {
        minimumStake[role] = amount;
        emit MinimumStakeSet(role, amount);
    }

    /// @notice Set the unbonding delay for later requests (governance only).
    function setUnbondingDelay(uint64 delay) external onlyOwner {
        if (delay > MAX_UNBONDING_DELAY) revert DelayTooLong(delay);
        unbondingDelay = delay;
        emit UnbondingDelaySet(delay);
    }
}
