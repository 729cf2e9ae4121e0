//! The chain layer's errors.

use std::net::SocketAddr;
use std::path::PathBuf;

use alloy::primitives::{Address, B256};

use crate::revert::Revert;

/// What can go wrong on chain, in the embedded chain, or reading the chain's files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded chain's journal could not be read or written.
    #[error("chain journal {}: {source}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file in the journal's place is not an embedded chain journal.
    #[error("{} is not an embedded chain journal (wrong magic)", path.display())]
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// A journaled transaction no longer applies: the journal was written by other contracts
    /// or another version of the chain.
    #[error("chain journal {} at byte {offset}: {source}", path.display())]
    Replay {
        /// The journal file.
        path: PathBuf,
        /// Where the record starts.
        offset: usize,
        /// Why it did not apply.
        source: Box<Error>,
    },
    /// A transaction above the size limit.
    #[error("transaction of {len} bytes is above the limit of {max}")]
    TxTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A transaction that does not decode, whose signature does not recover, or that the EVM
    /// refuses before executing it (funds, gas limit); the reason is the decoder's or the EVM's.
    #[error("invalid transaction: {reason}")]
    BadTransaction {
        /// What was wrong.
        reason: String,
    },
    /// A transaction signed for another chain (or for none: pre-EIP-155).
    #[error("transaction for chain {got:?}, this chain is {expected}")]
    WrongChain {
        /// This chain's id.
        expected: u64,
        /// The transaction's.
        got: Option<u64>,
    },
    /// A transaction whose nonce is not the account's next.
    #[error("nonce {got} for {account}, expected {expected}")]
    BadNonce {
        /// The signer.
        account: Address,
        /// Its next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The JSON-RPC server could not listen.
    #[error("cannot serve the embedded chain on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A thread or runtime could not start.
    #[error("cannot start the chain's runtime: {0}")]
    Runtime(std::io::Error),
    /// The RPC endpoint failed or answered something unexpected.
    #[error("JSON-RPC {url}: {source}")]
    Rpc {
        /// The endpoint.
        url: String,
        /// The transport's error.
        source: Box<alloy::transports::TransportError>,
    },
    /// A call or transaction was refused by a contract; `revert` is its decoded error.
    #[error("{call} reverted: {revert}")]
    Reverted {
        /// What was called (`ReputationAnchor.anchorRound`).
        call: &'static str,
        /// The contract's error.
        revert: Revert,
    },
    /// A transaction was mined but failed (it passed estimation, then the state changed).
    #[error("{call}: transaction {tx} was mined but failed")]
    Failed {
        /// What was called.
        call: &'static str,
        /// The transaction.
        tx: B256,
    },
    /// A transaction was not mined in time.
    #[error("{call}: transaction {tx} not mined after {secs} s")]
    NotMined {
        /// What was called.
        call: &'static str,
        /// The transaction.
        tx: B256,
        /// How long it waited.
        secs: u64,
    },
    /// A contract's answer did not decode.
    #[error("{call}: {source}")]
    Contract {
        /// What was called.
        call: &'static str,
        /// alloy's error.
        source: Box<alloy::contract::Error>,
    },
    /// The deployment file could not be read or written.
    #[error("deployment file {}: {source}", path.display())]
    DeploymentFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The deployment file is not valid JSON of the expected shape.
    #[error("deployment file {}: {source}", path.display())]
    BadDeployment {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The endpoint is another chain than the deployment's.
    #[error("the RPC endpoint is chain {got}, the deployment is on chain {expected}")]
    ChainMismatch {
        /// The deployment's chain.
        expected: u64,
        /// The endpoint's.
        got: u64,
    },
    /// No contract at an address the deployment names.
    #[error("no {contract} contract at {address} on this chain")]
    NotDeployed {
        /// Which contract.
        contract: &'static str,
        /// Where it should be.
        address: Address,
    },
    /// The Ethereum account's key could not be loaded or stored.
    #[error("account key {}: {source}", path.display())]
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// The signer's error.
        source: alloy::signers::local::LocalSignerError,
    },
    /// A mnemonic that does not give a key.
    #[error("mnemonic: {source}")]
    Mnemonic {
        /// The signer's error.
        source: alloy::signers::local::LocalSignerError,
    },
    /// An amount or argument the contracts cannot take.
    #[error("invalid argument: {what}")]
    Argument {
        /// What is wrong with it.
        what: &'static str,
    },
}
