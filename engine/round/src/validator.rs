//! The validator's result checking: every close an aggregator publishes is checked on its own
//! terms — signature by the aggregator's announced key, the Merkle root recomputed from the
//! listed updates, the outcome consistent with the checkpoint, the base continuing the previous
//! close's checkpoint, the checkpoint's bytes hashing to its digest — and the new model is
//! evaluated on the validator's own split. Each verdict is a line of `validator.jsonl`; the
//! validator keeps the checkpoints it verified and provides them under `ckpt/<digest>`.

use crate::msg::{self, Ack, Close, Message, Outcome};
use crate::store::Store;
use crate::{Error, merkle, short};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vain_core::NodeId;
use vain_core::signed::Signed;
use vain_learn::federation;
use vain_learn::model::{Arch, Model};
use vain_learn::train::{self, same_label, same_pixels};
use vain_learn::{DType, Device};
use vain_net::PeerId;
use vain_net::node::{Found, Handle, Inbound};
use vain_net::records::Key;
use vain_schema::Digest;
use vain_schema::clock::unix_ms;
use vain_schema::node::roles;

/// What the validator found about one close.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Round.
    pub round: u64,
    /// The aggregator that signed the close (first bytes of its key).
    pub aggregator: String,
    /// Every check passed.
    pub valid: bool,
    /// The checks that failed, by name.
    pub failed: Vec<&'static str>,
    /// No holder gave the checkpoint's bytes: its digest and accuracy are unverified (not a
    /// fault of the close).
    pub unverified: bool,
    /// Accuracy of the new checkpoint on the validator's split (null when it could not be
    /// fetched).
    pub accuracy: Option<f64>,
    /// Unix ms.
    pub at_ms: u64,
}

struct Job {
    close: Signed<Close>,
    from: PeerId,
}

/// A running validator; hand it the closes the node receives.
#[derive(Clone)]
pub struct Validator {
    jobs: mpsc::Sender<Job>,
}

impl Validator {
    /// Starts the checking task on the current tokio runtime; `dir` holds the verified
    /// checkpoints and `validator.jsonl`.
    pub fn start(arch: Arch, seed: u64, test_size: usize, net: Handle, dir: PathBuf) -> Result<Validator, Error> {
        let store = Store::open(&dir.join("checkpoints"))?;
        let fcfg = federation::Config { seed, test_size, ..federation::Config::new(arch, 1) };
        let split = federation::split(&fcfg, None)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(check_all(arch, split, store, net, dir.join("validator.jsonl"), rx));
        Ok(Validator { jobs: tx })
    }

    /// The store of verified checkpoints (the node serves fetches from it).
    pub fn store(dir: &std::path::Path) -> Result<Store, Error> {
        Store::open(&dir.join("checkpoints"))
    }

    /// Takes a close sent to this node: the sender must be the aggregator that signed it.
    pub fn offer(&self, close: Signed<Close>, from: &Inbound) -> Ack {
        match &from.announcement {
            None => Ack::NotAggregator,
            Some(a) if a.roles & roles::AGGREGATOR == 0 => Ack::NotAggregator,
            Some(a) if close.verify().is_err() || close.signer != a.signing_key => Ack::BadSignature,
            Some(_) => match self.jobs.try_send(Job { close, from: from.peer }) {
                Ok(()) => Ack::Taken,
                Err(_) => Ack::Busy,
            },
        }
    }
}

async fn check_all(
    arch: Arch,
    split: federation::Split,
    store: Store,
    net: Handle,
    log: PathBuf,
    mut rx: mpsc::Receiver<Job>,
) {
    // The last checkpoint each aggregator's chain reached, by round: a close must build on the
    // checkpoint of the round before it, whoever closed that one.
    let mut chain: BTreeMap<u64, Digest> = BTreeMap::new();
    let split = Arc::new(split);
    let mut model: Option<Model> = None;
    while let Some(job) = rx.recv().await {
        let c = &job.close.body;
        let mut failed = Vec::new();
        if c.model_id != arch.id() {
            failed.push("model");
        }
        if merkle::root(&c.leaves()) != c.root {
            failed.push("merkle root");
        }
        let mut seen: Vec<NodeId> = c.accepted.iter().map(|a| a.sender).collect();
        seen.sort();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            failed.push("a sender counted twice");
        }
        match c.outcome {
            Outcome::TooFew if c.checkpoint != c.base => failed.push("too few yet a new checkpoint"),
            Outcome::Aggregated if c.accepted.is_empty() => failed.push("aggregated nothing"),
            _ => {}
        }
        if let Some(prev) = c.round.checked_sub(1).and_then(|r| chain.get(&r))
            && *prev != c.base
        {
            failed.push("base is not the previous checkpoint");
        }
        let (flat, unverified) = match fetch(&net, job.from, &c.checkpoint).await {
            Fetched::Flat(f) if f.len() == arch.dim() => (Some(f), false),
            Fetched::Flat(_) => {
                failed.push("checkpoint has the wrong size");
                (None, false)
            }
            Fetched::Corrupt => {
                failed.push("checkpoint bytes do not match the digest");
                (None, false)
            }
            Fetched::Unavailable => (None, true),
        };
        let accuracy = match flat {
            Some(flat) => {
                // Only a checkpoint of a close that passed is kept and offered to others.
                if failed.is_empty() {
                    let _ = store.put(&flat);
                    let _ = net.provide(Key::Checkpoint(c.checkpoint)).await;
                }
                let m = model.take();
                let split = split.clone();
                let r = tokio::task::spawn_blocking(move || -> Result<(f64, Model), Error> {
                    let m = match m {
                        Some(m) => m,
                        None => Model::from_flat(arch, &flat, &Device::Cpu, DType::F32)?,
                    };
                    m.set_flat(&flat)?;
                    let (acc, _) = train::evaluate(&m, &split.data, &split.test, &same_label, &same_pixels)?;
                    Ok((acc, m))
                })
                .await;
                match r {
                    Ok(Ok((acc, m))) => {
                        model = Some(m);
                        Some(acc)
                    }
                    _ => None,
                }
            }
            None => None,
        };
        // The chain follows valid closes only: a bogus close must not make the next honest one
        // look broken.
        if failed.is_empty() {
            chain.insert(c.round, c.checkpoint);
        }
        while chain.len() > 64 {
            chain.pop_first();
        }
        if failed.is_empty() {
            tracing::info!(round = c.round, aggregator = %short(&job.close.signer), ?accuracy, unverified, "close valid");
        } else {
            tracing::warn!(round = c.round, aggregator = %short(&job.close.signer), ?failed, "close invalid");
        }
        let row = Row {
            round: c.round,
            aggregator: short(&job.close.signer),
            valid: failed.is_empty(),
            failed,
            unverified,
            accuracy,
            at_ms: unix_ms(),
        };
        if let (Ok(line), Ok(mut f)) =
            (serde_json::to_string(&row), std::fs::OpenOptions::new().create(true).append(true).open(&log))
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

enum Fetched {
    Flat(Vec<f32>),
    /// The aggregator that signed the close served bytes that do not hash to its digest.
    Corrupt,
    Unavailable,
}

/// The checkpoint from the aggregator that signed the close, or else from any holder listed
/// under `ckpt/<digest>`.
async fn fetch(net: &Handle, from: PeerId, digest: &Digest) -> Fetched {
    let ask = |peer: PeerId| async move {
        let answer =
            tokio::time::timeout(Duration::from_secs(5), net.request(peer, Message::Fetch(*digest).encode())).await;
        match answer {
            Ok(Ok(a)) => Some(msg::decode_checkpoint(&a, digest)),
            _ => None,
        }
    };
    match ask(from).await {
        Some(Ok(f)) => return Fetched::Flat(f),
        Some(Err(crate::Error::CheckpointDigest | crate::Error::CheckpointLength(_))) => return Fetched::Corrupt,
        _ => {}
    }
    if let Ok(Ok((Ok(Found::Providers(v)), _))) =
        tokio::time::timeout(Duration::from_secs(5), net.lookup(Key::Checkpoint(*digest))).await
    {
        for p in v.iter().filter_map(|p| p.parse::<PeerId>().ok()).filter(|p| *p != from) {
            if let Some(Ok(f)) = ask(p).await {
                return Fetched::Flat(f);
            }
        }
    }
    Fetched::Unavailable
}
