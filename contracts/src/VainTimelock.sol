// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title The governance timelock
/// @notice OpenZeppelin's TimelockController unchanged: the governor proposes and cancels,
/// anyone executes a passed operation once its delay is over.
contract VainTimelock is TimelockController {
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
