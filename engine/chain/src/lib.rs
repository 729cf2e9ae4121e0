//! vAIn on chain.
//!
//! * [`contracts`]: alloy bindings to the Solidity contracts of `contracts/` (OpenZeppelin 5),
//!   generated from the committed artifacts.
//! * [`devnet`] and [`rpc`]: the embedded chain — an in-process EVM (revm) with a journal, served
//!   over Ethereum JSON-RPC — so a node, the demo and the tests anchor with nothing else running.
//! * [`deploy`]: the genesis deployment of every contract, on the embedded chain or any other.
//! * [`client`]: the node's view of the deployment: stake, registration, anchoring, attestation,
//!   inclusion proofs, governance, rewards and the pool, with reverts decoded ([`revert`]).
//!
//! alloy, not ethers-rs: ethers-rs is deprecated by its authors in favour of alloy.

pub mod account;
pub mod client;
pub mod contracts;
pub mod deploy;
pub mod devnet;
mod error;
pub mod revert;
pub mod rpc;

pub use client::Client;
pub use deploy::Deployment;
pub use error::Error;
