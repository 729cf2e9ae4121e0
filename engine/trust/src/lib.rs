//! Every node's reputation ledger, live: the deterministic [`vain_core::ledger::Ledger`], its
//! journal on disk, and the order in which evidence is applied.
//!
//! Evidence arrives as signed reports (an aggregator's verdicts on a round, epoch = round) in
//! whatever order the network delivers it. The ledger's state depends on the order of its
//! inputs, so reports are buffered and applied epoch by epoch, from epoch 0, each epoch's
//! report (below) at the epoch's ledger time (`(epoch + 1) × HOUR`) followed by a tick: every
//! node that has the same reports reaches the same state digest, whatever order they came in. Each applied entry is journaled (fsynced) first, so a restarted node replays to
//! the digest it had.
//!
//! An epoch applies one report: of the eligible reports a node holds for it, the first in
//! [`rank`] — pre-trusted reporters first, then a per-epoch draw over the reporters' keys. Two
//! aggregators that both closed a round (two leaders for a moment, a healed partition), or a
//! reporter racing the round's aggregator, cannot split the ledgers: a node that applied an
//! epoch with one report and later takes one that outranks it rebuilds its state from the last
//! checkpoint before that epoch with the better one ([`Offer::Replaced`], passed on like a new
//! report), so every node ends on the best report that reached it.
//!
//! Bounds: one report per reporter and epoch, at most [`AHEAD`] epochs buffered ahead of the
//! next one to apply, a bounded set of digests seen.
//!
//! A second, different report of a reporter for an epoch is equivocation: it is refused, and
//! with the first it makes a proof ([`vain_core::ledger::Fork`]) that this node holds for the
//! next report to carry (and passes on, see [`Live::take_proofs`]). Every node applies the proof
//! at the same place of the same epoch, which suspends the reporter at that epoch's tick; a node
//! that applied one of the two reports then takes it out of its past (`Live::undo_forks`), so
//! the nodes that applied one and those that applied the other reach the same state.

use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;
use vain_core::governance::{Choice, Kind, Outcome, Proposal, ProposalId, Tally};
use vain_core::journal::Entry;
use vain_core::ledger::{
    self, Governed, Input, Ledger, MAX_GOVERNANCE, MAX_OPEN_PER_PROPOSER, MAX_VOTING_WINDOW, Output, Report,
};
use vain_core::signed::Signed;
use vain_core::storage::{Disk, Storage};
use vain_core::store::Store;
use vain_core::{HOUR, NodeId, Time};

/// Epochs a report may be ahead of the next epoch to apply.
pub const AHEAD: u64 = 64;
/// Report digests remembered for de-duplication.
pub const SEEN: usize = 4096;
/// Proposals and votes held for the next report, at most …
pub const POOL: usize = 1024;
/// … and at most this many of them by one author: a flood from one author is refused past it …
pub const POOL_PER_AUTHOR: usize = 16;
/// … and at most this many bytes in all (encoded), whatever they are.
pub const POOL_BYTES: usize = 64 << 20;
/// Local-trust vectors held at most (one per signer; half the pool, so that vouching can never
/// crowd out proposals, votes and audits).
pub const POOL_TRUST: usize = POOL / 2;
/// Edges a local-trust vector has at most (the ledger refuses longer ones).
pub const TRUST_EDGES: usize = vain_core::ledger::MAX_TRUST_EDGES;
/// The largest report a node takes (encoded, signed), not counting the equivocation proofs it
/// carries: larger ones are refused before anything else, so neither the buffer of pending
/// epochs nor a proof (which holds two report bodies) grows past it …
pub const MAX_REPORT_BYTES: usize = vain_core::codec::MAX_REPORT_BYTES;
/// … and at most this many proofs ride in one report (each at most two such bodies).
pub const MAX_FORKS_PER_REPORT: usize = 2;
/// The governance inputs other than proofs one report carries, in bytes at most: with the
/// report's own observations (a round's verdicts, 41 bytes each) it stays under
/// [`MAX_REPORT_BYTES`]; an input larger than this could never be carried and is refused.
pub const GOVERNANCE_BYTES: usize = MAX_REPORT_BYTES / 2;
/// Closed proposals remembered for the status.
pub const CLOSED_KEPT: usize = 64;
/// Applied epochs whose reports a node keeps to serve peers that missed them (a node restarted
/// after a crash, one that joined late).
pub const HISTORY: usize = 1024;
/// Journal entries after which the ledger is compacted into a snapshot: recovery reads the
/// snapshot and replays at most this many entries, however long the node has run.
pub const COMPACT_EVERY: u64 = 2048;
/// Outranked reports kept per epoch (those whose reporters could report in it first, then the
/// best-ranked) …
pub const OUTRANKED_PER_EPOCH: usize = 4;
/// … and their bytes (encoded) per epoch at most: the reports past either bound, in that order,
/// are not kept (whatever order they came in, so every node keeps the same ones).
pub const OUTRANKED_BYTES: usize = 1 << 20;
/// Replays one rebuild runs at most while the forks proven in the replayed epochs (by the
/// reports it now applies) keep changing which reports are left out.
const MAX_REPLAYS: usize = 4;
/// Epochs between two of the ledger states a node keeps in memory to undo an equivocation …
pub const CHECKPOINT_EVERY: u64 = 16;
/// … and how many it keeps: a report proven forked up to `(CHECKPOINTS − 1) ×
/// CHECKPOINT_EVERY` epochs back (and usually more) is taken out on every node.
pub const CHECKPOINTS: usize = 4;

/// Why the ledger could not be opened or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The journal failed.
    #[error("ledger journal: {0}")]
    Journal(#[from] vain_core::store::Error),
    /// The snapshot could not be read back (damaged, or of another format); it is left as
    /// it is, and the node does not start on a ledger it cannot trust.
    #[error("ledger snapshot {path}: {source}")]
    Snapshot {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: vain_schema::Error,
    },
    /// The directory could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What became of an offered report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// New: buffered (and applied when its epoch is next); pass it on.
    New,
    /// Seen before.
    Duplicate,
    /// For an epoch already applied, and older than this node's checkpoints (or its reporter
    /// is proven to have forked it).
    Stale,
    /// For an epoch already applied, whose report outranks it ([`rank`]): kept in case that one
    /// is taken out, not applied, not passed on.
    Outranked,
    /// For an epoch already applied, whose report it outranks: the ledger's past was rebuilt with
    /// it in place of that one; pass it on.
    Replaced,
    /// More than [`AHEAD`] epochs ahead.
    TooFarAhead,
    /// The signature does not verify.
    BadSignature,
    /// A second, different report of the same reporter and epoch.
    Equivocation,
    /// The reporter may not report (neither pre-trusted nor at the reporting tier).
    Ineligible,
    /// Larger than [`MAX_REPORT_BYTES`].
    TooLarge,
}

impl Offer {
    /// The counter it goes to.
    pub fn reason(self) -> &'static str {
        match self {
            Offer::New => "new",
            Offer::Duplicate => "duplicate",
            Offer::Stale => "stale",
            Offer::Outranked => "outranked",
            Offer::Replaced => "replaced",
            Offer::TooFarAhead => "too far ahead",
            Offer::BadSignature => "bad signature",
            Offer::Equivocation => "equivocation",
            Offer::Ineligible => "ineligible reporter",
            Offer::TooLarge => "too large",
        }
    }
}

/// What became of a proposal or vote handed to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// Held for the next report; pass it on.
    New,
    /// Held or applied already.
    Duplicate,
    /// The signature does not verify.
    BadSignature,
    /// Its author's tier is below the ledger's voting tier (and, for a proposal, it is not
    /// pre-trusted).
    Ineligible {
        /// The author's tier.
        tier: u8,
        /// The tier needed.
        need: u8,
    },
    /// A vote on a proposal that is neither open nor held.
    UnknownProposal,
    /// A proposal whose window ends before the next epoch, or a vote on one.
    Closed,
    /// The pool, or the author's share of it, is full.
    Full,
    /// A testimony that carries inputs itself (only a report of observations may be carried).
    Invalid,
    /// A verdict on an audit that is not open.
    UnknownAudit,
    /// A verdict by a node that is not on the audit's team, or about another subject.
    NotOnTeam,
    /// A local-trust vector whose signer holds no trust: no trusted node vouches for it (its
    /// EigenTrust share is 0, so its vector would move nothing), or it is suspended or banned.
    Untrusted,
}

impl Submit {
    /// The counter it goes to.
    pub fn reason(self) -> &'static str {
        match self {
            Submit::New => "new",
            Submit::Duplicate => "duplicate",
            Submit::BadSignature => "bad signature",
            Submit::Ineligible { .. } => "ineligible",
            Submit::UnknownProposal => "unknown proposal",
            Submit::Closed => "closed",
            Submit::Full => "full",
            Submit::Invalid => "invalid",
            Submit::UnknownAudit => "unknown audit",
            Submit::NotOnTeam => "not on the team",
            Submit::Untrusted => "untrusted",
        }
    }
}

/// Ledger settings of the network (its genesis: equal on every node, or their digests differ).
#[derive(Debug, Clone)]
pub struct Config {
    /// Pre-trusted reporters (the network's genesis; e.g. its first aggregators).
    pub pretrusted: Vec<NodeId>,
    /// The lowest tier that may propose and vote.
    pub vote_from: u8,
    /// The fraction of eligible voting weight that must vote for a proposal to count.
    pub quorum: f64,
    /// Journal entries between two snapshots ([`COMPACT_EVERY`]).
    pub compact_every: u64,
}

impl Default for Config {
    fn default() -> Self {
        let l = ledger::Config::default();
        Config { pretrusted: Vec::new(), vote_from: l.vote_from, quorum: l.quorum, compact_every: COMPACT_EVERY }
    }
}

/// A proposal, open or closed, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalRow {
    /// Its id (hex digest of the signed proposal).
    pub id: String,
    /// What it does: `{"kind": "ban", "node": hex}`, `unban`, `set_parameter` (`name`,
    /// `value`) or `upgrade` (`version`).
    pub action: Value,
    /// Its author (hex key).
    pub proposer: String,
    /// The first epoch whose votes count.
    pub opens_epoch: u64,
    /// The epoch at which it is tallied.
    pub closes_epoch: u64,
    /// pending (held, not yet carried by a report) | open | passed | rejected | no quorum.
    pub state: &'static str,
    /// Votes by choice (counts).
    pub votes: BTreeMap<&'static str, usize>,
    /// Weights: yes, no, abstain and all eligible (for an open proposal, as of now).
    pub tally: BTreeMap<&'static str, f64>,
    /// For an open proposal, how it would close now.
    pub leaning: Option<&'static str>,
}

#[derive(Clone)]
struct Closed {
    proposal: Signed<Proposal>,
    votes: BTreeMap<&'static str, usize>,
    outcome: Outcome,
    tally: Tally,
}

/// One node's row in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// First bytes of its key (hex).
    pub id: String,
    /// Its whole key (hex).
    pub key: String,
    /// Bonded stake.
    pub stake: u64,
    /// Suspensions so far.
    pub suspensions: u32,
    /// Tier now.
    pub tier: u8,
    /// Score.
    pub score: f64,
    /// Recent mean of its resource evidence (challenges: 1 passed, 0 failed or unanswered).
    pub resource: f64,
    /// Recent mean of its participation evidence (rounds taken part in, uptime).
    pub participation: f64,
    /// Its EigenTrust share relative to an even share, capped at 1: how much the nodes trusted
    /// nodes vouch for vouch for it (0 for a node nobody trusted vouches for).
    pub social: f64,
    /// Nodes its last applied local-trust vector vouches for.
    pub vouches: usize,
    /// Its penalty points now (they decay; at 1 a node is suspended).
    pub penalty: f64,
    /// The latest epoch for which it was proven to have signed two reports.
    pub forked_epoch: Option<u64>,
    /// active | suspended | banned.
    pub standing: &'static str,
}

/// What `vain ledger status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// BLAKE3 state digest (hex): equal on nodes that applied the same evidence.
    pub digest: String,
    /// The next epoch to apply.
    pub next_epoch: u64,
    /// Reports applied (accepted by the ledger or refused by it; both are history).
    pub applied: u64,
    /// The last epoch the ledger's snapshot holds (null before the first compaction).
    pub snapshot_epoch: Option<u64>,
    /// Journal entries since that snapshot (recovery replays these).
    pub journal_entries: u64,
    /// Reports buffered for later epochs.
    pub pending: usize,
    /// Offers by outcome.
    pub offers: BTreeMap<&'static str, u64>,
    /// When this node applied each of the last epochs: (epoch, Unix ms).
    pub applied_at_ms: Vec<(u64, u64)>,
    /// The ledger's nodes.
    pub nodes: Vec<NodeRow>,
    /// The governable parameters and their values now (the genesis configuration's, or what a
    /// passed proposal set).
    pub parameters: BTreeMap<&'static str, f64>,
    /// The lowest tier that may propose and vote.
    pub vote_from: u8,
    /// Proposals and votes held for the next report …
    pub pool: usize,
    /// … and their encoded bytes (at most [`POOL_BYTES`]).
    pub pool_bytes: usize,
    /// Proposals and votes handed to this node, by outcome.
    pub submits: BTreeMap<&'static str, u64>,
    /// Open proposals, then pending ones, then the last closed ones (newest first).
    pub proposals: Vec<ProposalRow>,
    /// Open audits, then the last decided ones (newest first).
    pub audits: Vec<AuditRow>,
}

/// The live ledger.
pub struct Live {
    ledger: Ledger,
    store: Store,
    /// Where the journal and the snapshot live.
    storage: Arc<dyn Storage>,
    /// The directory of the journal and the snapshot.
    dir: std::path::PathBuf,
    /// Entries journaled since the last snapshot.
    since_snapshot: u64,
    /// The last epoch the snapshot holds.
    snapshot_epoch: Option<u64>,
    compact_every: u64,
    next_epoch: u64,
    applied: u64,
    pending: BTreeMap<u64, BTreeMap<[u8; 32], Signed<Report>>>,
    /// (reporter, epoch) → digest of the report taken.
    taken: BTreeMap<(NodeId, u64), [u8; 32]>,
    seen: (HashSet<[u8; 32]>, VecDeque<[u8; 32]>),
    offers: BTreeMap<&'static str, u64>,
    applied_at: VecDeque<(u64, u64)>,
    /// Proposals and votes waiting for a report, by digest …
    pool: BTreeMap<[u8; 32], Governed>,
    /// … with their encoded sizes, and their sum.
    pool_sizes: BTreeMap<[u8; 32], usize>,
    pool_bytes: usize,
    /// Digests of governance inputs reports carried (de-duplication).
    carried: (HashSet<[u8; 32]>, VecDeque<[u8; 32]>),
    /// Open proposals' signed bodies (the ledger forgets them when they close).
    open_proposals: BTreeMap<ProposalId, Signed<Proposal>>,
    closed: VecDeque<Closed>,
    submits: BTreeMap<&'static str, u64>,
    /// The reports of the last [`HISTORY`] applied epochs, by epoch: each one's applied report
    /// and the reports left out as forked.
    history: BTreeMap<u64, Vec<Signed<Report>>>,
    /// Eligible reports of the last [`AHEAD`] applied epochs that their epoch's report
    /// outranked: a rebuild chooses among them again, and peers catching up get them too.
    outranked: BTreeMap<u64, Vec<Signed<Report>>>,
    /// The reporters the ledger let report at each of the last [`AHEAD`] applied epochs (as
    /// it stood before the epoch): whom a late report of that epoch is taken from.
    reporters: BTreeMap<u64, HashSet<NodeId>>,
    /// Reports a rebuild started applying (a runner-up after its epoch's report was taken out
    /// or displaced), to pass on.
    promoted: Vec<Signed<Report>>,
    /// The state in memory is not the journal's (a rebuild whose snapshot failed): write the
    /// snapshot before journaling anything more.
    must_compact: bool,
    /// Open audits' rounds (the ledger's outputs name them once).
    audit_rounds: BTreeMap<[u8; 32], u64>,
    /// The last decided audits, newest first.
    audits_decided: VecDeque<AuditRow>,
    /// Equivocation proofs this node built and has not yet handed out to pass on.
    proofs: VecDeque<Governed>,
    /// Ledger states at epoch boundaries, oldest first (see `Live::undo_forks`).
    checkpoints: VecDeque<Checkpoint>,
    /// (reporter, epoch) of the equivocations the ledger convicted since the last look.
    convicted: Vec<(NodeId, u64)>,
    /// Replaying after taking a forked report out: the outputs were logged the first time.
    replaying: bool,
}

/// The ledger's state before an epoch, with what the status derives from the ledger's past.
struct Checkpoint {
    /// The first epoch it does not hold.
    next: u64,
    snapshot: vain_core::ledger::Snapshot,
    open_proposals: BTreeMap<ProposalId, Signed<Proposal>>,
    closed: VecDeque<Closed>,
    audit_rounds: BTreeMap<[u8; 32], u64>,
    audits_decided: VecDeque<AuditRow>,
}

/// An audit, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// Its id (hex).
    pub id: String,
    /// The audited node (hex key).
    pub subject: String,
    /// The round whose work is audited.
    pub round: u64,
    /// The team (hex keys; empty once decided).
    pub team: Vec<String>,
    /// open | passed | failed | expired (undecided within a day of ledger time).
    pub state: &'static str,
}

/// The bytes a governance input takes in a report (kind byte and signed body).
fn encoded_len(g: &Governed) -> usize {
    let mut b = Vec::new();
    vain_core::codec::encode_governed(g, &mut b);
    b.len()
}

fn remember(set: &mut (HashSet<[u8; 32]>, VecDeque<[u8; 32]>), d: [u8; 32]) {
    if set.0.insert(d) {
        set.1.push_back(d);
        if set.1.len() > SEEN
            && let Some(old) = set.1.pop_front()
        {
            set.0.remove(&old);
        }
    }
}

fn choice_name(c: Choice) -> &'static str {
    match c {
        Choice::Yes => "yes",
        Choice::No => "no",
        Choice::Abstain => "abstain",
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Rejected => "rejected",
        Outcome::NoQuorum => "no quorum",
    }
}

fn action(k: &Kind) -> Value {
    match k {
        Kind::Ban { node } => json!({"kind": "ban", "node": hex::encode(node)}),
        Kind::Unban { node } => json!({"kind": "unban", "node": hex::encode(node)}),
        Kind::SetParameter { name, value } => json!({"kind": "set_parameter", "name": name, "value": value}),
        Kind::Upgrade { version } => json!({"kind": "upgrade", "version": version}),
    }
}

fn tally_map(t: &Tally) -> BTreeMap<&'static str, f64> {
    BTreeMap::from([("yes", t.yes), ("no", t.no), ("abstain", t.abstain), ("eligible", t.eligible)])
}

/// The epoch whose ledger time is `t` (inverse of [`epoch_time`]).
pub fn epoch_of(t: Time) -> u64 {
    (t / HOUR).saturating_sub(1)
}

/// Ledger time of an epoch's evidence.
pub fn epoch_time(epoch: u64) -> Time {
    (epoch + 1) * HOUR
}

/// Where `signer`'s report stands among an epoch's reports (the smallest is applied):
/// pre-trusted reporters first, then by the XOR distance of the key to BLAKE3 of the epoch. A
/// function of the genesis and the epoch only, so every node ranks alike whatever its state;
/// the draw changes every epoch and nobody can bias it without an eligible identity per try.
pub fn rank(ledger: &Ledger, epoch: u64, signer: &NodeId) -> (bool, [u8; 32]) {
    let mut h = blake3::Hasher::new_derive_key("vain 2026 report rank v1");
    h.update(&epoch.to_le_bytes());
    let target = h.finalize();
    let mut d = [0u8; 32];
    for (o, (a, b)) in d.iter_mut().zip(target.as_bytes().iter().zip(signer)) {
        *o = a ^ b;
    }
    (!ledger.is_pretrusted(signer), d)
}

impl Live {
    /// Opens the journal in `dir` (creating it) and replays it.
    pub fn open(dir: &Path, cfg: Config) -> Result<Live, Error> {
        Self::open_in(Arc::new(Disk), dir, cfg)
    }

    /// [`Live::open`] on `storage`.
    pub fn open_in(storage: Arc<dyn Storage>, dir: &Path, cfg: Config) -> Result<Live, Error> {
        storage.create_dir_all(dir, 0o755).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let (mut store, mut recovered) = Store::open_in(storage.as_ref(), &dir.join("ledger.journal"))?;
        // A snapshot holds everything up to its time; the journal, what came after (and, when a
        // crash came between writing the snapshot and emptying the journal, entries it already
        // holds: skipped).
        let snapshot_path = dir.join("ledger.snapshot");
        let snapshot = match storage.read(&snapshot_path) {
            Ok(bytes) => Some(
                vain_core::ledger::Snapshot::decode(&bytes)
                    .map_err(|source| Error::Snapshot { path: snapshot_path.clone(), source })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::Io { path: snapshot_path, source }),
        };
        if let Some(s) = &snapshot {
            recovered.entries.retain(|e| e.at() > s.at());
        }
        // Reports journaled without their epoch's closing tick (a crash between the frames):
        // the epoch is complete as far as this node ever saw it, so close it now.
        if let Some(Entry::Input { at, .. }) = recovered.entries.last() {
            let tick = Entry::Tick { at: *at };
            store.append(std::slice::from_ref(&tick))?;
            recovered.entries.push(tick);
        }
        let lcfg = ledger::Config {
            pretrusted: cfg.pretrusted,
            vote_from: cfg.vote_from,
            quorum: cfg.quorum,
            ..ledger::Config::default()
        };
        let (ledger, next_epoch) = match snapshot {
            Some(s) => {
                let next = s.at() / HOUR;
                (Ledger::from_snapshot(s), next)
            }
            None => (Ledger::new(lcfg, 0), 0),
        };
        let snapshot_epoch = (next_epoch > 0).then(|| next_epoch - 1);
        let since_snapshot = recovered.entries.len() as u64;
        let mut live = Live {
            ledger,
            store,
            storage,
            dir: dir.to_path_buf(),
            since_snapshot,
            snapshot_epoch,
            compact_every: cfg.compact_every.max(1),
            next_epoch,
            applied: 0,
            pending: BTreeMap::new(),
            taken: BTreeMap::new(),
            seen: (HashSet::new(), VecDeque::new()),
            offers: BTreeMap::new(),
            applied_at: VecDeque::new(),
            pool: BTreeMap::new(),
            pool_sizes: BTreeMap::new(),
            pool_bytes: 0,
            carried: (HashSet::new(), VecDeque::new()),
            open_proposals: BTreeMap::new(),
            closed: VecDeque::new(),
            submits: BTreeMap::new(),
            history: BTreeMap::new(),
            outranked: BTreeMap::new(),
            reporters: BTreeMap::new(),
            promoted: Vec::new(),
            must_compact: false,
            audit_rounds: BTreeMap::new(),
            audits_decided: VecDeque::new(),
            proofs: VecDeque::new(),
            checkpoints: VecDeque::new(),
            convicted: Vec::new(),
            replaying: false,
        };
        // The recovered state before the journal's epochs, whose reports `history` now gets.
        live.checkpoint();
        // Replay: each applied epoch ends with a tick at its time; reports are counted as
        // applied; proposals' outcomes are rebuilt as they were decided.
        let mut epoch = None;
        for e in &recovered.entries {
            // Before an epoch's first entry: who may report in it.
            let this = epoch_of(e.at());
            if epoch != Some(this) {
                epoch = Some(this);
                let set = live.reporters_at(this);
                live.reporters.insert(this, set);
            }
            match e {
                Entry::Tick { at } => {
                    live.next_epoch = at / HOUR;
                    live.history.entry(epoch_of(*at)).or_default();
                }
                Entry::Input { at, input: Input::Report(r) } => {
                    live.applied += 1;
                    live.taken.insert((r.signer, r.body.epoch), r.digest());
                    live.keep(epoch_of(*at), r.clone());
                }
                _ => {}
            }
            live.apply_entry(e);
        }
        let next = live.next_epoch;
        live.reporters.retain(|e, _| *e + AHEAD >= next);
        // A crash between journaling an epoch that convicted a reporter and taking its forked
        // report out: take it out now.
        live.undo_forks()?;
        Ok(live)
    }

    /// Keeps the state as it is now, before epoch `next_epoch`.
    fn checkpoint(&mut self) {
        let at = self.next_epoch.checked_sub(1).map_or(0, epoch_time);
        self.checkpoints.push_back(Checkpoint {
            next: self.next_epoch,
            snapshot: self.ledger.snapshot(at),
            open_proposals: self.open_proposals.clone(),
            closed: self.closed.clone(),
            audit_rounds: self.audit_rounds.clone(),
            audits_decided: self.audits_decided.clone(),
        });
        while self.checkpoints.len() > CHECKPOINTS {
            self.checkpoints.pop_front();
        }
    }

    /// Takes out of the ledger's past the reports whose reporter the last epochs convicted of
    /// equivocation, when this node applied one: the nodes that applied the fork's one report
    /// and those that applied the other then reach the same state — as if the reporter had sent
    /// neither (see [`Live::rebuild`]). A fork older than every checkpoint is not undone (logged):
    /// this node's state then stays apart from that of nodes that applied the other report.
    fn undo_forks(&mut self) -> Result<(), Error> {
        // A rebuild may prove forks of epochs before the checkpoint it started from (a report
        // it now applies carries the proof): those are taken out by the next pass.
        for _ in 0..MAX_REPLAYS {
            if self.convicted.is_empty() {
                break;
            }
            self.undo_forks_once()?;
        }
        Ok(())
    }

    fn undo_forks_once(&mut self) -> Result<(), Error> {
        let convicted = std::mem::take(&mut self.convicted);
        for (x, e) in convicted.iter().filter(|(_, e)| *e < self.next_epoch && !self.history.contains_key(e)) {
            tracing::warn!(
                reporter = %hex::encode(&x[..4]),
                epoch = e,
                "a report proven forked is of an epoch this node no longer keeps (before a restart or its last snapshot): not taken out"
            );
        }
        let applied = |(x, e): &&(NodeId, u64)| self.history.get(e).is_some_and(|rs| rs.iter().any(|r| r.signer == *x));
        // A fork older than every checkpoint cannot be taken out; the newer ones still are.
        let (reachable, too_old): (Vec<u64>, Vec<u64>) =
            convicted.iter().filter(applied).map(|(_, e)| *e).partition(|e| self.checkpoint_before(*e).is_some());
        for e in too_old {
            tracing::warn!(epoch = e, "a report proven forked is older than this node's checkpoints: not taken out");
        }
        let Some(first) = reachable.into_iter().min() else { return Ok(()) };
        let from = self.checkpoint_before(first).map(|i| self.checkpoints[i].next);
        if !self.rebuild(first, &convicted)? {
            return Ok(());
        }
        tracing::warn!(
            from = first,
            epochs = self.next_epoch - from.unwrap_or(first),
            digest = %hex::encode(&self.ledger.digest()[..8]),
            "forked reports taken out of the ledger's past"
        );
        Ok(())
    }

    /// The last checkpoint not after epoch `first` from which every epoch since can be applied
    /// again (all kept in `history`).
    fn checkpoint_before(&self, first: u64) -> Option<usize> {
        let end = self.next_epoch;
        self.checkpoints.iter().rposition(|c| c.next <= first && (c.next..end).all(|e| self.history.contains_key(&e)))
    }

    /// Of an epoch's reports (none proven forked), the one it applies — the first in [`rank`]
    /// of those whose reporters the ledger, as it stands before the epoch, lets report — and
    /// the others.
    fn choose(&self, epoch: u64, mut reports: Vec<Signed<Report>>) -> (Option<Signed<Report>>, Vec<Signed<Report>>) {
        let at = epoch_time(epoch);
        let best = reports
            .iter()
            .enumerate()
            .filter(|(_, r)| self.ledger.may_report(&r.signer, at))
            .min_by_key(|(_, r)| (rank(&self.ledger, epoch, &r.signer), r.digest()))
            .map(|(i, _)| i);
        let winner = best.map(|i| reports.swap_remove(i));
        (winner, reports)
    }

    /// Who the ledger, as it stands now (before epoch `epoch`), lets report in it.
    fn reporters_at(&self, epoch: u64) -> HashSet<NodeId> {
        let at = epoch_time(epoch);
        self.ledger.nodes().map(|(id, _)| *id).filter(|id| self.ledger.may_report(id, at)).collect()
    }

    /// (reporter, epoch) of every fork the ledger holds proven from epoch `from` on.
    fn forked_since(&self, from: u64) -> HashSet<(NodeId, u64)> {
        self.ledger
            .nodes()
            .flat_map(|(id, r)| r.forked.iter().filter(|e| **e >= from).map(move |e| (*id, *e)))
            .collect()
    }

    /// The reports applied in epochs `from..end` (those kept in `history` and not left out as
    /// forked, counting the forks in `still_in` as not yet taken out), in epoch order.
    fn applied_in(&self, from: u64, end: u64, still_in: &[(NodeId, u64)]) -> Vec<Signed<Report>> {
        let mut forked = self.forked_since(from);
        for k in still_in {
            forked.remove(k);
        }
        let mut out = Vec::new();
        for (e, reports) in self.history.range(from..end) {
            out.extend(reports.iter().filter(|r| !forked.contains(&(r.signer, *e))).cloned());
        }
        out
    }

    /// Keeps an epoch's outranked reports: those whose reporters could report in it first
    /// (`reporters`), then by rank, at most [`OUTRANKED_PER_EPOCH`] and [`OUTRANKED_BYTES`].
    /// Returns the digests it kept.
    fn park(&mut self, epoch: u64, mut reports: Vec<Signed<Report>>) -> HashSet<[u8; 32]> {
        let could = |k: &NodeId| self.reporters.get(&epoch).is_some_and(|s| s.contains(k));
        reports.sort_by_cached_key(|r| (!could(&r.signer), rank(&self.ledger, epoch, &r.signer), r.digest()));
        let (mut kept, mut bytes) = (Vec::new(), 0);
        for r in reports.into_iter().take(OUTRANKED_PER_EPOCH) {
            let mut b = Vec::new();
            vain_core::codec::encode_signed(&r, &mut b);
            if bytes + b.len() > OUTRANKED_BYTES {
                break;
            }
            bytes += b.len();
            kept.push(r);
        }
        let digests = kept.iter().map(Signed::digest).collect();
        if !kept.is_empty() {
            self.outranked.insert(epoch, kept);
        }
        digests
    }

    /// Rebuilds the state from the last checkpoint not after epoch `first`: every epoch since is
    /// applied again with the best of its reports, applied or outranked ([`Live::choose`]),
    /// leaving out those whose reporter is proven to have forked that epoch — so a report taken
    /// out (forked) or outranked late (a better one came) leaves the state every node that took
    /// the same reports reaches. The forks the replayed reports themselves prove decide too:
    /// the replay runs again while they change. Governance only a report no longer applied
    /// carried goes back to the pool; reports newly applied are handed out to pass on
    /// ([`Live::take_promoted`]). A changed state is written as the snapshot. False (nothing
    /// done) when no checkpoint reaches back to `first`.
    ///
    /// `convicted` are the forks proven since the last rebuild, whose reports are still applied.
    fn rebuild(&mut self, first: u64, convicted: &[(NodeId, u64)]) -> Result<bool, Error> {
        let Some(i) = self.checkpoint_before(first) else { return Ok(false) };
        let (from, end) = (self.checkpoints[i].next, self.next_epoch);
        let before = self.applied_in(from, end, convicted);
        let proven_before = self.forked_since(0);
        // Every fork proven so far since the checkpoint, not only the new ones: an earlier one
        // was taken out of the state being replaced too.
        let mut dropped = self.forked_since(from);
        let mut settled = false;
        for _ in 0..MAX_REPLAYS {
            // The same checkpoint each time: the replay makes it again first.
            let Some(i) = self.checkpoint_before(from) else { break };
            self.replay(i, end, &dropped);
            let now = self.forked_since(from);
            if now == dropped {
                settled = true;
                break;
            }
            dropped = now;
        }
        if !settled {
            tracing::warn!(from, end, "the reports a rebuild applies kept proving other forks: stopped replaying");
        }
        // Forks the replayed reports prove of epochs before the checkpoint: the next pass of
        // `undo_forks` takes their reports out.
        for k in self.forked_since(0).difference(&proven_before) {
            if k.1 < from {
                self.convicted.push(*k);
            }
        }
        let after = self.applied_in(from, end, &[]);
        // Governance that only a report no longer applied carried is applied nowhere now: back
        // to the pool, for the next report to carry (unless it no longer qualifies).
        let after_digests: HashSet<[u8; 32]> = after.iter().map(Signed::digest).collect();
        let before_digests: HashSet<[u8; 32]> = before.iter().map(Signed::digest).collect();
        let carried_again: HashSet<[u8; 32]> =
            after.iter().flat_map(|r| r.body.governance.iter().map(Governed::digest)).collect();
        let orphans: Vec<Governed> = before
            .iter()
            .filter(|r| !after_digests.contains(&r.digest()))
            .flat_map(|r| r.body.governance.iter().cloned())
            .collect();
        for g in orphans {
            let d = g.digest();
            if carried_again.contains(&d) {
                continue;
            }
            if self.carried.0.remove(&d) {
                self.carried.1.retain(|x| *x != d);
            }
            let _ = self.submit(g);
        }
        self.promoted.extend(after.into_iter().filter(|r| !before_digests.contains(&r.digest())));
        if before_digests != after_digests {
            self.must_compact = true;
        }
        if self.must_compact {
            self.compact(epoch_time(end - 1))?;
        }
        Ok(true)
    }

    /// Applies epochs from checkpoint `i` up to `end` again, each with the best of its
    /// reports (applied or outranked) not in `dropped`.
    fn replay(&mut self, i: usize, end: u64, dropped: &HashSet<(NodeId, u64)>) {
        self.checkpoints.truncate(i + 1);
        let Some(c) = self.checkpoints.pop_back() else { return };
        self.ledger = Ledger::from_snapshot(c.snapshot);
        (self.open_proposals, self.closed, self.audit_rounds, self.audits_decided) =
            (c.open_proposals, c.closed, c.audit_rounds, c.audits_decided);
        self.replaying = true;
        for epoch in c.next..end {
            self.next_epoch = epoch;
            if epoch == c.next || epoch.is_multiple_of(CHECKPOINT_EVERY) {
                self.checkpoint();
            }
            let at = epoch_time(epoch);
            let all = self
                .history
                .remove(&epoch)
                .unwrap_or_default()
                .into_iter()
                .chain(self.outranked.remove(&epoch).unwrap_or_default());
            let (left_out, candidates): (Vec<Signed<Report>>, Vec<Signed<Report>>) =
                all.partition(|r| dropped.contains(&(r.signer, epoch)));
            if epoch + AHEAD >= end {
                let set = self.reporters_at(epoch);
                self.reporters.insert(epoch, set);
            }
            let (winner, losers) = self.choose(epoch, candidates);
            self.park(epoch, losers);
            // As `drain` keeps them: the applied report first, then those left out.
            self.history.insert(epoch, winner.iter().cloned().chain(left_out).collect());
            if let Some(r) = winner {
                self.apply_entry(&Entry::Input { at, input: Input::Report(r) });
            }
            self.apply_entry(&Entry::Tick { at });
        }
        self.replaying = false;
        self.next_epoch = end;
    }

    /// The reports a rebuild started applying since the last call, to pass on: a node that
    /// has only the report it took out or displaced would otherwise never apply them.
    pub fn take_promoted(&mut self) -> Vec<Signed<Report>> {
        std::mem::take(&mut self.promoted)
    }

    /// A report for an epoch already applied, from a reporter that gave none for it: kept among
    /// the epoch's outranked reports, and — when it outranks the applied one — the past is
    /// rebuilt with it. Refused as stale when the epoch is older than the checkpoints or the
    /// last [`AHEAD`] epochs (or its reporter is proven to have forked it), as ineligible when
    /// the ledger did not let its reporter report in that epoch (so no key can make a node
    /// rebuild).
    fn contend(&mut self, r: Signed<Report>) -> Result<Offer, Error> {
        let e = r.body.epoch;
        let Some(reporters) = self.reporters.get(&e) else { return Ok(Offer::Stale) };
        if !self.history.contains_key(&e)
            || self.checkpoint_before(e).is_none()
            || self.ledger.record(&r.signer).is_some_and(|rec| rec.forked.contains(&e))
        {
            return Ok(Offer::Stale);
        }
        if !reporters.contains(&r.signer) {
            return Ok(Offer::Ineligible);
        }
        let (d, signer) = (r.digest(), r.signer);
        // The state before the epoch is what it was: a report that ranks after the applied one
        // cannot displace it.
        let forked = |k: &NodeId| self.ledger.record(k).is_some_and(|rec| rec.forked.contains(&e));
        let applied = self.history[&e].iter().find(|x| !forked(&x.signer)).map(|x| rank(&self.ledger, e, &x.signer));
        let behind = applied.is_some_and(|a| a < rank(&self.ledger, e, &r.signer));
        let mut parked = self.outranked.remove(&e).unwrap_or_default();
        parked.push(r);
        // Taken only when kept: one past the bounds may come again once there is room.
        if !self.park(e, parked).contains(&d) {
            return Ok(Offer::Outranked);
        }
        self.taken.insert((signer, e), d);
        remember(&mut self.seen, d);
        if behind {
            return Ok(Offer::Outranked);
        }
        self.rebuild(e, &[])?;
        self.undo_forks()?;
        let now_applied = self.history.get(&e).is_some_and(|h| h.iter().any(|x| x.digest() == d));
        if now_applied {
            self.promoted.retain(|x| x.digest() != d);
            tracing::info!(epoch = e, digest = %hex::encode(&self.ledger.digest()[..8]), "a better report for an applied epoch: the past rebuilt with it");
        }
        Ok(if now_applied { Offer::Replaced } else { Offer::Outranked })
    }

    /// Applies one journaled entry and follows what it decided: proposals it opened, their
    /// outcomes, the governance inputs its report carried (out of the pool).
    fn apply_entry(&mut self, e: &Entry) {
        // A tick closes proposals and the ledger forgets their ballots: count the votes first.
        let mut counts: BTreeMap<ProposalId, BTreeMap<&'static str, usize>> = BTreeMap::new();
        if matches!(e, Entry::Tick { .. }) {
            for (id, _, ballot) in self.ledger.proposals() {
                let c = counts.entry(*id).or_default();
                for (_, choice) in ballot.choices() {
                    *c.entry(choice_name(choice)).or_default() += 1;
                }
            }
        }
        e.apply(&mut self.ledger);
        if let Entry::Input { input: Input::Report(r), .. } = e {
            for g in &r.body.governance {
                let d = g.digest();
                self.unpool(&d);
                remember(&mut self.carried, d);
                if let Governed::Propose(p) = g
                    && self.ledger.proposals().any(|(id, _, _)| *id == d)
                {
                    self.open_proposals.insert(d, p.clone());
                }
            }
        }
        while let Some(out) = self.ledger.poll() {
            match out {
                Output::ProposalClosed { id, outcome, tally } => {
                    if let Some(proposal) = self.open_proposals.remove(&id) {
                        let votes = counts.remove(&id).unwrap_or_default();
                        self.closed.push_front(Closed { proposal, votes, outcome, tally });
                        self.closed.truncate(CLOSED_KEPT);
                    }
                }
                Output::ParameterSet { name, value } if !self.replaying => {
                    tracing::info!(parameter = %name, value, "a passed proposal set a ledger parameter");
                }
                Output::ParameterRefused { name, error } if !self.replaying => {
                    tracing::warn!(parameter = %name, %error, "a passed proposal's parameter change no longer applies: nothing changed");
                }
                Output::Forked { node, epoch } if !self.replaying => {
                    tracing::warn!(node = %hex::encode(&node[..4]), epoch, "equivocation proven: reporter penalised");
                    self.convicted.push((node, epoch));
                }
                Output::AuditOpened { audit, subject, round, team } => {
                    tracing::info!(audit = %hex::encode(&audit[..4]), subject = %hex::encode(&subject[..4]), round, team = team.len(), "audit opened");
                    self.audit_rounds.insert(audit, round);
                }
                Output::AuditExpired { audit, subject } => {
                    let round = self.audit_rounds.remove(&audit).unwrap_or(0);
                    self.audits_decided.push_front(AuditRow {
                        id: hex::encode(audit),
                        subject: hex::encode(subject),
                        round,
                        team: Vec::new(),
                        state: "expired",
                    });
                    self.audits_decided.truncate(CLOSED_KEPT);
                }
                Output::AuditDecided { audit, subject, pass } => {
                    let round = self.audit_rounds.remove(&audit).unwrap_or(0);
                    tracing::info!(audit = %hex::encode(&audit[..4]), subject = %hex::encode(&subject[..4]), round, pass, "audit decided");
                    self.audits_decided.push_front(AuditRow {
                        id: hex::encode(audit),
                        subject: hex::encode(subject),
                        round,
                        team: Vec::new(),
                        state: if pass { "passed" } else { "failed" },
                    });
                    self.audits_decided.truncate(CLOSED_KEPT);
                }
                _ => {}
            }
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The next epoch to apply.
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch
    }

    /// Every node's tier now (at the last applied epoch).
    pub fn tiers(&self) -> std::collections::HashMap<NodeId, u8> {
        let now = epoch_time(self.next_epoch.saturating_sub(1));
        self.ledger.nodes().map(|(id, _)| (*id, self.ledger.tier(id, now))).collect()
    }

    /// `node`'s tier now (0 for a node the ledger does not know, or keeps out).
    pub fn tier(&self, node: &NodeId) -> u8 {
        self.ledger.tier(node, self.now())
    }

    /// Open audits whose team includes `me`: (audit, subject, round).
    pub fn audits_for(&self, me: &NodeId) -> Vec<([u8; 32], NodeId, u64)> {
        self.ledger
            .audits()
            .filter(|(_, _, _, team)| team.contains(me))
            .map(|(id, subject, round, _)| (id, subject, round))
            .collect()
    }

    /// Whether `node` may report evidence now (pre-trusted, or at the reporting tier): whom
    /// this node takes testimony and challenges from.
    pub fn may_report(&self, node: &NodeId) -> bool {
        self.ledger.may_report(node, self.now())
    }

    /// Whether the network keeps `node` out of aggregating now: the ledger banned or suspended
    /// it, or this node holds a proof, not yet carried by a report, that it signed two reports
    /// for one epoch. Its opens are refused and it neither leads nor is followed — so a leader
    /// cannot keep the proof against itself out of the ledger by leaving it out of its reports.
    pub fn kept_out(&self, node: &NodeId) -> bool {
        let now = self.now();
        self.ledger.record(node).is_some_and(|r| r.banned || r.suspended_until.is_some_and(|u| now < u))
            || self.pool.values().any(|g| matches!(g, Governed::Fork(f) if f.signer == *node))
    }

    /// Whether `node` may aggregate now: the ledger lets it (pre-trusted, or at the aggregating
    /// tier `aggregate_from`, and neither suspended nor banned) and this node does not keep it
    /// out ([`Live::kept_out`]). Clients take opens only from such an aggregator, and an
    /// aggregator leads only when it is one.
    pub fn may_aggregate(&self, node: &NodeId) -> bool {
        self.ledger.may_aggregate(node, self.now()) && !self.kept_out(node)
    }

    /// The nodes the ledger knows that [`Live::may_aggregate`] (for the control plane's `agg/`
    /// directory).
    pub fn aggregators(&self) -> HashSet<NodeId> {
        self.ledger.nodes().map(|(id, _)| *id).filter(|id| self.may_aggregate(id)).collect()
    }

    /// The nodes that [`Live::may_report`]: the pre-trusted ones and those the ledger knows at
    /// the reporting tier (where local-trust vectors go: only a report carries them).
    pub fn reporters(&self) -> HashSet<NodeId> {
        let pre = self.ledger.config().pretrusted.iter().copied();
        pre.chain(self.ledger.nodes().map(|(id, _)| *id)).filter(|id| self.may_report(id)).collect()
    }

    /// The nodes the ledger has banned (the planes refuse them: connections, handshakes,
    /// updates).
    pub fn banned(&self) -> Vec<NodeId> {
        self.ledger.nodes().filter(|(_, r)| r.banned).map(|(id, _)| *id).collect()
    }

    /// Takes a report; applies every epoch that is now complete. A journal failure is an
    /// error (nothing unjournaled is applied).
    pub fn offer(&mut self, r: Signed<Report>) -> Result<Offer, Error> {
        let mut verdict = self.classify(&r);
        if verdict == Offer::Stale {
            verdict = self.contend(r.clone())?;
        }
        *self.offers.entry(verdict.reason()).or_default() += 1;
        match verdict {
            Offer::New | Offer::Duplicate | Offer::Stale | Offer::Outranked | Offer::Replaced => {}
            _ => tracing::warn!(epoch = r.body.epoch, outcome = verdict.reason(), "evidence refused"),
        }
        if verdict == Offer::Equivocation {
            self.prove(r);
            return Ok(verdict);
        }
        if verdict == Offer::New {
            let d = r.digest();
            self.taken.insert((r.signer, r.body.epoch), d);
            remember(&mut self.seen, d);
            self.pending.entry(r.body.epoch).or_default().insert(d, r);
            self.drain()?;
        }
        Ok(verdict)
    }

    /// Makes the proof that `second`'s reporter signed two reports for its epoch, from the one
    /// this node took (when it still holds it), and holds it for the next report.
    fn prove(&mut self, second: Signed<Report>) {
        let e = second.body.epoch;
        let Some(d) = self.taken.get(&(second.signer, e)).copied() else { return };
        let first = self
            .pending
            .get(&e)
            .and_then(|p| p.get(&d))
            .or_else(|| self.history.get(&e).and_then(|h| h.iter().find(|r| r.digest() == d)))
            .or_else(|| self.outranked.get(&e).and_then(|h| h.iter().find(|r| r.digest() == d)))
            .cloned();
        let Some(first) = first else { return };
        let proof = Governed::Fork(Box::new(vain_core::ledger::Fork::new(&first, &second)));
        if self.submit(proof.clone()) == Submit::New {
            tracing::warn!(reporter = %hex::encode(&proof.signer()[..4]), epoch = e, "reporter equivocated: proof held for the next report");
            if self.proofs.len() < POOL_PER_AUTHOR {
                self.proofs.push_back(proof);
            }
        }
    }

    /// The equivocation proofs this node built since the last call (to pass on to its peers,
    /// like any governance input it holds).
    pub fn take_proofs(&mut self) -> Vec<Governed> {
        self.proofs.drain(..).collect()
    }

    fn classify(&self, r: &Signed<Report>) -> Offer {
        let mut b = Vec::new();
        vain_core::codec::encode_signed(r, &mut b);
        let forks: Vec<&Governed> = r.body.governance.iter().filter(|g| matches!(g, Governed::Fork(_))).collect();
        let fork_bytes: usize = forks.iter().map(|g| encoded_len(g)).sum();
        if forks.len() > MAX_FORKS_PER_REPORT || b.len() - fork_bytes > MAX_REPORT_BYTES {
            return Offer::TooLarge;
        }
        let d = r.digest();
        if self.seen.0.contains(&d) {
            return Offer::Duplicate;
        }
        if r.verify().is_err() {
            return Offer::BadSignature;
        }
        let e = r.body.epoch;
        if e < self.next_epoch {
            return match self.taken.get(&(r.signer, e)) {
                Some(x) if *x == d => Offer::Duplicate,
                Some(_) => Offer::Equivocation,
                None => Offer::Stale,
            };
        }
        if e > self.next_epoch.saturating_add(AHEAD) {
            return Offer::TooFarAhead;
        }
        // Only an eligible reporter may complete an epoch (or fill the buffer).
        if !self.ledger.may_report(&r.signer, epoch_time(self.next_epoch.saturating_sub(1))) {
            return Offer::Ineligible;
        }
        match self.taken.get(&(r.signer, e)) {
            Some(x) if *x == d => Offer::Duplicate,
            Some(_) => Offer::Equivocation,
            None => Offer::New,
        }
    }

    /// Applies the next epochs while their reports are here: an epoch is complete once it has
    /// one, and applies the best of those it has ([`Live::choose`]).
    fn drain(&mut self) -> Result<(), Error> {
        while let Some(reports) = self.pending.remove(&self.next_epoch) {
            // A report buffered before its reporter was proven to have forked this very epoch
            // (a proof may come up to 64 epochs ahead): every node leaves it out alike, and keeps
            // it only to serve peers catching up (who leave it out too).
            let e = self.next_epoch;
            let forked: HashSet<NodeId> = reports
                .values()
                .map(|r| r.signer)
                .filter(|k| self.ledger.record(k).is_some_and(|rec| rec.forked.contains(&e)))
                .collect();
            let (left_out, candidates): (Vec<Signed<Report>>, Vec<Signed<Report>>) =
                reports.values().cloned().partition(|r| forked.contains(&r.signer));
            if self.next_epoch.is_multiple_of(CHECKPOINT_EVERY)
                && self.checkpoints.back().is_none_or(|c| c.next < self.next_epoch)
            {
                self.checkpoint();
            }
            let at = epoch_time(self.next_epoch);
            // A rebuild's state not yet in the snapshot: write it before the journal grows on
            // top of the old one.
            if self.must_compact
                && let Err(err) = self.compact(epoch_time(e.saturating_sub(1)))
            {
                self.pending.insert(e, reports);
                return Err(err);
            }
            let set = self.reporters_at(e);
            self.reporters.insert(e, set);
            let (winner, losers) = self.choose(e, candidates);
            // Ranked by who could report in this epoch: before it applies.
            let outranked = losers.iter().map(Signed::digest).collect::<Vec<_>>();
            self.park(e, losers);
            let mut entries: Vec<Entry> =
                winner.iter().map(|r| Entry::Input { at, input: Input::Report(r.clone()) }).collect();
            entries.push(Entry::Tick { at });
            // Journal first: what is applied survives a crash, and replays identically. A failed
            // write applies nothing and keeps the epoch's reports for the next try.
            if let Err(e) = self.store.append(&entries) {
                self.pending.insert(self.next_epoch, reports);
                return Err(e.into());
            }
            for e in &entries {
                if let Entry::Input { input: Input::Report(r), .. } = e {
                    self.applied += 1;
                    self.keep(self.next_epoch, r.clone());
                }
                self.apply_entry(e);
            }
            for r in left_out {
                self.keep(self.next_epoch, r);
            }
            if !outranked.is_empty() {
                tracing::debug!(epoch = e, outranked = outranked.len(), "reports outranked by the epoch's applied one");
            }
            self.history.entry(self.next_epoch).or_default();
            self.expire_pool();
            tracing::debug!(epoch = self.next_epoch, digest = %hex::encode(&self.ledger.digest()[..8]), "ledger epoch applied");
            self.applied_at.push_back((self.next_epoch, vain_schema::clock::unix_ms()));
            if self.applied_at.len() > 64 {
                self.applied_at.pop_front();
            }
            self.next_epoch += 1;
            self.taken.retain(|(_, e), _| *e + AHEAD >= self.next_epoch);
            self.outranked.retain(|e, _| *e + AHEAD >= self.next_epoch);
            self.reporters.retain(|e, _| *e + AHEAD >= self.next_epoch);
            self.since_snapshot += entries.len() as u64;
            // The epoch is journaled: a crash from here on redoes what follows at recovery.
            if !self.convicted.is_empty() {
                self.undo_forks()?;
            }
            if self.since_snapshot >= self.compact_every {
                self.compact(at)?;
            }
        }
        Ok(())
    }

    /// Compacts now (as every [`Config::compact_every`] journal entries): the state after the
    /// last applied epoch becomes the snapshot and the journal is emptied.
    pub fn compact_now(&mut self) -> Result<(), Error> {
        let at = epoch_time(self.next_epoch.saturating_sub(1));
        self.compact(at)
    }

    /// Writes the ledger's state after the tick at `at` as its snapshot (durably: a temporary
    /// file synced, renamed over the old one, the directory synced), then empties the journal.
    /// A crash before the directory sync keeps the old snapshot and the whole journal; after
    /// it, the journal's entries up to `at` are skipped on recovery.
    fn compact(&mut self, at: Time) -> Result<(), Error> {
        let path = self.dir.join("ledger.snapshot");
        let bytes =
            self.ledger.snapshot(at).encode().map_err(|source| Error::Snapshot { path: path.clone(), source })?;
        vain_core::storage::replace(self.storage.as_ref(), &path, &bytes, 0o644)
            .map_err(|source| Error::Io { path: path.clone(), source })?;
        self.store.restart()?;
        tracing::info!(epoch = at / HOUR - 1, bytes = bytes.len(), entries = self.since_snapshot, "ledger compacted");
        self.since_snapshot = 0;
        self.must_compact = false;
        self.snapshot_epoch = Some(at / HOUR - 1);
        Ok(())
    }

    fn keep(&mut self, epoch: u64, r: Signed<Report>) {
        self.history.entry(epoch).or_default().push(r);
        while self.history.len() > HISTORY {
            self.history.pop_first();
        }
    }

    /// The reports of applied epochs from `from` on, in epoch order, for a peer that missed
    /// them: whole epochs only (each one's applied report and those left out as forked), at
    /// most `max_epochs` of them and about `max_bytes` (at least one epoch when there is one),
    /// with the epochs' outranked reports that fit in `max_bytes`. Empty when `from` is not
    /// applied here, or no longer kept.
    pub fn history(&self, from: u64, max_epochs: usize, max_bytes: usize) -> Vec<Signed<Report>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let size = |r: &Signed<Report>| {
            let mut b = Vec::new();
            vain_core::codec::encode_signed(r, &mut b);
            b.len()
        };
        for (e, applied) in self.history.range(from..).take(max_epochs) {
            // The applied reports make the epoch (at least one epoch, whatever its size) …
            let n: usize = applied.iter().map(size).sum();
            if !out.is_empty() && bytes + n > max_bytes {
                break;
            }
            bytes += n;
            out.extend(applied.iter().cloned());
            // … and the outranked ones come along while they fit: a peer that has them chooses
            // the same report again if the applied one is taken out.
            for r in self.outranked.get(e).into_iter().flatten() {
                let n = size(r);
                if bytes + n <= max_bytes {
                    bytes += n;
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// Ledger time as of the last applied epoch.
    fn now(&self) -> Time {
        epoch_time(self.next_epoch.saturating_sub(1))
    }

    /// Takes a proposal or vote to hold until a report carries it (the aggregator that closes
    /// the next round puts it in its report).
    pub fn submit(&mut self, g: Governed) -> Submit {
        let verdict = self.judge(&g);
        *self.submits.entry(verdict.reason()).or_default() += 1;
        if verdict == Submit::New {
            if let Governed::Trust(t) = &g {
                // A newer vector replaces the signer's held one (the ledger would too).
                let older: Vec<[u8; 32]> = self
                    .pool
                    .iter()
                    .filter(|(_, x)| matches!(x, Governed::Trust(o) if o.signer == t.signer))
                    .map(|(d, _)| *d)
                    .collect();
                for d in older {
                    self.unpool(&d);
                }
            }
            let size = encoded_len(&g);
            self.pool_bytes += size;
            self.pool_sizes.insert(g.digest(), size);
            self.pool.insert(g.digest(), g);
        }
        verdict
    }

    fn judge(&self, g: &Governed) -> Submit {
        let d = g.digest();
        if self.pool.contains_key(&d) || self.carried.0.contains(&d) {
            return Submit::Duplicate;
        }
        let verified = match g {
            Governed::Propose(p) => p.verify().is_ok(),
            Governed::Vote(v) => v.verify().is_ok(),
            Governed::Testimony(t) => t.verify().is_ok(),
            Governed::RequestAudit(q) => q.verify().is_ok(),
            Governed::Verdict(v) => v.verify().is_ok(),
            Governed::Trust(t) => t.verify().is_ok(),
            // Only inside a testimony.
            Governed::GaveUp(_) => return Submit::Invalid,
            Governed::Fork(f) => match f.check() {
                Ok(_) => true,
                Err(ledger::Error::Signature(_)) => false,
                Err(_) => return Submit::Invalid,
            },
        };
        if !verified {
            return Submit::BadSignature;
        }
        let author = g.signer();
        let (tier, need) = (self.ledger.tier(&author, self.now()), self.ledger.vote_from());
        // The earliest ledger time at which a report can still carry it.
        let next = epoch_time(self.next_epoch);
        match g {
            Governed::Fork(f) => {
                // Anyone may hand in a proof: it stands on the reporter's own signatures. One
                // the ledger would not apply is not carried.
                match self.ledger.fork_admissible(&author, f.epoch(), next) {
                    Ok(()) => {}
                    Err(ledger::Error::NotEligible { tier, .. }) => {
                        return Submit::Ineligible { tier, need: self.ledger.report_from() };
                    }
                    Err(ledger::Error::Value { .. }) => return Submit::Closed,
                    Err(_) => return Submit::Duplicate,
                }
            }
            Governed::RequestAudit(q) => {
                if tier < need && !self.ledger.is_pretrusted(&author) {
                    return Submit::Ineligible { tier, need };
                }
                // One open audit per subject: the ledger refuses a second.
                if self.ledger.audits().any(|(_, subject, _, _)| subject == q.body.subject) {
                    return Submit::Closed;
                }
            }
            Governed::Verdict(v) => match self.ledger.audits().find(|(id, _, _, _)| *id == v.body.audit) {
                None => return Submit::UnknownAudit,
                Some((_, subject, _, team)) => {
                    if subject != v.body.subject || !team.contains(&author) {
                        return Submit::NotOnTeam;
                    }
                }
            },
            Governed::Testimony(t) => {
                if !self.ledger.may_report(&author, self.now()) {
                    return Submit::Ineligible { tier, need: self.ledger.report_from() };
                }
                // The ledger applies a reporter's testimonies in increasing epochs only.
                let after = self.ledger.testified(&author);
                if after.is_some_and(|e| t.body.epoch <= e) {
                    return Submit::Closed;
                }
                match ledger::testimony_checked(t, after) {
                    Ok(()) => {}
                    Err(ledger::Error::Signature(_)) => return Submit::BadSignature,
                    Err(_) => return Submit::Invalid,
                }
            }
            Governed::Trust(t) => {
                if !self.ledger.may_vouch(&author, next) {
                    return Submit::Untrusted;
                }
                if !t.body.well_formed(&author) {
                    return Submit::Invalid;
                }
                let rec = self.ledger.record(&author);
                // The ledger takes a signer's vectors in increasing epochs only.
                let held = self.pool.values().filter_map(|x| match x {
                    Governed::Trust(o) if o.signer == author => Some(o.body.epoch),
                    _ => None,
                });
                if rec.and_then(|r| r.trust_epoch).into_iter().chain(held).any(|e| t.body.epoch <= e) {
                    return Submit::Closed;
                }
                // A newer vector replaces the signer's held one: it never needs room of its own.
                let replaces = self.pool.values().any(|x| matches!(x, Governed::Trust(o) if o.signer == author));
                if replaces {
                    return if encoded_len(g) > GOVERNANCE_BYTES { Submit::Invalid } else { Submit::New };
                }
                if self.pool.values().filter(|x| matches!(x, Governed::Trust(_))).count() >= POOL_TRUST {
                    return Submit::Full;
                }
            }
            Governed::GaveUp(_) => return Submit::Invalid,
            Governed::Propose(p) => {
                if tier < need && !self.ledger.is_pretrusted(&author) {
                    return Submit::Ineligible { tier, need };
                }
                // A parameter that does not exist, or a value it may not take: every ledger
                // would refuse the proposal.
                if let Kind::SetParameter { name, value } = &p.body.kind
                    && self.ledger.config().clone().set(name, *value).is_err()
                {
                    return Submit::Invalid;
                }
                if p.body.closes <= next
                    || p.body.closes <= p.body.opens
                    || p.body.closes - p.body.opens > MAX_VOTING_WINDOW
                {
                    return Submit::Closed;
                }
                // The ledger refuses more open proposals by one author: do not carry them.
                let open = self.ledger.proposals().filter(|(_, q, _)| q.signer == author).count();
                if open >= MAX_OPEN_PER_PROPOSER {
                    return Submit::Full;
                }
            }
            Governed::Vote(v) => {
                if tier < need {
                    return Submit::Ineligible { tier, need };
                }
                let closes = self
                    .ledger
                    .proposals()
                    .find(|(id, _, _)| **id == v.body.proposal)
                    .map(|(_, p, _)| p.body.closes)
                    .or_else(|| match self.pool.get(&v.body.proposal) {
                        Some(Governed::Propose(p)) => Some(p.body.closes),
                        _ => None,
                    });
                match closes {
                    None => return Submit::UnknownProposal,
                    Some(c) if c <= next => return Submit::Closed,
                    Some(_) => {}
                }
            }
        }
        // A proof's signer is the reporter it convicts, not who handed it in: proofs count against
        // a reporter's proofs only, so its own inputs cannot crowd out the proofs against it.
        let is_fork = |x: &Governed| matches!(x, Governed::Fork(_));
        let same = self.pool.values().filter(|x| x.signer() == author && is_fork(x) == is_fork(g)).count();
        if self.pool.len() >= POOL || same >= POOL_PER_AUTHOR {
            return Submit::Full;
        }
        let size = encoded_len(g);
        if !matches!(g, Governed::Fork(_)) && size > GOVERNANCE_BYTES {
            // No report could carry it.
            return Submit::Invalid;
        }
        if self.pool_bytes + size > POOL_BYTES {
            return Submit::Full;
        }
        Submit::New
    }

    /// The digests of the inputs held for the next report (what a [`Live::pool_missing`] of a
    /// peer is asked with).
    pub fn pool_digests(&self) -> Vec<[u8; 32]> {
        self.pool.keys().copied().collect()
    }

    /// The held inputs whose digests are not in `known` (a peer's pool): at most `max_items`, and
    /// about `max_bytes` (at least one when there is one), from a place in the pool that moves
    /// with `turn` — so inputs a peer keeps refusing (and so keeps lacking) cannot fill every
    /// answer and hide the rest. Local-trust vectors only `with_trust` (to a reporter: nobody
    /// else carries them).
    pub fn pool_missing(
        &self,
        known: &[[u8; 32]],
        max_items: usize,
        max_bytes: usize,
        turn: u64,
        with_trust: bool,
    ) -> Vec<Governed> {
        let known: HashSet<&[u8; 32]> = known.iter().collect();
        let missing: Vec<&Governed> = self
            .pool
            .iter()
            .filter(|(d, g)| !known.contains(d) && (with_trust || !matches!(g, Governed::Trust(_))))
            .map(|(_, g)| g)
            .collect();
        let start = if missing.is_empty() { 0 } else { (turn % missing.len() as u64) as usize };
        let mut out = Vec::new();
        let mut bytes = 0;
        for g in missing[start..].iter().chain(&missing[..start]) {
            let size = self.pool_sizes.get(&g.digest()).copied().unwrap_or_else(|| encoded_len(g));
            if out.len() >= max_items || (!out.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            out.push((*g).clone());
        }
        out
    }

    /// What the next report should carry: held proposals (by digest), then votes whose
    /// proposal's window has opened (the others wait: the ledger would refuse them), at most
    /// [`MAX_GOVERNANCE`].
    pub fn governance_for_report(&self) -> Vec<Governed> {
        let next = epoch_time(self.next_epoch);
        let opens: BTreeMap<ProposalId, Time> = self
            .ledger
            .proposals()
            .map(|(id, p, _)| (*id, p.body.opens))
            .chain(self.pool.iter().filter_map(|(d, g)| match g {
                Governed::Propose(p) => Some((*d, p.body.opens)),
                _ => None,
            }))
            .collect();
        let proposals = self.pool.values().filter(|g| matches!(g, Governed::Propose(_)));
        let votes = self.pool.values().filter(|g| match g {
            Governed::Vote(v) => opens.get(&v.body.proposal).is_some_and(|o| *o <= next),
            _ => false,
        });
        let audits = self.pool.values().filter(|g| matches!(g, Governed::RequestAudit(_) | Governed::Verdict(_)));
        // Testimonies in each reporter's epoch order (the ledger refuses one older than the
        // reporter's last).
        let mut testimonies: Vec<&Governed> =
            self.pool.values().filter(|g| matches!(g, Governed::Testimony(_))).collect();
        testimonies.sort_by_key(|g| match g {
            Governed::Testimony(t) => (t.body.epoch, t.signer),
            _ => (0, [0; 32]),
        });
        // The ledger applies one testimony per signer per report: the oldest goes now, the
        // next with the next report.
        let mut testifiers = HashSet::new();
        testimonies.retain(|g| testifiers.insert(g.signer()));
        // Local trust last: it changes only the next EigenTrust pass, and a signer's next vector
        // replaces it anyway.
        let mut vouches: Vec<&Governed> = self.pool.values().filter(|g| matches!(g, Governed::Trust(_))).collect();
        vouches.sort_by_key(|g| match g {
            Governed::Trust(t) => (t.body.epoch, t.signer),
            _ => (0, [0; 32]),
        });
        // Equivocation proofs first (they suspend a cheating reporter), oldest epoch first, at
        // most MAX_FORKS_PER_REPORT; the rest within GOVERNANCE_BYTES, so the report stays
        // within what every node takes.
        let mut forks: Vec<&Governed> = self.pool.values().filter(|g| matches!(g, Governed::Fork(_))).collect();
        forks.sort_by_key(|g| match g {
            Governed::Fork(f) => (f.epoch(), f.signer),
            _ => (0, [0; 32]),
        });
        forks.truncate(MAX_FORKS_PER_REPORT);
        let mut bytes = 0;
        let rest = proposals.chain(votes).chain(audits).chain(testimonies).chain(vouches).filter(|g| {
            let size = self.pool_sizes.get(&g.digest()).copied().unwrap_or(0);
            let fits = bytes + size <= GOVERNANCE_BYTES;
            if fits {
                bytes += size;
            }
            fits
        });
        forks.into_iter().chain(rest).take(MAX_GOVERNANCE).cloned().collect()
    }

    /// The choice `voter` made on `proposal`, as carried into the ledger or held here.
    pub fn vote_of(&self, voter: &NodeId, proposal: &ProposalId) -> Option<Choice> {
        let carried = self
            .ledger
            .proposals()
            .find(|(id, _, _)| *id == proposal)
            .and_then(|(_, _, b)| b.choices().find(|(k, _)| *k == voter).map(|(_, c)| c));
        carried.or_else(|| {
            self.pool.values().find_map(|g| match g {
                Governed::Vote(v) if v.signer == *voter && v.body.proposal == *proposal => Some(v.body.choice),
                _ => None,
            })
        })
    }

    /// Drops held inputs that no report can apply any more.
    fn expire_pool(&mut self) {
        let next = epoch_time(self.next_epoch);
        let open: BTreeMap<ProposalId, Time> = self.ledger.proposals().map(|(id, p, _)| (*id, p.body.closes)).collect();
        let held: BTreeMap<ProposalId, Time> = self
            .pool
            .iter()
            .filter_map(|(d, g)| match g {
                Governed::Propose(p) => Some((*d, p.body.closes)),
                _ => None,
            })
            .collect();
        let ledger = &self.ledger;
        let before: Vec<[u8; 32]> = self.pool.keys().copied().collect();
        self.pool.retain(|_, g| match g {
            Governed::Testimony(t) => {
                let after = ledger.testified(&t.signer);
                after.is_none_or(|e| t.body.epoch > e) && ledger::admissions_in_window(t, after)
            }
            Governed::Trust(t) => {
                ledger.may_vouch(&t.signer, next)
                    && ledger.record(&t.signer).is_none_or(|r| r.trust_epoch.is_none_or(|e| t.body.epoch > e))
            }
            Governed::Fork(f) => ledger.fork_admissible(&f.signer, f.epoch(), next).is_ok(),
            Governed::RequestAudit(q) => !ledger.audits().any(|(_, subject, _, _)| subject == q.body.subject),
            Governed::Verdict(v) => ledger.audits().any(|(id, _, _, _)| id == v.body.audit),
            Governed::Propose(p) => p.body.closes > next,
            Governed::Vote(v) => {
                open.get(&v.body.proposal).or_else(|| held.get(&v.body.proposal)).is_some_and(|c| *c > next)
            }
            Governed::GaveUp(_) => false,
        });
        for d in before {
            if !self.pool.contains_key(&d) {
                self.unpool(&d);
            }
        }
    }

    /// Forgets a held input (carried by a report, or expired).
    fn unpool(&mut self, d: &[u8; 32]) {
        self.pool.remove(d);
        if let Some(n) = self.pool_sizes.remove(d) {
            self.pool_bytes -= n;
        }
    }

    fn proposal_rows(&self) -> Vec<ProposalRow> {
        let now = self.now();
        let row = |p: &Signed<Proposal>, state, votes, tally: &Tally, leaning| ProposalRow {
            id: hex::encode(p.digest()),
            action: action(&p.body.kind),
            proposer: hex::encode(p.signer),
            opens_epoch: epoch_of(p.body.opens),
            closes_epoch: epoch_of(p.body.closes),
            state,
            votes,
            tally: tally_map(tally),
            leaning,
        };
        let mut rows: Vec<ProposalRow> = self
            .ledger
            .proposals()
            .map(|(id, p, ballot)| {
                let mut votes: BTreeMap<&'static str, usize> = BTreeMap::new();
                for (_, c) in ballot.choices() {
                    *votes.entry(choice_name(c)).or_default() += 1;
                }
                let (outcome, tally) = self.ledger.tally_at(id, now).unwrap_or((Outcome::NoQuorum, Tally::default()));
                row(p, "open", votes, &tally, Some(outcome_name(outcome)))
            })
            .collect();
        // Held, not yet carried by a report.
        rows.extend(self.pool.values().filter_map(|g| match g {
            Governed::Propose(p) => Some(row(p, "pending", BTreeMap::new(), &Tally::default(), None)),
            _ => None,
        }));
        rows.extend(
            self.closed.iter().map(|c| row(&c.proposal, outcome_name(c.outcome), c.votes.clone(), &c.tally, None)),
        );
        rows
    }

    /// The status `vain ledger status` prints.
    pub fn status(&self) -> Status {
        let now = epoch_time(self.next_epoch.saturating_sub(1));
        let nodes = self
            .ledger
            .nodes()
            .map(|(id, r)| {
                let (means, penalty) = self.ledger.evidence(id, now).unwrap_or_default();
                NodeRow {
                    id: hex::encode(&id[..4]),
                    key: hex::encode(id),
                    stake: r.stake,
                    suspensions: r.suspensions,
                    tier: self.ledger.tier(id, now),
                    score: r.score,
                    resource: means[vain_core::reputation::Source::Resource as usize],
                    participation: means[vain_core::reputation::Source::Participation as usize],
                    social: r.social,
                    vouches: self.ledger.trust_of(id).map_or(0, <[_]>::len),
                    penalty,
                    forked_epoch: r.forked.last().copied(),
                    standing: if r.banned {
                        "banned"
                    } else if r.suspended_until.is_some_and(|u| now < u) {
                        "suspended"
                    } else {
                        "active"
                    },
                }
            })
            .collect();
        Status {
            digest: hex::encode(self.ledger.digest()),
            next_epoch: self.next_epoch,
            applied: self.applied,
            snapshot_epoch: self.snapshot_epoch,
            journal_entries: self.since_snapshot,
            pending: self.pending.values().map(BTreeMap::len).sum(),
            offers: self.offers.clone(),
            applied_at_ms: self.applied_at.iter().copied().collect(),
            nodes,
            vote_from: self.ledger.vote_from(),
            parameters: self.ledger.config().parameters().into_iter().collect(),
            pool: self.pool.len(),
            pool_bytes: self.pool_bytes,
            submits: self.submits.clone(),
            proposals: self.proposal_rows(),
            audits: self
                .ledger
                .audits()
                .map(|(id, subject, round, team)| AuditRow {
                    id: hex::encode(id),
                    subject: hex::encode(subject),
                    round,
                    team: team.iter().map(hex::encode).collect(),
                    state: "open",
                })
                .chain(self.audits_decided.iter().cloned())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use vain_core::ledger::{Observation, Observed};

    /// `v`'s testimony for `epoch` that `node` failed a challenge, with the node's admission
    /// of `v`'s task labelled `epoch`.
    fn failure(v: &SigningKey, node: &SigningKey, epoch: u64) -> Governed {
        use vain_core::challenge::{GaveUp, Task, sized};
        let subject = node.verifying_key().to_bytes();
        let task = Signed::sign(v, Task { subject, epoch, challenge: sized(1e6, 2000, 0.5, 7, 0) });
        let admission = Governed::GaveUp(Signed::sign(node, GaveUp { task }));
        let observations = vec![Observation { subject, what: Observed::ChallengeFailed }];
        Governed::Testimony(Signed::sign(v, Report { epoch, observations, governance: vec![admission] }))
    }

    fn report(key: &SigningKey, epoch: u64, subject: u8, z: f64) -> Signed<Report> {
        let observations = vec![
            Observation { subject: [subject; 32], what: Observed::Participated },
            Observation { subject: [subject; 32], what: Observed::Anomaly { z } },
        ];
        Signed::sign(key, Report { epoch, observations, governance: Vec::new() })
    }

    #[test]
    fn any_arrival_order_gives_the_same_digest_and_a_restart_replays_to_it() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let cfg = || Config { pretrusted: vec![a.verifying_key().to_bytes()], ..Config::default() };
        let reports: Vec<_> =
            (0..6).map(|e| report(&a, e, 7 + (e % 3) as u8, if e == 3 { 9.0 } else { 0.5 })).collect();
        let d1 = tempfile::tempdir().expect("dir");
        let d2 = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d1.path(), cfg()).expect("open");
        let mut y = Live::open(d2.path(), cfg()).expect("open");
        for r in &reports {
            assert_eq!(x.offer(r.clone()).expect("offer"), Offer::New);
        }
        for r in reports.iter().rev() {
            assert_eq!(y.offer(r.clone()).expect("offer"), Offer::New);
        }
        assert_eq!(x.next_epoch(), 6);
        assert_eq!(y.next_epoch(), 6);
        assert_eq!(x.status().digest, y.status().digest);
        assert_eq!(x.status().applied, 6);
        // Duplicates, stale epochs, equivocation, far-future epochs, forgeries: refused.
        assert_eq!(x.offer(reports[2].clone()).expect("offer"), Offer::Duplicate);
        // Another report of an applied epoch: equivocation from its reporter; from a key that
        // may not report, refused before anything is rebuilt.
        assert_eq!(x.offer(report(&a, 2, 9, 0.1)).expect("offer"), Offer::Equivocation);
        assert_eq!(x.offer(report(&SigningKey::from_bytes(&[2; 32]), 2, 9, 0.1)).expect("offer"), Offer::Ineligible);
        assert_eq!(x.offer(report(&a, 6, 9, 0.1)).expect("offer"), Offer::New);
        assert_eq!(x.offer(report(&a, 6, 8, 0.1)).expect("offer"), Offer::Equivocation);
        assert_eq!(x.offer(report(&a, 6 + AHEAD + 2, 9, 0.1)).expect("offer"), Offer::TooFarAhead);
        // A key that is neither pre-trusted nor at the reporting tier cannot fill an epoch.
        assert_eq!(x.offer(report(&SigningKey::from_bytes(&[3; 32]), 7, 9, 0.1)).expect("offer"), Offer::Ineligible);
        assert_eq!(x.next_epoch(), 7);
        let mut forged = report(&a, 8, 9, 0.1);
        forged.body.epoch = 9;
        assert_eq!(x.offer(forged).expect("offer"), Offer::BadSignature);
        let digest = x.status().digest;
        drop(x);
        let x = Live::open(d1.path(), cfg()).expect("reopen");
        assert_eq!(x.status().digest, digest);
        assert_eq!(x.next_epoch(), 7);
    }

    /// Two eligible reporters sign a report for the same epoch (two leaders for a moment, or a
    /// reporter racing the round's aggregator): whatever order the reports reach the nodes in,
    /// each ends on the better-ranked one, and governance only the other carried goes back to
    /// the pool of the node that had applied it.
    #[test]
    fn two_reports_for_one_epoch_leave_every_node_on_the_better_one() {
        let keys: Vec<SigningKey> = (1..=2u8).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let v = SigningKey::from_bytes(&[5; 32]);
        let pre: Vec<NodeId> = keys.iter().chain([&v]).map(|k| k.verifying_key().to_bytes()).collect();
        let cfg = || Config { pretrusted: pre.clone(), ..Config::default() };
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut nodes: Vec<Live> = dirs[..2].iter().map(|d| Live::open(d.path(), cfg()).expect("open")).collect();
        // Which of the two ranks first for epoch 1 (pre-trusted both: the draw decides).
        let r = |k: &SigningKey| rank(nodes[0].ledger(), 1, &k.verifying_key().to_bytes());
        let (better, worse) = if r(&keys[0]) < r(&keys[1]) { (&keys[0], &keys[1]) } else { (&keys[1], &keys[0]) };
        let testimony = failure(&v, &SigningKey::from_bytes(&[9; 32]), 0);
        let first = report(better, 0, 6, 0.5);
        let good = report(better, 1, 7, 0.5);
        let mut bad = report(worse, 1, 8, 9.0).body;
        bad.governance.push(testimony.clone());
        let bad = Signed::sign(worse, bad);
        for n in &mut nodes {
            assert_eq!(n.offer(first.clone()).expect("offer"), Offer::New);
        }
        // Node 0: the better first, the other is outranked (and not passed on).
        assert_eq!(nodes[0].offer(good.clone()).expect("offer"), Offer::New);
        assert_eq!(nodes[0].offer(bad.clone()).expect("offer"), Offer::Outranked);
        assert_eq!(nodes[0].offer(bad.clone()).expect("offer"), Offer::Duplicate);
        // A peer catching up gets the epoch's applied report and, while they fit, the outranked.
        assert_eq!(nodes[0].history(1, 1, 1 << 20), vec![good.clone(), bad.clone()]);
        assert_eq!(nodes[0].history(1, 1, 10), vec![good.clone()], "the applied one whatever its size");
        // Node 1: the worse first (applied, with its testimony), then the better replaces it.
        assert_eq!(nodes[1].offer(bad.clone()).expect("offer"), Offer::New);
        assert_ne!(nodes[1].status().digest, nodes[0].status().digest);
        assert_eq!(nodes[1].offer(good.clone()).expect("offer"), Offer::Replaced);
        assert_eq!(nodes[1].status().offers.get("replaced"), Some(&1));
        // A third node: both while the epoch waits for the one before it.
        let mut late = Live::open(dirs[2].path(), cfg()).expect("open");
        assert_eq!(late.offer(bad.clone()).expect("offer"), Offer::New);
        assert_eq!(late.offer(good.clone()).expect("offer"), Offer::New);
        assert_eq!(late.next_epoch(), 0);
        assert_eq!(late.offer(first.clone()).expect("offer"), Offer::New);
        assert_eq!(late.next_epoch(), 2);
        let digest = nodes[0].status().digest;
        assert_eq!(nodes[1].status().digest, digest);
        assert_eq!(late.status().digest, digest);
        // The testimony only the outranked report carried is applied nowhere: the node that had
        // applied it holds it again for its next report, which every node then applies.
        assert_eq!(nodes[1].governance_for_report(), vec![testimony.clone()]);
        assert!(nodes[0].governance_for_report().is_empty());
        let next = Signed::sign(better, Report { epoch: 2, observations: Vec::new(), governance: vec![testimony] });
        for n in nodes.iter_mut().chain([&mut late]) {
            assert_eq!(n.offer(next.clone()).expect("offer"), Offer::New);
        }
        let digest = nodes[0].status().digest;
        assert!(nodes.iter().chain([&late]).all(|n| n.status().digest == digest));
        // The rebuilt state was written: a restart replays to it.
        drop((nodes, late));
        for d in &dirs {
            assert_eq!(Live::open(d.path(), cfg()).expect("reopen").status().digest, digest);
        }
        // An epoch older than every checkpoint is stale.
        let d = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d.path(), cfg()).expect("open");
        for e in 0..(CHECKPOINT_EVERY * CHECKPOINTS as u64 + 2) {
            assert_eq!(x.offer(report(worse, e, 7, 0.5)).expect("offer"), Offer::New);
        }
        assert_eq!(x.offer(report(better, 0, 7, 0.5)).expect("offer"), Offer::Stale);
    }

    /// A genesis of these keys, the rest default.
    fn genesis(keys: &[&SigningKey]) -> Config {
        Config { pretrusted: keys.iter().map(|k| k.verifying_key().to_bytes()).collect(), ..Config::default() }
    }

    /// Two keys of which `first` ranks before `second` for `epoch` (both pre-trusted).
    fn ranked(epoch: u64, a: SigningKey, b: SigningKey) -> (SigningKey, SigningKey) {
        let l = Ledger::new(
            ledger::Config {
                pretrusted: vec![a.verifying_key().to_bytes(), b.verifying_key().to_bytes()],
                ..ledger::Config::default()
            },
            0,
        );
        if rank(&l, epoch, &a.verifying_key().to_bytes()) < rank(&l, epoch, &b.verifying_key().to_bytes()) {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// A late report is judged by whether its reporter could report in its epoch, not now: a
    /// reporter suspended since (here for forking a later epoch) still displaces a worse report
    /// of the epoch it reported, as on a node that took its report first.
    #[test]
    fn a_late_report_counts_if_its_reporter_could_report_in_its_epoch() {
        let (x, a) = ranked(0, SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let cfg = || genesis(&[&x, &a]);
        let proof =
            Governed::Fork(Box::new(vain_core::ledger::Fork::new(&report(&x, 5, 7, 0.5), &report(&x, 5, 8, 0.5))));
        let (from_x, from_a) = (report(&x, 0, 6, 0.5), report(&a, 0, 7, 9.0));
        let next = Signed::sign(&a, Report { epoch: 1, observations: Vec::new(), governance: vec![proof] });
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut n = Live::open(dirs[0].path(), cfg()).expect("open");
        let mut m = Live::open(dirs[1].path(), cfg()).expect("open");
        // n: a's report, then the epoch that suspends x, then x's report of epoch 0.
        assert_eq!(n.offer(from_a.clone()).expect("offer"), Offer::New);
        assert_eq!(n.offer(next.clone()).expect("offer"), Offer::New);
        assert!(!n.may_report(&x.verifying_key().to_bytes()), "suspended now");
        assert_eq!(n.offer(from_x.clone()).expect("offer"), Offer::Replaced);
        // m: x's report first, then a's, then the epoch that suspends x.
        assert_eq!(m.offer(from_x).expect("offer"), Offer::New);
        assert_eq!(m.offer(from_a).expect("offer"), Offer::Outranked);
        assert_eq!(m.offer(next).expect("offer"), Offer::New);
        assert_eq!((n.next_epoch(), m.next_epoch()), (2, 2));
        assert_eq!(n.status().digest, m.status().digest);
        // Someone who never could report in epoch 0 still cannot.
        let stranger = report(&SigningKey::from_bytes(&[9; 32]), 0, 7, 0.5);
        assert_eq!(n.offer(stranger).expect("offer"), Offer::Ineligible);
    }

    /// The report that displaces another may carry a proof that takes an earlier report out: the
    /// rebuild replays until the proven forks stop changing, and ends where a node that applied
    /// the better report first ends.
    #[test]
    fn a_displacing_report_that_proves_a_fork_takes_the_forked_report_out() {
        let (b, a) = ranked(1, SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let z = SigningKey::from_bytes(&[3; 32]);
        let cfg = || genesis(&[&a, &b, &z]);
        let (z1, z2) = (report(&z, 0, 7, 0.5), report(&z, 0, 8, 9.0));
        let proof = Governed::Fork(Box::new(vain_core::ledger::Fork::new(&z1, &z2)));
        let worse = report(&a, 1, 6, 0.5);
        let better = Signed::sign(&b, Report { epoch: 1, observations: Vec::new(), governance: vec![proof] });
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut n = Live::open(dirs[0].path(), cfg()).expect("open");
        let mut m = Live::open(dirs[1].path(), cfg()).expect("open");
        for l in [&mut n, &mut m] {
            assert_eq!(l.offer(z1.clone()).expect("offer"), Offer::New);
        }
        assert_eq!(n.offer(worse.clone()).expect("offer"), Offer::New);
        assert_eq!(n.offer(better.clone()).expect("offer"), Offer::Replaced);
        assert_eq!(m.offer(better).expect("offer"), Offer::New);
        assert_eq!(m.offer(worse).expect("offer"), Offer::Outranked);
        let z_key = hex::encode(z.verifying_key().to_bytes());
        for l in [&n, &m] {
            let row = l.status().nodes.into_iter().find(|r| r.key == z_key).expect("row");
            assert_eq!((row.forked_epoch, row.standing), (Some(0), "suspended"));
        }
        assert_eq!(n.status().digest, m.status().digest);
        // Nothing else to pass on: the rebuild applies no report but the displacing one, which
        // whoever offered it passes on.
        assert!(n.take_promoted().is_empty());
    }

    /// When an epoch's applied report is taken out (its reporter forked it), the runner-up a
    /// node kept applies instead and is handed out to pass on; a node that never had it takes it
    /// from that and ends in the same state. The runners-up kept per epoch are bounded.
    #[test]
    fn a_runner_up_replaces_a_forked_report_and_is_passed_on() {
        let (x, y) = ranked(0, SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let h = SigningKey::from_bytes(&[3; 32]);
        let cfg = || genesis(&[&x, &y, &h]);
        let (x1, x2, y1) = (report(&x, 0, 7, 0.5), report(&x, 0, 8, 0.5), report(&y, 0, 6, 0.5));
        let proof = Governed::Fork(Box::new(vain_core::ledger::Fork::new(&x1, &x2)));
        let next = Signed::sign(&h, Report { epoch: 1, observations: Vec::new(), governance: vec![proof] });
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut n = Live::open(dirs[0].path(), cfg()).expect("open");
        let mut m = Live::open(dirs[1].path(), cfg()).expect("open");
        assert_eq!(n.offer(x1.clone()).expect("offer"), Offer::New);
        assert_eq!(n.offer(y1.clone()).expect("offer"), Offer::Outranked);
        assert_eq!(m.offer(x1).expect("offer"), Offer::New);
        for l in [&mut n, &mut m] {
            assert_eq!(l.offer(next.clone()).expect("offer"), Offer::New);
        }
        // n took x's report out and applies y's, which it hands out; m has nothing for epoch 0.
        assert_eq!(n.take_promoted(), vec![y1.clone()]);
        assert!(m.take_promoted().is_empty());
        assert_ne!(n.status().digest, m.status().digest);
        assert_eq!(m.offer(y1).expect("offer"), Offer::Replaced);
        assert_eq!(n.status().digest, m.status().digest);
        // At most four runners-up per epoch, those who could report first, then by rank.
        let keys: Vec<SigningKey> = (10..17u8).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let mut pre: Vec<NodeId> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        pre.push(h.verifying_key().to_bytes());
        let d = tempfile::tempdir().expect("dir");
        let mut l = Live::open(d.path(), Config { pretrusted: pre, ..Config::default() }).expect("open");
        for k in &keys {
            l.offer(report(k, 0, 7, 0.5)).expect("offer");
        }
        assert_eq!(l.outranked.get(&0).map(Vec::len), Some(OUTRANKED_PER_EPOCH));
        let kept: Vec<_> = l.outranked[&0].iter().map(|r| rank(l.ledger(), 0, &r.signer)).collect();
        let mut all: Vec<_> = keys.iter().map(|k| rank(l.ledger(), 0, &k.verifying_key().to_bytes())).collect();
        all.sort();
        assert_eq!(kept, all[1..=OUTRANKED_PER_EPOCH].to_vec(), "the best after the applied one");
    }

    /// Two forks proven at once, one older than every checkpoint and one within reach: the
    /// newer report is still taken out (the older stays, logged).
    #[test]
    fn a_fork_older_than_the_checkpoints_does_not_keep_a_newer_one_in() {
        let (x, y, h) =
            (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32]));
        let cfg = genesis(&[&x, &y, &h]);
        let d = tempfile::tempdir().expect("dir");
        let mut n = Live::open(d.path(), cfg).expect("open");
        let end = CHECKPOINT_EVERY * CHECKPOINTS as u64 + 20;
        let (old, new) = (5, end - 5);
        for e in 0..end {
            let by = if e == old {
                &x
            } else if e == new {
                &y
            } else {
                &h
            };
            let subject = if e == new { 9 } else { 7 };
            assert_eq!(n.offer(report(by, e, subject, 0.5)).expect("offer"), Offer::New);
        }
        let fork = |k: &SigningKey, e| {
            Governed::Fork(Box::new(vain_core::ledger::Fork::new(
                &report(k, e, if e == new { 9 } else { 7 }, 0.5),
                &report(k, e, 8, 0.5),
            )))
        };
        let proofs = Signed::sign(
            &h,
            Report { epoch: end, observations: Vec::new(), governance: vec![fork(&x, old), fork(&y, new)] },
        );
        assert_eq!(n.offer(proofs).expect("offer"), Offer::New);
        // y's report, the only one that spoke of node 9, is out of the state; x's stays.
        let nine = hex::encode([9u8; 32]);
        let row = n.status().nodes.into_iter().find(|r| r.key == nine);
        assert!(row.as_ref().is_none_or(|r| r.participation == 0.0), "{row:?}");
        assert!(n.history.get(&old).is_some_and(|h| h.iter().any(|r| r.signer == x.verifying_key().to_bytes())));
    }

    /// A pre-trusted reporter's report outranks every other for any epoch.
    #[test]
    fn pre_trusted_reporters_rank_first() {
        let pre = [1u8; 32];
        let l = Ledger::new(ledger::Config { pretrusted: vec![pre], ..ledger::Config::default() }, 0);
        for e in 0..64 {
            for other in 2..20u8 {
                assert!(rank(&l, e, &pre) < rank(&l, e, &[other; 32]));
            }
        }
        // Among equals the draw changes with the epoch.
        let firsts: HashSet<bool> = (0..64).map(|e| rank(&l, e, &[2; 32]) < rank(&l, e, &[3; 32])).collect();
        assert_eq!(firsts.len(), 2);
    }

    /// A reporter that signs two reports for one epoch: the nodes that see both build the same
    /// proof; a node that saw only one takes it from them; the next report carries it and every
    /// node, whichever of the two reports it applied, suspends the reporter at that epoch and
    /// takes none of its reports after.
    #[test]
    fn an_equivocating_reporter_is_suspended_on_every_node_within_one_epoch() {
        let (cheat, honest) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let cheat_id = cheat.verifying_key().to_bytes();
        let cfg = || Config { pretrusted: vec![cheat_id, honest.verifying_key().to_bytes()], ..Config::default() };
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut nodes: Vec<Live> = dirs.iter().map(|d| Live::open(d.path(), cfg()).expect("open")).collect();
        let (a, b) = (report(&cheat, 0, 7, 0.5), report(&cheat, 0, 8, 0.5));
        // Node 0 applies a, node 1 b, node 2 a; then the flood brings each the other.
        assert_eq!(nodes[0].offer(a.clone()).expect("offer"), Offer::New);
        assert_eq!(nodes[1].offer(b.clone()).expect("offer"), Offer::New);
        assert_eq!(nodes[2].offer(a.clone()).expect("offer"), Offer::New);
        assert_ne!(nodes[0].status().digest, nodes[1].status().digest);
        assert_eq!(nodes[0].offer(b.clone()).expect("offer"), Offer::Equivocation);
        assert_eq!(nodes[1].offer(a.clone()).expect("offer"), Offer::Equivocation);
        let p0 = nodes[0].take_proofs();
        let p1 = nodes[1].take_proofs();
        assert_eq!(p0.len(), 1);
        assert_eq!(p0, p1, "both build the same proof");
        assert!(nodes[0].take_proofs().is_empty(), "handed out once");
        // The same report again is refused again, and builds no second proof.
        assert_eq!(nodes[0].offer(b.clone()).expect("offer"), Offer::Equivocation);
        assert!(nodes[0].take_proofs().is_empty());
        assert!(!nodes[2].kept_out(&cheat_id));
        assert_eq!(nodes[2].submit(p0[0].clone()), Submit::New);
        assert_eq!(nodes[2].submit(p0[0].clone()), Submit::Duplicate);
        // Holding the proof, a node keeps the reporter out (of leading, and of its rounds)
        // before any report carried it.
        assert!(nodes[2].kept_out(&cheat_id));
        assert!(!nodes[2].kept_out(&honest.verifying_key().to_bytes()));
        let mut held = Vec::new();
        vain_core::codec::encode_governed(&p0[0], &mut held);
        assert_eq!(nodes[2].status().pool_bytes, held.len());
        // What a peer that lacks it is given, and one that holds it is not.
        assert_eq!(nodes[2].pool_missing(&[], 64, 1 << 20, 7, true), p0);
        assert!(nodes[2].pool_missing(&nodes[0].pool_digests(), 64, 1 << 20, 7, true).is_empty());
        assert!(nodes[2].pool_missing(&[], 0, 1 << 20, 7, true).is_empty());
        // Not a proof: two reports of different epochs.
        let bogus = Governed::Fork(Box::new(vain_core::ledger::Fork::new(&a, &report(&cheat, 1, 7, 0.5))));
        assert_eq!(nodes[2].submit(bogus), Submit::Invalid);
        // The honest reporter's next report carries what its node holds.
        let carried = nodes[0].governance_for_report();
        assert_eq!(carried, p0);
        let next = Signed::sign(&honest, Report { epoch: 1, observations: Vec::new(), governance: carried });
        for n in &mut nodes {
            assert!(n.may_report(&cheat_id));
            assert_eq!(n.offer(next.clone()).expect("offer"), Offer::New);
            assert_eq!(n.next_epoch(), 2);
            let row = n.status().nodes.into_iter().find(|r| r.key == hex::encode(cheat_id)).expect("row");
            assert_eq!((row.standing, row.forked_epoch, row.suspensions), ("suspended", Some(0), 1));
            assert!(!n.may_report(&cheat_id));
            assert!(n.kept_out(&cheat_id), "suspended");
            assert_eq!(n.offer(report(&cheat, 2, 7, 0.5)).expect("offer"), Offer::Ineligible);
            assert_eq!((n.status().pool, n.status().pool_bytes), (0, 0), "the carried proof left the pool");
            // A proof for the same epoch is not carried again.
            assert_eq!(n.submit(p0[0].clone()), Submit::Duplicate);
        }
        // Whichever report of the fork a node applied, it was taken out when the proof came:
        // every node is in the same state, as if the reporter had sent neither, and stays so
        // after a restart (the state was written as the snapshot).
        let digest = nodes[0].status().digest;
        assert!(nodes.iter().all(|n| n.status().digest == digest));
        assert!(nodes.iter().all(|n| n.status().snapshot_epoch == Some(1)));
        drop(nodes);
        for d in &dirs {
            assert_eq!(Live::open(d.path(), cfg()).expect("reopen").status().digest, digest);
        }
        // That state, built directly: epoch 0 with no report, then the honest report with the
        // proof.
        let c = cfg();
        let lcfg = ledger::Config {
            pretrusted: c.pretrusted,
            vote_from: c.vote_from,
            quorum: c.quorum,
            ..ledger::Config::default()
        };
        let mut reference = Ledger::new(lcfg, 0);
        for e in [
            Entry::Tick { at: epoch_time(0) },
            Entry::Input { at: epoch_time(1), input: Input::Report(next) },
            Entry::Tick { at: epoch_time(1) },
        ] {
            e.apply(&mut reference);
        }
        assert_eq!(hex::encode(reference.digest()), digest);
    }

    /// A report larger than any node takes is refused before anything else is looked at.
    #[test]
    fn a_report_over_the_size_limit_is_refused() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let dir = tempfile::tempdir().expect("dir");
        let mut x =
            Live::open(dir.path(), Config { pretrusted: vec![a.verifying_key().to_bytes()], ..Config::default() })
                .expect("open");
        let many = |k: &SigningKey, epoch| {
            let observations = (0..65_536u32)
                .map(|i| Observation { subject: [(i % 251) as u8; 32], what: Observed::Feedback { score: 0.5 } })
                .collect();
            Signed::sign(k, Report { epoch, observations, governance: Vec::new() })
        };
        let testimony = Governed::Testimony(many(&SigningKey::from_bytes(&[2; 32]), 0));
        let mut big = many(&a, 0);
        big.body.governance.push(testimony);
        let big = Signed::sign(&a, big.body);
        assert_eq!(x.offer(big).expect("offer"), Offer::TooLarge);
        assert_eq!(x.next_epoch(), 0);
        assert_eq!(x.status().offers.get("too large"), Some(&1));
        // Just under the limit is taken.
        assert_eq!(x.offer(many(&a, 0)).expect("offer"), Offer::New);
        // A testimony no report could carry is refused from the pool.
        let huge = Governed::Testimony(many(&a, 5));
        assert_eq!(x.submit(huge), Submit::Invalid);
        // Proofs do not count against a report's size (each holds two bodies of up to the
        // limit), but at most MAX_FORKS_PER_REPORT ride in one, and the pool hands out no more.
        let proof = |epoch| {
            let (r1, r2) = (many(&a, epoch), Signed::sign(&a, Report::new(epoch, Vec::new())));
            Governed::Fork(Box::new(vain_core::ledger::Fork::new(&r1, &r2)))
        };
        for e in 1..=3 {
            assert_eq!(x.submit(proof(e)), Submit::New, "proof {e}");
        }
        let carried = x.governance_for_report();
        assert_eq!(carried.len(), MAX_FORKS_PER_REPORT);
        let carrier = Signed::sign(&a, Report { epoch: 1, observations: Vec::new(), governance: carried });
        let mut b = Vec::new();
        vain_core::codec::encode_signed(&carrier, &mut b);
        assert!(b.len() > MAX_REPORT_BYTES, "{} bytes", b.len());
        assert_eq!(x.offer(carrier).expect("offer"), Offer::New);
        let three =
            Signed::sign(&a, Report { epoch: 2, observations: Vec::new(), governance: (1..=3).map(proof).collect() });
        assert_eq!(x.offer(three).expect("offer"), Offer::TooLarge);
    }

    /// Compaction: a ledger that snapshots every 10 entries reaches the digest of one that
    /// never does, keeps its journal short, reopens to the same state, and goes on in step.
    /// A crash between the snapshot and the journal's truncation (the whole old journal still
    /// there) replays only what came after the snapshot.
    #[test]
    fn a_compacted_ledger_reopens_to_the_same_state_and_stays_in_step() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let cfg = |compact_every| Config {
            pretrusted: vec![a.verifying_key().to_bytes()],
            compact_every,
            ..Config::default()
        };
        let (d1, d2) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let mut x = Live::open(d1.path(), cfg(10)).expect("open");
        let mut y = Live::open(d2.path(), cfg(u64::MAX)).expect("open");
        let reports: Vec<_> =
            (0..25).map(|e| report(&a, e, 7 + (e % 5) as u8, if e % 7 == 3 { 9.0 } else { 0.4 })).collect();
        for r in &reports {
            assert_eq!(x.offer(r.clone()).expect("offer"), Offer::New);
            assert_eq!(y.offer(r.clone()).expect("offer"), Offer::New);
        }
        assert_eq!(x.status().digest, y.status().digest);
        // 25 epochs of two entries: snapshots after epochs 4, 9, …, 24; the journal restarted.
        assert!(d1.path().join("ledger.snapshot").exists());
        let journal = |d: &Path| std::fs::metadata(d.join("ledger.journal")).expect("journal").len();
        assert!(journal(d1.path()) < journal(d2.path()) / 5, "{} vs {}", journal(d1.path()), journal(d2.path()));
        let status = x.status();
        assert_eq!((status.snapshot_epoch, status.journal_entries), (Some(24), 0));
        drop(x);
        let mut x = Live::open(d1.path(), cfg(10)).expect("reopen");
        assert_eq!(x.next_epoch(), 25);
        assert_eq!(x.status().snapshot_epoch, Some(24));
        assert_eq!(y.status().snapshot_epoch, None);
        assert_eq!(y.status().journal_entries, 50);
        assert_eq!(x.status().digest, y.status().digest);
        for e in 25..28 {
            let r = report(&a, e, 8, 0.3);
            x.offer(r.clone()).expect("offer");
            y.offer(r).expect("offer");
        }
        assert_eq!(x.status().digest, y.status().digest);
        // The crash: the never-compacted journal (every entry from the start) beside the snapshot.
        drop(x);
        std::fs::copy(d2.path().join("ledger.journal"), d1.path().join("ledger.journal")).expect("copy");
        let x = Live::open(d1.path(), cfg(10)).expect("reopen after the crash");
        assert_eq!(x.next_epoch(), 28);
        assert_eq!(x.status().digest, y.status().digest);
        // A damaged snapshot: refused by name, not started on.
        drop(x);
        let path = d1.path().join("ledger.snapshot");
        let mut bytes = std::fs::read(&path).expect("snapshot");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(Live::open(d1.path(), cfg(10)), Err(Error::Snapshot { .. })));
    }

    /// Power lost at every step of a ledger's life — each epoch's journal append, each
    /// compaction's snapshot and journal restart — on a disk that keeps only what was synced:
    /// the ledger reopens to exactly the state of the epochs it had committed (those whose offer
    /// returned, and at most the one being written), and goes on to the same final digest.
    #[test]
    fn power_loss_at_every_step_of_appends_and_compactions_keeps_the_committed_epochs() {
        use vain_core::storage::Sim;
        let a = SigningKey::from_bytes(&[1; 32]);
        let cfg = |compact_every| Config {
            pretrusted: vec![a.verifying_key().to_bytes()],
            compact_every,
            ..Config::default()
        };
        let dir = Path::new("/node/ledger");
        let reports: Vec<_> =
            (0..12).map(|e| report(&a, e, 7 + (e % 5) as u8, if e % 7 == 3 { 9.0 } else { 0.4 })).collect();
        // The digest after each number of epochs, from a ledger that never crashes.
        let mut reference = Live::open_in(Arc::new(Sim::new()), dir, cfg(u64::MAX)).expect("open");
        let mut digests = vec![reference.status().digest];
        for r in &reports {
            reference.offer(r.clone()).expect("offer");
            digests.push(reference.status().digest);
        }
        let mut compactions_crashed = 0;
        for crash_at in 0.. {
            let sim = Sim::new();
            let st: Arc<dyn Storage> = Arc::new(sim.clone());
            sim.fail_after(crash_at);
            let mut returned = 0;
            let mut failed = false;
            if let Ok(mut x) = Live::open_in(st.clone(), dir, cfg(6)) {
                for r in &reports {
                    match x.offer(r.clone()) {
                        Ok(Offer::New) => returned += 1,
                        Ok(other) => panic!("offer: {other:?}"),
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
            } else {
                failed = true;
            }
            sim.crash();
            let mut x = Live::open_in(st.clone(), dir, cfg(6))
                .unwrap_or_else(|e| panic!("the ledger does not reopen after a crash at step {crash_at}: {e}"));
            let got = x.next_epoch() as usize;
            assert!(
                got == returned || (failed && got == returned + 1),
                "step {crash_at}: {got} epochs, {returned} returned"
            );
            assert_eq!(x.status().digest, digests[got], "step {crash_at}");
            compactions_crashed += usize::from(x.status().snapshot_epoch.is_some() && failed);
            for r in &reports[got..] {
                assert_eq!(x.offer(r.clone()).expect("offer after recovery"), Offer::New);
            }
            assert_eq!(x.status().digest, digests[reports.len()], "step {crash_at}");
            if !failed {
                assert!(crash_at > 30, "12 epochs and two compactions are more steps than {crash_at}");
                break;
            }
        }
        assert!(compactions_crashed > 0, "some crashes came after a snapshot was taken");
    }

    /// What only a left-out report carried goes back to the pool of the node that had applied
    /// it, so the next report carries it and every ledger applies it.
    #[test]
    fn governance_carried_only_by_a_forked_report_is_carried_again() {
        let (cheat, honest, v) =
            (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32]));
        let cfg = || Config {
            pretrusted: [&cheat, &honest, &v].iter().map(|k| k.verifying_key().to_bytes()).collect(),
            ..Config::default()
        };
        let testimony = failure(&v, &SigningKey::from_bytes(&[9; 32]), 0);
        let mut a = report(&cheat, 0, 7, 0.5).body;
        a.governance.push(testimony.clone());
        let a = Signed::sign(&cheat, a);
        let b = report(&cheat, 0, 8, 0.5);
        let proof = Governed::Fork(Box::new(vain_core::ledger::Fork::new(&a, &b)));
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut nodes: Vec<Live> = dirs.iter().map(|d| Live::open(d.path(), cfg()).expect("open")).collect();
        assert_eq!(nodes[0].offer(a).expect("offer"), Offer::New);
        assert_eq!(nodes[1].offer(b).expect("offer"), Offer::New);
        assert_eq!(nodes[0].submit(testimony.clone()), Submit::Duplicate, "carried");
        let next = Signed::sign(&honest, Report { epoch: 1, observations: Vec::new(), governance: vec![proof] });
        for n in &mut nodes {
            assert_eq!(n.offer(next.clone()).expect("offer"), Offer::New);
        }
        assert_eq!(nodes[0].status().digest, nodes[1].status().digest);
        // Node 0 holds the testimony again; its next report carries it to both.
        assert_eq!(nodes[0].governance_for_report(), vec![testimony.clone()]);
        let carrier = Signed::sign(&honest, Report { epoch: 2, observations: Vec::new(), governance: vec![testimony] });
        for n in &mut nodes {
            assert_eq!(n.offer(carrier.clone()).expect("offer"), Offer::New);
        }
        assert_eq!(nodes[0].status().digest, nodes[1].status().digest);
        assert_eq!(nodes[0].status().pool, 0);
    }

    /// A proof may come before its epoch (up to 64 ahead), while the reports of that epoch wait:
    /// every node leaves the forked reporter's out when the epoch comes, even once its
    /// suspension is over.
    #[test]
    fn a_fork_proven_before_its_epoch_is_left_out_when_the_epoch_comes() {
        let (cheat, honest) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let cfg = || Config {
            pretrusted: vec![cheat.verifying_key().to_bytes(), honest.verifying_key().to_bytes()],
            ..Config::default()
        };
        let (a, b) = (report(&cheat, 30, 7, 0.5), report(&cheat, 30, 8, 0.5));
        let proof = Governed::Fork(Box::new(vain_core::ledger::Fork::new(&a, &b)));
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut nodes: Vec<Live> = dirs.iter().map(|d| Live::open(d.path(), cfg()).expect("open")).collect();
        assert_eq!(nodes[0].offer(a).expect("offer"), Offer::New);
        assert_eq!(nodes[1].offer(b).expect("offer"), Offer::New);
        // Epoch 30 completes with the reports that waited for it (left out: only its tick).
        for epoch in 0..30 {
            let governance = if epoch == 1 { vec![proof.clone()] } else { Vec::new() };
            let r = Signed::sign(&honest, Report { epoch, observations: Vec::new(), governance });
            for n in &mut nodes {
                assert_eq!(n.offer(r.clone()).expect("offer"), Offer::New, "epoch {epoch}");
            }
        }
        assert_eq!(nodes[0].next_epoch(), 31);
        assert!(nodes[0].may_report(&cheat.verifying_key().to_bytes()), "the suspension is over");
        assert_eq!(nodes[0].status().digest, nodes[1].status().digest);
    }

    /// Power lost at every step while a node takes a forked report out of its past (journal
    /// append of the epoch that convicts, snapshot, journal restart): it reopens either before
    /// that epoch or with the report taken out, and ends in the state of a node that applied
    /// the fork's other report — as if the reporter had sent neither.
    #[test]
    fn power_loss_while_a_forked_report_is_taken_out_ends_in_the_same_state() {
        use vain_core::storage::Sim;
        let (cheat, honest) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let cfg = || Config {
            pretrusted: vec![cheat.verifying_key().to_bytes(), honest.verifying_key().to_bytes()],
            ..Config::default()
        };
        let dir = Path::new("/node/ledger");
        let (a, b) = (report(&cheat, 1, 7, 9.0), report(&cheat, 1, 8, 0.5));
        let proof = Governed::Fork(Box::new(vain_core::ledger::Fork::new(&a, &b)));
        let carrier = Signed::sign(&honest, Report { epoch: 2, observations: Vec::new(), governance: vec![proof] });
        let tail: Vec<_> = (3..6).map(|e| report(&honest, e, 9, 0.5)).collect();
        let run = |first: &Signed<Report>, st: Arc<dyn Storage>| -> Result<Live, Error> {
            let mut x = Live::open_in(st, dir, cfg())?;
            for r in [report(&honest, 0, 7, 0.5), first.clone(), carrier.clone()].iter().chain(&tail) {
                x.offer(r.clone())?;
            }
            Ok(x)
        };
        // Two nodes that applied different halves of the fork agree once the proof came.
        let via_b = run(&b, Arc::new(Sim::new())).expect("run").status().digest;
        assert_eq!(run(&a, Arc::new(Sim::new())).expect("run").status().digest, via_b);
        for crash_at in 0.. {
            let sim = Sim::new();
            let st: Arc<dyn Storage> = Arc::new(sim.clone());
            sim.fail_after(crash_at);
            let done = run(&a, st.clone()).is_ok();
            sim.crash();
            let mut x = Live::open_in(st.clone(), dir, cfg())
                .unwrap_or_else(|e| panic!("the ledger does not reopen after a crash at step {crash_at}: {e}"));
            let got = x.next_epoch();
            if got > 2 {
                assert_eq!(x.status().nodes.iter().filter(|n| n.forked_epoch == Some(1)).count(), 1);
            }
            let again = [report(&honest, 0, 7, 0.5), a.clone(), carrier.clone()];
            for r in again.iter().chain(&tail).skip(got as usize) {
                assert_eq!(x.offer(r.clone()).expect("offer after recovery"), Offer::New, "step {crash_at}");
            }
            assert_eq!(x.status().digest, via_b, "step {crash_at}");
            if done {
                break;
            }
        }
    }

    #[test]
    fn a_validators_testimony_rides_in_the_next_report_and_every_node_applies_it_once() {
        let (a, v) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let cfg = || Config {
            pretrusted: vec![a.verifying_key().to_bytes(), v.verifying_key().to_bytes()],
            ..Config::default()
        };
        let (d1, d2) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        // The validator's node and the aggregator's.
        let (mut x, mut y) = (Live::open(d1.path(), cfg()).expect("open"), Live::open(d2.path(), cfg()).expect("open"));
        let node = SigningKey::from_bytes(&[9; 32]);
        let testimony = |epoch, what| {
            let subject = node.verifying_key().to_bytes();
            Governed::Testimony(Signed::sign(&v, Report::new(epoch, vec![Observation { subject, what }])))
        };
        let failed = failure(&v, &node, 0);
        // The validator's word alone is not enough.
        assert_eq!(x.submit(testimony(0, Observed::ChallengeFailed)), Submit::Invalid);
        assert_eq!(x.submit(failed.clone()), Submit::New);
        assert_eq!(y.submit(failed.clone()), Submit::New);
        assert_eq!(y.submit(failed.clone()), Submit::Duplicate);
        // Not a reporter; carrying inputs itself.
        let stranger = Governed::Testimony(Signed::sign(&SigningKey::from_bytes(&[3; 32]), Report::new(0, vec![])));
        assert!(matches!(x.submit(stranger), Submit::Ineligible { need: 2, .. }));
        let mut carrying = Report::new(1, vec![]);
        carrying.governance.push(testimony(5, Observed::ChallengePassed));
        assert_eq!(x.submit(Governed::Testimony(Signed::sign(&v, carrying))), Submit::Invalid);
        // The aggregator's next report carries it; both nodes apply it and leave their pools.
        let carried = y.governance_for_report();
        assert_eq!(carried, vec![failed.clone()]);
        let r = Signed::sign(&a, Report { epoch: 0, observations: Vec::new(), governance: carried });
        assert_eq!(y.offer(r.clone()).expect("offer"), Offer::New);
        assert_eq!(x.offer(r).expect("offer"), Offer::New);
        assert_eq!(x.status().digest, y.status().digest);
        assert_eq!((x.status().pool, y.status().pool), (0, 0));
        let key = hex::encode(node.verifying_key().to_bytes());
        let row = x.status().nodes.into_iter().find(|n| n.key == key).expect("subject");
        assert!((row.penalty - 0.15).abs() < 1e-9, "{row:?}");
        // Applied once: the same testimony, or an older one, is not taken again.
        assert_eq!(x.submit(failed), Submit::Duplicate);
        assert_eq!(y.submit(testimony(0, Observed::ChallengePassed)), Submit::Closed);
        assert_eq!(y.submit(testimony(1, Observed::ChallengePassed)), Submit::New);
    }

    /// Local trust rides in reports like testimony: the genesis vouches for a client, every
    /// ledger gives the client a social share, and the client's own vector is taken only then.
    /// A ring vouching for itself holds no trust, so its vectors are never pooled.
    #[test]
    fn local_trust_rides_in_reports_and_only_trusted_nodes_vouch() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let (client, sybil, other) =
            (SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32]), SigningKey::from_bytes(&[4; 32]));
        let id = |k: &SigningKey| k.verifying_key().to_bytes();
        let vouch = |k: &SigningKey, epoch, edges: Vec<(NodeId, f64)>| {
            Governed::Trust(Signed::sign(k, vain_core::ledger::TrustVector { epoch, edges }))
        };
        let (d1, d2) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let (mut x, mut y) = (
            Live::open(d1.path(), genesis(&[&a])).expect("open"),
            Live::open(d2.path(), genesis(&[&a])).expect("open"),
        );
        // Nobody trusted vouches for the client or the ring yet.
        let ring = vouch(&sybil, 0, vec![(id(&other), 1.0)]);
        assert_eq!(x.submit(ring.clone()), Submit::Untrusted);
        assert_eq!(x.submit(vouch(&client, 0, vec![(id(&a), 1.0)])), Submit::Untrusted);
        // Malformed vectors from the genesis: itself, unsorted, negative, too many edges.
        let mut ids = [id(&client), id(&other)];
        ids.sort();
        for bad in [
            vec![(id(&a), 1.0)],
            vec![(ids[1], 1.0), (ids[0], 1.0)],
            vec![(id(&client), -1.0)],
            (0..=TRUST_EDGES as u32).map(|i| (blake3::hash(&i.to_le_bytes()).into(), 1.0)).collect(),
        ] {
            assert_eq!(x.submit(vouch(&a, 0, bad)), Submit::Invalid);
        }
        // The genesis vouches for the client; a newer vector replaces the held one.
        assert_eq!(x.submit(vouch(&a, 0, vec![(id(&other), 1.0)])), Submit::New);
        let genesis_vector = vouch(&a, 1, vec![(id(&client), 1.0)]);
        assert_eq!(x.submit(genesis_vector.clone()), Submit::New);
        assert_eq!(x.submit(vouch(&a, 1, vec![(id(&other), 2.0)])), Submit::Closed);
        assert_eq!(x.status().pool, 1);
        // Vectors go to reporters only: a pool answer to anyone else leaves them out.
        assert!(x.pool_missing(&[], 64, 1 << 20, 0, false).is_empty());
        assert_eq!(x.pool_missing(&[], 64, 1 << 20, 0, true), vec![genesis_vector.clone()]);
        assert_eq!(x.reporters(), HashSet::from([id(&a)]));
        let carried = x.governance_for_report();
        assert_eq!(carried, vec![genesis_vector.clone()]);
        // (The ledger keeps trust for the nodes it holds evidence about: here the client took
        // part in the round.)
        let observations = vec![Observation { subject: id(&client), what: Observed::Participated }];
        let r = Signed::sign(&a, Report { epoch: 0, observations, governance: carried });
        assert_eq!(x.offer(r.clone()).expect("offer"), Offer::New);
        assert_eq!(y.offer(r).expect("offer"), Offer::New);
        assert_eq!(x.status().digest, y.status().digest);
        assert_eq!(x.status().pool, 0);
        let row = |l: &Live, k: &SigningKey| l.status().nodes.into_iter().find(|n| n.key == hex::encode(id(k)));
        let c = row(&y, &client).expect("the client has a record");
        assert!(c.social > 0.5, "{c:?}");
        assert_eq!(row(&y, &a).map(|r| r.vouches), Some(1));
        assert!(row(&y, &sybil).is_none_or(|r| r.social == 0.0));
        // Now the client's vector is taken, the ring's still is not; an applied epoch is closed.
        assert_eq!(y.submit(vouch(&client, 1, vec![(id(&a), 1.0)])), Submit::New);
        assert_eq!(y.submit(ring), Submit::Untrusted);
        assert_eq!(y.submit(genesis_vector), Submit::Duplicate);
        assert_eq!(y.submit(vouch(&a, 1, vec![(id(&other), 1.0)])), Submit::Closed);
    }

    /// What the pool refuses, every ledger refuses too when a report carries it anyway (a
    /// reporter that does not filter): a vector from a key nobody trusted vouches for, one too
    /// long; a testimony of round evidence; and one report cannot multiply a penalty by
    /// repeating an observation.
    #[test]
    fn a_reporter_cannot_carry_what_the_pool_refuses_or_repeat_a_penalty() {
        let (a, v) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let (sybil, node) = (SigningKey::from_bytes(&[3; 32]), SigningKey::from_bytes(&[9; 32]));
        let victim = node.verifying_key().to_bytes();
        let d = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d.path(), genesis(&[&a, &v])).expect("open");
        let ring = Governed::Trust(Signed::sign(
            &sybil,
            vain_core::ledger::TrustVector { epoch: 0, edges: vec![([8; 32], 1.0)] },
        ));
        let long = Governed::Trust(Signed::sign(
            &v,
            vain_core::ledger::TrustVector::new(
                0,
                (0..=TRUST_EDGES as u32).map(|i| {
                    let mut k = [5u8; 32];
                    k[..4].copy_from_slice(&i.to_le_bytes());
                    (k, 1.0)
                }),
            ),
        ));
        let seen = |what| Observation { subject: victim, what };
        let lying = Governed::Testimony(Signed::sign(&v, Report::new(0, vec![seen(Observed::Anomaly { z: 100.0 })])));
        let nan =
            Governed::Testimony(Signed::sign(&v, Report::new(0, vec![seen(Observed::Uptime { fraction: f64::NAN })])));
        assert_eq!(x.submit(ring.clone()), Submit::Untrusted);
        assert_eq!(x.submit(long.clone()), Submit::Invalid);
        assert_eq!(x.submit(lying.clone()), Submit::Invalid);
        assert_eq!(x.submit(nan), Submit::Invalid);
        // Failed challenges testified ahead, one per epoch: the pool holds them, a report carries
        // the oldest, and a report carrying them all applies one.
        let ahead: Vec<Governed> = (1..=4).map(|e| failure(&v, &node, e)).collect();
        for t in &ahead {
            assert_eq!(x.submit(t.clone()), Submit::New);
        }
        assert_eq!(x.governance_for_report(), vec![ahead[0].clone()]);
        // A mild flag first does not hide the worse ones after it; repeats count once.
        let mut flags = vec![seen(Observed::Anomaly { z: 0.5 })];
        flags.extend(vec![seen(Observed::Anomaly { z: 9.0 }); 3]);
        let mut carried = vec![ring, long, lying];
        carried.extend(ahead);
        let r = Signed::sign(&a, Report { epoch: 0, observations: flags, governance: carried });
        assert_eq!(x.offer(r).expect("offer"), Offer::New);
        let st = x.status();
        assert!(st.nodes.iter().all(|n| n.id != "03030303"), "a record for the ring's key: {:?}", st.nodes);
        assert!(st.nodes.iter().all(|n| n.vouches == 0), "{:?}", st.nodes);
        let row = st.nodes.iter().find(|n| n.key == hex::encode(victim)).expect("victim");
        assert!(
            (row.penalty - 0.55).abs() < 1e-9,
            "one flag counts once, one testimony of the signer's, the lying one not at all: {row:?}"
        );
        assert_eq!(row.standing, "active");
    }

    #[test]
    fn a_node_that_missed_epochs_catches_up_from_a_peers_history() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let cfg = || Config { pretrusted: vec![a.verifying_key().to_bytes()], ..Config::default() };
        let (d1, d2) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let mut x = Live::open(d1.path(), cfg()).expect("open");
        for e in 0..10 {
            x.offer(report(&a, e, 7 + (e % 3) as u8, 0.5)).expect("offer");
        }
        // A peer that has epochs 0..3 only, and then hears epoch 9: it waits for 3..8.
        let mut y = Live::open(d2.path(), cfg()).expect("open");
        for r in x.history(0, 3, usize::MAX) {
            y.offer(r).expect("offer");
        }
        assert_eq!(y.offer(report(&a, 9, 7, 0.5)).expect("offer"), Offer::New);
        assert_eq!(y.next_epoch(), 3);
        // Whole epochs, bounded by count and (beyond the first epoch) by bytes.
        assert_eq!(x.history(3, 2, usize::MAX).len(), 2);
        assert_eq!(x.history(3, 64, 1).len(), 1);
        assert!(x.history(10, 64, usize::MAX).is_empty());
        let from = y.next_epoch();
        for r in x.history(from, 64, usize::MAX) {
            y.offer(r).expect("offer");
        }
        assert_eq!(y.next_epoch(), 10);
        assert_eq!(y.status().digest, x.status().digest);
        // A restarted node serves the history it replayed.
        drop(x);
        let x = Live::open(d1.path(), cfg()).expect("reopen");
        assert_eq!(x.history(0, 64, usize::MAX).len(), 10);
    }

    #[test]
    fn an_audit_request_and_the_teams_verdicts_ride_in_reports_and_decide_on_every_node() {
        use vain_core::audit::Verdict;
        use vain_core::ledger::AuditRequest;
        let (a, v, w) =
            (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32]));
        let keys = [&a, &v, &w].map(|k| k.verifying_key().to_bytes());
        let cfg = || Config { pretrusted: keys.to_vec(), vote_from: 1, ..Config::default() };
        let (d1, d2) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let (mut x, mut y) = (Live::open(d1.path(), cfg()).expect("open"), Live::open(d2.path(), cfg()).expect("open"));
        // Epoch 0 brings the subject and the genesis nodes into the ledger.
        let mut obs: Vec<Observation> =
            keys.iter().map(|k| Observation { subject: *k, what: Observed::Participated }).collect();
        obs.push(Observation { subject: [9; 32], what: Observed::Participated });
        let mut epoch = 0;
        let mut apply = |x: &mut Live, y: &mut Live, carried: Vec<Governed>| {
            let r = Signed::sign(&a, Report { epoch, observations: obs.clone(), governance: carried });
            assert_eq!(x.offer(r.clone()).expect("offer"), Offer::New);
            assert_eq!(y.offer(r).expect("offer"), Offer::New);
            epoch += 1;
        };
        apply(&mut x, &mut y, Vec::new());
        let request = Governed::RequestAudit(Signed::sign(&v, AuditRequest { subject: [9; 32], round: 0, nonce: 1 }));
        assert_eq!(x.submit(request.clone()), Submit::New);
        // A stranger may not ask.
        let stranger = SigningKey::from_bytes(&[4; 32]);
        let q = Governed::RequestAudit(Signed::sign(&stranger, AuditRequest { subject: [9; 32], round: 0, nonce: 2 }));
        assert!(matches!(x.submit(q), Submit::Ineligible { .. }));
        let carried = x.governance_for_report();
        assert_eq!(carried, vec![request]);
        apply(&mut x, &mut y, carried);
        // The same team on both nodes: the genesis nodes (the subject's tier is below theirs).
        let open = x.audits_for(&keys[1]);
        assert_eq!(open.len(), 1, "{:?}", x.status().audits);
        let (id, subject, round) = open[0];
        assert_eq!((subject, round), ([9; 32], 0));
        assert_eq!(y.audits_for(&keys[1]), open);
        let team = x.status().audits[0].team.clone();
        assert_eq!(team.len(), 3, "{team:?}");
        // A second request while it is open; a verdict from outside the team; on nothing.
        let again = Governed::RequestAudit(Signed::sign(&w, AuditRequest { subject: [9; 32], round: 1, nonce: 3 }));
        assert_eq!(x.submit(again), Submit::Closed);
        let verdict = |k: &SigningKey, pass| Governed::Verdict(Signed::sign(k, Verdict { audit: id, subject, pass }));
        assert_eq!(x.submit(verdict(&stranger, true)), Submit::NotOnTeam);
        let unknown = Governed::Verdict(Signed::sign(&v, Verdict { audit: [0; 32], subject, pass: true }));
        assert_eq!(x.submit(unknown), Submit::UnknownAudit);
        // Two failing verdicts of three decide it.
        assert_eq!(x.submit(verdict(&v, false)), Submit::New);
        assert_eq!(x.submit(verdict(&w, false)), Submit::New);
        let carried = x.governance_for_report();
        assert_eq!(carried.len(), 2);
        apply(&mut x, &mut y, carried);
        assert!(x.audits_for(&keys[1]).is_empty());
        let decided = &x.status().audits;
        assert_eq!(
            (decided.len(), decided[0].state, decided[0].subject.as_str()),
            (1, "failed", "09".repeat(32).as_str())
        );
        assert_eq!(x.status().digest, y.status().digest);
        let subject_row = x.status().nodes.into_iter().find(|n| n.id == "09090909").expect("subject");
        assert!(subject_row.penalty >= 0.8, "{subject_row:?}");
        // A team that stays silent: the audit closes undecided after a day of ledger time, and
        // the subject can be audited again.
        let again = Governed::RequestAudit(Signed::sign(&v, AuditRequest { subject: [9; 32], round: 2, nonce: 4 }));
        assert_eq!(x.submit(again.clone()), Submit::New);
        let carried = x.governance_for_report();
        apply(&mut x, &mut y, carried);
        assert_eq!(x.audits_for(&keys[1]).len(), 1);
        for _ in 0..24 {
            apply(&mut x, &mut y, Vec::new());
        }
        assert!(x.audits_for(&keys[1]).is_empty());
        assert_eq!(x.status().audits[0].state, "expired");
        assert_eq!(x.status().digest, y.status().digest);
        let third = Governed::RequestAudit(Signed::sign(&w, AuditRequest { subject: [9; 32], round: 3, nonce: 5 }));
        assert_eq!(x.submit(third), Submit::New);
    }

    #[test]
    fn repeated_anomalies_suspend_then_ban() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let d = tempfile::tempdir().expect("dir");
        let mut x =
            Live::open(d.path(), Config { pretrusted: vec![a.verifying_key().to_bytes()], ..Config::default() })
                .expect("open");
        // Epochs are hours: three anomalous rounds suspend (a day); after the suspension the
        // same again bans.
        let mut epoch = 0;
        for _ in 0..3 {
            assert_eq!(x.offer(report(&a, epoch, 9, 8.0)).expect("offer"), Offer::New);
            epoch += 1;
        }
        assert_eq!(x.status().nodes.iter().find(|n| n.id == "09090909").map(|n| n.standing), Some("suspended"));
        assert!(x.banned().is_empty());
        while epoch < 30 {
            x.offer(report(&a, epoch, 8, 0.1)).expect("offer");
            epoch += 1;
        }
        for _ in 0..3 {
            x.offer(report(&a, epoch, 9, 8.0)).expect("offer");
            epoch += 1;
        }
        assert_eq!(x.banned(), vec![[9; 32]]);
    }

    /// Three keys — a pre-trusted reporter and two others — and a genesis in which tier-1 nodes
    /// vote and a fifth of the weight is a quorum.
    fn governed() -> ([SigningKey; 3], Config) {
        let keys = [1u8, 2, 3].map(|i| SigningKey::from_bytes(&[i; 32]));
        let cfg = Config {
            pretrusted: vec![keys[0].verifying_key().to_bytes()],
            vote_from: 1,
            quorum: 0.2,
            ..Config::default()
        };
        (keys, cfg)
    }

    #[test]
    fn proposals_and_votes_ride_in_reports_and_every_node_reaches_the_same_outcome() {
        use vain_core::governance::{Choice, Kind, Proposal, Vote};
        let ([a, b, c], genesis) = governed();
        let cfg = || genesis.clone();
        let d1 = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d1.path(), cfg()).expect("open");
        // Epoch 0 brings b, c and the node to be banned into the ledger.
        let obs = |e: u64| {
            let o =
                |k: &SigningKey| Observation { subject: k.verifying_key().to_bytes(), what: Observed::Participated };
            vec![
                o(&b),
                o(&c),
                Observation { subject: [9; 32], what: Observed::Participated },
                Observation { subject: [9; 32], what: Observed::Anomaly { z: if e == 0 { 0.5 } else { 0.1 } } },
            ]
        };
        let mut reports = vec![Signed::sign(&a, Report::new(0, obs(0)))];
        assert_eq!(x.offer(reports[0].clone()).expect("offer"), Offer::New);

        let ban = Proposal { kind: Kind::Ban { node: [9; 32] }, opens: epoch_time(1), closes: epoch_time(4), nonce: 1 };
        let ban = Signed::sign(&a, ban);
        let id = ban.digest();
        let vote = |k: &SigningKey, choice| Governed::Vote(Signed::sign(k, Vote { proposal: id, choice }));
        // A vote before its proposal is known; then the proposal, its repeat, two votes.
        assert_eq!(x.submit(vote(&b, Choice::Yes)), Submit::UnknownProposal);
        assert_eq!(x.submit(Governed::Propose(ban.clone())), Submit::New);
        assert_eq!(x.submit(Governed::Propose(ban.clone())), Submit::Duplicate);
        assert_eq!(x.submit(vote(&b, Choice::Yes)), Submit::New);
        assert_eq!(x.submit(vote(&c, Choice::Yes)), Submit::New);
        // Forgeries, windows already over, unknown proposals.
        let mut forged = ban.clone();
        forged.body.nonce = 2;
        assert_eq!(x.submit(Governed::Propose(forged)), Submit::BadSignature);
        let late = Proposal { kind: Kind::Upgrade { version: "2".into() }, opens: 0, closes: epoch_time(1), nonce: 3 };
        assert_eq!(x.submit(Governed::Propose(Signed::sign(&a, late))), Submit::Closed);
        assert_eq!(
            x.submit(Governed::Vote(Signed::sign(&b, Vote { proposal: [7; 32], choice: Choice::No }))),
            Submit::UnknownProposal
        );
        // A key the ledger does not know has tier 0: it may neither propose nor vote.
        let stranger = SigningKey::from_bytes(&[4; 32]);
        let p2 =
            Proposal { kind: Kind::Unban { node: [9; 32] }, opens: epoch_time(1), closes: epoch_time(9), nonce: 4 };
        assert!(matches!(x.submit(Governed::Propose(Signed::sign(&stranger, p2))), Submit::Ineligible { need: 1, .. }));

        // The reporter carries the pool: the proposal first, then the votes.
        let carried = x.governance_for_report();
        assert_eq!(carried.len(), 3);
        assert!(matches!(carried[0], Governed::Propose(_)));
        reports.push(Signed::sign(&a, Report { epoch: 1, observations: obs(1), governance: carried }));
        assert_eq!(x.offer(reports[1].clone()).expect("offer"), Offer::New);
        let st = x.status();
        assert_eq!(st.pool, 0, "what a report carried leaves the pool");
        assert_eq!(st.proposals.len(), 1);
        assert_eq!(st.proposals[0].state, "open");
        assert_eq!(st.proposals[0].votes.get("yes"), Some(&2));
        assert_eq!(st.proposals[0].closes_epoch, 4);
        // Carried once: handing it in again is a duplicate.
        assert_eq!(x.submit(vote(&b, Choice::Yes)), Submit::Duplicate);

        for e in 2..5 {
            reports.push(Signed::sign(&a, Report::new(e, obs(e))));
        }
        for r in &reports[2..] {
            x.offer(r.clone()).expect("offer");
        }
        let st = x.status();
        assert_eq!(st.proposals[0].state, "passed", "{:?}", st.proposals);
        assert_eq!(st.proposals[0].votes.get("yes"), Some(&2));
        assert!(x.banned().contains(&[9; 32]));

        // Another node, the same reports in another order: the same state.
        let d2 = tempfile::tempdir().expect("dir");
        let mut y = Live::open(d2.path(), cfg()).expect("open");
        for r in reports.iter().rev() {
            y.offer(r.clone()).expect("offer");
        }
        assert_eq!(y.status().digest, x.status().digest);
        assert!(y.banned().contains(&[9; 32]));
        // A restart rebuilds the outcome from the journal.
        let digest = x.status().digest;
        drop(x);
        let x = Live::open(d1.path(), cfg()).expect("reopen");
        assert_eq!(x.status().digest, digest);
        assert_eq!(x.status().proposals[0].state, "passed");
        assert_eq!(x.status().proposals[0].votes.get("yes"), Some(&2));
    }

    /// A passed `set_parameter` proposal changes the ledger on every node at the tick that
    /// tallies it — here the reporting tier, after which a tier-1 node's report counts — and the
    /// change survives a restart and a snapshot. Proposals no ledger would take are not held.
    #[test]
    fn a_passed_parameter_change_applies_on_every_node_and_survives_a_restart() {
        use vain_core::governance::{Choice, Kind, Proposal, Vote};
        let ([a, b, c], genesis) = governed();
        let cfg = || genesis.clone();
        let d1 = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d1.path(), cfg()).expect("open");
        let took_part =
            |k: &SigningKey| Observation { subject: k.verifying_key().to_bytes(), what: Observed::Participated };
        let mut reports = vec![Signed::sign(&a, Report::new(0, vec![took_part(&b), took_part(&c)]))];
        assert_eq!(x.offer(reports[0].clone()).expect("offer"), Offer::New);
        assert_eq!(x.status().parameters.get("tier.report_from"), Some(&2.0));
        // b is at tier 1: its reports count nowhere yet.
        assert_eq!(x.offer(Signed::sign(&b, Report::new(1, Vec::new()))).expect("offer"), Offer::Ineligible);
        let set = |name: &str, value: f64, nonce| {
            let kind = Kind::SetParameter { name: name.into(), value };
            Governed::Propose(Signed::sign(&a, Proposal { kind, opens: epoch_time(1), closes: epoch_time(4), nonce }))
        };
        assert_eq!(x.submit(set("round_length_s", 600.0, 1)), Submit::Invalid, "no such parameter");
        assert_eq!(x.submit(set("tier.report_from", 0.0, 2)), Submit::Invalid, "out of range");
        assert_eq!(x.submit(set("tier.enter.3", 0.2, 3)), Submit::Invalid, "thresholds out of order");
        let proposal = set("tier.report_from", 1.0, 4);
        assert_eq!(x.submit(proposal.clone()), Submit::New);
        for k in [&b, &c] {
            assert_eq!(
                x.submit(Governed::Vote(Signed::sign(k, Vote { proposal: proposal.digest(), choice: Choice::Yes }))),
                Submit::New
            );
        }
        reports.push(Signed::sign(
            &a,
            Report { epoch: 1, observations: Vec::new(), governance: x.governance_for_report() },
        ));
        reports.extend((2..5).map(|e| Signed::sign(&a, Report::new(e, vec![took_part(&b)]))));
        for r in &reports[1..] {
            assert_eq!(x.offer(r.clone()).expect("offer"), Offer::New);
        }
        let st = x.status();
        assert_eq!(st.proposals[0].state, "passed", "{:?}", st.proposals);
        assert_eq!(st.parameters.get("tier.report_from"), Some(&1.0));
        // From the tally on, b reports.
        let from_b = Signed::sign(&b, Report::new(5, vec![took_part(&c)]));
        assert_eq!(x.offer(from_b.clone()).expect("offer"), Offer::New);
        assert_eq!(x.next_epoch(), 6);
        reports.push(from_b);
        // Another node, the same reports in another order (b's once it may report there too:
        // before, it would refuse it, and take it later from a peer's history): the same state.
        let d2 = tempfile::tempdir().expect("dir");
        let mut y = Live::open(d2.path(), cfg()).expect("open");
        assert_eq!(y.offer(reports[5].clone()).expect("offer"), Offer::Ineligible);
        for r in reports[..5].iter().rev() {
            y.offer(r.clone()).expect("offer");
        }
        assert_eq!(y.offer(reports[5].clone()).expect("offer"), Offer::New);
        assert_eq!(y.status().digest, x.status().digest);
        assert_eq!(y.status().parameters, x.status().parameters);
        // Replayed from the journal, and from a snapshot.
        let digest = x.status().digest;
        drop(x);
        let mut x = Live::open(d1.path(), cfg()).expect("reopen");
        assert_eq!((x.status().digest, x.status().parameters.get("tier.report_from")), (digest.clone(), Some(&1.0)));
        x.compact_now().expect("compact");
        drop(x);
        let x = Live::open(d1.path(), cfg()).expect("reopen");
        assert_eq!((x.status().digest, x.status().parameters.get("tier.report_from")), (digest, Some(&1.0)));
    }

    /// Who may aggregate: the genesis at any tier, others from the aggregating tier on — and
    /// nobody the ledger suspended, or that this node holds a proof against.
    #[test]
    fn aggregating_takes_the_genesis_or_the_aggregating_tier() {
        let ([a, b, _], genesis) = governed();
        let d = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d.path(), genesis).expect("open");
        let (ka, kb) = (a.verifying_key().to_bytes(), b.verifying_key().to_bytes());
        assert!(x.may_aggregate(&ka), "pre-trusted, at tier 1");
        assert!(!x.may_aggregate(&kb), "unknown: tier 0");
        assert_eq!(x.aggregators(), HashSet::from([ka]));
        let took_part = Observation { subject: kb, what: Observed::Participated };
        assert_eq!(x.offer(Signed::sign(&a, Report::new(0, vec![took_part]))).expect("offer"), Offer::New);
        assert_eq!(x.tier(&kb), 1);
        assert!(!x.may_aggregate(&kb), "tier 1 is below the aggregating tier (2)");
        // An equivocation proof held against the genesis aggregator keeps it out at once.
        let proof =
            Governed::Fork(Box::new(vain_core::ledger::Fork::new(&report(&a, 1, 7, 0.5), &report(&a, 1, 8, 0.5))));
        assert_eq!(x.submit(proof), Submit::New);
        assert!(!x.may_aggregate(&ka));
        assert!(x.aggregators().is_empty());
    }

    /// A voter that signs two different choices on one proposal: both reach the pool (each is a
    /// valid vote on its own), the report carries both, and every ledger that applies it
    /// penalises the voter: suspended at the epoch's tick, its vote then weighs nothing.
    #[test]
    fn a_voter_signing_two_choices_is_penalised_on_the_live_ledger() {
        use vain_core::governance::{Choice, Kind, Proposal, Vote};
        let (a, b) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let cfg = || Config { pretrusted: vec![a.verifying_key().to_bytes()], vote_from: 1, ..Config::default() };
        let d = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d.path(), cfg()).expect("open");
        let joined = Observation { subject: b.verifying_key().to_bytes(), what: Observed::Participated };
        assert_eq!(x.offer(Signed::sign(&a, Report::new(0, vec![joined]))).expect("offer"), Offer::New);
        let p = Proposal {
            kind: Kind::Upgrade { version: "2".into() },
            opens: epoch_time(1),
            closes: epoch_time(4),
            nonce: 1,
        };
        let p = Signed::sign(&a, p);
        let id = p.digest();
        assert_eq!(x.submit(Governed::Propose(p)), Submit::New);
        let vote = |choice| Governed::Vote(Signed::sign(&b, Vote { proposal: id, choice }));
        assert_eq!(x.submit(vote(Choice::Yes)), Submit::New);
        assert_eq!(x.submit(vote(Choice::No)), Submit::New);
        let carried = x.governance_for_report();
        assert_eq!(carried.len(), 3);
        let report = Signed::sign(&a, Report { epoch: 1, observations: vec![joined], governance: carried });
        assert_eq!(x.offer(report.clone()).expect("offer"), Offer::New);
        let key = hex::encode(b.verifying_key().to_bytes());
        let row = |x: &Live| x.status().nodes.into_iter().find(|n| n.key == key).expect("the voter's row");
        // The equivocation penalty suspends it at the epoch's tick.
        assert_eq!((row(&x).standing, row(&x).suspensions), ("suspended", 1), "{:?}", row(&x));
        let st = x.status();
        // Suspended, its vote (the first choice) weighs nothing in the tally.
        assert_eq!(st.proposals[0].votes.values().sum::<usize>(), 0, "{:?}", st.proposals[0].votes);
        // Another node applying the same reports reaches the same state.
        let d2 = tempfile::tempdir().expect("dir");
        let mut y = Live::open(d2.path(), cfg()).expect("open");
        y.offer(Signed::sign(&a, Report::new(0, vec![joined]))).expect("offer");
        y.offer(report).expect("offer");
        assert_eq!(y.status().digest, x.status().digest);
    }

    #[test]
    fn a_vote_waits_for_its_window_and_the_node_knows_its_own_choice() {
        use vain_core::governance::{Choice, Kind, Proposal, Vote};
        let a = SigningKey::from_bytes(&[1; 32]);
        let d = tempfile::tempdir().expect("dir");
        let mut x = Live::open(
            d.path(),
            Config { pretrusted: vec![a.verifying_key().to_bytes()], vote_from: 1, quorum: 0.2, ..Config::default() },
        )
        .expect("open");
        // Votes from epoch 5 on; the ledger is at epoch 0.
        let p = Signed::sign(
            &a,
            Proposal {
                kind: Kind::Upgrade { version: "2".into() },
                opens: epoch_time(5),
                closes: epoch_time(9),
                nonce: 1,
            },
        );
        let id = p.digest();
        assert_eq!(x.submit(Governed::Propose(p)), Submit::New);
        let v = Governed::Vote(Signed::sign(&a, Vote { proposal: id, choice: Choice::No }));
        assert_eq!(x.submit(v), Submit::New);
        assert_eq!(x.vote_of(&a.verifying_key().to_bytes(), &id), Some(Choice::No));
        // The next report carries the proposal, not yet the vote (the ledger would refuse it).
        let carried = x.governance_for_report();
        assert_eq!(carried.len(), 1);
        assert!(matches!(carried[0], Governed::Propose(_)));
        // A window longer than the ledger allows is refused before it is carried.
        let long = Signed::sign(
            &a,
            Proposal { kind: Kind::Upgrade { version: "3".into() }, opens: 0, closes: epoch_time(10_000), nonce: 2 },
        );
        assert_eq!(x.submit(Governed::Propose(long)), Submit::Closed);
    }

    #[test]
    fn one_author_cannot_fill_the_pool() {
        use vain_core::governance::{Kind, Proposal};
        let a = SigningKey::from_bytes(&[1; 32]);
        let d = tempfile::tempdir().expect("dir");
        let mut x =
            Live::open(d.path(), Config { pretrusted: vec![a.verifying_key().to_bytes()], ..Config::default() })
                .expect("open");
        let outcomes: Vec<Submit> = (0..POOL_PER_AUTHOR as u64 + 3)
            .map(|n| {
                let p = Proposal {
                    kind: Kind::Upgrade { version: format!("{n}") },
                    opens: 0,
                    closes: epoch_time(9),
                    nonce: n,
                };
                x.submit(Governed::Propose(Signed::sign(&a, p)))
            })
            .collect();
        assert_eq!(outcomes.iter().filter(|o| **o == Submit::New).count(), POOL_PER_AUTHOR);
        assert!(outcomes[POOL_PER_AUTHOR..].iter().all(|o| *o == Submit::Full));
        assert_eq!(x.status().submits.get("full"), Some(&3));
    }
}
