//! The aggregator's ingest pipeline for one round, independent of how bytes arrive (the QUIC
//! shards of the transport feed it; tests feed it frames directly).
//!
//! For each update: frame split (declared sizes against limits, before any allocation) →
//! header parse (FlatBuffers verifier and semantic checks) → model, round and base-model match →
//! payload BLAKE3 against the signed digest → Ed25519 signature → replay check
//! (sender, round, nonce) → sender allowed (not banned, on the allow list if there is one) →
//! optional zstd decode into a buffer of exactly the declared size → tensors mapped onto the
//! model's layout → `Backend` ingest (validation, clipping, accumulation). The checks run
//! cheapest first, and a rejected update changes nothing and is counted by reason; the caller
//! logs it once per peer per round ([`Rejection::first_for_peer`]). At round close the rule,
//! noise and anomaly report run, and the result is signed. [`update::Encoder`] is the client
//! side: encode, sign, frame.

pub mod update;

use ed25519_dalek::SigningKey;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use thiserror::Error;
use vain_core::signed::{Body, Signed};
use vain_kernels::aggregate::{self, Config as RoundConfig, Outcome, Round};
use vain_kernels::backend::{Backend, Segment, Update};
use vain_kernels::decode::Encoding as KEnc;
use vain_kernels::encode::zstd_decompress_into;
use vain_schema::delta::{Compression, DType, Encoding, Envelope, ValueType};
use vain_schema::{Digest, Limits, PublicKey, frame, replay};

/// One tensor of the model: its name, shape and element type; its place in the flat vector is
/// the sum of the sizes before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorLayout {
    /// Parameter name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Element type the updates must declare.
    pub dtype: DType,
}

/// What one round accepts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Decoding limits.
    pub limits: Limits,
    /// Model id updates must carry.
    pub model_id: String,
    /// This round.
    pub round: u64,
    /// BLAKE3 of the global model updates must be computed against.
    pub base_model: Digest,
    /// The model's tensors, in flat order.
    pub layout: Vec<TensorLayout>,
    /// The aggregation (dim is taken from the layout).
    pub aggregation: RoundConfig,
    /// Rounds the replay guard remembers.
    pub replay_window: u64,
}

/// Why an update was rejected. Each variant is one counter.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Reject {
    /// The frame's preamble is malformed or declares sizes over the limits.
    #[error("frame: {0}")]
    Frame(vain_schema::Error),
    /// The header does not parse or fails its semantic checks.
    #[error("header: {0}")]
    Header(vain_schema::Error),
    /// Model id, round or base model is not this round's.
    #[error("update is for {what} {got}, this round takes {want}")]
    WrongRound {
        /// Which field.
        what: &'static str,
        /// What the update says.
        got: String,
        /// What the round wants.
        want: String,
    },
    /// The payload's length or BLAKE3 digest does not match the signed header.
    #[error("payload: {0}")]
    Payload(vain_schema::Error),
    /// The Ed25519 signature does not verify.
    #[error("signature: {0}")]
    Signature(vain_schema::Error),
    /// The (sender, round, nonce) was seen before, or the round is outside the window.
    #[error("replay: {0}")]
    Replay(vain_schema::Error),
    /// The sender is banned or not on the allow list.
    #[error("sender not allowed: {0}")]
    NotAllowed(Denied),
    /// The update arrived on a connection authenticated as someone other than its signer.
    #[error("signed by {}, sent over a connection of {}", short_hex(.signer), short_hex(.connection))]
    Relayed {
        /// The envelope's sender.
        signer: PublicKey,
        /// The connection's TLS identity.
        connection: PublicKey,
    },
    /// The zstd frame does not decode to the declared length.
    #[error("decompression: {0}")]
    Decompress(vain_kernels::encode::Error),
    /// A tensor is not in the model, or its shape or dtype differs.
    #[error("tensor {name:?}: {why}")]
    Layout {
        /// Tensor name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The backend refused the values (non-finite, bad indices, …) or the round is full.
    #[error("values: {0}")]
    Values(aggregate::Error),
}

impl Reject {
    /// The counter this rejection goes to.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Frame(_) => "frame",
            Reject::Header(_) => "header",
            Reject::WrongRound { .. } => "wrong round",
            Reject::Payload(_) => "payload digest",
            Reject::Signature(_) => "signature",
            Reject::Replay(_) => "replay",
            Reject::NotAllowed(_) => "not allowed",
            Reject::Relayed { .. } => "relayed",
            Reject::Decompress(_) => "decompression",
            Reject::Layout { .. } => "layout",
            Reject::Values(_) => "values",
        }
    }
}

/// A rejected update and whether it is the first with this reason from this sender in the
/// round (log only those; the sender is unknown when the header did not parse).
#[derive(Debug)]
pub struct Rejection {
    /// Why.
    pub reject: Reject,
    /// The sender, when the header named one.
    pub sender: Option<PublicKey>,
    /// First rejection with this reason from this sender this round.
    pub first_for_peer: bool,
}

/// An accepted update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accepted {
    /// Its index in the round.
    pub index: usize,
    /// Sender.
    pub sender: PublicKey,
    /// Weight (example count).
    pub weight: f32,
    /// BLAKE3 of the update's signed header (which commits to the payload): its identity in
    /// the round result's Merkle tree.
    pub digest: Digest,
}

/// The signed summary of a closed round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundResult {
    /// Model id.
    pub model_id: String,
    /// Round.
    pub round: u64,
    /// Base model the updates were against.
    pub base_model: Digest,
    /// BLAKE3 of the aggregate's little-endian f32 bytes.
    pub aggregate: Digest,
    /// Rule applied, as text.
    pub rule: String,
    /// Senders whose updates were used, with their weights, in acceptance order.
    pub contributors: Vec<(PublicKey, f32)>,
    /// The DP noise added: its standard deviation and the commitment to its secret
    /// (`philox::Secret::commitment`). The secret itself is never part of a result.
    pub noise: Option<(f32, Digest)>,
}

impl Body for RoundResult {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/round-result/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.model_id.len() as u64).to_le_bytes());
        out.extend_from_slice(self.model_id.as_bytes());
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&self.base_model);
        out.extend_from_slice(&self.aggregate);
        out.extend_from_slice(&(self.rule.len() as u64).to_le_bytes());
        out.extend_from_slice(self.rule.as_bytes());
        out.extend_from_slice(&(self.contributors.len() as u64).to_le_bytes());
        for (k, w) in &self.contributors {
            out.extend_from_slice(k);
            out.extend_from_slice(&w.to_le_bytes());
        }
        match &self.noise {
            None => out.push(0),
            Some((std, commitment)) => {
                out.push(1);
                out.extend_from_slice(&std.to_le_bytes());
                out.extend_from_slice(commitment);
            }
        }
    }
}

/// Whether a sender may contribute this round (`Err` says why not); shared by the shards.
pub type Allow = Arc<dyn Fn(&PublicKey) -> Result<(), Denied> + Send + Sync>;

/// Why a sender may not contribute to a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Denied {
    /// The round's open did not select it.
    #[error("not selected for this round")]
    NotSelected,
    /// The ledger suspended or banned it.
    #[error("suspended or banned in the ledger")]
    KeptOut,
    /// Governance banned it.
    #[error("banned by governance")]
    Banned,
}

/// An update a [`Checker`] refused, before it reached the round's counters.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub reject: Reject,
    /// The sender, when the header named one.
    pub sender: Option<PublicKey>,
}

/// A buffer decompressed payloads are written into; the aggregator service hands out pooled
/// ones ([`Checker::with_scratch`]), otherwise each is a fresh `Vec`.
pub trait Scratch: AsRef<[u8]> + AsMut<[u8]> + Send {}
impl<T: AsRef<[u8]> + AsMut<[u8]> + Send> Scratch for T {}

/// Hands out a scratch buffer of exactly the requested length.
pub type ScratchAlloc = Arc<dyn Fn(usize) -> Box<dyn Scratch> + Send + Sync>;

/// Where an update's values are: the decoded bytes, or the payload as received.
enum Values<B> {
    Raw(B),
    /// The decoded values, and the payload as received (kept for [`Checked::frame`]).
    Decoded(Box<dyn Scratch>, B),
}

impl<B> std::fmt::Debug for Values<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Values::Raw(_) => write!(f, "Raw"),
            Values::Decoded(d, _) => write!(f, "Decoded({} bytes)", (**d).as_ref().len()),
        }
    }
}

/// An update that passed every check that needs no round state: well-formed, for this round,
/// authentic, from an allowed sender, decompressed, laid out on the model. Built on a shard by
/// [`Checker::check`], taken by [`Ingest::accept`], which adds the replay check and the backend.
#[derive(Debug)]
pub struct Checked<B> {
    /// Sender.
    pub sender: PublicKey,
    /// Round the update is for.
    pub round: u64,
    /// BLAKE3 of the signed header.
    pub digest: Digest,
    base_model: Digest,
    nonce: [u8; 16],
    /// Weight (example count).
    pub weight: f32,
    /// Payload bytes as received.
    pub wire_bytes: u64,
    encoding: KEnc,
    /// (offset in the flat model, element count, byte range in the body), by offset.
    segments: Vec<(usize, usize, std::ops::Range<usize>)>,
    body: Values<B>,
    header: Vec<u8>,
}

impl<B: AsRef<[u8]>> Checked<B> {
    /// Whether the update carries every value (a dense encoding: f32, f16, bf16, int8 blocks),
    /// rather than a sparse or sign sketch shaped by the sender's error-feedback state.
    pub fn is_dense(&self) -> bool {
        matches!(self.encoding, KEnc::DenseF32 | KEnc::DenseF16 | KEnc::DenseBf16 | KEnc::Int8Block { .. })
    }

    /// The update's values as one flat vector of the model's `dim` parameters (what an auditor
    /// compares with its re-execution).
    pub fn dense(&self, dim: usize) -> Result<Vec<f32>, vain_kernels::decode::Error> {
        let body: &[u8] = match &self.body {
            Values::Raw(b) => b.as_ref(),
            Values::Decoded(v, _) => (**v).as_ref(),
        };
        let mut out = vec![0f32; dim];
        for (offset, n, bytes) in &self.segments {
            let slot = out
                .get_mut(*offset..*offset + *n)
                .ok_or(vain_kernels::decode::Error::OutputLength { got: dim, want: *offset + *n })?;
            let bytes = body
                .get(bytes.clone())
                .ok_or(vain_kernels::decode::Error::OutputLength { got: body.len(), want: bytes.end })?;
            vain_kernels::decode::decode_into(self.encoding, *n, bytes, slot)?;
        }
        Ok(out)
    }

    /// The update's frame as it arrived (header and payload as received), for a journal from
    /// which [`Ingest::ingest_frame`] can take it again.
    pub fn frame(&self) -> Result<Vec<u8>, vain_schema::Error> {
        let payload = match &self.body {
            Values::Raw(b) | Values::Decoded(_, b) => b.as_ref(),
        };
        frame::encode(&self.header, payload)
    }
}

/// The per-shard half of the pipeline: every check before the round's shared state.
pub struct Checker {
    limits: Limits,
    model_id: String,
    round: u64,
    base_model: Digest,
    layout: Vec<TensorLayout>,
    offsets: BTreeMap<String, (usize, usize, usize)>,
    allow: Allow,
    scratch: Option<ScratchAlloc>,
}

impl Checker {
    /// Decompress into buffers from `alloc` instead of fresh ones.
    pub fn with_scratch(mut self, alloc: ScratchAlloc) -> Self {
        self.scratch = Some(alloc);
        self
    }

    /// A checker for the round `cfg` describes.
    pub fn new(cfg: &Config, allow: Allow) -> Self {
        let mut offsets = BTreeMap::new();
        let mut dim = 0usize;
        for (i, t) in cfg.layout.iter().enumerate() {
            let numel = t.shape.iter().product::<u64>() as usize;
            offsets.insert(t.name.clone(), (i, dim, numel));
            dim += numel;
        }
        Self {
            limits: cfg.limits.clone(),
            model_id: cfg.model_id.clone(),
            round: cfg.round,
            base_model: cfg.base_model,
            layout: cfg.layout.clone(),
            offsets,
            allow,
            scratch: None,
        }
    }

    /// The model's parameter count.
    pub fn dim(&self) -> usize {
        self.offsets.values().map(|(_, _, n)| n).sum()
    }

    /// Checks one update whose frame the transport already split (header bytes, and the
    /// payload — in the transport's aligned buffer — which the result keeps, uncopied, unless
    /// it had to be decompressed).
    pub fn check<B: AsRef<[u8]>>(&self, header: &[u8], payload: B) -> Result<Checked<B>, Box<Refused>> {
        self.check_from(None, header, payload)
    }

    /// [`Checker::check`] for an update that arrived on a connection authenticated as
    /// `connection`: its signer must be that identity (a relayed update is refused).
    pub fn check_from<B: AsRef<[u8]>>(
        &self,
        connection: Option<PublicKey>,
        header: &[u8],
        payload: B,
    ) -> Result<Checked<B>, Box<Refused>> {
        let refuse = |reject, sender| Box::new(Refused { reject, sender });
        let env = Envelope::parse(header, &self.limits).map_err(|e| refuse(Reject::Header(e), None))?;
        let sender = env.sender();
        if let Some(c) = connection
            && c != sender
        {
            return Err(refuse(Reject::Relayed { signer: sender, connection: c }, Some(sender)));
        }
        let wrong = |what, got: String, want: String| refuse(Reject::WrongRound { what, got, want }, Some(sender));
        if env.model_id() != self.model_id {
            return Err(wrong("model", env.model_id().to_string(), self.model_id.clone()));
        }
        if env.round() != self.round {
            return Err(wrong("round", env.round().to_string(), self.round.to_string()));
        }
        if env.base_model() != self.base_model {
            return Err(wrong("base model", short_hex(&env.base_model()), short_hex(&self.base_model)));
        }
        env.check_payload(payload.as_ref()).map_err(|e| refuse(Reject::Payload(e), Some(sender)))?;
        env.verify_signature().map_err(|e| refuse(Reject::Signature(e), Some(sender)))?;
        (self.allow)(&sender).map_err(|why| refuse(Reject::NotAllowed(why), Some(sender)))?;
        let mut segments = Vec::with_capacity(env.tensors().len());
        for t in env.tensors() {
            let layout = |why| refuse(Reject::Layout { name: t.name.to_string(), why }, Some(sender));
            let Some(&(li, offset, numel)) = self.offsets.get(t.name) else {
                return Err(layout("not in the model"));
            };
            let l = &self.layout[li];
            if t.numel as usize != numel || !t.shape.iter().eq(l.shape.iter().copied()) {
                return Err(layout("shape differs from the model's"));
            }
            if t.dtype != l.dtype {
                return Err(layout("dtype differs from the model's"));
            }
            // The parser checked every tensor's range against the decoded length.
            segments.push((offset, numel, t.offset as usize..(t.offset + t.length) as usize));
        }
        segments.sort_by_key(|s| s.0);
        let wire_bytes = payload.as_ref().len() as u64;
        let body = match env.compression() {
            Compression::None => Values::Raw(payload),
            Compression::Zstd => {
                // decoded_len was checked against the limits by the parser.
                let len = env.decoded_len() as usize;
                let mut buf: Box<dyn Scratch> = match &self.scratch {
                    Some(alloc) => alloc(len),
                    None => Box::new(vec![0u8; len]),
                };
                zstd_decompress_into(payload.as_ref(), (*buf).as_mut())
                    .map_err(|e| refuse(Reject::Decompress(e), Some(sender)))?;
                Values::Decoded(buf, payload)
            }
        };
        Ok(Checked {
            sender,
            round: env.round(),
            digest: *blake3::hash(header).as_bytes(),
            base_model: env.base_model(),
            nonce: env.nonce(),
            weight: env.num_examples() as f32,
            wire_bytes,
            encoding: kernel_encoding(env.encoding()),
            segments,
            body,
            header: header.to_vec(),
        })
    }
}

/// One round being ingested.
pub struct Ingest<'b> {
    cfg: Config,
    checker: Checker,
    round: Round<'b>,
    guard: replay::Guard,
    rejected: BTreeMap<&'static str, u64>,
    logged: BTreeSet<(PublicKey, &'static str)>,
    contributors: Vec<(PublicKey, f32)>,
    weigh: Option<Weigh<'b>>,
}

/// Turns a sender and its declared example count into the weight its update gets.
pub type Weigh<'b> = Box<dyn Fn(&PublicKey, f32) -> f32 + 'b>;

fn kernel_encoding(e: Encoding) -> KEnc {
    match e {
        Encoding::DenseF32 => KEnc::DenseF32,
        Encoding::DenseF16 => KEnc::DenseF16,
        Encoding::DenseBf16 => KEnc::DenseBf16,
        Encoding::Int8Block { block_size } => KEnc::Int8Block { block_size },
        Encoding::TopK { value_type: ValueType::F32 } => KEnc::TopKF32,
        Encoding::TopK { value_type: ValueType::F16 } => KEnc::TopKF16,
        Encoding::SignScale => KEnc::SignScale,
    }
}

impl<'b> Ingest<'b> {
    /// Opens a round on `backend`. `allow` says whether a sender may contribute (e.g. not
    /// banned in the ledger, on the round's participant list).
    pub fn new(
        backend: &'b mut dyn Backend,
        cfg: Config,
        allow: impl Fn(&PublicKey) -> Result<(), Denied> + Send + Sync + 'static,
    ) -> Result<Self, aggregate::Error> {
        let checker = Checker::new(&cfg, Arc::new(allow));
        let agg = RoundConfig { dim: checker.dim(), ..cfg.aggregation.clone() };
        let round = Round::new(backend, agg)?;
        Ok(Self {
            guard: replay::Guard::new(cfg.replay_window, cfg.aggregation.max_updates.max(1) * 2),
            checker,
            round,
            rejected: BTreeMap::new(),
            logged: BTreeSet::new(),
            contributors: Vec::new(),
            weigh: None,
            cfg,
        })
    }

    /// Weighs each accepted update by `f(sender, declared example count)` instead of the count
    /// alone: how reputation sets a client's influence. A weight that is not finite and
    /// positive refuses the update (`Reject::Values`).
    pub fn with_weights(mut self, f: impl Fn(&PublicKey, f32) -> f32 + 'b) -> Self {
        self.weigh = Some(Box::new(f));
        self
    }

    /// A checker for this round, for a shard (same config and allow rule).
    pub fn checker(&self) -> Checker {
        Checker::new(&self.cfg, self.checker.allow.clone())
    }

    /// Rejections so far, by reason.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    /// Updates accepted so far.
    pub fn accepted(&self) -> usize {
        self.contributors.len()
    }

    /// Counts a rejection (from this pipeline or from a shard's [`Checker`]).
    pub fn refused(&mut self, r: Refused) -> Box<Rejection> {
        let reason = r.reject.reason();
        *self.rejected.entry(reason).or_default() += 1;
        let first_for_peer = match r.sender {
            Some(s) => self.logged.insert((s, reason)),
            None => true,
        };
        Box::new(Rejection { reject: r.reject, sender: r.sender, first_for_peer })
    }

    /// Ingests one whole frame (preamble, header, padding, payload).
    pub fn ingest_frame(&mut self, frame_bytes: &[u8]) -> Result<Accepted, Box<Rejection>> {
        let (header, payload) = match frame::split(frame_bytes, &self.cfg.limits) {
            Ok(parts) => parts,
            Err(e) => return Err(self.refused(Refused { reject: Reject::Frame(e), sender: None })),
        };
        self.ingest(header, payload)
    }

    /// Ingests one update whose frame the transport already split (header bytes, and the
    /// payload in an aligned buffer).
    pub fn ingest(&mut self, header: &[u8], payload: &[u8]) -> Result<Accepted, Box<Rejection>> {
        match self.checker.check(header, payload) {
            Ok(c) => self.accept(c),
            Err(r) => Err(self.refused(*r)),
        }
    }

    /// Takes an update a [`Checker`] passed: replay check, then the backend.
    pub fn accept<B: AsRef<[u8]>>(&mut self, c: Checked<B>) -> Result<Accepted, Box<Rejection>> {
        let sender = Some(c.sender);
        if c.round != self.cfg.round || c.base_model != self.cfg.base_model {
            let reject =
                Reject::WrongRound { what: "round", got: c.round.to_string(), want: self.cfg.round.to_string() };
            return Err(self.refused(Refused { reject, sender }));
        }
        // The replay entry is recorded only for an authentic, allowed update: a forger cannot
        // burn an honest sender's nonce.
        if let Err(e) = self.guard.check(&c.sender, c.round, &c.nonce) {
            return Err(self.refused(Refused { reject: Reject::Replay(e), sender }));
        }
        let body: &[u8] = match &c.body {
            Values::Raw(b) => b.as_ref(),
            Values::Decoded(v, _) => (**v).as_ref(),
        };
        let segs: Vec<Segment<'_>> = c
            .segments
            .iter()
            .map(|(offset, numel, r)| Segment {
                offset: *offset,
                numel: *numel,
                encoding: c.encoding,
                bytes: &body[r.clone()],
            })
            .collect();
        let weight = self.weigh.as_ref().map_or(c.weight, |f| f(&c.sender, c.weight));
        match self.round.ingest(&Update { segments: &segs }, weight) {
            Ok(index) => {
                self.contributors.push((c.sender, weight));
                Ok(Accepted { index, sender: c.sender, weight, digest: c.digest })
            }
            Err(e) => Err(self.refused(Refused { reject: Reject::Values(e), sender })),
        }
    }

    /// Closes the round: rule, noise, report; returns the outcome and the signed result.
    pub fn finish(self, signer: &SigningKey) -> Result<(Outcome, Signed<RoundResult>), aggregate::Error> {
        let rule = self.cfg.aggregation.rule.to_string();
        let outcome = self.round.finish()?;
        let bytes: Vec<u8> = outcome.aggregate.iter().flat_map(|v| v.to_le_bytes()).collect();
        let result = RoundResult {
            model_id: self.cfg.model_id.clone(),
            round: self.cfg.round,
            base_model: self.cfg.base_model,
            aggregate: *blake3::hash(&bytes).as_bytes(),
            rule,
            contributors: self.contributors,
            noise: outcome.report.noise_std.zip(outcome.report.noise_commitment),
        };
        Ok((outcome, Signed::sign(signer, result)))
    }
}

/// The first 8 bytes of a digest, for messages.
fn short_hex(d: &[u8]) -> String {
    hex::encode(&d[..d.len().min(8)]) + "…"
}
