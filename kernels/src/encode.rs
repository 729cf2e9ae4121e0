//! Client-side encoders: turn a dense f32 update into one of the payload encodings of
//! docs/protocol.md §5, report what that cost in accuracy, and optionally zstd the payload.
//!
//! Top-k keeps error feedback: what a round does not send is carried in a residual and added to
//! the next round's update, so small coordinates are delayed rather than lost (Stich et al. 2018).

use crate::decode::{self, Encoding};
use half::{bf16, f16};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Which encoding a client uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Codec {
    /// Dense f32.
    F32,
    /// Dense IEEE half (round to nearest even).
    F16,
    /// Dense bfloat16 (round to nearest even).
    Bf16,
    /// int8 with one f32 scale per `block` elements (scale = max|x| / 127).
    Int8 {
        /// Elements per scale, ≥ 1.
        block: u32,
    },
    /// The `fraction` of coordinates largest in magnitude (after adding the residual).
    TopK {
        /// Kept fraction, 0 < fraction ≤ 1 (at least one coordinate is kept).
        fraction: f32,
        /// Send values as f16 instead of f32.
        half: bool,
    },
    /// Sign bits with one scale, the mean absolute value.
    SignScale,
}

impl Codec {
    /// The wire encoding this codec produces.
    pub fn encoding(&self) -> Encoding {
        match *self {
            Codec::F32 => Encoding::DenseF32,
            Codec::F16 => Encoding::DenseF16,
            Codec::Bf16 => Encoding::DenseBf16,
            Codec::Int8 { block } => Encoding::Int8Block { block_size: block },
            Codec::TopK { half: false, .. } => Encoding::TopKF32,
            Codec::TopK { half: true, .. } => Encoding::TopKF16,
            Codec::SignScale => Encoding::SignScale,
        }
    }

    /// Coordinates a top-k codec keeps out of `n`.
    pub fn k_of(fraction: f32, n: usize) -> usize {
        // The relative nudge keeps f32 fractions such as 0.05 (= 0.0500000007) from rounding up.
        ((f64::from(fraction) * n as f64 * (1.0 - 1e-7)).ceil() as usize).clamp(1.min(n), n)
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::F32 => write!(f, "f32"),
            Codec::F16 => write!(f, "f16"),
            Codec::Bf16 => write!(f, "bf16"),
            Codec::Int8 { block } => write!(f, "int8:{block}"),
            Codec::TopK { fraction, half: false } => write!(f, "topk:{fraction}"),
            Codec::TopK { fraction, half: true } => write!(f, "topk-f16:{fraction}"),
            Codec::SignScale => write!(f, "sign"),
        }
    }
}

impl FromStr for Codec {
    type Err = Error;

    /// `f32 | f16 | bf16 | int8:BLOCK | topk:FRACTION | topk-f16:FRACTION | sign`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Syntax(s.to_string());
        let (name, arg) = s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b)));
        let codec = match (name, arg) {
            ("f32", None) => Codec::F32,
            ("f16", None) => Codec::F16,
            ("bf16", None) => Codec::Bf16,
            ("sign", None) => Codec::SignScale,
            ("int8", Some(b)) => Codec::Int8 { block: b.parse().map_err(|_| bad())? },
            ("topk", Some(f)) => Codec::TopK { fraction: f.parse().map_err(|_| bad())?, half: false },
            ("topk-f16", Some(f)) => Codec::TopK { fraction: f.parse().map_err(|_| bad())?, half: true },
            _ => return Err(bad()),
        };
        match codec {
            Codec::Int8 { block: 0 } => Err(Error::Parameter { name: "int8 block", value: 0.0 }),
            Codec::TopK { fraction, .. } if !(fraction > 0.0 && fraction <= 1.0) => {
                Err(Error::Parameter { name: "top-k fraction", value: f64::from(fraction) })
            }
            c => Ok(c),
        }
    }
}

/// Why an update cannot be encoded.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A codec string did not parse.
    #[error(
        "cannot parse encoding {0:?}: expected f32 | f16 | bf16 | int8:BLOCK | topk:FRACTION | topk-f16:FRACTION | sign"
    )]
    Syntax(String),
    /// A parameter is out of range.
    #[error("{name} = {value} is out of range")]
    Parameter {
        /// Which parameter.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The update holds NaN or ±∞ at `index`.
    #[error("update value at {index} is not finite")]
    NonFinite {
        /// First bad element.
        index: usize,
    },
    /// A value is too large for the encoding (f16 overflows above 65504).
    #[error("value {value} at {index} overflows {encoding}")]
    Overflow {
        /// Element.
        index: usize,
        /// Its value.
        value: f32,
        /// The encoding.
        encoding: &'static str,
    },
    /// The residual does not match the update's length.
    #[error("residual has {got} elements, the update {want}")]
    Residual {
        /// Residual length.
        got: usize,
        /// Update length.
        want: usize,
    },
    /// The encoded bytes failed to decode again (a bug in an encoder, reported rather than sent).
    #[error("encoded tensor fails its own decode: {0}")]
    SelfCheck(decode::Error),
    /// zstd failed, or a frame decodes to a size other than declared.
    #[error("zstd: {0}")]
    Zstd(String),
}

/// An encoded tensor and what encoding it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Wire encoding of `bytes`.
    pub encoding: Encoding,
    /// The encoded values.
    pub bytes: Vec<u8>,
    /// f32 bytes ÷ encoded bytes.
    pub ratio: f64,
    /// ‖x − decode(bytes)‖ / ‖x‖ (0 when x = 0); for top-k, x includes the carried residual.
    pub rel_error: f64,
}

/// Encodes one tensor. `residual` (top-k only, same length as `x`) carries error feedback: it is
/// added to `x` before selection and replaced by what was not sent.
pub fn encode(codec: Codec, x: &[f32], residual: Option<&mut Vec<f32>>) -> Result<Encoded, Error> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index: i });
    }
    let n = x.len();
    let mut target: Vec<f32> = x.to_vec();
    let bytes = match codec {
        Codec::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Codec::F16 => {
            if let Some(i) = x.iter().position(|v| v.abs() > f16::MAX.to_f32()) {
                return Err(Error::Overflow { index: i, value: x[i], encoding: "f16" });
            }
            x.iter().flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes()).collect()
        }
        Codec::Bf16 => x.iter().flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        Codec::Int8 { block } => {
            let bs = block.max(1) as usize;
            let mut scales = Vec::with_capacity(4 * n.div_ceil(bs));
            let mut q = Vec::with_capacity(n);
            for c in x.chunks(bs) {
                let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = amax / 127.0;
                scales.extend_from_slice(&s.to_le_bytes());
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                q.extend(c.iter().map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8));
            }
            scales.extend_from_slice(&q);
            scales
        }
        Codec::SignScale => {
            let s = (x.iter().map(|v| f64::from(v.abs())).sum::<f64>() / n.max(1) as f64) as f32;
            let mut b = s.to_le_bytes().to_vec();
            b.resize(4 + n.div_ceil(8), 0);
            for (i, v) in x.iter().enumerate() {
                if v.is_sign_negative() && *v != 0.0 {
                    b[4 + i / 8] |= 1 << (i % 8);
                }
            }
            b
        }
        Codec::TopK { fraction, half } => {
            if let Some(r) = residual.as_deref() {
                if r.len() != n {
                    return Err(Error::Residual { got: r.len(), want: n });
                }
                target.iter_mut().zip(r).for_each(|(t, r)| *t += r);
            }
            let k = Codec::k_of(fraction, n);
            let mut idx: Vec<u32> = (0..n as u32).collect();
            if k < n {
                idx.select_nth_unstable_by(k, |a, b| {
                    target[*b as usize].abs().total_cmp(&target[*a as usize].abs()).then(a.cmp(b))
                });
            }
            idx.truncate(k);
            idx.sort_unstable();
            let mut b: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
            for &i in &idx {
                let v = target[i as usize];
                if half {
                    if v.abs() > f16::MAX.to_f32() {
                        return Err(Error::Overflow { index: i as usize, value: v, encoding: "f16" });
                    }
                    b.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
                } else {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
            b
        }
    };
    let encoding = codec.encoding();
    let mut dec = vec![0f32; n];
    decode::decode_into(encoding, n, &bytes, &mut dec).map_err(Error::SelfCheck)?;
    if let (Codec::TopK { .. }, Some(r)) = (codec, residual) {
        r.clear();
        r.extend(target.iter().zip(&dec).map(|(t, d)| t - d));
    }
    let (mut err, mut norm) = (0f64, 0f64);
    for (t, d) in target.iter().zip(&dec) {
        err += f64::from(t - d).powi(2);
        norm += f64::from(*t).powi(2);
    }
    Ok(Encoded {
        encoding,
        ratio: (4 * n) as f64 / bytes.len().max(1) as f64,
        rel_error: if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
        bytes,
    })
}

/// One zstd frame of `payload` at `level` (1–22; 3 is zstd's default).
pub fn zstd_compress(payload: &[u8], level: i32) -> Result<Vec<u8>, Error> {
    zstd::bulk::compress(payload, level).map_err(|e| Error::Zstd(e.to_string()))
}

/// Decodes one zstd frame into `out`, which must be exactly the declared decoded length: the
/// caller allocated it after checking that length against its limits, and a frame that decodes
/// to more or fewer bytes is an error (never a larger allocation).
pub fn zstd_decompress_into(frame: &[u8], out: &mut [u8]) -> Result<(), Error> {
    let mut d = zstd::bulk::Decompressor::new().map_err(|e| Error::Zstd(e.to_string()))?;
    let got = d.decompress_to_buffer(frame, out).map_err(|e| Error::Zstd(e.to_string()))?;
    if got != out.len() {
        return Err(Error::Zstd(format!("frame decodes to {got} bytes, {} declared", out.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37).sin() * 3.0 + 0.01 * i as f32) * if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect()
    }

    #[test]
    fn codecs_parse_and_print() {
        for s in ["f32", "f16", "bf16", "int8:64", "topk:0.01", "topk-f16:0.5", "sign"] {
            assert_eq!(s.parse::<Codec>().expect(s).to_string(), s);
        }
        for s in ["int8:0", "topk:0", "topk:1.5", "int8", "f64", "sign:1"] {
            assert!(s.parse::<Codec>().is_err(), "{s}");
        }
    }

    #[test]
    fn ratios_and_errors_are_what_the_encodings_promise() {
        let x = wave(4096);
        let e = encode(Codec::F32, &x, None).expect("f32");
        assert_eq!((e.ratio, e.rel_error), (1.0, 0.0));
        let e = encode(Codec::F16, &x, None).expect("f16");
        assert_eq!(e.ratio, 2.0);
        assert!(e.rel_error > 0.0 && e.rel_error < 5e-4, "{}", e.rel_error);
        let e = encode(Codec::Bf16, &x, None).expect("bf16");
        assert!(e.rel_error > 0.0 && e.rel_error < 4e-3, "{}", e.rel_error);
        let e = encode(Codec::Int8 { block: 64 }, &x, None).expect("int8");
        assert!((e.ratio - 4.0 * 4096.0 / (4096.0 + 4.0 * 64.0)).abs() < 1e-9);
        assert!(e.rel_error > 0.0 && e.rel_error < 1e-2, "{}", e.rel_error);
        let e = encode(Codec::SignScale, &x, None).expect("sign");
        assert!((e.ratio - 16384.0 / 516.0).abs() < 1e-9);
        assert!(e.rel_error > 0.1 && e.rel_error < 1.0, "{}", e.rel_error);
    }

    #[test]
    fn topk_error_feedback_delivers_everything_eventually() {
        let x = wave(1000);
        let mut residual = vec![0f32; 1000];
        let mut delivered = vec![0f64; 1000];
        let rounds = 40;
        for _ in 0..rounds {
            let e = encode(Codec::TopK { fraction: 0.05, half: false }, &x, Some(&mut residual)).expect("topk");
            assert_eq!(e.bytes.len(), 50 * 8);
            let mut d = vec![0f32; 1000];
            decode::decode_into(e.encoding, 1000, &e.bytes, &mut d).expect("decode");
            delivered.iter_mut().zip(&d).for_each(|(a, b)| *a += f64::from(*b));
        }
        // sent + residual = rounds × x exactly (up to f32 rounding of the residual updates).
        for i in 0..1000 {
            let want = f64::from(x[i]) * f64::from(rounds);
            assert!((delivered[i] + f64::from(residual[i]) - want).abs() < 1e-3 * want.abs().max(1.0), "{i}");
        }
    }

    #[test]
    fn bad_input_is_typed() {
        assert_eq!(encode(Codec::F32, &[1.0, f32::NAN], None), Err(Error::NonFinite { index: 1 }));
        assert!(matches!(encode(Codec::F16, &[1e6], None), Err(Error::Overflow { index: 0, .. })));
        let mut r = vec![0.0; 3];
        assert!(matches!(
            encode(Codec::TopK { fraction: 0.5, half: false }, &[1.0, 2.0], Some(&mut r)),
            Err(Error::Residual { got: 3, want: 2 })
        ));
    }

    #[test]
    fn zstd_round_trip_and_length_mismatch() {
        let x = encode(Codec::Int8 { block: 32 }, &wave(10_000), None).expect("int8").bytes;
        let z = zstd_compress(&x, 3).expect("compress");
        let mut out = vec![0u8; x.len()];
        zstd_decompress_into(&z, &mut out).expect("decompress");
        assert_eq!(out, x);
        let mut short = vec![0u8; x.len() - 1];
        assert!(zstd_decompress_into(&z, &mut short).is_err());
        let mut long = vec![0u8; x.len() + 1];
        assert!(zstd_decompress_into(&z, &mut long).is_err());
        assert!(zstd_decompress_into(&z[..z.len() / 2], &mut out).is_err());
    }
}
