//! Splitting a training set across clients: IID or label-skewed Dirichlet(α), seeded.
//!
//! Dirichlet (Hsu, Qi and Brown 2019, "Measuring the effects of non-identical data distribution
//! for federated visual classification"): for each class, draw client shares p ~ Dir(α, …, α) and
//! deal the class's shuffled items out in those proportions. Small α gives each client few
//! classes; large α approaches IID. Draws are repeated (up to 1,000 times, each from the same
//! seeded stream) until every client has at least `min_items`.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Gamma};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// How items are spread over clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// Uniformly at random, equal sizes (±1).
    Iid,
    /// Label skew with concentration α > 0.
    Dirichlet(f64),
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Iid => write!(f, "iid"),
            Scheme::Dirichlet(a) => write!(f, "dirichlet:{a}"),
        }
    }
}

/// Why a partition cannot be made.
#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The text is not `iid` or `dirichlet:α`.
    #[error("cannot parse partition {0:?} (iid | dirichlet:α with α > 0)")]
    Parse(String),
    /// Fewer items than clients × the minimum.
    #[error("{items} items cannot give {clients} clients {min} items each")]
    TooFew {
        /// Items.
        items: usize,
        /// Clients.
        clients: usize,
        /// Minimum per client.
        min: usize,
    },
    /// No draw in 1,000 gave every client the minimum (α too small for this many clients).
    #[error(
        "Dirichlet({alpha}) left a client with fewer than {min} items in 1000 draws; raise α or lower the client count"
    )]
    Degenerate {
        /// α.
        alpha: f64,
        /// Minimum per client.
        min: usize,
    },
}

impl FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Parse(s.to_string());
        match s.split_once(':') {
            None if s == "iid" => Ok(Scheme::Iid),
            Some(("dirichlet", a)) => {
                let a: f64 = a.parse().map_err(|_| bad())?;
                if a.is_finite() && a > 0.0 { Ok(Scheme::Dirichlet(a)) } else { Err(bad()) }
            }
            _ => Err(bad()),
        }
    }
}

/// Deals the items (given by their labels) to `clients`; returns each client's item indices.
pub fn split(
    labels: &[u8],
    clients: usize,
    scheme: Scheme,
    min_items: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>, Error> {
    if clients == 0 || labels.len() < clients * min_items.max(1) {
        return Err(Error::TooFew { items: labels.len(), clients, min: min_items.max(1) });
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    match scheme {
        Scheme::Iid => {
            let mut idx: Vec<usize> = (0..labels.len()).collect();
            idx.shuffle(&mut rng);
            let mut out = vec![Vec::new(); clients];
            for (k, i) in idx.into_iter().enumerate() {
                out[k % clients].push(i);
            }
            Ok(out)
        }
        Scheme::Dirichlet(alpha) => {
            let classes = labels.iter().map(|&l| usize::from(l) + 1).max().unwrap_or(0);
            let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
            for (i, &l) in labels.iter().enumerate() {
                by_class[usize::from(l)].push(i);
            }
            let gamma = Gamma::new(alpha, 1.0).map_err(|_| Error::Parse(format!("dirichlet:{alpha}")))?;
            for _ in 0..1000 {
                let mut out = vec![Vec::new(); clients];
                for items in &by_class {
                    let mut items = items.clone();
                    items.shuffle(&mut rng);
                    let draws: Vec<f64> = (0..clients).map(|_| gamma.sample(&mut rng)).collect();
                    let total: f64 = draws.iter().sum();
                    // Cumulative cut points; the last client takes what rounding leaves.
                    let mut start = 0usize;
                    let mut acc = 0f64;
                    for (c, d) in draws.iter().enumerate() {
                        acc += d;
                        let end = if c + 1 == clients || total <= 0.0 {
                            items.len()
                        } else {
                            ((acc / total) * items.len() as f64).round() as usize
                        };
                        let end = end.clamp(start, items.len());
                        out[c].extend_from_slice(&items[start..end]);
                        start = end;
                    }
                }
                if out.iter().all(|c| c.len() >= min_items) {
                    for c in &mut out {
                        c.shuffle(&mut rng);
                    }
                    return Ok(out);
                }
            }
            Err(Error::Degenerate { alpha, min: min_items })
        }
    }
}

/// Splits `items` into (kept, held out) with `fraction` of them (rounded, at least one when
/// there are two or more) held out, after a seeded shuffle.
pub fn hold_out(items: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut v = items.to_vec();
    v.shuffle(&mut ChaCha20Rng::seed_from_u64(seed));
    let k = ((v.len() as f64 * fraction).round() as usize).clamp(usize::from(v.len() >= 2), v.len().saturating_sub(1));
    let held = v.split_off(v.len() - k);
    (v, held)
}

/// Mean over clients of the total-variation distance between the client's label distribution
/// and the whole set's: 0 for identical mixes, towards 1 for single-class clients.
pub fn label_skew(labels: &[u8], parts: &[Vec<usize>]) -> f64 {
    let classes = labels.iter().map(|&l| usize::from(l) + 1).max().unwrap_or(0);
    let mut global = vec![0f64; classes];
    labels.iter().for_each(|&l| global[usize::from(l)] += 1.0 / labels.len() as f64);
    let mut sum = 0.0;
    for p in parts {
        let mut local = vec![0f64; classes];
        p.iter().for_each(|&i| local[usize::from(labels[i])] += 1.0 / p.len().max(1) as f64);
        sum += 0.5 * local.iter().zip(&global).map(|(a, b)| (a - b).abs()).sum::<f64>();
    }
    sum / parts.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + i / 13) % 10) as u8).collect()
    }

    fn check_disjoint_complete(parts: &[Vec<usize>], n: usize) -> Result<(), TestCaseError> {
        let mut seen = vec![false; n];
        for p in parts {
            for &i in p {
                prop_assert!(!seen[i], "item {} dealt twice", i);
                seen[i] = true;
            }
        }
        prop_assert!(seen.iter().all(|s| *s), "an item was dealt to nobody");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn partitions_are_disjoint_complete_and_seeded(
            n in 200usize..1500, clients in 1usize..12, seed: u64, alpha in 0.3f64..20.0, iid: bool
        ) {
            let ls = labels(n);
            let scheme = if iid { Scheme::Iid } else { Scheme::Dirichlet(alpha) };
            let parts = split(&ls, clients, scheme, 5, seed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parts.len(), clients);
            check_disjoint_complete(&parts, n)?;
            prop_assert!(parts.iter().all(|p| p.len() >= 5));
            prop_assert_eq!(&parts, &split(&ls, clients, scheme, 5, seed).map_err(|e| TestCaseError::fail(e.to_string()))?);
            if iid {
                let (lo, hi) = (parts.iter().map(Vec::len).min().unwrap_or(0), parts.iter().map(Vec::len).max().unwrap_or(0));
                prop_assert!(hi - lo <= 1);
            }
            let (kept, held) = hold_out(&parts[0], 0.2, seed);
            let mut all: Vec<usize> = kept.iter().chain(&held).copied().collect();
            all.sort_unstable();
            let mut want = parts[0].clone();
            want.sort_unstable();
            prop_assert_eq!(all, want);
            prop_assert!(!held.is_empty() && !kept.is_empty());
        }
    }

    #[test]
    fn dirichlet_skew_grows_as_alpha_falls() {
        let ls = labels(6000);
        let skew = |s: Scheme| {
            (0..5u64).map(|seed| label_skew(&ls, &split(&ls, 20, s, 10, seed).expect("split"))).sum::<f64>() / 5.0
        };
        let (iid, a10, a1, a01) = (
            skew(Scheme::Iid),
            skew(Scheme::Dirichlet(10.0)),
            skew(Scheme::Dirichlet(1.0)),
            skew(Scheme::Dirichlet(0.1)),
        );
        assert!(iid < a10 && a10 < a1 && a1 < a01, "iid {iid} α=10 {a10} α=1 {a1} α=0.1 {a01}");
        assert!(iid < 0.1 && a01 > 0.6, "iid {iid} α=0.1 {a01}");
    }

    #[test]
    fn bad_schemes_and_impossible_splits_are_refused() {
        assert_eq!("iid".parse::<Scheme>(), Ok(Scheme::Iid));
        assert_eq!("dirichlet:0.5".parse::<Scheme>(), Ok(Scheme::Dirichlet(0.5)));
        for bad in ["dirichlet:0", "dirichlet:-1", "dirichlet:x", "zipf:1", "dirichlet:inf"] {
            assert!(bad.parse::<Scheme>().is_err(), "{bad}");
        }
        assert!(matches!(split(&labels(10), 5, Scheme::Iid, 3, 1), Err(Error::TooFew { .. })));
        assert!(matches!(split(&labels(100), 50, Scheme::Dirichlet(0.01), 2, 1), Err(Error::Degenerate { .. })));
    }
}
