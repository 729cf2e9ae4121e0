//! `vain node`: the composition root. One process runs the control plane always, and by role
//! the aggregator's QUIC ingest service with its round coordinator, and the client's
//! participant training on the node's own data.
//!
//! `node.toml` is the control plane's file (vain_net::Config) plus two sections read here:
//! `[aggregate]` for the aggregator role and `[train]` for the client role (docs/architecture.md,
//! "The node").

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use vain_kernels::aggregate::{Rule, parse_pre};
use vain_kernels::encode::Codec;
use vain_learn::attack::Attack;
use vain_learn::data::Mnist;
use vain_learn::federation;
use vain_learn::model::Arch;
use vain_learn::partition::Scheme;
use vain_learn::train;
use vain_net::node::{self, Inbound, Transport};
use vain_net::{Config, control};
use vain_round::challenger::{Challenger, Prover};
use vain_round::coordinator::{self, Coordinator};
use vain_round::msg::{self, Ack, Message};
use vain_round::participant::{self, Participant};
use vain_round::store::Store;
use vain_round::validator::Validator;
use vain_schema::node::roles;
use vain_transport::quic;
use vain_transport::tls::{self, Policy};
use vain_trust::{Live, Offer};

use crate::aggregate::{BackendChoice, open_backend};

/// `[aggregate]`: what an aggregator runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateSection {
    /// QUIC ingest address (`ip:port`; port 0 picks one).
    pub listen: String,
    /// Ingest shards (threads).
    pub shards: usize,
    /// QUIC connections accepted from one IP address (per shard); clients behind one NAT, or
    /// on one loopback, share an address.
    pub connections_per_address: usize,
    /// New QUIC connection attempts each shard takes per second from one IP address (twice as
    /// many in a burst); a flood beyond it is dropped unread, and so are honest clients sharing
    /// that address. 0 (the default): no budget.
    pub attempts_per_address: u32,
    /// cpu | cuda | auto.
    pub backend: String,
    /// Aggregation rule (as `vain aggregate --rule`).
    pub rule: String,
    /// Pre-aggregation steps (as `--pre`), empty for none.
    pub pre: String,
    /// Per-update L2 clip, 0 for none.
    pub clip: f32,
    /// DP noise multiplier, 0 for none.
    pub noise_multiplier: f32,
    /// Wire encoding clients use (as `--codec`).
    pub codec: String,
    /// zstd level clients use, 0 for none.
    pub zstd: u8,
    /// Rounds to run, 0 until stopped.
    pub rounds: u64,
    /// Seconds from a round's open to its deadline.
    pub round_time: f64,
    /// Live clients to wait for before the first round.
    pub min_clients: usize,
    /// Seconds to wait for them.
    pub wait_clients: f64,
    /// Fewer accepted updates by the deadline: the round keeps its base.
    pub min_updates: usize,
    /// Participants per round, 0 for every eligible client.
    pub per_round: usize,
    /// Reputation sets weights and exclusions.
    pub reputation: bool,
    /// Server step η.
    pub server_lr: f32,
    /// Seed of the initial model and the evaluation split.
    pub seed: u64,
    /// For demonstrations of the trust layer only: when this aggregator closes this round
    /// (0: never), it signs two different reports for its ledger epoch and sends one to half
    /// its peers and the other to the rest — the equivocation every node must convict.
    pub equivocate_round: u64,
}

impl Default for AggregateSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            shards: 1,
            connections_per_address: 16,
            attempts_per_address: 0,
            backend: "auto".into(),
            rule: "fedavg".into(),
            pre: String::new(),
            clip: 0.0,
            noise_multiplier: 0.0,
            codec: "f32".into(),
            zstd: 0,
            rounds: 0,
            round_time: 60.0,
            min_clients: 1,
            wait_clients: 60.0,
            min_updates: 1,
            per_round: 0,
            reputation: true,
            server_lr: 1.0,
            seed: 1,
            equivocate_round: 0,
        }
    }
}

/// `[train]`: what a client trains on.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Directory of MNIST IDX files; empty for the embedded digits.
    pub data: String,
    /// This client's part of the data: `index/of`.
    pub shard: String,
    /// iid | dirichlet:α.
    pub partition: String,
    /// Seed of the split (shared by the clients of one federation) and of training.
    pub seed: u64,
    /// Optimiser steps per round.
    pub steps: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// sgd:μ | adam.
    pub optim: String,
    /// For demonstrations and robustness tests only: poison this node's updates
    /// (as `vain train simulate --attack`).
    pub attack: String,
    /// Steps fine-tuning this client's personal head each round (0: none); it then reports
    /// the global and its personalised model's accuracy on its held-out items.
    pub personal_steps: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            data: String::new(),
            shard: "0/1".into(),
            partition: "iid".into(),
            seed: 1,
            steps: 10,
            batch: 32,
            lr: 0.05,
            optim: "sgd:0.9".into(),
            attack: String::new(),
            personal_steps: 0,
        }
    }
}

/// `[ledger]`: the network's genesis for every node's ledger (equal on every node, or their
/// state digests differ).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSection {
    /// Pre-trusted reporters: signing keys (hex) whose evidence every node takes from the start
    /// (typically the network's first aggregators).
    pub pretrusted: Vec<String>,
    /// The lowest tier that may propose and vote.
    pub vote_from: u8,
    /// The fraction of eligible voting weight that must vote for a proposal to count.
    pub quorum: f64,
    /// Signing keys (hex) of nodes the operator vouches for out of band: they enter this
    /// node's local-trust vector beside the partners it worked with (it counts only once some
    /// trusted node vouches for this node).
    pub vouch: Vec<String>,
}

impl Default for LedgerSection {
    fn default() -> Self {
        let d = vain_trust::Config::default();
        Self { pretrusted: Vec::new(), vote_from: d.vote_from, quorum: d.quorum, vouch: Vec::new() }
    }
}

/// `[challenge]`: how a validator challenges the nodes' claimed capacity and measures their
/// uptime (seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChallengeSection {
    /// Time a challenge allows.
    pub budget: f64,
    /// The share of the budget the work takes at the claimed cores, in (0, 1]: an honest
    /// node's headroom for load, and the overstatement below which a false claim passes.
    pub share: f64,
    /// Allowance on top of the budget for the network.
    pub grace: f64,
    /// How often each node is challenged.
    pub interval: f64,
    /// How often each node is asked for its status (uptime).
    pub heartbeat: f64,
}

impl Default for ChallengeSection {
    fn default() -> Self {
        let d = vain_round::challenger::Config::default();
        Self {
            budget: d.budget.as_secs_f64(),
            share: d.share,
            grace: d.grace.as_secs_f64(),
            interval: d.interval.as_secs_f64(),
            heartbeat: d.heartbeat.as_secs_f64(),
        }
    }
}

impl ChallengeSection {
    fn config(&self) -> Result<vain_round::challenger::Config> {
        let secs = |name: &str, s: f64, min: f64| {
            if s.is_finite() && s >= min && s <= 86_400.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(anyhow::anyhow!("[challenge] {name} = {s} must be between {min} and 86400 seconds"))
            }
        };
        if !(self.share > 0.0 && self.share <= 1.0) {
            bail!("[challenge] share = {} must be in (0, 1]", self.share);
        }
        Ok(vain_round::challenger::Config {
            share: self.share,
            // Nodes refuse tasks with a shorter window (their admissions of one prove nothing).
            budget: secs("budget", self.budget, vain_core::challenge::MIN_WINDOW as f64 / 1000.0)?,
            grace: secs("grace", self.grace, 0.0)?,
            interval: secs("interval", self.interval, 0.1)?,
            heartbeat: secs("heartbeat", self.heartbeat, 0.1)?,
        })
    }
}

/// The whole `node.toml`.
pub struct NodeFile {
    /// The control plane.
    pub net: Config,
    /// `[aggregate]`.
    pub aggregate: AggregateSection,
    /// `[train]`.
    pub train: TrainSection,
    /// `[ledger]`.
    pub ledger: LedgerSection,
    /// `[challenge]`.
    pub challenge: ChallengeSection,
    /// `[chain]`: where an aggregator anchors its rounds (none: no anchoring).
    pub chain: Option<crate::chain::ChainSection>,
}

impl NodeFile {
    /// Parses `node.toml` text.
    pub fn parse(text: &str) -> Result<NodeFile> {
        let mut v: toml::Table = toml::from_str(text).context("node.toml")?;
        let aggregate = match v.remove("aggregate") {
            Some(t) => t.try_into().context("[aggregate]")?,
            None => AggregateSection::default(),
        };
        let train = match v.remove("train") {
            Some(t) => t.try_into().context("[train]")?,
            None => TrainSection::default(),
        };
        let ledger = match v.remove("ledger") {
            Some(t) => t.try_into().context("[ledger]")?,
            None => LedgerSection::default(),
        };
        let challenge = match v.remove("challenge") {
            Some(t) => t.try_into().context("[challenge]")?,
            None => ChallengeSection::default(),
        };
        let chain = match v.remove("chain") {
            Some(t) => Some(t.try_into().context("[chain]")?),
            None => None,
        };
        let net = Config::parse(&toml::to_string(&v)?)?;
        Ok(NodeFile { net, aggregate, train, ledger, challenge, chain })
    }

    /// Reads a file.
    pub fn load(path: &Path) -> Result<NodeFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The model this node serves or trains (the first of `models`, default `mnist-cnn`).
    pub fn arch(&self) -> Result<Arch> {
        match self.net.models.first() {
            None => Ok(Arch::MnistCnn),
            Some(m) => m.parse::<Arch>().map_err(|e| anyhow::anyhow!("models: {e}")),
        }
    }

    /// The ledger's settings: pre-trusted reporters, voting tier, quorum. The pre-trusted
    /// reporters are the network's genesis: `[ledger] pretrusted`, or by default the keys of
    /// the `bootstrap` peers (the nodes whoever started the network runs), or, for the first
    /// node of a network (no bootstrap), `me` — never nobody, which would leave EigenTrust no
    /// anchor and hand a Sybil ring a share of the trust.
    pub fn ledger(&self, me: &[u8; 32]) -> Result<vain_trust::Config> {
        let l = &self.ledger;
        let mut pretrusted = keys_of(&l.pretrusted, "pretrusted")?;
        if pretrusted.is_empty() {
            for b in &self.net.bootstrap {
                let key = vain_net::keys::public_key_of_addr(b).ok_or_else(|| {
                    anyhow::anyhow!(
                        "bootstrap {b:?} names no Ed25519 peer to take as the ledger's genesis: set [ledger] pretrusted"
                    )
                })?;
                if !pretrusted.contains(&key) {
                    pretrusted.push(key);
                }
            }
            if pretrusted.is_empty() {
                pretrusted.push(*me);
            }
        }
        if l.vote_from == 0 {
            bail!("[ledger] vote_from must be at least 1 (tier 0 is suspended or banned)");
        }
        if !(l.quorum > 0.0 && l.quorum <= 1.0) {
            bail!("[ledger] quorum {} must be in (0, 1]", l.quorum);
        }
        Ok(vain_trust::Config { pretrusted, vote_from: l.vote_from, quorum: l.quorum, ..vain_trust::Config::default() })
    }

    /// `[ledger] vouch`: the nodes the operator vouches for.
    pub fn vouched(&self) -> Result<Vec<[u8; 32]>> {
        keys_of(&self.ledger.vouch, "vouch")
    }

    fn coordinator(&self) -> Result<coordinator::Config> {
        let a = &self.aggregate;
        let secs = |name: &str, s: f64| {
            if s.is_finite() && s > 0.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                bail!("[aggregate] {name} must be > 0")
            }
        };
        Ok(coordinator::Config {
            rule: a.rule.parse::<Rule>().map_err(|e| anyhow::anyhow!("[aggregate] rule: {e}"))?,
            pre: if a.pre.is_empty() { Vec::new() } else { parse_pre(&a.pre).context("[aggregate] pre")? },
            clip: (a.clip > 0.0).then_some(a.clip),
            noise_multiplier: (a.noise_multiplier > 0.0).then_some(a.noise_multiplier),
            codec: a.codec.parse::<Codec>().map_err(|e| anyhow::anyhow!("[aggregate] codec: {e}"))?,
            zstd: (a.zstd > 0).then_some(a.zstd),
            rounds: a.rounds,
            round_time: secs("round_time", a.round_time)?,
            min_clients: a.min_clients,
            wait_clients: secs("wait_clients", a.wait_clients)?,
            min_updates: a.min_updates,
            per_round: a.per_round,
            reputation: a.reputation,
            server_lr: a.server_lr,
            seed: a.seed,
            tier: self.net.tier,
            ..coordinator::Config::new(self.arch()?)
        })
    }

    /// The data set clients' training items index (the embedded digits, or `[train] data`):
    /// what this node re-executes audited training on.
    fn audit_data(&self) -> Result<vain_learn::data::Dataset> {
        let data = if self.train.data.is_empty() { None } else { Some(Mnist::load_dir(Path::new(&self.train.data))?) };
        Ok(federation::split(&federation::Config::new(self.arch()?, 1), data)?.data)
    }

    fn participant(&self, dir: PathBuf) -> Result<participant::Config> {
        let t = &self.train;
        let (index, of) = t
            .shard
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse::<usize>().ok()?, n.trim().parse::<usize>().ok()?)))
            .filter(|(i, n)| i < n)
            .ok_or_else(|| anyhow::anyhow!("[train] shard {:?} must be index/of with index < of", t.shard))?;
        let arch = self.arch()?;
        let fcfg = federation::Config {
            partition: t.partition.parse::<Scheme>().map_err(|e| anyhow::anyhow!("[train] partition: {e}"))?,
            seed: t.seed,
            ..federation::Config::new(arch, of)
        };
        let data = if t.data.is_empty() { None } else { Some(Mnist::load_dir(Path::new(&t.data))?) };
        let split = federation::split(&fcfg, data)?;
        let (items, held) = split.clients[index].clone();
        let attack = if t.attack.is_empty() {
            None
        } else {
            Some(t.attack.parse::<Attack>().map_err(|e| anyhow::anyhow!("[train] attack: {e}"))?)
        };
        Ok(participant::Config {
            arch,
            items,
            data: split.data,
            train: train::Config {
                optim: t.optim.parse().map_err(|e| anyhow::anyhow!("[train] optim: {e}"))?,
                lr: t.lr,
                schedule: train::Schedule::Constant,
                batch: t.batch,
                steps: t.steps,
            },
            attack,
            seed: t.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            dir,
            kept_out: None,
            region: self.net.region.clone(),
            experience: None,
            held,
            personal_steps: t.personal_steps,
        })
    }
}

/// Score a peer loses per forged or malformed round-protocol message: with the default floor
/// (`pex.block_below` = −20), the fifth blocks it.
const JUNK_POINTS: i32 = 5;

/// Offers a signed report to the live ledger; a new one (or one that replaced an applied
/// epoch's report) is passed on to every connected peer but the one it came from (each node
/// forwards a report once, so the flood ends), and so is an equivocation proof it made.
fn take_evidence(
    live: &Mutex<Live>,
    net: &vain_net::node::Handle,
    rt: &tokio::runtime::Handle,
    r: vain_core::signed::Signed<vain_core::ledger::Report>,
    from: Option<vain_net::PeerId>,
) -> Ack {
    let (offer, proofs, promoted) = match live.lock() {
        Ok(mut l) => (l.offer(r.clone()), l.take_proofs(), l.take_promoted()),
        Err(_) => return Ack::Busy,
    };
    // A report that contradicts one this node took made a proof against its reporter: every
    // node must hold it, for whichever report comes next to carry it.
    for p in proofs {
        flood(net, rt, Message::Govern(p), None);
    }
    // Reports a rebuild started applying (runners-up of epochs whose report was taken out):
    // a peer that never took them would apply nothing there.
    for p in promoted {
        flood(net, rt, Message::Evidence(p), None);
    }
    match offer {
        Ok(Offer::New | Offer::Replaced) => {
            flood(net, rt, Message::Evidence(r), from);
            Ack::Taken
        }
        Ok(Offer::Duplicate | Offer::Outranked) => Ack::Taken,
        Ok(Offer::Stale | Offer::TooFarAhead) => Ack::Stale,
        Ok(Offer::BadSignature) => Ack::BadSignature,
        Ok(Offer::Equivocation) => Ack::Equivocation,
        Ok(Offer::Ineligible) => Ack::NotAggregator,
        Ok(Offer::TooLarge) => Ack::Malformed,
        Err(e) => {
            tracing::error!(error = %e, "ledger journal");
            Ack::Busy
        }
    }
}

/// `[aggregate] equivocate_round`: this node's ledger takes the report; connected peers get it
/// or a second one signed for the same epoch (half its observations), alternately.
fn equivocate(
    live: &Mutex<Live>,
    net: &vain_net::node::Handle,
    rt: &tokio::runtime::Handle,
    key: &ed25519_dalek::SigningKey,
    r: vain_core::signed::Signed<vain_core::ledger::Report>,
) {
    let mut body = r.body.clone();
    body.observations.truncate(body.observations.len() / 2);
    body.governance.clear();
    if body == r.body {
        // Nothing to leave out: say something of itself instead (which every ledger ignores).
        let me = key.verifying_key().to_bytes();
        body.observations
            .push(vain_core::ledger::Observation { subject: me, what: vain_core::ledger::Observed::Participated });
    }
    let other = vain_core::signed::Signed::sign(key, body);
    tracing::warn!(
        epoch = r.body.epoch,
        "equivocate_round: signing two reports for this epoch, one to each half of the peers"
    );
    if let Ok(mut l) = live.lock() {
        let _ = l.offer(r.clone());
    }
    let net = net.clone();
    rt.spawn(async move {
        let peers = net.directory().await.unwrap_or_default();
        for (i, e) in peers.into_iter().filter(|e| e.connected).enumerate() {
            let m = if i % 2 == 0 { Message::Evidence(r.clone()) } else { Message::Evidence(other.clone()) };
            let (net, bytes) = (net.clone(), m.encode());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), net.request(e.peer_id, bytes)).await;
            });
        }
    });
}

/// Catches the ledger up on epochs this node missed (it was down, or joined late): every few
/// seconds it asks one connected peer, in turn, for the reports of the epochs from its next
/// one on, and keeps asking that peer while they bring it forward. Up to date, that is one
/// small request and an empty answer.
fn spawn_catching_up(live: Arc<Mutex<Live>>, net: vain_net::node::Handle) {
    tokio::spawn(async move {
        let (mut turn, mut pool_turn) = (0usize, 0usize);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Ok(dir) = net.directory().await else { continue };
            let peers: Vec<vain_net::PeerId> = dir.iter().filter(|e| e.connected).map(|e| e.peer_id).collect();
            let Some(peer) = peers.get(turn % peers.len().max(1)).copied() else { continue };
            turn = turn.wrapping_add(1);
            loop {
                let Ok(from) = live.lock().map(|l| l.next_epoch()) else { break };
                let ask = net.request(peer, Message::History(from).encode());
                let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(10), ask).await else { break };
                let Ok(reports) = msg::decode_history(&bytes) else { break };
                if reports.is_empty() {
                    break;
                }
                let n = reports.len();
                for r in reports {
                    offer_fetched(&live, &net, r);
                }
                let now = live.lock().map(|l| l.next_epoch()).unwrap_or(from);
                tracing::info!(%peer, reports = n, from_epoch = from, next_epoch = now, "ledger history fetched");
                if now <= from {
                    break;
                }
            }
            // Every fifth turn (about every 10 s), from the next peer in a turn of its own, the
            // governance inputs that peer holds and this node does not: passed on while this
            // node was away, they would otherwise reach it only inside a report, and never if
            // this node is the one to carry them.
            if turn % 5 == 1
                && let Some(p) = peers.get(pool_turn % peers.len().max(1)).copied()
            {
                pool_turn = pool_turn.wrapping_add(1);
                sync_pool(&live, &net, p).await;
            }
            // Every fifth turn too, the reports of the last epochs both have applied: after a
            // partition heals, each side holds its own report for the epochs it closed alone,
            // and the flood that would have brought the other is over. A better one makes this
            // node rebuild its past with it, and pass it on.
            if turn % 5 == 3 {
                let Ok(from) = live.lock().map(|l| l.next_epoch().saturating_sub(RECHECK_EPOCHS)) else { continue };
                let ask = net.request(peer, Message::History(from).encode());
                if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(10), ask).await
                    && let Ok(reports) = msg::decode_history(&bytes)
                {
                    for r in reports {
                        offer_fetched(&live, &net, r);
                    }
                }
            }
        }
    });
}

/// Epochs back from its next one a node asks a peer's reports of, every 10 s or so, to find
/// reports it never saw for epochs it applied.
const RECHECK_EPOCHS: u64 = 16;

/// Offers a report fetched from a peer's history to the live ledger; passes on what that made
/// (equivocation proofs, a report that replaced an applied one, reports a rebuild promoted).
fn offer_fetched(
    live: &Mutex<Live>,
    net: &vain_net::node::Handle,
    r: vain_core::signed::Signed<vain_core::ledger::Report>,
) {
    let offered = live.lock().map(|mut l| (l.offer(r.clone()), l.take_proofs(), l.take_promoted()));
    let Ok((offer, proofs, promoted)) = offered else { return };
    let rt = tokio::runtime::Handle::current();
    match offer {
        Err(e) => tracing::error!(error = %e, "ledger journal"),
        Ok(vain_trust::Offer::Replaced) => flood(net, &rt, Message::Evidence(r), None),
        Ok(_) => {}
    }
    for p in proofs {
        flood(net, &rt, Message::Govern(p), None);
    }
    for p in promoted {
        flood(net, &rt, Message::Evidence(p), None);
    }
}

/// Asks `peer` for the governance inputs it holds that this node's pool lacks, and takes them
/// as if `peer` had passed them on (a new one goes on to the other peers).
async fn sync_pool(live: &Mutex<Live>, net: &vain_net::node::Handle, peer: vain_net::PeerId) {
    let Ok(held) = live.lock().map(|l| l.pool_digests()) else { return };
    let ask = net.request(peer, Message::Pool(held).encode());
    let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(10), ask).await else { return };
    let items = match msg::decode_pool(&bytes) {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "pool answer malformed");
            return;
        }
    };
    let rt = tokio::runtime::Handle::current();
    let mut new = 0;
    for g in items {
        if take_governance(live, net, &rt, g, Some(peer)) == Some(vain_trust::Submit::New) {
            new += 1;
        }
    }
    if new > 0 {
        tracing::info!(%peer, new, "governance inputs fetched from a peer's pool");
    }
}

/// Calls `sign` with the ledger's next epoch, every second while it returns false (nothing to
/// sign yet), and after it signed only once a later epoch comes (epochs only grow, so each
/// signed input's epoch is above the last).
fn each_epoch(live: Arc<Mutex<Live>>, mut sign: impl FnMut(&Mutex<Live>, u64) -> bool + Send + 'static) {
    tokio::spawn(async move {
        let mut last: Option<u64> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok(epoch) = live.lock().map(|l| l.next_epoch()) else { continue };
            if last.is_none_or(|e| e < epoch) && sign(&live, epoch) {
                last = Some(epoch);
            }
        }
    });
}

/// Signs what the challenger witnessed into a testimony once per ledger epoch and hands it to
/// the ledger's pool and the peers, for the next report to carry.
fn spawn_testifying(
    key: ed25519_dalek::SigningKey,
    witness: vain_round::challenger::Witness,
    experience: vain_round::experience::Experience,
    live: Arc<Mutex<Live>>,
    net: vain_net::node::Handle,
) {
    let me = key.verifying_key().to_bytes();
    each_epoch(live, move |live, epoch| {
        // Behind its own last applied testimony (a restart, a node catching up): every ledger
        // would refuse one for this epoch, so wait for the ledger to catch up.
        let Ok(after) = live.lock().map(|l| l.ledger().testified(&me)) else { return false };
        if after.is_some_and(|a| a >= epoch) {
            return false;
        }
        let taken = witness.take(epoch, after);
        if taken.observations.is_empty() {
            return false;
        }
        let n = taken.observations.len();
        let anomaly_z = live.lock().map_or(f64::INFINITY, |l| l.ledger().config().penalties.anomaly_z);
        experience.witnessed(&taken.seen, anomaly_z);
        let report = vain_core::ledger::Report {
            epoch,
            observations: taken.observations,
            governance: taken.proofs.into_iter().map(vain_core::ledger::Governed::GaveUp).collect(),
        };
        let t = vain_core::signed::Signed::sign(&key, report);
        let rt = tokio::runtime::Handle::current();
        let verdict = take_governance(live, &net, &rt, vain_core::ledger::Governed::Testimony(t), None);
        tracing::info!(
            epoch,
            observations = n,
            outcome = verdict.map_or("ledger unavailable", |v| v.reason()),
            "testimony"
        );
        true
    });
}

/// Signs this node's local trust (its experience with the nodes it worked with, and the
/// operator's vouches) into a vector once per ledger epoch when it changed, and hands it to the
/// ledger's pool and the peers, for the next report to carry. One the pool refuses (this node
/// holds no trust yet) is signed again at a later epoch.
fn spawn_vouching(
    key: ed25519_dalek::SigningKey,
    experience: vain_round::experience::Experience,
    live: Arc<Mutex<Live>>,
    net: vain_net::node::Handle,
) {
    let me = key.verifying_key().to_bytes();
    each_epoch(live, move |live, epoch| {
        let Some(edges) = experience.vector(&me, vain_trust::TRUST_EDGES) else { return false };
        let n = edges.len();
        let t = vain_core::signed::Signed::sign(&key, vain_core::ledger::TrustVector { epoch, edges });
        let rt = tokio::runtime::Handle::current();
        let verdict = take_governance(live, &net, &rt, vain_core::ledger::Governed::Trust(t), None);
        let outcome = verdict.map_or("ledger unavailable", |v| v.reason());
        if verdict == Some(vain_trust::Submit::New) {
            experience.signed(n > 0);
            tracing::info!(epoch, edges = n, outcome, "local trust");
        } else {
            // Signed again at a later epoch (a node nobody trusted vouches for yet: every epoch).
            experience.retry();
            tracing::debug!(epoch, edges = n, outcome, "local trust");
        }
        true
    });
}

/// Hex keys from a `[ledger]` list.
fn keys_of(list: &[String], field: &str) -> Result<Vec<[u8; 32]>> {
    list.iter()
        .map(|k| {
            hex::decode(k)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| anyhow::anyhow!("[ledger] {field} {k:?} is not a 32-byte hex key"))
        })
        .collect()
}

/// What `vain node` serves over HTTP besides its planes.
#[derive(Debug, Clone, Default)]
pub struct Serve {
    /// `--metrics ADDR`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--api ADDR`.
    pub api: Option<std::net::SocketAddr>,
    /// `--api-token FILE`.
    pub api_token: Option<PathBuf>,
    /// The PKCS#11 token holding the node's root key.
    pub hsm: Option<vain_identity::pkcs11::Config>,
}

/// Takes a governance input into the live ledger's pool; a new one is passed on to every
/// connected peer but the one it came from, as evidence is — but a local-trust vector only to
/// the connected reporters: every node signs one each epoch, a flood of them would cost every
/// node N² messages, and only a report carries them (which then floods once).
fn take_governance(
    live: &Mutex<Live>,
    net: &vain_net::node::Handle,
    rt: &tokio::runtime::Handle,
    g: vain_core::ledger::Governed,
    from: Option<vain_net::PeerId>,
) -> Option<vain_trust::Submit> {
    let (verdict, reporters) = {
        let mut l = live.lock().ok()?;
        let verdict = l.submit(g.clone());
        let trust = verdict == vain_trust::Submit::New && matches!(g, vain_core::ledger::Governed::Trust(_));
        (verdict, trust.then(|| l.reporters()))
    };
    if verdict == vain_trust::Submit::New {
        flood_to(net, rt, Message::Govern(g), from, reporters);
    }
    Some(verdict)
}

/// Sends `m` to every connected peer but `from` (each node forwards a message once, so the
/// flood ends).
fn flood(net: &vain_net::node::Handle, rt: &tokio::runtime::Handle, m: Message, from: Option<vain_net::PeerId>) {
    flood_to(net, rt, m, from, None);
}

/// [`flood`], to the peers whose announced signing key is in `only` when it is given — or to
/// every peer when none of them is connected (a node that reaches no reporter directly still
/// gets its input to one through the others).
fn flood_to(
    net: &vain_net::node::Handle,
    rt: &tokio::runtime::Handle,
    m: Message,
    from: Option<vain_net::PeerId>,
    only: Option<std::collections::HashSet<[u8; 32]>>,
) {
    let (net, bytes) = (net.clone(), m.encode());
    rt.spawn(async move {
        let peers = net.directory().await.unwrap_or_default();
        let open: Vec<vain_net::node::Entry> =
            peers.into_iter().filter(|e| e.connected && Some(e.peer_id) != from).collect();
        let wanted = |e: &vain_net::node::Entry| only.as_ref().is_none_or(|k| k.contains(&e.announcement.signing_key));
        let any = open.iter().any(wanted);
        for e in open.into_iter().filter(|e| !any || wanted(e)) {
            let (net, bytes) = (net.clone(), bytes.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), net.request(e.peer_id, bytes)).await;
            });
        }
    });
}

/// Runs `vain node --config FILE`.
pub fn run(path: Option<&Path>, serve: Serve) -> Result<()> {
    let metrics_addr = serve.metrics;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let file = match path {
        Some(p) => NodeFile::load(p)?,
        None => NodeFile::parse("")?,
    };
    let mut cfg = file.net.clone();
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let id = crate::net::identity_with(&cfg.data_dir, serve.hsm.clone())?;
    let seed = *id.seed;
    let role_bits = cfg.role_bits()?;
    // The settings that decide whom the node meets, for an operator checking a deployment (-v).
    tracing::debug!(
        config = %path.map_or_else(|| "(defaults)".to_string(), |p| p.display().to_string()),
        roles = ?roles::names(role_bits),
        listen = ?cfg.listen,
        bootstrap = ?cfg.bootstrap,
        region = %cfg.region,
        data_dir = %cfg.data_dir.display(),
        mdns = cfg.mdns.enabled,
        beacon = cfg.beacon.enabled,
        "configuration"
    );
    let socket = cfg.data_dir.join("control.sock");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // The ledger's bans, refused by the QUIC handshake (the deny list can change while the
    // endpoint runs) and by the control plane.
    let deny: Arc<RwLock<BTreeSet<[u8; 32]>>> = Arc::new(RwLock::new(BTreeSet::new()));
    // The aggregator's ingest service binds first, so the announcement carries its address.
    let mut service = None;
    let mut quic_live = None;
    if role_bits & roles::AGGREGATOR != 0 {
        let listen: std::net::SocketAddr =
            file.aggregate.listen.parse().with_context(|| format!("[aggregate] listen {:?}", file.aggregate.listen))?;
        let tls = tls::server_config(&seed, Policy::AnyExcept(deny.clone()))?;
        let mut q = quic::Config::new(listen, tls);
        q.idle_timeout = Duration::from_secs(120);
        q.caps.per_address = file.aggregate.connections_per_address.max(1);
        q.caps.attempts_per_address = file.aggregate.attempts_per_address;
        let backend = open_backend(
            match file.aggregate.backend.as_str() {
                "cpu" => BackendChoice::Cpu,
                "cuda" => BackendChoice::Cuda,
                "auto" => BackendChoice::Auto,
                other => bail!("[aggregate] backend {other:?} (cpu, cuda, auto)"),
            },
            0,
        )?;
        q.page_lock = vain_aggregator::page_lock(&*backend);
        let s = vain_aggregator::Service::start(q, file.aggregate.shards.max(1), 64)?;
        cfg.ingest = vec![s.local_addr().to_string()];
        tracing::info!(addr = %s.local_addr(), shards = file.aggregate.shards.max(1), "QUIC ingest listening");
        quic_live = Some(s.live());
        service = Some((s, backend));
    }
    let participant_cfg =
        if role_bits & roles::CLIENT != 0 { Some(file.participant(cfg.data_dir.join("client"))?) } else { None };
    let coord_cfg = if service.is_some() { Some(file.coordinator()?) } else { None };
    let arch = file.arch()?;
    // A validator evaluates on the split the aggregators evaluate on.
    let eval_seed = file.aggregate.seed;
    let data_dir = cfg.data_dir.clone();
    let me = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let ledger_cfg = file.ledger(&me)?;
    tracing::info!(
        pretrusted = %ledger_cfg.pretrusted.iter().map(|k| hex::encode(&k[..4])).collect::<Vec<_>>().join(","),
        "ledger genesis"
    );
    let live = Arc::new(Mutex::new(Live::open(&data_dir.join("ledger"), ledger_cfg)?));
    let experience = vain_round::experience::Experience::open(&data_dir.join("experience.json"), file.vouched()?);
    let challenge_cfg = file.challenge.config()?;
    let audit_data = Arc::new(file.audit_data()?);
    let claimed_cores = cfg.claimed_cores();
    let api_token = match serve.api {
        Some(_) => Some(crate::api::Token::load_or_create(
            &serve.api_token.clone().unwrap_or_else(|| data_dir.join("api.token")),
        )?),
        None => None,
    };
    let rounds = Arc::new(crate::api::Rounds::load(&data_dir.join("aggregator").join("rounds.jsonl")));
    let privacy = (coord_cfg.as_ref().and_then(|c| c.clip), coord_cfg.as_ref().and_then(|c| c.noise_multiplier));

    rt.block_on(async move {
        let (tx, mut inbound) = mpsc::channel::<Inbound>(256);
        let handle = node::spawn_serving(cfg, id, Transport::Tcp, tx).await?;
        let status = handle.status().await?;
        tracing::info!(node_id = %status.node_id, peer = %status.peer_id, roles = role_bits, "node started");

        let stop = Arc::new(AtomicBool::new(false));
        let mut coordinator_thread = None;
        let mut store: Option<Store> = None;
        let mut link = None;
        if let (Some((service, backend)), Some(ccfg)) = (service, coord_cfg) {
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let c = Coordinator::new(
                ccfg,
                handle.clone(),
                tokio::runtime::Handle::current(),
                service,
                backend,
                key,
                data_dir.join("aggregator"),
            )?
            .with_evidence({
                let (live, net, rt) = (live.clone(), handle.clone(), tokio::runtime::Handle::current());
                let (fork_at, key) = (file.aggregate.equivocate_round, ed25519_dalek::SigningKey::from_bytes(&seed));
                let experience = experience.clone();
                Arc::new(move |r| {
                    // What this aggregator saw of its clients is its experience with them.
                    let anomaly_z = live.lock().map_or(f64::INFINITY, |l| l.ledger().config().penalties.anomaly_z);
                    experience.witnessed(&r.body.observations, anomaly_z);
                    if fork_at > 0 && r.body.epoch == fork_at {
                        equivocate(&live, &net, &rt, &key, r);
                    } else {
                        take_evidence(&live, &net, &rt, r, None);
                    }
                })
            })
            .with_governance({
                let live = live.clone();
                Arc::new(move || live.lock().map(|l| l.governance_for_report()).unwrap_or_default())
            })
            .with_stakes({
                // With [chain], the stakes of known nodes are read from the Staking contract.
                let stakes = match &file.chain {
                    Some(section) => Some(crate::chain::spawn_stake_reader(
                        section,
                        live.clone(),
                        handle.clone(),
                        &tokio::runtime::Handle::current(),
                    )?),
                    None => None,
                };
                Arc::new(move || stakes.as_ref().map(|s| s.changes()).unwrap_or_default())
            })
            .with_exclusions({
                // The ledger's bans as the deny list holds them (refreshed every half second):
                // the ingest shards ask at every update and must not wait on the ledger's lock.
                let deny = deny.clone();
                Arc::new(move |k| deny.read().is_ok_and(|d| d.contains(k)))
            })
            .with_kept_out({
                // Kept out, or below the ledger's aggregating tier and not pre-trusted.
                let live = live.clone();
                Arc::new(move |k| live.lock().is_ok_and(|l| !l.may_aggregate(k)))
            })
            .with_tiers({
                let live = live.clone();
                Arc::new(move |k| live.lock().map(|l| l.tier(k)).unwrap_or(0))
            })
            .with_epochs({
                let live = live.clone();
                Arc::new(move || live.lock().map(|l| l.next_epoch()).unwrap_or(0))
            });
            store = Some(c.store());
            link = Some(c.link());
            let stop = stop.clone();
            let metrics = metrics.clone();
            let rounds = rounds.clone();
            // Rounds this aggregator closes go on chain, in order, from a task of their own.
            let anchors = match &file.chain {
                Some(section) if section.anchor => Some(crate::chain::spawn_anchoring(
                    section,
                    arch.id().to_string(),
                    data_dir.clone(),
                    ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes(),
                    live.clone(),
                    metrics.clone(),
                    &tokio::runtime::Handle::current(),
                )?),
                _ => None,
            };
            let me = vain_round::short(&ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes());
            coordinator_thread = Some(std::thread::Builder::new().name("vain-rounds".into()).spawn(move || {
                c.run(&stop, move |row| {
                    metrics.round(row);
                    rounds.push(row);
                    if let Some(tx) = &anchors
                        && row.aggregator == me
                        && let (Ok(root), Ok(checkpoint)) = (hex::decode(&row.root), hex::decode(&row.checkpoint))
                        && let (Ok(root), Ok(checkpoint)) =
                            (<[u8; 32]>::try_from(root), <[u8; 32]>::try_from(checkpoint))
                    {
                        // Blocks only with 1024 rounds unanchored: the chain is far behind.
                        let _ = tx.blocking_send(crate::chain::Anchor { round: row.round, root, checkpoint });
                    }
                    tracing::info!(
                        round = row.round,
                        outcome = row.outcome,
                        accepted = row.accepted,
                        participants = row.participants,
                        rejected = row.rejected,
                        missing = row.missing,
                        suspects = row.suspects.len(),
                        accuracy = row.accuracy,
                        closed_by = %row.aggregator,
                        "round evaluated"
                    );
                })
            })?);
        }
        // A validator attests the ledger's digest of each epoch on chain.
        if role_bits & roles::VALIDATOR != 0
            && let Some(section) = &file.chain
        {
            crate::chain::spawn_attesting(section, live.clone(), metrics.clone(), &tokio::runtime::Handle::current())?;
        }
        let validator = if role_bits & roles::VALIDATOR != 0 {
            let dir = data_dir.join("validator");
            store = store.or(Some(Validator::store(&dir)?));
            Some(Validator::start(arch, eval_seed, 2000, handle.clone(), dir)?)
        } else {
            None
        };
        // A validator challenges every node's claimed capacity, measures uptime, and testifies.
        let witness = if role_bits & roles::VALIDATOR != 0 {
            let witness = vain_round::challenger::Witness::default();
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let epoch = {
                let live = live.clone();
                Arc::new(move || live.lock().map_or(0, |l| l.next_epoch()))
            };
            tokio::spawn(
                Challenger::new(challenge_cfg.clone(), handle.clone(), key.clone(), witness.clone(), epoch).run(),
            );
            spawn_testifying(key, witness.clone(), experience.clone(), live.clone(), handle.clone());
            Some(witness)
        } else {
            None
        };
        spawn_catching_up(live.clone(), handle.clone());
        spawn_vouching(ed25519_dalek::SigningKey::from_bytes(&seed), experience.clone(), live.clone(), handle.clone());
        // Every node answers the challenges of its ledger's reporters.
        let prover = {
            let live = live.clone();
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Prover::new(key, claimed_cores, threads, Arc::new(move |k| live.lock().is_ok_and(|l| l.may_report(k))))
        };
        // Every node audits when an audit's team includes it.
        {
            let me = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
            let (assigned, reporter, submit) = (live.clone(), live.clone(), live.clone());
            let (net, rt) = (handle.clone(), tokio::runtime::Handle::current());
            let cfg = vain_round::auditor::Config {
                arch,
                data: audit_data,
                key: ed25519_dalek::SigningKey::from_bytes(&seed),
                assigned: Arc::new(move || assigned.lock().map(|l| l.audits_for(&me)).unwrap_or_default()),
                reporter: Arc::new(move |k| reporter.lock().is_ok_and(|l| l.may_report(k))),
                submit: Arc::new(move |v| {
                    let verdict = take_governance(&submit, &net, &rt, vain_core::ledger::Governed::Verdict(v), None);
                    tracing::info!(outcome = verdict.map_or("ledger unavailable", |v| v.reason()), "audit verdict");
                }),
            };
            tokio::spawn(vain_round::auditor::run(cfg, handle.clone()));
        }
        let participant = match participant_cfg {
            Some(mut p) => {
                p.experience = Some(experience.clone());
                // A client serves the checkpoints it holds too.
                store = store.or(Some(Store::open(&data_dir.join("client").join("checkpoints"))?));
                let live = live.clone();
                p.kept_out = Some(Arc::new(move |k| live.lock().is_ok_and(|l| !l.may_aggregate(k))));
                Some(Participant::start(p, handle.clone(), seed)?)
            }
            None => None,
        };

        let sources = Arc::new(crate::metrics::Sources {
            net: handle.clone(),
            ledger: live.clone(),
            participant: participant.clone(),
            quic: quic_live.clone(),
        });
        if let Some(addr) = metrics_addr {
            let (metrics, sources) = (metrics.clone(), sources.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(addr, metrics, sources).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint");
                }
            });
        }
        if let (Some(addr), Some(token)) = (serve.api, api_token) {
            let listener = crate::api::bind(addr).await?;
            let planes = crate::api::Planes {
                sources: sources.clone(),
                metrics: metrics.clone(),
                link: link.clone(),
                rounds: rounds.clone(),
                checkpoints: if role_bits & roles::AGGREGATOR != 0 { store.clone() } else { None },
                arch,
                roles: role_bits,
                clip: privacy.0,
                noise_multiplier: privacy.1,
                token,
                key: ed25519_dalek::SigningKey::from_bytes(&seed),
                govern: {
                    let (live, net, rt) = (live.clone(), handle.clone(), tokio::runtime::Handle::current());
                    Arc::new(move |g| take_governance(&live, &net, &rt, g, None))
                },
            };
            tokio::spawn(async move {
                if let Err(e) = crate::api::serve(listener, planes).await {
                    tracing::error!(%addr, error = %e, "API");
                }
            });
        }

        // The control socket: the control plane's commands, and `round` for what the planes
        // of this node report.
        let report: control::Report = {
            let (link, participant, witness) = (link.clone(), participant.clone(), witness.clone());
            Arc::new(move || {
                let mut v = serde_json::Map::new();
                if let Some(w) = &witness {
                    v.insert("validator".into(), serde_json::json!({"challenges": w.counts()}));
                }
                if let Some(l) = &link {
                    let (leading, round) = l.leading();
                    v.insert(
                        "aggregator".into(),
                        serde_json::json!({"leading": leading, "next_round": round, "closes_ignored": l.ignored()}),
                    );
                }
                if let Some(p) = &participant {
                    v.insert("client".into(), serde_json::json!({"answers": p.counts()}));
                }
                serde_json::Value::Object(v)
            })
        };
        let ledger_report: control::Report = {
            let live = live.clone();
            Arc::new(move || match live.lock() {
                Ok(l) => serde_json::to_value(l.status()).unwrap_or(serde_json::Value::Null),
                Err(_) => serde_json::Value::Null,
            })
        };
        let h = handle.clone();
        let sock = socket.clone();
        tokio::spawn(async move {
            if let Err(e) = control::serve_with(&sock, h, vec![("round", report), ("ledger", ledger_report)]).await {
                tracing::error!(socket = %sock.display(), error = %e, "control socket");
            }
        });

        // Bans and tiers from the ledger reach the planes within one tick.
        {
            let (live, net, deny) = (live.clone(), handle.clone(), deny.clone());
            // A node on chain files a slashing proposal for each new ban (the governor keeps one).
            let chain_section = file.chain.clone().filter(|_| role_bits & (roles::AGGREGATOR | roles::VALIDATOR) != 0);
            let ban_metrics = metrics.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    // Tiers for the control plane's directory policies.
                    let tiers = live.lock().map(|l| (l.tiers(), l.aggregators())).ok();
                    if let Some((t, a)) = tiers {
                        let _ = net.set_tiers(t).await;
                        let _ = net.set_aggregators(a).await;
                    }
                    let Ok(banned) = live.lock().map(|l| l.banned().into_iter().collect::<BTreeSet<_>>()) else {
                        continue;
                    };
                    // New bans join the deny list; bans lifted by a passed unban leave it.
                    let (new, lifted): (Vec<[u8; 32]>, Vec<[u8; 32]>) = match deny.read() {
                        Ok(d) => (banned.difference(&d).copied().collect(), d.difference(&banned).copied().collect()),
                        Err(_) => continue,
                    };
                    if new.is_empty() && lifted.is_empty() {
                        continue;
                    }
                    if let Ok(mut d) = deny.write() {
                        *d = banned;
                    }
                    if !new.is_empty()
                        && let Some(section) = &chain_section
                        && let Err(e) = crate::chain::file_slashing(
                            section,
                            new.clone(),
                            ban_metrics.clone(),
                            &tokio::runtime::Handle::current(),
                        )
                    {
                        tracing::warn!(error = %e, "slashing proposals");
                    }
                    if !new.is_empty()
                        && let Ok(n) = net.ban(new.clone()).await
                    {
                        tracing::warn!(nodes = new.len(), disconnected = n, "banned by the ledger");
                    }
                    if !lifted.is_empty()
                        && let Ok(n) = net.unban(lifted.clone()).await
                    {
                        tracing::info!(nodes = lifted.len(), unblocked = n, "ban lifted by the ledger");
                    }
                }
            });
        }

        // Round-protocol requests: fetches from the checkpoint store, opens and closes to the
        // participant, evidence to the ledger.
        let dispatch_net = handle.clone();
        tokio::spawn(async move {
            while let Some(req) = inbound.recv().await {
                let (store, participant, link) = (store.clone(), participant.clone(), link.clone());
                let (live, net) = (live.clone(), dispatch_net.clone());
                let (validator, prover) = (validator.clone(), prover.clone());
                tokio::spawn(async move {
                    // What only a dishonest sender sends: a message that does not decode, or
                    // evidence and governance whose signature is forged (an honest node checks
                    // both before passing anything on). Equivocating or ineligible evidence
                    // may come through an honest forwarder whose ledger saw it first: refused,
                    // not scored.
                    let mut junk: Option<&'static str> = None;
                    let answer = match Message::decode(&req.request) {
                        Err(_) => {
                            junk = Some("round malformed");
                            vec![Ack::Malformed as u8]
                        }
                        Ok(Message::Fetch(d)) => match &store {
                            Some(s) => coordinator::serve_fetch(s, &d),
                            None => msg::encode_checkpoint(None),
                        },
                        Ok(Message::Status(model)) => match &link {
                            Some(l) => l.status(&model).encode(),
                            None => msg::Status { serves: false, leading: false, tier: 0, round: 0 }.encode(),
                        },
                        // Another aggregator's close: an aggregator follows it, a validator checks
                        // it (a client checks its own update in it).
                        Ok(Message::Close(c)) if link.is_some() || validator.is_some() => {
                            // Every consumer on this node gets it; the first answer goes back.
                            let mut acks = Vec::new();
                            if let Some(l) = &link {
                                acks.push(l.offer(c.clone(), &req) as u8);
                            }
                            if let Some(v) = &validator {
                                acks.push(v.offer(c.clone(), &req) as u8);
                            }
                            if let Some(p) = &participant {
                                acks.extend(p.answer(Message::Close(c), &req).await);
                            }
                            acks.truncate(1);
                            acks
                        }
                        Ok(Message::Challenge(t)) => prover.answer(t, &req).await,
                        // An auditor asks for this client's work of a round.
                        Ok(Message::Work(round)) => match &participant {
                            Some(p) => p.work(round),
                            None => msg::Work::none(),
                        },
                        // A peer asks for the governance inputs held here that it lacks.
                        Ok(Message::Pool(held)) => {
                            let items = live
                                .lock()
                                .map(|l| {
                                    let turn = vain_schema::clock::unix_ms();
                                    let reporter =
                                        req.announcement.as_ref().is_some_and(|a| l.may_report(&a.signing_key));
                                    let (items, bytes) = (msg::POOL_ANSWER_ITEMS, msg::POOL_ANSWER_BYTES);
                                    l.pool_missing(&held, items, bytes, turn, reporter)
                                })
                                .unwrap_or_default();
                            msg::encode_pool(&items)
                        }
                        // A peer that missed epochs (restarted, joined late) catches up from here.
                        Ok(Message::History(from)) => {
                            let reports = live
                                .lock()
                                .map(|l| l.history(from, msg::HISTORY_EPOCHS, msg::HISTORY_BYTES))
                                .unwrap_or_default();
                            msg::encode_history(&reports)
                        }
                        // Evidence for the ledger: taken once, passed on to the peers.
                        Ok(Message::Evidence(r)) => {
                            let rt = tokio::runtime::Handle::current();
                            let ack = take_evidence(&live, &net, &rt, r, Some(req.peer));
                            if ack == Ack::BadSignature {
                                junk = Some("evidence forged");
                            } else if ack == Ack::Malformed {
                                // No honest node passes on a report it refused as too large.
                                junk = Some("evidence too large");
                            }
                            vec![ack as u8]
                        }
                        // Proposals and votes: held for the next report, passed on likewise.
                        Ok(Message::Govern(g)) => {
                            let rt = tokio::runtime::Handle::current();
                            let ack = match take_governance(&live, &net, &rt, g, Some(req.peer)) {
                                Some(vain_trust::Submit::New | vain_trust::Submit::Duplicate) => Ack::Taken,
                                Some(vain_trust::Submit::BadSignature) => {
                                    junk = Some("governance forged");
                                    Ack::BadSignature
                                }
                                Some(vain_trust::Submit::Invalid) => {
                                    junk = Some("governance malformed");
                                    Ack::Malformed
                                }
                                Some(vain_trust::Submit::UnknownAudit) => Ack::Stale,
                                Some(vain_trust::Submit::NotOnTeam | vain_trust::Submit::Untrusted) => Ack::Ineligible,
                                Some(vain_trust::Submit::Ineligible { .. }) => Ack::Ineligible,
                                Some(vain_trust::Submit::UnknownProposal | vain_trust::Submit::Closed) => Ack::Stale,
                                Some(vain_trust::Submit::Full) | None => Ack::Busy,
                            };
                            vec![ack as u8]
                        }
                        Ok(m) => match &participant {
                            Some(p) => p.answer(m, &req).await,
                            None => vec![Ack::NotSelected as u8],
                        },
                    };
                    if let Some(reason) = junk {
                        let _ = net.junk(req.peer, JUNK_POINTS, reason).await;
                    }
                    let _ = req.reply.send(answer);
                });
            }
        });

        tokio::time::sleep(Duration::from_millis(300)).await;
        for l in handle.status().await?.listen {
            tracing::info!(addr = %l, "control plane listening");
        }
        tracing::info!(socket = %socket.display(), "control socket");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // A coordinator that fails stops the node; one that ran its rounds leaves the node
        // serving (checkpoints, the ledger, the control plane) until it is stopped.
        let mut coordinator_thread = coordinator_thread;
        let mut term_signal = std::pin::pin!(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        loop {
            tokio::select! {
                _ = &mut term_signal => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if coordinator_thread.as_ref().is_some_and(|t| t.is_finished())
                && let Some(t) = coordinator_thread.take()
            {
                match t.join() {
                    Ok(Ok(())) => tracing::info!("round coordinator finished; serving until stopped"),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => bail!("the round coordinator panicked"),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(t) = coordinator_thread {
            // The coordinator syncs its state after every round; a round in progress ends at
            // its deadline, so do not wait for it beyond a moment.
            for _ in 0..25 {
                if t.is_finished() {
                    match t.join() {
                        Ok(r) => r?,
                        Err(_) => bail!("the round coordinator panicked"),
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let _ = std::fs::remove_file(&socket);
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledgers_genesis_is_configured_or_the_bootstrap_peers_or_this_node() {
        let key = |i: u8| ed25519_dalek::SigningKey::from_bytes(&[i; 32]).verifying_key().to_bytes();
        let pid = vain_net::keys::peer_id(&key(1)).expect("peer id");
        let me = key(9);
        let boot = format!("bootstrap = [\"/ip4/192.0.2.7/tcp/4001/p2p/{pid}\"]\n");
        let f = NodeFile::parse(&boot).expect("parse");
        assert_eq!(f.ledger(&me).expect("ledger").pretrusted, vec![key(1)]);
        let f = NodeFile::parse("").expect("parse");
        assert_eq!(f.ledger(&me).expect("ledger").pretrusted, vec![me]);
        let f =
            NodeFile::parse(&format!("{boot}[ledger]\npretrusted = [\"{}\"]\n", hex::encode(key(2)))).expect("parse");
        assert_eq!(f.ledger(&me).expect("ledger").pretrusted, vec![key(2)]);
    }

    #[test]
    fn the_example_file_parses_and_mistakes_are_named() {
        let f = NodeFile::parse(include_str!("../node.example.toml")).expect("example");
        assert_eq!(f.arch().expect("model"), Arch::MnistCnn);
        assert_eq!(f.aggregate.round_time, 60.0);
        assert_eq!(f.train.shard, "0/1");
        assert!(f.ledger.pretrusted.is_empty());
        assert_eq!(f.challenge.config().expect("challenge").interval, Duration::from_secs(60));
        assert_eq!(f.net.claimed_cores(), std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        assert!(f.coordinator().is_ok());
        for (text, needle) in [
            ("[aggregate]\nrule = \"mean-ish\"", "rule"),
            ("[aggregate]\nround_time = 0.0", "round_time"),
            ("[aggregate]\nunknown = 1", "unknown"),
            ("[train]\nshard = \"3/2\"", "shard"),
            ("[ledger]\npretrusted = [\"zz\"]", "pretrusted"),
            ("[ledger]\nvouch = [\"00\"]", "vouch"),
            ("[ledger]\nquorum = 1.5", "quorum"),
            ("[ledger]\nvote_from = 0", "vote_from"),
            ("[challenge]\nbudget = 0.0", "budget"),
            ("[challenge]\nbudget = 0.5", "budget"),
            ("[challenge]\nheartbeat = -1.0", "heartbeat"),
            ("[challenge]\nsize = 3", "size"),
            ("[challenge]\nshare = 1.5", "share"),
            ("cpu_cores = -2", "cpu_cores"),
        ] {
            let e = NodeFile::parse(text)
                .and_then(|f| {
                    f.coordinator()?;
                    f.participant(std::env::temp_dir())?;
                    f.ledger(&[0; 32])?;
                    f.vouched()?;
                    f.challenge.config()?;
                    Ok(())
                })
                .expect_err(text);
            assert!(format!("{e:#}").contains(needle), "{text}: {e:#}");
        }
    }
}
