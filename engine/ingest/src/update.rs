//! The client side of an update: encode each tensor (keeping top-k error feedback across
//! rounds), lay out the payload, optionally zstd it, sign the header and frame it — the bytes a
//! client sends on one stream.

use ed25519_dalek::{Signer, SigningKey};
use std::collections::BTreeMap;
use thiserror::Error;
use vain_kernels::encode::{self, Codec};
use vain_schema::delta::{Compression, DType, Encoding, HeaderSpec, PayloadBuilder, ValueType};
use vain_schema::{Digest, frame};

/// One tensor of a local update.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    /// Parameter name.
    pub name: &'a str,
    /// Shape (its product must equal `values.len()`).
    pub shape: &'a [u64],
    /// The update's values.
    pub values: &'a [f32],
}

/// The round an update belongs to.
#[derive(Debug, Clone)]
pub struct Round {
    /// Model id.
    pub model_id: String,
    /// Round number.
    pub round: u64,
    /// BLAKE3 of the global model trained from.
    pub base_model: Digest,
    /// Training examples behind the update.
    pub num_examples: u64,
    /// Sender's clock, Unix milliseconds.
    pub timestamp_ms: u64,
}

/// Why an update could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor's shape does not match its values.
    #[error("tensor {name}: shape has {shape} elements, values {values}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Product of the shape.
        shape: u64,
        /// Values given.
        values: usize,
    },
    /// Encoding failed (non-finite value, f16 overflow, …).
    #[error("tensor {name}: {source}")]
    Encode {
        /// Tensor name.
        name: String,
        /// Why.
        source: encode::Error,
    },
    /// The header or frame exceeds the format's limits.
    #[error("frame: {0}")]
    Frame(vain_schema::Error),
    /// The signer (a key file, an HSM) refused to sign.
    #[error("signing: {0}")]
    Sign(Box<dyn std::error::Error + Send + Sync>),
}

/// Signs a header's signing input (Ed25519, RFC 8032): an in-memory key, or an HSM.
pub type SignFn<'a> = dyn FnMut(&[u8]) -> Result<[u8; 64], Box<dyn std::error::Error + Send + Sync>> + 'a;

/// A framed, signed update and what encoding it cost.
#[derive(Debug, Clone)]
pub struct Built {
    /// The frame to send.
    pub frame: Vec<u8>,
    /// f32 bytes ÷ payload bytes on the wire.
    pub ratio: f64,
    /// Largest relative reconstruction error over the tensors.
    pub max_rel_error: f64,
}

/// Builds updates for one client, keeping per-tensor top-k residuals between rounds.
#[derive(Debug)]
pub struct Encoder {
    codec: Codec,
    zstd_level: Option<i32>,
    residuals: BTreeMap<String, Vec<f32>>,
}

/// The wire encoding a codec produces.
pub fn wire_encoding(c: Codec) -> Encoding {
    match c {
        Codec::F32 => Encoding::DenseF32,
        Codec::F16 => Encoding::DenseF16,
        Codec::Bf16 => Encoding::DenseBf16,
        Codec::Int8 { block } => Encoding::Int8Block { block_size: block },
        Codec::TopK { half: false, .. } => Encoding::TopK { value_type: ValueType::F32 },
        Codec::TopK { half: true, .. } => Encoding::TopK { value_type: ValueType::F16 },
        Codec::SignScale => Encoding::SignScale,
    }
}

impl Encoder {
    /// An encoder for `codec`, zstd'ing the payload at `zstd_level` when given.
    pub fn new(codec: Codec, zstd_level: Option<i32>) -> Self {
        Self { codec, zstd_level, residuals: BTreeMap::new() }
    }

    /// Encodes, signs and frames one update. `nonce` must be unique per (key, round); real
    /// clients draw it from the OS random generator.
    pub fn build(
        &mut self,
        key: &SigningKey,
        round: &Round,
        nonce: [u8; 16],
        tensors: &[Tensor<'_>],
    ) -> Result<Built, Error> {
        self.build_with(key.verifying_key().to_bytes(), &mut |m| Ok(key.sign(m).to_bytes()), round, nonce, tensors)
    }

    /// Like [`Encoder::build`], signed by `sign` for the key `sender` (e.g. a PKCS#11 token).
    pub fn build_with(
        &mut self,
        sender: vain_schema::PublicKey,
        sign: &mut SignFn<'_>,
        round: &Round,
        nonce: [u8; 16],
        tensors: &[Tensor<'_>],
    ) -> Result<Built, Error> {
        let mut pb = PayloadBuilder::new();
        let mut max_rel_error = 0f64;
        let mut raw = 0u64;
        for t in tensors {
            let n: u64 = t.shape.iter().product();
            if n != t.values.len() as u64 {
                return Err(Error::Shape { name: t.name.to_string(), shape: n, values: t.values.len() });
            }
            let residual = match self.codec {
                Codec::TopK { .. } => {
                    let r = self.residuals.entry(t.name.to_string()).or_insert_with(|| vec![0.0; t.values.len()]);
                    if r.len() != t.values.len() {
                        *r = vec![0.0; t.values.len()];
                    }
                    Some(r)
                }
                _ => None,
            };
            let e = encode::encode(self.codec, t.values, residual)
                .map_err(|source| Error::Encode { name: t.name.to_string(), source })?;
            max_rel_error = max_rel_error.max(e.rel_error);
            raw += 4 * n;
            pb.push(t.name, t.shape.to_vec(), DType::F32, &e.bytes);
        }
        let (payload, specs) = pb.finish();
        let mut spec = HeaderSpec {
            round: round.round,
            base_model: round.base_model,
            nonce,
            num_examples: round.num_examples,
            timestamp_ms: round.timestamp_ms,
            ..HeaderSpec::for_payload(round.model_id.clone(), sender, wire_encoding(self.codec), &payload, specs)
        };
        let wire = match self.zstd_level {
            Some(level) => {
                let z = encode::zstd_compress(&payload, level)
                    .map_err(|source| Error::Encode { name: "payload".into(), source })?;
                spec.compression = Compression::Zstd;
                spec.payload_len = z.len() as u64;
                spec.payload_digest = vain_schema::digest(&z);
                z
            }
            None => payload,
        };
        let unsigned = spec.unsigned();
        let signature = sign(unsigned.signing_input().as_bytes()).map_err(Error::Sign)?;
        let frame = frame::encode(&unsigned.finish(&signature), &wire).map_err(Error::Frame)?;
        Ok(Built { ratio: raw as f64 / wire.len().max(1) as f64, max_rel_error, frame })
    }
}
