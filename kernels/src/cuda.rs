//! The CUDA backend: [`CudaBackend`] runs [`Backend`] on an NVIDIA GPU through the CUDA driver
//! API (cudarc, loaded at run time), with kernels compiled from `kernels/cuda/*.cu` by NVRTC.
//!
//! Nothing here needs CUDA at build time. [`CudaBackend::new`] returns
//! [`Error::NoCudaDriver`] where libcuda cannot be loaded, and every driver, NVRTC or launch
//! failure becomes [`Error::Cuda`]; nothing panics on a machine without a GPU.
//!
//! Kernels: `decode.cu` (validate, decode and accumulate one update's segments in one launch),
//! `reduce.cu` (row scaling, the Gram matrix, distances and dots to the output, weighted sums,
//! CenteredClip, out = scale·acc), `robust.cu` (coordinate-wise median, trimmed mean and
//! Bulyan's closest-to-median mean for up to [`MAX_SUBSET`] rows) and `noise.cu` (the Philox
//! Gaussian stream of [`crate::philox`], bit for bit). Each file's header comment gives its
//! layout conventions; `common.cuh` (types and the block-wide sum every reduction uses) is put
//! in front of each before it is compiled. [`CudaBackend::new`] compiles every module with `--fmad=false` for the
//! device's own compute capability (the highest of [`ARCHS`] not above it: A100 `compute_80`,
//! A10/RTX 30 `compute_86`, L4/L40S `compute_89`, H100/H200 `compute_90`, …), caches the PTX per
//! architecture for the process, and loads every module then, so a device the kernels cannot
//! run on fails at start-up (and `--backend auto` falls back to the CPU) rather than at the
//! first update.
//!
//! Storage lives on the device: the rows (rows × dim f32, row-major), the accumulator and the
//! output (dim f32 each), plus a staging buffer for updates and small argument/result buffers.
//! Buffers grow on demand and are reused.

// cudarc's kernel launches (`LaunchArgs::launch`) and library probes (`is_culib_present`) are
// `unsafe fn`s: the compiler cannot check kernel signatures or what a dlopen'ed library does.
// Every `unsafe` block below states why its use is sound.
#![allow(unsafe_code)]

use crate::backend::{Backend, Error, Kind, PageLock, Segment, Update};
use crate::decode::{self, Encoding};
use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, DriverError, LaunchConfig,
    PinnedHostSlice, PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The largest row subset [`Backend::median`], [`Backend::trimmed_mean`] and
/// [`Backend::closest_to_median_mean`] accept on CUDA (the sorting network of `robust.cu` keeps
/// one coordinate's values in registers); more gives [`Error::Length`].
pub const MAX_SUBSET: usize = 256;
/// Most rows [`Backend::mix_rows`] mixes on the GPU (reduce.cu's `MIX_MAX`: each thread holds
/// one column of them).
pub const MIX_MAX: usize = 256;

/// What every module shares (types, the block-wide sum), put in front of each source.
const COMMON: &str = include_str!("../cuda/common.cuh");

/// The kernel sources, in module order.
const SOURCES: [(&str, &str); 4] = [
    ("decode.cu", include_str!("../cuda/decode.cu")),
    ("reduce.cu", include_str!("../cuda/reduce.cu")),
    ("robust.cu", include_str!("../cuda/robust.cu")),
    ("noise.cu", include_str!("../cuda/noise.cu")),
];
const MOD_DECODE: usize = 0;
const MOD_REDUCE: usize = 1;
const MOD_ROBUST: usize = 2;
const MOD_NOISE: usize = 3;

/// Virtual architectures the kernels are compiled for: a device gets the highest one not above
/// its compute capability (PTX runs on any later device through the driver's JIT).
pub const ARCHS: [(u32, &str); 8] = [
    (70, "compute_70"),
    (75, "compute_75"),
    (80, "compute_80"),
    (86, "compute_86"),
    (87, "compute_87"),
    (89, "compute_89"),
    (90, "compute_90"),
    (100, "compute_100"),
];

/// The PTX of each (architecture, source), compiled on first use and shared by every backend
/// of the process.
static PTX: [[OnceLock<Result<Ptx, String>>; 4]; ARCHS.len()] = [const { [const { OnceLock::new() }; 4] }; ARCHS.len()];

/// The index in [`ARCHS`] for a device of compute capability `major.minor`, or `None` when the
/// device is older than every architecture the kernels are built for.
pub fn arch_for(major: u32, minor: u32) -> Option<usize> {
    let cc = major * 10 + minor;
    ARCHS.iter().rposition(|(a, _)| *a <= cc)
}

/// Must match decode.cu: BLOCK threads × ITEMS items per chunk, 8 u64 fields per table row.
const DECODE_BLOCK: u32 = 256;
const DECODE_CHUNK: u64 = 256 * 8;
const TABLE_FIELDS: usize = 8;
/// decode.cu `mode`: bit 0 check, bits 1-2 write (1 overwrite, 2 add).
const MODE_CHECK: u32 = 1;
const WRITE_SET: u32 = 1 << 1;
const WRITE_ADD: u32 = 2 << 1;
/// Block size of the element-wise kernels and of reduce.cu's RBLOCK reductions.
const BLOCK: u32 = 256;
/// reduce.cu RGROUP: rows per blockIdx.y in `rows_vs_out`.
const ROW_GROUP: usize = 8;
/// The most rows robust.cu's fused statistic-and-dots kernels take (robust_dots_p32), and
/// reduce.cu's centered_clip_dists (CC_MAX) …
const FUSED_MAX: usize = 32;
/// … and their columns per partial (DCHUNK = RB · DITEMS).
const DOTS_CHUNK: usize = 128 * 8;
/// reduce.cu RCHUNK: columns per partial of `rows_vs_out` and `sumsq_vec`.
const RCHUNK: usize = 256 * 8;
/// The Gram product's split-K: at most this many splits …
const GRAM_MAX_SPLITS: usize = 1024;
/// … and at most this many bytes of f64 partials (splits × n² × 8). Both bounds, and so the
/// splits and the summation order, depend on the shape alone, never on the device.
const GRAM_PARTS_BYTES: usize = 64 << 20;
/// reduce.cu GT / GK: Gram tile rows and k step.
const GRAM_TILE: usize = 64;
const GRAM_K: usize = 32;
/// reduce.cu G32: up to this many rows, the Gram product is one tile of `gram_small`.
const GRAM_SMALL: usize = 32;
/// robust.cu RB.
const ROBUST_BLOCK: u32 = 128;
/// Largest grid y / z extent.
const MAX_GRID_YZ: usize = 65_535;

fn cuda_err(e: DriverError) -> Error {
    Error::Cuda(e.to_string())
}

/// Whether libnvrtc (the run-time CUDA compiler) can be loaded on this machine.
pub fn nvrtc_present() -> bool {
    // SAFETY: the probe only dlopen()s the candidate library names and closes them again; it
    // calls nothing inside them.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn compile_options(arch: usize) -> CompileOptions {
    CompileOptions {
        fmad: Some(false),
        arch: Some(ARCHS[arch].1),
        options: vec!["--std=c++17".to_string()],
        ..Default::default()
    }
}

/// The PTX of source `i` for architecture `arch` (an index into [`ARCHS`]), compiling it on
/// first use.
fn ptx(arch: usize, i: usize) -> Result<Ptx, Error> {
    if !nvrtc_present() {
        return Err(Error::Cuda("libnvrtc could not be loaded (install the CUDA NVRTC library)".into()));
    }
    let (name, src) = SOURCES[i];
    PTX[arch][i]
        .get_or_init(|| {
            let opts = CompileOptions { name: Some(name.to_string()), ..compile_options(arch) };
            // The #line keeps NVRTC's messages on the .cu file's own line numbers.
            let full = format!("{COMMON}\n#line 1 \"{name}\"\n{src}");
            cudarc::nvrtc::compile_ptx_with_opts(full, opts).map_err(|e| match e {
                CompileError::CompileError { nvrtc, log, .. } => {
                    format!("NVRTC failed on {name}: {nvrtc:?}\n{}", log.to_string_lossy())
                }
                other => format!("NVRTC failed on {name}: {other:?}"),
            })
        })
        .clone()
        .map_err(Error::Cuda)
}

/// Compiles every kernel source with NVRTC for virtual architecture `arch` (e.g.
/// `"compute_80"`, one of [`ARCHS`]; needs libnvrtc, not a GPU or driver) and returns each file
/// name with the length of its PTX.
pub fn compile_all(arch: &str) -> Result<Vec<(&'static str, usize)>, Error> {
    let a = ARCHS
        .iter()
        .position(|(_, name)| *name == arch)
        .ok_or_else(|| Error::Cuda(format!("no kernels for {arch} (built for {:?})", ARCHS.map(|a| a.1))))?;
    (0..SOURCES.len())
        .map(|i| {
            let p = ptx(a, i)?;
            let len = p.as_bytes().map_or(0, |b| b.iter().position(|&c| c == 0).unwrap_or(b.len()));
            Ok((SOURCES[i].0, len))
        })
        .collect()
}

/// decode.cu's encoding code, block size and work items (elements, or top-k entries) of a
/// segment, after the byte-length checks of [`decode`] (same order, same errors).
fn segment_work(s: &Segment<'_>) -> Result<(u64, u32, usize), decode::Error> {
    let len = s.bytes.len();
    let numel = s.numel;
    let len_err = || decode::Error::Length { len, numel };
    let exact = |want: Option<usize>| if want == Some(len) { Ok(()) } else { Err(len_err()) };
    match s.encoding {
        Encoding::DenseF32 => exact(numel.checked_mul(4)).map(|()| (0, 0, numel)),
        Encoding::DenseF16 => exact(numel.checked_mul(2)).map(|()| (1, 0, numel)),
        Encoding::DenseBf16 => exact(numel.checked_mul(2)).map(|()| (2, 0, numel)),
        Encoding::Int8Block { block_size } => {
            if block_size == 0 {
                return Err(decode::Error::BlockSize);
            }
            let blocks = numel.div_ceil(block_size as usize);
            exact(blocks.checked_mul(4).and_then(|b| b.checked_add(numel))).map(|()| (3, block_size, numel))
        }
        Encoding::TopKF32 | Encoding::TopKF16 => {
            let (code, vs) = if s.encoding == Encoding::TopKF32 { (4, 4) } else { (5, 2) };
            if !len.is_multiple_of(4 + vs) || len / (4 + vs) > numel {
                return Err(len_err());
            }
            Ok((code, 0, len / (4 + vs)))
        }
        Encoding::SignScale => {
            exact(numel.div_ceil(8).checked_add(4))?;
            // The reference rejects a non-finite scale even when no element uses it (n = 0).
            if !f32::from_le_bytes([s.bytes[0], s.bytes[1], s.bytes[2], s.bytes[3]]).is_finite() {
                return Err(decode::Error::NonFinite { index: 0 });
            }
            Ok((6, 0, numel))
        }
    }
}

/// One segment of the staging buffer's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tabled {
    /// Index of the segment in the update.
    segment: usize,
    /// decode.cu ENC_* code.
    code: u64,
    /// Int8Block block size (0 otherwise).
    block_size: u32,
    /// Work items: elements, or top-k entries.
    work: usize,
    /// Byte offset of the segment's bytes in the staging image: congruent to the bytes' host
    /// address modulo 16 when that address is 4-aligned (so a run keeps the host layout and
    /// the kernel's 4-byte loads stay aligned), otherwise 16-aligned.
    data_off: usize,
    /// First chunk of the segment in the launch-wide numbering.
    first: u64,
}

/// One host-to-device copy of an upload: `len` bytes from host address `src` to byte `dev` of
/// the staging buffer. A run covers consecutive segments that lie in host memory at most
/// [`MAX_GAP`] bytes apart (in practice: one payload buffer), gaps included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    src: usize,
    len: usize,
    dev: usize,
}

/// Largest gap between two segments' bytes in host memory that one copy spans. Small enough
/// that no page lies wholly inside a gap, so every byte a run copies is on a page that holds
/// segment bytes.
const MAX_GAP: usize = 64;

/// How one update is laid out in the staging buffer (decode.cu's header comment).
#[derive(Debug)]
struct Plan {
    /// Bytes of the staging buffer in use.
    len: usize,
    /// Bytes of the header and table at its start (16-aligned), written from the host stage.
    head: usize,
    /// The copies that place the segments' bytes, straight from where they are.
    runs: Vec<Run>,
    /// Byte offset of the segment table.
    table_off: u64,
    /// The segments in the table (those with work, before the first length error).
    tabled: Vec<Tabled>,
    /// Chunks of work over all tabled segments.
    total_chunks: u64,
    /// The first segment whose byte length does not fit its encoding, with the error.
    length_error: Option<(usize, decode::Error)>,
}

fn align16(x: usize) -> Option<usize> {
    x.checked_add(15).map(|v| v & !15)
}

fn overflow() -> Error {
    Error::Cuda("update too large for the staging buffer".into())
}

/// Checks `update`'s layout and segment lengths and lays out its staging image. Segments from
/// the first length error on are left out (see [`first_error`] for the order of errors).
fn plan_update(update: &Update<'_>, dim: usize) -> Result<Plan, Error> {
    update.check_layout(dim)?;
    let mut length_error = None;
    let mut tabled = Vec::new();
    let mut first = 0u64;
    for (i, s) in update.segments.iter().enumerate() {
        match segment_work(s) {
            Ok((code, block_size, work)) => {
                if work > 0 {
                    tabled.push(Tabled { segment: i, code, block_size, work, data_off: 0, first });
                    first += (work as u64).div_ceil(DECODE_CHUNK);
                }
            }
            Err(e) => {
                length_error = Some((i, e));
                break;
            }
        }
    }
    let nt = tabled.len();
    let table_off = 8 + 8 * nt;
    let head = align16(table_off + 8 * TABLE_FIELDS * nt).ok_or_else(overflow)?;
    let mut end = head;
    let mut runs: Vec<Run> = Vec::new();
    for t in &mut tabled {
        let bytes = update.segments[t.segment].bytes;
        let addr = bytes.as_ptr() as usize;
        let joins = addr.is_multiple_of(4)
            && runs.last().is_some_and(|r| {
                let r_end = r.src + r.len;
                addr >= r_end && addr - r_end <= MAX_GAP && r.src.is_multiple_of(4)
            });
        match runs.last_mut() {
            Some(r) if joins => {
                t.data_off = r.dev + (addr - r.src);
                r.len = addr + bytes.len() - r.src;
            }
            _ => {
                let phase = if addr.is_multiple_of(4) { addr % 16 } else { 0 };
                t.data_off = align16(end).and_then(|d| d.checked_add(phase)).ok_or_else(overflow)?;
                runs.push(Run { src: addr, len: bytes.len(), dev: t.data_off });
            }
        }
        end = t.data_off.checked_add(bytes.len()).ok_or_else(overflow)?;
    }
    let len = align16(end).ok_or_else(overflow)?;
    Ok(Plan { len, head, runs, table_off: table_off as u64, tabled, total_chunks: first, length_error })
}

/// More gaps than this in a stored row, and the whole row is zeroed in one call instead.
const MAX_ZERO_RANGES: usize = 16;

/// The coordinates of a row that `update`'s segments do not overwrite when stored: the gaps
/// between segments and the ranges of top-k segments (dense, int8 and sign segments write every
/// element of theirs). Only these need zeroing before a row is stored, not the whole row.
fn uncovered(update: &Update<'_>, dim: usize) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut at = 0;
    for s in update.segments {
        if matches!(s.encoding, Encoding::TopKF32 | Encoding::TopKF16) || s.numel == 0 {
            continue;
        }
        if s.offset > at {
            out.push(at..s.offset);
        }
        at = at.max(s.offset + s.numel);
    }
    if at < dim {
        out.push(at..dim);
    }
    out
}

/// Writes the head of the staging image of `plan` into `buf[..plan.head]`, every byte of it (the
/// buffer may be uninitialised page-locked memory): sum 0, flags ~0, the table, zero padding.
/// The segments' bytes go to the device straight from where they are ([`Plan::runs`]).
fn fill_head(plan: &Plan, update: &Update<'_>, buf: &mut [u8]) {
    let buf = &mut buf[..plan.head];
    let table_off = plan.table_off as usize;
    buf[..8].fill(0);
    buf[8..table_off].fill(0xff);
    let mut at = table_off;
    for t in &plan.tabled {
        let s = &update.segments[t.segment];
        let row = [
            t.code,
            u64::from(t.block_size),
            s.offset as u64,
            s.numel as u64,
            t.data_off as u64,
            t.work as u64,
            t.first,
            0,
        ];
        for v in row {
            buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
            at += 8;
        }
    }
    buf[at..].fill(0);
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    b.get(4 * i..4 * i + 4).map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The update's first error, in the CPU backend's order, given the device's report (`header`:
/// the staging buffer's first 8 + 8·tabled bytes after the check launch, or None before it):
/// segment by segment, a length error or a bad top-k entry; then the first non-finite value
/// of the dense segments.
fn first_error(update: &Update<'_>, plan: &mut Plan, header: Option<&[u8]>) -> Option<Error> {
    let flag = |t: usize| {
        header
            .and_then(|h| h.get(8 + 8 * t..16 + 8 * t))
            .map_or(u64::MAX, |c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    };
    let sparse = |e: Encoding| matches!(e, Encoding::TopKF32 | Encoding::TopKF16);
    for pass_sparse in [true, false] {
        for (t, tab) in plan.tabled.iter().enumerate() {
            let s = &update.segments[tab.segment];
            let pos = flag(t);
            if sparse(s.encoding) != pass_sparse || pos == u64::MAX {
                continue;
            }
            let pos = usize::try_from(pos).unwrap_or(usize::MAX);
            let source = if pass_sparse {
                let i = u32_at(s.bytes, pos);
                if i as usize >= s.numel || (pos > 0 && i <= u32_at(s.bytes, pos - 1)) {
                    decode::Error::Index { entry: pos, index: i, numel: s.numel }
                } else {
                    decode::Error::NonFinite { index: i as usize }
                }
            } else {
                decode::Error::NonFinite { index: pos }
            };
            return Some(Error::Decode { segment: tab.segment, source });
        }
        if pass_sparse && let Some((segment, source)) = plan.length_error.take() {
            return Some(Error::Decode { segment, source });
        }
    }
    None
}

/// Whether the device check can change the outcome: without a top-k segment before a length
/// error, that error is the answer.
fn needs_device_check(update: &Update<'_>, plan: &Plan) -> bool {
    plan.length_error.is_none()
        || plan
            .tabled
            .iter()
            .any(|t| matches!(update.segments[t.segment].encoding, Encoding::TopKF32 | Encoding::TopKF16))
}

/// Grid x extent for `n` items at `per_block` items per block, at most `cap`, at least 1.
fn grid(n: usize, per_block: usize, cap: usize) -> u32 {
    n.div_ceil(per_block).clamp(1, cap.max(1)) as u32
}

fn cfg(grid_dim: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim, block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// Replaces `buf` by a zeroed buffer of at least `len` elements when it is smaller.
fn grow<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    buf: &mut CudaSlice<T>,
    len: usize,
) -> Result<(), Error> {
    if buf.len() < len {
        // Free the old buffer first (through a 1-element placeholder) so that a large one is
        // not held twice.
        *buf = stream.alloc_zeros(1).map_err(cuda_err)?;
        *buf = stream.alloc_zeros(len.max(1)).map_err(cuda_err)?;
    }
    Ok(())
}

/// Registers host memory with the CUDA driver (page-locked, portable to every context), so
/// that copies from it are DMAs from where it is. Regions under [`HostLock::MIN`] are left
/// alone: for them the registration costs more than it saves.
#[derive(Debug)]
struct HostLock {
    ctx: Arc<CudaContext>,
}

impl HostLock {
    const MIN: usize = 1 << 16;
}

impl PageLock for HostLock {
    fn lock(&self, region: &[u8]) -> bool {
        if region.len() < Self::MIN || self.ctx.bind_to_thread().is_err() {
            return false;
        }
        // SAFETY: the driver page-locks the pages of a live, borrowed region and records its
        // range; the PageLock contract keeps the memory in place until unlock. A region that
        // shares a page with one already registered is refused (an error result, not UB).
        let r = unsafe {
            cudarc::driver::sys::cuMemHostRegister_v2(
                region.as_ptr().cast_mut().cast(),
                region.len(),
                cudarc::driver::sys::CU_MEMHOSTREGISTER_PORTABLE,
            )
        };
        r == CUresult::CUDA_SUCCESS
    }

    fn unlock(&self, region: &[u8]) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `region` was registered by lock (the contract) and is still allocated.
            let _ = unsafe { cudarc::driver::sys::cuMemHostUnregister(region.as_ptr().cast_mut().cast()) };
        }
    }
}

/// The backend. Create with [`CudaBackend::new`]; see the module documentation.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: [Option<Arc<CudaModule>>; 4],
    funcs: HashMap<&'static str, CudaFunction>,
    /// Streaming multiprocessors, to size grids.
    sms: usize,
    dim: usize,
    rows: usize,
    /// rows × dim f32, row-major.
    x: CudaSlice<f32>,
    acc: CudaSlice<f32>,
    out: CudaSlice<f32>,
    /// The staging image of one update (see decode.cu), and its host side: page-locked memory
    /// so the upload is a DMA straight from it, or pageable memory where pinning failed.
    stage: CudaSlice<u8>,
    pinned: Option<PinnedHostSlice<u8>>,
    pinned_failed: bool,
    host_stage: Vec<u8>,
    /// Small per-call arguments: row indices, per-row factors or weights; f64 results.
    idx: CudaSlice<u32>,
    fac: CudaSlice<f32>,
    res: CudaSlice<f64>,
    /// Partial sums of the reductions (per column chunk, per Gram split), which reduce.cu
    /// `sum_parts` adds in a fixed order: no float atomics, so results repeat bit for bit.
    parts: CudaSlice<f64>,
    /// The weight of the next add, written by decode.cu `clip_weight` on the device.
    wbuf: CudaSlice<f32>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("ordinal", &self.ctx.ordinal())
            .field("dim", &self.dim)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal`. [`Error::NoCudaDriver`] when libcuda cannot be loaded or the driver
    /// sees no GPU; [`Error::Cuda`] for other failures (including a missing libnvrtc). Kernels
    /// are compiled and loaded on first use.
    pub fn new(ordinal: usize) -> Result<Self, Error> {
        // SAFETY: the probe only dlopen()s the candidate library names and closes them again.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoCudaDriver("libcuda could not be loaded".into()));
        }
        if !nvrtc_present() {
            return Err(Error::Cuda("libnvrtc could not be loaded (install the CUDA NVRTC library)".into()));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| match e.0 {
            CUresult::CUDA_ERROR_NO_DEVICE => Error::NoCudaDriver(format!("no CUDA device: {e}")),
            _ => cuda_err(e),
        })?;
        let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(cuda_err)?;
        let major =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).map_err(cuda_err)?;
        let minor =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).map_err(cuda_err)?;
        let (major, minor) = (u32::try_from(major).unwrap_or(0), u32::try_from(minor).unwrap_or(0));
        let arch = arch_for(major, minor).ok_or_else(|| {
            Error::Cuda(format!(
                "compute capability {major}.{minor} is older than every architecture the kernels are built for"
            ))
        })?;
        // Every module is compiled and loaded now: a failure here is a start-up error that
        // `--backend auto` turns into the CPU backend, never a failed round later.
        let mut modules: [Option<Arc<CudaModule>>; 4] = [None, None, None, None];
        for (i, m) in modules.iter_mut().enumerate() {
            *m = Some(ctx.load_module(ptx(arch, i)?).map_err(cuda_err)?);
        }
        let stream = ctx.default_stream();
        let one_f32 = |s: &Arc<CudaStream>| s.alloc_zeros::<f32>(1).map_err(cuda_err);
        Ok(Self {
            sms: usize::try_from(sms).unwrap_or(1).max(1),
            dim: 0,
            rows: 0,
            x: one_f32(&stream)?,
            acc: one_f32(&stream)?,
            out: one_f32(&stream)?,
            stage: stream.alloc_zeros(1).map_err(cuda_err)?,
            pinned: None,
            pinned_failed: false,
            host_stage: Vec::new(),
            idx: stream.alloc_zeros(1).map_err(cuda_err)?,
            fac: one_f32(&stream)?,
            res: stream.alloc_zeros(1).map_err(cuda_err)?,
            parts: stream.alloc_zeros(1).map_err(cuda_err)?,
            wbuf: one_f32(&stream)?,
            modules,
            funcs: HashMap::new(),
            ctx,
            stream,
        })
    }

    /// The GPU's name, as the driver reports it.
    pub fn device_name(&self) -> Result<String, Error> {
        self.ctx.name().map_err(cuda_err)
    }

    /// Kernel `name` of module `m` (every module was loaded by [`CudaBackend::new`]).
    fn func(&mut self, m: usize, name: &'static str) -> Result<CudaFunction, Error> {
        if let Some(f) = self.funcs.get(name) {
            return Ok(f.clone());
        }
        let module =
            self.modules[m].clone().ok_or_else(|| Error::Cuda(format!("module {} not loaded", SOURCES[m].0)))?;
        let f = module.load_function(name).map_err(cuda_err)?;
        self.funcs.insert(name, f.clone());
        Ok(f)
    }

    /// A grid x extent for an element-wise pass over `n` items with `BLOCK` threads.
    fn grid_1d(&self, n: usize) -> u32 {
        grid(n, BLOCK as usize, self.sms * 16)
    }

    fn check_rows(&self, rows: &[u32]) -> Result<(), Error> {
        match rows.iter().find(|&&r| r as usize >= self.rows) {
            Some(&r) => Err(Error::Row { row: r as usize, rows: self.rows }),
            None => Ok(()),
        }
    }

    fn check_count(&self, n: usize) -> Result<(), Error> {
        if n > self.rows { Err(Error::Row { row: n - 1, rows: self.rows }) } else { Ok(()) }
    }

    fn upload_idx(&mut self, rows: &[u32]) -> Result<(), Error> {
        grow(&self.stream, &mut self.idx, rows.len())?;
        if !rows.is_empty() {
            self.stream.memcpy_htod(rows, &mut self.idx).map_err(cuda_err)?;
        }
        Ok(())
    }

    fn upload_fac(&mut self, v: &[f32]) -> Result<(), Error> {
        grow(&self.stream, &mut self.fac, v.len())?;
        if !v.is_empty() {
            self.stream.memcpy_htod(v, &mut self.fac).map_err(cuda_err)?;
        }
        Ok(())
    }

    /// Zeroes res[0..n] (growing it).
    fn zero_res(&mut self, n: usize) -> Result<(), Error> {
        grow(&self.stream, &mut self.res, n)?;
        let mut view = self.res.try_slice_mut(0..n.max(1)).ok_or_else(|| Error::Cuda("result buffer".into()))?;
        self.stream.memset_zeros(&mut view).map_err(cuda_err)
    }

    fn read_res(&mut self, n: usize) -> Result<Vec<f64>, Error> {
        let mut v = vec![0f64; n];
        if n > 0 {
            let view = self.res.try_slice(0..n).ok_or_else(|| Error::Cuda("result buffer".into()))?;
            self.stream.memcpy_dtoh(&view, &mut v).map_err(cuda_err)?;
        }
        self.stream.synchronize().map_err(cuda_err)?;
        Ok(v)
    }

    /// Validates and decodes `update`: into row `to_row` of `x` (one fused check-and-write
    /// pass; the row is unspecified on error), or, with `to_row` None, a check pass and then an
    /// add of `weight · min(1, clip / ‖u‖) ×` the update into `acc` (the weight computed on the
    /// device by decode.cu `clip_weight`; `acc` untouched on error).
    /// Returns ‖u‖² or the update's first error.
    fn decode_update(
        &mut self,
        update: &Update<'_>,
        to_row: Option<usize>,
        weight: f32,
        clip: Option<f32>,
    ) -> Result<f64, Error> {
        let mut plan = plan_update(update, self.dim)?;
        if !needs_device_check(update, &plan) {
            return Err(first_error(update, &mut plan, None).unwrap_or_else(|| Error::Cuda("length error lost".into())));
        }
        let nt = plan.tabled.len();
        if let Some(row) = to_row {
            // Zero what the segments leave untouched (top-k segments and gaps), not the
            // coordinates the decode overwrites anyway; with many gaps, the whole row at once.
            let mut gaps = uncovered(update, self.dim);
            if gaps.len() > MAX_ZERO_RANGES {
                gaps.clear();
                gaps.push(0..self.dim);
            }
            for g in gaps {
                let (lo, hi) = (row * self.dim + g.start, row * self.dim + g.end);
                let mut view = self.x.try_slice_mut(lo..hi).ok_or_else(|| Error::Cuda("row buffer".into()))?;
                self.stream.memset_zeros(&mut view).map_err(cuda_err)?;
            }
        }
        if nt == 0 {
            return Ok(0.0);
        }
        self.upload(update, &plan)?;
        let f = self.func(MOD_DECODE, "decode_segments")?;
        let chunks = usize::try_from(plan.total_chunks).map_err(|_| Error::Cuda("chunk count".into()))?;
        let chunks32 = u32::try_from(chunks).map_err(|_| Error::Cuda("chunk count".into()))?;
        grow(&self.stream, &mut self.parts, chunks)?;
        let grid_x = grid(chunks, 1, i32::MAX as usize);
        let nseg = nt as u32;
        // store_row checks and writes in one pass (the row is unspecified on error); ingest
        // checks first and adds only a valid update, with no wait in between: the device
        // computes the add's weight (0 for an invalid update: the add then writes nothing), and
        // the host reads the header once, at the end.
        let (dst_base, mode) = match to_row {
            Some(row) => ((row * self.dim) as u64, MODE_CHECK | WRITE_SET),
            None => (0u64, MODE_CHECK),
        };
        let dst = if to_row.is_some() { &mut self.x } else { &mut self.acc };
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut self.stage).arg(&plan.table_off).arg(&nseg).arg(&plan.total_chunks);
        b.arg(dst).arg(&dst_base).arg(&self.wbuf).arg(&mode).arg(&mut self.parts);
        // SAFETY: decode_segments(u8* stage, u64 table_off, u32 nseg, u64 total_chunks,
        // float* dst, u64 dst_base, const float* wptr, u32 mode, double* parts) matches the
        // arguments; the staging image was built by plan_update for that layout, every
        // destination coordinate dst_base + offset + i is < rows·dim (store_row) or dim (acc)
        // because check_layout passed and the kernel drops top-k indices ≥ numel, parts holds
        // total_chunks f64, and wbuf one f32 (read, unused without the add bit).
        unsafe { b.launch(cfg((grid_x, 1, 1), DECODE_BLOCK)) }.map_err(cuda_err)?;
        // ‖u‖² into the header's first 8 bytes: the chunks' sums in chunk order.
        let sum = self.func(MOD_REDUCE, "sum_parts")?;
        let one = 1u64;
        let mut b = self.stream.launch_builder(&sum);
        b.arg(&self.parts).arg(&one).arg(&chunks32).arg(&mut self.stage);
        // SAFETY: sum_parts(const double* part, u64 len, u32 parts, double* out) matches; parts
        // holds `chunks` f64 the launch above wrote (the same stream orders the two), and out is
        // the staging image's first 8 bytes, 8-aligned (a device allocation) and the f64 sum of
        // squares slot of the layout.
        unsafe { b.launch(cfg((1, 1, 1), 32)) }.map_err(cuda_err)?;
        // A length error the host found stops the update here; otherwise the add follows at once.
        if to_row.is_none() && plan.length_error.is_none() {
            let cw = self.func(MOD_DECODE, "clip_weight")?;
            let c = clip.unwrap_or(0.0);
            let mut b = self.stream.launch_builder(&cw);
            b.arg(&self.stage).arg(&nseg).arg(&weight).arg(&c).arg(&mut self.wbuf);
            // SAFETY: clip_weight(const u8* stage, u32 nseg, float weight, float clip, float*
            // wout) matches; the stage holds the sum of squares and nseg flags at its start (the
            // launches above wrote them), and wbuf one f32.
            unsafe { b.launch(cfg((1, 1, 1), 32)) }.map_err(cuda_err)?;
            let mode = WRITE_ADD;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&mut self.stage).arg(&plan.table_off).arg(&nseg).arg(&plan.total_chunks);
            b.arg(&mut self.acc).arg(&dst_base).arg(&self.wbuf).arg(&mode).arg(&mut self.parts);
            // SAFETY: as for the check launch above, on the same staging image; acc holds at
            // least dim elements; the kernel returns at once when the weight clip_weight wrote
            // is 0 (a bad value somewhere), and parts is not written without the check bit.
            unsafe { b.launch(cfg((grid_x, 1, 1), DECODE_BLOCK)) }.map_err(cuda_err)?;
        }
        let mut header = vec![0u8; 8 + 8 * nt];
        let view = self.stage.try_slice(0..header.len()).ok_or_else(|| Error::Cuda("staging buffer".into()))?;
        self.stream.memcpy_dtoh(&view, &mut header).map_err(cuda_err)?;
        self.stream.synchronize().map_err(cuda_err)?;
        if let Some(e) = first_error(update, &mut plan, Some(&header)) {
            return Err(e);
        }
        Ok(f64::from_le_bytes([header[0], header[1], header[2], header[3], header[4], header[5], header[6], header[7]]))
    }

    /// Copies the staging image of `plan` to the device: the head through the host stage, the
    /// segments' bytes straight from the update's memory (a DMA from it where it is page-locked,
    /// as the transport's pool buffers are when given [`Backend::page_lock`]). Returns when the
    /// copies are done: the update's memory is the caller's again.
    fn upload(&mut self, update: &Update<'_>, plan: &Plan) -> Result<(), Error> {
        grow(&self.stream, &mut self.stage, plan.len)?;
        if !self.pinned_failed && self.pinned.as_ref().is_none_or(|p| p.len() < plan.head) {
            self.pinned = None;
            let cap = plan.head.max(1 << 16).checked_next_power_of_two().unwrap_or(plan.head);
            // SAFETY: the memory is uninitialised; nothing reads it before fill_head has written
            // every byte of the prefix that is copied.
            match unsafe { self.ctx.alloc_pinned::<u8>(cap) } {
                Ok(p) => self.pinned = Some(p),
                // Page-locking can fail (memlock limits); pageable staging still works.
                Err(_) => self.pinned_failed = true,
            }
        }
        let buf: &mut [u8] = match self.pinned.as_mut() {
            Some(p) if p.len() >= plan.head => p.as_mut_slice().map_err(cuda_err)?,
            _ => {
                self.host_stage.resize(plan.head, 0);
                &mut self.host_stage
            }
        };
        fill_head(plan, update, buf);
        let mut dst = self.stage.try_slice_mut(0..plan.head).ok_or_else(|| Error::Cuda("staging buffer".into()))?;
        self.stream.memcpy_htod(&buf[..plan.head], &mut dst).map_err(cuda_err)?;
        let copied = self.copy_runs(plan);
        // Wait even when a copy failed to enqueue: those before it read the caller's memory
        // (and the head buffer, which the next upload overwrites).
        let synced = self.stream.synchronize().map_err(cuda_err);
        copied.and(synced)
    }

    /// Enqueues [`Plan::runs`] into the staging buffer.
    fn copy_runs(&mut self, plan: &Plan) -> Result<(), Error> {
        let stream = self.stream.clone();
        let stage_len = self.stage.len();
        let (base, record) = self.stage.device_ptr_mut(&stream);
        let mut r = Ok(());
        for run in &plan.runs {
            if run.dev.checked_add(run.len).is_none_or(|e| e > stage_len) {
                r = Err(Error::Cuda("staging buffer".into()));
                break;
            }
            // SAFETY: the destination [dev, dev + len) is inside the staging buffer (checked
            // above). The source is host memory: a run is one segment's bytes, or consecutive
            // segments at most MAX_GAP bytes apart, so each byte it spans is on a page holding
            // segment bytes, all borrowed by `update` for this call; upload() waits for the
            // stream before returning, so no copy outlives the borrow.
            let res = unsafe {
                cudarc::driver::sys::cuMemcpyHtoDAsync_v2(
                    base + run.dev as u64,
                    run.src as *const std::ffi::c_void,
                    run.len,
                    stream.cu_stream(),
                )
            };
            if let Err(e) = res.result() {
                r = Err(cuda_err(e));
                break;
            }
        }
        drop(record);
        r
    }

    /// robust.cu on the selected rows: op 0 median, 1 trimmed mean, 2 closest-to-median mean.
    fn robust(&mut self, rows: &[u32], op: u32, param: usize) -> Result<(), Error> {
        self.check_rows(rows)?;
        let m = rows.len();
        let ok = match op {
            0 => m >= 1,
            1 => param.checked_mul(2).is_some_and(|t| t < m),
            _ => param >= 1 && param <= m,
        };
        if !ok {
            return Err(Error::Length { what: "rows", got: m, want: m.max(1) });
        }
        if m > MAX_SUBSET {
            return Err(Error::Length {
                what: "rows (the CUDA robust rules take at most MAX_SUBSET)",
                got: m,
                want: MAX_SUBSET,
            });
        }
        self.upload_idx(rows)?;
        let p = m.next_power_of_two().max(4);
        let name = match p {
            4 => "robust_p4",
            8 => "robust_p8",
            16 => "robust_p16",
            32 => "robust_p32",
            64 => "robust_p64",
            128 => "robust_p128",
            _ => "robust_p256",
        };
        let f = self.func(MOD_ROBUST, name)?;
        let (dim, m, param) = (self.dim as u64, m as u32, param as u32);
        let grid_x = grid(self.dim, ROBUST_BLOCK as usize, self.sms * 64);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.x).arg(&dim).arg(&self.idx).arg(&m).arg(&op).arg(&param).arg(&mut self.out);
        // SAFETY: robust_pP(const float* x, u64 dim, const u32* idx, u32 m, u32 op, u32 param,
        // float* out) matches; P ≥ m, every idx < rows (checked) so x reads stay inside
        // rows·dim, out holds dim, and param satisfies op's precondition (checked above).
        unsafe { b.launch(cfg((grid_x, 1, 1), ROBUST_BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }

    /// The statistic `op` of rows 0..n fused with their dots to the result and its squared norm
    /// (robust.cu robust_dots_pP: the rows read once), when the rows are exactly 0..n and n ≤
    /// [`FUSED_MAX`]; `None` otherwise (the caller runs the two passes).
    fn robust_with_dots(
        &mut self,
        rows: &[u32],
        op: u32,
        param: usize,
        n: usize,
    ) -> Result<Option<(Vec<f64>, f64)>, Error> {
        let m = rows.len();
        if m != n || m == 0 || m > FUSED_MAX || self.dim == 0 || rows.iter().enumerate().any(|(i, r)| *r as usize != i)
        {
            return Ok(None);
        }
        self.check_rows(rows)?;
        let ok = match op {
            0 => true,
            _ => param.checked_mul(2).is_some_and(|t| t < m),
        };
        if !ok {
            return Err(Error::Length { what: "rows", got: m, want: m.max(1) });
        }
        let name = match m.next_power_of_two().max(4) {
            4 => "robust_dots_p4",
            8 => "robust_dots_p8",
            16 => "robust_dots_p16",
            _ => "robust_dots_p32",
        };
        let chunks = self.dim.div_ceil(DOTS_CHUNK);
        let cells = chunks.checked_mul(m + 1).ok_or_else(|| Error::Cuda("partials".into()))?;
        grow(&self.stream, &mut self.parts, cells)?;
        grow(&self.stream, &mut self.res, m + 1)?;
        let f = self.func(MOD_ROBUST, name)?;
        let (dim, m32, param32) = (self.dim as u64, m as u32, param as u32);
        let grid_x = grid(chunks, 1, self.sms * 8);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.x).arg(&dim).arg(&m32).arg(&op).arg(&param32).arg(&mut self.out).arg(&mut self.parts);
        // SAFETY: robust_dots_pP(const float* x, u64 dim, u32 m, u32 op, u32 param, float* out,
        // double* part) matches; P ≥ m, rows 0..m < rows prepared (checked), out holds dim,
        // parts ⌈dim / DCHUNK⌉·(m + 1) f64, param satisfies op's precondition, blockDim = RB.
        unsafe { b.launch(cfg((grid_x, 1, 1), ROBUST_BLOCK)) }.map_err(cuda_err)?;
        self.sum_parts_into_res(0, m + 1, chunks)?;
        let mut v = self.read_res(m + 1)?;
        let norm = v.pop().unwrap_or(0.0);
        Ok(Some((v, norm)))
    }

    /// reduce.cu rows_vs_out into res[0..n] (res zeroed by the caller): the column chunks'
    /// partials, then their sums in chunk order.
    fn rows_vs_out(&mut self, n: usize, mode: u32) -> Result<(), Error> {
        if n == 0 || self.dim == 0 {
            return Ok(());
        }
        let chunks = self.dim.div_ceil(RCHUNK);
        let cells = chunks.checked_mul(n).ok_or_else(|| Error::Cuda("partials".into()))?;
        grow(&self.stream, &mut self.parts, cells)?;
        let f = self.func(MOD_REDUCE, "rows_vs_out")?;
        let gy = n.div_ceil(ROW_GROUP).min(MAX_GRID_YZ);
        let gx = grid(chunks, 1, (self.sms * 8).div_ceil(gy));
        let (dim, n32) = (self.dim as u64, n as u32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.x).arg(&dim).arg(&n32).arg(&self.out).arg(&mut self.parts).arg(&mode);
        // SAFETY: rows_vs_out(const float* x, u64 dim, u32 n, const float* out, double* part,
        // u32 mode) matches; n ≤ rows (checked), parts holds ⌈dim / RCHUNK⌉·n, blockDim = RBLOCK.
        unsafe { b.launch(cfg((gx, gy as u32, 1), BLOCK)) }.map_err(cuda_err)?;
        self.sum_parts_into_res(0, n, chunks)
    }

    /// res[at..at + len] = reduce.cu sum_parts over `count` partials of `len` entries in
    /// `parts`.
    fn sum_parts_into_res(&mut self, at: usize, len: usize, count: usize) -> Result<(), Error> {
        let count = u32::try_from(count).map_err(|_| Error::Cuda("partial count".into()))?;
        let f = self.func(MOD_REDUCE, "sum_parts")?;
        let gx = self.grid_1d(len);
        let len64 = len as u64;
        let mut out = self.res.try_slice_mut(at..at + len).ok_or_else(|| Error::Cuda("result buffer".into()))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.parts).arg(&len64).arg(&count).arg(&mut out);
        // SAFETY: sum_parts(const double* part, u64 len, u32 parts, double* out) matches; the
        // caller's launch (earlier on this stream) wrote count·len partials into parts, and out
        // is a view of len f64.
        unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> Kind {
        Kind::Cuda
    }

    fn max_order_rows(&self) -> Option<usize> {
        Some(MAX_SUBSET)
    }

    fn page_lock(&self) -> Option<Arc<dyn PageLock>> {
        Some(Arc::new(HostLock { ctx: self.ctx.clone() }))
    }

    fn prepare(&mut self, dim: usize, rows: usize) -> Result<(), Error> {
        let cells = rows.checked_mul(dim).and_then(|c| c.checked_add(dim.checked_mul(2)?));
        let need = cells.and_then(|c| c.checked_mul(4)).map_or(u64::MAX, |b| b as u64);
        let limit = self.ctx.total_mem().map_err(cuda_err)? as u64;
        if need > limit {
            return Err(Error::Capacity { need, limit });
        }
        grow(&self.stream, &mut self.x, rows * dim)?;
        grow(&self.stream, &mut self.acc, dim)?;
        grow(&self.stream, &mut self.out, dim)?;
        if dim > 0 {
            for buf in [&mut self.acc, &mut self.out] {
                let mut view = buf.try_slice_mut(0..dim).ok_or_else(|| Error::Cuda("accumulator".into()))?;
                self.stream.memset_zeros(&mut view).map_err(cuda_err)?;
            }
        }
        self.dim = dim;
        self.rows = rows;
        Ok(())
    }

    fn ingest(&mut self, update: &Update<'_>, weight: f32, clip: Option<f32>) -> Result<f64, Error> {
        self.decode_update(update, None, weight, clip)
    }

    fn store_row(&mut self, row: usize, update: &Update<'_>) -> Result<f64, Error> {
        if row >= self.rows {
            return Err(Error::Row { row, rows: self.rows });
        }
        self.decode_update(update, Some(row), 1.0, None)
    }

    fn scale_rows(&mut self, factors: &[f32]) -> Result<(), Error> {
        let n = factors.len();
        self.check_count(n)?;
        if n == 0 || self.dim == 0 {
            return Ok(());
        }
        // Only the rows whose factor is not 1 (the clipped ones) are read and written.
        let (rows, facs): (Vec<u32>, Vec<f32>) =
            factors.iter().enumerate().filter(|(_, f)| **f != 1.0).map(|(r, f)| (r as u32, *f)).unzip();
        if rows.is_empty() {
            return Ok(());
        }
        self.upload_idx(&rows)?;
        self.upload_fac(&facs)?;
        let f = self.func(MOD_REDUCE, "scale_rows")?;
        let gy = rows.len().min(MAX_GRID_YZ);
        let gx = grid(self.dim, BLOCK as usize, (self.sms * 16).div_ceil(gy));
        let (dim, k) = (self.dim as u64, rows.len() as u32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut self.x).arg(&dim).arg(&self.idx).arg(&self.fac).arg(&k);
        // SAFETY: scale_rows(float* x, u64 dim, const u32* rows, const float* factors, u32 k)
        // matches; idx holds k row indices < n ≤ rows and fac their k factors.
        unsafe { b.launch(cfg((gx, gy as u32, 1), BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn mix_rows(&mut self, n: usize, targets: &[u32], mix: &[f32]) -> Result<(), Error> {
        self.check_count(n)?;
        crate::cpu::check_mix(n, targets, mix)?;
        if n > MIX_MAX {
            return Err(Error::Length { what: "rows mixed by the CUDA backend", got: n, want: MIX_MAX });
        }
        if n == 0 || self.dim == 0 || targets.is_empty() {
            return Ok(());
        }
        self.upload_idx(targets)?;
        self.upload_fac(mix)?;
        let f = self.func(MOD_REDUCE, "mix_rows")?;
        let gx = self.grid_1d(self.dim);
        let (dim, n32, k32) = (self.dim as u64, n as u32, targets.len() as u32);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut self.x).arg(&dim).arg(&n32).arg(&self.idx).arg(&k32).arg(&self.fac);
        // SAFETY: mix_rows(float* x, u64 dim, u32 n, const u32* targets, u32 k, const float* mix)
        // matches; n ≤ rows, n ≤ MIX_MAX (the kernel's local column), targets < n (checked),
        // idx holds k targets and fac k·n weights.
        unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn gram(&mut self, n: usize) -> Result<Vec<f64>, Error> {
        self.check_count(n)?;
        let cells = n * n;
        self.zero_res(cells)?;
        let tiles = n.div_ceil(GRAM_TILE);
        if tiles > MAX_GRID_YZ {
            return Err(Error::Length { what: "rows for the CUDA Gram matrix", got: n, want: MAX_GRID_YZ * GRAM_TILE });
        }
        if n > 0 && self.dim > 0 {
            // Splits from the shape alone (so every device sums in the same order): up to
            // GRAM_MAX_SPLITS, within GRAM_PARTS_BYTES of partials.
            let ktiles = self.dim.div_ceil(GRAM_K);
            let max_splits = (GRAM_PARTS_BYTES / (cells * 8).max(1)).clamp(1, GRAM_MAX_SPLITS);
            let kchunk = ktiles.div_ceil(max_splits.min(ktiles)) * GRAM_K;
            let splits = self.dim.div_ceil(kchunk);
            grow(&self.stream, &mut self.parts, splits * cells)?;
            // Tiles below the diagonal write no partials: zero them so their sums are 0.
            let mut view = self.parts.try_slice_mut(0..splits * cells).ok_or_else(|| Error::Cuda("partials".into()))?;
            self.stream.memset_zeros(&mut view).map_err(cuda_err)?;
            // Up to 32 rows, one tile sized to them in f32 FMAs folded into f64; above, 64 × 64
            // tiles in f64.
            let (name, gyz) = if n <= GRAM_SMALL { ("gram_small", 1) } else { ("gram_tile", tiles as u32) };
            let f = self.func(MOD_REDUCE, name)?;
            let (dim, n32, kc) = (self.dim as u64, n as u32, kchunk as u64);
            let mut b = self.stream.launch_builder(&f);
            b.arg(&self.x).arg(&dim).arg(&n32).arg(&kc).arg(&mut self.parts);
            // SAFETY: gram_small and gram_tile (const float* x, u64 dim, u32 n, u64 kchunk,
            // double* part) match; they read rows < n ≤ rows (gram_small: n ≤ 32, its tile) and
            // k < dim, and block s writes part[s·n² + i·n + j] for i, j < n and s < splits,
            // which parts holds. blockDim = 256 as both require; the grid's x is exactly the
            // number of splits, y and z the tiles (1 for gram_small).
            let gx = u32::try_from(splits).map_err(|_| Error::Cuda("Gram splits".into()))?;
            unsafe { b.launch(cfg((gx, gyz, gyz), 256)) }.map_err(cuda_err)?;
            self.sum_parts_into_res(0, cells, splits)?;
        }
        let mut g = self.read_res(cells)?;
        for i in 0..n {
            for j in i + 1..n {
                g[j * n + i] = g[i * n + j];
            }
        }
        Ok(g)
    }

    fn weighted_sum(&mut self, rows: &[u32], weights: &[f32]) -> Result<(), Error> {
        self.check_rows(rows)?;
        if weights.len() != rows.len() {
            return Err(Error::Length { what: "weights", got: weights.len(), want: rows.len() });
        }
        self.upload_idx(rows)?;
        self.upload_fac(weights)?;
        let f = self.func(MOD_REDUCE, "weighted_sum")?;
        let (dim, m) = (self.dim as u64, rows.len() as u32);
        let gx = self.grid_1d(self.dim);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.x).arg(&dim).arg(&self.idx).arg(&self.fac).arg(&m).arg(&mut self.out);
        // SAFETY: weighted_sum(const float* x, u64 dim, const u32* idx, const float* w, u32 m,
        // float* out) matches; idx and fac hold m entries, every idx < rows (checked).
        unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn median(&mut self, rows: &[u32]) -> Result<(), Error> {
        self.robust(rows, 0, 0)
    }

    fn trimmed_mean(&mut self, rows: &[u32], trim: usize) -> Result<(), Error> {
        self.robust(rows, 1, trim)
    }

    fn median_with_dots(&mut self, rows: &[u32], n: usize) -> Result<(Vec<f64>, f64), Error> {
        if let Some(r) = self.robust_with_dots(rows, 0, 0, n)? {
            return Ok(r);
        }
        self.median(rows)?;
        self.dots_with_out(n)
    }

    fn trimmed_mean_with_dots(&mut self, rows: &[u32], trim: usize, n: usize) -> Result<(Vec<f64>, f64), Error> {
        if let Some(r) = self.robust_with_dots(rows, 1, trim, n)? {
            return Ok(r);
        }
        self.trimmed_mean(rows, trim)?;
        self.dots_with_out(n)
    }

    fn closest_to_median_mean(&mut self, rows: &[u32], beta: usize) -> Result<(), Error> {
        self.robust(rows, 2, beta)
    }

    fn dist_sq_to_out(&mut self, n: usize) -> Result<Vec<f64>, Error> {
        self.check_count(n)?;
        self.zero_res(n)?;
        self.rows_vs_out(n, 0)?;
        self.read_res(n)
    }

    fn centered_clip_step(&mut self, factors: &[f32]) -> Result<(), Error> {
        let n = factors.len();
        self.check_count(n)?;
        if n == 0 {
            return Err(Error::Length { what: "factors", got: 0, want: 1 });
        }
        if self.dim == 0 {
            return Ok(());
        }
        self.upload_fac(factors)?;
        let f = self.func(MOD_REDUCE, "centered_clip")?;
        let (dim, n32) = (self.dim as u64, n as u32);
        let gx = self.grid_1d(self.dim);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.x).arg(&dim).arg(&self.fac).arg(&n32).arg(&mut self.out);
        // SAFETY: centered_clip(const float* x, u64 dim, const float* f, u32 n, float* out)
        // matches; 1 ≤ n ≤ rows and fac holds n factors.
        unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn centered_clip_step_with_dists(&mut self, factors: &[f32]) -> Result<Vec<f64>, Error> {
        let n = factors.len();
        if n == 0 || n > FUSED_MAX || self.dim == 0 {
            self.centered_clip_step(factors)?;
            return self.dist_sq_to_out(n);
        }
        self.check_count(n)?;
        self.upload_fac(factors)?;
        let chunks = self.dim.div_ceil(RCHUNK);
        grow(&self.stream, &mut self.parts, chunks * n)?;
        grow(&self.stream, &mut self.res, n)?;
        let f = self.func(MOD_REDUCE, "centered_clip_dists")?;
        let (dim, n32) = (self.dim as u64, n as u32);
        let gx = grid(chunks, 1, self.sms * 8);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.x).arg(&dim).arg(&self.fac).arg(&n32).arg(&mut self.out).arg(&mut self.parts);
        // SAFETY: centered_clip_dists(const float* x, u64 dim, const float* f, u32 n, float* out,
        // double* part) matches; 1 ≤ n ≤ CC_MAX (= FUSED_MAX) and n ≤ rows (checked), fac holds
        // n factors, out dim values, parts ⌈dim / RCHUNK⌉·n f64; blockDim = RBLOCK.
        unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
        self.sum_parts_into_res(0, n, chunks)?;
        self.read_res(n)
    }

    fn dots_with_out(&mut self, n: usize) -> Result<(Vec<f64>, f64), Error> {
        self.check_count(n)?;
        self.zero_res(n + 1)?;
        self.rows_vs_out(n, 1)?;
        if self.dim > 0 {
            let chunks = self.dim.div_ceil(RCHUNK);
            grow(&self.stream, &mut self.parts, chunks)?;
            let f = self.func(MOD_REDUCE, "sumsq_vec")?;
            let dim = self.dim as u64;
            let gx = grid(chunks, 1, self.sms * 16);
            let mut b = self.stream.launch_builder(&f);
            b.arg(&self.out).arg(&dim).arg(&mut self.parts);
            // SAFETY: sumsq_vec(const float* v, u64 len, double* part) matches; out holds dim
            // and parts ⌈dim / RCHUNK⌉ f64; blockDim = RBLOCK.
            unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
            self.sum_parts_into_res(n, 1, chunks)?;
        }
        let mut v = self.read_res(n + 1)?;
        let norm = v.pop().unwrap_or(0.0);
        Ok((v, norm))
    }

    fn out_from_acc(&mut self, scale: f32) -> Result<(), Error> {
        let f = self.func(MOD_REDUCE, "scale_acc")?;
        let dim = self.dim as u64;
        let gx = self.grid_1d(self.dim);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&self.acc).arg(&dim).arg(&scale).arg(&mut self.out);
        // SAFETY: scale_acc(const float* acc, u64 dim, float scale, float* out) matches; both
        // buffers hold ≥ dim.
        unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn add_noise(&mut self, std: f32, seed: u64, round: u64) -> Result<(), Error> {
        let f = self.func(MOD_NOISE, "add_noise")?;
        let dim = self.dim as u64;
        let gx = self.grid_1d(self.dim.div_ceil(4));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut self.out).arg(&dim).arg(&std).arg(&seed).arg(&round);
        // SAFETY: add_noise(float* out, u64 dim, float std_dev, u64 seed, u64 round) matches;
        // out holds ≥ dim.
        unsafe { b.launch(cfg((gx, 1, 1), BLOCK)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn read_out(&mut self, dst: &mut [f32]) -> Result<(), Error> {
        if dst.len() != self.dim {
            return Err(Error::Length { what: "output", got: dst.len(), want: self.dim });
        }
        if self.dim > 0 {
            let view = self.out.try_slice(0..self.dim).ok_or_else(|| Error::Cuda("output buffer".into()))?;
            self.stream.memcpy_dtoh(&view, dst).map_err(cuda_err)?;
        }
        self.stream.synchronize().map_err(cuda_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_row_zeroes_only_what_its_segments_leave() {
        let b = [0u8; 64];
        let segs = [
            seg(2, 3, Encoding::DenseF32, &b[..12]),
            seg(5, 4, Encoding::TopKF32, &b[..16]),
            seg(9, 2, Encoding::DenseF16, &b[..4]),
            seg(12, 0, Encoding::DenseF32, &[]),
            seg(14, 8, Encoding::SignScale, &b[..5]),
        ];
        let u = Update { segments: &segs };
        assert_eq!(uncovered(&u, 30), vec![0..2, 5..9, 11..14, 22..30]);
        // Dense from end to end: nothing to zero.
        let whole = [seg(0, 4, Encoding::DenseF32, &b[..16]), seg(4, 2, Encoding::DenseBf16, &b[..4])];
        assert!(uncovered(&Update { segments: &whole }, 6).is_empty());
        assert_eq!(uncovered(&Update { segments: &[] }, 6), vec![0..6]);
    }

    fn seg(offset: usize, numel: usize, encoding: Encoding, bytes: &[u8]) -> Segment<'_> {
        Segment { offset, numel, encoding, bytes }
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().expect("must succeed"))
    }

    #[test]
    fn staging_layout() {
        let dense: Vec<u8> = [1.0f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let half = [0u8; 10];
        let topk: Vec<u8> = [1u32, 4].iter().flat_map(|v| v.to_le_bytes()).chain([0u8; 8]).collect();
        let empty_topk: [u8; 0] = [];
        let segs = [
            seg(0, 3, Encoding::DenseF32, &dense),
            seg(3, 5, Encoding::DenseF16, &half),
            seg(8, 0, Encoding::DenseF32, &[]),
            seg(8, 9, Encoding::TopKF16, &empty_topk),
            seg(17, 5000, Encoding::TopKF32, &topk),
        ];
        let up = Update { segments: &segs };
        let plan = plan_update(&up, 6000).expect("must succeed");
        assert!(plan.length_error.is_none());
        // Every byte of the head is written: garbage and zeroed buffers end up the same.
        let mut host = vec![0u8; plan.head + 7];
        fill_head(&plan, &up, &mut host);
        let mut dirty = vec![0xa5u8; plan.head];
        fill_head(&plan, &up, &mut dirty);
        assert_eq!(&host[..plan.head], &dirty[..]);
        assert!(host[plan.head..].iter().all(|&b| b == 0));
        let host = image(&plan, &up);
        let tabled: Vec<usize> = plan.tabled.iter().map(|t| t.segment).collect();
        assert_eq!(tabled, [0, 1, 4]);
        assert_eq!(plan.table_off, 8 + 8 * 3);
        assert_eq!(u64_at(&host, 0), 0);
        for t in 0..3 {
            assert_eq!(u64_at(&host, 8 + 8 * t), u64::MAX);
        }
        let row = |t: usize, f: usize| u64_at(&host, plan.table_off as usize + 64 * t + 8 * f);
        let mut first = 0;
        for (t, (code, off, numel, work, bytes)) in
            [(0, 0, 3, 3, &dense[..]), (1, 3, 5, 5, &half[..]), (4, 17, 5000, 2, &topk[..])].into_iter().enumerate()
        {
            assert_eq!(row(t, 0), code);
            assert_eq!(row(t, 2), off);
            assert_eq!(row(t, 3), numel);
            assert_eq!(row(t, 5), work);
            assert_eq!(row(t, 6), first);
            first += work.div_ceil(DECODE_CHUNK);
            let data = row(t, 4) as usize;
            assert_eq!(data % 4, 0);
            assert!(data >= plan.head && plan.head >= plan.table_off as usize + 64 * 3);
            assert_eq!(&host[data..data + bytes.len()], bytes);
        }
        assert_eq!(plan.total_chunks, first);
        assert_eq!(plan.len % 16, 0);
    }

    /// What the device holds after an upload of `plan`: the head, then each run's copy. Only
    /// segment bytes are placed (a run's gaps are not the test's to read), after checking that
    /// exactly one run covers each tabled segment, at its data offset.
    fn image(plan: &Plan, up: &Update<'_>) -> Vec<u8> {
        let mut img = vec![0u8; plan.len];
        fill_head(plan, up, &mut img);
        let mut end = plan.head;
        for r in &plan.runs {
            assert!(r.dev >= end, "runs overlap or cover the head: {:?}", plan.runs);
            end = r.dev + r.len;
            assert!(end <= plan.len);
        }
        for t in &plan.tabled {
            let b = up.segments[t.segment].bytes;
            let addr = b.as_ptr() as usize;
            let covering: Vec<&Run> =
                plan.runs.iter().filter(|r| r.src <= addr && addr + b.len() <= r.src + r.len).collect();
            assert_eq!(covering.len(), 1, "segment {} in {:?}", t.segment, plan.runs);
            assert_eq!(t.data_off, covering[0].dev + (addr - covering[0].src));
            img[t.data_off..t.data_off + b.len()].copy_from_slice(b);
        }
        img
    }

    #[test]
    fn segments_in_one_payload_go_up_in_one_copy_keeping_their_alignment() {
        // A payload as the transport delivers it: 64-aligned, tensors at multiples of 8.
        let mut payload = vec![0u64; 64];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut payload);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let bytes: &[u8] = bytes;
        let f32s = |at: usize, n: usize| &bytes[at..at + 4 * n];
        let segs = [
            seg(0, 6, Encoding::DenseF32, f32s(8, 6)),
            seg(6, 3, Encoding::DenseF16, &bytes[40..46]),
            seg(9, 5, Encoding::DenseF32, f32s(48, 5)),
            seg(14, 2, Encoding::DenseF32, f32s(136, 2)),
        ];
        let up = Update { segments: &segs };
        let plan = plan_update(&up, 100).expect("plan");
        // 8..46 and 48..68 are 2 bytes apart: one run; 136 is 68 bytes past 68: a second.
        assert_eq!(plan.runs.len(), 2, "{:?}", plan.runs);
        assert_eq!(plan.runs[0].len, 68 - 8);
        for t in &plan.tabled {
            let addr = segs[t.segment].bytes.as_ptr() as usize;
            assert_eq!(t.data_off % 16, addr % 16, "segment {}", t.segment);
        }
        let img = image(&plan, &up);
        for t in &plan.tabled {
            let b = segs[t.segment].bytes;
            assert_eq!(&img[t.data_off..t.data_off + b.len()], b);
        }
        // A segment at an address that is not 4-aligned gets a copy of its own, 16-aligned.
        let odd = [seg(0, 2, Encoding::DenseF16, &bytes[8..12]), seg(2, 1, Encoding::DenseF16, &bytes[14..16])];
        let up = Update { segments: &odd };
        let plan = plan_update(&up, 100).expect("plan");
        assert_eq!(plan.runs.len(), 2, "{:?}", plan.runs);
        assert_eq!(plan.tabled[1].data_off % 16, 0);
        image(&plan, &up);
    }

    #[test]
    fn length_errors_match_the_reference() {
        let cases: [(Encoding, usize, usize); 8] = [
            (Encoding::DenseF32, 3, 11),
            (Encoding::DenseF16, 3, 5),
            (Encoding::DenseBf16, 3, 7),
            (Encoding::Int8Block { block_size: 0 }, 3, 7),
            (Encoding::Int8Block { block_size: 2 }, 3, 10),
            (Encoding::TopKF32, 3, 12),
            (Encoding::TopKF16, 1, 12),
            (Encoding::SignScale, 9, 5),
        ];
        for (enc, numel, len) in cases {
            let bytes = vec![0u8; len];
            let mut out = vec![0f32; numel];
            let want = decode::decode_into(enc, numel, &bytes, &mut out).expect_err("must fail");
            let s = seg(0, numel, enc, &bytes);
            assert_eq!(segment_work(&s).expect_err("must fail"), want, "{enc:?}");
        }
        // Lengths the reference accepts give the right work.
        let ok: [(Encoding, usize, usize, usize); 5] = [
            (Encoding::Int8Block { block_size: 2 }, 3, 11, 3),
            (Encoding::TopKF32, 3, 16, 2),
            (Encoding::TopKF16, 3, 18, 3),
            (Encoding::SignScale, 9, 6, 9),
            (Encoding::DenseBf16, 3, 6, 3),
        ];
        for (enc, numel, len, work) in ok {
            let bytes = vec![0u8; len];
            let mut out = vec![0f32; numel];
            // (Zero top-k indices are out of order, but the length is accepted.)
            let r = decode::decode_into(enc, numel, &bytes, &mut out);
            assert!(!matches!(r, Err(decode::Error::Length { .. } | decode::Error::BlockSize)), "{enc:?}");
            assert_eq!(segment_work(&seg(0, numel, enc, &bytes)).expect("must succeed").2, work, "{enc:?}");
        }
    }

    #[test]
    fn errors_from_the_device_report() {
        let nan = f32::NAN.to_le_bytes();
        let topk: Vec<u8> = [2u32, 2, 7].iter().flat_map(|v| v.to_le_bytes()).chain(nan).chain([0u8; 8]).collect();
        let int8 = [0u8; 4 * 3 + 5];
        let bad_len = [0u8; 3];
        let segs = [
            seg(0, 5, Encoding::Int8Block { block_size: 2 }, &int8),
            seg(5, 9, Encoding::TopKF32, &topk),
            seg(14, 1, Encoding::DenseF32, &bad_len),
        ];
        let header = |flags: &[u64]| {
            let mut h = vec![0u8; 8];
            for f in flags {
                h.extend_from_slice(&f.to_le_bytes());
            }
            h
        };
        let err = |n: usize, flags: &[u64]| {
            let up = Update { segments: &segs[..n] };
            let mut plan = plan_update(&up, 20).expect("must succeed");
            first_error(&up, &mut plan, Some(&header(flags)))
        };
        // Top-k errors, then length errors, then dense values (the CPU backend's order).
        assert!(matches!(
            err(3, &[1, 0]),
            Some(Error::Decode { segment: 1, source: decode::Error::NonFinite { index: 2 } })
        ));
        assert!(matches!(
            err(3, &[u64::MAX, 1]),
            Some(Error::Decode { segment: 1, source: decode::Error::Index { entry: 1, index: 2, numel: 9 } })
        ));
        assert!(matches!(
            err(3, &[1, u64::MAX]),
            Some(Error::Decode { segment: 2, source: decode::Error::Length { len: 3, numel: 1 } })
        ));
        assert!(matches!(
            err(2, &[1, u64::MAX]),
            Some(Error::Decode { segment: 0, source: decode::Error::NonFinite { index: 1 } })
        ));
        assert!(err(2, &[u64::MAX, u64::MAX]).is_none());
        // A length error with no top-k segment before it needs no device work.
        let up = Update { segments: &segs[2..] };
        let mut plan = plan_update(&up, 20).expect("must succeed");
        assert!(!needs_device_check(&up, &plan));
        assert!(matches!(
            first_error(&up, &mut plan, None),
            Some(Error::Decode { segment: 0, source: decode::Error::Length { .. } })
        ));
        let up = Update { segments: &segs[..2] };
        assert!(needs_device_check(&up, &plan_update(&up, 20).expect("must succeed")));
    }

    #[test]
    fn architectures_map_to_the_highest_one_not_above_the_device() {
        assert_eq!(arch_for(8, 0).map(|a| ARCHS[a].1), Some("compute_80"));
        assert_eq!(arch_for(8, 9).map(|a| ARCHS[a].1), Some("compute_89"));
        assert_eq!(arch_for(8, 8).map(|a| ARCHS[a].1), Some("compute_87"));
        assert_eq!(arch_for(9, 0).map(|a| ARCHS[a].1), Some("compute_90"));
        assert_eq!(arch_for(12, 0).map(|a| ARCHS[a].1), Some("compute_100"));
        assert_eq!(arch_for(6, 1), None);
    }

    #[test]
    fn compile_all_or_skip() {
        if !nvrtc_present() {
            vain_testkit::unavailable(vain_testkit::Need::Nvrtc, "cuda: compile_all", "libnvrtc not found");
            return;
        }
        assert!(compile_all("compute_61").is_err());
        let names: Vec<&str> = compile_all("compute_90")
            .expect("must succeed")
            .into_iter()
            .map(|(n, len)| {
                assert!(len > 1000, "{n}: {len}");
                n
            })
            .collect();
        assert_eq!(names, ["decode.cu", "reduce.cu", "robust.cu", "noise.cu"]);
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        // Without a GPU this returns an error; with one it opens it. Either way no panic.
        if let Err(e) = CudaBackend::new(0) {
            assert!(matches!(e, Error::NoCudaDriver(_) | Error::Cuda(_)), "{e}");
        }
    }
}
