//! Moving model updates between nodes.
//!
//! Today this crate holds [`frame`], the incremental, allocation-bounded reader of the stream frame
//! specified in docs/protocol.md §3, and [`limit`], the per-peer token buckets and connection
//! caps. Both are sans-IO: bytes (or `now`) go in, a complete [`frame::Frame`] (or a decision)
//! comes out, so the same code runs under QUIC, in tests and in fuzzing.

pub mod buf;
pub mod client;
pub mod frame;
pub mod heap;
pub mod limit;
pub mod proc;
pub mod quic;
pub mod tls;
mod udp;
