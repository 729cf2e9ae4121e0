//! Aggregation math on plain slices; no I/O and no dependency on the rest of vAIn.
//!
//! [`decode`] is the scalar reference for turning one tensor's encoded update (every encoding of
//! docs/protocol.md §5) into f32 values. [`backend::Backend`] is the set of primitives a backend
//! implements — [`cpu::CpuBackend`] always, `cuda::CudaBackend` with feature `cuda` — and
//! [`aggregate`] runs the robust rules, clipping, DP noise and anomaly scores on top of any of
//! them. [`encode`] is the client side, [`philox`] the noise stream, [`privacy`] the accountant.

pub mod aggregate;
pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod decode;
pub mod encode;
pub mod philox;
pub mod privacy;
pub mod reference;
