//! A deterministic simulator: a virtual clock, N nodes with behaviours, a network with delay,
//! loss and partitions, and one ledger fed by what the network delivers (every honest node runs
//! the same deterministic ledger on the same inputs, so one instance stands for all of them).
//!
//! Each epoch (one virtual hour by default): reporters (the pre-trusted validators and a sample
//! of eligible honest nodes) watch a sample of nodes' round participation, challenge some with a
//! real Freivalds-checked matrix product, and sign reports; every node signs its local trust;
//! in some scenarios proposals are voted on and audits run. Messages reach the ledger after a
//! random delay unless lost; the ledger then ticks. The same seed gives the same run.

use crate::audit::Verdict;
use crate::challenge::{self, Challenge};
use crate::governance::{Choice, Kind, Proposal, Vote};
use crate::journal::Entry;
use crate::ledger::{self, Input, Ledger, Observation, Observed, Output, Report, TrustVector};
use crate::signed::Signed;
use crate::{HOUR, NodeId, Time};
use ed25519_dalek::SigningKey;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// How a simulated node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behaviour {
    /// Does its work, reports truthfully, votes yes on sound proposals.
    Honest,
    /// Delivers half of the rounds it is picked for.
    Lazy,
    /// Never answers.
    Offline,
    /// Member of a ring that claims resources it lacks and vouches for its own members.
    Sybil,
    /// Honest work, but signs two different votes on every proposal.
    Equivocator,
    /// Takes part with poisoned updates (the scenario's [`Poison`]), judged by the
    /// aggregation's anomaly report like every update.
    Poisoner,
    /// Honest work, but as an auditor it passes poisoners and fails honest nodes.
    Colluder,
}

impl Behaviour {
    /// Every behaviour, in display order.
    pub const ALL: [Behaviour; 7] = [
        Behaviour::Honest,
        Behaviour::Lazy,
        Behaviour::Offline,
        Behaviour::Sybil,
        Behaviour::Equivocator,
        Behaviour::Poisoner,
        Behaviour::Colluder,
    ];

    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Lazy => "lazy",
            Behaviour::Offline => "offline",
            Behaviour::Sybil => "sybil",
            Behaviour::Equivocator => "equivocator",
            Behaviour::Poisoner => "poisoner",
            Behaviour::Colluder => "colluder",
        }
    }

    fn works(&self) -> bool {
        !matches!(self, Behaviour::Offline | Behaviour::Sybil)
    }
}

/// A named mix of behaviours and what happens in it.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Name for `vain sim --scenario`.
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    /// Fractions of the nodes (after the validators, who are honest); the rest are honest.
    pub mix: &'static [(Behaviour, f64)],
    /// Whether proposals are made and voted on.
    pub governance: bool,
    /// Whether audits run.
    pub audits: bool,
    /// What poisoners send.
    pub poison: Poison,
}

/// A poisoner's update, built from the round's honest direction `g` (unit norm; honest updates
/// are `g` plus noise of norm about 0.8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Poison {
    /// The honest update sign-flipped and boosted λ× (model replacement, Bagdasaryan et al.
    /// 2020; boosting, Bhagoji et al. 2019): far from the others, the anomaly report sees it.
    Boost(f32),
    /// An honest-looking update pulled this far toward a direction the poisoners share (a
    /// backdoor, kept inside the honest spread as in Bhagoji et al.'s stealth objective): the
    /// anomaly report rarely sees it, so audits must catch it.
    Backdoor(f32),
}

/// The built-in scenarios.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "baseline",
        about: "honest, lazy and offline nodes; honest ones climb to tier 2, the others do not",
        mix: &[(Behaviour::Lazy, 0.15), (Behaviour::Offline, 0.15)],
        governance: false,
        audits: false,
        poison: Poison::Boost(5.0),
    },
    Scenario {
        name: "sybil",
        about: "a 30 % Sybil ring vouching for itself and failing resource challenges",
        mix: &[(Behaviour::Sybil, 0.30)],
        governance: false,
        audits: false,
        poison: Poison::Boost(5.0),
    },
    Scenario {
        name: "equivocator",
        about: "10 % of nodes sign conflicting votes; detected, penalised, suspended",
        mix: &[(Behaviour::Equivocator, 0.10)],
        governance: true,
        audits: false,
        poison: Poison::Boost(5.0),
    },
    Scenario {
        name: "poisoner",
        about: "10 % of nodes send poisoned updates; suspended, then banned on repeat",
        mix: &[(Behaviour::Poisoner, 0.10)],
        governance: false,
        audits: false,
        poison: Poison::Boost(5.0),
    },
    Scenario {
        name: "audit-collusion",
        about: "stealthy poisoners (rarely flagged) audited by teams with a colluding minority",
        mix: &[(Behaviour::Poisoner, 0.10), (Behaviour::Colluder, 0.15)],
        governance: false,
        audits: true,
        poison: Poison::Backdoor(0.3),
    },
    Scenario {
        name: "mixed",
        about: "every behaviour at once, with governance and audits",
        mix: &[
            (Behaviour::Lazy, 0.10),
            (Behaviour::Offline, 0.05),
            (Behaviour::Sybil, 0.15),
            (Behaviour::Equivocator, 0.05),
            (Behaviour::Poisoner, 0.05),
            (Behaviour::Colluder, 0.05),
        ],
        governance: true,
        audits: true,
        poison: Poison::Boost(3.0),
    },
];

/// Dimension of the simulated updates.
pub const DIM: usize = 64;

/// The aggregation's judgement of one round's updates. The simulator builds the update of each
/// node that took part the way its behaviour would ([`DIM`] values); the judge turns them into
/// the evidence an aggregator reports. `vain sim` passes the aggregator's own judge (vain-learn
/// over vain-kernels' anomaly report), so a poisoner is flagged only when the real detector
/// sees it.
pub trait Judge {
    /// The observations for the updates of `subjects` (same order): participation, anomaly
    /// and feedback, as an aggregator reports them.
    fn judge(&mut self, subjects: &[NodeId], updates: &[Vec<f32>]) -> Vec<Observation>;
}

/// A judge with no anomaly report: every update counts as participation, nothing more. For
/// runs about the ledger alone (Sybil rings, equivocation, persistence); runs whose poisoners
/// matter need the aggregator's judge.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blind;

impl Judge for Blind {
    fn judge(&mut self, subjects: &[NodeId], _: &[Vec<f32>]) -> Vec<Observation> {
        subjects.iter().map(|s| Observation { subject: *s, what: Observed::Participated }).collect()
    }
}

/// Resource challenges in virtual time: every node claims a machine doing this many
/// multiply-adds per ms, and the challenge is sized to the claim (as a validator sizes it) at
/// a small answer, so the real solver and verifier run fast.
const CLAIM: f64 = 0.1;
/// The challenge's deadline after its issue (virtual ms), and the share of it an honest
/// machine needs.
const BUDGET: Time = 10_000;
const SHARE: f64 = 0.25;
/// Side of the simulated challenges' answer.
const CHALLENGE_SIDE: u32 = 8;

/// A challenge sized to [`CLAIM`] (`challenge::sized`'s rule at [`CHALLENGE_SIDE`]).
fn sim_challenge(seed: u64, issued: Time) -> Challenge {
    let per_inner = f64::from(CHALLENGE_SIDE * CHALLENGE_SIDE);
    let inner = (CLAIM * BUDGET as f64 * SHARE / per_inner).ceil().max(1.0) as u32;
    Challenge { rows: CHALLENGE_SIDE, inner, cols: CHALLENGE_SIDE, seed, issued, deadline: issued + BUDGET }
}

/// A unit vector in a random direction.
fn direction(rng: &mut Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|_| rng.gaussian() as f32).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.into_iter().map(|x| x / n).collect()
}

/// The update a node of behaviour `b` sends in a round whose honest direction is `g` (unit):
/// honest ones `g` plus noise of norm about 0.8 (clients on their own data), poisoners per
/// `poison` (`backdoor` is the direction they share).
fn update(b: Behaviour, g: &[f32], poison: Poison, backdoor: &[f32], rng: &mut Rng) -> Vec<f32> {
    let sd = 0.8 / (DIM as f64).sqrt();
    let honest: Vec<f32> = g.iter().map(|x| x + (sd * rng.gaussian()) as f32).collect();
    match (b, poison) {
        (Behaviour::Poisoner, Poison::Boost(lambda)) => honest.iter().map(|x| -lambda * x).collect(),
        (Behaviour::Poisoner, Poison::Backdoor(pull)) => {
            honest.iter().zip(backdoor).map(|(x, d)| x + pull * d).collect()
        }
        _ => honest,
    }
}

/// Looks a scenario up by name.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes, validators included.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Epochs to run.
    pub epochs: u32,
    /// Length of an epoch.
    pub epoch: Time,
    /// Message delay range.
    pub delay: (Time, Time),
    /// Probability a message is lost.
    pub loss: f64,
    /// Epochs [from, to) during which this fraction of nodes is cut off.
    pub partition: Option<(u32, u32, f64)>,
    /// Pre-trusted honest validators.
    pub validators: usize,
    /// Nodes each reporter watches per epoch (reporters split a permutation of all nodes).
    pub sample: usize,
    /// Extra reporters drawn per epoch among eligible honest nodes.
    pub extra_reporters: usize,
    /// Ledger settings (the simulator fills in the pre-trusted set).
    pub ledger: ledger::Config,
    /// Keep every ledger entry in [`Run::journal`] (for persistence tests).
    pub journal: bool,
}

impl Options {
    /// Defaults for `nodes` nodes and `seed`: 48 one-hour epochs, 20–400 ms delay, 2 % loss.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            epochs: 48,
            epoch: HOUR,
            delay: (20, 400),
            loss: 0.02,
            partition: None,
            validators: (nodes / 20).clamp(3, 25),
            // Validators alone cover every node each epoch.
            sample: nodes.div_ceil((nodes / 20).clamp(3, 25)),
            extra_reporters: 10,
            ledger: ledger::Config::default(),
            journal: false,
        }
    }
}

/// Per-epoch averages by behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch {
    /// Epoch number (1-based: state at its end).
    pub epoch: u32,
    /// Mean score per behaviour present.
    pub mean_score: BTreeMap<Behaviour, f64>,
    /// Fraction at tier ≥ 2 per behaviour.
    pub tier2: BTreeMap<Behaviour, f64>,
}

/// Counters of what happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages sent.
    pub sent: u64,
    /// Lost in the network (loss or partition).
    pub lost: u64,
    /// Refused by the ledger, by error text.
    pub refused: BTreeMap<String, u64>,
    /// Equivocations detected.
    pub equivocations: u64,
    /// Suspensions.
    pub suspensions: u64,
    /// Bans.
    pub bans: u64,
    /// Proposals passed / rejected / without quorum.
    pub proposals: [u64; 3],
    /// Audits decided pass / fail.
    pub audits: [u64; 2],
    /// Per behaviour: updates the judge flagged (anomaly z at the ledger's penalty threshold)
    /// and updates judged.
    pub flagged: BTreeMap<Behaviour, [u64; 2]>,
    /// Per behaviour: resource challenges passed, failed, timed out.
    pub challenges: BTreeMap<Behaviour, [u64; 3]>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Behaviour of node i.
    pub behaviours: Vec<Behaviour>,
    /// Highest tier node i ever held.
    pub max_tier: Vec<u8>,
    /// First epoch at whose end node i held tier ≥ 2.
    pub tier2_at: Vec<Option<u32>>,
    /// Whether node i was ever suspended, and banned.
    pub suspended: Vec<bool>,
    /// Whether node i is banned at the end.
    pub banned: Vec<bool>,
    /// Final scores.
    pub score: Vec<f64>,
    /// Per-epoch averages.
    pub history: Vec<Epoch>,
    /// Audits decided: (audited node, passed, colluders on the team, team size).
    pub audits: Vec<(usize, bool, usize, usize)>,
    /// Counters.
    pub counters: Counters,
    /// The ledger configuration used (pre-trusted set filled in).
    pub config: ledger::Config,
    /// Every entry applied to the ledger, when [`Options::journal`] is set.
    pub journal: Vec<Entry>,
    /// Digest of the final ledger state.
    pub digest: [u8; 32],
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A standard normal draw (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

struct Net {
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    msgs: BTreeMap<u64, Input>,
    seq: u64,
}

/// Runs `scenario` with `opts`, the rounds' updates judged by `judge`.
pub fn run(scenario: &Scenario, opts: &Options, judge: &mut dyn Judge) -> Run {
    run_with(scenario, opts, judge, &mut |_| {})
}

/// [`run`], calling `on_epoch` with each finished epoch (for progress).
pub fn run_with(scenario: &Scenario, opts: &Options, judge: &mut dyn Judge, on_epoch: &mut dyn FnMut(u32)) -> Run {
    let n = opts.nodes.max(opts.validators + 1);
    let mut rng = Rng(opts.seed ^ 0x005e_ed0f_5a11);
    let keys: Vec<SigningKey> = (0..n)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(b"vain/sim-key/v1");
            h.update(&opts.seed.to_le_bytes());
            h.update(&(i as u64).to_le_bytes());
            SigningKey::from_bytes(h.finalize().as_bytes())
        })
        .collect();
    let ids: Vec<NodeId> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
    let index: BTreeMap<NodeId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let behaviours = assign(scenario, n, opts.validators, &mut rng);
    let mut cfg = opts.ledger.clone();
    cfg.pretrusted = ids[..opts.validators].to_vec();
    let mut ledger = Ledger::new(cfg.clone(), 0);
    let mut journal: Vec<Entry> = Vec::new();
    let log = |e: Entry, journal: &mut Vec<Entry>| {
        if opts.journal {
            journal.push(e);
        }
    };
    for id in &ids {
        ledger.join(*id, 0);
        log(Entry::Join { at: 0, node: *id }, &mut journal);
    }
    let mut net = Net { queue: BinaryHeap::new(), msgs: BTreeMap::new(), seq: 0 };
    let mut c = Counters::default();
    let mut max_tier = vec![1u8; n];
    let mut tier2_at = vec![None; n];
    let mut suspended = vec![false; n];
    let mut audits = Vec::new();
    let mut teams: BTreeMap<[u8; 32], (usize, usize)> = BTreeMap::new();
    let mut history = Vec::with_capacity(opts.epochs as usize);
    let cut: Vec<bool> = match opts.partition {
        Some((_, _, f)) => (0..n).map(|i| i >= opts.validators && rng.chance(f)).collect(),
        None => vec![false; n],
    };
    let sybils: Vec<usize> = (0..n).filter(|&i| behaviours[i] == Behaviour::Sybil).collect();
    // The direction the poisoners' backdoor pulls toward, the same all run.
    let backdoor = direction(&mut rng);

    for e in 0..opts.epochs {
        let t0 = Time::from(e) * opts.epoch;
        let end = t0 + opts.epoch;
        let partitioned = opts.partition.is_some_and(|(a, b, _)| e >= a && e < b);
        let mut send = |from: usize, at: Time, input: Input, rng: &mut Rng, c: &mut Counters| {
            c.sent += 1;
            if rng.chance(opts.loss) || (partitioned && cut[from]) {
                c.lost += 1;
                return;
            }
            let d = opts.delay.0 + rng.below((opts.delay.1 - opts.delay.0 + 1) as usize) as Time;
            net.seq += 1;
            net.queue.push(Reverse((at + d, net.seq)));
            net.msgs.insert(net.seq, input);
        };
        let live = |i: usize, l: &Ledger| !l.is_banned(&ids[i]) && l.tier(&ids[i], t0) > 0;

        // Reporters: validators plus a few eligible honest nodes.
        let mut reporters: Vec<usize> = (0..opts.validators).collect();
        let eligible: Vec<usize> = (opts.validators..n)
            .filter(|&i| behaviours[i] == Behaviour::Honest && ledger.tier(&ids[i], t0) >= 2)
            .collect();
        for _ in 0..opts.extra_reporters.min(eligible.len()) {
            reporters.push(eligible[rng.below(eligible.len())]);
        }
        reporters.sort_unstable();
        reporters.dedup();
        // Like aggregators reporting their round's participants, the reporters split a fresh
        // permutation of the nodes, `sample` each.
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        let chunks: Vec<Vec<usize>> =
            order.chunks(opts.sample.max(1)).take(reporters.len()).map(<[usize]>::to_vec).collect();
        // Every fourth watched node is challenged, all at the epoch's start: a Sybil ring's
        // members share the one machine behind them, split between those challenged at once.
        let ring_load = chunks
            .iter()
            .zip(&reporters)
            .flat_map(|(c, r)| c.iter().enumerate().filter(move |(k, s)| k % 4 == 0 && *s != r))
            .filter(|(_, s)| behaviours[**s] == Behaviour::Sybil && live(**s, &ledger))
            .count()
            .max(1);
        // The round's honest direction.
        let g = direction(&mut rng);
        let mut watched = chunks.into_iter();
        for &r in &reporters {
            let mut obs = Vec::with_capacity(opts.sample + 4);
            let chunk: Vec<usize> = watched.next().unwrap_or_default();
            let (mut subjects, mut updates) = (Vec::new(), Vec::new());
            for (k, s) in chunk.into_iter().enumerate() {
                if s == r || !live(s, &ledger) {
                    continue;
                }
                let b = behaviours[s];
                let took_part = b.works() && (b != Behaviour::Lazy || rng.chance(0.5));
                if took_part {
                    subjects.push(ids[s]);
                    updates.push(update(b, &g, scenario.poison, &backdoor, &mut rng));
                } else {
                    obs.push(Observation { subject: ids[s], what: Observed::Missed });
                }
                // Heartbeats answered in the epoch: offline nodes none, the rest nearly all.
                let up = if b == Behaviour::Offline { 0.0 } else { 1.0 - 0.1 * rng.below(2) as f64 };
                obs.push(Observation { subject: ids[s], what: Observed::Uptime { fraction: up } });
                if k % 4 == 0 {
                    let ch = sim_challenge(rng.next(), t0);
                    // What the node really computes with: the claimed machine, or a share of
                    // the ring's.
                    let rate = if b == Behaviour::Sybil { CLAIM / ring_load as f64 } else { CLAIM };
                    let answers = took_part || b == Behaviour::Sybil;
                    // As on the network: a node that does not answer at all is a timeout (it
                    // may be down), one that works on the task and misses the deadline — it
                    // gives up at it, or answers late — fails.
                    let what = if !answers {
                        Observed::ChallengeTimeout
                    } else if ch.issued as f64 + ch.work() as f64 / rate > ch.deadline as f64 {
                        Observed::ChallengeFailed
                    } else if challenge::verify(&ch, &challenge::solve(&ch, 1), rng.next()) {
                        Observed::ChallengePassed
                    } else {
                        Observed::ChallengeFailed
                    };
                    let slot = match what {
                        Observed::ChallengePassed => 0,
                        Observed::ChallengeFailed => 1,
                        _ => 2,
                    };
                    c.challenges.entry(b).or_default()[slot] += 1;
                    obs.push(Observation { subject: ids[s], what });
                }
            }
            let judged = judge.judge(&subjects, &updates);
            let threshold = ledger.config().penalties.anomaly_z;
            for id in &subjects {
                let b = behaviours[index[id]];
                let hit = judged
                    .iter()
                    .any(|o| o.subject == *id && matches!(o.what, Observed::Anomaly { z } if z.abs() >= threshold));
                let f = c.flagged.entry(b).or_default();
                f[0] += u64::from(hit);
                f[1] += 1;
            }
            obs.extend(judged);
            let report =
                Signed::sign(&keys[r], Report { epoch: u64::from(e), observations: obs, governance: Vec::new() });
            send(r, t0 + 1, Input::Report(report), &mut rng, &mut c);
        }
        // Sybils also report glowing reviews of each other; the ledger refuses them.
        for &s in sybils.iter().take(5) {
            let obs: Vec<Observation> = sybils
                .iter()
                .filter(|&&o| o != s)
                .take(10)
                .map(|&o| Observation { subject: ids[o], what: Observed::ChallengePassed })
                .collect();
            let report =
                Signed::sign(&keys[s], Report { epoch: u64::from(e), observations: obs, governance: Vec::new() });
            send(s, t0 + 2, Input::Report(report), &mut rng, &mut c);
        }

        // Local trust, every third epoch: workers trust co-workers, the ring trusts itself.
        if e % 3 == 0 {
            for i in 0..n {
                let b = behaviours[i];
                let edges: Vec<(NodeId, f64)> = match b {
                    Behaviour::Offline => continue,
                    Behaviour::Sybil => sybils.iter().filter(|&&o| o != i).map(|&o| (ids[o], 10.0)).collect(),
                    _ => (0..5)
                        .map(|_| rng.below(n))
                        .filter(|&o| o != i && behaviours[o].works())
                        .map(|o| (ids[o], 1.0))
                        .collect(),
                };
                let tv = Signed::sign(&keys[i], TrustVector::new(u64::from(e), edges));
                send(i, t0 + 3, Input::Trust(tv), &mut rng, &mut c);
            }
        }

        // Governance: a proposal every 6 epochs, open for 2.
        if scenario.governance && e % 6 == 1 {
            let p = Signed::sign(
                &keys[0],
                Proposal {
                    kind: Kind::SetParameter { name: "quorum".into(), value: 0.5 },
                    opens: t0,
                    closes: t0 + 2 * opts.epoch,
                    nonce: u64::from(e),
                },
            );
            let id = p.digest();
            // Proposals go to the ledger directly: votes must find them.
            log(Entry::Input { at: t0, input: Input::Propose(p.clone()) }, &mut journal);
            if let Err(err) = ledger.handle(t0, Input::Propose(p)) {
                *c.refused.entry(err.kind().to_string()).or_default() += 1;
            }
            for i in 0..n {
                if ledger.tier(&ids[i], t0) < ledger.config().vote_from {
                    continue;
                }
                let vote = |choice| Signed::sign(&keys[i], Vote { proposal: id, choice });
                match behaviours[i] {
                    Behaviour::Equivocator => {
                        send(i, t0 + 10, Input::Vote(vote(Choice::Yes)), &mut rng, &mut c);
                        send(i, t0 + 20, Input::Vote(vote(Choice::No)), &mut rng, &mut c);
                    }
                    Behaviour::Colluder => send(i, t0 + 10, Input::Vote(vote(Choice::No)), &mut rng, &mut c),
                    b if b.works() => send(i, t0 + 10, Input::Vote(vote(Choice::Yes)), &mut rng, &mut c),
                    _ => {}
                }
            }
        }

        // Audits: every 4 epochs, each live poisoner and one random honest node.
        if scenario.audits && e % 4 == 2 {
            let mut subjects: Vec<usize> =
                (0..n).filter(|&i| behaviours[i] == Behaviour::Poisoner && live(i, &ledger)).collect();
            let h = rng.below(n);
            if behaviours[h] == Behaviour::Honest {
                subjects.push(h);
            }
            for s in subjects {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&u64::from(e).to_le_bytes());
                seed[8..16].copy_from_slice(&opts.seed.to_le_bytes());
                log(Entry::OpenAudit { at: t0, subject: ids[s], seed }, &mut journal);
                let (audit, team) = ledger.open_audit(ids[s], seed, t0);
                let colluders = team
                    .iter()
                    .filter(|m| index.get(*m).is_some_and(|&a| behaviours[a] == Behaviour::Colluder))
                    .count();
                teams.insert(audit, (colluders, team.len()));
                let bad = behaviours[s] == Behaviour::Poisoner;
                for m in team {
                    let Some(&a) = index.get(&m) else { continue };
                    let pass = if behaviours[a] == Behaviour::Colluder { bad } else { !bad };
                    let v = Signed::sign(&keys[a], Verdict { audit, subject: ids[s], pass });
                    send(a, t0 + 30, Input::Verdict(v), &mut rng, &mut c);
                }
            }
        }

        // Deliver everything due by the end of the epoch, then tick.
        while let Some(Reverse((at, seq))) = net.queue.peek().copied() {
            if at > end {
                break;
            }
            net.queue.pop();
            if let Some(input) = net.msgs.remove(&seq) {
                if opts.journal {
                    log(Entry::Input { at, input: input.clone() }, &mut journal);
                }
                if let Err(err) = ledger.handle(at, input) {
                    *c.refused.entry(err.kind().to_string()).or_default() += 1;
                }
            }
        }
        log(Entry::Tick { at: end }, &mut journal);
        ledger.tick(end);
        while let Some(out) = ledger.poll() {
            match out {
                Output::Equivocation(_) | Output::Forked { .. } => c.equivocations += 1,
                Output::Suspended { node, .. } => {
                    c.suspensions += 1;
                    if let Some(&i) = index.get(&node) {
                        suspended[i] = true;
                    }
                }
                Output::Banned { .. } => c.bans += 1,
                Output::ProposalClosed { outcome, .. } => {
                    c.proposals[match outcome {
                        crate::governance::Outcome::Passed => 0,
                        crate::governance::Outcome::Rejected => 1,
                        crate::governance::Outcome::NoQuorum => 2,
                    }] += 1
                }
                Output::AuditDecided { pass, subject, audit } => {
                    c.audits[usize::from(!pass)] += 1;
                    if let (Some(&i), Some(&(k, size))) = (index.get(&subject), teams.get(&audit)) {
                        audits.push((i, pass, k, size));
                    }
                }
                Output::TierChanged { .. }
                | Output::Unbanned { .. }
                | Output::AuditOpened { .. }
                | Output::AuditExpired { .. }
                | Output::ParameterSet { .. }
                | Output::ParameterRefused { .. } => {}
            }
        }
        let mut sum: BTreeMap<Behaviour, (f64, f64, usize)> = BTreeMap::new();
        for i in 0..n {
            let rec = ledger.record(&ids[i]);
            let tier = rec.map_or(1, |r| r.tier.tier);
            max_tier[i] = max_tier[i].max(tier);
            if tier >= 2 && tier2_at[i].is_none() {
                tier2_at[i] = Some(e + 1);
            }
            let entry = sum.entry(behaviours[i]).or_default();
            entry.0 += rec.map_or(0.0, |r| r.score);
            entry.1 += f64::from(u8::from(tier >= 2));
            entry.2 += 1;
        }
        history.push(Epoch {
            epoch: e + 1,
            mean_score: sum.iter().map(|(b, (s, _, k))| (*b, s / *k as f64)).collect(),
            tier2: sum.iter().map(|(b, (_, t, k))| (*b, t / *k as f64)).collect(),
        });
        on_epoch(e + 1);
    }
    Run {
        banned: ids.iter().map(|id| ledger.is_banned(id)).collect(),
        score: ids.iter().map(|id| ledger.record(id).map_or(0.0, |r| r.score)).collect(),
        behaviours,
        max_tier,
        tier2_at,
        suspended,
        history,
        audits,
        counters: c,
        config: cfg,
        journal,
        digest: ledger.digest(),
    }
}

/// Validators first (honest), then the scenario's mix in shuffled positions.
fn assign(scenario: &Scenario, n: usize, validators: usize, rng: &mut Rng) -> Vec<Behaviour> {
    let mut rest: Vec<Behaviour> = Vec::with_capacity(n - validators);
    for &(b, f) in scenario.mix {
        let k = ((n as f64) * f).round() as usize;
        rest.extend(std::iter::repeat_n(b, k));
    }
    rest.truncate(n - validators);
    rest.resize(n - validators, Behaviour::Honest);
    for i in (1..rest.len()).rev() {
        let j = rng.below(i + 1);
        rest.swap(i, j);
    }
    let mut all = vec![Behaviour::Honest; validators];
    all.extend(rest);
    all
}

impl Run {
    /// Indices of the nodes with behaviour `b`.
    pub fn of(&self, b: Behaviour) -> impl Iterator<Item = usize> + '_ {
        self.behaviours.iter().enumerate().filter(move |(_, x)| **x == b).map(|(i, _)| i)
    }

    /// A plain-text summary table.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{:<12} {:>6} {:>11} {:>9} {:>14} {:>10} {:>7}\n",
            "behaviour", "nodes", "mean score", "tier ≥ 2", "median t→T2 h", "suspended", "banned"
        );
        for b in Behaviour::ALL {
            let idx: Vec<usize> = self.of(b).collect();
            if idx.is_empty() {
                continue;
            }
            let k = idx.len() as f64;
            let mean = idx.iter().map(|&i| self.score[i]).sum::<f64>() / k;
            let t2 = idx.iter().filter(|&&i| self.max_tier[i] >= 2).count();
            let mut at: Vec<u32> = idx.iter().filter_map(|&i| self.tier2_at[i]).collect();
            at.sort_unstable();
            let med = at.get(at.len() / 2).map_or("-".to_string(), |v| v.to_string());
            let sus = idx.iter().filter(|&&i| self.suspended[i]).count();
            let ban = idx.iter().filter(|&&i| self.banned[i]).count();
            s += &format!(
                "{:<12} {:>6} {:>11.3} {:>8.0}% {:>14} {:>10} {:>7}\n",
                b.name(),
                idx.len(),
                mean,
                100.0 * t2 as f64 / k,
                med,
                sus,
                ban
            );
        }
        let c = &self.counters;
        s += &format!(
            "\nmessages: {} sent, {} lost; refused: {}\nequivocations {}, suspensions {}, bans {}; proposals passed/rejected/no-quorum {}/{}/{}; audits pass/fail {}/{}\n",
            c.sent,
            c.lost,
            if c.refused.is_empty() {
                "none".to_string()
            } else {
                c.refused.iter().map(|(k, v)| format!("{v} × {k}")).collect::<Vec<_>>().join(", ")
            },
            c.equivocations,
            c.suspensions,
            c.bans,
            c.proposals[0],
            c.proposals[1],
            c.proposals[2],
            c.audits[0],
            c.audits[1]
        );
        let flagged: Vec<String> = c
            .flagged
            .iter()
            .map(|(b, [f, n])| format!("{} {:.1} % of {n}", b.name(), 100.0 * *f as f64 / (*n).max(1) as f64))
            .collect();
        s += &format!("updates flagged by the anomaly report: {}\n", flagged.join(", "));
        let challenges: Vec<String> =
            c.challenges.iter().map(|(b, [p, f, t])| format!("{} {p}/{f}/{t}", b.name())).collect();
        s += &format!("resource challenges passed/failed/timed out: {}\n", challenges.join(", "));
        s
    }

    /// The fraction of `b`'s updates the judge flagged (0 when none were judged).
    pub fn flagged(&self, b: Behaviour) -> f64 {
        self.counters.flagged.get(&b).map_or(0.0, |[f, n]| *f as f64 / (*n).max(1) as f64)
    }
}
