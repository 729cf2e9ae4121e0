//! The operations every aggregation backend provides, and the update view they consume.
//!
//! A backend owns the round's storage: up to `rows` dense update rows of `dim` f32 each (only for
//! rules that need all updates at once), one accumulator (streaming FedAvg) and one output vector.
//! The rules in [`crate::aggregate`] are written once against this trait; the CPU backend is the
//! reference and every other backend is tested against it with the same test bodies.

use crate::decode::{self, Encoding};
use thiserror::Error;

/// One tensor of an update: its encoded bytes and where its values go in the flat parameter
/// vector. Parameters no segment covers are zero in the update.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// First coordinate in the flat vector.
    pub offset: usize,
    /// Element count.
    pub numel: usize,
    /// How `bytes` encode the values.
    pub encoding: Encoding,
    /// The encoded values (a view into the envelope's payload).
    pub bytes: &'a [u8],
}

/// One client's update: segments in increasing, non-overlapping offset order.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The tensors.
    pub segments: &'a [Segment<'a>],
}

impl Update<'_> {
    /// Checks that the segments are ordered, disjoint and inside `dim`.
    pub fn check_layout(&self, dim: usize) -> Result<(), Error> {
        let mut end = 0usize;
        for (i, s) in self.segments.iter().enumerate() {
            let stop = s.offset.checked_add(s.numel).ok_or(Error::Layout { segment: i })?;
            if s.offset < end || stop > dim {
                return Err(Error::Layout { segment: i });
            }
            end = stop;
        }
        Ok(())
    }
}

/// Which implementation runs the math.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The reference, always built.
    Cpu,
    /// NVIDIA GPUs through the CUDA driver (feature `cuda`).
    Cuda,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Cpu => "cpu",
            Kind::Cuda => "cuda",
        })
    }
}

/// Why a backend operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A segment of an update cannot be decoded (the sender's fault).
    #[error("segment {segment}: {source}")]
    Decode {
        /// Index of the segment.
        segment: usize,
        /// What is wrong with it.
        source: decode::Error,
    },
    /// Segments overlap, are out of order or reach past the model dimension.
    #[error("segment {segment} overlaps its predecessor or ends past the model dimension")]
    Layout {
        /// Index of the first bad segment.
        segment: usize,
    },
    /// A row index or row count is past what [`Backend::prepare`] allocated.
    #[error("row {row} is past the {rows} rows prepared")]
    Row {
        /// The row asked for.
        row: usize,
        /// Rows prepared.
        rows: usize,
    },
    /// A slice argument has the wrong length.
    #[error("{what} has {got} elements, expected {want}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length required.
        want: usize,
    },
    /// The storage a round needs is over the configured limit.
    #[error("the round needs {need} bytes of update storage, the limit is {limit}")]
    Capacity {
        /// Bytes needed.
        need: u64,
        /// Bytes allowed.
        limit: u64,
    },
    /// The operating system refused memory for the rows a round stores.
    #[error("could not map {need} bytes of update storage: {source}")]
    Memory {
        /// Bytes asked for.
        need: u64,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No CUDA driver (libcuda) could be loaded on this machine.
    #[error("no CUDA driver: {0}")]
    NoCudaDriver(String),
    /// The CUDA driver, NVRTC or a kernel launch reported an error.
    #[error("CUDA: {0}")]
    Cuda(String),
}

/// Page-locks host memory for a backend's device copies, so a copy from it is a DMA straight
/// from that memory rather than through the driver's own page-locked bounce buffer. Locking
/// costs (the pages stay resident and registering takes milliseconds), so it suits long-lived
/// buffers that updates arrive in, such as the transport's pools.
pub trait PageLock: Send + Sync + std::fmt::Debug {
    /// Page-locks `region`; false if it could not (memlock limits, driver refusal). The caller
    /// keeps the memory where it is until it calls [`PageLock::unlock`] on exactly `region`.
    fn lock(&self, region: &[u8]) -> bool;
    /// Undoes a successful [`PageLock::lock`] of exactly `region`.
    fn unlock(&self, region: &[u8]);
}

/// The aggregation primitives. Rows are addressed by index; `rows` slices select a subset.
///
/// Contract shared by all implementations (the common test suite checks it): results are those
/// of the f64 reference within f32 rounding of a different summation order; a failed
/// `ingest` leaves the accumulator untouched; nothing panics on bad input.
pub trait Backend: Send {
    /// Which implementation this is.
    fn kind(&self) -> Kind;

    /// Most rows one order statistic (median, trimmed mean, closest-to-median mean) can take,
    /// if the backend has a limit.
    fn max_order_rows(&self) -> Option<usize> {
        None
    }

    /// How to page-lock host memory for this backend's device copies; None where there is no
    /// device (the CPU backend reads updates where they are).
    fn page_lock(&self) -> Option<std::sync::Arc<dyn PageLock>> {
        None
    }

    /// Allocates (or reuses) storage for `rows` dense rows of `dim` plus the accumulator and the
    /// output, and zeroes the accumulator.
    fn prepare(&mut self, dim: usize, rows: usize) -> Result<(), Error>;

    /// Validates `update`, returns its squared L2 norm, and adds
    /// `weight × min(1, clip / ‖update‖)` times it to the accumulator (`clip = None`: no
    /// clipping; a clip must be finite and > 0, as `aggregate::Round` checks). Nothing is added
    /// when the update is invalid.
    fn ingest(&mut self, update: &Update<'_>, weight: f32, clip: Option<f32>) -> Result<f64, Error>;

    /// [`Backend::ingest`] for several updates at once: each is validated on its own (a bad one
    /// is skipped and reported in its slot), then all valid ones are added in one pass over the
    /// accumulator, which then moves through memory once per batch instead of once per update.
    fn ingest_batch(&mut self, updates: &[Update<'_>], weights: &[f32], clip: Option<f32>) -> Vec<Result<f64, Error>> {
        updates.iter().zip(weights).map(|(u, w)| self.ingest(u, *w, clip)).collect()
    }

    /// Decodes `update` into row `row` (zero where no segment covers it) and returns its squared
    /// L2 norm. On error the row's content is unspecified.
    fn store_row(&mut self, row: usize, update: &Update<'_>) -> Result<f64, Error>;

    /// Multiplies row i by `factors[i]` for the first `factors.len()` rows.
    fn scale_rows(&mut self, factors: &[f32]) -> Result<(), Error>;

    /// Mixes rows in place: for each `t < targets.len()`, row `targets[t]` ← Σ_{j<n}
    /// `mix[t·n + j]` · row j, every sum over the rows as they were before the call (f32, j
    /// ascending, one rounded multiply and add per term, so every backend gives the same bits).
    /// The pre-aggregation steps (nearest-neighbour mixing, bucketing) are built on it.
    fn mix_rows(&mut self, n: usize, targets: &[u32], mix: &[f32]) -> Result<(), Error>;

    /// The n × n Gram matrix of rows 0..n, row-major, accumulated in f64.
    fn gram(&mut self, n: usize) -> Result<Vec<f64>, Error>;

    /// out = Σ weights[i] × row[rows[i]].
    fn weighted_sum(&mut self, rows: &[u32], weights: &[f32]) -> Result<(), Error>;

    /// out = coordinate-wise median of the selected rows (mean of the two middle values when
    /// their count is even).
    fn median(&mut self, rows: &[u32]) -> Result<(), Error>;

    /// out = coordinate-wise mean of the selected rows after dropping the `trim` smallest and
    /// `trim` largest values of each coordinate. Requires 2·trim < rows.len().
    fn trimmed_mean(&mut self, rows: &[u32], trim: usize) -> Result<(), Error>;

    /// [`Backend::median`] then [`Backend::dots_with_out`]`(n)`; a backend may fuse the two
    /// passes over the rows.
    fn median_with_dots(&mut self, rows: &[u32], n: usize) -> Result<(Vec<f64>, f64), Error> {
        self.median(rows)?;
        self.dots_with_out(n)
    }

    /// [`Backend::trimmed_mean`] then [`Backend::dots_with_out`]`(n)`, possibly fused.
    fn trimmed_mean_with_dots(&mut self, rows: &[u32], trim: usize, n: usize) -> Result<(Vec<f64>, f64), Error> {
        self.trimmed_mean(rows, trim)?;
        self.dots_with_out(n)
    }

    /// out = coordinate-wise mean of the `beta` values closest to that coordinate's median
    /// (Bulyan's second stage; ties go to the smaller value).
    fn closest_to_median_mean(&mut self, rows: &[u32], beta: usize) -> Result<(), Error>;

    /// ‖row[i] − out‖² for rows 0..n.
    fn dist_sq_to_out(&mut self, n: usize) -> Result<Vec<f64>, Error>;

    /// out += (1/n) Σ factors[i] (row[i] − out) over rows 0..n, n = factors.len() (one
    /// CenteredClip iteration).
    fn centered_clip_step(&mut self, factors: &[f32]) -> Result<(), Error>;

    /// [`Backend::centered_clip_step`] then [`Backend::dist_sq_to_out`] over the same rows (the
    /// next iteration's distances); a backend may fuse the two passes over the rows.
    fn centered_clip_step_with_dists(&mut self, factors: &[f32]) -> Result<Vec<f64>, Error> {
        self.centered_clip_step(factors)?;
        self.dist_sq_to_out(factors.len())
    }

    /// (row[i] · out for rows 0..n, ‖out‖²), accumulated in f64.
    fn dots_with_out(&mut self, n: usize) -> Result<(Vec<f64>, f64), Error>;

    /// out = scale × accumulator.
    fn out_from_acc(&mut self, scale: f32) -> Result<(), Error>;

    /// out[i] += std × z_i with z from [`crate::philox`]'s stream (`seed`, `round`): the words
    /// [`crate::philox::Secret::stream`] derives, never a value from a report.
    fn add_noise(&mut self, std: f32, seed: u64, round: u64) -> Result<(), Error>;

    /// Copies the output vector into `dst` (length `dim`).
    fn read_out(&mut self, dst: &mut [f32]) -> Result<(), Error>;
}
