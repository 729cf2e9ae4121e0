//! `DeltaEnvelope`: the signed header of one model update.
//!
//! The header describes the payload (encoding, tensor table, lengths, BLAKE3 digest) and is signed
//! by the sender; the payload itself follows the header on the stream as raw bytes and is never
//! copied into the flatbuffer (see [`crate::frame`]).

use crate::sign::{self, SigningInput};
use crate::{Digest, Error, FORMAT_VERSION, Limits, PublicKey, Signature, verified_root, wire};

/// Tensor data in a payload starts at a multiple of this many bytes.
pub const TENSOR_ALIGN: u64 = 8;
/// Largest `Int8Block` block size.
pub const MAX_BLOCK_SIZE: u32 = 65_536;

/// How each tensor's update is encoded in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// n little-endian f32.
    DenseF32,
    /// n little-endian IEEE half floats.
    DenseF16,
    /// n little-endian bfloat16.
    DenseBf16,
    /// ceil(n / block_size) f32 scales, then n int8; element i = q[i] * scale[i / block_size].
    Int8Block {
        /// Elements sharing one scale, 1..=[`MAX_BLOCK_SIZE`].
        block_size: u32,
    },
    /// k u32 indices (strictly increasing, each < n), then k values.
    TopK {
        /// Type of the k values.
        value_type: ValueType,
    },
    /// One f32 scale, then ceil(n / 8) bytes of sign bits, least significant bit first;
    /// bit set = -scale, clear = +scale.
    SignScale,
}

/// Value type of a [`Encoding::TopK`] payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Little-endian f32.
    F32,
    /// Little-endian IEEE half.
    F16,
}

impl ValueType {
    /// Bytes per value.
    pub fn size(self) -> u64 {
        match self {
            ValueType::F32 => 4,
            ValueType::F16 => 2,
        }
    }
}

/// Element type of the model parameter a tensor updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// Compression of the whole payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Carried as encoded.
    None,
    /// One zstd frame (RFC 8878) whose content is the encoded payload.
    Zstd,
}

impl Encoding {
    /// Checks that `len` bytes can encode a tensor of `numel` elements. For `TopK` returns k.
    pub fn check_len(self, numel: u64, len: u64) -> Result<u64, String> {
        let expect = |want: Option<u64>| match want {
            Some(w) if w == len => Ok(numel),
            Some(w) => Err(format!("{len} bytes, expected {w} for {numel} elements")),
            None => Err(format!("{numel} elements overflow the length")),
        };
        match self {
            Encoding::DenseF32 => expect(numel.checked_mul(4)),
            Encoding::DenseF16 | Encoding::DenseBf16 => expect(numel.checked_mul(2)),
            Encoding::Int8Block { block_size } => {
                expect(numel.div_ceil(u64::from(block_size)).checked_mul(4).and_then(|s| s.checked_add(numel)))
            }
            Encoding::SignScale => expect(Some(4 + numel.div_ceil(8))),
            Encoding::TopK { value_type } => {
                let entry = 4 + value_type.size();
                if !len.is_multiple_of(entry) {
                    return Err(format!("{len} bytes is not a whole number of {entry}-byte entries"));
                }
                let k = len / entry;
                if k > numel {
                    return Err(format!("{k} entries for {numel} elements"));
                }
                Ok(k)
            }
        }
    }

    fn to_wire(self) -> (wire::EncodingKind, u32, wire::ValueType) {
        match self {
            Encoding::DenseF32 => (wire::EncodingKind::DenseF32, 0, wire::ValueType::F32),
            Encoding::DenseF16 => (wire::EncodingKind::DenseF16, 0, wire::ValueType::F32),
            Encoding::DenseBf16 => (wire::EncodingKind::DenseBF16, 0, wire::ValueType::F32),
            Encoding::Int8Block { block_size } => (wire::EncodingKind::Int8Block, block_size, wire::ValueType::F32),
            Encoding::TopK { value_type: ValueType::F32 } => (wire::EncodingKind::TopK, 0, wire::ValueType::F32),
            Encoding::TopK { value_type: ValueType::F16 } => (wire::EncodingKind::TopK, 0, wire::ValueType::F16),
            Encoding::SignScale => (wire::EncodingKind::SignScale, 0, wire::ValueType::F32),
        }
    }

    fn from_wire(e: wire::Encoding<'_>) -> Result<Self, Error> {
        let block_size = e.block_size();
        let vt = e.value_type();
        let kind = e.kind();
        let enc = match kind {
            wire::EncodingKind::DenseF32 => Encoding::DenseF32,
            wire::EncodingKind::DenseF16 => Encoding::DenseF16,
            wire::EncodingKind::DenseBF16 => Encoding::DenseBf16,
            wire::EncodingKind::Int8Block => {
                if block_size == 0 || block_size > MAX_BLOCK_SIZE {
                    return Err(Error::invalid(
                        "encoding.block_size",
                        format!("{block_size} is outside 1..={MAX_BLOCK_SIZE}"),
                    ));
                }
                Encoding::Int8Block { block_size }
            }
            wire::EncodingKind::TopK => Encoding::TopK {
                value_type: match vt {
                    wire::ValueType::F32 => ValueType::F32,
                    wire::ValueType::F16 => ValueType::F16,
                    other => {
                        return Err(Error::UnknownEnum {
                            field: "encoding.value_type".into(),
                            value: u64::from(other.0),
                        });
                    }
                },
            },
            wire::EncodingKind::SignScale => Encoding::SignScale,
            other => return Err(Error::UnknownEnum { field: "encoding.kind".into(), value: u64::from(other.0) }),
        };
        if !matches!(enc, Encoding::Int8Block { .. }) && block_size != 0 {
            return Err(Error::invalid("encoding.block_size", "must be 0 unless the encoding is Int8Block"));
        }
        if !matches!(enc, Encoding::TopK { .. }) && vt != wire::ValueType::F32 {
            return Err(Error::invalid("encoding.value_type", "must be F32 unless the encoding is TopK"));
        }
        Ok(enc)
    }
}

impl DType {
    fn to_wire(self) -> wire::DType {
        match self {
            DType::F32 => wire::DType::F32,
            DType::F16 => wire::DType::F16,
            DType::Bf16 => wire::DType::BF16,
        }
    }

    fn from_wire(d: wire::DType, field: impl FnOnce() -> String) -> Result<Self, Error> {
        match d {
            wire::DType::F32 => Ok(DType::F32),
            wire::DType::F16 => Ok(DType::F16),
            wire::DType::BF16 => Ok(DType::Bf16),
            other => Err(Error::UnknownEnum { field: field(), value: u64::from(other.0) }),
        }
    }
}

/// One row of the tensor table, as given to the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Parameter name, unique within the envelope.
    pub name: String,
    /// Dimensions; their product is the element count.
    pub shape: Vec<u64>,
    /// Element type of the parameter.
    pub dtype: DType,
    /// Byte offset in the decoded payload (a multiple of [`TENSOR_ALIGN`]).
    pub offset: u64,
    /// Byte length of the encoded data.
    pub length: u64,
}

/// Everything a `DeltaHeader` holds, for building one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    /// Model the update applies to.
    pub model_id: String,
    /// Training round.
    pub round: u64,
    /// BLAKE3 of the global model the update was computed against.
    pub base_model: Digest,
    /// Sender's current Ed25519 key.
    pub sender: PublicKey,
    /// Random, unique per (sender, round).
    pub nonce: [u8; 16],
    /// Training examples behind the update (FedAvg weight).
    pub num_examples: u64,
    /// Sender's clock at signing, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Encoding of every tensor.
    pub encoding: Encoding,
    /// Whole-payload compression.
    pub compression: Compression,
    /// Payload length on the wire.
    pub payload_len: u64,
    /// Payload length after decompression.
    pub decoded_len: u64,
    /// BLAKE3 of the payload bytes on the wire.
    pub payload_digest: Digest,
    /// The tensor table.
    pub tensors: Vec<TensorSpec>,
}

impl HeaderSpec {
    /// A header for an uncompressed `payload` (as laid out by [`PayloadBuilder`]): lengths and
    /// digest come from the payload; round, nonce, base model and timestamp are zero and the
    /// example count is one, for the caller to set.
    pub fn for_payload(
        model_id: impl Into<String>,
        sender: PublicKey,
        encoding: Encoding,
        payload: &[u8],
        tensors: Vec<TensorSpec>,
    ) -> Self {
        Self {
            model_id: model_id.into(),
            round: 0,
            base_model: [0; 32],
            sender,
            nonce: [0; 16],
            num_examples: 1,
            timestamp_ms: 0,
            encoding,
            compression: Compression::None,
            payload_len: payload.len() as u64,
            decoded_len: payload.len() as u64,
            payload_digest: crate::digest(payload),
            tensors,
        }
    }

    /// Serialises the header; the result is what the sender signs.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(256 + 64 * self.tensors.len());
        let tensors: Vec<_> = self
            .tensors
            .iter()
            .map(|t| {
                let name = b.create_string(&t.name);
                let shape = b.create_vector(&t.shape);
                wire::TensorEntry::create(
                    &mut b,
                    &wire::TensorEntryArgs {
                        name: Some(name),
                        shape: Some(shape),
                        dtype: t.dtype.to_wire(),
                        offset: t.offset,
                        length: t.length,
                    },
                )
            })
            .collect();
        let tensors = b.create_vector(&tensors);
        let (kind, block_size, value_type) = self.encoding.to_wire();
        let encoding = wire::Encoding::create(&mut b, &wire::EncodingArgs { kind, block_size, value_type });
        let model_id = b.create_string(&self.model_id);
        let base_model = wire::Digest::new(&self.base_model);
        let sender = wire::PublicKey::new(&self.sender);
        let nonce = wire::Nonce::new(&self.nonce);
        let payload_digest = wire::Digest::new(&self.payload_digest);
        let h = wire::DeltaHeader::create(
            &mut b,
            &wire::DeltaHeaderArgs {
                format_version: FORMAT_VERSION,
                model_id: Some(model_id),
                round: self.round,
                base_model: Some(&base_model),
                sender: Some(&sender),
                nonce: Some(&nonce),
                num_examples: self.num_examples,
                timestamp_ms: self.timestamp_ms,
                encoding: Some(encoding),
                compression: match self.compression {
                    Compression::None => wire::Compression::None,
                    Compression::Zstd => wire::Compression::Zstd,
                },
                payload_len: self.payload_len,
                decoded_len: self.decoded_len,
                payload_digest: Some(&payload_digest),
                tensors: Some(tensors),
            },
        );
        b.finish_minimal(h);
        b.finished_data().to_vec()
    }

    /// Serialises the header and returns it ready to be signed.
    pub fn unsigned(&self) -> Unsigned {
        Unsigned { header: self.encode() }
    }
}

/// A serialised header waiting for its signature.
#[derive(Debug, Clone)]
pub struct Unsigned {
    header: Vec<u8>,
}

impl Unsigned {
    /// Wraps header bytes produced elsewhere (e.g. by another implementation) for signing.
    pub fn from_header_bytes(header: Vec<u8>) -> Self {
        Self { header }
    }

    /// The exact header bytes that will be carried and signed.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header
    }

    /// The input to Ed25519 (see [`crate::sign`]).
    pub fn signing_input(&self) -> SigningInput {
        SigningInput::new(sign::DELTA_ENVELOPE, &self.header)
    }

    /// Wraps the header and its signature into `DeltaEnvelope` bytes.
    pub fn finish(self, signature: &Signature) -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::with_capacity(self.header.len() + 128);
        let header = b.create_vector(&self.header);
        let sig = wire::Signature::new(signature);
        let e = wire::DeltaEnvelope::create(
            &mut b,
            &wire::DeltaEnvelopeArgs { header: Some(header), signature: Some(&sig) },
        );
        b.finish_minimal(e);
        b.finished_data().to_vec()
    }
}

/// Lays tensors out in a payload: each starts at a multiple of [`TENSOR_ALIGN`], gaps are zero.
#[derive(Debug, Default)]
pub struct PayloadBuilder {
    bytes: Vec<u8>,
    tensors: Vec<TensorSpec>,
}

impl PayloadBuilder {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one tensor's encoded bytes and records its table row.
    pub fn push(&mut self, name: impl Into<String>, shape: Vec<u64>, dtype: DType, encoded: &[u8]) {
        let pad = (self.bytes.len() as u64).next_multiple_of(TENSOR_ALIGN) as usize - self.bytes.len();
        self.bytes.resize(self.bytes.len() + pad, 0);
        self.tensors.push(TensorSpec {
            name: name.into(),
            shape,
            dtype,
            offset: self.bytes.len() as u64,
            length: encoded.len() as u64,
        });
        self.bytes.extend_from_slice(encoded);
    }

    /// The payload bytes and the tensor table.
    pub fn finish(self) -> (Vec<u8>, Vec<TensorSpec>) {
        (self.bytes, self.tensors)
    }
}

/// One validated row of the tensor table.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    /// Parameter name.
    pub name: &'a str,
    /// Dimensions.
    pub shape: flatbuffers::Vector<'a, u64>,
    /// Parameter element type.
    pub dtype: DType,
    /// Byte offset in the decoded payload.
    pub offset: u64,
    /// Byte length of the encoded data.
    pub length: u64,
    /// Element count (product of `shape`).
    pub numel: u64,
}

/// A decoded, semantically checked envelope header that borrows the received bytes.
///
/// Parsing checks structure and meaning but not the signature ([`Envelope::verify_signature`])
/// nor the payload ([`Envelope::check_payload`]), so a receiver can order the checks by cost.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    header_bytes: &'a [u8],
    header: wire::DeltaHeader<'a>,
    signature: Signature,
    encoding: Encoding,
    compression: Compression,
}

impl<'a> Envelope<'a> {
    /// Decodes and checks `bytes` (a `DeltaEnvelope` flatbuffer) against `limits`.
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<Self, Error> {
        if bytes.len() > limits.max_header_bytes {
            return Err(Error::TooLarge {
                what: "envelope header",
                len: bytes.len() as u64,
                max: limits.max_header_bytes as u64,
            });
        }
        let outer = verified_root::<wire::DeltaEnvelope>(bytes, limits, "DeltaEnvelope")?;
        let header_bytes = outer.header().bytes();
        let header = verified_root::<wire::DeltaHeader>(header_bytes, limits, "DeltaEnvelope.header")?;
        let signature = outer.signature().0;
        if header.format_version() != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "DeltaHeader",
                found: header.format_version(),
                expected: FORMAT_VERSION,
            });
        }
        check_name("model_id", header.model_id(), limits)?;
        if header.num_examples() == 0 {
            return Err(Error::invalid("num_examples", "must be at least 1"));
        }
        let encoding = Encoding::from_wire(header.encoding())?;
        let compression = match header.compression() {
            wire::Compression::None => Compression::None,
            wire::Compression::Zstd => Compression::Zstd,
            other => return Err(Error::UnknownEnum { field: "compression".into(), value: u64::from(other.0) }),
        };
        if header.payload_len() > limits.max_payload_bytes {
            return Err(Error::TooLarge { what: "payload", len: header.payload_len(), max: limits.max_payload_bytes });
        }
        if header.decoded_len() > limits.max_decoded_bytes {
            return Err(Error::TooLarge {
                what: "decoded payload",
                len: header.decoded_len(),
                max: limits.max_decoded_bytes,
            });
        }
        if compression == Compression::None && header.decoded_len() != header.payload_len() {
            return Err(Error::invalid("decoded_len", "must equal payload_len when the payload is not compressed"));
        }
        let env = Envelope { header_bytes, header, signature, encoding, compression };
        env.check_tensors(limits)?;
        Ok(env)
    }

    fn check_tensors(&self, limits: &Limits) -> Result<(), Error> {
        let table = self.header.tensors();
        if table.is_empty() {
            return Err(Error::invalid("tensors", "an envelope carries at least one tensor"));
        }
        if table.len() > limits.max_tensors {
            return Err(Error::TooLarge {
                what: "tensor table",
                len: table.len() as u64,
                max: limits.max_tensors as u64,
            });
        }
        let decoded = self.header.decoded_len();
        let mut spans = Vec::with_capacity(table.len());
        let mut names = Vec::with_capacity(table.len());
        for (i, t) in table.iter().enumerate() {
            let f = |name: &str| format!("tensors[{i}].{name}");
            check_name(&f("name"), t.name(), limits)?;
            let shape = t.shape();
            if shape.len() > limits.max_rank {
                return Err(Error::invalid(f("shape"), format!("rank {} exceeds {}", shape.len(), limits.max_rank)));
            }
            let mut numel: u64 = 1;
            for d in shape.iter() {
                if d == 0 {
                    return Err(Error::invalid(f("shape"), "zero-sized dimension"));
                }
                numel =
                    numel.checked_mul(d).ok_or_else(|| Error::invalid(f("shape"), "element count overflows u64"))?;
            }
            DType::from_wire(t.dtype(), || f("dtype"))?;
            let (off, len) = (t.offset(), t.length());
            if !off.is_multiple_of(TENSOR_ALIGN) {
                return Err(Error::invalid(f("offset"), format!("{off} is not a multiple of {TENSOR_ALIGN}")));
            }
            match off.checked_add(len) {
                Some(end) if end <= decoded => {}
                _ => {
                    return Err(Error::invalid(
                        f("length"),
                        format!("{off}+{len} runs past the {decoded}-byte payload"),
                    ));
                }
            }
            self.encoding.check_len(numel, len).map_err(|r| Error::invalid(f("length"), r))?;
            spans.push((off, len, i));
            names.push(t.name());
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.0 + a.1 > b.0 {
                return Err(Error::invalid(format!("tensors[{}].offset", b.2), format!("overlaps tensors[{}]", a.2)));
            }
        }
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid("tensors.name", format!("{:?} appears twice", w[0])));
        }
        Ok(())
    }

    /// The exact signed header bytes.
    pub fn header_bytes(&self) -> &'a [u8] {
        self.header_bytes
    }
    /// BLAKE3 of the header bytes: the update's identifier.
    pub fn id(&self) -> Digest {
        crate::digest(self.header_bytes)
    }
    /// Model the update applies to.
    pub fn model_id(&self) -> &'a str {
        self.header.model_id()
    }
    /// Training round.
    pub fn round(&self) -> u64 {
        self.header.round()
    }
    /// Digest of the base model.
    pub fn base_model(&self) -> Digest {
        self.header.base_model().0
    }
    /// Sender's Ed25519 key.
    pub fn sender(&self) -> PublicKey {
        self.header.sender().0
    }
    /// Sender's nonce.
    pub fn nonce(&self) -> [u8; 16] {
        self.header.nonce().0
    }
    /// Examples behind the update.
    pub fn num_examples(&self) -> u64 {
        self.header.num_examples()
    }
    /// Sender's clock at signing.
    pub fn timestamp_ms(&self) -> u64 {
        self.header.timestamp_ms()
    }
    /// Tensor encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    /// Payload compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }
    /// Payload length on the wire.
    pub fn payload_len(&self) -> u64 {
        self.header.payload_len()
    }
    /// Payload length after decompression.
    pub fn decoded_len(&self) -> u64 {
        self.header.decoded_len()
    }
    /// Digest of the wire payload.
    pub fn payload_digest(&self) -> Digest {
        self.header.payload_digest().0
    }
    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The tensor table; every row passed the checks in [`Envelope::parse`].
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = Tensor<'a>> + 'a {
        self.header.tensors().iter().map(|t| Tensor {
            name: t.name(),
            shape: t.shape(),
            dtype: DType::from_wire(t.dtype(), String::new).unwrap_or(DType::F32),
            offset: t.offset(),
            length: t.length(),
            numel: t.shape().iter().product(),
        })
    }

    /// Checks the signature of the header under the sender's key.
    pub fn verify_signature(&self) -> Result<(), Error> {
        sign::verify(sign::DELTA_ENVELOPE, self.header_bytes, &self.sender(), &self.signature, "DeltaEnvelope")
    }

    /// Checks the wire payload's length and BLAKE3 digest against the signed header.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), Error> {
        if payload.len() as u64 != self.payload_len() {
            return Err(Error::PayloadLength { declared: self.payload_len(), actual: payload.len() as u64 });
        }
        if crate::digest(payload) != self.payload_digest() {
            return Err(Error::PayloadDigest);
        }
        Ok(())
    }

    /// [`parse`](Self::parse), [`verify_signature`](Self::verify_signature) and
    /// [`check_payload`](Self::check_payload) in one call.
    pub fn open(bytes: &'a [u8], payload: &[u8], limits: &Limits) -> Result<Self, Error> {
        let env = Self::parse(bytes, limits)?;
        env.check_payload(payload)?;
        env.verify_signature()?;
        Ok(env)
    }
}

pub(crate) fn check_name(field: &str, name: &str, limits: &Limits) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::invalid(field, "empty"));
    }
    if name.len() > limits.max_name_len {
        return Err(Error::invalid(field, format!("{} bytes, limit {}", name.len(), limits.max_name_len)));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}
