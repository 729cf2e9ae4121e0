//! Governance: proposals, signed votes inside a voting window, quorum, and a > 2/3 commit rule.
//!
//! Byzantine assumption: less than 1/3 of the voting weight is faulty. A proposal commits only
//! when the weight that voted reaches the quorum (a fraction of all eligible weight) and the yes
//! weight is more than 2/3 of the weight that voted, so faulty voters alone can neither pass nor,
//! when honest voters agree, block it. Two different votes by one key on one proposal are
//! equivocation: both are discarded and the pair is kept as evidence.

use crate::signed::{Body, Signed, put_bytes, put_f64, put_u64};
use crate::{NodeId, Time};
use std::collections::BTreeMap;

pub use archived_enums::{Kind, WeightMode};

// rkyv derives helper types for enum variants with fields that carry no docs; the lint is off
// only here (the types themselves are documented).
#[allow(missing_docs)]
mod archived_enums {
    use crate::NodeId;

    /// What a proposal would do.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    #[rkyv(attr(allow(missing_docs)))]
    #[derive(Debug, Clone, PartialEq)]
    pub enum Kind {
        /// Set a named protocol parameter.
        SetParameter {
            /// Parameter name.
            name: String,
            /// New value.
            value: f64,
        },
        /// Ban a node.
        Ban {
            /// The node.
            node: NodeId,
        },
        /// Lift a ban.
        Unban {
            /// The node.
            node: NodeId,
        },
        /// Adopt a software or protocol version.
        Upgrade {
            /// Version string.
            version: String,
        },
    }

    /// How voting weight is computed.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    #[rkyv(attr(allow(missing_docs)))]
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum WeightMode {
        /// Tier k = k votes.
        Tier,
        /// Bonded stake.
        Stake,
        /// `tier_share` × (tier votes / all tier votes) + (1 − tier_share) × (stake / all stake),
        /// each side normalised over the eligible voters so neither unit dominates by scale.
        Combined {
            /// Share of the tier side, in [0, 1].
            tier_share: f64,
        },
    }
}

/// A proposal, signed by its proposer.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// What it does.
    pub kind: Kind,
    /// Votes count from here …
    pub opens: Time,
    /// … until here (exclusive); the tally happens at `closes`.
    pub closes: Time,
    /// Distinguishes otherwise equal proposals.
    pub nonce: u64,
}

impl Body for Proposal {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/proposal/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        match &self.kind {
            Kind::SetParameter { name, value } => {
                out.push(0);
                put_bytes(out, name.as_bytes());
                put_f64(out, *value);
            }
            Kind::Ban { node } => {
                out.push(1);
                out.extend_from_slice(node);
            }
            Kind::Unban { node } => {
                out.push(2);
                out.extend_from_slice(node);
            }
            Kind::Upgrade { version } => {
                out.push(3);
                put_bytes(out, version.as_bytes());
            }
        }
        put_u64(out, self.opens);
        put_u64(out, self.closes);
        put_u64(out, self.nonce);
    }
}

/// A proposal's identity: the digest of the signed proposal.
pub type ProposalId = [u8; 32];

/// A voter's choice.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// For.
    Yes,
    /// Against.
    No,
    /// Counts towards quorum only.
    Abstain,
}

/// A vote on one proposal.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The proposal.
    pub proposal: ProposalId,
    /// The choice.
    pub choice: Choice,
}

impl Body for Vote {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/vote/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.proposal);
        out.push(match self.choice {
            Choice::Yes => 0,
            Choice::No => 1,
            Choice::Abstain => 2,
        });
    }
}

/// Result of a closed proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Quorum reached and yes > 2/3 of the weight that voted.
    Passed,
    /// Quorum reached, not enough yes.
    Rejected,
    /// Too little weight voted.
    NoQuorum,
}

/// Two conflicting signed votes by one key: proof of equivocation.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, PartialEq)]
pub struct Equivocation {
    /// The first vote seen.
    pub first: Signed<Vote>,
    /// The conflicting one.
    pub second: Signed<Vote>,
}

/// Votes received for one open proposal.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(allow(missing_docs)))]
#[derive(Debug, Clone, Default)]
pub struct Ballot {
    votes: BTreeMap<NodeId, Signed<Vote>>,
    equivocators: BTreeMap<NodeId, Equivocation>,
}

impl Ballot {
    /// Records a (verified) vote. Returns the equivocation when this vote conflicts with an
    /// earlier one by the same key; a repeat of the same vote is ignored.
    pub fn record(&mut self, vote: Signed<Vote>) -> Option<Equivocation> {
        if self.equivocators.contains_key(&vote.signer) {
            return None;
        }
        match self.votes.get(&vote.signer) {
            Some(first) if first.body.choice != vote.body.choice => {
                let first = first.clone();
                self.votes.remove(&vote.signer);
                let e = Equivocation { first, second: vote };
                self.equivocators.insert(e.second.signer, e.clone());
                Some(e)
            }
            Some(_) => None,
            None => {
                self.votes.insert(vote.signer, vote);
                None
            }
        }
    }

    /// Tallies with `weight(voter)`; `eligible` is the total weight of all who could vote.
    pub fn tally(&self, weight: impl Fn(&NodeId) -> f64, eligible: f64, quorum: f64) -> (Outcome, Tally) {
        let mut t = Tally { eligible, ..Tally::default() };
        for (who, v) in &self.votes {
            let w = weight(who);
            match v.body.choice {
                Choice::Yes => t.yes += w,
                Choice::No => t.no += w,
                Choice::Abstain => t.abstain += w,
            }
        }
        let voted = t.yes + t.no + t.abstain;
        let outcome = if eligible <= 0.0 || voted < quorum * eligible {
            Outcome::NoQuorum
        } else if t.yes * 3.0 > 2.0 * voted {
            Outcome::Passed
        } else {
            Outcome::Rejected
        };
        (outcome, t)
    }

    /// Who voted (equivocators excluded).
    pub fn voters(&self) -> impl Iterator<Item = &NodeId> {
        self.votes.keys()
    }

    /// Each voter's choice (equivocators excluded).
    pub fn choices(&self) -> impl Iterator<Item = (&NodeId, Choice)> {
        self.votes.iter().map(|(k, v)| (k, v.body.choice))
    }
}

/// Weights of a closed tally.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    /// Yes weight.
    pub yes: f64,
    /// No weight.
    pub no: f64,
    /// Abstain weight.
    pub abstain: f64,
    /// All eligible weight.
    pub eligible: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    #[test]
    fn two_thirds_rule_and_quorum() {
        let id = [9u8; 32];
        let mut b = Ballot::default();
        // 7 yes, 3 no of 10 equal weights: 70 % > 2/3 passes.
        for i in 0..10u8 {
            let choice = if i < 7 { Choice::Yes } else { Choice::No };
            assert!(b.record(Signed::sign(&key(i + 1), Vote { proposal: id, choice })).is_none());
        }
        assert_eq!(b.tally(|_| 1.0, 10.0, 0.5).0, Outcome::Passed);
        // With 6 yes / 4 no it fails.
        let mut b2 = Ballot::default();
        for i in 0..10u8 {
            let choice = if i < 6 { Choice::Yes } else { Choice::No };
            b2.record(Signed::sign(&key(i + 1), Vote { proposal: id, choice }));
        }
        assert_eq!(b2.tally(|_| 1.0, 10.0, 0.5).0, Outcome::Rejected);
        assert_eq!(b2.tally(|_| 1.0, 30.0, 0.5).0, Outcome::NoQuorum);
    }

    #[test]
    fn equivocation_is_detected_once_and_voids_the_vote() {
        let id = [1u8; 32];
        let mut b = Ballot::default();
        let k = key(3);
        assert!(b.record(Signed::sign(&k, Vote { proposal: id, choice: Choice::Yes })).is_none());
        assert!(b.record(Signed::sign(&k, Vote { proposal: id, choice: Choice::Yes })).is_none(), "repeat is fine");
        let e = b.record(Signed::sign(&k, Vote { proposal: id, choice: Choice::No })).expect("equivocation");
        assert_eq!(e.first.body.choice, Choice::Yes);
        assert!(b.record(Signed::sign(&k, Vote { proposal: id, choice: Choice::Yes })).is_none());
        assert_eq!(b.voters().count(), 0);
    }
}
