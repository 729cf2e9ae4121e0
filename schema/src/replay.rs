//! Rejects a `DeltaEnvelope` whose (sender, round, nonce) was already accepted.
//!
//! The guard keeps a bounded window of recent rounds; envelopes for rounds older than the window
//! are refused outright (their nonces are forgotten), so memory stays bounded by
//! `window × per_round_capacity` entries.

use crate::{Error, PublicKey};
use std::collections::{BTreeMap, HashSet};

/// Bounded replay check over a sliding window of rounds.
#[derive(Debug)]
pub struct Guard {
    window: u64,
    per_round: usize,
    rounds: BTreeMap<u64, HashSet<(PublicKey, [u8; 16])>>,
}

impl Guard {
    /// Tracks the newest `window` rounds (at least 1), at most `per_round` envelopes each.
    pub fn new(window: u64, per_round: usize) -> Self {
        Self { window: window.max(1), per_round, rounds: BTreeMap::new() }
    }

    fn newest(&self) -> Option<u64> {
        self.rounds.keys().next_back().copied()
    }

    /// Records the triple, or fails with [`Error::Replay`] if it was seen, [`Error::StaleRound`] if
    /// the round fell out of the window, or [`Error::ReplayTableFull`] if the round is full.
    pub fn check(&mut self, sender: &PublicKey, round: u64, nonce: &[u8; 16]) -> Result<(), Error> {
        let newest = self.newest().map_or(round, |n| n.max(round));
        let oldest = newest.saturating_sub(self.window - 1);
        if round < oldest {
            return Err(Error::StaleRound { round, oldest, newest });
        }
        // Forget rounds that slid out of the window before adding to a new one.
        while let Some((&r, _)) = self.rounds.first_key_value() {
            if r >= oldest {
                break;
            }
            self.rounds.remove(&r);
        }
        let set = self.rounds.entry(round).or_default();
        if set.contains(&(*sender, *nonce)) {
            return Err(Error::Replay { round });
        }
        if set.len() >= self.per_round {
            return Err(Error::ReplayTableFull { round, capacity: self.per_round });
        }
        set.insert((*sender, *nonce));
        Ok(())
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.rounds.values().map(HashSet::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_nonce_in_same_round_is_rejected() {
        let mut g = Guard::new(4, 100);
        let k = [7u8; 32];
        g.check(&k, 10, &[1; 16]).expect("first");
        assert!(matches!(g.check(&k, 10, &[1; 16]), Err(Error::Replay { round: 10 })));
        g.check(&k, 10, &[2; 16]).expect("new nonce");
        g.check(&[8u8; 32], 10, &[1; 16]).expect("other sender");
        g.check(&k, 11, &[1; 16]).expect("next round");
        assert_eq!(g.len(), 4);
    }

    #[test]
    fn old_rounds_slide_out_and_are_refused() {
        let mut g = Guard::new(2, 100);
        let k = [7u8; 32];
        g.check(&k, 1, &[1; 16]).expect("r1");
        g.check(&k, 5, &[1; 16]).expect("r5");
        assert_eq!(g.len(), 1, "round 1 forgotten");
        assert!(matches!(g.check(&k, 1, &[1; 16]), Err(Error::StaleRound { round: 1, oldest: 4, newest: 5 })));
        g.check(&k, 4, &[1; 16]).expect("r4 in window");
    }

    #[test]
    fn per_round_capacity_is_enforced() {
        let mut g = Guard::new(1, 2);
        g.check(&[1; 32], 0, &[0; 16]).expect("1");
        g.check(&[2; 32], 0, &[0; 16]).expect("2");
        assert!(matches!(g.check(&[3; 32], 0, &[0; 16]), Err(Error::ReplayTableFull { round: 0, capacity: 2 })));
    }
}
