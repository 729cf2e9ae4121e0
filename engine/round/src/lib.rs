//! The round protocol between aggregators and clients (docs/protocol.md, "Round protocol").
//!
//! An aggregator's [`coordinator`] selects the round's participants among the clients it knows
//! from the control plane (weighted by its reputation ledger and their advertised capacity),
//! signs an [`msg::Open`] and sends it to each of them over `/vain/round/1.0.0`; it opens the
//! round on its QUIC ingest service, collects until every participant sent or the deadline
//! passes, aggregates, stores the new checkpoint content-addressed, scores the updates into its
//! ledger and publishes a signed [`msg::Close`]. A client's [`participant`] verifies the open
//! against the aggregator's announcement, fetches the base checkpoint by digest, trains on its
//! own data and sends the signed update to the aggregator's announced QUIC endpoint. A
//! [`validator`] checks every close it is sent and evaluates its checkpoint.

pub mod coordinator;
pub mod merkle;
pub mod msg;
pub mod participant;
pub mod store;
pub mod validator;

use std::path::PathBuf;
use thiserror::Error;

/// Why a round step failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A message does not decode.
    #[error("malformed message: {0}")]
    Malformed(#[from] vain_core::codec::Error),
    /// A fetched checkpoint's bytes do not hash to the digest asked for.
    #[error("checkpoint bytes do not match their digest")]
    CheckpointDigest,
    /// A checkpoint's length is not a whole number of f32 values.
    #[error("checkpoint of {0} bytes is not a whole number of f32 values")]
    CheckpointLength(usize),
    /// The peer asked does not hold the checkpoint.
    #[error("the peer does not hold the checkpoint")]
    CheckpointMissing,
    /// No holder of the checkpoint gave intact bytes.
    #[error("no holder of checkpoint {0} answered with intact bytes")]
    CheckpointUnavailable(String),
    /// The control plane failed.
    #[error("control plane: {0}")]
    Net(#[from] vain_net::Error),
    /// The ingest service failed.
    #[error("ingest service: {0}")]
    Service(#[from] vain_aggregator::Error),
    /// Aggregation failed.
    #[error("aggregation: {0}")]
    Aggregate(#[from] vain_kernels::aggregate::Error),
    /// Training or the model failed.
    #[error("learning: {0}")]
    Learn(#[from] vain_learn::Error),
    /// An update could not be built.
    #[error("update: {0}")]
    Update(#[from] vain_ingest::update::Error),
    /// Sending the update failed.
    #[error("sending the update: {0}")]
    Send(#[from] vain_transport::client::Error),
    /// The round's settings are invalid.
    #[error("config: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Wall-clock now in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// First bytes of a key, in hex, for logs.
pub fn short(key: &[u8]) -> String {
    key.iter().take(4).map(|b| format!("{b:02x}")).collect()
}
