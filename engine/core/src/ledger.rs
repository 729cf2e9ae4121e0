//! The ledger: every node's reputation, tier, stake, suspension and ban, and the open proposals
//! and audits, as a sans-IO state machine.
//!
//! Feed it signed inputs with [`Ledger::handle`] (each is verified; anything from a banned or
//! suspended key, or from a key not eligible for that input, is refused with a typed error and
//! changes nothing), advance it with [`Ledger::tick`], and take the decisions it reached with
//! [`Ledger::poll`]. Given the same inputs at the same times, every honest node's ledger reaches
//! the same state: iteration orders are fixed (`BTreeMap`) and there is no clock inside.

use crate::audit;
use crate::governance::{Ballot, Equivocation, Kind, Outcome, Proposal, ProposalId, Tally, Vote, WeightMode};
use crate::reputation::{self, Decaying, SOURCES, Source, Weights};
use crate::signed::{self, Body, Signed, put_f64, put_u64};
use crate::tier;
use crate::trust;
use crate::{DAY, HOUR, NodeId, Time};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

/// What an eligible reporter observed about another node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    /// Took part in a round it was selected for.
    Participated,
    /// Was selected and did not deliver.
    Missed,
    /// Answered a resource challenge correctly and in time.
    ChallengePassed,
    /// Answered wrongly: a false resource claim, penalised.
    ChallengeFailed,
    /// Did not answer by the deadline: no resource credit, no penalty (being offline is not
    /// misbehaviour; it only costs reputation).
    ChallengeTimeout,
    /// Its update was flagged by the aggregation report (robust z-score of the norm, or a low
    /// cosine to the robust centre, turned into z).
    Anomaly {
        /// How far out it was.
        z: f64,
    },
    /// Fraction of heartbeats answered in the reporter's window, in [0, 1] (uptime).
    Uptime {
        /// The fraction.
        fraction: f64,
    },
    /// Direct feedback in [0, 1] on work done together.
    Feedback {
        /// The rating.
        score: f64,
    },
    /// The subject's bonded stake in the chain's Staking contract, in whole VAIN, as the
    /// reporter read it (summed over the accounts the subject registered, their signatures
    /// checked): the ledger's stake comes from the chain, not from the node's own word.
    Staked {
        /// Whole VAIN.
        total: u64,
    },
}

impl Observed {
    /// Its kind's tag in the canonical encoding.
    pub fn tag(&self) -> u8 {
        match self {
            Observed::Participated => 0,
            Observed::Missed => 1,
            Observed::ChallengePassed => 2,
            Observed::ChallengeFailed => 3,
            Observed::Anomaly { .. } => 4,
            Observed::Feedback { .. } => 5,
            Observed::ChallengeTimeout => 6,
            Observed::Uptime { .. } => 7,
            Observed::Staked { .. } => 8,
        }
    }

    /// Whether its value is one the ledger takes: a finite z, a feedback or uptime in [0, 1].
    pub fn valid(&self) -> bool {
        match *self {
            Observed::Anomaly { z } => z.is_finite(),
            Observed::Feedback { score: x } | Observed::Uptime { fraction: x } => (0.0..=1.0).contains(&x),
            _ => true,
        }
    }

    /// Of two observations of one kind about one subject in one report, the one that counts:
    /// the larger |z|, the lower feedback or uptime, the later stake (the worse news; a
    /// penalty is never lost to a milder repeat, nor multiplied by repeating it).
    fn merge(self, later: Observed) -> Observed {
        match (self, later) {
            (Observed::Anomaly { z: a }, Observed::Anomaly { z: b }) if b.abs() > a.abs() => later,
            (Observed::Feedback { score: a }, Observed::Feedback { score: b }) if b < a => later,
            (Observed::Uptime { fraction: a }, Observed::Uptime { fraction: b }) if b < a => later,
            (Observed::Staked { .. }, Observed::Staked { .. }) => later,
            _ => self,
        }
    }

    /// Whether a validator witnesses it (what a testimony may carry): challenge outcomes and
    /// uptime. Round evidence (participation, anomalies, feedback) and stakes come only from the
    /// epoch's own report.
    pub fn witnessed(&self) -> bool {
        matches!(
            self,
            Observed::ChallengePassed
                | Observed::ChallengeFailed
                | Observed::ChallengeTimeout
                | Observed::Uptime { .. }
        )
    }
}

/// One observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Whom it is about.
    pub subject: NodeId,
    /// What was seen.
    pub what: Observed,
}

/// Governance inputs a report carries at most.
pub const MAX_GOVERNANCE: usize = 256;
/// The longest voting window a proposal may have (30 days of ledger time).
pub const MAX_VOTING_WINDOW: Time = 30 * DAY;
/// Open proposals one proposer may have at a time.
pub const MAX_OPEN_PER_PROPOSER: usize = 8;
/// Equivocation proofs are taken for report epochs at most this many epochs back (report epochs
/// are ledger hours: the live ledger applies epoch e at (e + 1) h) …
pub const FORK_WINDOW: u64 = 1024;
/// … and at most this many ahead (as far as a report may be buffered ahead): nobody can take a
/// far-future epoch's penalty now to make its later proofs stale.
pub const FORK_AHEAD: u64 = 64;
/// An audit whose team has not decided within this much ledger time closes without a verdict
/// (a silent team must not keep its subject from being audited again).
pub const AUDIT_WINDOW: Time = DAY;

/// A governance input carried by a report, signed by its own author: the reporter only orders
/// it (it cannot forge or alter it; it can leave it out).
#[derive(Debug, Clone, PartialEq)]
pub enum Governed {
    /// A proposal.
    Propose(Signed<Proposal>),
    /// A vote.
    Vote(Signed<Vote>),
    /// Another eligible reporter's observations (a validator's challenge outcomes and uptime
    /// measurements), carried so that every node applies them at the same place in the same
    /// epoch. Its report carries nothing itself, and a reporter's testimonies apply in strictly
    /// increasing epochs, so a carrier cannot replay one.
    Testimony(Signed<Report>),
    /// A request to audit a node's work (the team is drawn when the report carrying it is
    /// applied, from the state digest before it: nobody picks it).
    RequestAudit(Signed<AuditRequest>),
    /// An audit team member's verdict.
    Verdict(Signed<audit::Verdict>),
    /// Proof that a reporter signed two different reports for one epoch (whoever holds both
    /// may submit it; it stands on the reporter's own signatures).
    Fork(Box<Fork>),
    /// A node's local trust in the nodes it worked with (its EigenTrust edges), signed by that
    /// node and carried so that every ledger replaces the node's vector at the same place.
    Trust(Signed<TrustVector>),
    /// A node's admission that it gave up a validator's challenge: carried only inside that
    /// validator's testimony, as the proof of a failure it testifies to (never on its own).
    GaveUp(Signed<crate::challenge::GaveUp>),
}

/// Two different reports one reporter signed for the same epoch, in digest order, so that
/// every node that finds the same pair builds the same proof (and de-duplicates it). Each report
/// is kept as its signed bytes — the canonical body encoding, whose first 8 bytes are the epoch —
/// not decoded: a proof never has to decode what the reports carry (governance, even other
/// proofs), so it nests nothing and always round-trips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The reporter.
    pub signer: NodeId,
    /// The two reports: canonical body bytes and signature, the smaller digest first.
    pub reports: [(Vec<u8>, [u8; 64]); 2],
}

impl Fork {
    /// The proof of `a` and `b` (in either order; [`Fork::check`] says whether it is one).
    pub fn new(a: &Signed<Report>, b: &Signed<Report>) -> Fork {
        let bytes = |r: &Signed<Report>| {
            let mut body = Vec::new();
            r.body.encode(&mut body);
            (body, r.signature)
        };
        let (x, y) = (bytes(a), bytes(b));
        let (dx, dy) = (report_digest(&a.signer, &x.0, &x.1), report_digest(&a.signer, &y.0, &y.1));
        Fork { signer: a.signer, reports: if dx <= dy { [x, y] } else { [y, x] } }
    }

    /// Checks the proof: two different reports in digest order, both signed by the signer
    /// under the report tag, for one epoch. Gives that epoch.
    pub fn check(&self) -> Result<u64, Error> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.signer)
            .map_err(|_| Error::Signature(signed::Error::BadKey))?;
        let [(b0, s0), (b1, s1)] = &self.reports;
        if self.digest_of(0) >= self.digest_of(1) {
            return Err(Error::Value { field: "fork.order" });
        }
        let epoch = |b: &[u8]| b.get(..8).map(|e| u64::from_le_bytes(e.try_into().unwrap_or([0; 8])));
        let (Some(e0), Some(e1)) = (epoch(b0), epoch(b1)) else { return Err(Error::Value { field: "fork.epoch" }) };
        if e0 != e1 {
            return Err(Error::Value { field: "fork.epoch" });
        }
        for (body, sig) in [(b0, s0), (b1, s1)] {
            let input = vain_schema::sign::SigningInput::new(<Report as Body>::TAG, body);
            key.verify_strict(input.as_bytes(), &ed25519_dalek::Signature::from_bytes(sig))
                .map_err(|_| Error::Signature(signed::Error::BadSignature))?;
        }
        Ok(e0)
    }

    /// The epoch both reports claim (0 when a body is too short to hold one; such a proof
    /// fails [`Fork::check`]).
    pub fn epoch(&self) -> u64 {
        self.reports[0].0.get(..8).map_or(0, |e| u64::from_le_bytes(e.try_into().unwrap_or([0; 8])))
    }

    /// The digest of report `i` (0 or 1), as [`Signed::digest`] gives it for the decoded report.
    fn digest_of(&self, i: usize) -> [u8; 32] {
        report_digest(&self.signer, &self.reports[i].0, &self.reports[i].1)
    }

    /// Its digest: of the two reports' digests, under its own tag.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"vain/fork/v2");
        h.update(&self.digest_of(0));
        h.update(&self.digest_of(1));
        *h.finalize().as_bytes()
    }
}

/// [`Signed::digest`] of a report from its body bytes.
fn report_digest(signer: &NodeId, body: &[u8], signature: &[u8; 64]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(<Report as Body>::TAG.as_str().as_bytes());
    h.update(signer);
    h.update(body);
    h.update(signature);
    *h.finalize().as_bytes()
}

impl Governed {
    /// The digest of the signed input.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Governed::Propose(p) => p.digest(),
            Governed::Vote(v) => v.digest(),
            Governed::Testimony(t) => t.digest(),
            Governed::RequestAudit(q) => q.digest(),
            Governed::Verdict(v) => v.digest(),
            Governed::Fork(f) => f.digest(),
            Governed::Trust(t) => t.digest(),
            Governed::GaveUp(g) => g.digest(),
        }
    }

    /// Its author (of a fork proof: the reporter it convicts, whose signatures it carries).
    pub fn signer(&self) -> NodeId {
        match self {
            Governed::Propose(p) => p.signer,
            Governed::Vote(v) => v.signer,
            Governed::Testimony(t) => t.signer,
            Governed::RequestAudit(q) => q.signer,
            Governed::Verdict(v) => v.signer,
            Governed::Fork(f) => f.signer,
            Governed::Trust(t) => t.signer,
            Governed::GaveUp(g) => g.signer,
        }
    }

    /// The ledger input it is (an admission is none: it is part of a testimony).
    pub fn input(&self) -> Option<Input> {
        Some(match self {
            Governed::Propose(p) => Input::Propose(p.clone()),
            Governed::Vote(v) => Input::Vote(v.clone()),
            Governed::Testimony(t) => Input::Testimony(t.clone()),
            Governed::RequestAudit(q) => Input::RequestAudit(q.clone()),
            Governed::Verdict(v) => Input::Verdict(v.clone()),
            Governed::Fork(f) => Input::Fork(f.clone()),
            Governed::Trust(t) => Input::Trust(t.clone()),
            Governed::GaveUp(_) => return None,
        })
    }
}

/// A signed batch of observations (one per reporter and epoch is typical), and the governance
/// inputs the reporter sequences into its epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Reporter's epoch counter (distinguishes reports).
    pub epoch: u64,
    /// The observations.
    pub observations: Vec<Observation>,
    /// Proposals and votes, applied after the observations in this order (at most
    /// [`MAX_GOVERNANCE`]).
    pub governance: Vec<Governed>,
}

impl Report {
    /// A report of observations only.
    pub fn new(epoch: u64, observations: Vec<Observation>) -> Report {
        Report { epoch, observations, governance: Vec::new() }
    }
}

impl Body for Report {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/report/v2");
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.epoch);
        put_u64(out, self.observations.len() as u64);
        for o in &self.observations {
            out.extend_from_slice(&o.subject);
            out.push(o.what.tag());
            match o.what {
                Observed::Participated
                | Observed::Missed
                | Observed::ChallengePassed
                | Observed::ChallengeFailed
                | Observed::ChallengeTimeout => {}
                Observed::Anomaly { z: x } | Observed::Feedback { score: x } | Observed::Uptime { fraction: x } => {
                    put_f64(out, x)
                }
                Observed::Staked { total } => put_u64(out, total),
            }
        }
        put_u64(out, self.governance.len() as u64);
        for g in &self.governance {
            crate::codec::encode_governed(g, out);
        }
    }
}

/// Edges a local-trust vector has at most (a node vouches for the partners it worked with
/// most; EigenTrust normalises its row whatever its length).
pub const MAX_TRUST_EDGES: usize = 64;

/// A node's local trust in others (replaces its previous vector): at most
/// [`MAX_TRUST_EDGES`] edges, in strictly increasing key order, finite weights ≥ 0, none to
/// its signer.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustVector {
    /// Sender's epoch counter; older vectors are ignored.
    pub epoch: u64,
    /// (node, weight ≥ 0).
    pub edges: Vec<(NodeId, f64)>,
}

impl TrustVector {
    /// A vector of `edges` in key order, the weights of a key listed twice added up.
    pub fn new(epoch: u64, edges: impl IntoIterator<Item = (NodeId, f64)>) -> TrustVector {
        let mut merged: BTreeMap<NodeId, f64> = BTreeMap::new();
        for (k, w) in edges {
            *merged.entry(k).or_default() += w;
        }
        TrustVector { epoch, edges: merged.into_iter().collect() }
    }

    /// Whether `signer` may sign it as it is (see the type's doc).
    pub fn well_formed(&self, signer: &NodeId) -> bool {
        self.edges.len() <= MAX_TRUST_EDGES
            && self.edges.iter().all(|(to, w)| to != signer && w.is_finite() && *w >= 0.0)
            && self.edges.windows(2).all(|p| p[0].0 < p[1].0)
    }
}

impl Body for TrustVector {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/trust/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.epoch);
        put_u64(out, self.edges.len() as u64);
        for (id, w) in &self.edges {
            out.extend_from_slice(id);
            put_f64(out, *w);
        }
    }
}

/// Stake bonded by its signer (a ledger entry; chain anchoring comes later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bond {
    /// Total stake after this message.
    pub total: u64,
    /// Sender's sequence number; must grow.
    pub seq: u64,
}

impl Body for Bond {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/bond/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.total);
        put_u64(out, self.seq);
    }
}

/// A request to audit a node's work in a round, signed by any node in good standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRequest {
    /// The node to audit.
    pub subject: NodeId,
    /// The round whose update the team re-executes.
    pub round: u64,
    /// Distinguishes requests.
    pub nonce: u64,
}

impl Body for AuditRequest {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/audit-request/v2");
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.subject);
        put_u64(out, self.round);
        put_u64(out, self.nonce);
    }
}

/// Inputs to the ledger.
#[derive(Debug, Clone)]
pub enum Input {
    /// Observations by an eligible reporter.
    Report(Signed<Report>),
    /// A node's local trust.
    Trust(Signed<TrustVector>),
    /// A new proposal.
    Propose(Signed<Proposal>),
    /// A vote.
    Vote(Signed<Vote>),
    /// Stake.
    Bond(Signed<Bond>),
    /// An auditor's verdict.
    Verdict(Signed<audit::Verdict>),
    /// Any node asks for an audit; the team is drawn from the ledger's last state digest, which
    /// the requester cannot choose.
    RequestAudit(Signed<AuditRequest>),
    /// An eligible reporter's observations carried by another's report (see
    /// [`Governed::Testimony`]).
    Testimony(Signed<Report>),
    /// Proof that a reporter equivocated (see [`Governed::Fork`]): penalised once per epoch,
    /// by [`Penalties::equivocation`] (enough to suspend it at the epoch's tick).
    Fork(Box<Fork>),
}

/// Checks what a testimony may say, before anything of it applies: only what a validator
/// witnesses ([`Observed::witnessed`]) with valid values, and each failed challenge proven by
/// the subject's own [`crate::challenge::GaveUp`] for a task the testifier set it (within the
/// bounds a node works on), labelled after `after` (the testifier's last applied testimony) and
/// at most the testimony's epoch; its governance holds those admissions and nothing else, one
/// per failed subject, at most [`MAX_GOVERNANCE`]. A testifier
/// cannot penalise a node that never admitted failing its task, nor count one admission twice.
pub fn testimony_checked(t: &Signed<Report>, after: Option<u64>) -> Result<(), Error> {
    let mut failed = BTreeSet::new();
    for o in &t.body.observations {
        if !o.what.valid() {
            return Err(Error::Value { field: "observation" });
        }
        if !o.what.witnessed() {
            return Err(Error::Value { field: "testimony.observation" });
        }
        if o.what == Observed::ChallengeFailed {
            failed.insert(o.subject);
        }
    }
    if t.body.governance.len() != failed.len() || failed.len() > MAX_GOVERNANCE {
        return Err(Error::Unproven);
    }
    for g in &t.body.governance {
        let Governed::GaveUp(g) = g else { return Err(Error::Value { field: "testimony.governance" }) };
        let epoch = g.admits(&t.signer)?;
        if after.is_some_and(|a| epoch <= a) || epoch > t.body.epoch || !failed.remove(&g.signer) {
            return Err(Error::Unproven);
        }
    }
    Ok(())
}

/// Whether every admission a testimony carries is still labelled after `after` (the signer's last
/// applied testimony): the cheap part of [`testimony_checked`] (no signatures), for dropping a
/// held testimony that an earlier one applied since has made unprovable.
pub fn admissions_in_window(t: &Signed<Report>, after: Option<u64>) -> bool {
    t.body.governance.iter().all(|g| match g {
        Governed::GaveUp(g) => after.is_none_or(|a| g.body.task.body.epoch > a),
        _ => true,
    })
}

/// Penalty points per kind of bad evidence, and when they act.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, PartialEq)]
pub struct Penalties {
    /// Per anomaly observation with z above `anomaly_z`.
    pub anomaly: f64,
    /// z from which an anomaly counts.
    pub anomaly_z: f64,
    /// Per failed challenge.
    pub failed_challenge: f64,
    /// Per failed audit.
    pub failed_audit: f64,
    /// Per equivocation.
    pub equivocation: f64,
    /// Penalty sum at which a node is suspended.
    pub suspend_at: f64,
    /// How long a suspension lasts.
    pub suspend_for: Time,
    /// Suspensions after which the node is banned.
    pub ban_after: u32,
}

impl Default for Penalties {
    fn default() -> Self {
        Self {
            anomaly: 0.4,
            anomaly_z: 3.5,
            failed_challenge: 0.15,
            failed_audit: 0.8,
            equivocation: 1.5,
            suspend_at: 1.0,
            suspend_for: DAY,
            ban_after: 2,
        }
    }
}

/// Ledger configuration.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Score weights.
    pub weights: Weights,
    /// Half-life of evidence and penalties.
    pub half_life: Time,
    /// Pseudo-observations that shrink a source's mean towards 0.
    pub prior: f64,
    /// Tiers.
    pub tiers: tier::Config,
    /// EigenTrust damping α.
    pub trust_alpha: f64,
    /// Pre-trusted nodes (bootstrap validators): eligible reporters from the start.
    pub pretrusted: Vec<NodeId>,
    /// Voting weight.
    pub weight_mode: WeightMode,
    /// Fraction of eligible weight that must vote.
    pub quorum: f64,
    /// Lowest tier that may propose and vote.
    pub vote_from: u8,
    /// Lowest tier that may aggregate a model's rounds (pre-trusted nodes may at any tier).
    pub aggregate_from: u8,
    /// Penalties.
    pub penalties: Penalties,
    /// Auditors per audit.
    pub audit_team: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            half_life: 2 * DAY,
            prior: 3.0,
            tiers: tier::Config::default(),
            trust_alpha: 0.15,
            pretrusted: Vec::new(),
            weight_mode: WeightMode::Tier,
            quorum: 0.5,
            vote_from: 2,
            aggregate_from: 2,
            penalties: Penalties::default(),
            audit_team: 5,
        }
    }
}

/// Why an input was refused. Nothing changed.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Bad signature or key.
    #[error(transparent)]
    Signature(#[from] signed::Error),
    /// The signer is banned.
    #[error("signer is banned")]
    Banned,
    /// The signer is suspended until the given time.
    #[error("signer is suspended until {until}")]
    Suspended {
        /// End of the suspension.
        until: Time,
    },
    /// The signer's tier does not allow this input.
    #[error("signer's tier {tier} may not {what}")]
    NotEligible {
        /// Its tier.
        tier: u8,
        /// What it tried.
        what: &'static str,
    },
    /// No open proposal with this id.
    #[error("unknown proposal")]
    UnknownProposal,
    /// The vote is outside the proposal's window.
    #[error("vote at {now} is outside the window [{opens}, {closes})")]
    OutsideWindow {
        /// Window start.
        opens: Time,
        /// Window end.
        closes: Time,
        /// When the vote arrived.
        now: Time,
    },
    /// The proposal's window is empty, already over, or longer than [`MAX_VOTING_WINDOW`].
    #[error("proposal window is empty, in the past or longer than 30 days")]
    BadWindow,
    /// The proposer already has [`MAX_OPEN_PER_PROPOSER`] open proposals.
    #[error("the proposer has too many open proposals")]
    TooManyOpen,
    /// No open audit with this id, or the signer is not on its team.
    #[error("not an open audit of this node with the signer on its team")]
    NotOnTeam,
    /// A number is NaN, infinite or out of range.
    #[error("{field} is out of range")]
    Value {
        /// Which field.
        field: &'static str,
    },
    /// An audit of this node is already open.
    #[error("an audit of this node is already open")]
    AuditOpen,
    /// An older message than one already applied (trust epoch, bond sequence).
    #[error("stale message")]
    Stale,
    /// A proposal to set a parameter that does not exist, or to a value it may not take.
    #[error(transparent)]
    Parameter(#[from] crate::params::Error),
    /// A testimony's failed challenge without the subject's signed admission to a task the
    /// testifier set it within the testimony's window, or an admission no failure in it needs.
    #[error("a failed challenge without the subject's admission, or an admission without a failure")]
    Unproven,
}

impl Error {
    /// A short name of the variant, for counting refusals by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Signature(_) => "bad signature",
            Error::Banned => "signer banned",
            Error::Suspended { .. } => "signer suspended",
            Error::NotEligible { .. } => "signer not eligible",
            Error::UnknownProposal => "unknown proposal",
            Error::OutsideWindow { .. } => "vote outside window",
            Error::BadWindow => "bad proposal window",
            Error::TooManyOpen => "too many open proposals",
            Error::NotOnTeam => "not on audit team",
            Error::Value { .. } => "value out of range",
            Error::AuditOpen => "audit already open",
            Error::Stale => "stale message",
            Error::Parameter(_) => "bad parameter",
            Error::Unproven => "unproven challenge failure",
        }
    }
}

/// Decisions the ledger reached, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A node changed tier.
    TierChanged {
        /// The node.
        node: NodeId,
        /// Old tier.
        from: u8,
        /// New tier.
        to: u8,
    },
    /// A node was suspended.
    Suspended {
        /// The node.
        node: NodeId,
        /// Until when.
        until: Time,
    },
    /// A node was banned (repeated suspensions or a passed ban proposal).
    Banned {
        /// The node.
        node: NodeId,
    },
    /// A ban was lifted by a passed proposal.
    Unbanned {
        /// The node.
        node: NodeId,
    },
    /// Equivocation detected; both signed votes are the proof.
    Equivocation(Box<Equivocation>),
    /// A proof that a reporter signed two reports for one epoch was applied: it is penalised.
    Forked {
        /// The reporter.
        node: NodeId,
        /// The epoch it signed two reports for.
        epoch: u64,
    },
    /// A passed proposal set a parameter (from the tick that tallied it on).
    ParameterSet {
        /// The parameter.
        name: String,
        /// Its new value.
        value: f64,
    },
    /// A passed proposal could not set its parameter: another change since it was proposed
    /// made the value invalid (tier thresholds out of order). Nothing changed.
    ParameterRefused {
        /// The parameter.
        name: String,
        /// Why.
        error: crate::params::Error,
    },
    /// A proposal's window closed.
    ProposalClosed {
        /// The proposal.
        id: ProposalId,
        /// Result.
        outcome: Outcome,
        /// The weights.
        tally: Tally,
    },
    /// An audit was opened: ask this team for verdicts.
    AuditOpened {
        /// The audit.
        audit: [u8; 32],
        /// Audited node.
        subject: NodeId,
        /// The round whose work is audited.
        round: u64,
        /// The team.
        team: Vec<NodeId>,
    },
    /// An audit's team did not decide within [`AUDIT_WINDOW`]: closed without a verdict.
    AuditExpired {
        /// The audit.
        audit: [u8; 32],
        /// Audited node.
        subject: NodeId,
    },
    /// An audit team reached a majority.
    AuditDecided {
        /// The audit.
        audit: [u8; 32],
        /// Audited node.
        subject: NodeId,
        /// Whether it passed.
        pass: bool,
    },
}

/// Everything the ledger knows about one node.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone)]
pub struct Record {
    sources: [Decaying; SOURCES],
    penalty: Decaying,
    /// Its EigenTrust score relative to an even share, capped at 1 (the score's social term).
    pub social: f64,
    /// Tier state.
    pub tier: tier::State,
    /// Bonded stake.
    pub stake: u64,
    bond_seq: u64,
    /// Epoch of the last local-trust vector it signed that was applied.
    pub trust_epoch: Option<u64>,
    /// Epoch of the last testimony this node signed that was applied.
    testified: Option<u64>,
    /// The epochs, within [`FORK_WINDOW`] of now, for which a proof that it signed two reports
    /// was applied (ascending): each is penalised once.
    pub forked: Vec<u64>,
    /// End of the current suspension.
    pub suspended_until: Option<Time>,
    /// Suspensions so far.
    pub suspensions: u32,
    /// Banned for good (until a passed unban proposal).
    pub banned: bool,
    /// Last computed score.
    pub score: f64,
}

impl Record {
    fn new(now: Time) -> Self {
        Self {
            sources: [Decaying::default(); SOURCES],
            penalty: Decaying::default(),
            social: 0.0,
            tier: tier::State::new(now),
            stake: 0,
            bond_seq: 0,
            trust_epoch: None,
            testified: None,
            forked: Vec::new(),
            suspended_until: None,
            suspensions: 0,
            banned: false,
            score: 0.0,
        }
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Clone)]
struct OpenProposal {
    proposal: Signed<Proposal>,
    ballot: Ballot,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Clone)]
struct OpenAudit {
    subject: NodeId,
    opened: Time,
    round: u64,
    team: Vec<NodeId>,
    verdicts: BTreeMap<NodeId, bool>,
}

/// A ledger's whole state between two inputs: what a journal compacts into, so recovery
/// replays only the entries after it. Written and read through vain-schema's `persist`
/// (checksummed, validated before use).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
pub struct Snapshot {
    at: Time,
    cfg: Config,
    nodes: BTreeMap<NodeId, Record>,
    trust: BTreeMap<NodeId, Vec<(NodeId, f64)>>,
    proposals: BTreeMap<ProposalId, OpenProposal>,
    audits: BTreeMap<[u8; 32], OpenAudit>,
    last_digest: [u8; 32],
}

impl vain_schema::persist::Persisted for Snapshot {
    const KIND: u32 = 3;
    const VERSION: u32 = 3;
    const NAME: &'static str = "ledger snapshot";
}

impl Snapshot {
    /// The snapshot's bytes (vain-schema's checksummed archive).
    pub fn encode(&self) -> Result<Vec<u8>, vain_schema::Error> {
        vain_schema::persist::encode(self)
    }

    /// A snapshot from `bytes`, checked (header, checksum, archive validation) before use.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, vain_schema::Error> {
        vain_schema::persist::decode(bytes)
    }

    /// The ledger time it was taken at: journal entries up to it are in it.
    pub fn at(&self) -> Time {
        self.at
    }
}

/// The state machine.
pub struct Ledger {
    cfg: Config,
    nodes: BTreeMap<NodeId, Record>,
    trust: BTreeMap<NodeId, Vec<(NodeId, f64)>>,
    proposals: BTreeMap<ProposalId, OpenProposal>,
    audits: BTreeMap<[u8; 32], OpenAudit>,
    pretrusted: BTreeSet<NodeId>,
    outbox: VecDeque<Output>,
    last_digest: [u8; 32],
}

impl Ledger {
    /// An empty ledger; pre-trusted nodes are known from the start.
    pub fn new(cfg: Config, now: Time) -> Self {
        let pretrusted: BTreeSet<NodeId> = cfg.pretrusted.iter().copied().collect();
        let nodes = pretrusted.iter().map(|id| (*id, Record::new(now))).collect();
        Self {
            cfg,
            nodes,
            trust: BTreeMap::new(),
            proposals: BTreeMap::new(),
            audits: BTreeMap::new(),
            pretrusted,
            outbox: VecDeque::new(),
            last_digest: [0; 32],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Its whole state, after the input or tick at ledger time `at`. Taken between inputs
    /// (decisions not yet polled are not part of it).
    pub fn snapshot(&self, at: Time) -> Snapshot {
        Snapshot {
            at,
            cfg: self.cfg.clone(),
            nodes: self.nodes.clone(),
            trust: self.trust.clone(),
            proposals: self.proposals.clone(),
            audits: self.audits.clone(),
            last_digest: self.last_digest,
        }
    }

    /// The ledger a snapshot was taken of: the same digest, and the same answers to every later
    /// input.
    pub fn from_snapshot(s: Snapshot) -> Ledger {
        let pretrusted = s.cfg.pretrusted.iter().copied().collect();
        Ledger {
            cfg: s.cfg,
            nodes: s.nodes,
            trust: s.trust,
            proposals: s.proposals,
            audits: s.audits,
            pretrusted,
            outbox: VecDeque::new(),
            last_digest: s.last_digest,
        }
    }

    /// Makes a node known (e.g. from its verified announcement).
    pub fn join(&mut self, node: NodeId, now: Time) {
        self.nodes.entry(node).or_insert_with(|| Record::new(now));
    }

    /// A node's record.
    pub fn record(&self, node: &NodeId) -> Option<&Record> {
        self.nodes.get(node)
    }

    /// All known nodes, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &Record)> {
        self.nodes.iter()
    }

    /// A node's tier (0 when unknown, banned or suspended: it has no privileges).
    pub fn tier(&self, node: &NodeId, now: Time) -> u8 {
        match self.nodes.get(node) {
            Some(r) if self.allowed(r, now) => r.tier.tier,
            _ => 0,
        }
    }

    /// Whether honest nodes should serve `node` at all.
    pub fn is_banned(&self, node: &NodeId) -> bool {
        self.nodes.get(node).is_some_and(|r| r.banned)
    }

    fn allowed(&self, r: &Record, now: Time) -> bool {
        !r.banned && r.suspended_until.is_none_or(|u| now >= u)
    }

    fn check_signer<T: Body>(&self, msg: &Signed<T>, now: Time) -> Result<(), Error> {
        if let Some(r) = self.nodes.get(&msg.signer) {
            if r.banned {
                return Err(Error::Banned);
            }
            if let Some(until) = r.suspended_until
                && now < until
            {
                return Err(Error::Suspended { until });
            }
        }
        msg.verify()?;
        Ok(())
    }

    /// Whether a proof that `node` signed two reports for `epoch` would be applied at `now`:
    /// `node` is a reporter (pre-trusted or at the reporting tier, suspended or not: a key whose
    /// reports nobody takes cannot split the ledger, and its proofs must not grow it), not
    /// banned, not already penalised for `epoch`, and `epoch` within [`FORK_WINDOW`] back and
    /// [`FORK_AHEAD`] ahead of now.
    pub fn fork_admissible(&self, node: &NodeId, epoch: u64, now: Time) -> Result<(), Error> {
        let rec = self.nodes.get(node);
        if rec.is_some_and(|r| r.banned) {
            return Err(Error::Banned);
        }
        let reporter = self.pretrusted.contains(node) || rec.is_some_and(|r| r.tier.tier >= self.cfg.tiers.report_from);
        if !reporter {
            return Err(Error::NotEligible {
                tier: rec.map_or(0, |r| r.tier.tier),
                what: "be convicted of equivocation",
            });
        }
        let current = now / HOUR;
        if epoch > current + FORK_AHEAD || epoch + FORK_WINDOW < current {
            return Err(Error::Value { field: "fork.epoch" });
        }
        if rec.is_some_and(|r| r.forked.binary_search(&epoch).is_ok()) {
            return Err(Error::Stale);
        }
        Ok(())
    }

    /// Whether `node` may aggregate a model's rounds at `now`: pre-trusted or at the
    /// aggregating tier (`aggregate_from`), and neither suspended nor banned. Clients take
    /// opens only from such a node; its provider records are the only ones kept.
    pub fn may_aggregate(&self, node: &NodeId, now: Time) -> bool {
        self.nodes.get(node).is_none_or(|r| self.allowed(r, now))
            && (self.pretrusted.contains(node) || self.tier(node, now) >= self.cfg.aggregate_from)
    }

    /// Whether `node` may sign local trust at `now`: neither banned nor suspended, and
    /// pre-trusted or holding an EigenTrust share (some trusted node vouches for it).
    pub fn may_vouch(&self, node: &NodeId, now: Time) -> bool {
        let rec = self.nodes.get(node);
        rec.is_none_or(|r| self.allowed(r, now))
            && (self.pretrusted.contains(node) || rec.is_some_and(|r| r.social > 0.0))
    }

    /// Whether `node` may report evidence at `now` (pre-trusted, or at the reporting tier).
    /// A suspended or banned node may not, pre-trusted or not.
    pub fn may_report(&self, node: &NodeId, now: Time) -> bool {
        self.nodes.get(node).is_none_or(|r| self.allowed(r, now))
            && (self.pretrusted.contains(node) || self.tier(node, now) >= self.cfg.tiers.report_from)
    }

    fn penalise(&mut self, node: &NodeId, points: f64, now: Time) {
        let hl = self.cfg.half_life;
        self.nodes.entry(*node).or_insert_with(|| Record::new(now)).penalty.observe(now, points, hl);
    }

    fn observe(&mut self, node: &NodeId, source: Source, x: f64, now: Time) {
        let hl = self.cfg.half_life;
        self.nodes.entry(*node).or_insert_with(|| Record::new(now)).sources[source as usize].observe(now, x, hl);
    }

    /// Checks a report's observations (all or nothing) and applies them; what a reporter says
    /// about itself is ignored, and the observations of one kind about one subject count once,
    /// as [`Observed::merge`] combines them (a reporter cannot multiply a penalty by repeating
    /// it). A `testimony` carries only what a validator witnesses ([`Observed::witnessed`]).
    fn observe_all(&mut self, r: &Signed<Report>, now: Time, testimony: bool) -> Result<(), Error> {
        for o in &r.body.observations {
            if !o.what.valid() {
                return Err(Error::Value { field: "observation" });
            }
            if testimony && !o.what.witnessed() {
                return Err(Error::Value { field: "testimony.observation" });
            }
        }
        let p = self.cfg.penalties.clone();
        // Group by (subject, kind) with a sort (cheaper than a map on the hot path: a report
        // holds a round's verdicts): each group's merge, in the report's order, is applied at the
        // place of its first observation.
        let obs = &r.body.observations;
        let mut keys: Vec<(NodeId, u8, usize)> = obs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.subject != r.signer)
            .map(|(i, o)| (o.subject, o.what.tag(), i))
            .collect();
        keys.sort_unstable();
        let mut effective: Vec<Option<Observed>> = vec![None; obs.len()];
        for group in keys.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let first = group[0].2;
            effective[first] = Some(group[1..].iter().fold(obs[first].what, |m, &(_, _, i)| m.merge(obs[i].what)));
        }
        for (o, what) in obs.iter().zip(effective) {
            let Some(what) = what else { continue };
            let o = Observation { subject: o.subject, what };
            match o.what {
                Observed::Participated => self.observe(&o.subject, Source::Participation, 1.0, now),
                Observed::Missed => self.observe(&o.subject, Source::Participation, 0.0, now),
                Observed::ChallengePassed => self.observe(&o.subject, Source::Resource, 1.0, now),
                Observed::ChallengeTimeout => self.observe(&o.subject, Source::Resource, 0.0, now),
                Observed::ChallengeFailed => {
                    self.observe(&o.subject, Source::Resource, 0.0, now);
                    self.penalise(&o.subject, p.failed_challenge, now);
                }
                Observed::Anomaly { z } => {
                    if z.abs() >= p.anomaly_z {
                        self.penalise(&o.subject, p.anomaly, now);
                    }
                }
                Observed::Feedback { score } => self.observe(&o.subject, Source::Audit, score, now),
                Observed::Uptime { fraction } => self.observe(&o.subject, Source::Participation, fraction, now),
                Observed::Staked { total } => {
                    self.nodes.entry(o.subject).or_insert_with(|| Record::new(now)).stake = total;
                }
            }
        }
        Ok(())
    }

    /// Verifies and applies one input.
    pub fn handle(&mut self, now: Time, input: Input) -> Result<(), Error> {
        match input {
            Input::Report(r) => {
                self.check_signer(&r, now)?;
                if !self.may_report(&r.signer, now) {
                    return Err(Error::NotEligible { tier: self.tier(&r.signer, now), what: "report evidence" });
                }
                self.observe_all(&r, now, false)?;
                // Each governance input stands on its own signature and its author's
                // eligibility; one the ledger refuses changes nothing, and the rest still apply.
                // One testimony per signer per report, that is per epoch: a testifier's penalties
                // cannot pile up in one epoch however many it signed ahead.
                let mut testified = BTreeSet::new();
                for g in r.body.governance.iter().take(MAX_GOVERNANCE) {
                    let testifier = match g {
                        Governed::Testimony(t) => Some(t.signer),
                        _ => None,
                    };
                    if testifier.is_some_and(|k| testified.contains(&k)) {
                        continue;
                    }
                    if g.input().is_some_and(|input| self.handle(now, input).is_ok())
                        && let Some(k) = testifier
                    {
                        testified.insert(k);
                    }
                }
                Ok(())
            }
            Input::Testimony(t) => {
                self.check_signer(&t, now)?;
                if !self.may_report(&t.signer, now) {
                    return Err(Error::NotEligible { tier: self.tier(&t.signer, now), what: "testify" });
                }
                let after = self.nodes.get(&t.signer).and_then(|r| r.testified);
                if after.is_some_and(|e| t.body.epoch <= e) {
                    return Err(Error::Stale);
                }
                testimony_checked(&t, after)?;
                self.observe_all(&t, now, true)?;
                self.nodes.entry(t.signer).or_insert_with(|| Record::new(now)).testified = Some(t.body.epoch);
                Ok(())
            }
            Input::Fork(f) => {
                let epoch = f.check()?;
                let node = f.signer;
                self.fork_admissible(&node, epoch, now)?;
                let rec = self.nodes.entry(node).or_insert_with(|| Record::new(now));
                let oldest = (now / HOUR).saturating_sub(FORK_WINDOW);
                rec.forked.retain(|e| *e >= oldest);
                if let Err(at) = rec.forked.binary_search(&epoch) {
                    rec.forked.insert(at, epoch);
                }
                let pts = self.cfg.penalties.equivocation;
                self.penalise(&node, pts, now);
                self.outbox.push_back(Output::Forked { node, epoch });
                Ok(())
            }
            Input::Trust(t) => {
                self.check_signer(&t, now)?;
                if !t.body.well_formed(&t.signer) {
                    return Err(Error::Value { field: "trust vector" });
                }
                // A vector whose signer holds no trust would move nothing; refusing it keeps a
                // ring of fresh keys from growing every ledger with records and edges.
                if !self.may_vouch(&t.signer, now) {
                    return Err(Error::NotEligible { tier: self.tier(&t.signer, now), what: "vouch" });
                }
                let rec = self.nodes.entry(t.signer).or_insert_with(|| Record::new(now));
                if rec.trust_epoch.is_some_and(|e| t.body.epoch <= e) {
                    return Err(Error::Stale);
                }
                rec.trust_epoch = Some(t.body.epoch);
                self.trust.insert(t.signer, t.body.edges);
                Ok(())
            }
            Input::Bond(b) => {
                self.check_signer(&b, now)?;
                let rec = self.nodes.entry(b.signer).or_insert_with(|| Record::new(now));
                if b.body.seq <= rec.bond_seq {
                    return Err(Error::Stale);
                }
                rec.bond_seq = b.body.seq;
                rec.stake = b.body.total;
                Ok(())
            }
            Input::Propose(p) => {
                self.check_signer(&p, now)?;
                let tier = self.tier(&p.signer, now);
                if tier < self.cfg.vote_from && !self.pretrusted.contains(&p.signer) {
                    return Err(Error::NotEligible { tier, what: "propose" });
                }
                if let Kind::SetParameter { name, value } = &p.body.kind {
                    self.cfg.clone().set(name, *value)?;
                }
                if p.body.closes <= p.body.opens
                    || p.body.closes <= now
                    || p.body.closes - p.body.opens > MAX_VOTING_WINDOW
                {
                    return Err(Error::BadWindow);
                }
                if !self.proposals.contains_key(&p.digest())
                    && self.proposals.values().filter(|o| o.proposal.signer == p.signer).count()
                        >= MAX_OPEN_PER_PROPOSER
                {
                    return Err(Error::TooManyOpen);
                }
                self.proposals.entry(p.digest()).or_insert(OpenProposal { proposal: p, ballot: Ballot::default() });
                Ok(())
            }
            Input::Vote(v) => {
                self.check_signer(&v, now)?;
                let tier = self.tier(&v.signer, now);
                if tier < self.cfg.vote_from {
                    return Err(Error::NotEligible { tier, what: "vote" });
                }
                let open = self.proposals.get_mut(&v.body.proposal).ok_or(Error::UnknownProposal)?;
                let (opens, closes) = (open.proposal.body.opens, open.proposal.body.closes);
                if now < opens || now >= closes {
                    return Err(Error::OutsideWindow { opens, closes, now });
                }
                if let Some(e) = open.ballot.record(v) {
                    let who = e.second.signer;
                    let pts = self.cfg.penalties.equivocation;
                    self.penalise(&who, pts, now);
                    self.outbox.push_back(Output::Equivocation(Box::new(e)));
                }
                Ok(())
            }
            Input::RequestAudit(q) => {
                self.check_signer(&q, now)?;
                if self.audits.values().any(|a| a.subject == q.body.subject) {
                    return Err(Error::AuditOpen);
                }
                // The seed is the state digest at the last tick: public, and no requester can
                // pick it, so nobody chooses the team.
                let mut h = blake3::Hasher::new();
                h.update(&self.last_digest);
                h.update(&q.digest());
                let seed = *h.finalize().as_bytes();
                let (audit, team) = self.open_audit(q.body.subject, seed, now);
                if let Some(a) = self.audits.get_mut(&audit) {
                    a.round = q.body.round;
                }
                self.outbox.push_back(Output::AuditOpened {
                    audit,
                    subject: q.body.subject,
                    round: q.body.round,
                    team,
                });
                Ok(())
            }
            Input::Verdict(v) => {
                self.check_signer(&v, now)?;
                let a = self.audits.get_mut(&v.body.audit).ok_or(Error::NotOnTeam)?;
                if a.subject != v.body.subject || !a.team.contains(&v.signer) {
                    return Err(Error::NotOnTeam);
                }
                a.verdicts.entry(v.signer).or_insert(v.body.pass);
                let passes = a.verdicts.values().filter(|p| **p).count();
                let fails = a.verdicts.len() - passes;
                if let Some(pass) = audit::decide(a.team.len(), passes, fails) {
                    let subject = a.subject;
                    self.audits.remove(&v.body.audit);
                    self.observe(&subject, Source::Audit, if pass { 1.0 } else { 0.0 }, now);
                    if !pass {
                        let pts = self.cfg.penalties.failed_audit;
                        self.penalise(&subject, pts, now);
                    }
                    self.outbox.push_back(Output::AuditDecided { audit: v.body.audit, subject, pass });
                }
                Ok(())
            }
        }
    }

    /// Opens an audit of `subject` with a team drawn from `seed` among higher tiers; returns its
    /// id and team (whom to ask). The id is BLAKE3 of seed and subject.
    pub fn open_audit(&mut self, subject: NodeId, seed: [u8; 32], now: Time) -> ([u8; 32], Vec<NodeId>) {
        // Pre-trusted nodes (the network's genesis) audit from the start, as they report: they
        // rank above every tier unless suspended or banned.
        let candidates: Vec<(NodeId, u8)> = self
            .nodes
            .keys()
            .map(|id| match self.tier(id, now) {
                t if t > 0 && self.pretrusted.contains(id) => (*id, u8::MAX),
                t => (*id, t),
            })
            .collect();
        let subject_tier = self.nodes.get(&subject).map_or(1, |r| r.tier.tier);
        let team = audit::team(&seed, &subject, subject_tier, &candidates, self.cfg.audit_team);
        let mut h = blake3::Hasher::new();
        h.update(b"vain/audit/v1");
        h.update(&seed);
        h.update(&subject);
        let id = *h.finalize().as_bytes();
        self.audits
            .insert(id, OpenAudit { subject, opened: now, round: 0, team: team.clone(), verdicts: BTreeMap::new() });
        (id, team)
    }

    /// Voting weight of `node` at `now` under the configured mode (0 below `vote_from`).
    pub fn voting_weight(&self, node: &NodeId, now: Time) -> f64 {
        let tier = self.tier(node, now);
        if tier < self.cfg.vote_from {
            return 0.0;
        }
        let stake = self.nodes.get(node).map_or(0, |r| r.stake) as f64;
        match self.cfg.weight_mode {
            WeightMode::Tier => self.cfg.tiers.votes(tier),
            WeightMode::Stake => stake,
            WeightMode::Combined { tier_share } => {
                let (tiers, stakes) = self.eligible_totals(now);
                let t = if tiers > 0.0 { self.cfg.tiers.votes(tier) / tiers } else { 0.0 };
                let s = if stakes > 0.0 { stake / stakes } else { 0.0 };
                tier_share * t + (1.0 - tier_share) * s
            }
        }
    }

    fn eligible_totals(&self, now: Time) -> (f64, f64) {
        let mut tiers = 0.0;
        let mut stakes = 0.0;
        for (id, r) in &self.nodes {
            let t = self.tier(id, now);
            if t >= self.cfg.vote_from {
                tiers += self.cfg.tiers.votes(t);
                stakes += r.stake as f64;
            }
        }
        (tiers, stakes)
    }

    /// Recomputes trust, scores and tiers, applies suspensions and bans, and closes proposals
    /// whose window ended. Call once per epoch (or whenever decisions are wanted).
    pub fn tick(&mut self, now: Time) {
        self.close_proposals(now);
        let expired: Vec<([u8; 32], NodeId)> = self
            .audits
            .iter()
            .filter(|(_, a)| now.saturating_sub(a.opened) >= AUDIT_WINDOW)
            .map(|(id, a)| (*id, a.subject))
            .collect();
        for (audit, subject) in expired {
            self.audits.remove(&audit);
            self.outbox.push_back(Output::AuditExpired { audit, subject });
        }
        self.update_trust();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.update_node(&id, now);
        }
        // A banned node's vouches count for nothing (until an unban, when it signs anew).
        let nodes = &self.nodes;
        self.trust.retain(|id, _| nodes.get(id).is_none_or(|r| !r.banned));
        self.last_digest = self.digest();
    }

    fn update_trust(&mut self) {
        let index: BTreeMap<NodeId, usize> = self.nodes.keys().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut edges = Vec::new();
        for (from, list) in &self.trust {
            let (Some(&i), true) = (index.get(from), self.nodes.get(from).is_some_and(|r| !r.banned)) else { continue };
            for (to, w) in list {
                if let Some(&j) = index.get(to) {
                    edges.push((i, j, *w));
                }
            }
        }
        let pre: Vec<usize> = self.pretrusted.iter().filter_map(|id| index.get(id).copied()).collect();
        let n = index.len();
        let t = trust::eigentrust(n, &edges, &pre, self.cfg.trust_alpha, 1e-10, 100);
        // Relative to an even share: a node with at least the average trust scores 1.
        for (rec, ti) in self.nodes.values_mut().zip(t) {
            rec.social = (ti * n as f64).min(1.0);
        }
    }

    fn update_node(&mut self, id: &NodeId, now: Time) {
        let cfg = &self.cfg;
        let Some(rec) = self.nodes.get_mut(id) else { return };
        if rec.banned {
            return;
        }
        let means: [f64; SOURCES] = std::array::from_fn(|s| rec.sources[s].mean(now, cfg.half_life, cfg.prior));
        let penalty = rec.penalty.sum(now, cfg.half_life);
        rec.score = reputation::score(&cfg.weights, means, rec.social, penalty);
        if let Some(until) = rec.suspended_until
            && now >= until
        {
            rec.suspended_until = None;
        }
        if rec.suspended_until.is_none() && penalty >= cfg.penalties.suspend_at {
            rec.suspensions += 1;
            // The suspension pays for the points; new bad evidence starts a new count.
            rec.penalty = Decaying::default();
            if rec.suspensions >= cfg.penalties.ban_after {
                rec.banned = true;
                rec.score = 0.0;
                self.outbox.push_back(Output::Banned { node: *id });
            } else {
                let until = now + cfg.penalties.suspend_for;
                rec.suspended_until = Some(until);
                self.outbox.push_back(Output::Suspended { node: *id, until });
            }
            if rec.tier.tier != 1 {
                let from = rec.tier.tier;
                rec.tier = tier::State::new(now);
                self.outbox.push_back(Output::TierChanged { node: *id, from, to: 1 });
            }
            return;
        }
        if rec.suspended_until.is_some() {
            return;
        }
        if let Some((from, to)) = rec.tier.update(&cfg.tiers, rec.score, now) {
            self.outbox.push_back(Output::TierChanged { node: *id, from, to });
        }
    }

    /// The open proposals: id, the signed proposal, the votes so far.
    pub fn proposals(&self) -> impl Iterator<Item = (&ProposalId, &Signed<Proposal>, &Ballot)> {
        self.proposals.iter().map(|(id, p)| (id, &p.proposal, &p.ballot))
    }

    /// How an open proposal would close if its window ended at `at`, with the weights of `at`.
    pub fn tally_at(&self, id: &ProposalId, at: Time) -> Option<(Outcome, Tally)> {
        self.proposals.get(id).map(|p| self.tally_of(&p.ballot, at))
    }

    /// The lowest tier that may propose and vote.
    pub fn vote_from(&self) -> u8 {
        self.cfg.vote_from
    }

    /// Open audits: (id, subject, round, team).
    pub fn audits(&self) -> impl Iterator<Item = ([u8; 32], NodeId, u64, &[NodeId])> {
        self.audits.iter().map(|(id, a)| (*id, a.subject, a.round, a.team.as_slice()))
    }

    /// The lowest tier that may report evidence (or testify) without being pre-trusted.
    pub fn report_from(&self) -> u8 {
        self.cfg.tiers.report_from
    }

    /// `node`'s last applied local-trust vector (its EigenTrust edges).
    pub fn trust_of(&self, node: &NodeId) -> Option<&[(NodeId, f64)]> {
        self.trust.get(node).map(Vec::as_slice)
    }

    /// Epoch of `node`'s last applied testimony.
    pub fn testified(&self, node: &NodeId) -> Option<u64> {
        self.nodes.get(node).and_then(|r| r.testified)
    }

    /// `node`'s evidence at `now`: the decayed mean of each source (indexed by [`Source`]) and
    /// its decayed penalty points.
    pub fn evidence(&self, node: &NodeId, now: Time) -> Option<([f64; SOURCES], f64)> {
        let (hl, prior) = (self.cfg.half_life, self.cfg.prior);
        self.nodes.get(node).map(|r| (r.sources.map(|d| d.mean(now, hl, prior)), r.penalty.sum(now, hl)))
    }

    /// Whether `node` is pre-trusted.
    pub fn is_pretrusted(&self, node: &NodeId) -> bool {
        self.pretrusted.contains(node)
    }

    fn tally_of(&self, ballot: &Ballot, at: Time) -> (Outcome, Tally) {
        let eligible: Vec<NodeId> =
            self.nodes.keys().filter(|n| self.tier(n, at) >= self.cfg.vote_from).copied().collect();
        let total: f64 = eligible.iter().map(|n| self.voting_weight(n, at)).sum();
        ballot.tally(|n| self.voting_weight(n, at), total, self.cfg.quorum)
    }

    fn close_proposals(&mut self, now: Time) {
        let due: Vec<ProposalId> =
            self.proposals.iter().filter(|(_, p)| p.proposal.body.closes <= now).map(|(id, _)| *id).collect();
        // Every proposal due at this tick is tallied on the state before any of them applies: a
        // passed parameter change (the quorum, the voting tier) or the governance evidence of
        // one does not decide another's outcome by the order of their ids.
        let mut tallied = Vec::with_capacity(due.len());
        for id in due {
            let Some(open) = self.proposals.remove(&id) else { continue };
            let closes = open.proposal.body.closes;
            let eligible: Vec<NodeId> =
                self.nodes.keys().filter(|n| self.tier(n, closes) >= self.cfg.vote_from).copied().collect();
            let (outcome, tally) = self.tally_of(&open.ballot, closes);
            tallied.push((id, open, eligible, outcome, tally));
        }
        for (id, open, eligible, outcome, tally) in tallied {
            let voted: BTreeSet<NodeId> = open.ballot.voters().copied().collect();
            for n in &eligible {
                self.observe(n, Source::Governance, if voted.contains(n) { 1.0 } else { 0.0 }, now);
            }
            if outcome == Outcome::Passed {
                match open.proposal.body.kind {
                    Kind::Ban { node } => {
                        let rec = self.nodes.entry(node).or_insert_with(|| Record::new(now));
                        if !rec.banned {
                            rec.banned = true;
                            rec.score = 0.0;
                            self.outbox.push_back(Output::Banned { node });
                        }
                    }
                    Kind::Unban { node } => {
                        if let Some(rec) = self.nodes.get_mut(&node)
                            && rec.banned
                        {
                            rec.banned = false;
                            rec.suspensions = 0;
                            rec.tier = tier::State::new(now);
                            self.outbox.push_back(Output::Unbanned { node });
                        }
                    }
                    Kind::SetParameter { name, value } => {
                        let mut cfg = self.cfg.clone();
                        match cfg.set(&name, value) {
                            Ok(()) => {
                                self.cfg = cfg;
                                self.outbox.push_back(Output::ParameterSet { name, value });
                            }
                            Err(error) => self.outbox.push_back(Output::ParameterRefused { name, error }),
                        }
                    }
                    Kind::Upgrade { .. } => {}
                }
            }
            self.outbox.push_back(Output::ProposalClosed { id, outcome, tally });
        }
    }

    /// BLAKE3 of the whole state (every record's evidence, tier, stake, suspension and ban; the
    /// trust vectors; open proposals and audits): equal digests mean equal ledgers.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"vain/ledger-state/v1");
        for (id, r) in &self.nodes {
            h.update(id);
            for d in r.sources.iter().chain(std::iter::once(&r.penalty)) {
                h.update(&d.raw_bits());
            }
            h.update(&r.social.to_bits().to_le_bytes());
            h.update(&[r.tier.tier]);
            h.update(&r.tier.since.to_le_bytes());
            h.update(&r.stake.to_le_bytes());
            h.update(&r.bond_seq.to_le_bytes());
            h.update(&r.trust_epoch.map_or(u64::MAX, |e| e).to_le_bytes());
            h.update(&r.testified.map_or(u64::MAX, |e| e).to_le_bytes());
            h.update(&(r.forked.len() as u64).to_le_bytes());
            for e in &r.forked {
                h.update(&e.to_le_bytes());
            }
            h.update(&r.suspended_until.map_or(u64::MAX, |t| t).to_le_bytes());
            h.update(&r.suspensions.to_le_bytes());
            h.update(&[u8::from(r.banned)]);
            h.update(&r.score.to_bits().to_le_bytes());
        }
        for (id, edges) in &self.trust {
            h.update(id);
            for (to, w) in edges {
                h.update(to);
                h.update(&w.to_bits().to_le_bytes());
            }
        }
        for (id, p) in &self.proposals {
            h.update(id);
            for v in p.ballot.voters() {
                h.update(v);
            }
        }
        // The governed parameters: two ledgers that changed different ones answer differently.
        for (name, v) in self.cfg.parameters() {
            h.update(name.as_bytes());
            h.update(&v.to_bits().to_le_bytes());
        }
        for (id, a) in &self.audits {
            h.update(id);
            h.update(&a.round.to_le_bytes());
            h.update(&a.opened.to_le_bytes());
            h.update(&(a.verdicts.len() as u64).to_le_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The next decision, oldest first.
    pub fn poll(&mut self) -> Option<Output> {
        self.outbox.pop_front()
    }
}
