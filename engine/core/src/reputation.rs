//! Reputation: evidence per source, decaying with a half-life, combined by configured weights.
//!
//! score = Σ_s w_s · mean_s + w_social · social − w_penalty · penalty, clamped to [0, 1], where
//! mean_s is the decayed mean of source s's observations (each in [0, 1]) shrunk towards 0 by
//! a prior weight (so a new node with one good observation is not yet trusted), social is the
//! node's EigenTrust score relative to the most trusted node, and penalty is the decayed sum of
//! penalty points. Only evidence from eligible reporters counts (see `ledger`); a node's claims
//! about itself never do.

use crate::Time;

/// The evidence sources that are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Verified resource contribution (challenges passed).
    Resource = 0,
    /// Round participation and uptime.
    Participation = 1,
    /// Audit verdicts and peer feedback.
    Audit = 2,
    /// Governance participation (voted on proposals it could vote on).
    Governance = 3,
}

/// Number of averaged sources.
pub const SOURCES: usize = 4;

/// Weights of the score formula (they need not sum to 1; the score is clamped).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Per averaged source, indexed by [`Source`].
    pub sources: [f64; SOURCES],
    /// EigenTrust term.
    pub social: f64,
    /// Per penalty point.
    pub penalty: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { sources: [0.25, 0.30, 0.15, 0.10], social: 0.20, penalty: 0.5 }
    }
}

/// An exponentially decaying sum and count: `mean` is the recent average, `sum` the recent total.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Decaying {
    value: f64,
    weight: f64,
    at: Time,
}

fn factor(dt: Time, half_life: Time) -> f64 {
    if half_life == 0 { 0.0 } else { (-(dt as f64) / half_life as f64 * std::f64::consts::LN_2).exp() }
}

impl Decaying {
    fn decay_to(&mut self, now: Time, half_life: Time) {
        if now > self.at {
            let f = factor(now - self.at, half_life);
            self.value *= f;
            self.weight *= f;
            self.at = now;
        }
    }

    /// Adds observation `x` at `now`.
    pub fn observe(&mut self, now: Time, x: f64, half_life: Time) {
        self.decay_to(now, half_life);
        self.value += x;
        self.weight += 1.0;
    }

    /// Decayed mean at `now`, shrunk towards 0 by `prior` pseudo-observations.
    pub fn mean(&self, now: Time, half_life: Time, prior: f64) -> f64 {
        let mut d = *self;
        d.decay_to(now, half_life);
        if d.weight + prior > 0.0 { d.value / (d.weight + prior) } else { 0.0 }
    }

    /// The stored fields' bits (for state digests).
    pub fn raw_bits(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.value.to_bits().to_le_bytes());
        b[8..16].copy_from_slice(&self.weight.to_bits().to_le_bytes());
        b[16..].copy_from_slice(&self.at.to_le_bytes());
        b
    }

    /// Decayed sum at `now`.
    pub fn sum(&self, now: Time, half_life: Time) -> f64 {
        let mut d = *self;
        d.decay_to(now, half_life);
        d.value
    }
}

/// The score from its parts (see the module doc).
pub fn score(w: &Weights, means: [f64; SOURCES], social: f64, penalty: f64) -> f64 {
    let s: f64 = w.sources.iter().zip(means).map(|(w, m)| w * m).sum::<f64>() + w.social * social - w.penalty * penalty;
    s.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HOUR;

    #[test]
    fn decay_halves_after_a_half_life() {
        let mut d = Decaying::default();
        d.observe(0, 1.0, HOUR);
        assert!((d.sum(HOUR, HOUR) - 0.5).abs() < 1e-12);
        assert!((d.mean(HOUR, HOUR, 0.0) - 1.0).abs() < 1e-12, "the mean of ones stays 1");
        d.observe(HOUR, 0.0, HOUR);
        assert!((d.mean(HOUR, HOUR, 0.0) - 0.5 / 1.5).abs() < 1e-12);
        assert!(d.mean(HOUR, HOUR, 3.0) < d.mean(HOUR, HOUR, 0.0), "the prior shrinks the mean");
    }

    #[test]
    fn score_is_clamped_and_penalised() {
        let w = Weights::default();
        assert_eq!(score(&w, [1.0; SOURCES], 1.0, 0.0), 1.0);
        assert_eq!(score(&w, [0.0; SOURCES], 0.0, 1.0), 0.0);
        let a = score(&w, [0.8; SOURCES], 0.5, 0.0);
        let b = score(&w, [0.8; SOURCES], 0.5, 0.2);
        assert!((a - b - 0.1).abs() < 1e-12);
    }
}
