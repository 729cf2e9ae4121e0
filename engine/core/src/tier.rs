//! Tiers: Tier 1 ("initiate") for new nodes, higher tiers by score, with hysteresis so a node
//! near a threshold does not flap, and a minimum time in a tier before it is promoted again.

use crate::Time;

/// Tier thresholds and their stickiness.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `enter[k]` is the score needed to enter tier k + 2 (tier 1 needs nothing), increasing.
    pub enter: Vec<f64>,
    /// A node leaves tier k + 2 only below `enter[k] − hysteresis`.
    pub hysteresis: f64,
    /// Time a node must spend in a tier before a promotion (demotions are immediate).
    pub min_time_in_tier: Time,
    /// Lowest tier that relays announcements.
    pub relay_from: u8,
    /// Lowest tier that may report evidence and audit lower tiers.
    pub report_from: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enter: vec![0.45, 0.70, 0.85],
            hysteresis: 0.05,
            min_time_in_tier: 6 * crate::HOUR,
            relay_from: 2,
            report_from: 2,
        }
    }
}

impl Config {
    /// The highest tier whose entry threshold `score` meets.
    pub fn target(&self, score: f64) -> u8 {
        1 + self.enter.iter().take_while(|t| score >= **t).count() as u8
    }

    /// Scheduling priority of a tier's tasks (aggregation slots, challenge answers): higher
    /// tiers first, tier 0 (suspended/banned) never.
    pub fn task_priority(&self, tier: u8) -> u32 {
        u32::from(tier)
    }

    /// Votes of a tier by the default rule: tier k has k votes.
    pub fn votes(&self, tier: u8) -> f64 {
        f64::from(tier)
    }
}

/// A node's tier and since when it holds it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Current tier (1-based).
    pub tier: u8,
    /// When it entered this tier.
    pub since: Time,
}

impl State {
    /// A new node: tier 1 from `now`.
    pub fn new(now: Time) -> Self {
        Self { tier: 1, since: now }
    }

    /// Moves the tier for `score` at `now`; returns (from, to) when it changed.
    pub fn update(&mut self, cfg: &Config, score: f64, now: Time) -> Option<(u8, u8)> {
        let from = self.tier;
        let up = cfg.target(score);
        let to = if up > from {
            // One tier at a time, after the minimum stay.
            if now.saturating_sub(self.since) >= cfg.min_time_in_tier { from + 1 } else { from }
        } else {
            // Down to the highest tier whose threshold, lowered by the hysteresis, still holds.
            let keep = cfg.target(score + cfg.hysteresis);
            keep.min(from)
        };
        if to != from {
            self.tier = to;
            self.since = now;
            Some((from, to))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HOUR;

    #[test]
    fn promotion_waits_and_steps_demotion_has_hysteresis() {
        let cfg = Config::default();
        let mut s = State::new(0);
        assert_eq!(s.update(&cfg, 0.9, HOUR), None, "too early");
        assert_eq!(s.update(&cfg, 0.9, 6 * HOUR), Some((1, 2)));
        assert_eq!(s.update(&cfg, 0.9, 7 * HOUR), None, "one step per stay");
        assert_eq!(s.update(&cfg, 0.9, 12 * HOUR), Some((2, 3)));
        // Just under 0.70 is still tier 3 thanks to the hysteresis; well under drops.
        assert_eq!(s.update(&cfg, 0.67, 13 * HOUR), None);
        assert_eq!(s.update(&cfg, 0.60, 13 * HOUR), Some((3, 2)));
        assert_eq!(s.update(&cfg, 0.10, 13 * HOUR), Some((2, 1)));
    }
}
