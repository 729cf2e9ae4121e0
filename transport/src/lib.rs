//! Moving model updates between nodes.
//!
//! Today this crate holds [`frame`], the incremental, allocation-bounded reader of the stream frame
//! specified in docs/protocol.md §3. It is sans-IO: bytes go in as they arrive from any stream, a
//! complete [`frame::Frame`] comes out, so the same code runs under QUIC, in tests and in fuzzing.

pub mod buf;
pub mod frame;
