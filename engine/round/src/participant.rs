//! The client's side of the round protocol: answer opens, fetch the base checkpoint by digest,
//! train on the node's own data, send the signed update over QUIC, check the close.
//!
//! Opens are answered at once (the answer says whether the client takes part); the work runs
//! on one worker task, one round at a time, so an open arriving while a round is being trained
//! is declined as busy rather than queued.

use crate::msg::{self, Ack, Close, Message, Open, Receipt};
use crate::store::Store;
use crate::{Error, merkle, short};
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use vain_core::NodeId;
use vain_core::signed::Signed;
use vain_ingest::update::{Encoder, Round as UpdateRound, Tensor};
use vain_kernels::encode::Codec;
use vain_learn::attack::{self, Attack};
use vain_learn::client::{self, Knowledge};
use vain_learn::data::Dataset;
use vain_learn::model::{Arch, Model};
use vain_learn::{DType, Device, train};
use vain_net::node::{Handle, Inbound};
use vain_net::records::Key;
use vain_net::{PeerId, node::Found};
use vain_schema::Digest;
use vain_schema::clock::unix_ms;
use vain_schema::node::{Announcement, roles};
use vain_transport::client::{Client, Config as ClientConfig};

/// What a client trains with.
pub struct Config {
    /// The model it trains.
    pub arch: Arch,
    /// Its training items in `data`.
    pub items: Vec<usize>,
    /// The data.
    pub data: Dataset,
    /// Local training.
    pub train: train::Config,
    /// For demonstrations and robustness tests: poison this node's updates.
    pub attack: Option<Attack>,
    /// Seed of its training randomness.
    pub seed: u64,
    /// Its data directory (checkpoint cache, `participant.jsonl`).
    pub dir: PathBuf,
    /// Aggregators the node's ledger keeps out (suspended, banned, proven to have signed two
    /// reports for an epoch, or below its aggregating tier and not pre-trusted): their opens
    /// are refused as ineligible.
    pub kept_out: Option<KeptOut>,
    /// The region tag this node announces (`region` in node.toml; empty for none). When a round's
    /// aggregator announces another region, the base checkpoint is asked of holders in this
    /// one first.
    pub region: String,
    /// Where the closes this client sees count towards its local trust in their aggregators.
    pub experience: Option<crate::experience::Experience>,
    /// Its held-out items in `data` (its local split, never trained on).
    pub held: Vec<usize>,
    /// Steps fine-tuning its personal head (the output layer, on its own items) each round it
    /// builds an update; 0: none. The head is its memory across rounds, kept in
    /// `personal-head-<model>.f32` in `dir`; each round it reports the global model's and its
    /// personalised model's accuracy on `held`.
    pub personal_steps: usize,
}

/// The output layer: what a client personalises on top of the shared body.
const HEAD: &str = "fc2.";
/// Where a client keeps its personal head for `arch` (the head's f32 values, little-endian):
/// one file per model, so a head never carries over to another model of the same head size.
fn head_path(dir: &std::path::Path, arch: Arch) -> PathBuf {
    dir.join(format!("personal-head-{}.f32", arch.id()))
}

/// Whether the node's ledger keeps an aggregator (by signing key) out.
pub type KeptOut = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// What one round did at this client, as `participant.jsonl` records it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Round.
    pub round: u64,
    /// The aggregator (first bytes of its key).
    pub aggregator: String,
    /// sent | resent | late | failed: why | acknowledged | included | rejected: why |
    /// not included.
    pub status: String,
    /// BLAKE3 of the update's signed header (hex), when there is one.
    pub digest: String,
    /// Examples trained on.
    pub examples: usize,
    /// Bytes of the update frame.
    pub frame_bytes: usize,
    /// Where the round's base checkpoint came from: `cache`, `aggregator`, `nearby <key>` (a
    /// holder in this node's region) or `holder <peer>` (found under `ckpt/<digest>`); empty
    /// when the update was built before.
    pub base_from: String,
    /// Unix ms.
    pub at_ms: u64,
    /// The round's global model (its base) on this client's held-out items, measured when the
    /// client personalises.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_accuracy: Option<f64>,
    /// This client's personalised model (the base with its own head, tuned this round) on its
    /// held-out items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_accuracy: Option<f64>,
}

struct Job {
    open: Open,
    from: PeerId,
    aggregator: Announcement,
}

struct Shared {
    arch: Arch,
    me: NodeId,
    net: Handle,
    /// Last round opened by each aggregator and its base (a lower round, or the same round with
    /// another base, is stale; the same round and base is the round resumed).
    last: Mutex<BTreeMap<NodeId, (u64, Digest)>>,
    /// The latest verified close of a round this client took from the close's signer:
    /// (round, checkpoint, root). An open of that round is stale, as is another close of it;
    /// the next round's open or close must build on this checkpoint.
    closed: Mutex<Option<(u64, Digest, Digest)>>,
    /// Receipts: (aggregator, round) → the update digest it acknowledged.
    receipts: Mutex<BTreeMap<(NodeId, u64), Digest>>,
    /// Updates built, by (round, base), on disk: the same update goes to whichever aggregator
    /// holds the round (the envelope does not name the aggregator), also after this client
    /// restarts. The last few are kept.
    frames: PathBuf,
    /// Aggregators found under `agg/<model>`.
    directory: Mutex<BTreeSet<PeerId>>,
    /// Rounds this client sent an update in: round → (update digest, base).
    sent: Mutex<BTreeMap<u64, (Digest, Digest)>>,
    /// Answers given, by reason.
    counts: Mutex<BTreeMap<&'static str, u64>>,
    log: PathBuf,
    /// The work of the last rounds, for auditors: `<round>.manifest` when built, `<round>.bin`
    /// (the answer to [`Message::Work`]) once a close accepted the update.
    work: PathBuf,
    kept_out: Option<KeptOut>,
    region: String,
    experience: Option<crate::experience::Experience>,
    /// The rounds whose close already counted as experience (the last few).
    judged: Mutex<BTreeSet<u64>>,
}

/// Rounds of work a client keeps for auditors.
pub const WORK_KEPT: usize = 16;

/// A running participant; feed it the round-protocol requests the node receives.
#[derive(Clone)]
pub struct Participant {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<Job>,
}

struct Trainer {
    cfg: Config,
    key: SigningKey,
    encoders: BTreeMap<String, Encoder>,
    model: Option<Model>,
    /// The personal head, once tuned (or read back from its file, [`head_path`]).
    head: Option<Vec<f32>>,
}

impl Participant {
    /// Starts the worker on the current tokio runtime; `seed` is the node's signing key (it
    /// signs updates and authenticates the QUIC connection).
    pub fn start(cfg: Config, net: Handle, seed: [u8; 32]) -> Result<Participant, Error> {
        let key = SigningKey::from_bytes(&seed);
        let me = key.verifying_key().to_bytes();
        std::fs::create_dir_all(&cfg.dir).map_err(|e| Error::Io { path: cfg.dir.clone(), source: e })?;
        let shared = Arc::new(Shared {
            arch: cfg.arch,
            me,
            net,
            last: Mutex::new(BTreeMap::new()),
            closed: Mutex::new(None),
            receipts: Mutex::new(BTreeMap::new()),
            frames: cfg.dir.join("updates"),
            directory: Mutex::new(BTreeSet::new()),
            sent: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            log: cfg.dir.join("participant.jsonl"),
            work: cfg.dir.join("work"),
            kept_out: cfg.kept_out.clone(),
            region: cfg.region.clone(),
            experience: cfg.experience.clone(),
            judged: Mutex::new(BTreeSet::new()),
        });
        let store = Store::open(&cfg.dir.join("checkpoints"))?;
        let head = read_head(&head_path(&cfg.dir, cfg.arch), cfg.arch.range_of(HEAD).len());
        let trainer = Trainer { cfg, key, encoders: BTreeMap::new(), model: None, head };
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(worker(shared.clone(), store, trainer, rx, seed));
        tokio::spawn(watch_directory(shared.clone()));
        Ok(Participant { shared, jobs: tx })
    }

    /// The answer to [`Message::Work`]: this client's work of `round`, when it kept it.
    pub fn work(&self, round: u64) -> Vec<u8> {
        std::fs::read(self.shared.work.join(format!("{round:020}.bin"))).unwrap_or_else(|_| msg::Work::none())
    }

    /// Answers given so far, by reason.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.shared.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, a: Ack) -> Vec<u8> {
        if let Ok(mut c) = self.shared.counts.lock() {
            *c.entry(a.reason()).or_default() += 1;
        }
        match a {
            Ack::Taken | Ack::NotSelected => {}
            Ack::Stale | Ack::Busy | Ack::WrongModel => tracing::debug!(answer = a.reason(), "round message declined"),
            _ => tracing::warn!(answer = a.reason(), "round message refused"),
        }
        vec![a as u8]
    }

    /// Whether `peer` is listed under `agg/<model>`, looking it up once more if not.
    async fn listed(&self, peer: PeerId) -> bool {
        if self.shared.directory.lock().is_ok_and(|d| d.contains(&peer)) {
            return true;
        }
        refresh_directory(&self.shared).await;
        self.shared.directory.lock().is_ok_and(|d| d.contains(&peer))
    }

    /// Answers an open or a close (fetches are served by whoever holds checkpoints).
    pub async fn answer(&self, m: Message, from: &Inbound) -> Vec<u8> {
        match m {
            Message::Open(s) => self.on_open(s, from).await,
            Message::Close(s) => self.on_close(s, from),
            Message::Receipt(s) => self.on_receipt(s, from),
            Message::Fetch(_) => msg::encode_checkpoint(None),
            Message::Status(_)
            | Message::Evidence(_)
            | Message::Govern(_)
            | Message::Challenge(_)
            | Message::History(_)
            | Message::Work(_)
            | Message::Pool(_) => self.count(Ack::NotAggregator),
        }
    }

    /// The checks an aggregator's signed message must pass: the signature, by the key the
    /// sender announced, and the aggregator role.
    fn check_sender<T: vain_core::signed::Body>(&self, s: &Signed<T>, from: &Inbound) -> Result<Announcement, Ack> {
        let Some(a) = &from.announcement else { return Err(Ack::NotAggregator) };
        if s.verify().is_err() || s.signer != a.signing_key {
            return Err(Ack::BadSignature);
        }
        if a.roles & roles::AGGREGATOR == 0 {
            return Err(Ack::NotAggregator);
        }
        Ok(a.clone())
    }

    async fn on_open(&self, s: Signed<Open>, from: &Inbound) -> Vec<u8> {
        let a = match self.check_sender(&s, from) {
            Ok(a) => a,
            Err(ack) => return self.count(ack),
        };
        // Whatever it signs, the network has stopped taking this aggregator's reports.
        if self.shared.kept_out.as_ref().is_some_and(|f| f(&s.signer)) {
            return self.count(Ack::Ineligible);
        }
        let open = s.body;
        if open.model_id != self.shared.arch.id() || open.layout != self.shared.arch.layout_digest() {
            return self.count(Ack::WrongModel);
        }
        // The model's history as the closes this client saw tell it: a round already closed is
        // stale, and the next one must start from the last close's checkpoint.
        // (Older rounds are the per-aggregator check's below: a standby that takes over from
        // an older round than this client saw closed is followed, not refused.)
        match self.shared.closed.lock().ok().and_then(|c| *c) {
            Some((r, _, _)) if open.round == r => return self.count(Ack::Stale),
            Some((r, checkpoint, _)) if Some(open.round) == r.checked_add(1) && open.base != checkpoint => {
                return self.count(Ack::WrongBase);
            }
            _ => {}
        }
        let prev = self.shared.last.lock().ok().and_then(|l| l.get(&s.signer).copied());
        let resumed = match prev {
            Some((r, _)) if open.round < r => return self.count(Ack::Stale),
            Some((r, b)) if open.round == r && open.base != b => return self.count(Ack::Stale),
            Some((r, _)) => open.round == r,
            None => false,
        };
        if resumed && self.shared.receipts.lock().is_ok_and(|m| m.contains_key(&(s.signer, open.round))) {
            // The aggregator restarted and already holds this client's update.
            return self.count(Ack::Taken);
        }
        if open.participants.binary_search(&self.shared.me).is_err() {
            return self.count(Ack::NotSelected);
        }
        if !self.listed(from.peer).await {
            return self.count(Ack::NotAggregator);
        }
        let (round, base) = (open.round, open.base);
        if self.jobs.try_send(Job { open, from: from.peer, aggregator: a }).is_err() {
            return self.count(Ack::Busy);
        }
        if let Ok(mut l) = self.shared.last.lock() {
            l.insert(s.signer, (round, base));
        }
        self.count(Ack::Taken)
    }

    fn on_receipt(&self, s: Signed<Receipt>, from: &Inbound) -> Vec<u8> {
        if let Err(ack) = self.check_sender(&s, from) {
            return self.count(ack);
        }
        let r = s.body;
        // Only a listed aggregator's receipt for a round this client built an update in counts
        // (and is logged): anything else could fill the log.
        let listed = self.shared.directory.lock().is_ok_and(|d| d.contains(&from.peer));
        let built = std::fs::read_dir(&self.shared.frames).is_ok_and(|rd| {
            let prefix = format!("{:020}-", r.round);
            rd.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        });
        if r.sender != self.shared.me || !listed || !built {
            return self.count(Ack::NotSelected);
        }
        if let Ok(mut m) = self.shared.receipts.lock() {
            m.insert((s.signer, r.round), r.digest);
            // Bounded: receipts of the oldest rounds are of no further use.
            while m.len() > 64 {
                let Some(oldest) = m.keys().min_by_key(|(_, round)| *round).copied() else { break };
                m.remove(&oldest);
            }
        }
        let row = Row {
            round: r.round,
            aggregator: short(&s.signer),
            status: "acknowledged".into(),
            digest: hex::encode(r.digest),
            examples: 0,
            frame_bytes: 0,
            base_from: String::new(),
            at_ms: unix_ms(),
            local_accuracy: None,
            personal_accuracy: None,
        };
        log(&self.shared, &row);
        self.count(Ack::Taken)
    }

    fn on_close(&self, s: Signed<Close>, from: &Inbound) -> Vec<u8> {
        if let Err(ack) = self.check_sender(&s, from) {
            return self.count(ack);
        }
        if s.body.model_id != self.shared.arch.id() {
            return self.count(Ack::WrongModel);
        }
        // Against the history this client saw: another close of the last closed round, or one
        // of the next round not built on its checkpoint, is answered as such. A close becomes
        // that history only when it closes a round this client took from its signer (so no
        // node can make the client refuse later opens by sending it a close of its own).
        let verdict = {
            let c = &s.body;
            let Ok(mut closed) = self.shared.closed.lock() else { return self.count(Ack::Busy) };
            let verdict = match *closed {
                Some((r, checkpoint, root)) if c.round == r && (c.checkpoint, c.root) != (checkpoint, root) => {
                    Some(Ack::Stale)
                }
                Some((r, checkpoint, _)) if Some(c.round) == r.checked_add(1) && c.base != checkpoint => {
                    Some(Ack::WrongBase)
                }
                _ => None,
            };
            let took = self.shared.last.lock().is_ok_and(|l| l.get(&s.signer) == Some(&(c.round, c.base)));
            if verdict.is_none() && took && closed.is_none_or(|(r, _, _)| c.round > r) {
                *closed = Some((c.round, c.checkpoint, c.root));
            }
            verdict
        };
        let answer = verdict.unwrap_or(Ack::Taken);
        let Some((digest, base)) = self.shared.sent.lock().ok().and_then(|m| m.get(&s.body.round).copied()) else {
            // Not a round this client sent in: nothing more to check.
            return self.count(answer);
        };
        let close = &s.body;
        if close.base != base {
            return self.count(Ack::WrongBase);
        }
        // Whatever the history says, a signed close that holds this client's update is checked
        // and its work kept: an auditor may ask for it.
        // Our update must be in the published root, or listed as refused.
        let leaves = close.leaves();
        let mine = merkle::leaf(&self.shared.me, &digest);
        let included = match leaves.iter().position(|l| *l == mine) {
            Some(i) => merkle::proof(&leaves, i).is_some_and(|p| merkle::verify(&close.root, mine, &p)),
            None => false,
        };
        let refused = close.rejected.iter().find(|(k, _)| *k == self.shared.me);
        self.experienced(&s, included, refused.is_none());
        let status = if included {
            if let Err(e) = keep_work(&self.shared, &s, base) {
                tracing::warn!(round = close.round, error = %e, "keeping the round's work for auditors");
            }
            "included".to_string()
        } else {
            match refused {
                Some((_, why)) => format!("rejected: {why}"),
                None => "not included".into(),
            }
        };
        log(
            &self.shared,
            &Row {
                round: close.round,
                aggregator: short(&s.signer),
                status,
                digest: hex::encode(digest),
                examples: 0,
                frame_bytes: 0,
                base_from: String::new(),
                at_ms: unix_ms(),
                local_accuracy: None,
                personal_accuracy: None,
            },
        );
        self.count(answer)
    }
}

impl Participant {
    /// Counts a close of a round this client sent in towards its trust in the close's signer,
    /// once per round and only from the aggregator the update went to (it acknowledged the
    /// update, or this client took the round's open from it): holding the update is
    /// satisfactory; leaving out, without a reason, an update it acknowledged is not. A refusal
    /// with a reason, or an update that was never acknowledged (it may have come late), is
    /// neither.
    fn experienced(&self, s: &Signed<Close>, included: bool, unexplained: bool) {
        let Some(e) = &self.shared.experience else { return };
        let key = (s.signer, s.body.round);
        let acknowledged = self.shared.receipts.lock().is_ok_and(|m| m.contains_key(&key));
        let took = self.shared.last.lock().is_ok_and(|l| l.get(&s.signer) == Some(&(s.body.round, s.body.base)));
        if !(acknowledged || took) {
            return;
        }
        let Ok(mut judged) = self.shared.judged.lock() else { return };
        if !judged.insert(s.body.round) {
            return;
        }
        // The oldest rounds go first.
        while judged.len() > 64 {
            judged.pop_first();
        }
        drop(judged);
        if included {
            e.good(s.signer, 1.0);
        } else if unexplained && acknowledged {
            e.bad(s.signer, 1.0);
        }
    }
}

fn log(shared: &Shared, row: &Row) {
    if let (Ok(line), Ok(mut f)) =
        (serde_json::to_string(row), std::fs::OpenOptions::new().create(true).append(true).open(&shared.log))
    {
        let _ = writeln!(f, "{line}");
    }
}

async fn refresh_directory(shared: &Shared) {
    let key = Key::aggregators(shared.arch.id());
    if let Ok(Ok(Ok(Found::Providers(v)))) =
        tokio::time::timeout(Duration::from_secs(5), shared.net.lookup(key)).await.map(|r| r.map(|(f, _)| f))
        && let Ok(mut d) = shared.directory.lock()
    {
        d.extend(v.iter().filter_map(|p| p.parse::<PeerId>().ok()));
    }
}

/// Keeps the aggregator directory fresh, so an open does not wait for a lookup.
/// Every 3 s at first, backing off to every 60 s: an open from an aggregator not yet listed
/// triggers a lookup of its own, so the background refresh need not load the DHT.
async fn watch_directory(shared: Arc<Shared>) {
    let mut wait = Duration::from_secs(3);
    loop {
        refresh_directory(&shared).await;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// Holders in this node's region asked at most.
const NEARBY: usize = 3;
/// The most the holders of this node's region may take in all before the aggregator is asked
/// (less when the round's deadline is near: a quarter of the time left).
const NEARBY_BUDGET: Duration = Duration::from_millis(2500);
/// A nearby holder may not have the checkpoint yet when the open arrives (it fetches it when
/// the close reaches it): one that said so is asked once more after this pause.
const NEARBY_RETRY: Duration = Duration::from_millis(300);
/// Score a holder loses for bytes that do not hash to the digest asked for.
const BAD_CHECKPOINT_POINTS: i32 = 5;

/// The base checkpoint: from the local cache, a holder in this node's region when the
/// aggregator announces another, the aggregator, or any holder listed under `ckpt/<digest>` —
/// whichever gives bytes that hash to the digest. `row.base_from` says which.
async fn fetch(shared: &Shared, store: &Store, job: &Job, row: &mut Row) -> Result<Vec<f32>, Error> {
    let (digest, from) = (&job.open.base, job.from);
    if let Some(b) = store.get(digest) {
        row.base_from = "cache".into();
        return msg::decode_checkpoint(&msg::encode_checkpoint(Some(&b)), digest);
    }
    let ask = |peer: PeerId| {
        let net = shared.net.clone();
        async move {
            let answer = net.request(peer, Message::Fetch(*digest).encode()).await?;
            let got = msg::decode_checkpoint(&answer, digest);
            if let Err(Error::CheckpointDigest | Error::CheckpointLength(_)) = &got {
                let _ = net.junk(peer, BAD_CHECKPOINT_POINTS, "bad checkpoint").await;
            }
            got
        }
    };
    // The model crosses regions once, to the standby aggregator or validator there, rather
    // than once per client; bounded, so a slow or hostile holder costs the round little.
    let nearby = nearby_holders(shared, &job.aggregator).await;
    if !nearby.is_empty() {
        let left = Duration::from_millis(job.open.deadline_ms.saturating_sub(unix_ms()));
        let budget = NEARBY_BUDGET.min(left / 4);
        let near = async {
            let mut behind = Vec::new();
            for (peer, key) in &nearby {
                match ask(*peer).await {
                    Ok(flat) => return Some((flat, *key)),
                    Err(Error::CheckpointMissing) => behind.push((*peer, *key)),
                    Err(_) => {}
                }
            }
            if behind.is_empty() {
                return None;
            }
            tokio::time::sleep(NEARBY_RETRY).await;
            for (peer, key) in behind {
                if let Ok(flat) = ask(peer).await {
                    return Some((flat, key));
                }
            }
            None
        };
        if let Ok(Some((flat, key))) = tokio::time::timeout(budget, near).await {
            store.put(&flat)?;
            row.base_from = format!("nearby {}", short(&key));
            return Ok(flat);
        }
    }
    if let Ok(flat) = ask(from).await {
        store.put(&flat)?;
        row.base_from = "aggregator".into();
        return Ok(flat);
    }
    let mut holders = Vec::new();
    if let Ok((Ok(Found::Providers(v)), _)) = shared.net.lookup(Key::Checkpoint(*digest)).await {
        holders.extend(
            v.iter()
                .filter_map(|p| p.parse::<PeerId>().ok())
                .filter(|p| *p != from && !nearby.iter().any(|(n, _)| n == p)),
        );
    }
    for p in holders {
        if let Ok(flat) = ask(p).await {
            store.put(&flat)?;
            row.base_from = format!("holder {p}");
            return Ok(flat);
        }
    }
    Err(Error::CheckpointUnavailable(*digest))
}

/// Connected aggregators and validators (the roles that hold checkpoints) announcing this
/// node's region, when the round's aggregator announces another: aggregators first (a standby
/// fetches each checkpoint as soon as the close reaches it), then by key; at most [`NEARBY`].
async fn nearby_holders(shared: &Shared, aggregator: &Announcement) -> Vec<(PeerId, NodeId)> {
    // An aggregator that names no region may be anywhere: it is asked directly.
    if shared.region.is_empty() || aggregator.region.is_empty() || aggregator.region == shared.region {
        return Vec::new();
    }
    let Ok(directory) = shared.net.directory().await else { return Vec::new() };
    let mut v: Vec<(bool, NodeId, PeerId)> = directory
        .into_iter()
        .filter(|e| e.connected && e.announcement.region == shared.region)
        .filter(|e| e.announcement.roles & (roles::AGGREGATOR | roles::VALIDATOR) != 0)
        .filter(|e| e.announcement.signing_key != aggregator.signing_key)
        .filter(|e| !shared.kept_out.as_ref().is_some_and(|f| f(&e.announcement.signing_key)))
        .map(|e| (e.announcement.roles & roles::AGGREGATOR == 0, e.announcement.signing_key, e.peer_id))
        .collect();
    v.sort();
    v.into_iter().take(NEARBY).map(|(_, k, p)| (p, k)).collect()
}

async fn worker(shared: Arc<Shared>, store: Store, trainer: Trainer, mut jobs: mpsc::Receiver<Job>, seed: [u8; 32]) {
    let mut trainer = Some(trainer);
    let mut clients: BTreeMap<(std::net::SocketAddr, NodeId), Client> = BTreeMap::new();
    while let Some(job) = jobs.recv().await {
        let Some(t) = trainer.take() else { return };
        let span =
            tracing::info_span!("round", round = job.open.round, aggregator = %short(&job.aggregator.signing_key));
        let (t, row) =
            tracing::Instrument::instrument(run_job(&shared, &store, t, &job, &mut clients, seed), span).await;
        if row.status.starts_with("failed") {
            tracing::warn!(round = row.round, status = %row.status, "update not delivered");
        } else {
            tracing::info!(round = row.round, status = %row.status, examples = row.examples, bytes = row.frame_bytes, "update");
        }
        log(&shared, &row);
        trainer = Some(t);
    }
}

async fn run_job(
    shared: &Shared,
    store: &Store,
    trainer: Trainer,
    job: &Job,
    clients: &mut BTreeMap<(std::net::SocketAddr, NodeId), Client>,
    seed: [u8; 32],
) -> (Trainer, Row) {
    let mut row = Row {
        round: job.open.round,
        aggregator: short(&job.aggregator.signing_key),
        status: String::new(),
        digest: String::new(),
        examples: 0,
        frame_bytes: 0,
        base_from: String::new(),
        at_ms: 0,
        local_accuracy: None,
        personal_accuracy: None,
    };
    let agg_key = job.aggregator.signing_key;
    let key = (job.open.round, job.open.base);
    let cached = saved_frame(&shared.frames, key);
    let (trainer, frame) = match cached {
        Some(frame) => {
            row.status = "resent".into();
            (trainer, frame)
        }
        None => {
            let (trainer, frame) = match build(shared, store, trainer, job, &mut row).await {
                (t, Some(f)) => (t, f),
                (t, None) => return (t, row),
            };
            if let Err(e) = save_frame(&shared.frames, key, &frame) {
                row.status = format!("failed: {e}");
                return (trainer, row);
            }
            row.status = "sent".into();
            (trainer, frame)
        }
    };
    row.frame_bytes = frame.len();
    let digest = header_digest(&frame);
    row.digest = digest.map(hex::encode).unwrap_or_default();
    if shared.receipts.lock().is_ok_and(|m| m.contains_key(&(agg_key, job.open.round))) {
        row.status = "acknowledged before".into();
        return (trainer, row);
    }
    if unix_ms() > job.open.deadline_ms {
        row.status = "late".into();
        return (trainer, row);
    }
    let Some(addr) = job.aggregator.ingest.iter().find_map(|e| e.parse::<std::net::SocketAddr>().ok()) else {
        row.status = "failed: the aggregator announces no ingest endpoint".into();
        return (trainer, row);
    };
    let client = match clients.entry((addr, agg_key)) {
        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::btree_map::Entry::Vacant(v) => {
            let mut cfg = ClientConfig::new(addr, agg_key, seed);
            // A dead aggregator is noticed within a round, not after a minute of retries.
            cfg.attempts = 3;
            cfg.connect_timeout = Duration::from_secs(3);
            match Client::new(cfg) {
                Ok(c) => v.insert(c),
                Err(e) => {
                    row.status = format!("failed: {e}");
                    return (trainer, row);
                }
            }
        }
    };
    // The send ends with the round's deadline, or as soon as the aggregator's control-plane
    // connection is gone (a dead aggregator's QUIC connection would only time out when idle):
    // the update then goes to whoever takes the round over.
    let deadline = Duration::from_millis(job.open.deadline_ms.saturating_sub(unix_ms()));
    let sent = tokio::select! {
        r = client.send(&frame) => r.map_err(|e| e.to_string()),
        _ = tokio::time::sleep(deadline) => Err("the round's deadline passed".to_string()),
        _ = gone(&shared.net, job.from) => Err("the aggregator is gone".to_string()),
    };
    match sent {
        Ok(_) => {
            if let (Some(d), Ok(mut sent)) = (digest, shared.sent.lock()) {
                sent.insert(job.open.round, (d, job.open.base));
                while sent.len() > 64 {
                    sent.pop_first();
                }
            }
        }
        Err(e) => {
            clients.remove(&(addr, agg_key));
            row.status = format!("failed: {e}");
        }
    }
    row.at_ms = unix_ms();
    (trainer, row)
}

fn frame_path(dir: &std::path::Path, (round, base): (u64, Digest)) -> PathBuf {
    dir.join(format!("{round:020}-{}.frame", hex::encode(base)))
}

/// The update saved for (round, base), if any and whole.
fn saved_frame(dir: &std::path::Path, key: (u64, Digest)) -> Option<Vec<u8>> {
    let b = std::fs::read(frame_path(dir, key)).ok()?;
    // A frame that does not split is a torn write: build it again.
    vain_schema::frame::split(&b, &vain_schema::Limits::default()).ok()?;
    Some(b)
}

/// Saves an update before it is sent (temporary file, fsync, rename), keeping the last four.
fn save_frame(dir: &std::path::Path, key: (u64, Digest), frame: &[u8]) -> Result<(), Error> {
    let io = |e| Error::Io { path: dir.to_path_buf(), source: e };
    vain_core::storage::Storage::create_dir_all(&vain_core::storage::Disk, dir, 0o755).map_err(io)?;
    let path = frame_path(dir, key);
    vain_core::storage::replace(&vain_core::storage::Disk, &path, frame, 0o644).map_err(io)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "frame"))
        .collect();
    // Names start with the zero-padded round, so they sort by round.
    names.sort();
    for old in names.iter().take(names.len().saturating_sub(4)) {
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}

/// Resolves once `peer` is no longer connected (checked every 200 ms).
async fn gone(net: &Handle, peer: PeerId) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match net.directory().await {
            Ok(d) if d.iter().any(|e| e.peer_id == peer && e.connected) => {}
            _ => return,
        }
    }
}

/// Fetches the base and trains; `None` (with the row saying why) when either failed.
async fn build(
    shared: &Shared,
    store: &Store,
    trainer: Trainer,
    job: &Job,
    row: &mut Row,
) -> (Trainer, Option<Vec<u8>>) {
    let base = match fetch(shared, store, job, row).await {
        Ok(b) => b,
        Err(e) => {
            row.status = format!("failed: {e}");
            return (trainer, None);
        }
    };
    let open = job.open.clone();
    let (trainer, built) = match tokio::task::spawn_blocking(move || {
        let mut t = trainer;
        let r = t.build(&open, &base);
        (t, r)
    })
    .await
    {
        Ok(x) => x,
        Err(_) => {
            // The training thread panicked: its state is gone with it; a fresh start is needed.
            std::process::abort();
        }
    };
    match built {
        Ok((frame, examples, personal)) => {
            row.examples = examples;
            if let Some((global, mine)) = personal {
                row.local_accuracy = Some(global);
                row.personal_accuracy = Some(mine);
            }
            (trainer, Some(frame))
        }
        Err(e) => {
            row.status = format!("failed: {e}");
            (trainer, None)
        }
    }
}

/// BLAKE3 of a frame's header (what the aggregator lists as the update's digest).
fn header_digest(frame: &[u8]) -> Option<Digest> {
    let (header, _) = vain_schema::frame::split(frame, &vain_schema::Limits::default()).ok()?;
    Some(*blake3::hash(header).as_bytes())
}

impl Trainer {
    /// Trains from `base` and builds the signed frame; returns it, the examples seen, and the
    /// global and personalised accuracy on the held-out items when personalising.
    #[allow(clippy::type_complexity)]
    fn build(&mut self, open: &Open, base: &[f32]) -> Result<(Vec<u8>, usize, Option<(f64, f64)>), Error> {
        let arch = self.cfg.arch;
        if base.len() != arch.dim() {
            return Err(Error::CheckpointSize { got: base.len(), model: arch.id(), expected: arch.dim() });
        }
        let model = match self.model.take() {
            Some(m) => m,
            None => Model::from_flat(arch, base, &Device::Cpu, DType::F32)?,
        };
        let r = self.train_and_encode(&model, open, base).map(|(frame, n)| {
            // The update is built; personalising cannot spoil it, and a failure only costs the
            // round's figures.
            let personal = self.personalise(&model, base, open.round).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "personalising");
                None
            });
            (frame, n, personal)
        });
        self.model = Some(model);
        r
    }

    /// Tunes the personal head on the round's base (the shared body frozen) and measures the
    /// base and the personalised model on the held-out items; keeps the head on disk.
    fn personalise(&mut self, model: &Model, base: &[f32], round: u64) -> Result<Option<(f64, f64)>, Error> {
        let c = &self.cfg;
        if c.personal_steps == 0 || c.held.is_empty() {
            return Ok(None);
        }
        let (same_label, same_pixels) = (&train::same_label, &train::same_pixels);
        model.set_flat(base)?;
        let global = train::evaluate(model, &c.data, &c.held, same_label, same_pixels)?.0;
        let head = c.arch.range_of(HEAD);
        let mut flat = base.to_vec();
        if let Some(h) = &self.head {
            flat[head.clone()].copy_from_slice(h);
        }
        model.set_flat(&flat)?;
        let cfg = train::Config { steps: c.personal_steps, ..c.train };
        // Its own stream, apart from the update's (which auditors re-execute).
        let mut rng = vain_learn::seeded(round_seed(c.seed ^ 0x7065_7273_6f6e_616c, round));
        let n = model.vars().len();
        train::train_vars(model, &c.data, &c.items, &cfg, round, &mut rng, &[n - 2, n - 1])?;
        let tuned = model.flat()?[head].to_vec();
        let mine = train::evaluate(model, &c.data, &c.held, same_label, same_pixels)?.0;
        write_head(&head_path(&c.dir, c.arch), &tuned)?;
        self.head = Some(tuned);
        Ok(Some((global, mine)))
    }

    fn train_and_encode(&mut self, model: &Model, open: &Open, base: &[f32]) -> Result<(Vec<u8>, usize), Error> {
        let c = &self.cfg;
        // The round's randomness comes from (seed, round) alone, so an auditor given the seed
        // re-executes the training.
        let seed = round_seed(c.seed, open.round);
        let mut rng = vain_learn::seeded(seed);
        let (mut u, n) =
            client::local_update(model, base, &c.data, &c.items, &c.train, open.round, &mut rng, c.attack)?;
        if let Some(a) = c.attack {
            // On a network an attacker sees no one else's update: ALIE and IPM estimate the
            // benign mean and spread from their own data, and assume a quarter of the round
            // colludes.
            let (mean, std) = if matches!(a, Attack::Alie | Attack::Ipm(_)) {
                client::estimate_benign(model, base, &c.data, &c.items, &c.train, open.round, &mut rng, 4)?
            } else {
                (Vec::new(), Vec::new())
            };
            let n_part = open.participants.len().max(1);
            let know = Knowledge {
                mean: &mean,
                std: &std,
                z_alie: attack::alie_z(n_part, (n_part / 4).max(1)),
                last_step: &[],
                boost: n_part as f32 / (n_part / 4).max(1) as f32,
            };
            client::poison(a, &mut u, &know, &mut rng)?;
        }
        let codec: Codec = open.codec.parse().map_err(|_| Error::UnknownCodec(open.codec.clone()))?;
        let zstd = (open.zstd > 0).then_some(i32::from(open.zstd));
        let encoder = self.encoders.entry(format!("{codec}/{zstd:?}")).or_insert_with(|| Encoder::new(codec, zstd));
        let layout = self.cfg.arch.layout();
        let tensors = tensors(&layout, &u);
        let round = UpdateRound {
            model_id: open.model_id.clone(),
            round: open.round,
            base_model: open.base,
            num_examples: n.max(1) as u64,
            timestamp_ms: unix_ms(),
        };
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(Error::Random)?;
        let key = &self.key;
        let built = encoder.build_with(
            key.verifying_key().to_bytes(),
            &mut |m| Ok(key.sign(m).to_bytes()),
            &round,
            nonce,
            &tensors,
        )?;
        // What it did, signed, for auditors (an attacker signs the honest recipe: that is what
        // an audit finds out).
        if let Some(update) = header_digest(&built.frame) {
            let m = crate::auditor::manifest(
                key,
                self.cfg.arch,
                open.round,
                open.base,
                update,
                &self.cfg.data,
                &self.cfg.items,
                &self.cfg.train,
                seed,
            );
            let mut bytes = Vec::new();
            vain_core::codec::encode_signed(&m, &mut bytes);
            let dir = self.cfg.dir.join("work");
            if let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(format!("{:020}.manifest", open.round)), bytes))
            {
                tracing::warn!(error = %e, "keeping the training manifest");
            }
        }
        Ok((built.frame, n))
    }
}

/// The personal head kept at `path`, when it holds `len` values (a torn write is ignored: the
/// head starts again from the global one).
fn read_head(path: &std::path::Path, len: usize) -> Option<Vec<f32>> {
    let b = std::fs::read(path).ok()?;
    (b.len() == 4 * len).then(|| b.chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect())
}

/// Keeps the personal head at `path`: written beside, synced, renamed over the last one, the
/// directory synced.
fn write_head(path: &std::path::Path, head: &[f32]) -> Result<(), Error> {
    let tmp = path.with_extension("f32.tmp");
    let bytes: Vec<u8> = head.iter().flat_map(|v| v.to_le_bytes()).collect();
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    match path.parent() {
        Some(dir) => std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io),
        None => Ok(()),
    }
}

/// A flat update cut into the model's tensors, in layout order.
pub(crate) fn tensors<'a>(layout: &'a [vain_ingest::TensorLayout], u: &'a [f32]) -> Vec<Tensor<'a>> {
    let mut out = Vec::with_capacity(layout.len());
    let mut at = 0;
    for l in layout {
        let k = l.shape.iter().product::<u64>() as usize;
        out.push(Tensor { name: &l.name, shape: &l.shape, values: &u[at..(at + k).min(u.len())] });
        at = (at + k).min(u.len());
    }
    out
}

/// The seed of a round's training randomness.
pub fn round_seed(seed: u64, round: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"vain/round-seed/v1");
    h.update(&seed.to_le_bytes());
    h.update(&round.to_le_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or_default())
}

/// Files the work of a round once a close accepted its update: manifest, frame and close in
/// the answer to [`Message::Work`], keeping the last [`WORK_KEPT`] rounds.
fn keep_work(shared: &Shared, close: &Signed<Close>, base: Digest) -> Result<(), Error> {
    let dir = &shared.work;
    let io = |e| Error::Io { path: dir.to_path_buf(), source: e };
    let round = close.body.round;
    let bytes = std::fs::read(dir.join(format!("{round:020}.manifest"))).map_err(io)?;
    let manifest = vain_core::codec::decode_signed(&mut vain_core::codec::Reader::new(&bytes))?;
    let frame = saved_frame(&shared.frames, (round, base)).ok_or(Error::CheckpointMissing)?;
    let work = msg::Work { manifest, frame, close: close.clone() };
    let path = dir.join(format!("{round:020}.bin"));
    vain_core::storage::replace(&vain_core::storage::Disk, &path, &work.encode(), 0o644).map_err(io)?;
    // Rounds only: a temporary file (`.…tmp`) of a write in flight is not one.
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    names.sort();
    let rounds: BTreeSet<String> =
        names.iter().filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect();
    let old: BTreeSet<&String> = rounds.iter().take(rounds.len().saturating_sub(WORK_KEPT)).collect();
    for p in names.iter().filter(|p| p.file_stem().is_some_and(|s| old.contains(&s.to_string_lossy().into_owned()))) {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_personal_head_is_kept_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("dir");
        let path = head_path(dir.path(), Arch::MnistMlp);
        assert_ne!(path, head_path(dir.path(), Arch::MnistCnn), "one file per model");
        assert_eq!(read_head(&path, 3), None);
        write_head(&path, &[1.0, -2.5, 3.25]).expect("write");
        assert_eq!(read_head(&path, 3), Some(vec![1.0, -2.5, 3.25]));
        // A head of another size, or a torn one, starts again from the global head.
        assert_eq!(read_head(&path, 4), None);
        std::fs::write(&path, [0u8; 7]).expect("write");
        assert_eq!(read_head(&path, 2), None);
    }
}
