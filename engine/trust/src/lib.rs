//! Every node's reputation ledger, live: the deterministic [`vain_core::ledger::Ledger`], its
//! journal on disk, and the order in which evidence is applied.
//!
//! Evidence arrives as signed reports (an aggregator's verdicts on a round, epoch = round) in
//! whatever order the network delivers it. The ledger's state depends on the order of its
//! inputs, so reports are buffered and applied epoch by epoch, from epoch 0, each epoch's
//! reports sorted by their digest, at the epoch's ledger time (`(epoch + 1) × HOUR`) followed by
//! a tick: every node that has the same reports reaches the same state digest, whatever order
//! they came in. Each applied entry is journaled (fsynced) first, so a restarted node replays to
//! the digest it had.
//!
//! Bounds: one report per reporter and epoch (a second, different one is equivocation and is
//! refused), at most [`AHEAD`] epochs buffered ahead of the next one to apply, a bounded set of
//! digests seen.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use thiserror::Error;
use vain_core::journal::Entry;
use vain_core::ledger::{self, Input, Ledger, Report};
use vain_core::signed::Signed;
use vain_core::store::Store;
use vain_core::{HOUR, NodeId, Time};

/// Epochs a report may be ahead of the next epoch to apply.
pub const AHEAD: u64 = 64;
/// Report digests remembered for de-duplication.
pub const SEEN: usize = 4096;

/// Why the ledger could not be opened or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The journal failed.
    #[error("ledger journal: {0}")]
    Journal(#[from] vain_core::store::Error),
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
    /// For an epoch already applied.
    Stale,
    /// More than [`AHEAD`] epochs ahead.
    TooFarAhead,
    /// The signature does not verify.
    BadSignature,
    /// A second, different report of the same reporter and epoch.
    Equivocation,
    /// The reporter may not report (neither pre-trusted nor at the reporting tier).
    Ineligible,
}

impl Offer {
    /// The counter it goes to.
    pub fn reason(self) -> &'static str {
        match self {
            Offer::New => "new",
            Offer::Duplicate => "duplicate",
            Offer::Stale => "stale",
            Offer::TooFarAhead => "too far ahead",
            Offer::BadSignature => "bad signature",
            Offer::Equivocation => "equivocation",
            Offer::Ineligible => "ineligible reporter",
        }
    }
}

/// Ledger settings of the network.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Pre-trusted reporters (the network's genesis; e.g. its first aggregators).
    pub pretrusted: Vec<NodeId>,
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
    /// Reports buffered for later epochs.
    pub pending: usize,
    /// Offers by outcome.
    pub offers: BTreeMap<&'static str, u64>,
    /// When this node applied each of the last epochs: (epoch, Unix ms).
    pub applied_at_ms: Vec<(u64, u64)>,
    /// The ledger's nodes.
    pub nodes: Vec<NodeRow>,
}

/// The live ledger.
pub struct Live {
    ledger: Ledger,
    store: Store,
    next_epoch: u64,
    applied: u64,
    pending: BTreeMap<u64, BTreeMap<[u8; 32], Signed<Report>>>,
    /// (reporter, epoch) → digest of the report taken.
    taken: BTreeMap<(NodeId, u64), [u8; 32]>,
    seen: (HashSet<[u8; 32]>, VecDeque<[u8; 32]>),
    offers: BTreeMap<&'static str, u64>,
    applied_at: VecDeque<(u64, u64)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Ledger time of an epoch's evidence.
pub fn epoch_time(epoch: u64) -> Time {
    (epoch + 1) * HOUR
}

impl Live {
    /// Opens the journal in `dir` (creating it) and replays it.
    pub fn open(dir: &Path, cfg: Config) -> Result<Live, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let (mut store, mut recovered) = Store::open(&dir.join("ledger.journal"))?;
        // Reports journaled without their epoch's closing tick (a crash between the frames):
        // the epoch is complete as far as this node ever saw it, so close it now.
        if let Some(Entry::Input { at, .. }) = recovered.entries.last() {
            let tick = Entry::Tick { at: *at };
            store.append(std::slice::from_ref(&tick))?;
            recovered.entries.push(tick);
        }
        let lcfg = ledger::Config { pretrusted: cfg.pretrusted, ..ledger::Config::default() };
        let ledger = vain_core::journal::replay(lcfg, 0, &recovered.entries);
        // Each applied epoch ends with a tick at its time; reports are counted as applied.
        let mut next_epoch = 0;
        let mut applied = 0;
        let mut taken = BTreeMap::new();
        for e in &recovered.entries {
            match e {
                Entry::Tick { at } => next_epoch = at / HOUR,
                Entry::Input { input: Input::Report(r), .. } => {
                    applied += 1;
                    taken.insert((r.signer, r.body.epoch), r.digest());
                }
                _ => {}
            }
        }
        Ok(Live {
            ledger,
            store,
            next_epoch,
            applied,
            pending: BTreeMap::new(),
            taken,
            seen: (HashSet::new(), VecDeque::new()),
            offers: BTreeMap::new(),
            applied_at: VecDeque::new(),
        })
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

    /// The nodes the ledger has banned (the planes refuse them: connections, handshakes,
    /// updates).
    pub fn banned(&self) -> Vec<NodeId> {
        self.ledger.nodes().filter(|(_, r)| r.banned).map(|(id, _)| *id).collect()
    }

    /// Takes a report; applies every epoch that is now complete. A journal failure is an
    /// error (nothing unjournaled is applied).
    pub fn offer(&mut self, r: Signed<Report>) -> Result<Offer, Error> {
        let verdict = self.classify(&r);
        *self.offers.entry(verdict.reason()).or_default() += 1;
        match verdict {
            Offer::New | Offer::Duplicate | Offer::Stale => {}
            _ => tracing::warn!(epoch = r.body.epoch, outcome = verdict.reason(), "evidence refused"),
        }
        if verdict == Offer::New {
            let d = r.digest();
            self.taken.insert((r.signer, r.body.epoch), d);
            if self.seen.0.insert(d) {
                self.seen.1.push_back(d);
                if self.seen.1.len() > SEEN
                    && let Some(old) = self.seen.1.pop_front()
                {
                    self.seen.0.remove(&old);
                }
            }
            self.pending.entry(r.body.epoch).or_default().insert(d, r);
            self.drain()?;
        }
        Ok(verdict)
    }

    fn classify(&self, r: &Signed<Report>) -> Offer {
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

    /// Applies the next epochs while their reports are here: a round has one report (its
    /// aggregator's), so an epoch is complete once it has one.
    fn drain(&mut self) -> Result<(), Error> {
        while let Some(reports) = self.pending.remove(&self.next_epoch) {
            let at = epoch_time(self.next_epoch);
            let mut entries: Vec<Entry> =
                reports.values().map(|r| Entry::Input { at, input: Input::Report(r.clone()) }).collect();
            entries.push(Entry::Tick { at });
            // Journal first: what is applied survives a crash, and replays identically. A failed
            // write applies nothing and keeps the epoch's reports for the next try.
            if let Err(e) = self.store.append(&entries) {
                self.pending.insert(self.next_epoch, reports);
                return Err(e.into());
            }
            for e in &entries {
                if matches!(e, Entry::Input { .. }) {
                    self.applied += 1;
                }
                e.apply(&mut self.ledger);
            }
            while self.ledger.poll().is_some() {}
            tracing::debug!(epoch = self.next_epoch, digest = %hex(&self.ledger.digest()[..8]), "ledger epoch applied");
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            self.applied_at.push_back((self.next_epoch, now_ms));
            if self.applied_at.len() > 64 {
                self.applied_at.pop_front();
            }
            self.next_epoch += 1;
            self.taken.retain(|(_, e), _| *e + AHEAD >= self.next_epoch);
        }
        Ok(())
    }

    /// The status `vain ledger status` prints.
    pub fn status(&self) -> Status {
        let now = epoch_time(self.next_epoch.saturating_sub(1));
        let nodes = self
            .ledger
            .nodes()
            .map(|(id, r)| NodeRow {
                id: hex(&id[..4]),
                key: hex(id),
                stake: r.stake,
                suspensions: r.suspensions,
                tier: self.ledger.tier(id, now),
                score: r.score,
                standing: if r.banned {
                    "banned"
                } else if r.suspended_until.is_some_and(|u| now < u) {
                    "suspended"
                } else {
                    "active"
                },
            })
            .collect();
        Status {
            digest: hex(&self.ledger.digest()),
            next_epoch: self.next_epoch,
            applied: self.applied,
            pending: self.pending.values().map(BTreeMap::len).sum(),
            offers: self.offers.clone(),
            applied_at_ms: self.applied_at.iter().copied().collect(),
            nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use vain_core::ledger::{Observation, Observed};

    fn report(key: &SigningKey, epoch: u64, subject: u8, z: f64) -> Signed<Report> {
        let observations = vec![
            Observation { subject: [subject; 32], what: Observed::Participated },
            Observation { subject: [subject; 32], what: Observed::Anomaly { z } },
        ];
        Signed::sign(key, Report { epoch, observations })
    }

    #[test]
    fn any_arrival_order_gives_the_same_digest_and_a_restart_replays_to_it() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let cfg = || Config { pretrusted: vec![a.verifying_key().to_bytes()] };
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
        // Another report of an applied epoch: equivocation from its reporter, stale from anyone else.
        assert_eq!(x.offer(report(&a, 2, 9, 0.1)).expect("offer"), Offer::Equivocation);
        assert_eq!(x.offer(report(&SigningKey::from_bytes(&[2; 32]), 2, 9, 0.1)).expect("offer"), Offer::Stale);
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

    #[test]
    fn repeated_anomalies_suspend_then_ban() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let d = tempfile::tempdir().expect("dir");
        let mut x = Live::open(d.path(), Config { pretrusted: vec![a.verifying_key().to_bytes()] }).expect("open");
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
}
