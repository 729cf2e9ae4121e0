//! Load generators and harnesses behind `vain bench`; the criterion benches are in `benches/`
//! (`cargo bench -p vain-bench`).

pub mod aggregate;
mod error;
pub use error::Error;
pub mod flood;
pub mod ingest;
pub mod quic;
