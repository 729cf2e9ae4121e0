//! Resource challenges and heartbeats over the network (docs/protocol.md, "Resource
//! challenges").
//!
//! A validator's [`Challenger`] takes turns among the nodes it is connected to: each heartbeat
//! it asks every one for its status (the fraction answered is the node's uptime), and every
//! challenge interval it sends each node a signed [`Task`] sized to the cores the node claims in
//! its announcement — [`challenge::CORE_RATE`] multiply-adds per millisecond per core, half the
//! budget's worth — and enforces the deadline on its own clock. A correct answer in time is
//! `ChallengePassed`; a wrong one, a late one, or the node's own admission that it stopped at
//! the deadline is a failure (its claim is false); no answer, or a node too busy to take the
//! task, is `ChallengeTimeout` (no credit, no penalty). The outcomes wait in a [`Witness`] until
//! the node signs them into a testimony for every ledger. Only a failure the node admitted (its
//! signed [`GaveUp`]) is testified as `ChallengeFailed`, with the admission as its proof: every
//! ledger checks it, so no validator can penalise a node on its word alone. A wrong or late
//! answer proves nothing to a third party; it counts against the node in this validator's own
//! experience and is testified as a timeout.
//!
//! A node's [`Prover`] answers only validators its ledger lets report, one task at a time, and
//! only tasks within what its own claim can do by the deadline; it stops computing at the
//! deadline and signs that it did.

use crate::msg::{Ack, Answer, GaveUp, Message, Task};
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vain_core::challenge;
use vain_core::ledger::{MAX_GOVERNANCE, Observation, Observed};
use vain_core::signed::Signed;
use vain_core::{NodeId, Time};
use vain_net::node::{Handle, Inbound};
use vain_schema::clock::unix_ms;
use vain_schema::node::roles;

/// Most subjects a witness keeps outcomes for (a testimony's observations are bounded by
/// the codec's limit far above this).
pub const MAX_SUBJECTS: usize = 4096;
/// Admissions kept per node, one per task label (tasks are labelled two epochs ahead of a next
/// epoch that moves on, so at most two labels wait at once).
const MAX_LABELS: usize = 2;

/// How a validator challenges.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time a challenge allows (its deadline after issue).
    pub budget: Duration,
    /// The share of the budget the work takes at the claimed cores (in (0, 1]): the headroom
    /// an honest, loaded node has, and the overstatement below which a false claim passes.
    pub share: f64,
    /// Allowance on top of the budget for the request and the answer to cross the network.
    pub grace: Duration,
    /// How often each node is challenged.
    pub interval: Duration,
    /// How often each node is asked for its status (uptime).
    pub heartbeat: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            budget: Duration::from_secs(2),
            share: 0.5,
            grace: Duration::from_millis(500),
            interval: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// Outcomes waiting to be testified, per node: the last challenge outcome (what the validator
/// saw) since the last testimony, and the earliest admission of a failure not yet testified for
/// each task label — kept until a testimony of that epoch, however many challenges come after it
/// (a node is challenged more often than epochs pass); and the heartbeats it answered.
#[derive(Debug, Default)]
struct Pending {
    outcomes: BTreeMap<NodeId, (Option<Observed>, Vec<Signed<GaveUp>>)>,
    beats: BTreeMap<NodeId, (u32, u32)>,
    counts: BTreeMap<&'static str, u64>,
    /// The epoch of the last testimony taken: an admission labelled at or below it cannot
    /// prove anything any more.
    taken: Option<u64>,
}

/// Outcomes shared between the challenger and whoever signs testimonies.
#[derive(Debug, Clone, Default)]
pub struct Witness(Arc<Mutex<Pending>>);

/// What a validator testifies to at an epoch, and what it saw itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Taken {
    /// The testimony's observations: each challenge outcome a ledger can check (a failure only
    /// with its admission, otherwise a timeout), then each node's uptime.
    pub observations: Vec<Observation>,
    /// The admissions proving the failures among them, one per failed node.
    pub proofs: Vec<Signed<GaveUp>>,
    /// What the validator saw (for its own experience): a wrong or late answer is a failure.
    pub seen: Vec<Observation>,
}

impl Witness {
    fn outcome(&self, subject: NodeId, what: Observed, proof: Option<Signed<GaveUp>>, reason: &'static str) {
        if let Ok(mut p) = self.0.lock() {
            *p.counts.entry(reason).or_default() += 1;
            if p.outcomes.len() < MAX_SUBJECTS || p.outcomes.contains_key(&subject) {
                let spent = p.taken;
                let e = p.outcomes.entry(subject).or_default();
                e.0 = Some(what);
                // The earliest admission per label that can still be carried stays (labels span
                // two epochs: tasks are labelled two ahead of a next epoch that moves on).
                let label = |g: &Signed<GaveUp>| g.body.task.body.epoch;
                e.1.retain(|g| spent.is_none_or(|s| label(g) > s));
                if let Some(g) = proof
                    && spent.is_none_or(|s| label(&g) > s)
                    && !e.1.iter().any(|h| label(h) == label(&g))
                {
                    e.1.push(g);
                    e.1.sort_by_key(label);
                    e.1.truncate(MAX_LABELS);
                }
            }
        }
    }

    fn beat(&self, subject: NodeId, answered: bool) {
        if let Ok(mut p) = self.0.lock()
            && (p.beats.len() < MAX_SUBJECTS || p.beats.contains_key(&subject))
        {
            let b = p.beats.entry(subject).or_default();
            b.0 += u32::from(answered);
            b.1 += 1;
        }
    }

    /// Takes what a testimony for `epoch` carries: each challenge outcome, then each node's
    /// uptime (heartbeats answered / asked) — empty when nothing happened. `after` is the last
    /// testimony of this validator its ledger applied. The ledger takes an admission only in a
    /// testimony of its task's epoch or later, and after any testimony of that epoch: one whose
    /// task is labelled after `epoch` stays for a later testimony; one labelled at or below
    /// `after` or the last epoch taken, or past the [`MAX_GOVERNANCE`] admissions a testimony
    /// carries, is dropped (its failure, when it is the last outcome, a timeout).
    pub fn take(&self, epoch: u64, after: Option<u64>) -> Taken {
        let Ok(mut p) = self.0.lock() else { return Taken::default() };
        let outcomes = std::mem::take(&mut p.outcomes);
        let beats = std::mem::take(&mut p.beats);
        let spent = p.taken.max(after);
        // What the ledger applied is spent whether or not this call signs anything.
        p.taken = spent;
        let label = |g: &Signed<GaveUp>| g.body.task.body.epoch;
        let mut t = Taken::default();
        for (subject, (last, proofs)) in outcomes {
            // The earliest admission this testimony may carry goes; later-labelled ones wait;
            // ones that can no longer be carried are dropped.
            let live = proofs.into_iter().filter(|g| spent.is_none_or(|s| label(g) > s));
            let (due, waiting): (Vec<_>, Vec<_>) = live.partition(|g| label(g) <= epoch);
            let mut proven = false;
            if let Some(g) = due.into_iter().next()
                && t.proofs.len() < MAX_GOVERNANCE
            {
                t.proofs.push(g);
                t.observations.push(Observation { subject, what: Observed::ChallengeFailed });
                proven = true;
            }
            let waits = !waiting.is_empty();
            if waits {
                p.outcomes.insert(subject, (None, waiting));
            }
            let Some(what) = last else { continue };
            t.seen.push(Observation { subject, what });
            match what {
                // A failure it admitted is testified now, or later with its waiting admission;
                // one it did not admit, or whose admission came too late, proves nothing: a
                // timeout.
                Observed::ChallengeFailed if proven || waits => {}
                Observed::ChallengeFailed => {
                    t.observations.push(Observation { subject, what: Observed::ChallengeTimeout })
                }
                what => t.observations.push(Observation { subject, what }),
            }
        }
        for (subject, (answered, asked)) in beats.into_iter().filter(|(_, (_, asked))| *asked > 0) {
            let o =
                Observation { subject, what: Observed::Uptime { fraction: f64::from(answered) / f64::from(asked) } };
            t.observations.push(o);
            t.seen.push(o);
        }
        // Nothing to testify signs nothing: the epoch is not spent.
        if !t.observations.is_empty() {
            p.taken = Some(epoch).max(p.taken);
        }
        t
    }

    /// Challenges by outcome so far (`passed`, `wrong`, `late`, `gave up`, `no answer`, `busy`,
    /// `refused`).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().map(|p| p.counts.clone()).unwrap_or_default()
    }
}

/// The cores a node claims in its announcement, as a rate: multiply-adds per millisecond.
pub fn claimed_rate(cores: u32) -> f64 {
    f64::from(cores.max(1)) * challenge::CORE_RATE
}

/// A validator's challenger: call [`Challenger::run`] on the node's runtime.
pub struct Challenger {
    cfg: Config,
    net: Handle,
    key: SigningKey,
    witness: Witness,
    epoch: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Challenger {
    /// A challenger signing its tasks with `key` and leaving outcomes in `witness`; `epoch`
    /// gives its ledger's next epoch. Tasks are labelled two epochs after it: a testimony of the
    /// next epoch may be signed while the task runs, and an admission labelled at or below it
    /// could no longer be carried.
    pub fn new(
        cfg: Config,
        net: Handle,
        key: SigningKey,
        witness: Witness,
        epoch: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Challenger {
        Challenger { cfg, net, key, witness, epoch }
    }

    /// Heartbeats and challenges until the runtime stops.
    pub async fn run(self) {
        let me = self.key.verifying_key().to_bytes();
        let mut last_challenge: BTreeMap<NodeId, Instant> = BTreeMap::new();
        // A node is first challenged one interval after it is first seen: one that has just
        // started is busy loading, and its first answer would say little about its cores.
        let mut first_seen: BTreeMap<NodeId, Instant> = BTreeMap::new();
        let mut beat = tokio::time::interval(self.cfg.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beat.tick().await;
            let Ok(dir) = self.net.directory().await else { continue };
            let nodes: Vec<_> = dir.into_iter().filter(|e| e.connected && e.announcement.signing_key != me).collect();
            // Heartbeats all at once: a slow node must not delay the others' measurements.
            let asks = nodes.iter().map(|e| {
                let (net, peer, key) = (self.net.clone(), e.peer_id, e.announcement.signing_key);
                let bytes = Message::Status(String::new()).encode();
                let timeout = self.cfg.heartbeat.min(Duration::from_secs(5));
                async move {
                    let ok = matches!(tokio::time::timeout(timeout, net.request(peer, bytes)).await, Ok(Ok(_)));
                    (key, ok)
                }
            });
            for (key, ok) in futures::future::join_all(asks).await {
                self.witness.beat(key, ok);
            }
            // Challenges one at a time: the validator's own verification stays bounded.
            for e in &nodes {
                let key = e.announcement.signing_key;
                let seen = *first_seen.entry(key).or_insert_with(Instant::now);
                if seen.elapsed() < self.cfg.interval
                    || last_challenge.get(&key).is_some_and(|t| t.elapsed() < self.cfg.interval)
                {
                    continue;
                }
                last_challenge.insert(key, Instant::now());
                let cores = e.announcement.resources.cpu_cores;
                let (what, proof, reason) = self.challenge(e.peer_id, key, cores).await;
                tracing::info!(node = %crate::short(&key), cores, outcome = reason, "resource challenge");
                if let Some(what) = what {
                    self.witness.outcome(key, what, proof, reason);
                } else if let Ok(mut p) = self.witness.0.lock() {
                    *p.counts.entry(reason).or_default() += 1;
                }
            }
            if last_challenge.len() > MAX_SUBJECTS || first_seen.len() > 2 * MAX_SUBJECTS {
                let interval = self.cfg.interval;
                last_challenge.retain(|_, t| t.elapsed() < interval);
                let connected: std::collections::BTreeSet<NodeId> =
                    nodes.iter().map(|e| e.announcement.signing_key).collect();
                first_seen.retain(|k, _| connected.contains(k));
            }
        }
    }

    /// Sends one challenge and judges the answer: what this validator saw, the node's
    /// admission when it gave up, and the outcome's name.
    async fn challenge(
        &self,
        peer: vain_net::PeerId,
        subject: NodeId,
        cores: u32,
    ) -> (Option<Observed>, Option<Signed<GaveUp>>, &'static str) {
        let mut seeds = [0u8; 16];
        if getrandom::fill(&mut seeds).is_err() {
            return (None, None, "no randomness");
        }
        let seed = u64::from_le_bytes(seeds[..8].try_into().unwrap_or_default());
        let verifier_seed = u64::from_le_bytes(seeds[8..].try_into().unwrap_or_default());
        let budget = self.cfg.budget.as_millis() as Time;
        let ch = challenge::sized(claimed_rate(cores), budget, self.cfg.share, seed, unix_ms());
        let epoch = (self.epoch)().saturating_add(2);
        let task = Signed::sign(&self.key, Task { subject, epoch, challenge: ch });
        let started = Instant::now();
        let limit = self.cfg.budget + self.cfg.grace;
        // Wait past the deadline for a late answer: late is a false claim, silence is not.
        let answer =
            tokio::time::timeout(2 * limit, self.net.request(peer, Message::Challenge(task.clone()).encode())).await;
        let took = started.elapsed();
        let bytes = match answer {
            Ok(Ok(b)) => b,
            _ => return (Some(Observed::ChallengeTimeout), None, "no answer"),
        };
        let failed = Some(Observed::ChallengeFailed);
        match Answer::decode(&bytes, &ch) {
            Ok(Answer::Product(c)) => {
                let ok = tokio::task::spawn_blocking(move || challenge::verify(&ch, &c, verifier_seed))
                    .await
                    .unwrap_or(false);
                if !ok {
                    (failed, None, "wrong")
                } else if took > limit {
                    (failed, None, "late")
                } else {
                    (Some(Observed::ChallengePassed), None, "passed")
                }
            }
            // The node's signed admission that it failed this challenge: proof for every
            // ledger. One for another challenge, or that does not verify, is a wrong answer.
            Ok(Answer::GaveUp(g)) => {
                if g.body.task == task && g.admits(&task.signer).is_ok() {
                    (failed, Some(*g), "gave up")
                } else {
                    (failed, None, "wrong")
                }
            }
            Ok(Answer::Refused(Ack::Late)) => (failed, None, "gave up unsigned"),
            Ok(Answer::Refused(Ack::Busy)) => (Some(Observed::ChallengeTimeout), None, "busy"),
            // It does not take this validator's tasks (its ledger disagrees): nothing to say.
            Ok(Answer::Refused(_)) => (None, None, "refused"),
            Err(_) => (failed, None, "wrong"),
        }
    }
}

/// Answers challenges on a node.
#[derive(Clone)]
pub struct Prover {
    key: SigningKey,
    me: NodeId,
    cores: u32,
    threads: usize,
    busy: Arc<AtomicBool>,
    may_challenge: Arc<dyn Fn(&NodeId) -> bool + Send + Sync>,
}

impl Prover {
    /// A prover for the node whose signing key is `key` (it signs the node's admissions),
    /// claiming `cores`, computing on `threads`; `may_challenge` says whether a validator's key
    /// may set it work (its ledger's reporters).
    pub fn new(
        key: SigningKey,
        cores: u32,
        threads: usize,
        may_challenge: Arc<dyn Fn(&NodeId) -> bool + Send + Sync>,
    ) -> Prover {
        let me = key.verifying_key().to_bytes();
        Prover { key, me, cores, threads: threads.max(1), busy: Arc::new(AtomicBool::new(false)), may_challenge }
    }

    /// The answer to a challenge from `from` ([`Answer`]'s bytes).
    pub async fn answer(&self, task: Signed<Task>, from: &Inbound) -> Vec<u8> {
        Answer::Refused(match self.check(&task, from) {
            Ok(()) => return self.solve(task).await,
            Err(a) => a,
        })
        .encode()
    }

    fn check(&self, task: &Signed<Task>, from: &Inbound) -> Result<(), Ack> {
        let Some(a) = &from.announcement else { return Err(Ack::Ineligible) };
        if a.roles & roles::VALIDATOR == 0 {
            return Err(Ack::Ineligible);
        }
        if task.verify().is_err() || task.signer != a.signing_key || task.body.subject != self.me {
            return Err(Ack::BadSignature);
        }
        if !(self.may_challenge)(&task.signer) {
            return Err(Ack::Ineligible);
        }
        let c = &task.body.challenge;
        let window = c.window();
        // At most what the claimed cores do in the whole window (the challenger's sizing asks
        // a share of it; one row and column of rounding), and no window too short to work in:
        // otherwise a hostile validator could have an honest node sign an admission at will.
        let rounding = f64::from(c.rows) * f64::from(c.cols);
        if !c.in_bounds()
            || window < challenge::MIN_WINDOW
            || c.work() as f64 > claimed_rate(self.cores) * window as f64 + rounding
        {
            return Err(Ack::Oversized);
        }
        Ok(())
    }

    async fn solve(&self, task: Signed<Task>) -> Vec<u8> {
        let c = task.body.challenge;
        if self.busy.swap(true, Ordering::AcqRel) {
            return Answer::Refused(Ack::Busy).encode();
        }
        // The deadline on this node's clock: the window the task allows, from now (clocks of
        // the two nodes need not agree).
        let until = Instant::now() + Duration::from_millis(c.deadline.saturating_sub(c.issued));
        let threads = self.threads;
        let busy = self.busy.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let a = challenge::solve_until(&c, threads, Some(until));
            busy.store(false, Ordering::Release);
            a
        })
        .await;
        match answer {
            Ok(Some(product)) => Answer::Product(product).encode(),
            // It stopped at the deadline and says so, signed: an honest node's failures are
            // the ones it admits (this is what a validator's testimony proves them with).
            Ok(None) => Answer::GaveUp(Box::new(Signed::sign(&self.key, GaveUp { task }))).encode(),
            Err(_) => {
                self.busy.store(false, Ordering::Release);
                Answer::Refused(Ack::Busy).encode()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vain_core::challenge::Challenge;
    use vain_schema::node::{Announcement, Resources};

    fn inbound(key: &SigningKey, roles: u8) -> Inbound {
        let pk = key.verifying_key().to_bytes();
        let announcement = Announcement {
            node_id: pk,
            signing_key: pk,
            rotation_chain: Vec::new(),
            addresses: Vec::new(),
            roles,
            resources: Resources::default(),
            x25519_key: [0; 32],
            timestamp_ms: 0,
            ingest: Vec::new(),
            region: String::new(),
        };
        let (reply, _) = tokio::sync::oneshot::channel();
        Inbound { peer: vain_net::PeerId::random(), announcement: Some(announcement), request: Vec::new(), reply }
    }

    fn task(key: &SigningKey, subject: NodeId, c: Challenge) -> Signed<Task> {
        Signed::sign(key, Task { subject, epoch: 4, challenge: c })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prover_answers_its_reporters_within_its_claim_and_gives_up_at_the_deadline() {
        let (validator, other) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
        let node = SigningKey::from_bytes(&[7; 32]);
        let me = node.verifying_key().to_bytes();
        let trusted = validator.verifying_key().to_bytes();
        let prover = Prover::new(node.clone(), 2, 2, Arc::new(move |k| *k == trusted));
        let from = inbound(&validator, roles::VALIDATOR);
        let ok = challenge::sized(claimed_rate(2), 2000, 0.5, 5, 1_000);
        let answer = |bytes: Vec<u8>, c: &Challenge| Answer::decode(&bytes, c).expect("answer");
        match answer(prover.answer(task(&validator, me, ok), &from).await, &ok) {
            Answer::Product(c) => assert!(challenge::verify(&ok, &c, 3)),
            other => panic!("{other:?}"),
        }
        let refused = |a| Answer::Refused(a);
        // Not a validator; not the signer announced; for another node; not a reporter here.
        assert_eq!(
            answer(prover.answer(task(&validator, me, ok), &inbound(&validator, roles::CLIENT)).await, &ok),
            refused(Ack::Ineligible)
        );
        assert_eq!(answer(prover.answer(task(&other, me, ok), &from).await, &ok), refused(Ack::BadSignature));
        assert_eq!(answer(prover.answer(task(&validator, [8; 32], ok), &from).await, &ok), refused(Ack::BadSignature));
        let stranger = inbound(&other, roles::VALIDATOR);
        assert_eq!(answer(prover.answer(task(&other, me, ok), &stranger).await, &ok), refused(Ack::Ineligible));
        // More work than two cores claim for the window, or beyond the bounds.
        let big = challenge::sized(claimed_rate(64), 2000, 0.5, 5, 1_000);
        assert_eq!(answer(prover.answer(task(&validator, me, big), &from).await, &big), refused(Ack::Oversized));
        let wide = Challenge { rows: challenge::MAX_SIDE + 1, ..ok };
        assert_eq!(answer(prover.answer(task(&validator, me, wide), &from).await, &wide), refused(Ack::Oversized));
        // A window too short to work in, however small the work: an honest node never signs an
        // admission a hostile validator set it up for.
        let instant = Challenge { inner: 1, deadline: ok.issued, ..ok };
        let rushed = Challenge { deadline: ok.issued + challenge::MIN_WINDOW - 1, ..instant };
        for c in [instant, rushed] {
            assert_eq!(answer(prover.answer(task(&validator, me, c), &from).await, &c), refused(Ack::Oversized));
        }
        // A node claiming 64 cores with one to compute on: within its claim, but it cannot do
        // it by the deadline (a quarter of what one core does); it stops there and signs that
        // it did — an admission of that very task, which any ledger can check.
        let liar = Prover::new(node, 64, 1, Arc::new(move |k| *k == trusted));
        let rushed = challenge::sized(claimed_rate(64), challenge::MIN_WINDOW, 0.5, 5, 1_000);
        let started = Instant::now();
        let set = task(&validator, me, rushed);
        match answer(liar.answer(set.clone(), &from).await, &rushed) {
            Answer::GaveUp(g) => {
                assert_eq!(g.body.task, set);
                assert_eq!(g.admits(&trusted), Ok(4));
                assert!(g.admits(&other.verifying_key().to_bytes()).is_err(), "not another validator's task");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "it stopped at the deadline");
    }

    #[test]
    fn a_witness_keeps_the_last_outcome_and_the_uptime_fraction() {
        let w = Witness::default();
        assert_eq!(w.take(0, None), Taken::default());
        w.outcome([1; 32], Observed::ChallengeFailed, None, "gave up");
        w.outcome([1; 32], Observed::ChallengePassed, None, "passed");
        for ok in [true, true, false, true] {
            w.beat([2; 32], ok);
        }
        let got = w.take(0, None);
        let want = vec![
            Observation { subject: [1; 32], what: Observed::ChallengePassed },
            Observation { subject: [2; 32], what: Observed::Uptime { fraction: 0.75 } },
        ];
        assert_eq!(got, Taken { observations: want.clone(), proofs: Vec::new(), seen: want });
        assert_eq!(w.take(0, None), Taken::default());
        assert_eq!(w.counts(), BTreeMap::from([("gave up", 1), ("passed", 1)]));
    }

    #[test]
    fn only_an_admitted_failure_is_testified_as_one_and_only_in_its_window() {
        let validator = SigningKey::from_bytes(&[1; 32]);
        let (a, b) = (SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32]));
        let (ka, kb) = (a.verifying_key().to_bytes(), b.verifying_key().to_bytes());
        let c = challenge::sized(claimed_rate(1), challenge::MIN_WINDOW, 0.5, 5, 1_000);
        let admit = |node: &SigningKey, epoch| {
            let task = Signed::sign(&validator, Task { subject: node.verifying_key().to_bytes(), epoch, challenge: c });
            Signed::sign(node, GaveUp { task })
        };
        let w = Witness::default();
        let failed = |k| Observation { subject: k, what: Observed::ChallengeFailed };
        let timeout = |k| Observation { subject: k, what: Observed::ChallengeTimeout };
        let sorted = |mut v: Vec<Observation>| {
            v.sort_by_key(|o| (o.subject, o.what.tag()));
            v
        };
        // `a` admitted failing a task labelled for epoch 6; `b` answered wrongly (no proof).
        w.outcome(ka, Observed::ChallengeFailed, Some(admit(&a, 6)), "gave up");
        w.outcome(kb, Observed::ChallengeFailed, None, "wrong");
        // At epoch 5 the admission waits (its failure is testified with it, not before); the
        // wrong answer is a timeout to the ledgers and a failure to this validator.
        let early = w.take(5, None);
        assert_eq!(early.observations, vec![timeout(kb)]);
        assert!(early.proofs.is_empty());
        assert_eq!(sorted(early.seen), sorted(vec![failed(ka), failed(kb)]));
        // Challenged again before epoch 6 (a node is challenged more often than epochs pass):
        // the earliest admission stays, and a later-labelled one waits beside it for its own
        // testimony; a second one of a label already held adds nothing.
        w.outcome(ka, Observed::ChallengeFailed, Some(admit(&a, 7)), "gave up");
        w.outcome(ka, Observed::ChallengeFailed, Some(admit(&a, 6)), "gave up");
        let due = w.take(6, None);
        assert_eq!(due.observations, vec![failed(ka)]);
        assert_eq!(due.proofs, vec![admit(&a, 6)]);
        assert_eq!(due.seen, vec![failed(ka)]);
        let next = w.take(7, None);
        assert_eq!((next.observations, next.proofs), (vec![failed(ka)], vec![admit(&a, 7)]));
        assert_eq!(w.take(8, None), Taken::default());
        // An admission labelled 6 that arrives after the testimony of epoch 6 was taken, or one
        // at or below the validator's last applied testimony, can prove nothing any more: a
        // timeout, so that the testimony carrying it is not refused whole.
        w.outcome(ka, Observed::ChallengeFailed, Some(admit(&a, 6)), "gave up");
        w.outcome(kb, Observed::ChallengeFailed, Some(admit(&b, 9)), "gave up");
        let late = w.take(9, Some(9));
        assert_eq!(sorted(late.observations), sorted(vec![timeout(ka), timeout(kb)]));
        assert!(late.proofs.is_empty());
        assert_eq!(sorted(late.seen), sorted(vec![failed(ka), failed(kb)]));
        // A pass after an admission: both go (different kinds; every ledger takes each once).
        w.outcome(ka, Observed::ChallengeFailed, Some(admit(&a, 10)), "gave up");
        w.outcome(ka, Observed::ChallengePassed, None, "passed");
        let both = w.take(10, Some(9));
        let passed = Observation { subject: ka, what: Observed::ChallengePassed };
        assert_eq!(sorted(both.observations), sorted(vec![failed(ka), passed]));
        assert_eq!(both.seen, vec![passed]);
    }

    #[test]
    fn a_testimony_carries_at_most_what_a_report_decodes() {
        let validator = SigningKey::from_bytes(&[1; 32]);
        let c = challenge::sized(claimed_rate(1), 2000, 0.5, 5, 1_000);
        let w = Witness::default();
        for i in 0..MAX_GOVERNANCE as u32 + 3 {
            let mut seed = [9u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let node = SigningKey::from_bytes(&seed);
            let task =
                Signed::sign(&validator, Task { subject: node.verifying_key().to_bytes(), epoch: 1, challenge: c });
            let g = Signed::sign(&node, GaveUp { task });
            w.outcome(node.verifying_key().to_bytes(), Observed::ChallengeFailed, Some(g), "gave up");
        }
        let t = w.take(2, None);
        assert_eq!(t.proofs.len(), MAX_GOVERNANCE);
        let count = |what| t.observations.iter().filter(|o| o.what == what).count();
        assert_eq!((count(Observed::ChallengeFailed), count(Observed::ChallengeTimeout)), (MAX_GOVERNANCE, 3));
        assert_eq!(t.seen.len(), MAX_GOVERNANCE + 3);
    }
}
