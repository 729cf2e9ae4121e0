//! Resource challenges: "multiply these two n × n matrices before the deadline".
//!
//! The matrices come from a seed, so the challenge is a few bytes; the prover does n³ work; the
//! verifier checks the answer C with Freivalds' algorithm — A(Br) = Cr for random vectors r —
//! in O(k·n²). Arithmetic is on u32 with wrapping (the ring ℤ/2³²), exact and identical on every
//! machine; with r drawn from {0, 1}ⁿ a wrong C passes one round with probability ≤ 1/2, so k
//! rounds leave ≤ 2⁻ᵏ. The size is picked from the claimed capacity so that an honest node
//! answers well within the deadline and a node overstating its capacity cannot.

use crate::Time;

/// One challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// Matrix size.
    pub n: u32,
    /// Seed of A and B.
    pub seed: u64,
    /// When it was sent.
    pub issued: Time,
    /// Answers after this are late.
    pub deadline: Time,
}

/// The n for a node claiming `ops_per_ms` multiply-adds per millisecond to finish in about half
/// of `budget` ms: n³ = ops · budget / 2, bounded to [16, 4096].
pub fn size_for(ops_per_ms: f64, budget: Time) -> u32 {
    let n = (ops_per_ms.max(0.0) * budget as f64 / 2.0).cbrt();
    (n as u32).clamp(16, 4096)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A and B (row-major) of a challenge.
pub fn matrices(ch: &Challenge) -> (Vec<u32>, Vec<u32>) {
    let n = ch.n as usize;
    let mut s = ch.seed;
    let a = (0..n * n).map(|_| splitmix(&mut s) as u32).collect();
    let b = (0..n * n).map(|_| splitmix(&mut s) as u32).collect();
    (a, b)
}

/// The honest answer C = A·B (what a prover computes; O(n³)).
pub fn solve(ch: &Challenge) -> Vec<u32> {
    let n = ch.n as usize;
    let (a, b) = matrices(ch);
    let mut c = vec![0u32; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] = c[i * n + j].wrapping_add(aik.wrapping_mul(b[k * n + j]));
            }
        }
    }
    c
}

fn mat_vec(m: &[u32], n: usize, v: &[u32]) -> Vec<u32> {
    (0..n)
        .map(|i| m[i * n..(i + 1) * n].iter().zip(v).fold(0u32, |s, (x, y)| s.wrapping_add(x.wrapping_mul(*y))))
        .collect()
}

/// Freivalds' check of `answer` with `rounds` random vectors from `verifier_seed` (secret to the
/// verifier, so the prover cannot aim at them).
pub fn verify(ch: &Challenge, answer: &[u32], rounds: u32, verifier_seed: u64) -> bool {
    let n = ch.n as usize;
    if answer.len() != n * n {
        return false;
    }
    let (a, b) = matrices(ch);
    let mut s = verifier_seed;
    (0..rounds).all(|_| {
        let r: Vec<u32> = (0..n).map(|_| (splitmix(&mut s) & 1) as u32).collect();
        mat_vec(&a, n, &mat_vec(&b, n, &r)) == mat_vec(answer, n, &r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_answers_pass_and_any_wrong_entry_fails() {
        let ch = Challenge { n: 24, seed: 42, issued: 0, deadline: 1000 };
        let c = solve(&ch);
        assert!(verify(&ch, &c, 20, 7));
        for (i, delta) in [(0usize, 1u32), (24 * 24 - 1, 5), (300, u32::MAX)] {
            let mut bad = c.clone();
            bad[i] = bad[i].wrapping_add(delta);
            assert!(!verify(&ch, &bad, 30, 99), "entry {i}");
        }
        assert!(!verify(&ch, &c[1..], 20, 7));
    }

    #[test]
    fn size_follows_the_claim() {
        assert_eq!(size_for(0.0, 1000), 16);
        assert!(size_for(1e9, 1000) == 4096);
        let small = size_for(1e4, 1000);
        let big = size_for(1e6, 1000);
        assert!(big > small, "{small} {big}");
    }
}
