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
//! partner that turns bad loses this node's trust within days.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vain_core::NodeId;
use vain_core::ledger::{Observation, Observed};

/// Partners remembered at most (the least trusted are forgotten first past it).
pub const MAX_PARTNERS: usize = 4096;

/// How fast experience fades.
pub const HALF_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Weight of the operator's vouch: as much as this many satisfactory transactions, and it does
/// not fade.
pub const VOUCH: f64 = 1.0;

#[derive(Debug)]
struct Tally {
    /// Satisfactory and unsatisfactory transactions per partner, decayed to `at`.
    partners: BTreeMap<NodeId, (f64, f64)>,
    at: Instant,
    vouched: Vec<NodeId>,
    /// Whether anything was recorded since the last vector.
    changed: bool,
}

/// Experience shared between the planes that record it and the task that signs the vector.
#[derive(Debug, Clone)]
pub struct Experience(Arc<Mutex<Tally>>);

impl Default for Experience {
    fn default() -> Self {
        Experience(Arc::new(Mutex::new(Tally {
            partners: BTreeMap::new(),
            at: Instant::now(),
            vouched: Vec::new(),
            changed: false,
        })))
    }
}

impl Tally {
    fn decay(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at);
        if dt.is_zero() {
            return;
        }
        let f = (-(dt.as_secs_f64() / HALF_LIFE.as_secs_f64()) * std::f64::consts::LN_2).exp();
        for (good, bad) in self.partners.values_mut() {
            *good *= f;
            *bad *= f;
        }
        self.at = now;
    }

    fn add(&mut self, partner: NodeId, good: f64, bad: f64) {
        self.decay(Instant::now());
        if !self.partners.contains_key(&partner) && self.partners.len() >= MAX_PARTNERS {
            // Forget the partner with the least net experience (ties: the smallest key).
            let worst =
                self.partners.iter().min_by(|a, b| (a.1.0 - a.1.1).total_cmp(&(b.1.0 - b.1.1))).map(|(k, _)| *k);
            if let Some(k) = worst {
                self.partners.remove(&k);
            }
        }
        let e = self.partners.entry(partner).or_default();
        e.0 += good;
        e.1 += bad;
        self.changed = true;
    }
}

impl Experience {
    /// Experience that starts with the operator's vouches.
    pub fn with_vouches(vouched: Vec<NodeId>) -> Experience {
        let e = Experience::default();
        if let Ok(mut t) = e.0.lock() {
            t.changed = !vouched.is_empty();
            t.vouched = vouched;
        }
        e
    }

    /// Makes the next [`Experience::vector`] give the vector again (the last one was not taken).
    pub fn retry(&self) {
        if let Ok(mut t) = self.0.lock() {
            t.changed = true;
        }
    }

    /// A satisfactory transaction with `partner`, of weight `w` (≥ 0; 1 is one round).
    pub fn good(&self, partner: NodeId, w: f64) {
        if w.is_finite()
            && w > 0.0
            && let Ok(mut t) = self.0.lock()
        {
            t.add(partner, w, 0.0);
        }
    }

    /// An unsatisfactory one.
    pub fn bad(&self, partner: NodeId, w: f64) {
        if w.is_finite()
            && w > 0.0
            && let Ok(mut t) = self.0.lock()
        {
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
        for o in observations {
            match o.what {
                Observed::ChallengePassed => self.good(o.subject, 1.0),
                Observed::ChallengeFailed => self.bad(o.subject, 1.0),
                Observed::Anomaly { z } if z.abs() >= anomaly_z => self.bad(o.subject, 2.0),
                Observed::Feedback { score } if score.is_finite() => {
                    let agreement = 2.0 * score.clamp(0.0, 1.0) - 1.0;
                    if agreement > 0.0 {
                        self.good(o.subject, agreement);
                    } else {
                        self.bad(o.subject, -agreement);
                    }
                }
                _ => {}
            }
        }
    }

    /// The local-trust vector to sign when anything changed since the last one: the `max`
    /// partners with the most net experience (max(good − bad, 0), vouches added), in key order,
    /// normalised to sum 1, never `me`. `None` when nothing changed or nobody is trusted.
    pub fn vector(&self, me: &NodeId, max: usize) -> Option<Vec<(NodeId, f64)>> {
        let mut t = self.0.lock().ok()?;
        if !t.changed {
            return None;
        }
        t.changed = false;
        t.decay(Instant::now());
        let mut net: BTreeMap<NodeId, f64> =
            t.partners.iter().map(|(k, (good, bad))| (*k, (good - bad).max(0.0))).collect();
        for k in &t.vouched {
            *net.entry(*k).or_default() += VOUCH;
        }
        let mut ranked: Vec<(NodeId, f64)> = net.into_iter().filter(|(k, w)| k != me && *w > 0.0).collect();
        // The strongest first (ties: the smaller key), then back into key order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(max);
        ranked.sort_by_key(|e| e.0);
        let sum: f64 = ranked.iter().map(|(_, w)| w).sum();
        if ranked.is_empty() || sum.is_nan() || sum <= 0.0 {
            return None;
        }
        Some(ranked.into_iter().map(|(k, w)| (k, w / sum)).collect())
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
        // Disagreement counts against: a sign-flipped update cancels an honest round.
        e.witnessed(&[seen(honest, Observed::Feedback { score: 0.2 })], 3.5);
        let v = e.vector(&id(0), 8).expect("vector");
        assert_eq!(v, vec![(prover, 1.0)]);
    }

    #[test]
    fn only_the_strongest_partners_are_kept_and_vouches_always_count() {
        let e = Experience::with_vouches(vec![id(9)]);
        assert_eq!(e.vector(&id(0), 4), Some(vec![(id(9), 1.0)]), "the vouch alone");
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
    fn experience_fades_with_its_half_life() {
        let e = Experience::default();
        e.good(id(1), 4.0);
        e.bad(id(2), 1.0);
        {
            let mut t = e.0.lock().expect("lock");
            let later = t.at + HALF_LIFE;
            t.decay(later);
            assert!((t.partners[&id(1)].0 - 2.0).abs() < 1e-9);
            assert!((t.partners[&id(2)].1 - 0.5).abs() < 1e-9);
        }
    }
}
