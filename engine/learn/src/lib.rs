//! Local learning for vAIn: models, MNIST data, partitions across clients, local training,
//! attacks, and a whole federation in one process.
//!
//! Everything here is sans-network: [`federation`] runs clients, aggregator and ledger in one
//! process with the same encoders, envelopes, ingest checks, kernels and reputation core that
//! the networked node uses, so what it shows is what the system does.

pub mod attack;
pub mod client;
pub mod data;
pub mod federation;
pub mod judge;
pub mod model;
pub mod partition;
pub mod train;

pub use candle_core::{DType, Device};
pub use rand_chacha::ChaCha20Rng;

use std::path::PathBuf;
use thiserror::Error;

/// A seeded random stream (ChaCha20), as every client's training uses.
pub fn seeded(seed: u64) -> ChaCha20Rng {
    <ChaCha20Rng as rand::SeedableRng>::seed_from_u64(seed)
}

/// Why learning failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed (shape mismatch, device error).
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A data file is bad.
    #[error("data: {0}")]
    Data(#[from] data::Error),
    /// A partition could not be made.
    #[error("partition: {0}")]
    Partition(#[from] partition::Error),
    /// No model has this id.
    #[error("unknown model {0:?} (mnist-mlp, mnist-cnn)")]
    UnknownModel(String),
    /// A flat vector has the wrong length for the model.
    #[error("{model} has {expected} parameters, got {got}")]
    Dim {
        /// Model id.
        model: &'static str,
        /// Its parameter count.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A shape or bound is invalid.
    #[error("invalid {what}")]
    Shape {
        /// What.
        what: &'static str,
    },
    /// A file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A checkpoint does not match the model.
    #[error("{file}: {why}")]
    Checkpoint {
        /// The file.
        file: PathBuf,
        /// What differs.
        why: String,
    },
    /// safetensors refused the bytes.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// A command-line value does not parse.
    #[error("cannot parse {what} from {text:?}")]
    Parse {
        /// What was expected.
        what: &'static str,
        /// The text.
        text: String,
    },
    /// The client could not build its update.
    #[error("update: {0}")]
    Update(#[from] vain_ingest::update::Error),
    /// The aggregation failed.
    #[error("aggregation: {0}")]
    Aggregate(#[from] vain_kernels::aggregate::Error),
    /// A federation parameter is out of range.
    #[error("{0}")]
    Config(&'static str),
}
