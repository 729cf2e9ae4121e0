//! The aggregator's side of the round protocol: select, open, collect, aggregate, judge, close.
//!
//! The coordinator runs on its own thread (the stage's collection blocks) and reaches the
//! control plane through the tokio runtime's handle.
//!
//! Several aggregators may serve a model; one leads (opens the rounds), the others follow: they
//! receive the leader's signed closes and fetch each new checkpoint. When the leader's
//! connection is gone, the best-ranked live follower takes over at the round the leader had
//! open, with the same base, and the clients re-send their updates for it. Each accepted update
//! is written to the round's journal (fsynced) before its signed receipt goes to the client; a
//! leader restarted after a crash re-ingests its journal. Between two rounds it does only what the
//! next round needs — the server step, the checkpoint, the ledger — and hands the evaluation of
//! the new checkpoint to an evaluator thread, so the next open goes out at once.

use crate::msg::{self, Ack, Close, Contribution, Message, Open, Outcome, Receipt, Status};
use crate::store::Store;
use crate::{Error, merkle, short};
use ed25519_dalek::SigningKey;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vain_aggregator::{Event, Service};
use vain_core::signed::Signed;
use vain_core::{HOUR, NodeId};
use vain_ingest::{Config as IngestConfig, Ingest};
use vain_kernels::aggregate::{Config as RoundConfig, Noise, Pre, Rule};
use vain_kernels::backend::Backend;
use vain_kernels::encode::Codec;
use vain_kernels::{philox, privacy};
use vain_learn::federation::{self, DELTA};
use vain_learn::judge::Judge;
use vain_learn::model::{self, Arch, Model};
use vain_learn::train::{self, same_label, same_pixels};
use vain_learn::{DType, Device};
use vain_net::PeerId;
use vain_net::node::{Entry, Handle, Inbound};
use vain_net::records::Key;
use vain_schema::clock::unix_ms;
use vain_schema::node::roles;
use vain_schema::{Digest, Limits};

/// How long an aggregator waits for another's status (its role in the rounds).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connected aggregator that does not answer its status in time still counts as
/// possibly leading: on a loaded machine answers are slow, and a leader taken for gone while it
/// runs its rounds splits the federation into two lines of rounds. One that is really gone drops
/// its connection and is no longer waited for.
pub const SILENT_GRACE: Duration = Duration::from_secs(10);

/// What the coordinator runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The model.
    pub arch: Arch,
    /// Aggregation rule.
    pub rule: Rule,
    /// Pre-aggregation steps.
    pub pre: Vec<Pre>,
    /// Per-update L2 clip.
    pub clip: Option<f32>,
    /// DP noise multiplier (needs `clip`).
    pub noise_multiplier: Option<f32>,
    /// Wire encoding clients use.
    pub codec: Codec,
    /// zstd level clients use.
    pub zstd: Option<u8>,
    /// The round after which the federation stops (0: never): an aggregator that resumes or
    /// takes over runs up to it, not this many more.
    pub rounds: u64,
    /// From the open to the deadline.
    pub round_time: Duration,
    /// Live clients to wait for before the first round.
    pub min_clients: usize,
    /// How long to wait for them (then go on with whoever is there, if anyone).
    pub wait_clients: Duration,
    /// Fewer accepted updates than this by the deadline: the round closes as
    /// [`Outcome::TooFew`] and the base checkpoint stays.
    pub min_updates: usize,
    /// Participants per round (0: every eligible client).
    pub per_round: usize,
    /// Whether the ledger's reputation sets weights and keeps clients out.
    pub reputation: bool,
    /// Server step η.
    pub server_lr: f32,
    /// Seed of the initial model, the evaluation split and participant sampling.
    pub seed: u64,
    /// Items of the embedded digits held out for evaluation (as `vain train simulate` does).
    pub test_size: usize,
    /// A leader whose connection has been gone this long is replaced.
    pub failover_after: Duration,
    /// This aggregator's tier when no ledger gives tiers ([`Coordinator::with_tiers`]): among
    /// live aggregators of a model the highest tier leads (then the XOR order of
    /// [`rank_key`]).
    pub tier: u8,
    /// Between two evidence epochs, at least this long (see [`Coordinator::with_epochs`]).
    pub evidence_interval: Duration,
}

impl Config {
    /// Defaults for `arch`.
    pub fn new(arch: Arch) -> Config {
        Config {
            arch,
            rule: Rule::FedAvg,
            pre: Vec::new(),
            clip: None,
            noise_multiplier: None,
            codec: Codec::F32,
            zstd: None,
            rounds: 0,
            round_time: Duration::from_secs(60),
            min_clients: 1,
            wait_clients: Duration::from_secs(60),
            min_updates: 1,
            per_round: 0,
            reputation: true,
            server_lr: 1.0,
            seed: 1,
            test_size: 2000,
            failover_after: Duration::from_secs(1),
            tier: 0,
            evidence_interval: Duration::from_secs(2),
        }
    }
}

/// One client in a round's row.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    /// First bytes of its key.
    pub id: String,
    /// accepted | rejected: reason | missing | unreachable | not selected.
    pub status: String,
    /// Anomaly z (null when it did not contribute).
    pub z: Option<f64>,
    /// Ledger tier after the round.
    pub tier: u8,
    /// active | suspended | banned.
    pub standing: &'static str,
}

/// What a round did, as `rounds.jsonl` and the demo's view show it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Round number.
    pub round: u64,
    /// aggregated | too few.
    pub outcome: &'static str,
    /// Selected clients.
    pub participants: usize,
    /// Accepted updates.
    pub accepted: usize,
    /// Refused updates.
    pub rejected: usize,
    /// Participants that sent nothing.
    pub missing: usize,
    /// Suspected senders.
    pub suspects: Vec<String>,
    /// Global model accuracy on the evaluation split after the round.
    pub accuracy: f64,
    /// Its mean cross-entropy.
    pub loss: f64,
    /// The new checkpoint (hex).
    pub checkpoint: String,
    /// Merkle root of the accepted updates (hex), as the signed close and the chain hold it.
    pub root: String,
    /// ε spent (null without noise).
    pub epsilon: Option<f64>,
    /// From the previous round's last update (or deadline) to this round's open acknowledged
    /// by every participant, ms (null for the first round).
    pub overhead_ms: Option<f64>,
    /// From the open to the close, ms.
    pub round_ms: f64,
    /// Per client the coordinator knows.
    pub clients: Vec<ClientRow>,
    /// The aggregator (first bytes of its key).
    pub aggregator: String,
    /// The accepted updates: sender (first bytes) `:` update digest (hex), in acceptance order.
    pub updates: Vec<String>,
    /// Updates re-ingested from the journal after a restart.
    pub recovered: usize,
    /// Wall clock at the close, Unix ms.
    pub closed_ms: u64,
    /// Payload bytes of the accepted updates, as they arrived (0 for a followed round).
    pub ingest_bytes: u64,
    /// Refused updates by reason, every refusal counted (the close lists one per sender).
    pub rejects: BTreeMap<String, u64>,
    /// The aggregation rule.
    pub rule: String,
    /// The backend that aggregated (cpu, cuda), empty for a followed round.
    pub backend: String,
    /// Time the aggregation took (finish: order statistics, clipping, noise, report), ms.
    pub aggregate_ms: Option<f64>,
    /// From the open being built to every selected client's answer, ms (null for a followed
    /// round). The rest of `round_ms` is the collection of updates.
    pub open_ms: Option<f64>,
    /// From the last update (or the deadline) to the close signed, journaled and sent —
    /// aggregation, server step, checkpoint, ledger — ms (null for a followed round).
    pub close_ms: Option<f64>,
}

/// What the coordinator keeps across restarts.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct State {
    round: u64,
    checkpoint: String,
}

/// The aggregator's round loop.
pub struct Coordinator {
    cfg: Config,
    net: Handle,
    rt: tokio::runtime::Handle,
    service: Service,
    backend: Box<dyn Backend>,
    key: SigningKey,
    store: Store,
    dir: PathBuf,
    judge: Judge,
    global: Vec<f32>,
    round: u64,
    known: BTreeMap<NodeId, u64>,
    link: Link,
    follow: Receiver<(Signed<Close>, PeerId)>,
    /// A close taken off `follow` while waiting, adopted first.
    early: Option<(Signed<Close>, PeerId)>,
    /// The aggregator this one follows, and when it was last seen connected.
    leader: Option<(PeerId, Instant)>,
    /// Other aggregators of the model (closes go to them too).
    peers: Arc<Mutex<Vec<PeerId>>>,
    /// Connected aggregators whose status did not come in time at the last poll, with their
    /// signing keys, the tier they last claimed, and since when each has been silent (one that
    /// last said it does not serve the model is not waited for).
    silent: BTreeMap<PeerId, (NodeId, u8, Instant)>,
    /// Each connected aggregator's last status answer: whether it serves the model, its tier.
    answered: BTreeMap<PeerId, (bool, u8)>,
    evidence: Option<Evidence>,
    governance: Option<Governance>,
    stakes: Option<Stakes>,
    excluded: Option<Excluded>,
    /// Aggregators the node's ledger keeps out (suspended, banned, proven to have forked, or
    /// below its aggregating tier and not pre-trusted): not ranked or followed as leaders, and
    /// this one does not lead while it is one of them.
    kept_out: Option<Excluded>,
    tiers: Option<Tiers>,
    epochs: Option<Epochs>,
    /// Digests of the governance inputs reports already carried (an evidence epoch is issued
    /// only for new ones), oldest first.
    carried: (std::collections::HashSet<[u8; 32]>, std::collections::VecDeque<[u8; 32]>),
    /// When the last evidence epoch was issued.
    last_evidence: Option<Instant>,
    /// Rows of adopted closes, for the evaluator.
    adopted: Vec<(Row, Vec<f32>)>,
}

/// Where the coordinator hands the signed evidence of each closed round (the node's live
/// ledger, which spreads it).
pub type Evidence = Arc<dyn Fn(Signed<vain_core::ledger::Report>) + Send + Sync>;

/// Whether the node's live ledger keeps a client out (banned, e.g. by a passed proposal): it is
/// not selected from the next round on.
pub type Excluded = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// The ledger's next epoch. A round's report takes the epoch of its round; evidence epochs
/// take epochs between rounds, so a round never takes an epoch the ledger already applied.
pub type Epochs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Governance digests remembered as carried.
const CARRIED: usize = 4096;

/// The ledger's tier of a node (by signing key). With it, the model's aggregators are ordered
/// for leading by what every ledger says of them, not by the tier each claims in its status.
pub type Tiers = Arc<dyn Fn(&NodeId) -> u8 + Send + Sync>;

/// Where the coordinator takes the proposals and votes its next report carries (the node's
/// live ledger's pool).
pub type Governance = Arc<dyn Fn() -> Vec<vain_core::ledger::Governed> + Send + Sync>;

/// Where the coordinator takes the stake observations its next report carries (the node's
/// reader of the chain's Staking contract): nodes whose stake changed since the last report.
pub type Stakes = Arc<dyn Fn() -> Vec<vain_core::ledger::Observation> + Send + Sync>;

/// What the node's request handler shares with the coordinator: its status, and the closes of
/// other aggregators to follow.
#[derive(Clone)]
pub struct Link {
    model: String,
    tier: Arc<std::sync::atomic::AtomicU8>,
    leading: Arc<AtomicBool>,
    round: Arc<AtomicU64>,
    follow: SyncSender<(Signed<Close>, PeerId)>,
    /// Closes from other aggregators this one did not adopt, by reason.
    ignored: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl Link {
    /// Closes from other aggregators not adopted, by reason (bad signature, not an aggregator,
    /// busy, not leading, stale, wrong base, another model, checkpoint unavailable).
    pub fn ignored(&self) -> BTreeMap<&'static str, u64> {
        self.ignored.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn ignore(&self, why: &'static str) {
        if let Ok(mut m) = self.ignored.lock() {
            *m.entry(why).or_default() += 1;
        }
    }

    /// Whether this aggregator leads its model now, and the next round.
    pub fn leading(&self) -> (bool, u64) {
        (self.leading.load(Ordering::Relaxed), self.round.load(Ordering::Relaxed))
    }

    /// The answer to a status request about `model`.
    pub fn status(&self, model: &str) -> Status {
        let serves = model == self.model;
        Status {
            serves,
            leading: serves && self.leading.load(Ordering::Relaxed),
            tier: self.tier.load(Ordering::Relaxed),
            round: self.round.load(Ordering::Relaxed),
        }
    }

    /// Hands a close from another aggregator to the coordinator (its signature and role are
    /// checked here; adoption happens on the coordinator's thread).
    pub fn offer(&self, close: Signed<Close>, from: &Inbound) -> Ack {
        let ack = match &from.announcement {
            None => Ack::NotAggregator,
            Some(a) if close.verify().is_err() || close.signer != a.signing_key => Ack::BadSignature,
            Some(a) if a.roles & roles::AGGREGATOR == 0 => Ack::NotAggregator,
            Some(_) => match self.follow.try_send((close, from.peer)) {
                Ok(()) => return Ack::Taken,
                Err(_) => Ack::Busy,
            },
        };
        self.ignore(ack.reason());
        ack
    }
}

/// Where an aggregator stands in the order of leaders of `model`: higher tier first, then
/// [`rank_key`]; the smallest leads.
pub fn order(model_id: &str, tier: u8, key: &NodeId) -> (std::cmp::Reverse<u8>, [u8; 32]) {
    (std::cmp::Reverse(tier), rank_key(model_id, key))
}

/// The order in which a model's aggregators of one tier lead: by XOR distance of their key to
/// BLAKE3 of the model id, nearest first — every node computes the same order without talking.
pub fn rank_key(model_id: &str, key: &NodeId) -> [u8; 32] {
    let m = blake3::hash(model_id.as_bytes());
    let mut out = [0u8; 32];
    for (o, (a, b)) in out.iter_mut().zip(m.as_bytes().iter().zip(key)) {
        *o = a ^ b;
    }
    out
}

/// `k` of the candidates (their indices), sampled without replacement with probability
/// proportional to their weights: Efraimidis–Spirakis, the k largest u^(1/w) with u from a BLAKE3
/// stream of the seed and the round — the same choice on every run.
pub fn sample(seed: u64, round: u64, weights: &[f64], k: usize) -> Vec<usize> {
    let mut h = blake3::Hasher::new_derive_key("vain 2026 participant sampling v1");
    h.update(&seed.to_le_bytes());
    h.update(&round.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut keyed: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            let u = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
            (u.max(f64::MIN_POSITIVE).powf(1.0 / w.max(1e-6)), i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().take(k).map(|(_, i)| i).collect()
}

/// The round's pipeline on `backend`: only `participants` may send — and not once the ledger
/// excludes them (a ban applied while the round is open) — each weighted by its example count
/// times its factor (the ledger's).
fn start_ingest<'b>(
    backend: &'b mut dyn Backend,
    cfg: IngestConfig,
    participants: &BTreeSet<NodeId>,
    factors: &[(NodeId, f32)],
    excluded: Option<Excluded>,
) -> Result<Ingest<'b>, vain_kernels::aggregate::Error> {
    let (allowed, factors) = (participants.clone(), factors.to_vec());
    let ingest = Ingest::new(backend, cfg, move |k| {
        if !allowed.contains(k) {
            Err(vain_ingest::Denied::NotSelected)
        } else if excluded.as_ref().is_some_and(|f| f(k)) {
            Err(vain_ingest::Denied::KeptOut)
        } else {
            Ok(())
        }
    })?;
    Ok(ingest
        .with_weights(move |k, examples| examples * factors.iter().find(|(id, _)| id == k).map_or(0.01, |(_, f)| *f)))
}

/// The device's own error behind an aggregation error (a CUDA driver, launch or kernel fault),
/// as opposed to anything about the update: `None` for the latter.
fn backend_fault(e: &vain_kernels::aggregate::Error) -> Option<String> {
    match e {
        vain_kernels::aggregate::Error::Backend(vain_kernels::backend::Error::Cuda(m)) => Some(m.clone()),
        _ => None,
    }
}

/// [`backend_fault`] behind an ingest refusal.
fn device_fault(r: &vain_ingest::Reject) -> Option<String> {
    match r {
        vain_ingest::Reject::Values(e) => backend_fault(e),
        _ => None,
    }
}

/// Opens an append-only log, creating it; a new file's directory entry is synced, so a
/// power loss cannot take the file (and its synced records) away.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    let existed = path.exists();
    let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if !existed && let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(f)
}

/// The entries of an append-only log of `u32 LE length ‖ bytes` records. A torn last record (a
/// crash mid-write) is cut off the file, so the next append starts on a record boundary.
fn read_log(path: &Path) -> Vec<Vec<u8>> {
    let Ok(b) = std::fs::read(path) else { return Vec::new() };
    let l = Limits::default();
    let max = l.max_header_bytes as u64 + l.max_payload_bytes + 4096;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let n = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        if n as u64 > max || at + 4 + n > b.len() {
            break;
        }
        out.push(b[at + 4..at + 4 + n].to_vec());
        at += 4 + n;
    }
    if at < b.len()
        && let Ok(f) = std::fs::OpenOptions::new().write(true).open(path)
    {
        let _ = f.set_len(at as u64).and_then(|()| f.sync_all());
    }
    out
}

impl Coordinator {
    /// A coordinator keeping its checkpoints, state and `rounds.jsonl` in `dir`; it resumes
    /// from the last round recorded there.
    pub fn new(
        cfg: Config,
        net: Handle,
        rt: tokio::runtime::Handle,
        service: Service,
        backend: Box<dyn Backend>,
        key: SigningKey,
        dir: PathBuf,
    ) -> Result<Coordinator, Error> {
        if cfg.noise_multiplier.is_some() && cfg.clip.is_none() {
            return Err(Error::NoiseWithoutClip);
        }
        let store = Store::open(&dir.join("checkpoints"))?;
        let mut round = 0;
        let mut global = Model::init(cfg.arch, cfg.seed, &Device::Cpu, DType::F32)?.flat()?;
        let state_path = dir.join("state.json");
        if let Ok(text) = std::fs::read_to_string(&state_path)
            && let Ok(s) = serde_json::from_str::<State>(&text)
            && let Ok(d) = <Digest as hex::FromHex>::from_hex(&s.checkpoint)
            && let Some(b) = store.get(&d)
            && b.len() == 4 * cfg.arch.dim()
        {
            global = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            round = s.round;
        }
        // The signed closes this aggregator journaled: its ledger's evidence (so a restart
        // forgets no suspension), and the last round it closed — a crash after journaling a
        // close but before recording the state must not close that round a second time.
        let mut judge = Judge::new(key.clone(), cfg.reputation, 0);
        let closes: Vec<Close> = read_log(&dir.join("closes.bin"))
            .iter()
            .filter_map(|b| match Message::decode(b) {
                Ok(Message::Close(c)) if c.verify().is_ok() => Some(c.body),
                _ => None,
            })
            .collect();
        for c in &closes {
            judge.apply(c.round, c.round * HOUR, c.verdicts.iter().copied())?;
            judge.tick(c.round.saturating_add(1).saturating_mul(HOUR));
        }
        if let Some(last) = closes.last()
            && last.round >= round
            && let Some(b) = store.get(&last.checkpoint)
            && b.len() == 4 * cfg.arch.dim()
        {
            global = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            round = last.round + 1;
        }
        store.put(&global)?;
        let (tx, follow) = std::sync::mpsc::sync_channel(16);
        let link = Link {
            model: cfg.arch.id().to_string(),
            tier: Arc::new(std::sync::atomic::AtomicU8::new(cfg.tier)),
            leading: Arc::new(AtomicBool::new(false)),
            round: Arc::new(AtomicU64::new(round)),
            follow: tx,
            ignored: Arc::new(Mutex::new(BTreeMap::new())),
        };
        std::fs::create_dir_all(dir.join("journal")).map_err(|e| Error::Io { path: dir.join("journal"), source: e })?;
        Ok(Coordinator {
            cfg,
            net,
            rt,
            service,
            backend,
            key,
            store,
            dir,
            judge,
            global,
            round,
            known: BTreeMap::new(),
            link,
            follow,
            early: None,
            leader: None,
            peers: Arc::new(Mutex::new(Vec::new())),
            silent: BTreeMap::new(),
            answered: BTreeMap::new(),
            evidence: None,
            governance: None,
            stakes: None,
            excluded: None,
            kept_out: None,
            tiers: None,
            epochs: None,
            carried: Default::default(),
            last_evidence: None,
            adopted: Vec::new(),
        })
    }

    /// Leaves out of every round the clients `f` excludes.
    pub fn with_exclusions(mut self, f: Excluded) -> Self {
        self.excluded = Some(f);
        self
    }

    /// Leaves out of the model's aggregators those `f` says the network keeps out (its ledger
    /// suspended or banned them, or a proof that one signed two reports for an epoch is held):
    /// they are not asked, followed or ranked, and a follower takes over from such a leader as
    /// from one that is gone (after `Config::failover_after`); this
    /// aggregator steps down while it is one of them. An equivocating leader could otherwise
    /// leave the proof against itself out of every report it makes.
    pub fn with_kept_out(mut self, f: Excluded) -> Self {
        self.kept_out = Some(f);
        self
    }

    /// Orders the model's aggregators by the tiers `f` gives (the node's ledger) instead of
    /// `Config::tier` and the tiers peers claim.
    pub fn with_tiers(mut self, f: Tiers) -> Self {
        self.tiers = Some(f);
        self
    }

    /// Lets the leader carry the ledger's pending governance when no round will: once its
    /// rounds are done, or while no client is there (with unbounded rounds), it issues an
    /// *evidence epoch* — a report with no round, epoch `f()` (the ledger's next) — whenever the
    /// pool holds audit requests, verdicts, proposals or votes no report carried yet, or stakes
    /// changed, at most every `Config::evidence_interval`. Testimony and local trust ride along but start no
    /// epoch by itself: an idle network does not tick its ledger forever. Without this, what
    /// arrives after the last round would wait for a round that never comes.
    pub fn with_epochs(mut self, f: Epochs) -> Self {
        self.epochs = Some(f);
        self
    }

    /// Remembers the governance inputs a report carried.
    fn carried(&mut self, governance: &[vain_core::ledger::Governed]) {
        for g in governance {
            let d = g.digest();
            if self.carried.0.insert(d) {
                self.carried.1.push_back(d);
                if self.carried.1.len() > CARRIED
                    && let Some(old) = self.carried.1.pop_front()
                {
                    self.carried.0.remove(&old);
                }
            }
        }
    }

    /// Moves the next round past the epochs the ledger already applied: a leader's evidence
    /// epochs took them (before a restart, or before this aggregator took the lead).
    fn past_evidence_epochs(&mut self) {
        if let Some(next) = self.epochs.as_ref().map(|e| e())
            && next > self.round
        {
            tracing::info!(from = self.round, to = next, "rounds resume after the ledger's evidence epochs");
            self.round = next;
            self.link.round.store(next, Ordering::Relaxed);
        }
    }

    /// Issues an evidence epoch if this aggregator leads and the ledger holds what one should
    /// carry (see [`Coordinator::with_epochs`]); returns whether it did.
    fn evidence_epoch(&mut self) -> bool {
        use vain_core::ledger::Governed;
        let (Some(f), Some(next)) = (self.evidence.clone(), self.epochs.as_ref().map(|e| e())) else { return false };
        if !self.link.leading.load(Ordering::Relaxed)
            || self.last_evidence.is_some_and(|t| t.elapsed() < self.cfg.evidence_interval)
        {
            return false;
        }
        let governance = self.governance.as_ref().map(|g| g()).unwrap_or_default();
        let waiting = governance.iter().any(|g| {
            !matches!(g, Governed::Testimony(_) | Governed::Trust(_)) && !self.carried.0.contains(&g.digest())
        });
        // Taking the stake changes marks them reported: they are carried now, or were none.
        let observations = self.stakes.as_ref().map(|s| s()).unwrap_or_default();
        if !waiting && observations.is_empty() {
            return false;
        }
        let epoch = next.max(self.round);
        self.carried(&governance);
        tracing::info!(epoch, governance = governance.len(), stakes = observations.len(), "evidence epoch");
        f(Signed::sign(&self.key, vain_core::ledger::Report { epoch, observations, governance }));
        self.round = epoch + 1;
        self.link.round.store(self.round, Ordering::Relaxed);
        self.last_evidence = Some(Instant::now());
        true
    }

    fn kept_out(&self, key: &NodeId) -> bool {
        self.kept_out.as_ref().is_some_and(|f| f(key))
    }

    /// `key`'s tier: the ledger's when there is one, else what it `claimed`.
    fn tier_of(&self, key: &NodeId, claimed: u8) -> u8 {
        self.tiers.as_ref().map_or(claimed, |f| f(key))
    }

    /// This aggregator's own tier (published in its status too).
    fn my_tier(&self) -> u8 {
        let t = self.tier_of(&self.key.verifying_key().to_bytes(), self.cfg.tier);
        self.link.tier.store(t, Ordering::Relaxed);
        t
    }

    /// Puts what `f` gives (held proposals and votes) into each round's report.
    pub fn with_governance(mut self, f: Governance) -> Self {
        self.governance = Some(f);
        self
    }

    /// Takes the stake observations of each report from `f`.
    pub fn with_stakes(mut self, f: Stakes) -> Self {
        self.stakes = Some(f);
        self
    }

    /// Hands each round's signed evidence (epoch = round) to `f`.
    pub fn with_evidence(mut self, f: Evidence) -> Self {
        self.evidence = Some(f);
        self
    }

    /// The link the node's request handler answers status requests and passes closes with.
    pub fn link(&self) -> Link {
        self.link.clone()
    }

    /// Replaces a failed device by the CPU backend for the rest of this aggregator's life, and
    /// tells the operator.
    fn fall_back_to_cpu(&mut self, why: &str) {
        tracing::error!(
            backend = %self.backend.kind(),
            error = %why,
            round = self.round,
            "the aggregation backend failed; this round is rebuilt from its journal and every later round runs on the CPU"
        );
        self.backend = Box::new(vain_kernels::cpu::CpuBackend::new(
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        ));
    }

    /// The path of round `round`'s journal.
    fn journal_path(&self, round: u64) -> PathBuf {
        self.dir.join("journal").join(format!("{round}.bin"))
    }

    /// Appends an update's frame to a round's journal and syncs it.
    fn journal(path: &Path, frame: &[u8]) -> Result<(), Error> {
        let io = |e| Error::Io { path: path.to_path_buf(), source: e };
        let mut f = open_log(path).map_err(io)?;
        f.write_all(&(frame.len() as u32).to_le_bytes()).map_err(io)?;
        f.write_all(frame).map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// The frames journaled for `round`; a torn last entry (a crash mid-write) is cut off.
    fn journaled(&self, round: u64) -> Vec<Vec<u8>> {
        read_log(&self.journal_path(round))
    }

    /// Removes the journals of rounds before `round`.
    fn prune_journals(&self, round: u64) {
        if let Ok(rd) = std::fs::read_dir(self.dir.join("journal")) {
            for e in rd.flatten() {
                let n = e.file_name();
                let done = n.to_str().and_then(|s| s.strip_suffix(".bin")).and_then(|s| s.parse::<u64>().ok());
                if done.is_some_and(|r| r < round) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// The checkpoint store (the node serves fetches from it).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// The QUIC ingest address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.service.local_addr()
    }

    fn clients(&self) -> Result<Vec<Entry>, Error> {
        let mut v: Vec<Entry> = self
            .rt
            .block_on(self.net.directory())?
            .into_iter()
            .filter(|e| e.announcement.roles & roles::CLIENT != 0 && e.connected)
            .filter(|e| !self.excluded.as_ref().is_some_and(|f| f(&e.announcement.signing_key)))
            .collect();
        v.sort_by_key(|e| e.announcement.signing_key);
        Ok(v)
    }

    /// Runs rounds until `cfg.rounds` are done or `stop` is set; `on` sees each round's row
    /// (after its evaluation). With [`Coordinator::with_epochs`] and evidence, it then goes on
    /// issuing evidence epochs until `stop`.
    pub fn run(mut self, stop: &AtomicBool, on: impl FnMut(&Row) + Send + 'static) -> Result<(), Error> {
        let (eval_tx, eval_rx) = std::sync::mpsc::sync_channel::<(Row, Vec<f32>)>(4);
        let log_path = self.dir.join("rounds.jsonl");
        let (arch, seed, test_size) = (self.cfg.arch, self.cfg.seed, self.cfg.test_size);
        let evaluator = std::thread::Builder::new()
            .name("vain-eval".into())
            .spawn(move || evaluate_rows(arch, seed, test_size, eval_rx, log_path, on))
            .map_err(|source| Error::Thread { name: "evaluator", source })?;
        // Rounds closed before a crash whose evaluation never reached the log: from the
        // journaled closes and the stored checkpoints.
        for r in self.unlogged_rows() {
            let _ = eval_tx.send(r);
        }
        let result = self.rounds(stop, &eval_tx);
        drop(eval_tx);
        let evaluated = evaluator.join().map_err(|_| Error::Panicked("evaluator"))?;
        result.and(evaluated)
    }

    fn rounds(&mut self, stop: &AtomicBool, eval: &std::sync::mpsc::SyncSender<(Row, Vec<f32>)>) -> Result<(), Error> {
        let model_key = Key::aggregators(self.cfg.arch.id());
        let started = Instant::now();
        let mut ready = false;
        let mut provided: Option<Instant> = None;
        let mut last_end: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) && (self.cfg.rounds == 0 || self.round < self.cfg.rounds) {
            // Providers re-announce every few seconds, leading or not: a client that joined
            // late finds us, and a directory that refused us before it had our announcement
            // gets another chance.
            if provided.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                let _ = self.rt.block_on(self.net.provide(model_key));
                provided = Some(Instant::now());
            }
            self.adopt_closes()?;
            for r in self.adopted.drain(..) {
                let _ = eval.send(r);
            }
            if !self.link.leading.load(Ordering::Relaxed) {
                // Nothing is decided before enough clients (and so the other aggregators, which
                // they connect us to) are there.
                if !ready {
                    let n = self.clients()?.len();
                    ready = n >= self.cfg.min_clients || (n > 0 && started.elapsed() > self.cfg.wait_clients);
                    if !ready {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    // The clients are here; give the connections to the other aggregators, which
                    // come through the same discovery, a moment to form before deciding.
                    std::thread::sleep(self.cfg.failover_after);
                }
                if !self.should_lead()? {
                    // A follower wakes as a close arrives: it holds (and provides) the new
                    // checkpoint before the clients near it ask for it.
                    if let Ok(c) = self.follow.recv_timeout(Duration::from_millis(300)) {
                        self.early = Some(c);
                    }
                    continue;
                }
                self.link.leading.store(true, Ordering::Relaxed);
                self.past_evidence_epochs();
                if self.cfg.rounds != 0 && self.round >= self.cfg.rounds {
                    continue;
                }
                tracing::info!(round = self.round, tier = self.my_tier(), "leading the model's rounds");
                last_end = None;
            } else {
                if self.kept_out(&self.key.verifying_key().to_bytes()) {
                    self.link.leading.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        round = self.round,
                        "this aggregator's ledger keeps it out (suspended, banned, proven to have forked, or below the aggregating tier): not leading"
                    );
                    continue;
                }
                // Learn who follows (they get the closes). Two leaders (started together, or a
                // healed partition): the one later in the order steps down and follows.
                let me = order(self.cfg.arch.id(), self.my_tier(), &self.key.verifying_key().to_bytes());
                let live = self.live_aggregators()?;
                let better = live.iter().find(|(e, st)| {
                    st.leading
                        && order(
                            self.cfg.arch.id(),
                            self.tier_of(&e.announcement.signing_key, st.tier),
                            &e.announcement.signing_key,
                        ) < me
                });
                if let Some((e, _)) = better {
                    self.leader = Some((e.peer_id, Instant::now()));
                    self.link.leading.store(false, Ordering::Relaxed);
                    tracing::warn!(leader = %e.peer_id, "another aggregator leads and ranks first: following it");
                    continue;
                }
            }
            let row = self.round_once(last_end, stop)?;
            last_end = Some(Instant::now());
            if row.is_none() && stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some((row, global)) = row {
                let _ = eval.send((row, global));
            } else {
                // No client: wait for one rather than spin. With unbounded rounds, the ledger's
                // governance cannot wait for the next round: it may be long.
                if self.cfg.rounds == 0 {
                    self.evidence_epoch();
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        // The rounds are done; the ledger is not (audits of the last rounds, votes).
        if self.evidence.is_some() && self.epochs.is_some() && !stop.load(Ordering::Relaxed) {
            tracing::info!(rounds = self.round, "rounds done; the ledger's governance goes on in evidence epochs");
            while !stop.load(Ordering::Relaxed) {
                // Kept out, its reports would be refused: another aggregator carries the rest.
                if self.kept_out(&self.key.verifying_key().to_bytes()) {
                    self.link.leading.store(false, Ordering::Relaxed);
                } else {
                    self.evidence_epoch();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// The other aggregators serving the model that are connected now, each with its status,
    /// best-ranked first; remembers them as the followers closes go to.
    fn live_aggregators(&mut self) -> Result<Vec<(Entry, Status)>, Error> {
        let model = self.cfg.arch.id();
        let candidates: Vec<Entry> = self
            .rt
            .block_on(self.net.directory())?
            .into_iter()
            .filter(|e| e.connected && e.announcement.roles & roles::AGGREGATOR != 0)
            .filter(|e| !self.kept_out(&e.announcement.signing_key))
            .collect();
        let ask = Message::Status(model.to_string()).encode();
        let polled = Instant::now();
        let answers = self.rt.block_on(async {
            let asks = candidates.iter().map(|e| {
                let (net, ask, pid) = (self.net.clone(), ask.clone(), e.peer_id);
                async move { tokio::time::timeout(STATUS_TIMEOUT, net.request(pid, ask)).await }
            });
            futures::future::join_all(asks).await
        });
        let (mut silent, mut answered) = (BTreeMap::new(), BTreeMap::new());
        let mut v: Vec<(Entry, Status)> = Vec::new();
        for (e, a) in candidates.into_iter().zip(answers) {
            match a {
                Ok(Ok(b)) => {
                    if let Ok(s) = Status::decode(&b) {
                        answered.insert(e.peer_id, (s.serves, s.tier));
                        if s.serves {
                            v.push((e, s));
                        }
                    }
                }
                // No answer in time: a loaded node, or one that is going. Remembered (unless it
                // last said it does not serve the model), so that a slow status is not taken
                // for a missing leader; silent since the poll that first went unanswered.
                Err(_) => {
                    let last = self.answered.get(&e.peer_id).copied();
                    if let Some(l) = last {
                        answered.insert(e.peer_id, l);
                    }
                    let (serves, tier) = last.unwrap_or((true, 0));
                    if serves {
                        let since = self.silent.get(&e.peer_id).map_or(polled, |(_, _, t)| *t);
                        silent.insert(e.peer_id, (e.announcement.signing_key, tier, since));
                    }
                }
                // The request failed outright: the connection is going (a killed process).
                Ok(Err(_)) => {}
            }
        }
        self.silent = silent;
        self.answered = answered;
        v.sort_by_key(|(e, s)| {
            order(model, self.tier_of(&e.announcement.signing_key, s.tier), &e.announcement.signing_key)
        });
        if let Ok(mut p) = self.peers.lock() {
            *p = v.iter().map(|(e, _)| e.peer_id).collect();
        }
        Ok(v)
    }

    /// Whether this aggregator should open the rounds now: no live aggregator of the model
    /// leads, the last leader has been gone for `failover_after`, and this one is the
    /// best-ranked live aggregator.
    fn should_lead(&mut self) -> Result<bool, Error> {
        // Asked first even when kept out: the list is who this one follows.
        let live = self.live_aggregators()?;
        if self.kept_out(&self.key.verifying_key().to_bytes()) {
            if let Some((e, _)) = live.iter().find(|(_, s)| s.leading) {
                self.leader = Some((e.peer_id, Instant::now()));
            }
            return Ok(false);
        }
        if let Some((e, _)) = live.iter().find(|(_, s)| s.leading) {
            self.leader = Some((e.peer_id, Instant::now()));
            return Ok(false);
        }
        if let Some((l, seen)) = self.leader {
            if live.iter().any(|(e, _)| e.peer_id == l) {
                // Connected but not leading at this instant: between two of its rounds.
                self.leader = Some((l, Instant::now()));
                return Ok(false);
            }
            // Still connected but slow to answer (a loaded machine): followed a while longer; a
            // leader that is gone drops its connection and is replaced after `failover_after`.
            let slow = self.silent.get(&l).is_some_and(|(_, _, since)| since.elapsed() < SILENT_GRACE);
            if slow || seen.elapsed() < self.cfg.failover_after {
                return Ok(false);
            }
            self.leader = None;
        }
        let model = self.cfg.arch.id();
        let me = order(model, self.my_tier(), &self.key.verifying_key().to_bytes());
        // A connected aggregator that ranks first but did not answer in time may be leading:
        // wait for its answer (a while) rather than open a second line of rounds.
        let waiting = self.silent.values().any(|(key, tier, since)| {
            since.elapsed() < SILENT_GRACE && order(model, self.tier_of(key, *tier), key) < me
        });
        if waiting {
            return Ok(false);
        }
        Ok(live.iter().all(|(e, s)| {
            order(model, self.tier_of(&e.announcement.signing_key, s.tier), &e.announcement.signing_key) > me
        }))
    }

    /// Adopts the closes other aggregators sent: their checkpoint becomes this one's state.
    fn adopt_closes(&mut self) -> Result<(), Error> {
        while let Some((close, peer)) = self.early.take().or_else(|| self.follow.try_recv().ok()) {
            let c = &close.body;
            // Two leaders are resolved by the order (each leader polls the others' status every
            // round), not by whose close arrives first: a leader ignores other closes.
            // A close stands on its own signature and chain, whoever leads: the closes a leader
            // made before it was kept out are taken (a follower that dropped them would build
            // the rounds it takes over on an older checkpoint than every other node).
            if self.link.leading.load(Ordering::Relaxed) {
                self.link.ignore("leading");
                continue;
            }
            if c.model_id != self.cfg.arch.id() {
                self.link.ignore("wrong model");
                continue;
            }
            if c.round < self.round || c.round > self.round.saturating_add(1 << 20) {
                self.link.ignore("stale");
                continue;
            }
            // Only an aggregator that reports serving the model is followed, and the next round's
            // close must build on this aggregator's checkpoint.
            let serving =
                self.peers.lock().is_ok_and(|p| p.contains(&peer)) || self.leader.is_some_and(|(l, _)| l == peer);
            if !serving {
                self.link.ignore("not serving the model");
                continue;
            }
            if c.round == self.round && c.base != model::digest(&self.global) {
                self.link.ignore("wrong base");
                continue;
            }
            let fetch = Message::Fetch(c.checkpoint).encode();
            let answer = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), self.net.request(peer, fetch)).await });
            let flat = match answer.map(|a| a.map(|a| msg::decode_checkpoint(&a, &c.checkpoint))) {
                Ok(Ok(Ok(flat))) if flat.len() == self.cfg.arch.dim() => flat,
                _ => {
                    self.link.ignore("checkpoint unavailable");
                    continue;
                }
            };
            self.store.put(&flat)?;
            // A second holder of the checkpoint, should the leader go.
            let _ = self.rt.block_on(self.net.provide(Key::Checkpoint(c.checkpoint)));
            self.global = flat;
            // The leader's evidence, so this ledger agrees with its weights and exclusions.
            let now = c.round * HOUR;
            self.judge.apply(c.round, now, c.verdicts.iter().copied())?;
            for (k, _, _) in &c.verdicts {
                self.known.entry(*k).or_insert(c.round);
            }
            self.round = c.round + 1;
            self.judge.tick(self.round * HOUR);
            self.link.round.store(self.round, Ordering::Relaxed);
            self.leader = Some((peer, Instant::now()));
            tracing::debug!(round = c.round, leader = %peer, accepted = c.accepted.len(), "adopted the leader's close");
            self.save_state(&c.checkpoint)?;
            self.prune_journals(self.round);
            // This aggregator's record of the round too: the leader's own may die with it.
            let row = self.row_of(&close);
            self.adopted.push((row, self.global.clone()));
        }
        Ok(())
    }

    /// Every client this aggregator knows, with its status in the round, its z and its standing
    /// in the ledger at `later`.
    fn client_rows(&self, status: &BTreeMap<NodeId, String>, z: &BTreeMap<NodeId, f64>, later: u64) -> Vec<ClientRow> {
        let ledger = self.judge.ledger();
        self.known
            .keys()
            .map(|k| {
                let rec = ledger.record(k);
                ClientRow {
                    id: short(k),
                    status: status.get(k).cloned().unwrap_or_else(|| "not selected".into()),
                    z: z.get(k).copied(),
                    tier: ledger.tier(k, later),
                    standing: match rec {
                        Some(r) if r.banned => "banned",
                        Some(r) if r.suspended_until.is_some_and(|u| later < u) => "suspended",
                        _ => "active",
                    },
                }
            })
            .collect()
    }

    /// Rows of the closes in `closes.bin` that `rounds.jsonl` lacks.
    fn unlogged_rows(&self) -> Vec<(Row, Vec<f32>)> {
        let logged: BTreeSet<u64> = std::fs::read_to_string(self.dir.join("rounds.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["round"].as_u64())
            .collect();
        let mut out = Vec::new();
        for bytes in read_log(&self.dir.join("closes.bin")) {
            let Ok(Message::Close(close)) = Message::decode(&bytes) else { continue };
            if logged.contains(&close.body.round) {
                continue;
            }
            let Some(ck) = self.store.get(&close.body.checkpoint) else { continue };
            let flat = ck.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            out.push((self.row_of(&close), flat));
        }
        out
    }

    /// The row of a close this aggregator adopted (statuses from the close itself).
    fn row_of(&self, close: &Signed<Close>) -> Row {
        let c = &close.body;
        let later = self.round * HOUR;
        let mut status: BTreeMap<NodeId, String> = BTreeMap::new();
        for a in &c.accepted {
            status.insert(a.sender, "accepted".into());
        }
        for (k, why) in &c.rejected {
            status.entry(*k).or_insert_with(|| format!("rejected: {why}"));
        }
        for k in &c.missing {
            status.insert(*k, "missing".into());
        }
        let z: BTreeMap<NodeId, f64> = c.verdicts.iter().filter(|v| v.1.is_finite()).map(|v| (v.0, v.1)).collect();
        let participants: BTreeSet<NodeId> =
            c.accepted.iter().map(|a| a.sender).chain(c.missing.iter().copied()).chain(z.keys().copied()).collect();
        Row {
            round: c.round,
            outcome: match c.outcome {
                Outcome::Aggregated => "aggregated",
                Outcome::TooFew => "too few",
            },
            participants: participants.len(),
            accepted: c.accepted.len(),
            rejected: c.rejected.iter().filter(|(k, _)| participants.contains(k)).count(),
            missing: c.missing.len(),
            suspects: c.suspects.iter().map(|(k, _)| short(k)).collect(),
            accuracy: f64::NAN,
            loss: f64::NAN,
            checkpoint: hex::encode(c.checkpoint),
            root: hex::encode(c.root),
            epsilon: c.epsilon.is_finite().then_some(c.epsilon),
            overhead_ms: None,
            round_ms: 0.0,
            clients: self.client_rows(&status, &z, later),
            aggregator: short(&close.signer),
            updates: c.accepted.iter().map(|a| format!("{}:{}", short(&a.sender), hex::encode(a.digest))).collect(),
            recovered: 0,
            closed_ms: unix_ms(),
            ingest_bytes: 0,
            rejects: c.rejected.iter().fold(BTreeMap::new(), |mut m, (_, why)| {
                *m.entry(why.clone()).or_default() += 1;
                m
            }),
            rule: c.rule.clone(),
            backend: String::new(),
            aggregate_ms: None,
            open_ms: None,
            close_ms: None,
        }
    }

    /// Chooses the round's participants among eligible clients: all of them, or `per_round`
    /// sampled without replacement with weight reputation factor × advertised cores.
    fn select(&mut self, clients: &[Entry], now: u64) -> Vec<Entry> {
        for e in clients {
            self.judge.join(e.announcement.signing_key, now);
            self.known.entry(e.announcement.signing_key).or_insert(self.round);
        }
        let eligible: Vec<&Entry> =
            clients.iter().filter(|e| self.judge.allowed(&e.announcement.signing_key, now)).collect();
        // An open lists at most MAX_PARTICIPANTS clients (what every decoder accepts).
        let k = match self.cfg.per_round {
            0 => msg::MAX_PARTICIPANTS as usize,
            n => n.min(msg::MAX_PARTICIPANTS as usize),
        };
        if eligible.len() <= k {
            return eligible.into_iter().cloned().collect();
        }
        let ids: Vec<NodeId> = eligible.iter().map(|e| e.announcement.signing_key).collect();
        let factors = self.judge.factors(&ids);
        let weights: Vec<f64> = eligible
            .iter()
            .zip(&factors)
            .map(|(e, (_, f))| f64::from(*f) * f64::from(e.announcement.resources.cpu_cores.max(1)))
            .collect();
        sample(self.cfg.seed, self.round, &weights, k).into_iter().map(|i| eligible[i].clone()).collect()
    }

    fn round_once(&mut self, last_end: Option<Instant>, stop: &AtomicBool) -> Result<Option<(Row, Vec<f32>)>, Error> {
        let _round = tracing::info_span!("round", round = self.round, model = self.cfg.arch.id()).entered();
        let now = self.round * HOUR;
        let clients = self.clients()?;
        let mut selected = self.select(&clients, now);
        if selected.is_empty() {
            return Ok(None);
        }
        let arch = self.cfg.arch;
        let base = model::digest(&self.global);
        // After a crash, the senders of journaled (acknowledged) updates take part whether or not
        // they are back yet: their updates must count.
        let journaled = self.journaled(self.round);
        let mut participants: BTreeSet<NodeId> = selected.iter().map(|e| e.announcement.signing_key).collect();
        for f in &journaled {
            if let Ok((header, _)) = vain_schema::frame::split(f, &Limits::default())
                && let Ok(env) = vain_schema::delta::Envelope::parse(header, &Limits::default())
            {
                participants.insert(env.sender());
            }
        }
        let t_open = Instant::now();
        let deadline_ms = unix_ms() + self.cfg.round_time.as_millis() as u64;
        let deadline = t_open + self.cfg.round_time;

        let ids: Vec<NodeId> = participants.iter().copied().collect();
        let factors = self.judge.factors(&ids);
        let noise = match self.cfg.noise_multiplier {
            Some(multiplier) => Some(Noise { multiplier, secret: philox::Secret::generate().map_err(Error::Random)? }),
            None => None,
        };
        let cfg = IngestConfig {
            limits: Limits::default(),
            model_id: arch.id().to_string(),
            round: self.round,
            base_model: base,
            layout: arch.layout(),
            aggregation: RoundConfig {
                clip: self.cfg.clip,
                noise,
                round: self.round,
                max_updates: participants.len(),
                full_report: true,
                pre: self.cfg.pre.clone(),
                // Clients drop out and the ledger excludes some: the rule's bound follows who
                // sent (the close names the rule that ran).
                fit_rule: true,
                ..RoundConfig::new(arch.dim(), self.cfg.rule)
            },
            replay_window: 4,
        };
        let journal_path = self.journal_path(self.round);
        let receipts = Receipts {
            net: self.net.clone(),
            rt: self.rt.clone(),
            key: self.key.clone(),
            model_id: arch.id().to_string(),
            round: self.round,
            base,
            peer_of: selected.iter().map(|e| (e.announcement.signing_key, e.peer_id)).collect(),
        };
        // A device that failed since the last round (a sticky fault) is replaced before the round
        // opens on it.
        if let Err(vain_kernels::backend::Error::Cuda(why)) = self.backend.prepare(arch.dim(), 0) {
            self.fall_back_to_cpu(&why);
        }
        let mut ingest = start_ingest(&mut *self.backend, cfg.clone(), &participants, &factors, self.excluded.clone())?;
        // After a crash: what was journaled (and so acknowledged) for this round comes first.
        let mut accepted: Vec<(NodeId, usize, Contribution)> = Vec::new();
        // A device fault is not the sender's: its update stays journaled, unreceipted and
        // unjudged, and the round is rebuilt on the CPU from the journal at the close.
        let mut device_failed: Option<String> = None;
        for frame in &journaled {
            match ingest.ingest_frame(frame) {
                Ok(a) => accepted.push((
                    a.sender,
                    a.index,
                    Contribution { sender: a.sender, weight: a.weight, digest: a.digest },
                )),
                Err(r) => {
                    if let Some(why) = device_fault(&r.reject) {
                        device_failed.get_or_insert(why);
                    }
                }
            }
        }
        let recovered = accepted.len();
        let recovered_from: BTreeSet<NodeId> = accepted.iter().map(|(k, _, _)| *k).collect();
        // Receipts for what was recovered (the crash may have come before they went out), ahead
        // of the open, so those clients do not send again.
        for (k, _, c) in &accepted {
            receipts.send(k, &c.digest);
        }
        self.service.stage.open(ingest.checker());

        // The open, signed, to every participant at once.
        let open = Open {
            model_id: arch.id().to_string(),
            layout: arch.layout_digest(),
            round: self.round,
            base,
            deadline_ms,
            rule: self.cfg.rule.to_string(),
            codec: self.cfg.codec.to_string(),
            zstd: self.cfg.zstd.unwrap_or(0),
            clip: self.cfg.clip.unwrap_or(0.0),
            noise_multiplier: self.cfg.noise_multiplier.unwrap_or(0.0),
            participants: participants.iter().copied().collect(),
        };
        let bytes = Message::Open(vain_core::signed::Signed::sign(&self.key, open)).encode();
        let acks = self.rt.block_on(async {
            let sends = selected.iter().map(|e| {
                let (net, bytes, pid) = (self.net.clone(), bytes.clone(), e.peer_id);
                async move {
                    match tokio::time::timeout(Duration::from_secs(5), net.request(pid, bytes)).await {
                        Ok(Ok(a)) => a.first().copied().and_then(Ack::from_byte),
                        _ => None,
                    }
                }
            });
            futures::future::join_all(sends).await
        });
        let overhead_ms = last_end.map(|t| t.elapsed().as_secs_f64() * 1000.0);
        let open_ms = t_open.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            participants = participants.len(),
            took = acks.iter().filter(|a| **a == Some(Ack::Taken)).count(),
            recovered,
            deadline_ms,
            "round open"
        );
        let mut status: BTreeMap<NodeId, String> = BTreeMap::new();
        let mut waiting: BTreeSet<NodeId> = BTreeSet::new();
        for (e, ack) in selected.iter().zip(&acks) {
            let k = e.announcement.signing_key;
            match ack {
                Some(Ack::Taken) if recovered_from.contains(&k) => {}
                Some(Ack::Taken) => {
                    waiting.insert(k);
                }
                Some(a) => {
                    status.insert(k, format!("declined: {}", a.reason()));
                }
                None => {
                    status.insert(k, "unreachable".into());
                }
            }
        }
        selected.retain(|e| waiting.contains(&e.announcement.signing_key));

        // Collect until every participant that took the open was heard from, or the deadline.
        // Each update is journaled before the round takes it, and receipted after.
        let mut rejected: Vec<(NodeId, String)> = Vec::new();
        let (mut ingest_bytes, mut rejects) = (0u64, BTreeMap::<String, u64>::new());
        let journal_error: std::cell::RefCell<Option<Error>> = std::cell::RefCell::new(None);
        if !waiting.is_empty() {
            self.service.stage.collect_until(
                &mut ingest,
                deadline,
                stop,
                |u| {
                    let r = u
                        .frame()
                        .map_err(Error::Frame)
                        .and_then(|f| Coordinator::journal(&journal_path, &f));
                    if let Err(e) = r {
                        journal_error.borrow_mut().get_or_insert(e);
                    }
                },
                |_, ev| {
                    if journal_error.borrow().is_some() {
                        return false;
                    }
                    match ev {
                        Event::Accepted { accepted: a, wire_bytes, .. } => {
                            ingest_bytes += wire_bytes;
                            tracing::debug!(sender = %short(&a.sender), weight = a.weight, "update accepted and journaled");
                            waiting.remove(&a.sender);
                            receipts.send(&a.sender, &a.digest);
                            accepted.push((
                                a.sender,
                                a.index,
                                Contribution { sender: a.sender, weight: a.weight, digest: a.digest },
                            ));
                        }
                        Event::Rejected(r) if device_fault(&r.reject).is_some() => {
                            device_failed.get_or_insert_with(|| device_fault(&r.reject).unwrap_or_default());
                            if let Some(s) = r.sender {
                                waiting.remove(&s);
                            }
                        }
                        Event::Rejected(r) => {
                            *rejects.entry(r.reject.reason().to_string()).or_default() += 1;
                            let k = r.sender.unwrap_or([0; 32]);
                            // A recovered update sent again is a duplicate, not an offence.
                            let duplicate = r.reject.reason() == "replay" && recovered_from.contains(&k);
                            // Bounded: a close must stay within what its decoders accept.
                            let room = rejected.len() < (msg::MAX_ENTRIES as usize) / 2;
                            if room && !duplicate && (r.first_for_peer || r.sender.is_none()) {
                                tracing::warn!(sender = %short(&k), reason = r.reject.reason(), error = %r.reject, "update refused");
                                rejected.push((k, r.reject.reason().to_string()));
                            }
                            if let Some(s) = r.sender
                                && participants.contains(&s)
                            {
                                waiting.remove(&s);
                            }
                        }
                    }
                    !waiting.is_empty()
                },
            )?;
        }
        if let Some(e) = journal_error.into_inner() {
            // An update that could not be journaled must not be acknowledged or counted: the
            // aggregator stops rather than close a round it cannot stand by.
            return Err(e);
        }
        if stop.load(Ordering::Relaxed) && !waiting.is_empty() && Instant::now() < deadline {
            // Shutting down mid-round: the round stays open; the restart re-opens it from
            // state.json and re-ingests its journal.
            tracing::info!(round = self.round, journaled = accepted.len(), "stopping with the round open");
            return Ok(None);
        }
        let collected = Instant::now();
        // Whatever the shards still hold is for a closed round.
        self.service.stage.drain();
        let missing: Vec<NodeId> = waiting.iter().copied().collect();

        // Close: aggregate (or keep the base), server step, checkpoint.
        let mut aggregate_ms = None;
        // A device that failed during collection, or fails at the close: from here on this
        // aggregator runs on the CPU, starting with this round, rebuilt from its journal (every
        // update it took was journaled first).
        let mut finished = None;
        if device_failed.is_none() && accepted.len() >= self.cfg.min_updates.max(1) {
            let t_aggregate = Instant::now();
            match ingest.finish(&self.key) {
                Ok(done) => finished = Some((done, t_aggregate)),
                Err(e) => match backend_fault(&e) {
                    Some(m) => device_failed = Some(m),
                    None => return Err(e.into()),
                },
            }
        } else {
            drop(ingest);
        }
        if let Some(why) = &device_failed {
            self.fall_back_to_cpu(why);
            let frames = self.journaled(self.round);
            let mut again = start_ingest(&mut *self.backend, cfg, &participants, &factors, self.excluded.clone())?;
            accepted.clear();
            for frame in frames {
                match again.ingest_frame(&frame) {
                    Ok(a) => {
                        receipts.send(&a.sender, &a.digest);
                        accepted.push((
                            a.sender,
                            a.index,
                            Contribution { sender: a.sender, weight: a.weight, digest: a.digest },
                        ));
                    }
                    // What the CPU refuses is the sender's (a resend of a journaled update is a
                    // replay, not an offence).
                    Err(r) if r.reject.reason() != "replay" => {
                        *rejects.entry(r.reject.reason().to_string()).or_default() += 1;
                        let k = r.sender.unwrap_or([0; 32]);
                        if !rejected.iter().any(|(s, _)| *s == k) && rejected.len() < (msg::MAX_ENTRIES as usize) / 2 {
                            rejected.push((k, r.reject.reason().to_string()));
                        }
                    }
                    Err(_) => {}
                }
            }
            if accepted.len() >= self.cfg.min_updates.max(1) {
                let t_aggregate = Instant::now();
                finished = Some((again.finish(&self.key)?, t_aggregate));
            }
        }
        let (outcome, report, noise, agg_rule) = if let Some(((o, _signed), t_aggregate)) = finished {
            aggregate_ms = Some(t_aggregate.elapsed().as_secs_f64() * 1000.0);
            let eta = self.cfg.server_lr;
            self.global.iter_mut().zip(&o.aggregate).for_each(|(g, a)| *g += eta * a);
            let noise = o.report.noise_std.zip(o.report.noise_commitment);
            if o.report.rule != self.cfg.rule {
                tracing::info!(configured = %self.cfg.rule, ran = %o.report.rule, updates = o.report.updates.len(), "rule fitted to the updates that came");
            }
            let rule = o.report.rule.to_string();
            (Outcome::Aggregated, Some(o.report), noise, rule)
        } else {
            (Outcome::TooFew, None, None, self.cfg.rule.to_string())
        };
        let checkpoint = self.store.put(&self.global)?;
        let _ = self.rt.block_on(self.net.provide(Key::Checkpoint(checkpoint)));

        // Judge: anomaly scores → ledger.
        let acc_ids: Vec<(NodeId, usize)> = accepted.iter().map(|(k, i, _)| (*k, *i)).collect();
        let rej_ids: Vec<NodeId> = rejected.iter().map(|(k, _)| *k).filter(|k| participants.contains(k)).collect();
        let verdicts = self.judge.observe(self.round, now, report.as_ref(), &acc_ids, &rej_ids)?;
        let suspects: Vec<(NodeId, f64)> =
            verdicts.iter().filter(|v| v.suspected() && v.z.is_finite()).map(|v| (v.id, v.z)).collect();
        let epsilon = match self.cfg.noise_multiplier {
            Some(s) => privacy::epsilon(
                participants.len() as f64 / clients.len().max(1) as f64,
                f64::from(s),
                self.round + 1,
                DELTA,
                privacy::DEFAULT_ORDERS,
            )
            .ok()
            .map(|e| e.epsilon),
            None => None,
        };
        let contributions: Vec<Contribution> = accepted.iter().map(|(_, _, c)| *c).collect();
        let mut close = Close {
            model_id: arch.id().to_string(),
            round: self.round,
            base,
            checkpoint,
            outcome,
            rule: agg_rule,
            root: [0; 32],
            accepted: contributions,
            rejected: rejected.clone(),
            missing: missing.clone(),
            suspects: suspects.clone(),
            verdicts: verdicts.iter().map(|v| (v.id, v.z, v.quality)).collect(),
            noise,
            epsilon: epsilon.unwrap_or(f64::NAN),
        };
        close.root = merkle::root(&close.leaves());
        let root = close.root;
        let mut observations = vain_learn::judge::observations(&close.verdicts);
        // An accepted update the round did not aggregate (too few of them) has no verdict: its
        // sender still took part.
        let judged: std::collections::HashSet<NodeId> = close.verdicts.iter().map(|v| v.0).collect();
        observations.extend(close.accepted.iter().filter(|a| !judged.contains(&a.sender)).map(|a| {
            vain_core::ledger::Observation { subject: a.sender, what: vain_core::ledger::Observed::Participated }
        }));
        // A selected client whose update never came took no part: its participation says so.
        observations.extend(
            missing
                .iter()
                .map(|k| vain_core::ledger::Observation { subject: *k, what: vain_core::ledger::Observed::Missed }),
        );
        let signed = vain_core::signed::Signed::sign(&self.key, close);
        self.persist(&signed)?;
        // The round's evidence for every ledger, once the close is journaled — also when empty,
        // since every epoch needs its report to be applied.
        if let Some(f) = self.evidence.clone() {
            let governance = self.governance.as_ref().map(|g| g()).unwrap_or_default();
            self.carried(&governance);
            if let Some(s) = &self.stakes {
                let room = vain_core::codec::MAX_OBSERVATIONS.saturating_sub(observations.len() as u64) as usize;
                observations.extend(s().into_iter().take(room));
            }
            f(Signed::sign(&self.key, vain_core::ledger::Report { epoch: self.round, observations, governance }));
        }
        let bytes = Message::Close(signed).encode();
        // To the participants, the other aggregators (followers) and the validators.
        let followers: Vec<PeerId> = self.peers.lock().map(|p| p.clone()).unwrap_or_default();
        let validators: Vec<PeerId> = self
            .rt
            .block_on(self.net.directory())?
            .into_iter()
            .filter(|e| e.connected && e.announcement.roles & roles::VALIDATOR != 0)
            .map(|e| e.peer_id)
            .collect();
        for pid in selected.iter().map(|e| e.peer_id).chain(followers).chain(validators) {
            let (net, bytes) = (self.net.clone(), bytes.clone());
            self.rt.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), net.request(pid, bytes)).await;
            });
        }

        self.round += 1;
        self.link.round.store(self.round, Ordering::Relaxed);
        let later = self.round * HOUR;
        self.judge.tick(later);
        self.save_state(&checkpoint)?;
        self.prune_journals(self.round);

        for (k, _, _) in &accepted {
            status.insert(*k, "accepted".into());
        }
        for (k, why) in &rejected {
            if participants.contains(k) {
                status.insert(*k, format!("rejected: {why}"));
            }
        }
        for k in &missing {
            status.insert(*k, "missing".into());
        }
        let z_of: BTreeMap<NodeId, f64> = verdicts.iter().filter(|v| v.z.is_finite()).map(|v| (v.id, v.z)).collect();
        let rows = self.client_rows(&status, &z_of, later);
        tracing::info!(
            outcome = ?outcome,
            accepted = accepted.len(),
            rejected = rejected.len(),
            missing = missing.len(),
            suspects = suspects.len(),
            checkpoint = %short(&checkpoint),
            "round closed"
        );
        let row = Row {
            round: self.round - 1,
            outcome: match outcome {
                Outcome::Aggregated => "aggregated",
                Outcome::TooFew => "too few",
            },
            participants: participants.len(),
            accepted: accepted.len(),
            rejected: rejected.iter().filter(|(k, _)| participants.contains(k)).count(),
            missing: missing.len(),
            suspects: suspects.iter().map(|(k, _)| short(k)).collect(),
            accuracy: f64::NAN,
            loss: f64::NAN,
            checkpoint: hex::encode(checkpoint),
            root: hex::encode(root),
            epsilon,
            overhead_ms,
            round_ms: collected.duration_since(t_open).as_secs_f64() * 1000.0,
            clients: rows,
            aggregator: short(&self.key.verifying_key().to_bytes()),
            closed_ms: unix_ms(),
            updates: accepted.iter().map(|(k, _, c)| format!("{}:{}", short(k), hex::encode(c.digest))).collect(),
            recovered,
            ingest_bytes,
            rejects,
            rule: self.cfg.rule.to_string(),
            backend: self.backend.kind().to_string(),
            aggregate_ms,
            open_ms: Some(open_ms),
            close_ms: Some(collected.elapsed().as_secs_f64() * 1000.0),
        };
        Ok(Some((row, self.global.clone())))
    }

    /// Appends the signed close to `closes.bin` (u32 length ‖ message), synced.
    fn persist(&self, close: &vain_core::signed::Signed<Close>) -> Result<(), Error> {
        let path = self.dir.join("closes.bin");
        let io = |e| Error::Io { path: path.clone(), source: e };
        let bytes = Message::Close(close.clone()).encode();
        let mut f = open_log(&path).map_err(io)?;
        f.write_all(&(bytes.len() as u32).to_le_bytes()).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)
    }

    fn save_state(&self, checkpoint: &Digest) -> Result<(), Error> {
        let path = self.dir.join("state.json");
        let io = |e| Error::Io { path: path.clone(), source: e };
        let s = State { round: self.round, checkpoint: hex::encode(checkpoint) };
        let text = serde_json::to_string(&s)?;
        vain_core::storage::replace(&vain_core::storage::Disk, &path, text.as_bytes(), 0o644).map_err(io)
    }
}

/// Sends signed receipts of journaled updates (in the background).
struct Receipts {
    net: Handle,
    rt: tokio::runtime::Handle,
    key: SigningKey,
    model_id: String,
    round: u64,
    base: Digest,
    peer_of: BTreeMap<NodeId, PeerId>,
}

impl Receipts {
    fn send(&self, sender: &NodeId, digest: &Digest) {
        let Some(pid) = self.peer_of.get(sender).copied() else { return };
        let r = Receipt {
            model_id: self.model_id.clone(),
            round: self.round,
            base: self.base,
            sender: *sender,
            digest: *digest,
        };
        let bytes = Message::Receipt(Signed::sign(&self.key, r)).encode();
        let net = self.net.clone();
        self.rt.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), net.request(pid, bytes)).await;
        });
    }
}

/// The evaluator thread: accuracy of each new checkpoint on the evaluation split, then the
/// row to `rounds.jsonl` and to `on`.
fn evaluate_rows(
    arch: Arch,
    seed: u64,
    test_size: usize,
    rx: std::sync::mpsc::Receiver<(Row, Vec<f32>)>,
    log: PathBuf,
    mut on: impl FnMut(&Row),
) -> Result<(), Error> {
    let fcfg = federation::Config { seed, test_size, ..federation::Config::new(arch, 1) };
    let split = federation::split(&fcfg, None)?;
    let model = Model::init(arch, seed, &Device::Cpu, DType::F32)?;
    let io = |e| Error::Io { path: log.clone(), source: e };
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(io)?;
    for (mut row, global) in rx {
        model.set_flat(&global)?;
        let (acc, loss) = train::evaluate(&model, &split.data, &split.test, &same_label, &same_pixels)?;
        row.accuracy = acc;
        row.loss = loss;
        let line = serde_json::to_string(&row)?;
        writeln!(f, "{line}").map_err(io)?;
        f.flush().map_err(io)?;
        on(&row);
    }
    Ok(())
}

/// The fetch answer for `digest` from `store`.
pub fn serve_fetch(store: &Store, digest: &Digest) -> Vec<u8> {
    msg::encode_checkpoint(store.get(digest).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_higher_tier_leads_then_the_nearest_key() {
        let keys: Vec<NodeId> = (0..6u8).map(|i| SigningKey::from_bytes(&[i; 32]).verifying_key().to_bytes()).collect();
        let mut by_key = keys.clone();
        by_key.sort_by_key(|k| rank_key("mnist-cnn", k));
        // Same tier: XOR distance decides, and every node computes the same order.
        assert!(order("mnist-cnn", 1, &by_key[0]) < order("mnist-cnn", 1, &by_key[1]));
        // A higher tier comes first whatever its distance.
        assert!(order("mnist-cnn", 2, &by_key[5]) < order("mnist-cnn", 1, &by_key[0]));
        // Distinct keys never tie.
        assert!(by_key.windows(2).all(|w| rank_key("mnist-cnn", &w[0]) < rank_key("mnist-cnn", &w[1])));
    }

    #[test]
    fn participants_are_drawn_in_proportion_to_reputation_times_capacity() {
        // Four clients: three of weight 1, one of weight 8 (say factor 1 × 8 cores, or a better
        // reputation on fewer cores). One drawn per round: each in proportion to its weight.
        let weights = [1.0, 1.0, 1.0, 8.0];
        let rounds = 4000u64;
        let mut drawn = [0u64; 4];
        for r in 0..rounds {
            let pick = sample(7, r, &weights, 1);
            assert_eq!(pick.len(), 1);
            drawn[pick[0]] += 1;
        }
        let share = |i: usize| drawn[i] as f64 / rounds as f64;
        assert!((share(3) - 8.0 / 11.0).abs() < 0.03, "{drawn:?}");
        for i in 0..3 {
            assert!((share(i) - 1.0 / 11.0).abs() < 0.02, "{drawn:?}");
        }
        // Without replacement, the same draw on every run, another in another round.
        let two = sample(7, 1, &[1.0, 2.0, 3.0, 4.0, 5.0], 3);
        assert_eq!(two.len(), 3);
        assert!(two.iter().collect::<std::collections::BTreeSet<_>>().len() == 3);
        assert_eq!(two, sample(7, 1, &[1.0, 2.0, 3.0, 4.0, 5.0], 3));
        assert!((0..20).any(|r| sample(7, r, &[1.0; 5], 3) != two));
        // A zero weight (a client the ledger gives no factor) comes last.
        assert!(!sample(7, 3, &[0.0, 1.0, 1.0], 2).contains(&0));
    }
}
