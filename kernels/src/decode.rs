//! Reference decoders for the payload encodings (docs/protocol.md §5).

use half::{bf16, f16};
use thiserror::Error;

/// How one tensor's values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// n × f32.
    DenseF32,
    /// n × IEEE half.
    DenseF16,
    /// n × bfloat16.
    DenseBf16,
    /// ⌈n/b⌉ f32 scales, then n int8.
    Int8Block {
        /// Elements per scale.
        block_size: u32,
    },
    /// k u32 indices, then k f32 values.
    TopKF32,
    /// k u32 indices, then k half values.
    TopKF16,
    /// One f32 scale, then ⌈n/8⌉ sign bytes, LSB first.
    SignScale,
}

/// Why an encoded tensor cannot be decoded. All are the sender's fault.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The byte length does not fit the encoding and element count.
    #[error("{len} bytes cannot hold {numel} elements in this encoding")]
    Length {
        /// Bytes given.
        len: usize,
        /// Elements expected.
        numel: usize,
    },
    /// The output or accumulator is not `numel` long.
    #[error("output has {got} elements, expected {want}")]
    OutputLength {
        /// Output length.
        got: usize,
        /// Elements expected.
        want: usize,
    },
    /// A value (or scale) is NaN or infinite.
    #[error("non-finite value at element {index}")]
    NonFinite {
        /// Element (or, for scales, first element of the block).
        index: usize,
    },
    /// A top-k index is out of range or not strictly increasing.
    #[error("top-k entry {entry} has index {index}, out of order or ≥ {numel}")]
    Index {
        /// Position in the index list.
        entry: usize,
        /// The index.
        index: u32,
        /// Element count.
        numel: usize,
    },
    /// Int8Block with block size 0.
    #[error("block size must be at least 1")]
    BlockSize,
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

fn finite(v: f32, index: usize) -> Result<f32, Error> {
    if v.is_finite() { Ok(v) } else { Err(Error::NonFinite { index }) }
}

/// Calls `f(index, value)` for every stored element, in increasing index order, after checking
/// the length, every value's finiteness and (top-k) index order. Elements a sparse encoding does
/// not store are not visited.
fn for_each(enc: Encoding, numel: usize, b: &[u8], mut f: impl FnMut(usize, f32)) -> Result<(), Error> {
    let len_err = || Error::Length { len: b.len(), numel };
    match enc {
        Encoding::DenseF32 => {
            if b.len() != numel.checked_mul(4).ok_or_else(len_err)? {
                return Err(len_err());
            }
            for (i, c) in b.chunks_exact(4).enumerate() {
                f(i, finite(f32::from_le_bytes([c[0], c[1], c[2], c[3]]), i)?);
            }
        }
        Encoding::DenseF16 | Encoding::DenseBf16 => {
            if b.len() != numel.checked_mul(2).ok_or_else(len_err)? {
                return Err(len_err());
            }
            for (i, c) in b.chunks_exact(2).enumerate() {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                let v = if enc == Encoding::DenseF16 {
                    f16::from_bits(bits).to_f32()
                } else {
                    bf16::from_bits(bits).to_f32()
                };
                f(i, finite(v, i)?);
            }
        }
        Encoding::Int8Block { block_size } => {
            let bs = block_size as usize;
            if bs == 0 {
                return Err(Error::BlockSize);
            }
            let blocks = numel.div_ceil(bs);
            if b.len() != blocks.checked_mul(4).and_then(|s| s.checked_add(numel)).ok_or_else(len_err)? {
                return Err(len_err());
            }
            let (scales, q) = b.split_at(blocks * 4);
            for blk in 0..blocks {
                let s = finite(f32_at(scales, blk), blk * bs)?;
                let end = ((blk + 1) * bs).min(numel);
                for (i, &qi) in q.iter().enumerate().take(end).skip(blk * bs) {
                    f(i, f32::from(qi as i8) * s);
                }
            }
        }
        Encoding::TopKF32 | Encoding::TopKF16 => {
            let vs = if enc == Encoding::TopKF32 { 4 } else { 2 };
            if !b.len().is_multiple_of(4 + vs) {
                return Err(len_err());
            }
            let k = b.len() / (4 + vs);
            if k > numel {
                return Err(len_err());
            }
            let (idx, vals) = b.split_at(4 * k);
            let mut prev: Option<u32> = None;
            for e in 0..k {
                let i = u32::from_le_bytes([idx[4 * e], idx[4 * e + 1], idx[4 * e + 2], idx[4 * e + 3]]);
                if i as usize >= numel || prev.is_some_and(|p| i <= p) {
                    return Err(Error::Index { entry: e, index: i, numel });
                }
                prev = Some(i);
                let v = if vs == 4 {
                    f32_at(vals, e)
                } else {
                    f16::from_bits(u16::from_le_bytes([vals[2 * e], vals[2 * e + 1]])).to_f32()
                };
                f(i as usize, finite(v, i as usize)?);
            }
        }
        Encoding::SignScale => {
            if b.len() != 4 + numel.div_ceil(8) {
                return Err(len_err());
            }
            let s = finite(f32_at(b, 0), 0)?;
            let bits = &b[4..];
            for i in 0..numel {
                let neg = bits[i / 8] >> (i % 8) & 1 == 1;
                f(i, if neg { -s } else { s });
            }
        }
    }
    Ok(())
}

/// Decodes into `out` (length `numel`); elements a sparse encoding does not store become 0.
/// On error `out` may be partly written.
pub fn decode_into(enc: Encoding, numel: usize, bytes: &[u8], out: &mut [f32]) -> Result<(), Error> {
    if out.len() != numel {
        return Err(Error::OutputLength { got: out.len(), want: numel });
    }
    if matches!(enc, Encoding::TopKF32 | Encoding::TopKF16) {
        out.fill(0.0);
    }
    for_each(enc, numel, bytes, |i, v| out[i] = v)
}

/// Adds `weight × decoded` into `acc` without materialising the decoded tensor. The input is
/// validated completely before `acc` is touched, so a bad update leaves the accumulator as it was.
pub fn accumulate(enc: Encoding, numel: usize, bytes: &[u8], weight: f32, acc: &mut [f32]) -> Result<(), Error> {
    if acc.len() != numel {
        return Err(Error::OutputLength { got: acc.len(), want: numel });
    }
    for_each(enc, numel, bytes, |_, _| {})?;
    for_each(enc, numel, bytes, |i, v| acc[i] += weight * v)
}
