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

/// Training work as a chain of deterministic steps, so that an auditor can re-execute a sample
/// of it: `state_{i+1} = state_i − lr·(A_i·state_i − b_i)` (a least-squares gradient step with
/// A_i, b_i drawn from (seed, i)), all in f32 with a fixed operation order, so every machine gets
/// the same bits. The worker publishes the digests of every state; an auditor asks for the states
/// at a few step indices drawn from a public seed, checks them against the digests, and
/// recomputes the next step. A worker that skipped a fraction φ of the steps (publishing made-up
/// digests) survives k sampled steps with probability (1 − φ)ᵏ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Seed of the step data.
    pub seed: u64,
    /// Number of steps.
    pub steps: u32,
    /// State width.
    pub width: usize,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(z: u64) -> f32 {
    // In [−0.5, 0.5), exactly representable.
    (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

impl Work {
    /// The initial state.
    pub fn start(&self) -> Vec<f32> {
        (0..self.width).map(|j| unit(mix(self.seed ^ (j as u64) << 1))).collect()
    }

    /// Step `i`: the next state from `state`.
    pub fn step(&self, i: u32, state: &[f32]) -> Vec<f32> {
        let w = self.width;
        let base = mix(self.seed ^ (u64::from(i) << 32));
        let lr = 0.1f32 / w as f32;
        (0..w)
            .map(|r| {
                let mut dot = 0f32;
                for (c, x) in state.iter().enumerate() {
                    dot += unit(mix(base ^ ((r * w + c) as u64))) * x;
                }
                let b = unit(mix(base ^ (u64::MAX - r as u64)));
                state[r] - lr * (dot - b)
            })
            .collect()
    }

    /// BLAKE3 of a state's bytes.
    pub fn digest(state: &[f32]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for x in state {
            h.update(&x.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// What an honest worker publishes: the digest of every state, `steps + 1` of them.
    pub fn commit(&self) -> Vec<[u8; 32]> {
        let mut s = self.start();
        let mut out = vec![Self::digest(&s)];
        for i in 0..self.steps {
            s = self.step(i, &s);
            out.push(Self::digest(&s));
        }
        out
    }

    /// The step indices an audit with public `seed` re-executes.
    pub fn sample(&self, seed: &[u8; 32], k: usize) -> Vec<u32> {
        let mut h = blake3::Hasher::new();
        h.update(b"vain/audit-sample/v1");
        h.update(seed);
        let mut x = h.finalize_xof();
        let mut out = Vec::with_capacity(k);
        let mut b = [0u8; 8];
        for _ in 0..k.min(self.steps as usize) {
            x.fill(&mut b);
            out.push((u64::from_le_bytes(b) % u64::from(self.steps.max(1))) as u32);
        }
        out
    }

    /// Checks one sampled step: `state` (given by the worker for step `i`) matches the
    /// published digest `i`, and re-executing it gives digest `i + 1`.
    pub fn check(&self, digests: &[[u8; 32]], i: u32, state: &[f32]) -> bool {
        let i = i as usize;
        state.len() == self.width
            && i + 1 < digests.len()
            && digests.len() == self.steps as usize + 1
            && Self::digest(state) == digests[i]
            && Self::digest(&self.step(i as u32, state)) == digests[i + 1]
    }
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
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/audit-verdict/v1");
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
    fn sampled_re_execution_passes_honest_work_and_catches_skipped_steps() {
        let work = Work { seed: 77, steps: 64, width: 24 };
        let digests = work.commit();
        let mut states = vec![work.start()];
        for i in 0..work.steps {
            let next = work.step(i, &states[i as usize]);
            states.push(next);
        }
        let seed = [4u8; 32];
        let sample = work.sample(&seed, 8);
        assert_eq!(sample.len(), 8);
        assert!(sample.iter().all(|&i| work.check(&digests, i, &states[i as usize])));
        // A cheater computes only the first half and makes up the rest of the states.
        let mut fake_states = states.clone();
        let mut fake = digests.clone();
        for i in 33..=64usize {
            fake_states[i] = vec![i as f32; 24];
            fake[i] = Work::digest(&fake_states[i]);
        }
        let caught = (0..50u8)
            .filter(|&a| {
                let s = work.sample(&[a; 32], 8);
                !s.iter().all(|&i| work.check(&fake, i, &fake_states[i as usize]))
            })
            .count();
        // Each audit catches it unless all 8 samples fall in the honest half: (33/64)^8 < 1 %.
        assert!(caught >= 45, "caught {caught} of 50");
        assert!(!work.check(&digests, 3, &states[4]), "the wrong state for a step fails");
    }

    #[test]
    fn majority_of_the_team_decides() {
        assert_eq!(decide(5, 3, 0), Some(true));
        assert_eq!(decide(5, 2, 2), None);
        assert_eq!(decide(5, 2, 3), Some(false));
        assert_eq!(decide(4, 2, 2), None);
    }
}
