//! A node's first-hand experience with the nodes it works with, and the local-trust vector it
//! signs from it (docs/protocol.md, "Local trust").
//!
//! EigenTrust (Kamvar et al. 2003) builds global trust from each node's *local* trust in the
//! nodes it transacted with: satisfactory minus unsatisfactory transactions, never below zero.
//! Here a transaction is work the planes of this node saw done — an aggregator: a client's
//! update, satisfactory as far as it agreed with the round's robust centre (an empty update
//! agrees with nothing) and unsatisfactory when its aggregation flagged it; a validator: a
//! challenge passed or failed; a client: a close that holds its update, or one that left out
//! an update the aggregator had acknowledged — plus the operator's own vouches (`[ledger]
//! vouch` in node.toml). Being online is not work: uptime and missed rounds count in the
//! ledger's participation evidence, not here. Old experience fades with a half-life, so a
//! partner that turns bad loses this node's trust within days; the tally is kept on disk, so a
//! restart does not replace a long-built vector with the first round's.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vain_core::NodeId;
use vain_core::ledger::{Observation, Observed};
use vain_schema::clock::unix_ms;

/// Partners remembered at most (past it, the one with the least experience either way is
/// forgotten: a bad record stays while there is a good one to forget instead).
pub const MAX_PARTNERS: usize = 4096;

/// How fast experience fades, in milliseconds of wall-clock time.
pub const HALF_LIFE_MS: u64 = 24 * 3600 * 1000;

/// Weight of the operator's vouch: as much as one satisfactory transaction, and it does not
/// fade.
pub const VOUCH: f64 = 1.0;

/// The tally, as it is kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    /// Satisfactory and unsatisfactory transactions per partner (hex key), decayed to `at_ms`.
    partners: BTreeMap<String, (f64, f64)>,
    /// Unix ms of the last decay.
    at_ms: u64,
    /// Whether the last vector signed vouched for anyone (so that losing the last partner
    /// signs an empty vector, withdrawing the trust the ledger still holds).
    vouching: bool,
    #[serde(skip)]
    vouched: Vec<NodeId>,
    /// Whether anything was recorded since the last vector.
    #[serde(skip)]
    changed: bool,
    #[serde(skip)]
    path: Option<PathBuf>,
}

/// Experience shared between the planes that record it and the task that signs the vector.
#[derive(Debug, Clone, Default)]
pub struct Experience(Arc<Mutex<Tally>>);

impl Tally {
    fn decay(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.at_ms);
        if dt == 0 {
            return;
        }
        let f = (-(dt as f64 / HALF_LIFE_MS as f64) * std::f64::consts::LN_2).exp();
        for (good, bad) in self.partners.values_mut() {
            *good *= f;
            *bad *= f;
        }
        self.at_ms = now_ms;
    }

    /// Adds to `partner`'s tally (decay first: once per batch, by the caller).
    fn add(&mut self, partner: NodeId, good: f64, bad: f64) {
        if !(good.is_finite() && bad.is_finite() && good >= 0.0 && bad >= 0.0 && good + bad > 0.0) {
            return;
        }
        let key = hex::encode(partner);
        if !self.partners.contains_key(&key) && self.partners.len() >= MAX_PARTNERS {
            let least = self
                .partners
                .iter()
                .min_by(|a, b| (a.1.0 + a.1.1).total_cmp(&(b.1.0 + b.1.1)).then(a.0.cmp(b.0)))
                .map(|(k, _)| k.clone());
            if let Some(k) = least {
                self.partners.remove(&k);
            }
        }
        let e = self.partners.entry(key).or_default();
        e.0 += good;
        e.1 += bad;
        self.changed = true;
    }

    fn save(&self) {
        use std::io::Write;
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("tmp");
        // Synced before the rename: a crash leaves the old tally or the new one, never an empty file.
        let written = serde_json::to_vec(self).map_err(std::io::Error::other).and_then(|b| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&b)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(path = %path.display(), error = %e, "keeping the local-trust tally");
        }
    }
}

impl Experience {
    /// Experience kept in `path` (read back if it is there: a damaged file starts afresh, with
    /// a warning), with the operator's vouches.
    pub fn open(path: &Path, vouched: Vec<NodeId>) -> Experience {
        let mut t: Tally = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "local-trust tally unreadable; starting afresh");
                Tally::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tally::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "local-trust tally unreadable; starting afresh");
                Tally::default()
            }
        };
        t.path = Some(path.to_path_buf());
        t.with_vouches(vouched);
        Experience(Arc::new(Mutex::new(t)))
    }

    /// Experience in memory only, with the operator's vouches (the node keeps its tally on disk:
    /// [`Experience::open`]).
    #[cfg(test)]
    fn with_vouches(vouched: Vec<NodeId>) -> Experience {
        let mut t = Tally::default();
        t.with_vouches(vouched);
        Experience(Arc::new(Mutex::new(t)))
    }

    /// The last [`Experience::vector`] was taken (held for the next report): whether it vouched
    /// for anyone decides whether losing every partner must be signed as a withdrawal. Keeps the
    /// tally on disk.
    pub fn signed(&self, vouching: bool) {
        if let Ok(mut t) = self.0.lock() {
            t.vouching = vouching;
            t.save();
        }
    }

    /// Makes the next [`Experience::vector`] give the vector again (the last one was not taken).
    pub fn retry(&self) {
        if let Ok(mut t) = self.0.lock() {
            t.changed = true;
        }
    }

    /// A satisfactory transaction with `partner`, of weight `w` (> 0; 1 is one round).
    pub fn good(&self, partner: NodeId, w: f64) {
        if let Ok(mut t) = self.0.lock() {
            t.decay(unix_ms());
            t.add(partner, w, 0.0);
        }
    }

    /// An unsatisfactory one.
    pub fn bad(&self, partner: NodeId, w: f64) {
        if let Ok(mut t) = self.0.lock() {
            t.decay(unix_ms());
            t.add(partner, 0.0, w);
        }
    }

    /// Records what this node observed as a reporter or a validator: an aggregated update's
    /// feedback (its quality, (1 + cosine to the robust centre) / 2) is satisfactory by
    /// 2·quality − 1 when above ½ and unsatisfactory by as much below (an update with no
    /// direction, a free-rider's zero, scores ½: neither); an anomaly of |z| ≥ `anomaly_z`
    /// counts two unsatisfactory transactions; a challenge passed one satisfactory, failed one
    /// unsatisfactory. Participation alone, uptime, missed rounds and unanswered challenges
    /// are not work done together and count for nothing here.
    pub fn witnessed(&self, observations: &[Observation], anomaly_z: f64) {
        let Ok(mut t) = self.0.lock() else { return };
        t.decay(unix_ms());
        for o in observations {
            match o.what {
                Observed::ChallengePassed => t.add(o.subject, 1.0, 0.0),
                Observed::ChallengeFailed => t.add(o.subject, 0.0, 1.0),
                Observed::Anomaly { z } if z.abs() >= anomaly_z => t.add(o.subject, 0.0, 2.0),
                Observed::Feedback { score } if score.is_finite() => {
                    let agreement = 2.0 * score.clamp(0.0, 1.0) - 1.0;
                    t.add(o.subject, agreement.max(0.0), (-agreement).max(0.0));
                }
                _ => {}
            }
        }
    }

    /// The local-trust vector to sign when anything changed since the last one: the `max`
    /// partners with the most net experience (max(good − bad, 0), vouches added), in key order,
    /// normalised to sum 1, never `me`. Empty when nobody is trusted any more but the last
    /// vector taken vouched for someone (so the ledger forgets it); `None` when there is
    /// nothing to sign. Say [`Experience::signed`] when it was taken, [`Experience::retry`]
    /// when not.
    pub fn vector(&self, me: &NodeId, max: usize) -> Option<Vec<(NodeId, f64)>> {
        let mut t = self.0.lock().ok()?;
        if !t.changed {
            return None;
        }
        t.changed = false;
        t.decay(unix_ms());
        let mut net: BTreeMap<NodeId, f64> = BTreeMap::new();
        for (k, (good, bad)) in &t.partners {
            if let Some(id) = hex::decode(k).ok().and_then(|b| NodeId::try_from(b).ok()) {
                net.insert(id, (good - bad).max(0.0));
            }
        }
        for k in &t.vouched {
            *net.entry(*k).or_default() += VOUCH;
        }
        // (Below a millionth of a transaction is rounding, not trust.)
        let mut ranked: Vec<(NodeId, f64)> = net.into_iter().filter(|(k, w)| k != me && *w > 1e-6).collect();
        // The strongest first (ties: the smaller key), then back into key order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(max);
        ranked.sort_by_key(|e| e.0);
        let sum: f64 = ranked.iter().map(|(_, w)| w).sum();
        if ranked.is_empty() || sum.is_nan() || sum <= 0.0 {
            return t.vouching.then(Vec::new);
        }
        Some(ranked.into_iter().map(|(k, w)| (k, w / sum)).collect())
    }
}

impl Tally {
    fn with_vouches(&mut self, mut vouched: Vec<NodeId>) {
        vouched.sort();
        vouched.dedup();
        self.changed = !vouched.is_empty();
        self.vouched = vouched;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        [b; 32]
    }

    #[test]
    fn net_experience_is_normalised_in_key_order_without_self_or_distrusted() {
        let e = Experience::default();
        assert_eq!(e.vector(&id(0), 8), None, "nothing happened");
        e.good(id(3), 1.0);
        e.good(id(3), 1.0);
        e.good(id(1), 1.0);
        e.good(id(2), 1.0);
        e.bad(id(2), 3.0);
        e.good(id(0), 5.0);
        let v = e.vector(&id(0), 8).expect("vector");
        assert_eq!(v.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(), vec![1, 3]);
        assert!((v[0].1 - 1.0 / 3.0).abs() < 1e-9 && (v[1].1 - 2.0 / 3.0).abs() < 1e-9, "{v:?}");
        assert_eq!(e.vector(&id(0), 8), None, "unchanged since");
    }

    #[test]
    fn work_counts_by_its_agreement_and_being_online_counts_for_nothing() {
        let e = Experience::default();
        let (honest, poisoner, free_rider, offline, prover) = (id(1), id(2), id(3), id(4), id(5));
        let seen = |subject, what| Observation { subject, what };
        e.witnessed(
            &[
                seen(honest, Observed::Participated),
                seen(honest, Observed::Anomaly { z: 1.0 }),
                seen(honest, Observed::Feedback { score: 0.8 }),
                seen(poisoner, Observed::Participated),
                seen(poisoner, Observed::Anomaly { z: -6.0 }),
                seen(poisoner, Observed::Feedback { score: 0.9 }),
                seen(free_rider, Observed::Participated),
                seen(free_rider, Observed::Feedback { score: 0.5 }),
                seen(free_rider, Observed::Uptime { fraction: 1.0 }),
                seen(offline, Observed::Missed),
                seen(offline, Observed::ChallengeTimeout),
                seen(prover, Observed::ChallengePassed),
                seen(prover, Observed::ChallengePassed),
                seen(prover, Observed::ChallengeFailed),
            ],
            3.5,
        );
        let v = e.vector(&id(0), 8).expect("vector");
        assert_eq!(v.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![honest, prover], "{v:?}");
        // 0.6 for the update's agreement, 1 for the prover's net challenge.
        assert!((v[0].1 - 0.6 / 1.6).abs() < 1e-9, "{v:?}");
        e.signed(true);
        // Disagreement counts against: a sign-flipped update cancels an honest round.
        e.witnessed(&[seen(honest, Observed::Feedback { score: 0.2 })], 3.5);
        let v = e.vector(&id(0), 8).expect("vector");
        assert_eq!(v, vec![(prover, 1.0)]);
        e.signed(true);
        // The prover turns bad: the next vector is empty, withdrawing the trust — again while
        // the withdrawal is not taken — and then nothing.
        e.bad(prover, 5.0);
        assert_eq!(e.vector(&id(0), 8), Some(Vec::new()));
        e.retry();
        assert_eq!(e.vector(&id(0), 8), Some(Vec::new()));
        e.signed(false);
        e.bad(prover, 1.0);
        assert_eq!(e.vector(&id(0), 8), None);
    }

    #[test]
    fn only_the_strongest_partners_are_kept_and_vouches_always_count() {
        let e = Experience::with_vouches(vec![id(9), id(9)]);
        assert_eq!(e.vector(&id(0), 4), Some(vec![(id(9), 1.0)]), "the vouch alone, once");
        for k in 1..=8u8 {
            e.good(id(k), f64::from(k));
        }
        let v = e.vector(&id(0), 3).expect("vector");
        assert_eq!(v.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(), vec![6, 7, 8]);
        let sum: f64 = v.iter().map(|(_, w)| w).sum();
        assert!((sum - 1.0).abs() < 1e-12);
        // Nonsense weights are ignored.
        e.good(id(1), f64::NAN);
        e.bad(id(1), -1.0);
        assert_eq!(e.vector(&id(0), 3), None);
    }

    #[test]
    fn experience_fades_with_its_half_life_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("experience.json");
        let e = Experience::open(&path, Vec::new());
        e.good(id(1), 4.0);
        e.bad(id(2), 1.0);
        {
            let mut t = e.0.lock().expect("lock");
            let later = t.at_ms + HALF_LIFE_MS;
            t.decay(later);
            // The two adds may be milliseconds apart, and the first fades by that much too.
            assert!((t.partners[&hex::encode(id(1))].0 - 2.0).abs() < 1e-6);
            assert!((t.partners[&hex::encode(id(2))].1 - 0.5).abs() < 1e-6);
            t.at_ms = unix_ms();
        }
        assert_eq!(e.vector(&id(0), 8), Some(vec![(id(1), 1.0)]));
        e.signed(true);
        drop(e);
        // Reopened: the tally is there, and a new round adds to it rather than replacing it.
        let e = Experience::open(&path, Vec::new());
        e.good(id(3), 2.0);
        let v = e.vector(&id(0), 8).expect("vector");
        assert_eq!(v.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(), vec![1, 3], "{v:?}");
        assert!((v[0].1 - 0.5).abs() < 1e-6, "{v:?}");
        // A damaged file starts afresh.
        std::fs::write(&path, b"{").expect("write");
        assert_eq!(Experience::open(&path, Vec::new()).vector(&id(0), 8), None);
    }

    #[test]
    fn past_the_partner_bound_the_least_known_is_forgotten_not_the_worst() {
        let e = Experience::default();
        let mut t = e.0.lock().expect("lock");
        t.add(id(1), 0.0, 50.0);
        for i in 0..MAX_PARTNERS as u32 - 1 {
            let mut k = [7u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            t.add(k, 1.0, 0.0);
        }
        assert_eq!(t.partners.len(), MAX_PARTNERS);
        t.add(id(2), 3.0, 0.0);
        assert_eq!(t.partners.len(), MAX_PARTNERS);
        assert!(t.partners.contains_key(&hex::encode(id(1))), "the bad record stays");
        assert!(t.partners.contains_key(&hex::encode(id(2))));
    }
}
