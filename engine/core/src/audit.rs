//! Audits: any node may ask for one; the team is drawn among higher tiers by a choice anyone can
//! recompute from a public seed (e.g. the last round's digest), and the team's majority decides.
//!
//! Candidate c ranks by BLAKE3(`vain/audit-team/v1` ‖ seed ‖ subject ‖ c); the `size` lowest
//! ranks form the team. Nobody chooses the team, and nobody can grind it without controlling the
//! seed. A verdict needs more than half of the *team* (not of those who answered): colluders
//! below a team majority can neither pass a bad node nor fail a good one; silence fails nothing
//! and passes nothing.

use crate::NodeId;
use crate::signed::Body;

/// The audit team for `subject`: the `size` best-ranked candidates with a tier above
/// `subject_tier` (the subject itself excluded).
pub fn team(
    seed: &[u8; 32],
    subject: &NodeId,
    subject_tier: u8,
    candidates: &[(NodeId, u8)],
    size: usize,
) -> Vec<NodeId> {
    let mut ranked: Vec<([u8; 32], NodeId)> = candidates
        .iter()
        .filter(|(id, tier)| *tier > subject_tier && id != subject)
        .map(|(id, _)| {
            let mut h = blake3::Hasher::new();
            h.update(b"vain/audit-team/v1");
            h.update(seed);
            h.update(subject);
            h.update(id);
            (*h.finalize().as_bytes(), *id)
        })
        .collect();
    ranked.sort_unstable();
    ranked.into_iter().take(size).map(|(_, id)| id).collect()
}

/// One auditor's signed verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Audit identity (digest of the request).
    pub audit: [u8; 32],
    /// The audited node.
    pub subject: NodeId,
    /// Whether the re-executed sample matched.
    pub pass: bool,
}

impl Body for Verdict {
    const TAG: &'static [u8] = b"vain/audit-verdict/v1";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.audit);
        out.extend_from_slice(&self.subject);
        out.push(u8::from(self.pass));
    }
}

/// The team's decision from its members' verdicts: `Some(true)` when passes are more than half
/// the team, `Some(false)` when fails are, `None` otherwise.
pub fn decide(team_size: usize, passes: usize, fails: usize) -> Option<bool> {
    if 2 * passes > team_size {
        Some(true)
    } else if 2 * fails > team_size {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_is_deterministic_higher_tier_and_seed_dependent() {
        let cands: Vec<(NodeId, u8)> = (0..40u8).map(|i| ([i; 32], 1 + i % 3)).collect();
        let subject = [5u8; 32];
        let a = team(&[1; 32], &subject, 1, &cands, 5);
        assert_eq!(a, team(&[1; 32], &subject, 1, &cands, 5));
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|id| cands.iter().any(|(c, t)| c == id && *t > 1)));
        assert_ne!(a, team(&[2; 32], &subject, 1, &cands, 5));
        assert!(team(&[1; 32], &subject, 3, &cands, 5).is_empty());
    }

    #[test]
    fn majority_of_the_team_decides() {
        assert_eq!(decide(5, 3, 0), Some(true));
        assert_eq!(decide(5, 2, 2), None);
        assert_eq!(decide(5, 2, 3), Some(false));
        assert_eq!(decide(4, 2, 2), None);
    }
}
