//! The float64 reference of every rule, written for clarity, not speed: what the backends'
//! results are tested against (kernels/tests/backend.rs, the `vain aggregate` tests).

use crate::aggregate::Rule;

/// Median of `v` (sorts it); mean of the two middle values for even lengths.
pub fn median64(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len();
    if m % 2 == 1 { v[m / 2] } else { 0.5 * (v[m / 2 - 1] + v[m / 2]) }
}

/// Column `j` of the selected rows.
pub fn col(xs: &[Vec<f64>], rows: &[usize], j: usize) -> Vec<f64> {
    rows.iter().map(|&r| xs[r][j]).collect()
}

fn krum_scores64(xs: &[Vec<f64>], among: &[usize], f: usize) -> Vec<f64> {
    let k = among.len().saturating_sub(f + 2).max(1).min(among.len().saturating_sub(1));
    among
        .iter()
        .map(|&i| {
            let mut d: Vec<f64> = among
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| xs[i].iter().zip(&xs[j]).map(|(a, b)| (a - b).powi(2)).sum())
                .collect();
            d.sort_by(f64::total_cmp);
            d[..k.min(d.len())].iter().sum()
        })
        .collect()
}

/// Whether scores of the candidates `among` put a near-tie at the selection boundary (then f32
/// may legitimately choose differently, and the case says nothing).
fn ambiguous(xs: &[Vec<f64>], among: &[usize], scores: &[f64], m: usize) -> bool {
    if m == 0 || m >= scores.len() {
        return false;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let (inside, outside) = (order[m - 1], order[m]);
    let gap = (scores[outside] - scores[inside]).abs();
    if gap == 0.0 {
        // An exact tie is safe only between identical updates: every backend computes their
        // distances alike and breaks the tie by index. Different updates whose f64 scores
        // happen to tie (quantised values) may differ in the last bit in f32.
        return xs[among[inside]] != xs[among[outside]];
    }
    gap <= 1e-4 * scores[outside].abs().max(1e-12)
}

/// The f64 aggregate of `xs` (dense updates) under `rule` with optional per-update clipping,
/// or None when a Krum selection has a near-tie at its boundary (then an f32 backend may
/// legitimately choose differently).
pub fn reference(xs_in: &[Vec<f64>], weights: &[f32], rule: Rule, clip: Option<f32>) -> Option<Vec<f64>> {
    let n = xs_in.len();
    let dim = xs_in[0].len();
    let eff = match (clip, rule) {
        (Some(a), Rule::ClippedMean { c }) => Some(a.min(c)),
        (None, Rule::ClippedMean { c }) => Some(c),
        (a, _) => a,
    };
    let xs: Vec<Vec<f64>> = xs_in
        .iter()
        .map(|x| {
            let nm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            let f = match eff {
                Some(c) if nm > f64::from(c) => f64::from(c) / nm,
                _ => 1.0,
            };
            x.iter().map(|v| v * f).collect()
        })
        .collect();
    let all: Vec<usize> = (0..n).collect();
    let median = |rows: &[usize]| -> Vec<f64> { (0..dim).map(|j| median64(&mut col(&xs, rows, j))).collect() };
    Some(match rule {
        Rule::FedAvg | Rule::ClippedMean { .. } => {
            let w: f64 = weights.iter().map(|w| f64::from(*w)).sum();
            (0..dim).map(|j| (0..n).map(|i| f64::from(weights[i]) * xs[i][j]).sum::<f64>() / w).collect()
        }
        Rule::Median => median(&all),
        Rule::TrimmedMean { beta } => {
            let t = (f64::from(beta) * n as f64).floor() as usize;
            (0..dim)
                .map(|j| {
                    let mut c = col(&xs, &all, j);
                    c.sort_by(f64::total_cmp);
                    c[t..n - t].iter().sum::<f64>() / (n - 2 * t) as f64
                })
                .collect()
        }
        Rule::MultiKrum { f, m } => {
            let s = krum_scores64(&xs, &all, f);
            if ambiguous(&xs, &all, &s, m) {
                return None;
            }
            let mut order = all.clone();
            order.sort_by(|a, b| s[*a].total_cmp(&s[*b]));
            (0..dim).map(|j| order[..m].iter().map(|&i| xs[i][j]).sum::<f64>() / m as f64).collect()
        }
        Rule::Bulyan { f } => {
            let theta = n - 2 * f;
            let mut left = all.clone();
            let mut chosen = Vec::new();
            while chosen.len() < theta {
                let s = krum_scores64(&xs, &left, f);
                if ambiguous(&xs, &left, &s, 1) {
                    return None;
                }
                let best = (0..left.len()).min_by(|a, b| s[*a].total_cmp(&s[*b])).unwrap_or(0);
                chosen.push(left.remove(best));
            }
            let beta = theta - 2 * f;
            let mut out = Vec::with_capacity(dim);
            for j in 0..dim {
                let mut c = col(&xs, &chosen, j);
                let med = median64(&mut c);
                // Stable sort by distance, ties to the smaller value: what "closest" means here.
                let dist = |v: f64| (v - med).abs();
                c.sort_by(|a, b| dist(*a).total_cmp(&dist(*b)).then(a.total_cmp(b)));
                // Two different values almost equally far from the median at the cut: f32
                // distances may order them either way. A distance is a difference of two f32
                // values, so its rounding error scales with the values, not with the distance.
                if beta < c.len() && c[beta] != c[beta - 1] {
                    let (a, b) = (dist(c[beta - 1]), dist(c[beta]));
                    let magnitude = c[beta].abs().max(c[beta - 1].abs()).max(med.abs());
                    if b - a <= 1e-5 * b.max(1e-12) || b - a <= 8.0 * f64::from(f32::EPSILON) * magnitude {
                        return None;
                    }
                }
                out.push(c[..beta].iter().sum::<f64>() / beta as f64);
            }
            out
        }
        Rule::CenteredClip { tau, iters } => {
            let mut v = median(&all);
            for _ in 0..iters {
                let mut step = vec![0f64; dim];
                for x in &xs {
                    let d = x.iter().zip(&v).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
                    let f = if d > f64::from(tau) { f64::from(tau) / d } else { 1.0 };
                    for j in 0..dim {
                        step[j] += f * (x[j] - v[j]);
                    }
                }
                for j in 0..dim {
                    v[j] += step[j] / n as f64;
                }
            }
            v
        }
    })
}
