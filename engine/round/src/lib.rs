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
//! [`validator`] checks every close it is sent and evaluates its checkpoint; its
//! [`challenger`] challenges every node's claimed capacity and measures its uptime.

pub mod auditor;
pub mod challenger;
pub mod coordinator;
pub mod experience;
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
    #[error("no holder of checkpoint {} answered with intact bytes", hex::encode(&.0[..4]))]
    CheckpointUnavailable(vain_schema::Digest),
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
    /// DP noise was asked for without a clip bound (the noise is scaled to the clip).
    #[error("config: noise needs a clip bound")]
    NoiseWithoutClip,
    /// A thread could not be started.
    #[error("starting the {name} thread: {source}")]
    Thread {
        /// The thread.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The OS random generator failed.
    #[error("the OS random generator: {0}")]
    Random(#[source] getrandom::Error),
    /// An update's frame could not be written for the journal.
    #[error("framing an update: {0}")]
    Frame(#[source] vain_schema::Error),
    /// A state or row file could not be encoded.
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A checkpoint does not have the model's size.
    #[error("checkpoint has {got} values, {model} has {expected}")]
    CheckpointSize {
        /// Values in the checkpoint.
        got: usize,
        /// The model.
        model: &'static str,
        /// Values of the model.
        expected: usize,
    },
    /// An update frame failed the checks an aggregator makes.
    #[error("update refused: {0}")]
    Refused(#[source] vain_ingest::Reject),
    /// An update's values do not decode.
    #[error("decoding an update: {0}")]
    Decode(#[from] vain_kernels::decode::Error),
    /// An open names a codec this client does not know.
    #[error("unknown codec {0:?}")]
    UnknownCodec(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// First bytes of a key, in hex, for logs.
pub fn short(key: &[u8]) -> String {
    hex::encode(&key[..key.len().min(4)])
}
