//! Aggregation math on plain slices; no I/O and no dependency on the rest of vAIn.
//!
//! [`decode`] is the CPU reference for turning one tensor's encoded update (every encoding of
//! docs/protocol.md §5) into f32 values, or adding it, weighted, into an accumulator without an
//! intermediate dense copy. Every faster backend is tested against it.

pub mod decode;
