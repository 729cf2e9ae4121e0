// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title A constant-product pool of VAIN against a second ERC-20
/// @notice x·y = k with a swap fee that stays in the pool (so it accrues to liquidity
/// providers); the pool's own ERC-20 is the LP share. Every state-changing call takes a
/// deadline and a minimum output, and is guarded against reentrancy. Reserves follow the
/// pool's balances after each transfer, so a token that transfers less than asked cannot
/// inflate them.
contract LiquidityPool is ERC20, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Shares locked forever at the first deposit, so the share price cannot be
    /// pushed to where one share is worth more than anyone can deposit.
    uint256 public constant MINIMUM_LIQUIDITY = 1000;
    /// @notice Where the locked shares go (the ERC-20 refuses address zero).
    address public constant LOCKED = address(0xdead);
    /// @notice Fee denominator: fees are in basis points.
    uint256 public constant BPS = 10_000;

    IERC20 public immutable token0;
    IERC20 public immutable token1;
    /// @notice Swap fee in basis points (30 = 0.3 %).
    uint256 public immutable feeBps;
    uint256 public reserve0;
    uint256 public reserve1;

    event LiquidityAdded(address indexed provider, uint256 amount0, uint256 amount1, uint256 shares, address to);
    event LiquidityRemoved(address indexed provider, uint256 amount0, uint256 amount1, uint256 shares, address to);
    event Swapped(address indexed trader, address tokenIn, uint256 amountIn, uint256 amountOut, address to);

    /// @notice The deadline has passed.
    error Expired(uint256 deadline, uint256 now_);
    /// @notice The output is below the caller's minimum.
    error SlippageExceeded(uint256 amount, uint256 minimum);
    /// @notice The token is neither of the pool's.
    error UnknownToken(address token);
    /// @notice An amount of zero, or a deposit too small to mint a share.
    error ZeroAmount();
    /// @notice The pool has no liquidity for this.
    error InsufficientLiquidity();
    /// @notice A fee of 100 % or more.
    error BadFee(uint256 feeBps);

    modifier before(uint256 deadline) {
        if (block.timestamp > deadline) revert Expired(deadline, block.timestamp);
        _;
    }

    constructor(IERC20 token0_, IERC20 token1_, uint256 feeBps_) ERC20("vAIn LP", "VAIN-LP") {
        if (feeBps_ >= BPS) revert BadFee(feeBps_);
        token0 = token0_;
        token1 = token1_;
        feeBps = feeBps_;
    }

    /// @notice Deposit at the pool's ratio (the first deposit sets it); mints shares to `to`.
    function addLiquidity(uint256 amount0Desired, uint256 amount1Desired, uint256 minShares, address to, uint256 deadline)
        external
        nonReentrant
        before(deadline)
        returns (uint256 shares, uint256 amount0, uint256 amount1)
    {
        if (amount0Desired == 0 || amount1Desired == 0) revert ZeroAmount();
        uint256 supply = totalSupply();
        if (supply == 0) {
            (amount0, amount1) = (amount0Desired, amount1Desired);
        } else {
            uint256 optimal1 = Math.mulDiv(amount0Desired, reserve1, reserve0);
            if (optimal1 <= amount1Desired) {
                (amount0, amount1) = (amount0Desired, optimal1);
            } else {
                (amount0, amount1) = (Math.mulDiv(amount1Desired, reserve0, reserve1), amount1Desired);
            }
        }
        uint256 got0 = _pull(token0, amount0);
        uint256 got1 = _pull(token1, amount1);
        if (supply == 0) {
            uint256 root = Math.sqrt(got0 * got1);
            if (root <= MINIMUM_LIQUIDITY) revert ZeroAmount();
            shares = root - MINIMUM_LIQUIDITY;
            _mint(LOCKED, MINIMUM_LIQUIDITY);
        } else {
            shares = Math.min(Math.mulDiv(got0, supply, reserve0), Math.mulDiv(got1, supply, reserve1));
        }
        if (shares == 0) revert ZeroAmount();
        if (shares < minShares) revert SlippageExceeded(shares, minShares);
        _mint(to, shares);
        _sync();
        emit LiquidityAdded(msg.sender, got0, got1, shares, to);
        return (shares, got0, got1);
    }

    /// @notice Burn `shares` of the caller for their part of both reserves, sent to `to`.
    function removeLiquidity(uint256 shares, uint256 min0, uint256 min1, address to, uint256 deadline)
        external
        nonReentrant
        before(deadline)
        returns (uint256 amount0, uint256 amount1)
    {
        if (shares == 0) revert ZeroAmount();
        uint256 supply = totalSupply();
        amount0 = Math.mulDiv(shares, reserve0, supply);
        amount1 = Math.mulDiv(shares, reserve1, supply);
        if (amount0 < min0) revert SlippageExceeded(amount0, min0);
        if (amount1 < min1) revert SlippageExceeded(amount1, min1);
        _burn(msg.sender, shares);
        token0.safeTransfer(to, amount0);
        token1.safeTransfer(to, amount1);
        _sync();
        emit LiquidityRemoved(msg.sender, amount0, amount1, shares, to);
    }

    /// @notice Swap `amountIn` of `tokenIn` for at least `minOut` of the other token, sent to `to`.
    function swap(address tokenIn, uint256 amountIn, uint256 minOut, address to, uint256 deadline)
        external
        nonReentrant
        before(deadline)
        returns (uint256 amountOut)
    {
        if (amountIn == 0) revert ZeroAmount();
        bool zeroForOne;
        if (tokenIn == address(token0)) zeroForOne = true;
        else if (tokenIn != address(token1)) revert UnknownToken(tokenIn);
        (IERC20 inToken, IERC20 outToken) = zeroForOne ? (token0, token1) : (token1, token0);
        (uint256 reserveIn, uint256 reserveOut) = zeroForOne ? (reserve0, reserve1) : (reserve1, reserve0);
        if (reserveIn == 0 || reserveOut == 0) revert InsufficientLiquidity();
        uint256 got = _pull(inToken, amountIn);
        amountOut = _amountOut(got, reserveIn, reserveOut);
        if (amountOut == 0) revert InsufficientLiquidity();
        if (amountOut < minOut) revert SlippageExceeded(amountOut, minOut);
        outToken.safeTransfer(to, amountOut);
        uint256 kBefore = reserve0 * reserve1;
        _sync();
        // The fee keeps k growing; anything else is a bug in the arithmetic above.
        assert(reserve0 * reserve1 >= kBefore);
        emit Swapped(msg.sender, tokenIn, got, amountOut, to);
    }

    /// @notice What a swap of `amountIn` of `tokenIn` would pay now.
    function quote(address tokenIn, uint256 amountIn) external view returns (uint256) {
        if (tokenIn == address(token0)) return _amountOut(amountIn, reserve0, reserve1);
        if (tokenIn == address(token1)) return _amountOut(amountIn, reserve1, reserve0);
        revert UnknownToken(tokenIn);
    }

    function _amountOut(uint256 amountIn, uint256 reserveIn, uint256 reserveOut) private view returns (uint256) {
        uint256 inWithFee = amountIn * (BPS - feeBps);
        return Math.mulDiv(inWithFee, reserveOut, reserveIn * BPS + inWithFee);
    }

    function _pull(IERC20 token, uint256 amount) private returns (uint256) {
        uint256 before_ = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        return token.balanceOf(address(this)) - before_;
    }

    function _sync() private {
        reserve0 = token0.balanceOf(address(this));
        reserve1 = token1.balanceOf(address(this));
    }
}
