//! The round protocol's messages (docs/protocol.md, "Round protocol"): a signed [`Open`] from
//! the aggregator to each selected client, the signed [`Close`] that publishes what the round
//! did, and the content-addressed checkpoint fetch. All travel as requests on the control
//! plane's `/vain/round/1.0.0` protocol; every length is checked against a limit before
//! anything is allocated.

use vain_core::challenge::Challenge;
use vain_core::codec::{self, Decode, Reader, decode_signed, encode_signed};
use vain_core::signed::{Body, Signed};
use vain_schema::{Digest, PublicKey};

/// Most participants one round selects.
pub const MAX_PARTICIPANTS: u64 = 4096;
/// Most rejected or suspected entries a close lists.
pub const MAX_ENTRIES: u64 = 4 * MAX_PARTICIPANTS;

/// Opens a round: everything a selected client needs to train and send its update.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    /// Model id (e.g. `mnist-cnn`).
    pub model_id: String,
    /// The model's layout digest: the tensor table updates must match.
    pub layout: Digest,
    /// Round number.
    pub round: u64,
    /// BLAKE3 of the base checkpoint (the global model's little-endian f32 bytes).
    pub base: Digest,
    /// Unix ms after which the aggregator closes the round.
    pub deadline_ms: u64,
    /// Aggregation rule, as `vain aggregate --rule` spells it.
    pub rule: String,
    /// Wire encoding clients use, as `--codec` spells it.
    pub codec: String,
    /// zstd level for the payload, 0 for none.
    pub zstd: u8,
    /// Per-update L2 clip, 0 for none.
    pub clip: f32,
    /// DP noise multiplier σ, 0 for none.
    pub noise_multiplier: f32,
    /// The selected clients (their signing keys), sorted.
    pub participants: Vec<PublicKey>,
}

impl Body for Open {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/round-open/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.model_id);
        out.extend_from_slice(&self.layout);
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&self.base);
        out.extend_from_slice(&self.deadline_ms.to_le_bytes());
        put_str(out, &self.rule);
        put_str(out, &self.codec);
        out.push(self.zstd);
        out.extend_from_slice(&self.clip.to_le_bytes());
        out.extend_from_slice(&self.noise_multiplier.to_le_bytes());
        out.extend_from_slice(&(self.participants.len() as u64).to_le_bytes());
        for p in &self.participants {
            out.extend_from_slice(p);
        }
    }
}

impl Decode for Open {
    fn decode(r: &mut Reader<'_>) -> Result<Self, codec::Error> {
        let model_id = r.string("model_id")?;
        let layout = r.array("layout")?;
        let round = r.u64("round")?;
        let base = r.array("base")?;
        let deadline_ms = r.u64("deadline_ms")?;
        let rule = r.string("rule")?;
        let codec = r.string("codec")?;
        let zstd = r.u8("zstd")?;
        let clip = f32::from_le_bytes(r.array("clip")?);
        let noise_multiplier = f32::from_le_bytes(r.array("noise_multiplier")?);
        let n = r.count("participants", MAX_PARTICIPANTS, 32)?;
        let mut participants = Vec::with_capacity(n);
        for _ in 0..n {
            participants.push(r.array("participant")?);
        }
        Ok(Open { model_id, layout, round, base, deadline_ms, rule, codec, zstd, clip, noise_multiplier, participants })
    }
}

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The accepted updates were aggregated into a new checkpoint.
    Aggregated,
    /// Fewer than the minimum arrived by the deadline: the base checkpoint stays.
    TooFew,
}

/// An accepted update, as the close lists it (and the Merkle tree's leaf).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// Its signer.
    pub sender: PublicKey,
    /// The weight it was given.
    pub weight: f32,
    /// BLAKE3 of its signed header.
    pub digest: Digest,
}

/// Closes a round: what was accepted (and its Merkle root), refused and suspected, and the
/// checkpoint it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Close {
    /// Model id.
    pub model_id: String,
    /// Round number.
    pub round: u64,
    /// The base checkpoint.
    pub base: Digest,
    /// The new checkpoint (equal to `base` when nothing was aggregated).
    pub checkpoint: Digest,
    /// How the round ended.
    pub outcome: Outcome,
    /// Rule applied.
    pub rule: String,
    /// keccak-256 Merkle root of the contributions' leaves ([`crate::merkle`]).
    pub root: [u8; 32],
    /// The accepted updates, in acceptance order.
    pub accepted: Vec<Contribution>,
    /// Refused updates: sender (zeros when the header named none) and the reason.
    pub rejected: Vec<(PublicKey, String)>,
    /// Selected clients that sent nothing by the deadline.
    pub missing: Vec<PublicKey>,
    /// Updates whose anomaly z reached the suspicion threshold: sender and z.
    pub suspects: Vec<(PublicKey, f64)>,
    /// The evidence the aggregator recorded in its ledger: per scored client its anomaly z
    /// (infinite for a refused update) and quality; followers record the same.
    pub verdicts: Vec<(PublicKey, f64, f64)>,
    /// DP noise: its standard deviation and the commitment to its secret.
    pub noise: Option<(f32, Digest)>,
    /// ε spent so far at δ = 1e-5 (NaN without noise).
    pub epsilon: f64,
}

impl Close {
    /// The Merkle leaves of the accepted updates.
    pub fn leaves(&self) -> Vec<crate::merkle::Hash> {
        self.accepted.iter().map(|c| crate::merkle::leaf(&c.sender, &c.digest)).collect()
    }
}

impl Body for Close {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/round-close/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.model_id);
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&self.base);
        out.extend_from_slice(&self.checkpoint);
        out.push(match self.outcome {
            Outcome::Aggregated => 0,
            Outcome::TooFew => 1,
        });
        put_str(out, &self.rule);
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&(self.accepted.len() as u64).to_le_bytes());
        for c in &self.accepted {
            out.extend_from_slice(&c.sender);
            out.extend_from_slice(&c.weight.to_le_bytes());
            out.extend_from_slice(&c.digest);
        }
        out.extend_from_slice(&(self.rejected.len() as u64).to_le_bytes());
        for (k, why) in &self.rejected {
            out.extend_from_slice(k);
            put_str(out, why);
        }
        out.extend_from_slice(&(self.missing.len() as u64).to_le_bytes());
        for k in &self.missing {
            out.extend_from_slice(k);
        }
        out.extend_from_slice(&(self.suspects.len() as u64).to_le_bytes());
        for (k, z) in &self.suspects {
            out.extend_from_slice(k);
            out.extend_from_slice(&z.to_bits().to_le_bytes());
        }
        out.extend_from_slice(&(self.verdicts.len() as u64).to_le_bytes());
        for (k, z, q) in &self.verdicts {
            out.extend_from_slice(k);
            out.extend_from_slice(&z.to_bits().to_le_bytes());
            out.extend_from_slice(&q.to_bits().to_le_bytes());
        }
        match &self.noise {
            None => out.push(0),
            Some((std, c)) => {
                out.push(1);
                out.extend_from_slice(&std.to_le_bytes());
                out.extend_from_slice(c);
            }
        }
        out.extend_from_slice(&self.epsilon.to_bits().to_le_bytes());
    }
}

impl Decode for Close {
    fn decode(r: &mut Reader<'_>) -> Result<Self, codec::Error> {
        let model_id = r.string("model_id")?;
        let round = r.u64("round")?;
        let base = r.array("base")?;
        let checkpoint = r.array("checkpoint")?;
        let outcome = match r.u8("outcome")? {
            0 => Outcome::Aggregated,
            1 => Outcome::TooFew,
            value => return Err(codec::Error::Tag { field: "outcome", value }),
        };
        let rule = r.string("rule")?;
        let root = r.array("root")?;
        let n = r.count("accepted", MAX_PARTICIPANTS, 68)?;
        let mut accepted = Vec::with_capacity(n);
        for _ in 0..n {
            let sender = r.array("sender")?;
            let weight = f32::from_le_bytes(r.array("weight")?);
            let digest = r.array("digest")?;
            accepted.push(Contribution { sender, weight, digest });
        }
        let n = r.count("rejected", MAX_ENTRIES, 40)?;
        let mut rejected = Vec::with_capacity(n);
        for _ in 0..n {
            rejected.push((r.array("rejected sender")?, r.string("reason")?));
        }
        let n = r.count("missing", MAX_PARTICIPANTS, 32)?;
        let mut missing = Vec::with_capacity(n);
        for _ in 0..n {
            missing.push(r.array("missing")?);
        }
        let n = r.count("suspects", MAX_ENTRIES, 40)?;
        let mut suspects = Vec::with_capacity(n);
        for _ in 0..n {
            suspects.push((r.array("suspect")?, r.f64("z")?));
        }
        let n = r.count("verdicts", MAX_ENTRIES, 48)?;
        let mut verdicts = Vec::with_capacity(n);
        for _ in 0..n {
            verdicts.push((r.array("verdict")?, r.f64("verdict z")?, r.f64("quality")?));
        }
        let noise = match r.u8("noise")? {
            0 => None,
            1 => Some((f32::from_le_bytes(r.array("noise std")?), r.array("noise commitment")?)),
            value => return Err(codec::Error::Tag { field: "noise", value }),
        };
        let epsilon = r.f64("epsilon")?;
        Ok(Close {
            model_id,
            round,
            base,
            checkpoint,
            outcome,
            rule,
            root,
            accepted,
            rejected,
            missing,
            suspects,
            verdicts,
            noise,
            epsilon,
        })
    }
}

/// The aggregator's acknowledgement of an update: sent only once the update is in its journal
/// on disk, so an acknowledged update survives the aggregator's crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Model id.
    pub model_id: String,
    /// Round.
    pub round: u64,
    /// The round's base checkpoint.
    pub base: Digest,
    /// The update's signer.
    pub sender: PublicKey,
    /// BLAKE3 of the update's signed header.
    pub digest: Digest,
}

impl Body for Receipt {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/round-receipt/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.model_id);
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&self.base);
        out.extend_from_slice(&self.sender);
        out.extend_from_slice(&self.digest);
    }
}

impl Decode for Receipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, codec::Error> {
        Ok(Receipt {
            model_id: r.string("model_id")?,
            round: r.u64("round")?,
            base: r.array("base")?,
            sender: r.array("sender")?,
            digest: r.array("digest")?,
        })
    }
}

/// An aggregator's answer to [`Message::Status`]: whether it serves the model, runs its rounds
/// now, and the round it is at. Unsigned: it only tells another aggregator whom to follow;
/// state is adopted from signed closes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// It aggregates the model asked about.
    pub serves: bool,
    /// It opens the model's rounds now.
    pub leading: bool,
    /// Its tier (a higher tier leads first).
    pub tier: u8,
    /// The next round it will open (or follows).
    pub round: u64,
}

impl Status {
    /// `serves: u8 ‖ leading: u8 ‖ tier: u8 ‖ round: u64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.serves), u8::from(self.leading), self.tier];
        out.extend_from_slice(&self.round.to_le_bytes());
        out
    }

    /// The inverse of [`Status::encode`].
    pub fn decode(b: &[u8]) -> Result<Status, codec::Error> {
        let mut r = Reader::new(b);
        let mut flag = |field| match r.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(codec::Error::Tag { field, value }),
        };
        let serves = flag("serves")?;
        let leading = flag("leading")?;
        let tier = r.u8("tier")?;
        let round = r.u64("round")?;
        r.finish()?;
        Ok(Status { serves, leading, tier, round })
    }
}

pub use vain_core::challenge::{GaveUp, Task};

/// The answer to a [`Task`]: C, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// C = A·B, row-major (`rows × cols` entries).
    Product(Vec<u32>),
    /// The node gave up at the deadline and signed that it did: the proof of its failure that
    /// the validator's testimony carries to every ledger.
    GaveUp(Box<Signed<GaveUp>>),
    /// Refused (an unsigned [`Ack::Late`] proves nothing to a third party).
    Refused(Ack),
}

impl Answer {
    /// `0 ‖ u32 LE entries`, `1 ‖ ack`, or `2 ‖ signed admission`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Answer::Product(c) => {
                let mut out = Vec::with_capacity(1 + 4 * c.len());
                out.push(0);
                for x in c {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out
            }
            Answer::Refused(a) => vec![1, *a as u8],
            Answer::GaveUp(g) => {
                let mut out = vec![2];
                encode_signed(g, &mut out);
                out
            }
        }
    }

    /// The inverse of [`Answer::encode`], for the challenge `c` this node sent (within
    /// [`Challenge::in_bounds`]): a product must have exactly its `rows × cols` entries.
    pub fn decode(b: &[u8], c: &Challenge) -> Result<Answer, codec::Error> {
        match b.split_first() {
            Some((0, rest)) => {
                let n = c.rows as usize * c.cols as usize;
                if rest.len() != 4 * n {
                    return Err(codec::Error::TooLong {
                        field: "answer",
                        value: rest.len() as u64,
                        limit: 4 * n as u64,
                    });
                }
                Ok(Answer::Product(
                    rest.chunks_exact(4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect(),
                ))
            }
            Some((1, [a])) => match Ack::from_byte(*a) {
                Some(a) => Ok(Answer::Refused(a)),
                None => Err(codec::Error::Tag { field: "answer.ack", value: *a }),
            },
            Some((2, rest)) => {
                let mut r = Reader::new(rest);
                let g = decode_signed(&mut r)?;
                r.finish()?;
                Ok(Answer::GaveUp(Box::new(g)))
            }
            _ => Err(codec::Error::Tag { field: "answer", value: b.first().copied().unwrap_or(0) }),
        }
    }
}

/// A request on `/vain/round/1.0.0`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An aggregator opens a round (answer: [`Ack`]).
    Open(Signed<Open>),
    /// An aggregator publishes a round's close (answer: [`Ack`]).
    Close(Signed<Close>),
    /// Asks for the checkpoint with this BLAKE3 digest (answer: [`encode_checkpoint`]).
    Fetch(Digest),
    /// An aggregator acknowledges an update it journaled (answer: [`Ack`]).
    Receipt(Signed<Receipt>),
    /// One aggregator asks another whether it serves and leads this model (answer: [`Status`]).
    Status(String),
    /// Evidence for every node's ledger: a reporter's signed observations (answer: [`Ack`]).
    Evidence(Signed<vain_core::ledger::Report>),
    /// A proposal or a vote, signed by its author, for the next reporter to sequence into its
    /// epoch (answer: [`Ack`]).
    Govern(vain_core::ledger::Governed),
    /// A validator's resource challenge (answer: [`Answer`]).
    Challenge(Signed<Task>),
    /// Asks for the reports of the applied epochs from this one on, for a node that missed them
    /// (answer: [`encode_history`]).
    History(u64),
    /// An auditor asks a client for its work of a round (answer: [`Work::encode`]).
    Work(u64),
    /// Asks for the governance inputs the answerer holds for the next report that are not among
    /// these digests — the asker's own pool (answer: [`encode_pool`]): how a node that was
    /// away when they were passed on gets them.
    Pool(Vec<Digest>),
}

const OPEN: u8 = 1;
const CLOSE: u8 = 2;
const FETCH: u8 = 3;
const RECEIPT: u8 = 4;
const STATUS: u8 = 5;
const EVIDENCE: u8 = 6;
const GOVERN: u8 = 7;
const CHALLENGE: u8 = 8;
const HISTORY: u8 = 9;
const WORK: u8 = 10;
const POOL: u8 = 11;

/// Most digests a [`Message::Pool`] request lists (a node's whole pool).
pub const MAX_POOL_DIGESTS: u64 = 1024;
/// Most governance inputs a pool answer holds …
pub const POOL_ANSWER_ITEMS: usize = 64;
/// … and about this many bytes at most (one item always fits).
pub const POOL_ANSWER_BYTES: usize = 1 << 20;

/// Most reports a history answer holds.
pub const MAX_HISTORY_REPORTS: u64 = 4096;
/// Epochs a node puts in one history answer …
pub const HISTORY_EPOCHS: usize = 64;
/// … and about this many bytes at most (one epoch always fits).
pub const HISTORY_BYTES: usize = 4 << 20;

impl Message {
    /// The request's bytes: a kind byte, then the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        match self {
            Message::Open(s) => {
                out.push(OPEN);
                encode_signed(s, &mut out);
            }
            Message::Close(s) => {
                out.push(CLOSE);
                encode_signed(s, &mut out);
            }
            Message::Fetch(d) => {
                out.push(FETCH);
                out.extend_from_slice(d);
            }
            Message::Receipt(s) => {
                out.push(RECEIPT);
                encode_signed(s, &mut out);
            }
            Message::Status(model) => {
                out.push(STATUS);
                put_str(&mut out, model);
            }
            Message::Evidence(s) => {
                out.push(EVIDENCE);
                encode_signed(s, &mut out);
            }
            Message::Govern(g) => {
                out.push(GOVERN);
                vain_core::codec::encode_governed(g, &mut out);
            }
            Message::Challenge(t) => {
                out.push(CHALLENGE);
                encode_signed(t, &mut out);
            }
            Message::History(from) => {
                out.push(HISTORY);
                out.extend_from_slice(&from.to_le_bytes());
            }
            Message::Work(round) => {
                out.push(WORK);
                out.extend_from_slice(&round.to_le_bytes());
            }
            Message::Pool(held) => {
                out.push(POOL);
                out.extend_from_slice(&(held.len() as u64).to_le_bytes());
                for d in held {
                    out.extend_from_slice(d);
                }
            }
        }
        out
    }

    /// Decodes a request; the signature is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Message, codec::Error> {
        let mut r = Reader::new(bytes);
        let m = match r.u8("kind")? {
            OPEN => Message::Open(decode_signed(&mut r)?),
            CLOSE => Message::Close(decode_signed(&mut r)?),
            FETCH => Message::Fetch(r.array("digest")?),
            RECEIPT => Message::Receipt(decode_signed(&mut r)?),
            STATUS => Message::Status(r.string("model_id")?),
            EVIDENCE => Message::Evidence(decode_signed(&mut r)?),
            GOVERN => Message::Govern(vain_core::codec::decode_governed(&mut r)?),
            CHALLENGE => Message::Challenge(decode_signed(&mut r)?),
            HISTORY => Message::History(r.u64("from_epoch")?),
            WORK => Message::Work(r.u64("round")?),
            POOL => {
                let n = r.count("pool.held", MAX_POOL_DIGESTS, 32)?;
                let mut held = Vec::with_capacity(n);
                for _ in 0..n {
                    held.push(r.array("pool.digest")?);
                }
                Message::Pool(held)
            }
            value => return Err(codec::Error::Tag { field: "kind", value }),
        };
        r.finish()?;
        Ok(m)
    }
}

/// The answer to an [`Open`] or [`Close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Ack {
    /// Taken.
    Taken = 0,
    /// The bytes do not decode.
    Malformed = 1,
    /// The signature does not verify, or the signer is not the sender's announced key.
    BadSignature = 2,
    /// The sender is not an aggregator of the model (no verified announcement with the role,
    /// or not in the model's directory).
    NotAggregator = 3,
    /// A round number not above the last one seen from this aggregator.
    Stale = 4,
    /// Another model or layout than this node trains.
    WrongModel = 5,
    /// This node is not among the participants.
    NotSelected = 6,
    /// A close whose base is not the base of the round this node took part in.
    WrongBase = 7,
    /// The node is busy with a round and cannot take another.
    Busy = 8,
    /// A second, different report of the same reporter and epoch.
    Equivocation = 9,
    /// The author may not do this (its tier is below what the ledger requires).
    Ineligible = 10,
    /// A challenge the node could not finish by its deadline (it stopped there).
    Late = 11,
    /// A challenge larger than the node's claimed capacity can do by its deadline, or beyond
    /// the bounds every node answers.
    Oversized = 12,
}

impl Ack {
    /// From the answer's byte; unknown bytes are `None`.
    pub fn from_byte(b: u8) -> Option<Ack> {
        Some(match b {
            0 => Ack::Taken,
            1 => Ack::Malformed,
            2 => Ack::BadSignature,
            3 => Ack::NotAggregator,
            4 => Ack::Stale,
            5 => Ack::WrongModel,
            6 => Ack::NotSelected,
            7 => Ack::WrongBase,
            8 => Ack::Busy,
            9 => Ack::Equivocation,
            10 => Ack::Ineligible,
            11 => Ack::Late,
            12 => Ack::Oversized,
            _ => return None,
        })
    }

    /// The counter this answer goes to.
    pub fn reason(self) -> &'static str {
        match self {
            Ack::Taken => "taken",
            Ack::Malformed => "malformed",
            Ack::BadSignature => "bad signature",
            Ack::NotAggregator => "not an aggregator",
            Ack::Stale => "stale round",
            Ack::WrongModel => "wrong model",
            Ack::NotSelected => "not selected",
            Ack::WrongBase => "wrong base",
            Ack::Busy => "busy",
            Ack::Equivocation => "equivocation",
            Ack::Ineligible => "ineligible",
            Ack::Late => "late",
            Ack::Oversized => "oversized",
        }
    }
}

/// Most items a training manifest lists.
pub const MAX_ITEMS: u64 = 1 << 20;

/// A client's signed account of how it built its update of a round: everything an auditor
/// needs to re-execute the training (docs/protocol.md §10.7).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Model id.
    pub model_id: String,
    /// Round.
    pub round: u64,
    /// The base checkpoint it trained from.
    pub base: Digest,
    /// BLAKE3 of the signed header of the update it sent.
    pub update: Digest,
    /// The items of the data set it trained on.
    pub items: Vec<u32>,
    /// BLAKE3 commitment to those items' bytes (`vain_learn::data::commitment`).
    pub data: Digest,
    /// Optimiser, as `[train] optim` spells it.
    pub optim: String,
    /// Learning rate of that round (the schedule applied).
    pub lr: f64,
    /// Minibatch size.
    pub batch: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Seed of the round's training randomness (minibatch order).
    pub seed: u64,
}

impl Body for Manifest {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/training-manifest/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.model_id);
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&self.base);
        out.extend_from_slice(&self.update);
        out.extend_from_slice(&(self.items.len() as u64).to_le_bytes());
        for i in &self.items {
            out.extend_from_slice(&i.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        put_str(out, &self.optim);
        out.extend_from_slice(&self.lr.to_le_bytes());
        out.extend_from_slice(&self.batch.to_le_bytes());
        out.extend_from_slice(&self.steps.to_le_bytes());
        out.extend_from_slice(&self.seed.to_le_bytes());
    }
}

impl Decode for Manifest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, codec::Error> {
        let model_id = r.string("model_id")?;
        let round = r.u64("round")?;
        let base = r.array("base")?;
        let update = r.array("update")?;
        let n = r.count("items", MAX_ITEMS, 4)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(u32::from_le_bytes(r.array("item")?));
        }
        Ok(Manifest {
            model_id,
            round,
            base,
            update,
            items,
            data: r.array("data")?,
            optim: r.string("optim")?,
            lr: r.f64("lr")?,
            batch: r.u64("batch")?,
            steps: r.u64("steps")?,
            seed: r.u64("seed")?,
        })
    }
}

/// A client's work of a round, as it answers [`Message::Work`]: its manifest, the update's
/// frame and the aggregator's close that accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The signed manifest.
    pub manifest: Signed<Manifest>,
    /// The update's frame as sent.
    pub frame: Vec<u8>,
    /// The close that accepted it.
    pub close: Signed<Close>,
}

impl Work {
    /// `0 ‖ signed manifest ‖ frame: u64 length ‖ bytes ‖ signed close`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0];
        encode_signed(&self.manifest, &mut out);
        out.extend_from_slice(&(self.frame.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.frame);
        encode_signed(&self.close, &mut out);
        out
    }

    /// The answer of a client that holds no work of the round.
    pub fn none() -> Vec<u8> {
        vec![1]
    }

    /// The inverse of [`Work::encode`] (`None` for [`Work::none`]); the frame is at most the
    /// wire's largest frame.
    pub fn decode(b: &[u8]) -> Result<Option<Work>, codec::Error> {
        let mut r = Reader::new(b);
        match r.u8("work")? {
            0 => {}
            1 => {
                r.finish()?;
                return Ok(None);
            }
            value => return Err(codec::Error::Tag { field: "work", value }),
        }
        let manifest = decode_signed(&mut r)?;
        let l = vain_schema::Limits::default();
        let max = l.max_header_bytes as u64 + l.max_payload_bytes + 64;
        let n = r.count("frame", max, 1)?;
        let frame = r.take(n, "frame")?.to_vec();
        let close = decode_signed(&mut r)?;
        r.finish()?;
        Ok(Some(Work { manifest, frame, close }))
    }
}

/// An update frame's signer, header digest, whether its encoding is dense, and its values as
/// one flat vector of the model, after every check the aggregator makes that needs no round
/// state (well-formed, signed, for this model, round and base, laid out on the model).
pub fn update_values(
    frame: &[u8],
    arch: vain_learn::model::Arch,
    round: u64,
    base: &Digest,
) -> Result<(PublicKey, Digest, bool, Vec<f32>), crate::Error> {
    let cfg = vain_ingest::Config {
        limits: vain_schema::Limits::default(),
        model_id: arch.id().to_string(),
        round,
        base_model: *base,
        layout: arch.layout(),
        aggregation: vain_kernels::aggregate::Config::new(arch.dim(), vain_kernels::aggregate::Rule::FedAvg),
        replay_window: 1,
    };
    let checker = vain_ingest::Checker::new(&cfg, std::sync::Arc::new(|_: &PublicKey| Ok(())));
    let (header, payload) = vain_schema::frame::split(frame, &cfg.limits).map_err(crate::Error::Frame)?;
    let checked = checker.check(header, payload).map_err(|r| crate::Error::Refused(r.reject))?;
    let values = checked.dense(arch.dim()).map_err(crate::Error::Decode)?;
    Ok((checked.sender, checked.digest, checked.is_dense(), values))
}

/// A history answer: `count: u64 ‖ signed report` each, in epoch order.
pub fn encode_history(reports: &[Signed<vain_core::ledger::Report>]) -> Vec<u8> {
    let mut out = (reports.len() as u64).to_le_bytes().to_vec();
    for r in reports {
        encode_signed(r, &mut out);
    }
    out
}

/// The inverse of [`encode_history`] (signatures are checked when the reports are offered).
pub fn decode_history(b: &[u8]) -> Result<Vec<Signed<vain_core::ledger::Report>>, codec::Error> {
    let mut r = Reader::new(b);
    let n = r.count("history", MAX_HISTORY_REPORTS, 32 + 16 + 64)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decode_signed(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

/// A pool answer: `count: u64 ‖ governance input` each (kind byte and signed body, as `Govern`
/// carries it).
pub fn encode_pool(items: &[vain_core::ledger::Governed]) -> Vec<u8> {
    let mut out = (items.len() as u64).to_le_bytes().to_vec();
    for g in items {
        vain_core::codec::encode_governed(g, &mut out);
    }
    out
}

/// The inverse of [`encode_pool`] (signatures are checked when the inputs are submitted).
pub fn decode_pool(b: &[u8]) -> Result<Vec<vain_core::ledger::Governed>, codec::Error> {
    let mut r = Reader::new(b);
    let n = r.count("pool", POOL_ANSWER_ITEMS as u64, vain_core::codec::MIN_GOVERNED)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(vain_core::codec::decode_governed(&mut r)?);
    }
    r.finish()?;
    Ok(out)
}

/// A fetch answer: `0 ‖ bytes` when held, `1` when not.
pub fn encode_checkpoint(bytes: Option<&[u8]>) -> Vec<u8> {
    match bytes {
        Some(b) => {
            let mut out = Vec::with_capacity(b.len() + 1);
            out.push(0);
            out.extend_from_slice(b);
            out
        }
        None => vec![1],
    }
}

/// The checkpoint in a fetch answer, when its bytes hash to `digest`.
pub fn decode_checkpoint(answer: &[u8], digest: &Digest) -> Result<Vec<f32>, crate::Error> {
    match answer.split_first() {
        Some((0, b)) => {
            if blake3::hash(b).as_bytes() != digest {
                return Err(crate::Error::CheckpointDigest);
            }
            if !b.len().is_multiple_of(4) {
                return Err(crate::Error::CheckpointLength(b.len()));
            }
            Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        Some((1, [])) => Err(crate::Error::CheckpointMissing),
        _ => Err(crate::Error::Malformed(codec::Error::Tag {
            field: "fetch answer",
            value: answer.first().copied().unwrap_or(0),
        })),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn open(n: usize) -> Open {
        Open {
            model_id: "mnist-cnn".into(),
            layout: [1; 32],
            round: 7,
            base: [2; 32],
            deadline_ms: 1_800_000_000_000,
            rule: "median".into(),
            codec: "topk:0.05".into(),
            zstd: 3,
            clip: 2.0,
            noise_multiplier: 0.0,
            participants: (0..n).map(|i| [i as u8; 32]).collect(),
        }
    }

    #[test]
    fn messages_round_trip_and_signatures_bind_every_field() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let s = Signed::sign(&key, open(3));
        let m = Message::Open(s.clone());
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let mut t = s.clone();
        t.body.deadline_ms += 1;
        assert!(t.verify().is_err());
        let close = Close {
            model_id: "mnist-cnn".into(),
            round: 7,
            base: [2; 32],
            checkpoint: [3; 32],
            outcome: Outcome::Aggregated,
            rule: "fedavg".into(),
            root: [4; 32],
            accepted: vec![Contribution { sender: [5; 32], weight: 3.5, digest: [6; 32] }],
            rejected: vec![([0; 32], "frame".into())],
            missing: vec![[8; 32]],
            suspects: vec![([5; 32], 4.25)],
            verdicts: vec![([5; 32], 4.25, 0.75)],
            noise: Some((0.5, [7; 32])),
            epsilon: 1.5,
        };
        let m = Message::Close(Signed::sign(&key, close.clone()));
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let m = Message::Fetch([1; 32]);
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let receipt =
            Receipt { model_id: "mnist-cnn".into(), round: 3, base: [1; 32], sender: [2; 32], digest: [3; 32] };
        let m = Message::Receipt(Signed::sign(&key, receipt));
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let m = Message::Status("mnist-cnn".into());
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let obs = vec![vain_core::ledger::Observation {
            subject: [4; 32],
            what: vain_core::ledger::Observed::Anomaly { z: 2.5 },
        }];
        let proposal = vain_core::governance::Proposal {
            kind: vain_core::governance::Kind::Ban { node: [5; 32] },
            opens: 1,
            closes: 9,
            nonce: 3,
        };
        let proposal = Signed::sign(&key, proposal);
        let vote = Signed::sign(
            &key,
            vain_core::governance::Vote { proposal: proposal.digest(), choice: vain_core::governance::Choice::Yes },
        );
        let governance = vec![
            vain_core::ledger::Governed::Propose(proposal.clone()),
            vain_core::ledger::Governed::Vote(vote.clone()),
        ];
        let m = Message::Evidence(Signed::sign(
            &key,
            vain_core::ledger::Report { epoch: 4, observations: obs, governance },
        ));
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        // A failure testified with the subject's admission.
        let gave_up = vain_core::ledger::Governed::GaveUp(Signed::sign(
            &SigningKey::from_bytes(&[6; 32]),
            GaveUp {
                task: Signed::sign(
                    &key,
                    Task {
                        subject: [6; 32],
                        epoch: 6,
                        challenge: Challenge { rows: 1, inner: 1, cols: 1, seed: 0, issued: 0, deadline: 1 },
                    },
                ),
            },
        ));
        let testimony = Signed::sign(
            &key,
            vain_core::ledger::Report {
                epoch: 6,
                governance: vec![gave_up.clone()],
                observations: vec![
                    vain_core::ledger::Observation {
                        subject: [6; 32],
                        what: vain_core::ledger::Observed::ChallengeFailed,
                    },
                    vain_core::ledger::Observation {
                        subject: [7; 32],
                        what: vain_core::ledger::Observed::Uptime { fraction: 0.75 },
                    },
                ],
            },
        );
        for g in [
            vain_core::ledger::Governed::Propose(proposal.clone()),
            vain_core::ledger::Governed::Vote(vote),
            vain_core::ledger::Governed::Testimony(testimony.clone()),
            vain_core::ledger::Governed::RequestAudit(Signed::sign(
                &key,
                vain_core::ledger::AuditRequest { subject: [3; 32], round: 4, nonce: 5 },
            )),
            vain_core::ledger::Governed::Verdict(Signed::sign(
                &key,
                vain_core::audit::Verdict { audit: [1; 32], subject: [3; 32], pass: false },
            )),
        ] {
            let m = Message::Govern(g);
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
        // An admission travels only inside a testimony.
        assert_eq!(
            Message::decode(&Message::Govern(gave_up).encode()),
            Err(codec::Error::Tag { field: "governance.kind", value: 7 })
        );
        // A report carrying a testimony round-trips; a testimony carrying anything but
        // admissions does not decode (nesting stops at one level).
        let carrier = vain_core::ledger::Report {
            epoch: 5,
            observations: Vec::new(),
            governance: vec![vain_core::ledger::Governed::Testimony(testimony.clone())],
        };
        let m = Message::Evidence(Signed::sign(&key, carrier.clone()));
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let nested = vain_core::ledger::Report {
            governance: vec![vain_core::ledger::Governed::Propose(proposal)],
            ..testimony.body.clone()
        };
        let m = Message::Govern(vain_core::ledger::Governed::Testimony(Signed::sign(&key, nested)));
        assert_eq!(Message::decode(&m.encode()), Err(codec::Error::Tag { field: "governance.kind", value: 0 }));
        let task = Task {
            subject: [8; 32],
            epoch: 12,
            challenge: Challenge { rows: 4, inner: 100, cols: 3, seed: 11, issued: 1000, deadline: 3000 },
        };
        let m = Message::Challenge(Signed::sign(&key, task));
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let m = Message::History(17);
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let m = Message::Work(3);
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        let manifest = Manifest {
            model_id: "mnist-mlp".into(),
            round: 3,
            base: [1; 32],
            update: [2; 32],
            items: vec![5, 9, 1000],
            data: [3; 32],
            optim: "sgd:0.9".into(),
            lr: 0.05,
            batch: 16,
            steps: 3,
            seed: 77,
        };
        let work =
            Work { manifest: Signed::sign(&key, manifest), frame: vec![1, 2, 3], close: Signed::sign(&key, close) };
        assert_eq!(Work::decode(&work.encode()), Ok(Some(work.clone())));
        assert_eq!(Work::decode(&Work::none()), Ok(None));
        assert_eq!(Work::decode(&[2]), Err(codec::Error::Tag { field: "work", value: 2 }));
        let mut cut = work.encode();
        cut.truncate(cut.len() - 1);
        assert!(Work::decode(&cut).is_err());
        let plain = Signed::sign(&key, vain_core::ledger::Report::new(7, testimony.body.observations.clone()));
        let history = vec![Signed::sign(&key, carrier), plain];
        assert_eq!(decode_history(&encode_history(&history)), Ok(history.clone()));
        assert_eq!(decode_history(&encode_history(&[])), Ok(Vec::new()));
        let mut long = encode_history(&history);
        long.push(0);
        assert_eq!(decode_history(&long), Err(codec::Error::Trailing(1)));
        let mut huge = encode_history(&history);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode_history(&huge), Err(codec::Error::TooLong { field: "history", .. })));
        let st = Status { serves: true, leading: true, tier: 3, round: 9 };
        assert_eq!(Status::decode(&st.encode()), Ok(st));
        assert!(Status::decode(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn malformed_requests_get_typed_errors() {
        assert_eq!(Message::decode(&[]), Err(codec::Error::Truncated { field: "kind" }));
        assert_eq!(Message::decode(&[12]), Err(codec::Error::Tag { field: "kind", value: 12 }));
        let mut b = Message::Fetch([1; 32]).encode();
        b.push(0);
        assert_eq!(Message::decode(&b), Err(codec::Error::Trailing(1)));
        // A participant count larger than the limit is refused before allocating.
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut b = Message::Open(Signed::sign(&key, open(0))).encode();
        let at = b.len() - 64 - 8;
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Message::decode(&b), Err(codec::Error::TooLong { field: "participants", .. })));
    }

    #[test]
    fn pool_requests_and_answers_round_trip_and_are_bounded() {
        use vain_core::ledger::{Governed, Report};
        let m = Message::Pool(vec![[1; 32], [2; 32]]);
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        assert_eq!(Message::decode(&Message::Pool(Vec::new()).encode()), Ok(Message::Pool(Vec::new())));
        let mut b = vec![11];
        b.extend_from_slice(&(MAX_POOL_DIGESTS + 1).to_le_bytes());
        assert!(matches!(Message::decode(&b), Err(codec::Error::TooLong { field: "pool.held", .. })));
        let key = SigningKey::from_bytes(&[4; 32]);
        let items = vec![
            Governed::Testimony(Signed::sign(&key, Report::new(3, Vec::new()))),
            Governed::Testimony(Signed::sign(&key, Report::new(4, Vec::new()))),
            Governed::Trust(Signed::sign(
                &key,
                vain_core::ledger::TrustVector::new(5, [([2; 32], 0.25), ([1; 32], 0.75)]),
            )),
        ];
        let m = Message::Govern(items[2].clone());
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        assert_eq!(decode_pool(&encode_pool(&items)), Ok(items));
        let mut many = (POOL_ANSWER_ITEMS as u64 + 1).to_le_bytes().to_vec();
        many.resize(1 << 16, 0);
        assert!(matches!(decode_pool(&many), Err(codec::Error::TooLong { field: "pool", .. })));
    }

    #[test]
    fn answers_are_checked_against_their_challenge() {
        let c = Challenge { rows: 2, inner: 9, cols: 3, seed: 1, issued: 0, deadline: 10 };
        let product = Answer::Product(vec![1, 2, 3, 4, 5, u32::MAX]);
        assert_eq!(Answer::decode(&product.encode(), &c), Ok(product.clone()));
        for a in [Ack::Late, Ack::Busy, Ack::Oversized] {
            assert_eq!(Answer::decode(&Answer::Refused(a).encode(), &c), Ok(Answer::Refused(a)));
        }
        let key = SigningKey::from_bytes(&[1; 32]);
        let task = Signed::sign(&key, Task { subject: [2; 32], epoch: 3, challenge: c });
        let gave_up = Answer::GaveUp(Box::new(Signed::sign(&SigningKey::from_bytes(&[2; 32]), GaveUp { task })));
        assert_eq!(Answer::decode(&gave_up.encode(), &c), Ok(gave_up.clone()));
        let mut long = gave_up.encode();
        long.push(0);
        assert_eq!(Answer::decode(&long, &c), Err(codec::Error::Trailing(1)));
        // Another size than the challenge's, an unknown refusal, an unknown kind.
        let mut short = product.encode();
        short.truncate(short.len() - 4);
        assert!(matches!(Answer::decode(&short, &c), Err(codec::Error::TooLong { field: "answer", .. })));
        assert_eq!(Answer::decode(&[1, 200], &c), Err(codec::Error::Tag { field: "answer.ack", value: 200 }));
        assert_eq!(Answer::decode(&[7], &c), Err(codec::Error::Tag { field: "answer", value: 7 }));
        assert_eq!(Answer::decode(&[], &c), Err(codec::Error::Tag { field: "answer", value: 0 }));
    }

    #[test]
    fn checkpoints_are_checked_against_their_digest() {
        let flat = [1.0f32, -2.5, 3.25];
        let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
        let d = *blake3::hash(&bytes).as_bytes();
        assert_eq!(decode_checkpoint(&encode_checkpoint(Some(&bytes)), &d).expect("valid"), flat.to_vec());
        let mut bad = encode_checkpoint(Some(&bytes));
        bad[1] ^= 1;
        assert!(matches!(decode_checkpoint(&bad, &d), Err(crate::Error::CheckpointDigest)));
        assert!(matches!(decode_checkpoint(&encode_checkpoint(None), &d), Err(crate::Error::CheckpointMissing)));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn open_round_trips(n in 0usize..50, round in any::<u64>(), clip in 0f32..10.0) {
            let key = SigningKey::from_bytes(&[3; 32]);
            let mut o = open(n);
            o.round = round;
            o.clip = clip;
            let m = Message::Open(Signed::sign(&key, o));
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }
}
