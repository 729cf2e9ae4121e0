// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A hostile ERC-20 that calls back into a target during `transferFrom`
/// @notice Used by the tests to show that the pool refuses reentrancy: once armed, every
/// `transferFrom` first calls `target` with `payload` and bubbles up its revert.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public payload;

    constructor(address holder, uint256 supply) ERC20("Reentrant", "REE") {
        _mint(holder, supply);
    }

    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        if (target != address(0)) {
            (bool ok, bytes memory ret) = target.call(payload);
            if (!ok) {
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
        return super.transferFrom(from, to, value);
    }
}
