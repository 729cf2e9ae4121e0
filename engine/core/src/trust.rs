//! EigenTrust (Kamvar, Schlosser, Garcia-Molina 2003) over signed local-trust edges.
//!
//! Each node i gives non-negative local trust s_ij to nodes it has worked with; rows are
//! normalised to c_ij = s_ij / Σ_j s_ij (a node that trusts no one follows the pre-trusted
//! distribution p). Global trust is the fixed point of t = (1 − α)·Cᵀt + α·p, computed by power
//! iteration from t = p. Trust enters only through edges from trusted nodes, so a ring of Sybils
//! vouching for each other, with no edge from outside into the ring, ends with ~0: all their
//! mass leaks back to p through the damping term.

/// Global trust of `n` nodes from `edges` (from, to, weight ≥ 0) and the pre-trusted set;
/// sums to 1. Stops when the L1 change is below `tol` or after `max_iters`.
pub fn eigentrust(
    n: usize,
    edges: &[(usize, usize, f64)],
    pretrusted: &[usize],
    alpha: f64,
    tol: f64,
    max_iters: usize,
) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    let mut p = vec![0f64; n];
    let pre: Vec<usize> = pretrusted.iter().copied().filter(|&i| i < n).collect();
    if pre.is_empty() {
        p.iter_mut().for_each(|x| *x = 1.0 / n as f64);
    } else {
        for &i in &pre {
            p[i] = 1.0 / pre.len() as f64;
        }
    }
    let mut row_sum = vec![0f64; n];
    let good: Vec<(usize, usize, f64)> =
        edges.iter().copied().filter(|&(i, j, w)| i < n && j < n && i != j && w > 0.0 && w.is_finite()).collect();
    for &(i, _, w) in &good {
        row_sum[i] += w;
    }
    let mut t = p.clone();
    let mut next = vec![0f64; n];
    for _ in 0..max_iters {
        next.iter_mut().zip(&p).for_each(|(x, p)| *x = alpha * p);
        // Mass of nodes with no outgoing trust goes to the pre-trusted distribution.
        let dangling: f64 = (0..n).filter(|&i| row_sum[i] == 0.0).map(|i| t[i]).sum();
        for (x, p) in next.iter_mut().zip(&p) {
            *x += (1.0 - alpha) * dangling * p;
        }
        for &(i, j, w) in &good {
            next[j] += (1.0 - alpha) * t[i] * w / row_sum[i];
        }
        let change: f64 = next.iter().zip(&t).map(|(a, b)| (a - b).abs()).sum();
        std::mem::swap(&mut t, &mut next);
        if change < tol {
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sybil_ring_gets_nothing_and_mass_is_conserved() {
        // 0 is pre-trusted; 0..6 honest, trusting each other; 6..10 a ring trusting each other.
        let mut edges = Vec::new();
        for i in 0..6 {
            for j in 0..6 {
                if i != j {
                    edges.push((i, j, 1.0));
                }
            }
        }
        for i in 6..10 {
            for j in 6..10 {
                if i != j {
                    edges.push((i, j, 100.0));
                }
            }
        }
        let t = eigentrust(10, &edges, &[0], 0.15, 1e-12, 200);
        assert!((t.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(t[6..].iter().all(|x| *x < 1e-9), "{t:?}");
        assert!(t[1..6].iter().all(|x| *x > 0.1), "{t:?}");
        // One honest edge into the ring gives it only what that edge carries.
        edges.push((5, 6, 1.0));
        let t2 = eigentrust(10, &edges, &[0], 0.15, 1e-12, 200);
        assert!(t2[6..].iter().sum::<f64>() < t2[5] + 1e-9, "{t2:?}");
    }

    #[test]
    fn no_edges_is_the_pretrusted_distribution() {
        assert_eq!(eigentrust(3, &[], &[1], 0.1, 1e-12, 10), vec![0.0, 1.0, 0.0]);
        let t = eigentrust(4, &[], &[], 0.1, 1e-12, 10);
        assert!(t.iter().all(|x| (x - 0.25).abs() < 1e-12));
    }
}
