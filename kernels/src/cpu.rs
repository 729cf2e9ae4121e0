//! The CPU backend: the reference every other backend is tested against, and fast enough to be
//! the production path on machines without a GPU.
//!
//! Speed comes from three habits: work is split over threads by coordinate range (each thread
//! owns a disjoint slice of the output, so no locks); inner loops run over fixed-width lane arrays
//! the compiler turns into SIMD (`[f32; LANES]` accumulators, branch-free min/max); and data is
//! walked in cache-sized chunks (a chunk of the output stays in L1 while every row is added to
//! it). Per-coordinate order statistics (median, trimmed mean, Bulyan) sort LANES coordinates at
//! once with a Batcher odd–even merge network, which is branch-free and vectorises, instead of
//! one `sort` per coordinate.

use crate::backend::{Backend, Error, Kind, Segment, Update};
use crate::decode::{self, Encoding};
use crate::philox;
use half::f16;
use std::ops::Range;

/// Coordinates processed together by the vectorised loops.
const LANES: usize = 16;
/// Elements decoded at once into a stack buffer (16 KiB of f32: stays in L1).
const CHUNK: usize = 4096;
/// Below this many coordinates an operation runs on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// The widest SIMD this CPU offers the 16-lane loops, detected once. `VAIN_CPU_SIMD=avx2` or
/// `=portable` caps it (to compare the paths, or to rule one out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    Portable,
}

fn simd() -> Simd {
    static SIMD: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *SIMD.get_or_init(|| {
        // Anything but "avx2" or "portable" (unset, "auto", "avx512", a typo) caps nothing.
        let cap = std::env::var("VAIN_CPU_SIMD").unwrap_or_default().to_ascii_lowercase();
        let (allow_512, allow_2) = match cap.as_str() {
            "portable" => (false, false),
            "avx2" => (false, true),
            _ => (true, true),
        };
        #[cfg(target_arch = "x86_64")]
        {
            if allow_512 && std::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if allow_2 && std::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        let _ = (allow_512, allow_2);
        Simd::Portable
    })
}

/// `fn $name` runs `$portable` compiled for the widest SIMD [`simd`] found: the same code
/// (fixed-width lane loops) three times over, so every path computes the same operations in
/// the same order and gives the same result; only the instructions differ.
macro_rules! wide {
    ($(#[$m:meta])* fn $name:ident / $portable:ident ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) -> $ret {
                    $portable($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) -> $ret {
                    $portable($($arg),*)
                }
                match simd() {
                    // SAFETY: `simd` found AVX-512F on this CPU.
                    #[allow(unsafe_code)]
                    Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `simd` found AVX2 on this CPU.
                    #[allow(unsafe_code)]
                    Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    Simd::Portable => {}
                }
            }
            $portable($($arg),*)
        }
    };
}

/// The CPU backend. `threads` workers split each operation by coordinate range.
#[derive(Debug)]
pub struct CpuBackend {
    threads: usize,
    dim: usize,
    n_rows: usize,
    rows: Rows,
    /// The accumulator and the output, in the same anonymous huge-page memory as the rows: a
    /// 4M-parameter round touches them page by page otherwise (8 192 faults, a large share of a
    /// short job's time).
    acc: Rows,
    out: Rows,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl CpuBackend {
    /// A backend using `threads` threads (at least 1).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            dim: 0,
            n_rows: 0,
            rows: Rows::default(),
            acc: Rows::default(),
            out: Rows::default(),
        }
    }

    /// Threads used per operation.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn parts(&self, len: usize) -> usize {
        if len < PAR_MIN { 1 } else { self.threads.min(len / (PAR_MIN / 4)).max(1) }
    }

    fn check_rows(&self, rows: &[u32]) -> Result<(), Error> {
        match rows.iter().find(|r| **r as usize >= self.n_rows) {
            Some(r) => Err(Error::Row { row: *r as usize, rows: self.n_rows }),
            None => Ok(()),
        }
    }

    fn check_n(&self, n: usize) -> Result<(), Error> {
        if n > self.n_rows { Err(Error::Row { row: n.saturating_sub(1), rows: self.n_rows }) } else { Ok(()) }
    }
}

/// Checks a [`Backend::mix_rows`] call's shapes: targets below n, one weight row per target.
pub(crate) fn check_mix(n: usize, targets: &[u32], mix: &[f32]) -> Result<(), Error> {
    if let Some(t) = targets.iter().find(|t| **t as usize >= n) {
        return Err(Error::Row { row: *t as usize, rows: n });
    }
    if mix.len() != targets.len() * n {
        return Err(Error::Length { what: "mix weights", got: mix.len(), want: targets.len() * n });
    }
    Ok(())
}

/// Splits `len` into `parts` ranges whose starts are multiples of 64 (so sign bytes and SIMD
/// lanes never straddle two threads).
fn ranges(len: usize, parts: usize) -> impl Iterator<Item = Range<usize>> {
    let step = len.div_ceil(parts).next_multiple_of(64).max(64);
    (0..len).step_by(step).map(move |a| a..(a + step).min(len))
}

/// Runs `f(start, chunk)` over disjoint chunks of `out` on `parts` threads.
fn par_chunks<F>(out: &mut [f32], parts: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if parts <= 1 {
        f(0, out);
        return;
    }
    let step = out.len().div_ceil(parts).next_multiple_of(64).max(64);
    std::thread::scope(|s| {
        for (k, chunk) in out.chunks_mut(step).enumerate() {
            let f = &f;
            s.spawn(move || f(k * step, chunk));
        }
    });
}

/// Runs `f(range)` over `parts` ranges of 0..len and returns the results in range order.
fn par_map<T: Send, F>(len: usize, parts: usize, f: F) -> Vec<T>
where
    F: Fn(Range<usize>) -> T + Sync,
{
    if parts <= 1 {
        return vec![f(0..len)];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = ranges(len, parts)
            .map(|r| {
                let f = &f;
                s.spawn(move || f(r))
            })
            .collect();
        // A worker only panics on a bug; surfacing it as a panic here keeps it loud.
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

fn f32_le(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes elements `a..a + out.len()` of a non-sparse segment into `out`. Lengths were checked.
fn decode_chunk(seg: &Segment<'_>, a: usize, out: &mut [f32]) {
    let b = &seg.bytes;
    match seg.encoding {
        Encoding::DenseF32 => {
            for (o, c) in out.iter_mut().zip(b[4 * a..].chunks_exact(4)) {
                *o = f32_le(c);
            }
        }
        Encoding::DenseF16 | Encoding::DenseBf16 => {
            let half = seg.encoding == Encoding::DenseF16;
            let conv = |h: u16| if half { f16_bits_to_f32(h) } else { f32::from_bits(u32::from(h) << 16) };
            let src = &b[2 * a..2 * (a + out.len())];
            // Whole u16 loads vectorise; byte-pair assembly does not.
            match bytemuck::try_cast_slice::<u8, u16>(src) {
                Ok(h) if cfg!(target_endian = "little") && half => {
                    for (o, &h) in out.iter_mut().zip(h) {
                        *o = f16_bits_to_f32(h);
                    }
                }
                Ok(h) if cfg!(target_endian = "little") => {
                    for (o, &h) in out.iter_mut().zip(h) {
                        *o = f32::from_bits(u32::from(h) << 16);
                    }
                }
                _ => {
                    for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                        *o = conv(u16::from_le_bytes([c[0], c[1]]));
                    }
                }
            }
        }
        Encoding::Int8Block { block_size } => {
            let bs = block_size as usize;
            let (scales, q) = b.split_at(4 * seg.numel.div_ceil(bs));
            let mut i = 0;
            while i < out.len() {
                let e = a + i;
                let blk = e / bs;
                let take = ((blk + 1) * bs - e).min(out.len() - i);
                let s = f32_le(&scales[4 * blk..]);
                for (o, &qi) in out[i..i + take].iter_mut().zip(&q[e..e + take]) {
                    *o = f32::from(qi as i8) * s;
                }
                i += take;
            }
        }
        Encoding::SignScale => {
            // The sign bit of element e is bit e % 8 of byte e / 8; flipping the f32 sign bit
            // instead of branching lets whole bytes vectorise.
            let s = f32_le(b).to_bits();
            let bits = &b[4..];
            let flip = |e: usize| u32::from(bits[e / 8] >> (e % 8) & 1) << 31;
            let head = ((8 - a % 8) % 8).min(out.len());
            for (k, o) in out[..head].iter_mut().enumerate() {
                *o = f32::from_bits(s ^ flip(a + k));
            }
            let body = &mut out[head..];
            let done = a + head + (body.len() / 8) * 8;
            let mut octets = body.chunks_exact_mut(8);
            let first_byte = (a + head) / 8;
            for (q, o8) in (&mut octets).enumerate() {
                let byte = u32::from(bits[first_byte + q]);
                for (bit, o) in o8.iter_mut().enumerate() {
                    *o = f32::from_bits(s ^ ((byte >> bit & 1) << 31));
                }
            }
            for (k, o) in octets.into_remainder().iter_mut().enumerate() {
                *o = f32::from_bits(s ^ flip(done + k));
            }
        }
        Encoding::TopKF32 | Encoding::TopKF16 => unreachable_sparse(),
    }
}

/// IEEE binary16 → f32, exact and branch-free (vectorises; `half` without F16C does not): the
/// 15 magnitude bits moved to f32's position and scaled by 2¹¹² give every finite value,
/// subnormals included; exponent 31 maps to ∞/NaN with the payload kept.
fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let mag = h & 0x7fff;
    let finite = f32::from_bits(mag << 13) * f32::from_bits(0x7780_0000);
    let special = f32::from_bits((mag << 13) | 0x7f80_0000);
    let v = if mag >= 0x7c00 { special } else { finite };
    f32::from_bits(v.to_bits() | ((h & 0x8000) << 16))
}

#[cold]
fn unreachable_sparse() {
    // Sparse segments never reach the dense chunk decoder: callers route them to `topk_*`.
    debug_assert!(false, "sparse segment in decode_chunk");
}

fn is_sparse(e: Encoding) -> bool {
    matches!(e, Encoding::TopKF32 | Encoding::TopKF16)
}

/// Byte-length check, exactly the reference's (decode.rs) rules.
fn check_length(seg: &Segment<'_>) -> Result<(), decode::Error> {
    let n = seg.numel;
    let len = seg.bytes.len();
    let err = || decode::Error::Length { len, numel: n };
    let want = match seg.encoding {
        Encoding::DenseF32 => n.checked_mul(4),
        Encoding::DenseF16 | Encoding::DenseBf16 => n.checked_mul(2),
        Encoding::Int8Block { block_size: 0 } => return Err(decode::Error::BlockSize),
        Encoding::Int8Block { block_size } => {
            n.div_ceil(block_size as usize).checked_mul(4).and_then(|s| s.checked_add(n))
        }
        Encoding::SignScale => Some(4 + n.div_ceil(8)),
        Encoding::TopKF32 | Encoding::TopKF16 => {
            let per = if seg.encoding == Encoding::TopKF32 { 8 } else { 6 };
            return if len.is_multiple_of(per) && len / per <= n { Ok(()) } else { Err(err()) };
        }
    };
    if want == Some(len) { Ok(()) } else { Err(err()) }
}

fn topk_k(seg: &Segment<'_>) -> usize {
    seg.bytes.len() / if seg.encoding == Encoding::TopKF32 { 8 } else { 6 }
}

fn topk_index(seg: &Segment<'_>, e: usize) -> u32 {
    let b = &seg.bytes[4 * e..];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn topk_value(seg: &Segment<'_>, k: usize, e: usize) -> f32 {
    let vals = &seg.bytes[4 * k..];
    if seg.encoding == Encoding::TopKF32 {
        f32_le(&vals[4 * e..])
    } else {
        f16::from_bits(u16::from_le_bytes([vals[2 * e], vals[2 * e + 1]])).to_f32()
    }
}

/// Validates a sparse segment and returns its sum of squares.
fn topk_check(seg: &Segment<'_>) -> Result<f64, decode::Error> {
    let k = topk_k(seg);
    let mut prev: Option<u32> = None;
    let mut ss = 0f64;
    for e in 0..k {
        let i = topk_index(seg, e);
        if i as usize >= seg.numel || prev.is_some_and(|p| i <= p) {
            return Err(decode::Error::Index { entry: e, index: i, numel: seg.numel });
        }
        prev = Some(i);
        let v = topk_value(seg, k, e);
        if !v.is_finite() {
            return Err(decode::Error::NonFinite { index: i as usize });
        }
        ss += f64::from(v) * f64::from(v);
    }
    Ok(ss)
}

wide!(
    /// Sum of squares of `v` (f32 lanes per 512-block, f64 across blocks) and whether all are
    /// finite. A non-finite value makes its block's f32 sum non-finite, so the flag costs nothing
    /// on the fast path; only such a block (or one whose squares overflow f32) is looked at again.
    fn sum_sq_finite / sum_sq_finite_portable (v: &[f32]) -> (f64, bool));

/// [`sum_sq_finite`], compiled for whichever CPU its caller was (same operations in the same
/// order on both paths, so the same result).
#[inline(always)]
fn sum_sq_finite_portable(v: &[f32]) -> (f64, bool) {
    let mut total = 0f64;
    for block in v.chunks(512) {
        let mut acc = [0f32; LANES];
        let mut it = block.chunks_exact(LANES);
        for c in &mut it {
            for l in 0..LANES {
                acc[l] += c[l] * c[l];
            }
        }
        for (l, x) in it.remainder().iter().enumerate() {
            acc[l] += x * x;
        }
        let s: f32 = acc.iter().sum();
        if s.is_finite() {
            total += f64::from(s);
        } else if block.iter().all(|x| x.is_finite()) {
            total += block.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>();
        } else {
            return (total, false);
        }
    }
    (total, true)
}

/// Elements `r` of a dense f32 segment as a slice, without copying, when the bytes are aligned
/// (they are in a payload laid out per docs/protocol.md) and the machine is little-endian.
fn f32_view<'a>(seg: &Segment<'a>, r: &Range<usize>) -> Option<&'a [f32]> {
    if cfg!(target_endian = "little") && seg.encoding == Encoding::DenseF32 {
        bytemuck::try_cast_slice(&seg.bytes[4 * r.start..4 * r.end]).ok()
    } else {
        None
    }
}

/// For a coordinate range `r` of the flat vector, calls `f(segment index, segment, element
/// range within the segment)` for each dense segment part inside it (in CHUNK-sized pieces).
fn for_dense_parts(update: &Update<'_>, r: &Range<usize>, mut f: impl FnMut(usize, &Segment<'_>, Range<usize>)) {
    for (si, seg) in update.segments.iter().enumerate() {
        if is_sparse(seg.encoding) {
            continue;
        }
        let a = seg.offset.max(r.start);
        let b = (seg.offset + seg.numel).min(r.end);
        let mut e = a;
        while e < b {
            let stop = (e + CHUNK).min(b);
            f(si, seg, e - seg.offset..stop - seg.offset);
            e = stop;
        }
    }
}

/// Validates the dense segments' values in coordinate range `r`; returns the sum of squares or
/// the first bad element.
fn check_range(update: &Update<'_>, r: Range<usize>) -> Result<f64, Error> {
    let mut buf = [0f32; CHUNK];
    let mut total = 0f64;
    let mut err = None;
    for_dense_parts(update, &r, |si, seg, er| {
        if err.is_some() {
            return;
        }
        let v: &[f32] = match f32_view(seg, &er) {
            Some(v) => v,
            None => {
                decode_chunk(seg, er.start, &mut buf[..er.len()]);
                &buf[..er.len()]
            }
        };
        let (ss, ok) = sum_sq_finite(v);
        if ok {
            total += ss;
        } else if let Some(k) = v.iter().position(|x| !x.is_finite()) {
            err = Some(Error::Decode { segment: si, source: decode::Error::NonFinite { index: er.start + k } });
        }
    });
    err.map_or(Ok(total), Err)
}

/// Writes (`set`) or adds `w ×` the update's values in coordinate range `start..start+dst.len()`.
fn apply_range(update: &Update<'_>, start: usize, dst: &mut [f32], w: f32, set: bool) {
    let r = start..start + dst.len();
    let mut buf = [0f32; CHUNK];
    if set {
        // Zero what no segment covers, then write the segments.
        let mut covered = r.start;
        for seg in update.segments {
            let a = seg.offset.max(r.start).min(r.end);
            if a > covered {
                dst[covered - start..a - start].fill(0.0);
            }
            covered = covered.max((seg.offset + seg.numel).min(r.end));
        }
        dst[covered.min(r.end) - start..].fill(0.0);
    }
    for_dense_parts(update, &r, |_, seg, er| {
        let v: &[f32] = match f32_view(seg, &er) {
            Some(v) => v,
            None => {
                decode_chunk(seg, er.start, &mut buf[..er.len()]);
                &buf[..er.len()]
            }
        };
        let d = &mut dst[seg.offset + er.start - start..seg.offset + er.end - start];
        if set {
            for (o, x) in d.iter_mut().zip(v.iter()) {
                *o = w * x;
            }
        } else {
            for (o, x) in d.iter_mut().zip(v.iter()) {
                *o += w * x;
            }
        }
    });
    for seg in update.segments.iter().filter(|s| is_sparse(s.encoding)) {
        if seg.offset + seg.numel <= r.start || seg.offset >= r.end {
            continue;
        }
        let k = topk_k(seg);
        // Indices are strictly increasing (checked), so the entries of this range are contiguous.
        let lo = r.start.saturating_sub(seg.offset);
        let hi = r.end - seg.offset;
        let first = partition(k, |e| (topk_index(seg, e) as usize) < lo);
        for e in first..k {
            let i = topk_index(seg, e) as usize;
            if i >= hi {
                break;
            }
            let v = w * topk_value(seg, k, e);
            let o = &mut dst[seg.offset + i - start];
            if set { *o = v } else { *o += v }
        }
    }
}

/// First e in 0..k for which `pred` is false (pred is true on a prefix).
fn partition(k: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, k);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// Checks layout, byte lengths and the sparse segments; returns the sparse sum of squares.
fn validate_shape(update: &Update<'_>, dim: usize) -> Result<f64, Error> {
    update.check_layout(dim)?;
    let mut total = 0f64;
    for (si, seg) in update.segments.iter().enumerate() {
        check_length(seg).map_err(|source| Error::Decode { segment: si, source })?;
        if is_sparse(seg.encoding) {
            total += topk_check(seg).map_err(|source| Error::Decode { segment: si, source })?;
        }
        // The reference rejects a non-finite scale even when no element uses it (n = 0); with
        // n > 0 every element would be non-finite anyway. Found by the backend_ingest fuzzer.
        if seg.encoding == Encoding::SignScale && !f32_le(seg.bytes).is_finite() {
            return Err(Error::Decode { segment: si, source: decode::Error::NonFinite { index: 0 } });
        }
    }
    Ok(total)
}

/// The dense values just written to `dst` (coordinates `start..`): their sum of squares, or the
/// first non-finite one.
fn check_written(update: &Update<'_>, start: usize, dst: &[f32]) -> Result<f64, Error> {
    let r = start..start + dst.len();
    let mut total = 0f64;
    let mut err = None;
    for_dense_parts(update, &r, |si, seg, er| {
        if err.is_some() {
            return;
        }
        let v = &dst[seg.offset + er.start - start..seg.offset + er.end - start];
        let (ss, ok) = sum_sq_finite(v);
        if ok {
            total += ss;
        } else if let Some(k) = v.iter().position(|x| !x.is_finite()) {
            err = Some(Error::Decode { segment: si, source: decode::Error::NonFinite { index: er.start + k } });
        }
    });
    err.map_or(Ok(total), Err)
}

/// Runs `f(start, chunk)` over disjoint chunks of `out` on `parts` threads, returning results in
/// chunk order.
fn par_chunks_map<T: Send, F>(out: &mut [f32], parts: usize, f: F) -> Vec<T>
where
    F: Fn(usize, &mut [f32]) -> T + Sync,
{
    if parts <= 1 {
        return vec![f(0, out)];
    }
    let step = out.len().div_ceil(parts).next_multiple_of(64).max(64);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(step)
            .enumerate()
            .map(|(k, chunk)| {
                let f = &f;
                s.spawn(move || f(k * step, chunk))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// Checks lengths and layout, then values (in parallel), and returns the squared norm.
fn validate(update: &Update<'_>, dim: usize, parts: usize) -> Result<f64, Error> {
    let mut total = validate_shape(update, dim)?;
    for part in par_map(dim, parts, |r| check_range(update, r)) {
        total += part?;
    }
    Ok(total)
}

/// Comparators of Batcher's odd–even merge sort for the next power of two ≥ m, keeping only
/// those between two of the first m slots: the padding would be +∞, which no kept comparator
/// could move, so the result on the first m slots is the same.
fn sorting_network(m: usize) -> Vec<(u16, u16)> {
    let n = m.next_power_of_two();
    let mut net = Vec::new();
    let mut p = 1;
    while p < n {
        let mut k = p;
        while k >= 1 {
            let mut j = k % p;
            while j + k < n {
                for i in 0..k.min(n - j - k) {
                    if (i + j) / (2 * p) == (i + j + k) / (2 * p) && i + j + k < m {
                        net.push(((i + j) as u16, (i + j + k) as u16));
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        p *= 2;
    }
    net
}

/// Keeps only the comparators that can change the values in `live` slots at the end: walking
/// backwards, a comparator touching a live slot stays and makes both its slots live. The kept
/// network leaves the `live` slots exactly as the full sort would (the median needs ~2/3 of it).
fn prune_network(net: &[(u16, u16)], m: usize, live: std::ops::Range<usize>) -> Vec<(u16, u16)> {
    let mut alive = vec![false; m];
    alive[live].iter_mut().for_each(|a| *a = true);
    let mut kept: Vec<(u16, u16)> = Vec::with_capacity(net.len());
    for &(i, j) in net.iter().rev() {
        if alive[i as usize] || alive[j as usize] {
            alive[i as usize] = true;
            alive[j as usize] = true;
            kept.push((i, j));
        }
    }
    kept.reverse();
    kept
}

/// Sorts each lane of `groups` coordinate groups ascending along slots, in a slot-major tile:
/// `tile[slot * stride + g]` holds group g of slot (row) `slot`. Each comparator is applied to
/// every group before the next, so the groups are independent chains the CPU overlaps, where
/// one group alone waits on each comparator's store before the next one's load.
fn sort_tile(tile: &mut [[f32; LANES]], stride: usize, groups: usize, net: &[(u16, u16)]) {
    sort_tile_wide(tile, stride, groups, net);
}

wide!(fn sort_tile_wide / sort_tile_portable (tile: &mut [[f32; LANES]], stride: usize, groups: usize, net: &[(u16, u16)]) -> ());

#[inline(always)]
fn sort_tile_portable(tile: &mut [[f32; LANES]], stride: usize, groups: usize, net: &[(u16, u16)]) {
    for &(i, j) in net {
        // Batcher's comparators always have i < j.
        let (lo, hi) = tile.split_at_mut(usize::from(j) * stride);
        let a = &mut lo[usize::from(i) * stride..usize::from(i) * stride + groups];
        for (a, b) in a.iter_mut().zip(&mut hi[..groups]) {
            // Whole-array values in and out, which LLVM turns into a vector min and max (lane by
            // lane in place it emits scalar branches).
            let (x, y) = (*a, *b);
            let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
            for l in 0..LANES {
                lo[l] = if x[l] < y[l] { x[l] } else { y[l] };
                hi[l] = if x[l] < y[l] { y[l] } else { x[l] };
            }
            *a = lo;
            *b = hi;
        }
    }
}

/// Sorts each lane of `v` (v[slot][lane]) ascending along slots: one group, slot-major; `wide`
/// on the widest SIMD this CPU has, else the baseline compilation.
#[cfg(test)]
fn sort_lanes(v: &mut [[f32; LANES]], net: &[(u16, u16)], wide: bool) {
    if wide { sort_tile(v, 1, 1, net) } else { sort_tile_portable(v, 1, 1, net) }
}

/// Per-coordinate statistic of the sorted values `s` (length m, ascending).
#[derive(Clone, Copy)]
enum Order {
    Median,
    Trimmed(usize),
    ClosestToMedian(usize),
}

fn median_sorted(s: &[f32]) -> f32 {
    let m = s.len();
    if m % 2 == 1 { s[m / 2] } else { 0.5 * (s[m / 2 - 1] + s[m / 2]) }
}

fn order_stat(s: &[f32], how: Order) -> f32 {
    match how {
        Order::Median => median_sorted(s),
        Order::Trimmed(t) => {
            let mid = &s[t..s.len() - t];
            (mid.iter().map(|x| f64::from(*x)).sum::<f64>() / mid.len() as f64) as f32
        }
        Order::ClosestToMedian(beta) => {
            let med = median_sorted(s);
            // The beta values nearest the median form a window of the sorted order; grow it
            // from the middle towards the nearer neighbour.
            let m = s.len();
            let (mut lo, mut hi) = ((m - 1) / 2, (m - 1) / 2 + 1);
            let mut sum = 0f64;
            for _ in 0..beta {
                // `lo` wraps past 0 to usize::MAX, which fails `lo < m`.
                let take_lo = lo < m && (hi >= m || med - s[lo] <= s[hi] - med);
                if take_lo {
                    sum += f64::from(s[lo]);
                    lo = lo.wrapping_sub(1);
                } else {
                    sum += f64::from(s[hi]);
                    hi += 1;
                }
            }
            (sum / beta as f64) as f32
        }
    }
}

/// Coordinate groups of LANES gathered per tile: each row contributes one contiguous
/// TILE_GROUPS × LANES run, so the gather streams rows instead of hopping between them.
const TILE_GROUPS: usize = 16;
/// Groups between one slot's run and the next in a tile: one more than a run, so two slots a
/// multiple of 4 apart do not sit a multiple of 4 KiB apart, where the CPU would take a load of
/// one for a read of the other's pending store and wait (4K aliasing: 7× slower, measured).
const TILE_STRIDE: usize = TILE_GROUPS + 1;

impl CpuBackend {
    /// The order statistic into `out`; with `dots`, also (row_i · out for i in 0..n_dots, ‖out‖²)
    /// from the rows' tiles while they are still in cache, saving a pass over the matrix.
    fn order_op(&mut self, rows: &[u32], how: Order, n_dots: Option<usize>) -> Result<Option<(Vec<f64>, f64)>, Error> {
        self.check_rows(rows)?;
        if let Some(k) = n_dots {
            self.check_n(k)?;
        }
        let m = rows.len();
        let need_ok = match how {
            Order::Median => m >= 1,
            Order::Trimmed(t) => 2 * t < m,
            Order::ClosestToMedian(b) => b >= 1 && b <= m,
        };
        if !need_ok {
            return Err(Error::Length { what: "rows", got: m, want: m.max(1) });
        }
        let full = sorting_network(m);
        // Only the slots the statistic reads need to be in their sorted place.
        let net = match how {
            Order::Median => prune_network(&full, m, (m - 1) / 2..m / 2 + 1),
            Order::Trimmed(t) => prune_network(&full, m, t..m - t),
            Order::ClosestToMedian(_) => full,
        };
        let (dim, data) = (self.dim, &self.rows);
        let parts = self.parts(dim * m.max(1) / 8);
        let nd = n_dots.unwrap_or(0);
        let partials = par_chunks_map(&mut self.out, parts, |start, out| {
            // tile[slot * STRIDE + g] holds lanes of coordinate group g from row `slot`: each
            // row's run of the tile is one contiguous copy.
            let mut tile = vec![[0f32; LANES]; TILE_STRIDE * m];
            let mut col = vec![0f32; m];
            let mut dots = vec![0f64; nd + 1];
            for (ti, ot) in out.chunks_mut(TILE_GROUPS * LANES).enumerate() {
                let j = start + ti * TILE_GROUPS * LANES;
                let w = ot.len();
                let groups = w.div_ceil(LANES);
                for (slot, &r) in rows.iter().enumerate() {
                    let src = &data[r as usize * dim + j..r as usize * dim + j + w];
                    let run = &mut tile[slot * TILE_STRIDE..slot * TILE_STRIDE + groups];
                    // A last group's lanes past `w` keep what an earlier tile left there (finite:
                    // stored rows are checked); lanes never mix, and these are never read.
                    bytemuck::cast_slice_mut::<[f32; LANES], f32>(run)[..w].copy_from_slice(src);
                }
                sort_tile(&mut tile, TILE_STRIDE, groups, &net);
                for (g, og) in ot.chunks_mut(LANES).enumerate() {
                    let slot = |k: usize| &tile[k * TILE_STRIDE + g];
                    match how {
                        Order::Median => {
                            let (a, b) = (slot((m - 1) / 2), slot(m / 2));
                            for (l, o) in og.iter_mut().enumerate() {
                                *o = if m % 2 == 1 { a[l] } else { 0.5 * (a[l] + b[l]) };
                            }
                        }
                        Order::Trimmed(t) => {
                            let mut acc = [0f32; LANES];
                            for k in t..m - t {
                                let v = slot(k);
                                for l in 0..LANES {
                                    acc[l] += v[l];
                                }
                            }
                            let inv = 1.0 / (m - 2 * t) as f32;
                            for (o, a) in og.iter_mut().zip(acc) {
                                *o = a * inv;
                            }
                        }
                        Order::ClosestToMedian(_) => {
                            for (l, o) in og.iter_mut().enumerate() {
                                for (k, c) in col.iter_mut().enumerate() {
                                    *c = slot(k)[l];
                                }
                                *o = order_stat(&col, how);
                            }
                        }
                    }
                }
                if n_dots.is_some() {
                    for (i, d) in dots[..nd].iter_mut().enumerate() {
                        *d += f64::from(dot(&data[i * dim + j..i * dim + j + w], ot));
                    }
                    dots[nd] += f64::from(dot(ot, ot));
                }
            }
            dots
        });
        Ok(n_dots.map(|_| {
            let mut d = sum_vecs(nd + 1, partials);
            let oo = d.pop().unwrap_or(0.0);
            (d, oo)
        }))
    }
}

wide!(
    /// a · b with f32 lanes (the caller keeps slices short, ≤ 512, so f32 partials stay accurate).
    fn dot / dot_portable (a: &[f32], b: &[f32]) -> f32);

/// [`dot`], compiled for whichever CPU its caller was (same result on both paths).
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += x * y;
    }
    acc.iter().sum()
}

const BLOCK: usize = 512;

/// The rows a round stores: anonymous memory, advised to the kernel as huge-page material, so
/// half a gigabyte of rows costs a few hundred page faults rather than 130 000, and a fresh map
/// is not zeroed twice (the kernel hands out zeroed pages). Kept across rounds while large
/// enough, and zeroed then (a row's gaps must read as zeros).
#[derive(Debug, Default)]
struct Rows {
    map: Option<memmap2::MmapMut>,
    len: usize,
}

impl Rows {
    /// Makes room for `cells` values, all zero.
    fn ensure(&mut self, cells: usize) -> Result<(), Error> {
        let bytes = cells.checked_mul(4).ok_or(Error::Capacity { need: u64::MAX, limit: isize::MAX as u64 })?;
        if self.map.as_ref().is_none_or(|m| m.len() < bytes) && bytes > 0 {
            self.map = None;
            let m = memmap2::MmapMut::map_anon(bytes).map_err(|source| Error::Memory { need: bytes as u64, source })?;
            // Advice only: without transparent huge pages the map works the same, page by page.
            // (Where the kernel compacts memory on demand for advised regions — THP `defrag`
            // = madvise, the default — a fragmented machine can stall the first fill.)
            #[cfg(target_os = "linux")]
            let _ = m.advise(memmap2::Advice::HugePage);
            self.map = Some(m);
            self.len = cells;
        } else {
            // A row's gaps (coordinates no segment covers) must read as zeros.
            self.len = cells;
            self.fill(0.0);
        }
        Ok(())
    }
}

impl std::ops::Deref for Rows {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.map {
            // A map starts on a page boundary, so its bytes are aligned for f32.
            Some(m) => bytemuck::cast_slice(&m[..self.len * 4]),
            None => &[],
        }
    }
}

impl std::ops::DerefMut for Rows {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.map {
            Some(m) => bytemuck::cast_slice_mut(&mut m[..self.len * 4]),
            None => &mut [],
        }
    }
}

/// Columns of one Gram GEMM: a sum in f32 runs over at most this many products before it is
/// added in f64, so an entry's error stays within 513 · 2⁻²⁴ · ‖a‖‖b‖. Longer chunks are a
/// little faster (1 024: 5 % at n = 32) and twice as inexact.
const GRAM_COLUMNS: usize = 512;

/// Columns per pass of [`gram_tiles`]: 512 columns of 32 rows stay in L1/L2 while every tile
/// re-reads them (1 024 and 4 096 were measured slower). Its 16 lanes each sum a sixteenth of
/// them, so an entry's error stays within (512/16 + 17) · 2⁻²⁴ · ‖a‖‖b‖, inside the GEMM
/// path's bound.
const TILE_COLUMNS: usize = 512;

/// Whether the Gram product goes by [`gram_tiles`]: on AVX-512, where its 16 accumulators of
/// 16 lanes fit the 32 vector registers (elsewhere they spill, and the `gemm` crate is faster).
fn gram_by_tiles() -> bool {
    simd() == Simd::Avx512
}

/// As [`gram_f32`], by 4 × 4 tiles of dot products over the lower triangle only (a SYRK): each
/// step loads 16 columns of 8 rows once and does 16 products with them.
fn gram_tiles(data: &[f32], n: usize, dim: usize, cols: Range<usize>, out: &mut [f32]) {
    assert!(cols.start <= cols.end && cols.end <= dim && data.len() >= n * dim && out.len() >= n * n);
    let row = |i: usize| &data[i.min(n - 1) * dim + cols.start..i.min(n - 1) * dim + cols.end];
    for bi in (0..n).step_by(4) {
        for bj in (0..=bi).step_by(4) {
            // Past the last row the tile repeats it; those products are dropped.
            let t = dot_tile(
                [row(bi), row(bi + 1), row(bi + 2), row(bi + 3)],
                [row(bj), row(bj + 1), row(bj + 2), row(bj + 3)],
            );
            for (p, tp) in t.iter().enumerate().filter(|(p, _)| bi + p < n) {
                for (q, v) in tp.iter().enumerate().filter(|(q, _)| bj + q <= bi + p) {
                    out[(bi + p) * n + bj + q] = *v;
                }
            }
        }
    }
}

wide!(
    /// The 4 × 4 dot products of rows `a` against rows `b` (all of one length), f32 lanes.
    fn dot_tile / dot_tile_portable (a: [&[f32]; 4], b: [&[f32]; 4]) -> [[f32; 4]; 4]);

#[inline(always)]
fn dot_tile_portable(a: [&[f32]; 4], b: [&[f32]; 4]) -> [[f32; 4]; 4] {
    let len = a[0].len();
    assert!(a.iter().chain(&b).all(|x| x.len() == len));
    let mut acc = [[[0f32; LANES]; 4]; 4];
    let whole = len / LANES * LANES;
    let mut k = 0;
    while k < whole {
        let xa: [[f32; LANES]; 4] = std::array::from_fn(|p| {
            let mut v = [0f32; LANES];
            v.copy_from_slice(&a[p][k..k + LANES]);
            v
        });
        let xb: [[f32; LANES]; 4] = std::array::from_fn(|q| {
            let mut v = [0f32; LANES];
            v.copy_from_slice(&b[q][k..k + LANES]);
            v
        });
        for p in 0..4 {
            for q in 0..4 {
                for l in 0..LANES {
                    acc[p][q][l] += xa[p][l] * xb[q][l];
                }
            }
        }
        k += LANES;
    }
    std::array::from_fn(|p| {
        std::array::from_fn(|q| {
            let tail: f32 = (whole..len).map(|t| a[p][t] * b[q][t]).sum();
            acc[p][q].iter().sum::<f32>() + tail
        })
    })
}

/// The lower triangle (diagonal included) of `out` (n × n, row-major) = the Gram product of
/// columns `cols` of the first `n` rows of `data` (row-major, `dim` columns); entries above the
/// diagonal may be left as they were. By halves: rows [n/2, n) against rows [0, n) in one GEMM,
/// then the top half the same way, which does about 2/3 of a full product's arithmetic.
fn gram_f32(data: &[f32], n: usize, dim: usize, cols: Range<usize>, out: &mut [f32]) {
    assert!(cols.start <= cols.end && cols.end <= dim && data.len() >= n * dim && out.len() >= n * n);
    let mut hi = n;
    while hi > 0 {
        // Below 8 rows a GEMM's tiles are mostly empty; one square block is cheaper than halves.
        let lo = if hi <= 8 { 0 } else { hi / 2 };
        gemm_rows(data, dim, cols.clone(), lo..hi, 0..hi, out, n);
        hi = lo;
    }
}

/// `out[i·n + j]` = the dot product of rows i and j of `data` over columns `cols`, for i in
/// `rows` and j in `against`, by the `gemm` crate's kernels for the CPU it runs on (AVX-512,
/// AVX2 + FMA or SSE, chosen at run time).
fn gemm_rows(
    data: &[f32],
    dim: usize,
    cols: Range<usize>,
    rows: Range<usize>,
    against: Range<usize>,
    out: &mut [f32],
    n: usize,
) {
    assert!(cols.start <= cols.end && cols.end <= dim && rows.end <= n && against.end <= n);
    assert!(data.len() >= n * dim && out.len() >= n * n);
    if rows.is_empty() || against.is_empty() || cols.is_empty() {
        return;
    }
    let lhs = data[rows.start * dim + cols.start..].as_ptr();
    let rhs = data[against.start * dim + cols.start..].as_ptr();
    let dst = out[rows.start * n + against.start..].as_mut_ptr();
    let (dim_s, n_s) = (dim as isize, n as isize);
    // SAFETY: the left operand reads (i, p) at lhs + i·dim + p for i < rows.len(), p <
    // cols.len(): its largest offset from `data`'s start is (rows.end − 1)·dim + cols.end − 1
    // < n·dim ≤ data.len(); the right operand likewise with `against`. The destination writes
    // (i, j) at dst + i·n + j, at most (rows.end − 1)·n + against.end − 1 < n² ≤ out.len() from
    // `out`'s start (all asserted above). `read_dst` is false, and `out` does not overlap
    // `data` (one is borrowed mutably).
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            rows.len(),
            against.len(),
            cols.len(),
            dst,
            1,
            n_s,
            false,
            lhs,
            1,
            dim_s,
            rhs,
            dim_s,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> Kind {
        Kind::Cpu
    }

    fn prepare(&mut self, dim: usize, rows: usize) -> Result<(), Error> {
        let cells = dim.checked_mul(rows).ok_or(Error::Capacity { need: u64::MAX, limit: isize::MAX as u64 })?;
        // Storage first: if the OS refuses it, the backend holds no rows rather than claiming
        // rows it has no room for.
        if let Err(e) = self.rows.ensure(cells) {
            self.n_rows = 0;
            return Err(e);
        }
        if let Err(e) = self.acc.ensure(dim).and_then(|()| self.out.ensure(dim)) {
            // Nothing is prepared: no later call may index storage that is not there.
            self.dim = 0;
            self.n_rows = 0;
            return Err(e);
        }
        self.dim = dim;
        self.n_rows = rows;
        Ok(())
    }

    fn ingest(&mut self, update: &Update<'_>, weight: f32, clip: Option<f32>) -> Result<f64, Error> {
        let parts = self.parts(self.dim);
        let ss = validate(update, self.dim, parts)?;
        let factor = match clip {
            Some(c) if ss.sqrt() > f64::from(c) => (f64::from(c) / ss.sqrt()) as f32,
            _ => 1.0,
        };
        let w = weight * factor;
        par_chunks(&mut self.acc, parts, |start, dst| apply_range(update, start, dst, w, false));
        Ok(ss)
    }

    fn ingest_batch(&mut self, updates: &[Update<'_>], weights: &[f32], clip: Option<f32>) -> Vec<Result<f64, Error>> {
        let parts = self.parts(self.dim);
        let results: Vec<Result<f64, Error>> = updates.iter().map(|u| validate(u, self.dim, parts)).collect();
        let scaled: Vec<(&Update<'_>, f32)> = updates
            .iter()
            .zip(weights)
            .zip(&results)
            .filter_map(|((u, &w), r)| {
                let ss = *r.as_ref().ok()?;
                let factor = match clip {
                    Some(c) if ss.sqrt() > f64::from(c) => (f64::from(c) / ss.sqrt()) as f32,
                    _ => 1.0,
                };
                Some((u, w * factor))
            })
            .collect();
        // One L1-sized piece of the accumulator at a time receives every update of the batch.
        par_chunks(&mut self.acc, parts, |start, dst| {
            for (k, piece) in dst.chunks_mut(CHUNK).enumerate() {
                for (u, w) in &scaled {
                    apply_range(u, start + k * CHUNK, piece, *w, false);
                }
            }
        });
        results
    }

    fn store_row(&mut self, row: usize, update: &Update<'_>) -> Result<f64, Error> {
        if row >= self.n_rows {
            return Err(Error::Row { row, rows: self.n_rows });
        }
        let parts = self.parts(self.dim);
        // Decoding and checking in one pass is allowed here: a bad update only spoils its row.
        let mut ss = validate_shape(update, self.dim)?;
        let dst = &mut self.rows[row * self.dim..(row + 1) * self.dim];
        let parts = par_chunks_map(dst, parts, |start, d| {
            apply_range(update, start, d, 1.0, true);
            check_written(update, start, d)
        });
        for p in parts {
            ss += p?;
        }
        Ok(ss)
    }

    fn scale_rows(&mut self, factors: &[f32]) -> Result<(), Error> {
        self.check_n(factors.len())?;
        let parts = self.parts(self.dim);
        for (r, &f) in factors.iter().enumerate() {
            if f != 1.0 {
                let row = &mut self.rows[r * self.dim..(r + 1) * self.dim];
                par_chunks(row, parts, |_, c| c.iter_mut().for_each(|x| *x *= f));
            }
        }
        Ok(())
    }

    fn mix_rows(&mut self, n: usize, targets: &[u32], mix: &[f32]) -> Result<(), Error> {
        self.check_n(n)?;
        check_mix(n, targets, mix)?;
        let dim = self.dim;
        if n == 0 || dim == 0 || targets.is_empty() {
            return Ok(());
        }
        // Each thread owns a range of columns of every row, so the in-place writes of one
        // thread are never read by another.
        let parts = self.parts(dim * n);
        let step = dim.div_ceil(parts).next_multiple_of(64).max(64);
        let mut pieces: Vec<Vec<&mut [f32]>> = (0..dim.div_ceil(step)).map(|_| Vec::with_capacity(n)).collect();
        for row in self.rows[..n * dim].chunks_mut(dim) {
            for (p, piece) in row.chunks_mut(step).enumerate() {
                pieces[p].push(piece);
            }
        }
        let work = |rows: &mut Vec<&mut [f32]>| {
            let len = rows[0].len();
            let mut tmp = vec![0f32; targets.len() * CHUNK];
            let mut c0 = 0;
            while c0 < len {
                let c1 = (c0 + CHUNK).min(len);
                for (t, out) in tmp.chunks_mut(CHUNK).enumerate() {
                    let out = &mut out[..c1 - c0];
                    out.fill(0.0);
                    for (j, &w) in mix[t * n..(t + 1) * n].iter().enumerate() {
                        for (o, v) in out.iter_mut().zip(&rows[j][c0..c1]) {
                            *o += w * v;
                        }
                    }
                }
                for (t, &target) in targets.iter().enumerate() {
                    rows[target as usize][c0..c1].copy_from_slice(&tmp[t * CHUNK..t * CHUNK + c1 - c0]);
                }
                c0 = c1;
            }
        };
        if pieces.len() == 1 {
            work(&mut pieces[0]);
        } else {
            std::thread::scope(|s| {
                for mut p in pieces {
                    s.spawn(move || work(&mut p));
                }
            });
        }
        Ok(())
    }

    fn gram(&mut self, n: usize) -> Result<Vec<f64>, Error> {
        self.check_n(n)?;
        let (dim, data) = (self.dim, &self.rows[..n * self.dim]);
        let tiles = gram_by_tiles();
        let partials = par_map(dim, self.parts(dim * n.max(1) / 4), |r| {
            let (mut g, mut tmp) = (vec![0f64; n * n], vec![0f32; n * n]);
            let mut a = r.start;
            while a < r.end {
                let b = (a + if tiles { TILE_COLUMNS } else { GRAM_COLUMNS }).min(r.end);
                if tiles {
                    gram_tiles(data, n, dim, a..b, &mut tmp);
                } else {
                    gram_f32(data, n, dim, a..b, &mut tmp);
                }
                g.iter_mut().zip(&tmp).for_each(|(x, y)| *x += f64::from(*y));
                a = b;
            }
            g
        });
        let mut g = vec![0f64; n * n];
        for p in partials {
            g.iter_mut().zip(p).for_each(|(x, y)| *x += y);
        }
        // Only the lower triangle was computed (in places both): it decides.
        for i in 0..n {
            for j in 0..i {
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
        let (dim, data) = (self.dim, &self.rows);
        let parts = self.parts(dim);
        par_chunks(&mut self.out, parts, |start, out| {
            for (k, oc) in out.chunks_mut(CHUNK).enumerate() {
                let j = start + k * CHUNK;
                oc.fill(0.0);
                for (&r, &w) in rows.iter().zip(weights) {
                    let x = &data[r as usize * dim + j..r as usize * dim + j + oc.len()];
                    for (o, v) in oc.iter_mut().zip(x) {
                        *o += w * v;
                    }
                }
            }
        });
        Ok(())
    }

    fn median(&mut self, rows: &[u32]) -> Result<(), Error> {
        self.order_op(rows, Order::Median, None).map(|_| ())
    }

    fn trimmed_mean(&mut self, rows: &[u32], trim: usize) -> Result<(), Error> {
        self.order_op(rows, Order::Trimmed(trim), None).map(|_| ())
    }

    fn median_with_dots(&mut self, rows: &[u32], n: usize) -> Result<(Vec<f64>, f64), Error> {
        self.order_op(rows, Order::Median, Some(n)).map(|d| d.unwrap_or_default())
    }

    fn trimmed_mean_with_dots(&mut self, rows: &[u32], trim: usize, n: usize) -> Result<(Vec<f64>, f64), Error> {
        self.order_op(rows, Order::Trimmed(trim), Some(n)).map(|d| d.unwrap_or_default())
    }

    fn closest_to_median_mean(&mut self, rows: &[u32], beta: usize) -> Result<(), Error> {
        self.order_op(rows, Order::ClosestToMedian(beta), None).map(|_| ())
    }

    fn dist_sq_to_out(&mut self, n: usize) -> Result<Vec<f64>, Error> {
        self.check_n(n)?;
        let (dim, data, out) = (self.dim, &self.rows, &self.out);
        let partials = par_map(dim, self.parts(dim * n.max(1) / 4), |r| {
            let mut d = vec![0f64; n];
            let mut tmp = [0f32; BLOCK];
            let mut a = r.start;
            while a < r.end {
                let b = (a + BLOCK).min(r.end);
                for (i, di) in d.iter_mut().enumerate() {
                    let t = &mut tmp[..b - a];
                    for ((t, x), o) in t.iter_mut().zip(&data[i * dim + a..i * dim + b]).zip(&out[a..b]) {
                        *t = x - o;
                    }
                    *di += f64::from(dot(t, t));
                }
                a = b;
            }
            d
        });
        Ok(sum_vecs(n, partials))
    }

    fn centered_clip_step(&mut self, factors: &[f32]) -> Result<(), Error> {
        let n = factors.len();
        self.check_n(n)?;
        if n == 0 {
            return Err(Error::Length { what: "factors", got: 0, want: 1 });
        }
        let (dim, data) = (self.dim, &self.rows);
        let fsum: f32 = factors.iter().sum();
        let inv_n = 1.0 / n as f32;
        let parts = self.parts(dim * n / 4);
        par_chunks(&mut self.out, parts, |start, out| {
            let mut tmp = [0f32; CHUNK];
            for (k, oc) in out.chunks_mut(CHUNK).enumerate() {
                let j = start + k * CHUNK;
                let t = &mut tmp[..oc.len()];
                t.fill(0.0);
                for (i, &f) in factors.iter().enumerate() {
                    for (t, x) in t.iter_mut().zip(&data[i * dim + j..i * dim + j + oc.len()]) {
                        *t += f * x;
                    }
                }
                for (o, t) in oc.iter_mut().zip(t.iter()) {
                    *o += (t - fsum * *o) * inv_n;
                }
            }
        });
        Ok(())
    }

    fn dots_with_out(&mut self, n: usize) -> Result<(Vec<f64>, f64), Error> {
        self.check_n(n)?;
        let (dim, data, out) = (self.dim, &self.rows, &self.out);
        let partials = par_map(dim, self.parts(dim * (n + 1) / 4), |r| {
            let mut d = vec![0f64; n + 1];
            let mut a = r.start;
            while a < r.end {
                let b = (a + BLOCK).min(r.end);
                let o = &out[a..b];
                for (i, di) in d[..n].iter_mut().enumerate() {
                    *di += f64::from(dot(&data[i * dim + a..i * dim + b], o));
                }
                d[n] += f64::from(dot(o, o));
                a = b;
            }
            d
        });
        let mut d = sum_vecs(n + 1, partials);
        let oo = d.pop().unwrap_or(0.0);
        Ok((d, oo))
    }

    fn out_from_acc(&mut self, scale: f32) -> Result<(), Error> {
        let acc = &self.acc;
        let parts = self.parts(self.dim);
        par_chunks(&mut self.out, parts, |start, out| {
            for (o, a) in out.iter_mut().zip(&acc[start..]) {
                *o = scale * a;
            }
        });
        Ok(())
    }

    fn add_noise(&mut self, std: f32, seed: u64, round: u64) -> Result<(), Error> {
        // Noise costs ~40 ns a coordinate, so it is worth threads at smaller sizes.
        let parts = self.threads.min(self.dim / 4096).max(1);
        par_chunks(&mut self.out, parts, |start, out| philox::add_noise(out, start as u64, std, seed, round));
        Ok(())
    }

    fn read_out(&mut self, dst: &mut [f32]) -> Result<(), Error> {
        if dst.len() != self.dim {
            return Err(Error::Length { what: "output", got: dst.len(), want: self.dim });
        }
        // On the threads: a fresh destination faults its pages in on first write, and the
        // faults are most of the copy's cost.
        let out = &self.out;
        par_chunks(dst, self.parts(self.dim), |start, d| d.copy_from_slice(&out[start..start + d.len()]));
        Ok(())
    }
}

fn sum_vecs(n: usize, parts: Vec<Vec<f64>>) -> Vec<f64> {
    let mut d = vec![0f64; n];
    for p in parts {
        d.iter_mut().zip(p).for_each(|(x, y)| *x += y);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_sorts_every_size_up_to_70() {
        let mut seed = 0x9e37_79b9_u32;
        for m in 1..=70 {
            let net = sorting_network(m);
            let mut v = vec![[0f32; LANES]; m];
            for slot in v.iter_mut() {
                for x in slot.iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    *x = (seed % 7) as f32 - 3.0 + (seed % 1000) as f32 * 1e-3;
                }
            }
            let mut want: Vec<Vec<f32>> = (0..LANES).map(|l| v.iter().map(|s| s[l]).collect()).collect();
            want.iter_mut().for_each(|w| w.sort_by(f32::total_cmp));
            // Both compilations of the network (the wide one only where the CPU has AVX-512).
            for wide in [false, true] {
                let mut v = v.clone();
                sort_lanes(&mut v, &net, wide);
                for (l, w) in want.iter().enumerate() {
                    let got: Vec<f32> = v.iter().map(|s| s[l]).collect();
                    assert_eq!(&got, w, "m = {m}, wide {wide}");
                }
            }
        }
    }

    #[test]
    fn gram_tiles_match_f64_dot_products_on_the_lower_triangle() {
        // The tile path runs only on AVX-512 machines; this checks its arithmetic on any CPU
        // (with whatever compilation of the tile this one gets), ragged edges included.
        let mut seed = 0x1234_5678_u32;
        for (n, dim) in [(1usize, 37usize), (3, 1000), (4, 16), (5, 511), (9, 700), (17, 1500)] {
            let data: Vec<f32> = (0..n * dim)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed % 2001) as f32 / 1000.0 - 1.0
                })
                .collect();
            let mut out = vec![f32::NAN; n * n];
            gram_tiles(&data, n, dim, 0..dim, &mut out);
            for i in 0..n {
                for j in 0..=i {
                    let (a, b) = (&data[i * dim..(i + 1) * dim], &data[j * dim..(j + 1) * dim]);
                    let want: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
                    let norms = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
                        * b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                    let got = f64::from(out[i * n + j]);
                    assert!((got - want).abs() <= 1e-5 * norms, "n {n} dim {dim} ({i}, {j}): {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn f16_conversion_matches_half_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let (got, want) = (f16_bits_to_f32(h), f16::from_bits(h).to_f32());
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{h:#06x}: {got} vs {want}");
        }
    }

    #[test]
    fn sign_decoding_at_every_alignment() {
        let n = 77usize;
        let mut b = 1.25f32.to_le_bytes().to_vec();
        b.extend((0..n.div_ceil(8)).map(|i| (i as u8).wrapping_mul(37) ^ 0x5a));
        let seg = Segment { offset: 0, numel: n, encoding: Encoding::SignScale, bytes: &b };
        let mut whole = vec![0f32; n];
        decode::decode_into(Encoding::SignScale, n, &b, &mut whole).expect("reference");
        for a in 0..n {
            for len in [1, 7, 8, 9, 20, n - a] {
                let len = len.min(n - a);
                let mut out = vec![0f32; len];
                decode_chunk(&seg, a, &mut out);
                assert_eq!(out, whole[a..a + len], "a={a} len={len}");
            }
        }
    }

    #[test]
    fn empty_sign_segment_with_a_nan_scale_is_rejected_like_the_reference() {
        // The backend_ingest fuzzer's first finding (fuzz/artifacts, 2026-11-30).
        let bytes = f32::NAN.to_le_bytes();
        let segs = [Segment { offset: 0, numel: 0, encoding: Encoding::SignScale, bytes: &bytes }];
        let mut b = CpuBackend::new(1);
        b.prepare(4, 1).expect("prepare");
        assert!(decode::decode_into(Encoding::SignScale, 0, &bytes, &mut []).is_err());
        assert!(b.ingest(&Update { segments: &segs }, 1.0, None).is_err());
        assert!(b.store_row(0, &Update { segments: &segs }).is_err());
    }

    #[test]
    fn pruned_networks_place_the_live_slots_exactly() {
        let mut seed = 0x2545_f491_u32;
        for m in 1..=70 {
            let full = sorting_network(m);
            for live in [(m - 1) / 2..m / 2 + 1, m / 4..m - m / 4] {
                let net = prune_network(&full, m, live.clone());
                assert!(net.len() <= full.len());
                let mut v = vec![[0f32; LANES]; m];
                for x in v.iter_mut().flat_map(|s| s.iter_mut()) {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    *x = (seed % 9) as f32 - 4.0 + (seed % 97) as f32 * 1e-2;
                }
                let mut sorted: Vec<Vec<f32>> = (0..LANES).map(|l| v.iter().map(|s| s[l]).collect()).collect();
                sorted.iter_mut().for_each(|w| w.sort_by(f32::total_cmp));
                for wide in [false, true] {
                    let mut v = v.clone();
                    sort_lanes(&mut v, &net, wide);
                    for (l, w) in sorted.iter().enumerate() {
                        for k in live.clone() {
                            assert_eq!(v[k][l], w[k], "m={m} slot {k}, wide {wide}");
                        }
                    }
                }
            }
        }
        assert!(prune_network(&sorting_network(32), 32, 15..17).len() < sorting_network(32).len());
    }

    #[test]
    fn closest_to_median_picks_the_window() {
        // Median 5; nearest three are 4, 5, 6 (7 ties 3 with distance 2 but we take only three).
        assert_eq!(order_stat(&[0.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0], Order::ClosestToMedian(3)), 5.0);
        // Median 2.5 of [1,2,3,10]; two nearest are 2 and 3.
        assert_eq!(order_stat(&[1.0, 2.0, 3.0, 10.0], Order::ClosestToMedian(2)), 2.5);
        assert_eq!(order_stat(&[1.0, 2.0, 3.0, 10.0], Order::ClosestToMedian(4)), 4.0);
        assert_eq!(order_stat(&[7.0], Order::ClosestToMedian(1)), 7.0);
    }
}
