//! Load generators and harnesses behind `vain bench`; the criterion benches are in `benches/`
//! (`cargo bench -p vain-bench`).

pub mod aggregate;
pub mod ingest;
mod proc;
pub mod quic;
