//! The ledger parameters a passed `set_parameter` proposal may change, by name.
//!
//! Every ledger applies a passed change at the tick that tallies the proposal, so every node
//! changes it at the same point of the same history; the value is part of the ledger's state
//! (its digest, its snapshot). The genesis (pre-trusted nodes) and the score weights are not
//! governed: the first decides who may vote at all, the second would let one vote rewrite every
//! node's past standing at once.

use crate::ledger::Config;
use crate::{HOUR, Time};
use thiserror::Error;

/// Why a parameter change is refused (at proposal time, and again at the tally).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// No governable parameter has this name.
    #[error("no parameter {name:?} (see docs/protocol.md, governance)")]
    Unknown {
        /// The name given.
        name: String,
    },
    /// The value is outside the parameter's range (or not a whole number where one is needed).
    #[error("{name} must be {expected}, not {value}")]
    Range {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// The tier entry thresholds would no longer rise from one tier to the next.
    #[error("tier entry thresholds must rise with the tier: {name} = {value} would break that")]
    Order {
        /// The threshold.
        name: &'static str,
        /// The value given.
        value: f64,
    },
}

/// One governable parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name in proposals.
    pub name: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// Its range, both ends included …
    pub min: f64,
    /// … up to here.
    pub max: f64,
    /// Whether only whole numbers are taken.
    pub integer: bool,
}

const fn p(name: &'static str, min: f64, max: f64, integer: bool, doc: &'static str) -> Param {
    Param { name, doc, min, max, integer }
}

/// Every governable parameter. The tiers that may report, vote and aggregate stop at 3, so a
/// passed change cannot hand them to a tier nobody reaches (tier 4 needs a score of 0.85) and
/// leave the network without reporters or voters to change it back; the EigenTrust damping keeps
/// some weight on the pre-trusted nodes, which anchor trust against Sybil rings.
pub const PARAMS: &[Param] = &[
    p("tier.enter.2", 0.01, 1.0, false, "score a node needs to enter tier 2"),
    p("tier.enter.3", 0.01, 1.0, false, "score a node needs to enter tier 3"),
    p("tier.enter.4", 0.01, 1.0, false, "score a node needs to enter tier 4"),
    p("tier.hysteresis", 0.0, 0.5, false, "how far below a threshold a node must fall to leave the tier"),
    p("tier.min_time_in_tier_h", 0.0, 720.0, false, "hours in a tier before the next promotion"),
    p("tier.report_from", 1.0, 3.0, true, "lowest tier that may report evidence and testify"),
    p("vote_from", 1.0, 3.0, true, "lowest tier that may propose and vote"),
    p(
        "aggregate_from",
        1.0,
        3.0,
        true,
        "lowest tier that may aggregate a model's rounds (pre-trusted nodes may always)",
    ),
    p("quorum", 0.01, 1.0, false, "share of the eligible voting weight that must vote"),
    p("trust_alpha", 0.05, 1.0, false, "EigenTrust damping towards the pre-trusted nodes"),
    p("half_life_h", 1.0, 8760.0, false, "half-life of evidence and penalties, in hours"),
    p("penalties.anomaly", 0.0, 10.0, false, "penalty points per anomalous update"),
    p("penalties.anomaly_z", 0.5, 100.0, false, "anomaly score from which an update counts as anomalous"),
    p("penalties.failed_challenge", 0.0, 10.0, false, "penalty points per failed resource challenge"),
    p("penalties.failed_audit", 0.0, 10.0, false, "penalty points per failed audit"),
    p("penalties.equivocation", 0.0, 10.0, false, "penalty points per proven equivocation"),
    p("penalties.suspend_at", 0.1, 100.0, false, "penalty points at which a node is suspended"),
    p("penalties.suspend_for_h", 1.0, 8760.0, false, "hours a suspension lasts"),
    p("penalties.ban_after", 1.0, 100.0, true, "suspensions after which a node is banned"),
    p("audit_team", 1.0, 64.0, true, "auditors drawn per audit"),
];

fn hours(t: Time) -> f64 {
    t as f64 / HOUR as f64
}

fn from_hours(h: f64) -> Time {
    (h * HOUR as f64).round() as Time
}

impl Config {
    /// A governable parameter's value (None for an unknown name, or a tier this network's
    /// thresholds do not have).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "tier.enter.2" | "tier.enter.3" | "tier.enter.4" => {
                let k = usize::from(name.as_bytes()[name.len() - 1] - b'2');
                *self.tiers.enter.get(k)?
            }
            "tier.hysteresis" => self.tiers.hysteresis,
            "tier.min_time_in_tier_h" => hours(self.tiers.min_time_in_tier),
            "tier.report_from" => f64::from(self.tiers.report_from),
            "vote_from" => f64::from(self.vote_from),
            "aggregate_from" => f64::from(self.aggregate_from),
            "quorum" => self.quorum,
            "trust_alpha" => self.trust_alpha,
            "half_life_h" => hours(self.half_life),
            "penalties.anomaly" => self.penalties.anomaly,
            "penalties.anomaly_z" => self.penalties.anomaly_z,
            "penalties.failed_challenge" => self.penalties.failed_challenge,
            "penalties.failed_audit" => self.penalties.failed_audit,
            "penalties.equivocation" => self.penalties.equivocation,
            "penalties.suspend_at" => self.penalties.suspend_at,
            "penalties.suspend_for_h" => hours(self.penalties.suspend_for),
            "penalties.ban_after" => f64::from(self.penalties.ban_after),
            "audit_team" => self.audit_team as f64,
            _ => return None,
        })
    }

    /// Every governable parameter this configuration has, with its value, in [`PARAMS`] order.
    pub fn parameters(&self) -> Vec<(&'static str, f64)> {
        PARAMS.iter().filter_map(|p| Some((p.name, self.get(p.name)?))).collect()
    }

    /// Sets a governable parameter, checked first: its range, whole numbers where needed, tier
    /// thresholds that still rise with the tier. Nothing changes on an error.
    pub fn set(&mut self, name: &str, value: f64) -> Result<(), Error> {
        let param = PARAMS.iter().find(|p| p.name == name).ok_or_else(|| Error::Unknown { name: name.to_string() })?;
        let name = param.name;
        self.get(name).ok_or_else(|| Error::Unknown { name: name.to_string() })?;
        if !(value.is_finite() && value >= param.min && value <= param.max) {
            return Err(Error::Range { name, value, expected: range_text(param) });
        }
        if param.integer && value.fract() != 0.0 {
            return Err(Error::Range { name, value, expected: "a whole number" });
        }
        let tiers = self.tiers.enter.len() as f64 + 1.0;
        if matches!(name, "tier.report_from" | "vote_from" | "aggregate_from") && value > tiers {
            return Err(Error::Range { name, value, expected: "a tier this network has" });
        }
        // Whole numbers in range: the casts below are exact.
        match name {
            "tier.enter.2" | "tier.enter.3" | "tier.enter.4" => {
                let k = usize::from(name.as_bytes()[name.len() - 1] - b'2');
                let below = k.checked_sub(1).and_then(|i| self.tiers.enter.get(i)).copied();
                let above = self.tiers.enter.get(k + 1).copied();
                if below.is_some_and(|b| value <= b) || above.is_some_and(|a| value >= a) {
                    return Err(Error::Order { name, value });
                }
                self.tiers.enter[k] = value;
            }
            "tier.hysteresis" => self.tiers.hysteresis = value,
            "tier.min_time_in_tier_h" => self.tiers.min_time_in_tier = from_hours(value),
            "tier.report_from" => self.tiers.report_from = value as u8,
            "vote_from" => self.vote_from = value as u8,
            "aggregate_from" => self.aggregate_from = value as u8,
            "quorum" => self.quorum = value,
            "trust_alpha" => self.trust_alpha = value,
            "half_life_h" => self.half_life = from_hours(value),
            "penalties.anomaly" => self.penalties.anomaly = value,
            "penalties.anomaly_z" => self.penalties.anomaly_z = value,
            "penalties.failed_challenge" => self.penalties.failed_challenge = value,
            "penalties.failed_audit" => self.penalties.failed_audit = value,
            "penalties.equivocation" => self.penalties.equivocation = value,
            "penalties.suspend_at" => self.penalties.suspend_at = value,
            "penalties.suspend_for_h" => self.penalties.suspend_for = from_hours(value),
            "penalties.ban_after" => self.penalties.ban_after = value as u32,
            "audit_team" => self.audit_team = value as usize,
            _ => return Err(Error::Unknown { name: name.to_string() }),
        }
        Ok(())
    }
}

fn range_text(p: &Param) -> &'static str {
    // The ranges of PARAMS, spelled out for the error (no allocation for a refused value).
    match (p.min, p.max, p.integer) {
        (_, _, true) if p.max <= 3.0 => "a tier from 1 to 3",
        (_, _, true) => "a whole number in range (see docs/protocol.md, governance)",
        (min, max, false) if min == 0.01 && max == 1.0 => "above 0 and at most 1",
        (min, max, false) if min == 0.05 && max == 1.0 => "from 0.05 to 1",
        _ => "in range (see docs/protocol.md, governance)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_reads_back_what_was_set() {
        for p in PARAMS {
            let mut c = Config::default();
            let v = if p.integer { p.min } else { c.get(p.name).expect("known") * 0.999 };
            c.set(p.name, v).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            let back = c.get(p.name).expect("known");
            assert!((back - v).abs() < 1e-6, "{}: set {v}, read {back}", p.name);
            assert_eq!(c.parameters().len(), PARAMS.len());
        }
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        let mut c = Config::default();
        let before = c.parameters();
        assert_eq!(c.set("nope", 1.0), Err(Error::Unknown { name: "nope".into() }));
        assert!(matches!(c.set("quorum", 0.0), Err(Error::Range { name: "quorum", .. })));
        assert!(matches!(c.set("quorum", f64::NAN), Err(Error::Range { .. })));
        assert!(matches!(c.set("vote_from", 2.5), Err(Error::Range { expected: "a whole number", .. })));
        assert!(matches!(c.set("audit_team", 0.0), Err(Error::Range { .. })));
        // Thresholds 0.45, 0.70, 0.85: tier 3's must stay between its neighbours.
        assert_eq!(c.set("tier.enter.3", 0.40), Err(Error::Order { name: "tier.enter.3", value: 0.40 }));
        assert_eq!(c.set("tier.enter.3", 0.90), Err(Error::Order { name: "tier.enter.3", value: 0.90 }));
        assert_eq!(c.parameters(), before);
        c.set("tier.enter.3", 0.60).expect("between its neighbours");
        assert_eq!(c.tiers.enter, vec![0.45, 0.60, 0.85]);
        c.set("penalties.suspend_for_h", 2.0).expect("hours");
        assert_eq!(c.penalties.suspend_for, 2 * HOUR);
    }
}
