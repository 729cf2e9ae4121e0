//! Resource challenges: "multiply these two matrices before the deadline".
//!
//! A is `rows × inner`, B is `inner × cols`, every entry drawn from the challenge's seed, so a
//! challenge is a few bytes. The prover does `rows · inner · cols` multiply-adds and answers
//! C = A·B, which is only `rows × cols`: the work grows with `inner`, the answer does not, so a
//! challenge sized to a large claimed capacity still fits one small message. The verifier
//! checks C with Freivalds' algorithm — A(Br) = Cr for a random vector r — in
//! O(inner · (rows + cols)), generating each column of A and row of B as it needs it (an entry
//! is a hash of its position), so it never holds A or B.
//!
//! Arithmetic is in the prime field GF(p), p = 2³¹ − 1: exact and identical on every machine,
//! and with r uniform in GF(p)^cols a wrong C passes one check with probability ≤ 1/p, so two
//! checks leave less than 2⁻⁶⁰. The size is picked from the claimed capacity so that an honest
//! node answers well within the deadline and a node overstating its capacity cannot.

use crate::signed::{Body, Signed};
use crate::{NodeId, Time};

/// The field's prime, 2³¹ − 1.
pub const P: u64 = (1 << 31) - 1;
/// Rows and columns of C in a challenge sized by [`sized`] (a 64 KiB answer).
pub const SIDE: u32 = 128;
/// Largest `rows` or `cols` a node answers: C is at most 1 MiB.
pub const MAX_SIDE: u32 = 512;
/// Largest `inner` a node answers.
pub const MAX_INNER: u32 = 1 << 24;
/// The shortest window (deadline − issued, ms) a node works on: a task any shorter could only
/// make an honest node give up, and its admission of that is no proof of anything (every ledger
/// refuses it, and a node refuses the task).
pub const MIN_WINDOW: Time = 1000;
/// Freivalds checks a verifier runs (each passes a wrong answer with probability ≤ 1/p).
pub const CHECKS: u32 = 2;
/// Multiply-adds per millisecond that one core is credited with when a node claims cores: about
/// an eighth of what [`solve`] does on one core of a current x86-64 server (docs/benchmarks.md),
/// so an honest node meets its deadlines with room to spare even on a loaded or older machine,
/// while one claiming many times its cores does not. The margin is also the limit of what a
/// challenge proves: a node overstating its cores by less than it is not caught.
pub const CORE_RATE: f64 = 500_000.0;

/// One challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// Rows of A and C.
    pub rows: u32,
    /// Columns of A, rows of B: the work.
    pub inner: u32,
    /// Columns of B and C.
    pub cols: u32,
    /// Seed of A and B.
    pub seed: u64,
    /// When it was sent (Unix ms on the challenger's clock).
    pub issued: Time,
    /// Answers after this are late.
    pub deadline: Time,
}

impl Challenge {
    /// Multiply-adds an honest answer takes.
    pub fn work(&self) -> u64 {
        u64::from(self.rows) * u64::from(self.inner) * u64::from(self.cols)
    }

    /// The time it allows, ms.
    pub fn window(&self) -> Time {
        self.deadline.saturating_sub(self.issued)
    }

    /// Whether the dimensions are within what a node answers (non-zero, at most
    /// [`MAX_SIDE`] × [`MAX_INNER`] × [`MAX_SIDE`]).
    pub fn in_bounds(&self) -> bool {
        (1..=MAX_SIDE).contains(&self.rows)
            && (1..=MAX_SIDE).contains(&self.cols)
            && (1..=MAX_INNER).contains(&self.inner)
    }
}

/// A challenge of [`SIDE`] × [`SIDE`] whose work takes a node doing `ops_per_ms` multiply-adds
/// per millisecond `share` of `budget` ms (`inner` bounded to [1, [`MAX_INNER`]]); the
/// deadline is `issued + budget`.
pub fn sized(ops_per_ms: f64, budget: Time, share: f64, seed: u64, issued: Time) -> Challenge {
    let per_inner = f64::from(SIDE) * f64::from(SIDE);
    let inner = (ops_per_ms.max(0.0) * budget as f64 * share.clamp(0.0, 1.0) / per_inner).ceil();
    let inner = if inner.is_finite() { (inner as u64).clamp(1, u64::from(MAX_INNER)) as u32 } else { MAX_INNER };
    Challenge { rows: SIDE, inner, cols: SIDE, seed, issued, deadline: issued.saturating_add(budget) }
}

/// A resource challenge a validator sends one node: the matrices, the deadline, whom it is for
/// (so that the answer speaks for that node's claimed capacity only), and the ledger epoch of the
/// testimony that may carry its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The challenged node's signing key.
    pub subject: NodeId,
    /// The validator's next ledger epoch when it set the task, plus two: a testimony for epoch
    /// T carries the outcomes of tasks labelled after the signer's last applied testimony and up
    /// to T (the ledger's rule, [`crate::ledger::testimony_checked`]), so each admission
    /// counts at most once.
    pub epoch: u64,
    /// What to compute, and by when.
    pub challenge: Challenge,
}

impl Body for Task {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/challenge/v3");
    fn encode(&self, out: &mut Vec<u8>) {
        let c = &self.challenge;
        out.extend_from_slice(&self.subject);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        for x in [c.rows, c.inner, c.cols] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for x in [c.seed, c.issued, c.deadline] {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// A node's admission, signed by the node, that it gave up a validator's [`Task`] at the
/// deadline: the evidence of a failed challenge that every ledger can check (two signatures),
/// so a testifier cannot claim a failure the node never admitted. A wrong or late answer
/// proves nothing to a third party and is testified as a timeout (no credit, no penalty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaveUp {
    /// The task, as the validator signed it.
    pub task: Signed<Task>,
}

impl Body for GaveUp {
    const TAG: vain_schema::sign::Tag = vain_schema::sign::Tag::new("vain/challenge-gave-up/v1");
    fn encode(&self, out: &mut Vec<u8>) {
        crate::codec::encode_signed(&self.task, out);
    }
}

impl Signed<GaveUp> {
    /// Whether this is `subject`'s admission to a task `validator` set it: both signatures
    /// verify, the admission is the subject's, the task was for the subject and signed by
    /// `validator`, within the bounds a node works on (dimensions, a window of at least
    /// [`MIN_WINDOW`]). Gives the task's epoch.
    pub fn admits(&self, validator: &NodeId) -> Result<u64, crate::ledger::Error> {
        use crate::ledger::Error;
        let task = &self.body.task;
        let c = &task.body.challenge;
        if task.signer != *validator || task.body.subject != self.signer || !c.in_bounds() || c.window() < MIN_WINDOW {
            return Err(Error::Unproven);
        }
        self.verify().map_err(Error::Signature)?;
        task.verify().map_err(Error::Signature)?;
        Ok(task.body.epoch)
    }
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Keys of column `k` of A and of row `k` of B.
fn keys(seed: u64, k: u32) -> (u64, u64) {
    let base = mix(seed ^ u64::from(k).wrapping_add(1).wrapping_mul(0xd1b5_4a32_d192_ed03));
    (mix(base ^ 0xa), mix(base ^ 0xb))
}

/// Entry `idx` of the stream `key`, in [0, p).
fn entry(key: u64, idx: u32) -> u32 {
    let v = mix(key.wrapping_add(u64::from(idx).wrapping_add(1).wrapping_mul(GOLDEN))) >> 33;
    if v == P { 0 } else { v as u32 }
}

/// A partial reduction that keeps a running sum below 2³³ when each step adds a product of two
/// field elements (< 2⁶²): (x mod 2³¹) + ⌊x / 2³¹⌋ ≡ x (mod p).
#[inline(always)]
fn fold(x: u64) -> u64 {
    (x & P) + (x >> 31)
}

fn reduce(x: u64) -> u32 {
    (x % P) as u32
}

/// A's column `k` over `rows`, B's row `k` (what both sides generate per inner index).
fn fill(ch: &Challenge, k: u32, rows: std::ops::Range<u32>, a: &mut Vec<u32>, b: &mut Vec<u32>) {
    let (ka, kb) = keys(ch.seed, k);
    a.clear();
    a.extend(rows.map(|i| entry(ka, i)));
    b.clear();
    b.extend((0..ch.cols).map(|j| entry(kb, j)));
}

fn solve_rows(ch: &Challenge, rows: std::ops::Range<u32>, until: Option<std::time::Instant>) -> Option<Vec<u32>> {
    let cols = ch.cols as usize;
    let mut c = vec![0u64; rows.len() * cols];
    let (mut a, mut b) = (Vec::with_capacity(rows.len()), Vec::with_capacity(cols));
    let started = std::time::Instant::now();
    for k in 0..ch.inner {
        if k % 256 == 0
            && let Some(u) = until
        {
            let now = std::time::Instant::now();
            // Past the deadline; or, an eighth of the time spent, on course to need four times
            // what it allows (far beyond a burst of load): the answer would be late, so the cores
            // are not spent on it.
            let (spent, window) = (now - started, u.saturating_duration_since(started));
            let hopeless =
                k > 0 && spent >= window / 8 && spent.mul_f64(f64::from(ch.inner) / f64::from(k)) > window * 4;
            if now >= u || hopeless {
                return None;
            }
        }
        fill(ch, k, rows.clone(), &mut a, &mut b);
        for (row, &ai) in c.chunks_exact_mut(cols).zip(&a) {
            let ai = u64::from(ai);
            for (x, &bj) in row.iter_mut().zip(&b) {
                *x = fold(*x + ai * u64::from(bj));
            }
        }
    }
    Some(c.into_iter().map(reduce).collect())
}

/// The honest answer C = A·B, row-major, every entry in [0, p), computed on `threads` threads
/// (split by rows).
pub fn solve(ch: &Challenge, threads: usize) -> Vec<u32> {
    solve_until(ch, threads, None).unwrap_or_default()
}

/// [`solve`], giving up (`None`) once `until` has passed: a node does not burn its cores on
/// an answer that would be late anyway.
pub fn solve_until(ch: &Challenge, threads: usize, until: Option<std::time::Instant>) -> Option<Vec<u32>> {
    let threads = threads.clamp(1, ch.rows.max(1) as usize) as u32;
    let per = ch.rows.div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                let rows = (t * per).min(ch.rows)..((t + 1) * per).min(ch.rows);
                s.spawn(move || solve_rows(ch, rows, until))
            })
            .collect();
        let mut out = Vec::with_capacity(ch.rows as usize * ch.cols as usize);
        for p in parts {
            out.extend(p.join().ok()??);
        }
        Some(out)
    })
}

/// Freivalds' check of `answer` with [`CHECKS`] random vectors from `verifier_seed` (secret to
/// the verifier, so the prover cannot aim at them). A wrong length or an entry outside [0, p)
/// fails.
pub fn verify(ch: &Challenge, answer: &[u32], verifier_seed: u64) -> bool {
    let (rows, cols) = (ch.rows as usize, ch.cols as usize);
    if answer.len() != rows * cols || answer.iter().any(|x| u64::from(*x) >= P) {
        return false;
    }
    let checks = CHECKS as usize;
    let rs: Vec<Vec<u64>> =
        (0..checks).map(|t| (0..ch.cols).map(|j| u64::from(entry(verifier_seed ^ t as u64, j))).collect()).collect();
    // Cr, per check.
    let cr: Vec<Vec<u32>> = rs
        .iter()
        .map(|r| {
            answer
                .chunks_exact(cols)
                .map(|row| reduce(row.iter().zip(r).fold(0, |s, (c, r)| fold(s + u64::from(*c) * r))))
                .collect()
        })
        .collect();
    // A(Br), streaming over the inner index.
    let mut y = vec![vec![0u64; rows]; checks];
    let (mut a, mut b) = (Vec::with_capacity(rows), Vec::with_capacity(cols));
    for k in 0..ch.inner {
        fill(ch, k, 0..ch.rows, &mut a, &mut b);
        for (r, y) in rs.iter().zip(y.iter_mut()) {
            let br = u64::from(reduce(b.iter().zip(r).fold(0, |s, (b, r)| fold(s + u64::from(*b) * r))));
            for (yi, &ai) in y.iter_mut().zip(&a) {
                *yi = fold(*yi + u64::from(ai) * br);
            }
        }
    }
    y.iter().zip(&cr).all(|(y, cr)| y.iter().map(|v| reduce(*v)).eq(cr.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(ch: &Challenge) -> Vec<u32> {
        let mut c = vec![0u32; (ch.rows * ch.cols) as usize];
        for k in 0..ch.inner {
            let (ka, kb) = keys(ch.seed, k);
            for i in 0..ch.rows {
                for j in 0..ch.cols {
                    let x = &mut c[(i * ch.cols + j) as usize];
                    let p = u64::from(entry(ka, i)) * u64::from(entry(kb, j)) % P;
                    *x = ((u64::from(*x) + p) % P) as u32;
                }
            }
        }
        c
    }

    #[test]
    fn solve_is_the_product_on_any_thread_count() {
        let ch = Challenge { rows: 7, inner: 300, cols: 5, seed: 42, issued: 0, deadline: 1000 };
        let want = naive(&ch);
        for threads in [1, 2, 3, 7, 16] {
            assert_eq!(solve(&ch, threads), want, "{threads} threads");
        }
        assert!(want.iter().all(|x| u64::from(*x) < P));
        let past = std::time::Instant::now();
        assert_eq!(solve_until(&ch, 2, Some(past)), None);
        let later = past + std::time::Duration::from_secs(60);
        assert_eq!(solve_until(&ch, 2, Some(later)), Some(want));
    }

    #[test]
    fn honest_answers_pass_and_any_wrong_entry_fails() {
        let ch = Challenge { rows: 24, inner: 50, cols: 16, seed: 42, issued: 0, deadline: 1000 };
        let c = solve(&ch, 2);
        assert!(verify(&ch, &c, 7));
        for (i, delta) in [(0usize, 1u32), (24 * 16 - 1, 5), (300, (P - 1) as u32)] {
            let mut bad = c.clone();
            bad[i] = ((u64::from(bad[i]) + u64::from(delta)) % P) as u32;
            assert!(!verify(&ch, &bad, 99), "entry {i}");
        }
        assert!(!verify(&ch, &c[1..], 7));
        // Non-canonical: the same residue written as x + p is not an answer.
        let mut big = c.clone();
        big[3] = (u64::from(big[3]) + P).min(u64::from(u32::MAX)) as u32;
        assert!(!verify(&ch, &big, 7));
        // The answer to another seed.
        assert!(!verify(&Challenge { seed: 43, ..ch }, &c, 7));
        assert!(!verify(&ch, &vec![0; c.len()], 7));
    }

    #[test]
    fn size_follows_the_claim() {
        let small = sized(1e4, 1000, 0.5, 1, 5);
        let big = sized(1e6, 1000, 0.5, 1, 5);
        assert_eq!((small.rows, small.cols, small.deadline), (SIDE, SIDE, 1005));
        assert!(big.inner > 50 * small.inner, "{small:?} {big:?}");
        // About half the budget at the claimed rate.
        let ms = big.work() as f64 / 1e6;
        assert!((450.0..=550.0).contains(&ms), "{ms}");
        assert_eq!(sized(0.0, 1000, 0.5, 1, 0).inner, 1);
        assert_eq!(sized(f64::INFINITY, 1000, 0.5, 1, 0).inner, MAX_INNER);
        assert_eq!(sized(1e6, 1000, 0.25, 1, 0).inner * 2, big.inner);
        assert!(big.in_bounds());
        assert!(!Challenge { rows: MAX_SIDE + 1, ..big }.in_bounds());
        assert!(!Challenge { inner: 0, ..big }.in_bounds());
    }
}
