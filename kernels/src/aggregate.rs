//! One round of aggregation on any [`Backend`]: the robust rules, per-update clipping, DP noise
//! and the anomaly report.
//!
//! Rules that can stream (FedAvg, clipped mean) add each update into one accumulator as it
//! arrives and need O(dim) memory. The others need every update of the round at once, as dense
//! rows: `max_updates × dim × 4` bytes, checked against [`Config::memory_limit`] before anything
//! is allocated ([`Error::Capacity`] otherwise; see docs/architecture.md for what an operator does
//! then). Robust rules weigh every update equally; the example counts only weigh FedAvg and the
//! clipped mean.

use crate::backend::{self, Backend, Kind, Update};
use crate::philox;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// How the updates of a round are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Weighted mean (weights = example counts or explicit).
    FedAvg,
    /// Coordinate-wise median.
    Median,
    /// Coordinate-wise mean after dropping ⌊βn⌋ lowest and highest values; 0 ≤ β < 0.5.
    TrimmedMean {
        /// Fraction trimmed at each end.
        beta: f32,
    },
    /// Mean of the `m` updates with the lowest Krum scores, tolerating `f` Byzantine updates.
    MultiKrum {
        /// Byzantine updates tolerated; needs n ≥ 2f + 3.
        f: usize,
        /// Updates averaged, 1 ≤ m ≤ n − f.
        m: usize,
    },
    /// Bulyan: n − 2f updates chosen by repeated Krum, then per coordinate the mean of the
    /// n − 4f values closest to the median; needs n ≥ 4f + 3.
    Bulyan {
        /// Byzantine updates tolerated.
        f: usize,
    },
    /// CenteredClip (Karimireddy et al. 2021) from the coordinate median: `iters` times,
    /// v ← v + mean_i (x_i − v)·min(1, τ/‖x_i − v‖).
    CenteredClip {
        /// Clipping radius τ > 0.
        tau: f32,
        /// Iterations ≥ 1.
        iters: u32,
    },
    /// Weighted mean of the updates after clipping each to L2 norm `c`.
    ClippedMean {
        /// Norm bound C > 0.
        c: f32,
    },
}

impl Rule {
    /// Whether the rule needs every update of the round stored as a dense row.
    pub fn needs_rows(&self) -> bool {
        !matches!(self, Rule::FedAvg | Rule::ClippedMean { .. })
    }

    /// Checks the rule's parameters alone.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |name, value: f64| Err(Error::Parameter { name, value });
        match *self {
            Rule::TrimmedMean { beta } if !(0.0..0.5).contains(&beta) => bad("trimmed-mean beta", f64::from(beta)),
            Rule::MultiKrum { m: 0, .. } => bad("multi-krum m", 0.0),
            Rule::CenteredClip { tau, .. } if !(tau > 0.0 && tau.is_finite()) => {
                bad("centered-clip tau", f64::from(tau))
            }
            Rule::CenteredClip { iters: 0, .. } => bad("centered-clip iterations", 0.0),
            Rule::ClippedMean { c } if !(c > 0.0 && c.is_finite()) => bad("clipped-mean C", f64::from(c)),
            _ => Ok(()),
        }
    }

    /// The rule with its Byzantine bound (and Multi-Krum's m) lowered to what `n` updates allow:
    /// Multi-Krum f ≤ (n − 3)/2 and m ≤ n − f, Bulyan f ≤ (n − 3)/4; `None` when it cannot run on
    /// `n` at all (no updates, or fewer than 3 for Multi-Krum and Bulyan). For a federation whose
    /// reputation layer excluded clients: fewer updates left does not stop the round.
    pub fn fitted(&self, n: usize) -> Option<Rule> {
        if n == 0 {
            return None;
        }
        Some(match *self {
            Rule::MultiKrum { f, m } => {
                let f = f.min(n.checked_sub(3)? / 2);
                Rule::MultiKrum { f, m: m.min(n - f) }
            }
            Rule::Bulyan { f } => Rule::Bulyan { f: f.min(n.checked_sub(3)? / 4) },
            r => r,
        })
    }

    /// Checks that the rule can run on `n` updates.
    pub fn check_count(&self, n: usize) -> Result<(), Error> {
        let fail = |requirement: &'static str| Err(Error::Precondition { rule: self.to_string(), n, requirement });
        if n == 0 {
            return Err(Error::Empty);
        }
        match *self {
            Rule::TrimmedMean { beta } if 2 * trim_count(beta, n) >= n => fail("2·⌊βn⌋ < n"),
            Rule::MultiKrum { f, .. } if n < 2 * f + 3 => fail("n ≥ 2f + 3"),
            Rule::MultiKrum { f, m } if m > n - f => fail("m ≤ n − f"),
            Rule::Bulyan { f } if n < 4 * f + 3 => fail("n ≥ 4f + 3"),
            _ => Ok(()),
        }
    }
}

fn trim_count(beta: f32, n: usize) -> usize {
    (f64::from(beta) * n as f64).floor() as usize
}

impl fmt::Display for Rule {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::FedAvg => write!(fm, "fedavg"),
            Rule::Median => write!(fm, "median"),
            Rule::TrimmedMean { beta } => write!(fm, "trimmed-mean:{beta}"),
            Rule::MultiKrum { f, m } => write!(fm, "multi-krum:{f},{m}"),
            Rule::Bulyan { f } => write!(fm, "bulyan:{f}"),
            Rule::CenteredClip { tau, iters } => write!(fm, "centered-clip:{tau},{iters}"),
            Rule::ClippedMean { c } => write!(fm, "clipped-mean:{c}"),
        }
    }
}

impl FromStr for Rule {
    type Err = Error;

    /// `fedavg | median | trimmed-mean:β | multi-krum:f,m | bulyan:f | centered-clip:τ,iters |
    /// clipped-mean:C`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Syntax(s.to_string());
        let (name, args) = s.split_once(':').unwrap_or((s, ""));
        let nums: Vec<&str> = if args.is_empty() { Vec::new() } else { args.split(',').collect() };
        let num = |i: usize| nums.get(i).ok_or_else(bad);
        let rule = match (name, nums.len()) {
            ("fedavg", 0) => Rule::FedAvg,
            ("median", 0) => Rule::Median,
            ("trimmed-mean", 1) => Rule::TrimmedMean { beta: num(0)?.parse().map_err(|_| bad())? },
            ("multi-krum", 2) => {
                Rule::MultiKrum { f: num(0)?.parse().map_err(|_| bad())?, m: num(1)?.parse().map_err(|_| bad())? }
            }
            ("bulyan", 1) => Rule::Bulyan { f: num(0)?.parse().map_err(|_| bad())? },
            ("centered-clip", 2) => Rule::CenteredClip {
                tau: num(0)?.parse().map_err(|_| bad())?,
                iters: num(1)?.parse().map_err(|_| bad())?,
            },
            ("clipped-mean", 1) => Rule::ClippedMean { c: num(0)?.parse().map_err(|_| bad())? },
            _ => return Err(bad()),
        };
        rule.validate()?;
        Ok(rule)
    }
}

/// Differential-privacy noise for the round's aggregate.
#[derive(Debug, Clone)]
pub struct Noise {
    /// σ: the noise standard deviation is σ × the sensitivity of the aggregate.
    pub multiplier: f32,
    /// Selects the Philox stream with the round ([`philox::Secret::stream`]); production code
    /// draws it from the OS CSPRNG. The report carries only its commitment.
    pub secret: philox::Secret,
}

/// A step between clipping and the rule, from the robust-FL literature on non-IID data; any
/// sequence of them composes with any rule (`arc:f+nnm:f`, applied left to right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// Nearest-neighbour mixing (Allouah et al., AISTATS 2023): each update becomes the mean of
    /// its n − f nearest updates (itself included), from the Gram matrix.
    Nnm {
        /// Tolerated Byzantine updates.
        f: usize,
    },
    /// Bucketing (Karimireddy, He and Jaggi, ICLR 2022): the updates, in a permutation drawn
    /// from the round number, are cut into buckets of `s`; each bucket's weighted mean is one
    /// row, and the rule runs on the ⌈n/s⌉ bucket means (weights: the buckets' sums).
    Bucketing {
        /// Updates per bucket.
        s: usize,
    },
    /// Adaptive robust clipping (Allouah et al., NeurIPS 2024): the k = ⌊2(f/n)(n − f)⌋ largest
    /// updates are scaled down to the norm of the (k+1)-th largest.
    Arc {
        /// Tolerated Byzantine updates.
        f: usize,
    },
}

impl fmt::Display for Pre {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pre::Nnm { f: b } => write!(f, "nnm:{b}"),
            Pre::Bucketing { s } => write!(f, "bucketing:{s}"),
            Pre::Arc { f: b } => write!(f, "arc:{b}"),
        }
    }
}

impl FromStr for Pre {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::ParsePre(s.to_string());
        let (name, v) = s.split_once(':').ok_or_else(bad)?;
        let v: usize = v.parse().map_err(|_| bad())?;
        match name {
            "nnm" => Ok(Pre::Nnm { f: v }),
            "arc" => Ok(Pre::Arc { f: v }),
            "bucketing" if v >= 1 => Ok(Pre::Bucketing { s: v }),
            _ => Err(bad()),
        }
    }
}

/// Parses `step+step+…` (e.g. `arc:2+nnm:2`) into pre-aggregation steps.
pub fn parse_pre(s: &str) -> Result<Vec<Pre>, Error> {
    if s.is_empty() || s == "none" {
        return Ok(Vec::new());
    }
    s.split('+').map(str::parse).collect()
}

/// What one round does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Model dimension (flat parameter count).
    pub dim: usize,
    /// The rule.
    pub rule: Rule,
    /// Per-update L2 clip C applied before the rule (required for noise).
    pub clip: Option<f32>,
    /// Gaussian noise added once to the aggregate.
    pub noise: Option<Noise>,
    /// Round number: with the noise secret, it selects the noise stream.
    pub round: u64,
    /// Most updates the round accepts.
    pub max_updates: usize,
    /// Most bytes of dense update storage the round may allocate.
    pub memory_limit: u64,
    /// Store rows even for streaming rules, so the report has cosines to the robust centre.
    pub full_report: bool,
    /// Pre-aggregation steps, in order (they need stored rows).
    pub pre: Vec<Pre>,
    /// Lower the rule's Byzantine bound to what the updates that came allow ([`Rule::fitted`]),
    /// and the pre-aggregation steps' f to below n/2, instead of refusing to aggregate; the
    /// report names the rule that ran. For federations,
    /// where clients drop out or are excluded; `vain aggregate` keeps the strict check.
    pub fit_rule: bool,
}

impl Config {
    /// A config with no clipping or noise, 1024 updates at most and a 16 GiB storage limit.
    pub fn new(dim: usize, rule: Rule) -> Self {
        Self {
            dim,
            rule,
            clip: None,
            noise: None,
            round: 0,
            max_updates: 1024,
            memory_limit: 16 << 30,
            full_report: false,
            pre: Vec::new(),
            fit_rule: false,
        }
    }

    /// Whether this config keeps dense rows.
    pub fn stores_rows(&self) -> bool {
        self.rule.needs_rows() || self.full_report || !self.pre.is_empty()
    }

    /// Bytes of dense row storage this config allocates.
    pub fn storage_bytes(&self) -> u64 {
        if self.stores_rows() { (self.max_updates as u64).saturating_mul(self.dim as u64).saturating_mul(4) } else { 0 }
    }

    fn effective_clip(&self) -> Option<f32> {
        match (self.clip, self.rule) {
            (Some(a), Rule::ClippedMean { c }) => Some(a.min(c)),
            (None, Rule::ClippedMean { c }) => Some(c),
            (a, _) => a,
        }
    }
}

/// Why a round cannot proceed. Update-level errors leave the round usable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend operation failed (bad update bytes, CUDA error, …).
    #[error(transparent)]
    Backend(#[from] backend::Error),
    /// A rule string did not parse.
    #[error(
        "cannot parse rule {0:?}: expected fedavg | median | trimmed-mean:β | multi-krum:f,m | bulyan:f | centered-clip:τ,iters | clipped-mean:C"
    )]
    Syntax(String),
    /// A pre-aggregation step did not parse.
    #[error("cannot parse pre-aggregation step {0:?}: expected nnm:f | bucketing:s | arc:f, joined by +")]
    ParsePre(String),
    /// A parameter is out of its range.
    #[error("{name} = {value} is out of range")]
    Parameter {
        /// Which parameter.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The rule cannot run on this many updates.
    #[error("{rule} cannot aggregate {n} updates: needs {requirement}")]
    Precondition {
        /// The rule.
        rule: String,
        /// Updates received.
        n: usize,
        /// The condition that fails.
        requirement: &'static str,
    },
    /// The round received no updates.
    #[error("no updates to aggregate")]
    Empty,
    /// The round already holds `max_updates` updates.
    #[error("the round is full ({max} updates)")]
    Full {
        /// The limit.
        max: usize,
    },
    /// An update's weight is not finite and positive.
    #[error("update weight {weight} must be finite and > 0")]
    Weight {
        /// The weight given.
        weight: f32,
    },
    /// The backend cannot take order statistics over this many updates.
    #[error(
        "the {backend} backend takes order statistics over at most {limit} updates; this round allows {max_updates} (lower max_updates or use the CPU backend)"
    )]
    BackendLimit {
        /// The backend.
        backend: Kind,
        /// Its limit.
        limit: usize,
        /// The round's max_updates.
        max_updates: usize,
    },
    /// Noise needs a clip bound: without one the sensitivity is unbounded.
    #[error("DP noise needs a clip bound (--clip C)")]
    NoiseWithoutClip,
}

/// Per-update lines of the anomaly report.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateReport {
    /// Position in arrival order.
    pub index: usize,
    /// Weight given at ingest.
    pub weight: f32,
    /// L2 norm as received.
    pub norm: f64,
    /// Robust z-score of the norm: (norm − median) / (1.4826 · MAD).
    pub norm_z: f64,
    /// Factor the update was scaled by when clipped (1 = not clipped).
    pub clip_factor: f64,
    /// Cosine similarity to the robust centre, when rows are stored: the rule's output for
    /// the robust rules, the coordinate median for FedAvg and the clipped mean.
    pub cosine: Option<f64>,
    /// Krum score (sum of squared distances to the n − f − 2 nearest others), for Krum rules.
    pub krum_score: Option<f64>,
    /// Whether the rule used this update (Multi-Krum and Bulyan select a subset).
    pub selected: bool,
    /// The largest cosine similarity between this update and any other of the round (clipped,
    /// as received), with `full_report`: colluders that send the same vector (ALIE, IPM, Sybil
    /// copies) sit near 1 where honest clients on their own data do not (FoolsGold's signal,
    /// Fung et al., RAID 2020).
    pub max_similarity: Option<f64>,
}

/// The round's anomaly report: evidence for reputation, not a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The rule applied.
    pub rule: Rule,
    /// The backend that ran it.
    pub backend: Kind,
    /// Model dimension.
    pub dim: usize,
    /// Bytes of dense update storage the round allocated.
    pub storage_bytes: u64,
    /// Fraction of updates that were clipped.
    pub fraction_clipped: f64,
    /// Standard deviation of the noise added to each coordinate, if any.
    pub noise_std: Option<f32>,
    /// Commitment to the noise secret ([`philox::Secret::commitment`]), if noise was added.
    pub noise_commitment: Option<[u8; 32]>,
    /// One entry per update.
    pub updates: Vec<UpdateReport>,
}

/// The aggregate and its report.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The aggregated update, `dim` values.
    pub aggregate: Vec<f32>,
    /// The anomaly report.
    pub report: Report,
}

/// One round in progress on a backend.
pub struct Round<'b> {
    backend: &'b mut dyn Backend,
    cfg: Config,
    sq_norms: Vec<f64>,
    weights: Vec<f32>,
}

impl<'b> Round<'b> {
    /// Checks the config and prepares the backend's storage.
    pub fn new(backend: &'b mut dyn Backend, cfg: Config) -> Result<Self, Error> {
        cfg.rule.validate()?;
        if let Some(c) = cfg.clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Error::Parameter { name: "clip", value: f64::from(c) });
        }
        if let Some(n) = &cfg.noise {
            if cfg.clip.is_none() {
                return Err(Error::NoiseWithoutClip);
            }
            if !(n.multiplier >= 0.0 && n.multiplier.is_finite()) {
                return Err(Error::Parameter { name: "noise multiplier", value: f64::from(n.multiplier) });
            }
        }
        let need = cfg.storage_bytes();
        if need > cfg.memory_limit {
            return Err(backend::Error::Capacity { need, limit: cfg.memory_limit }.into());
        }
        let rows = if cfg.stores_rows() { cfg.max_updates } else { 0 };
        // Every rule that stores rows takes an order statistic over them (the rule itself, or
        // the median for CenteredClip and for the report).
        if let Some(limit) = backend.max_order_rows()
            && rows > limit
        {
            return Err(Error::BackendLimit { backend: backend.kind(), limit, max_updates: rows });
        }
        backend.prepare(cfg.dim, rows)?;
        Ok(Self { backend, sq_norms: Vec::new(), weights: Vec::new(), cfg })
    }

    /// Updates accepted so far.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether no update was accepted yet.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Validates and takes one update; returns its index. A rejected update changes nothing.
    pub fn ingest(&mut self, update: &Update<'_>, weight: f32) -> Result<usize, Error> {
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(Error::Weight { weight });
        }
        let i = self.weights.len();
        if i >= self.cfg.max_updates {
            return Err(Error::Full { max: self.cfg.max_updates });
        }
        let ss = if self.cfg.stores_rows() {
            self.backend.store_row(i, update)?
        } else {
            self.backend.ingest(update, weight, self.cfg.effective_clip())?
        };
        self.sq_norms.push(ss);
        self.weights.push(weight);
        Ok(i)
    }

    /// [`Round::ingest`] for several updates at once (see [`Backend::ingest_batch`]): the
    /// streaming rules then move the accumulator through memory once per batch. Each update's
    /// result is in its slot; rejected ones change nothing.
    pub fn ingest_batch(&mut self, updates: &[Update<'_>], weights: &[f32]) -> Vec<Result<usize, Error>> {
        if self.cfg.stores_rows() || updates.len() != weights.len() {
            return updates.iter().zip(weights).map(|(u, w)| self.ingest(u, *w)).collect();
        }
        let room = self.cfg.max_updates - self.weights.len();
        let mut out: Vec<Result<usize, Error>> = Vec::with_capacity(updates.len());
        let mut take = Vec::new();
        for (k, &w) in weights.iter().enumerate() {
            if !(w > 0.0 && w.is_finite()) {
                out.push(Err(Error::Weight { weight: w }));
            } else if take.len() >= room {
                out.push(Err(Error::Full { max: self.cfg.max_updates }));
            } else {
                out.push(Ok(0));
                take.push(k);
            }
        }
        let ups: Vec<Update<'_>> = take.iter().map(|&k| updates[k]).collect();
        let ws: Vec<f32> = take.iter().map(|&k| weights[k]).collect();
        let results = self.backend.ingest_batch(&ups, &ws, self.cfg.effective_clip());
        for (&k, r) in take.iter().zip(results) {
            out[k] = match r {
                Ok(ss) => {
                    self.sq_norms.push(ss);
                    self.weights.push(weights[k]);
                    Ok(self.weights.len() - 1)
                }
                Err(e) => Err(e.into()),
            };
        }
        out
    }

    /// Applies the rule, noise and report, and returns the aggregate.
    pub fn finish(self) -> Result<Outcome, Error> {
        let n = self.weights.len();
        if n == 0 {
            return Err(Error::Empty);
        }
        let rule_rows = self.cfg.pre.iter().fold(n, |m, p| match p {
            Pre::Bucketing { s } => m.div_ceil(*s),
            _ => m,
        });
        let rule =
            if self.cfg.fit_rule { self.cfg.rule.fitted(rule_rows).unwrap_or(self.cfg.rule) } else { self.cfg.rule };
        rule.check_count(rule_rows)?;
        // The steps' bound too, when fitting: f < n/2.
        let pre: Vec<Pre> = self
            .cfg
            .pre
            .iter()
            .map(|p| match *p {
                Pre::Nnm { f } if self.cfg.fit_rule => Pre::Nnm { f: f.min(n.saturating_sub(1) / 2) },
                Pre::Arc { f } if self.cfg.fit_rule => Pre::Arc { f: f.min(n.saturating_sub(1) / 2) },
                p => p,
            })
            .collect();
        for p in &pre {
            if let Pre::Nnm { f } | Pre::Arc { f } = p
                && 2 * f >= n
            {
                return Err(Error::Precondition { rule: p.to_string(), n, requirement: "2f < n" });
            }
        }
        let Round { backend, mut cfg, sq_norms, weights } = self;
        cfg.rule = rule;
        cfg.pre = pre;
        let norms: Vec<f64> = sq_norms.iter().map(|s| s.sqrt()).collect();
        let clip = cfg.effective_clip();
        let factors: Vec<f64> = norms
            .iter()
            .map(|&nm| match clip {
                Some(c) if nm > f64::from(c) => f64::from(c) / nm,
                _ => 1.0,
            })
            .collect();
        let mut updates: Vec<UpdateReport> = (0..n)
            .map(|i| UpdateReport {
                index: i,
                weight: weights[i],
                norm: norms[i],
                norm_z: 0.0,
                clip_factor: factors[i],
                cosine: None,
                krum_score: None,
                selected: true,
                max_similarity: None,
            })
            .collect();
        for (u, z) in updates.iter_mut().zip(robust_z(&norms)) {
            u.norm_z = z;
        }
        let total_w: f64 = weights.iter().map(|w| f64::from(*w)).sum();
        let max_w = weights.iter().copied().fold(0f32, f32::max);
        let all: Vec<u32> = (0..n as u32).collect();

        if cfg.stores_rows() && factors.iter().any(|f| *f < 1.0) {
            let f32s: Vec<f32> = factors.iter().map(|f| *f as f32).collect();
            backend.scale_rows(&f32s)?;
        }
        // The robust centre for the report's cosines: the rule's own output for the robust
        // rules, the coordinate median for the plain means.
        let set_cosines = |updates: &mut [UpdateReport], dots: &[f64], cc: f64| {
            for (i, u) in updates.iter_mut().enumerate() {
                let clipped = norms[i] * factors[i];
                u.cosine = Some(if clipped > 0.0 && cc > 0.0 { dots[i] / (clipped * cc.sqrt()) } else { 0.0 });
            }
        };
        // The median and trimmed mean compute the dots in their own pass.
        let mut dots_done = false;
        if cfg.stores_rows() && (!cfg.rule.needs_rows() || !cfg.pre.is_empty()) {
            // With pre-aggregation the rows are mixed before the rule runs, so the report's
            // cosines are to the coordinate median of the updates as received (clipped).
            let (dots, cc) = backend.median_with_dots(&all, n)?;
            set_cosines(&mut updates, &dots, cc);
            dots_done = !cfg.pre.is_empty();
        }
        if cfg.full_report && n > 1 {
            let g = backend.gram(n)?;
            for (i, u) in updates.iter_mut().enumerate() {
                let best = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| {
                        let d = (g[i * n + i] * g[j * n + j]).sqrt();
                        if d > 0.0 { g[i * n + j] / d } else { 0.0 }
                    })
                    .fold(f64::NEG_INFINITY, f64::max);
                u.max_similarity = Some(best);
            }
        }
        let pre = pre_aggregate(backend, &cfg.pre, &weights, &norms, &factors, cfg.round)?;
        let (n, all, weights) = match &pre {
            Some(p) => (p.rows, (0..p.rows as u32).collect::<Vec<u32>>(), p.weights.clone()),
            None => (n, all, weights),
        };
        let saved = pre.as_ref().map(|_| updates.clone());
        let weighted = |backend: &mut dyn Backend, rows: &[u32]| -> Result<(), Error> {
            let w: Vec<f32> = rows.iter().map(|&r| (f64::from(weights[r as usize]) / total_w) as f32).collect();
            backend.weighted_sum(rows, &w)?;
            Ok(())
        };
        let cosines_fixed = dots_done;
        let set_cosines = |updates: &mut [UpdateReport], dots: &[f64], cc: f64| {
            if !cosines_fixed {
                set_cosines(updates, dots, cc);
            }
        };
        match cfg.rule {
            Rule::FedAvg | Rule::ClippedMean { .. } => {
                if cfg.stores_rows() {
                    weighted(backend, &all)?;
                } else {
                    backend.out_from_acc((1.0 / total_w) as f32)?;
                }
            }
            Rule::Median => {
                let (dots, cc) = backend.median_with_dots(&all, n)?;
                set_cosines(&mut updates, &dots, cc);
                dots_done = true;
            }
            Rule::TrimmedMean { beta } => {
                let (dots, cc) = backend.trimmed_mean_with_dots(&all, trim_count(beta, n), n)?;
                set_cosines(&mut updates, &dots, cc);
                dots_done = true;
            }
            Rule::MultiKrum { f, m } => {
                let gram = backend.gram(n)?;
                let scores = krum_scores(&gram, n, &all, f);
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]).then(a.cmp(b)));
                let chosen: Vec<u32> = order[..m].iter().map(|i| *i as u32).collect();
                for (u, s) in updates.iter_mut().zip(&scores) {
                    u.krum_score = Some(*s);
                    u.selected = false;
                }
                for &c in &chosen {
                    updates[c as usize].selected = true;
                }
                let w = vec![1.0 / m as f32; m];
                backend.weighted_sum(&chosen, &w)?;
            }
            Rule::Bulyan { f } => {
                let gram = backend.gram(n)?;
                let scores = krum_scores(&gram, n, &all, f);
                for (u, s) in updates.iter_mut().zip(&scores) {
                    u.krum_score = Some(*s);
                    u.selected = false;
                }
                let theta = n - 2 * f;
                let mut left: Vec<u32> = all.clone();
                let mut chosen = Vec::with_capacity(theta);
                while chosen.len() < theta {
                    let s = krum_scores(&gram, n, &left, f);
                    let best = (0..left.len()).min_by(|a, b| s[*a].total_cmp(&s[*b]).then(a.cmp(b))).unwrap_or(0);
                    chosen.push(left.remove(best));
                }
                chosen.sort_unstable();
                for &c in &chosen {
                    updates[c as usize].selected = true;
                }
                backend.closest_to_median_mean(&chosen, theta - 2 * f)?;
            }
            Rule::CenteredClip { tau, iters } => {
                backend.median(&all)?;
                let mut d = backend.dist_sq_to_out(n)?;
                for it in 0..iters {
                    let f: Vec<f32> = d
                        .iter()
                        .map(|d| {
                            let r = d.sqrt();
                            if r > f64::from(tau) { (f64::from(tau) / r) as f32 } else { 1.0 }
                        })
                        .collect();
                    // Each step but the last also gives the next one's distances.
                    if it + 1 < iters {
                        d = backend.centered_clip_step_with_dists(&f)?;
                    } else {
                        backend.centered_clip_step(&f)?;
                    }
                }
            }
        }

        if cfg.rule.needs_rows() && !dots_done {
            let (dots, cc) = backend.dots_with_out(n)?;
            set_cosines(&mut updates, &dots, cc);
        }
        // The rule saw rows, not updates: each update gets its row's Krum score and selection
        // (under bucketing, its bucket's).
        if let (Some(p), Some(saved)) = (&pre, saved) {
            let per_row: Vec<(Option<f64>, bool)> =
                updates[..p.rows].iter().map(|u| (u.krum_score, u.selected)).collect();
            updates = saved;
            for (u, &r) in updates.iter_mut().zip(&p.row_of) {
                (u.krum_score, u.selected) = per_row[r];
            }
        }
        let noise_std = match (&cfg.noise, clip) {
            (Some(nz), Some(c)) => {
                // Sensitivity of the aggregate to one clipped update: C·w_max/Σw for the weighted
                // rules, C/n for the others (equal weights).
                let sens = match cfg.rule {
                    Rule::FedAvg | Rule::ClippedMean { .. } => f64::from(c) * f64::from(max_w) / total_w,
                    _ => f64::from(c) / n as f64,
                };
                let std = (f64::from(nz.multiplier) * sens) as f32;
                let (seed, stream) = nz.secret.stream(cfg.round);
                backend.add_noise(std, seed, stream)?;
                Some(std)
            }
            _ => None,
        };
        let mut aggregate = vec![0f32; cfg.dim];
        backend.read_out(&mut aggregate)?;
        let clipped = factors.iter().filter(|f| **f < 1.0).count();
        Ok(Outcome {
            aggregate,
            report: Report {
                rule: cfg.rule,
                backend: backend.kind(),
                dim: cfg.dim,
                storage_bytes: cfg.storage_bytes(),
                fraction_clipped: clipped as f64 / n as f64,
                noise_std,
                noise_commitment: noise_std.and(cfg.noise.as_ref()).map(|nz| nz.secret.commitment()),
                updates,
            },
        })
    }
}

/// The rows a pre-aggregation produced: how many, their weights, and the row each update went
/// into.
struct Mixed {
    rows: usize,
    weights: Vec<f32>,
    row_of: Vec<usize>,
}

/// The permutation bucketing uses in round `seed`: Fisher–Yates on splitmix64, public and
/// reproducible, so anyone can recompute a round's buckets.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed ^ 0x6a09_e667_f3bc_c909;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// Runs the pre-aggregation `steps` on rows 0..n (weights, norms as received, clip factors);
/// `None` when there are none.
fn pre_aggregate(
    backend: &mut dyn Backend,
    steps: &[Pre],
    weights: &[f32],
    norms: &[f64],
    factors: &[f64],
    round: u64,
) -> Result<Option<Mixed>, Error> {
    if steps.is_empty() {
        return Ok(None);
    }
    let mut rows = weights.len();
    let mut w = weights.to_vec();
    let mut row_of: Vec<usize> = (0..rows).collect();
    // The rows' current norms, while known (a mix makes them unknown until the next Gram).
    let mut cur: Option<Vec<f64>> = Some(norms.iter().zip(factors).map(|(n, f)| n * f).collect());
    for step in steps {
        match *step {
            Pre::Arc { f } => {
                let nr = match cur.take() {
                    Some(v) => v,
                    None => {
                        let g = backend.gram(rows)?;
                        (0..rows).map(|i| g[i * rows + i].max(0.0).sqrt()).collect()
                    }
                };
                let k = ((2.0 * f as f64 / rows as f64) * rows.saturating_sub(f) as f64).floor() as usize;
                let k = k.min(rows - 1);
                let mut sorted = nr.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let thr = sorted[k];
                let fac: Vec<f32> =
                    nr.iter().map(|&x| if k > 0 && x > thr && x > 0.0 { (thr / x) as f32 } else { 1.0 }).collect();
                if fac.iter().any(|f| *f < 1.0) {
                    backend.scale_rows(&fac)?;
                }
                cur = Some(nr.iter().zip(&fac).map(|(x, f)| x * f64::from(*f)).collect());
            }
            Pre::Nnm { f } => {
                let g = backend.gram(rows)?;
                let keep = rows - f.min(rows - 1);
                let mut mix = vec![0f32; rows * rows];
                for i in 0..rows {
                    let mut d: Vec<(f64, usize)> = (0..rows)
                        .map(|j| ((g[i * rows + i] + g[j * rows + j] - 2.0 * g[i * rows + j]).max(0.0), j))
                        .collect();
                    // An update is its own nearest neighbour, whatever the rounding says.
                    d.sort_by(|a, b| (a.1 != i).cmp(&(b.1 != i)).then(a.0.total_cmp(&b.0)).then(a.1.cmp(&b.1)));
                    for &(_, j) in &d[..keep] {
                        mix[i * rows + j] = 1.0 / keep as f32;
                    }
                }
                let targets: Vec<u32> = (0..rows as u32).collect();
                backend.mix_rows(rows, &targets, &mix)?;
                cur = None;
            }
            Pre::Bucketing { s } => {
                let perm = permutation(rows, round);
                let m = rows.div_ceil(s);
                let mut mix = vec![0f32; m * rows];
                let mut nw = vec![0f32; m];
                let mut bucket_of = vec![0usize; rows];
                for (b, chunk) in perm.chunks(s).enumerate() {
                    let total: f64 = chunk.iter().map(|&j| f64::from(w[j])).sum();
                    for &j in chunk {
                        mix[b * rows + j] = (f64::from(w[j]) / total) as f32;
                        bucket_of[j] = b;
                    }
                    nw[b] = total as f32;
                }
                let targets: Vec<u32> = (0..m as u32).collect();
                backend.mix_rows(rows, &targets, &mix)?;
                row_of.iter_mut().for_each(|r| *r = bucket_of[*r]);
                rows = m;
                w = nw;
                cur = None;
            }
        }
    }
    Ok(Some(Mixed { rows, weights: w, row_of }))
}

/// Krum score of each row in `among` (indexed like `among`): the sum of squared distances to
/// its n' − f − 2 nearest others in `among`, from the Gram matrix.
fn krum_scores(gram: &[f64], n: usize, among: &[u32], f: usize) -> Vec<f64> {
    let k = among.len().saturating_sub(f + 2).max(1).min(among.len().saturating_sub(1));
    among
        .iter()
        .map(|&i| {
            let i = i as usize;
            let mut d: Vec<f64> = among
                .iter()
                .filter(|&&j| j as usize != i)
                .map(|&j| {
                    let j = j as usize;
                    (gram[i * n + i] + gram[j * n + j] - 2.0 * gram[i * n + j]).max(0.0)
                })
                .collect();
            d.sort_by(f64::total_cmp);
            d[..k.min(d.len())].iter().sum()
        })
        .collect()
}

/// (x − median) / (1.4826 · MAD); when the MAD is 0, the mean absolute deviation × 1.2533
/// stands in, and when that is 0 too every score is 0.
fn robust_z(x: &[f64]) -> Vec<f64> {
    let med = median(x.to_vec());
    let dev: Vec<f64> = x.iter().map(|v| (v - med).abs()).collect();
    let mad = median(dev.clone());
    let scale = if mad > 0.0 { 1.4826 * mad } else { 1.2533 * dev.iter().sum::<f64>() / x.len().max(1) as f64 };
    x.iter().map(|v| if scale > 0.0 { (v - med) / scale } else { 0.0 }).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len();
    if m % 2 == 1 { v[m / 2] } else { 0.5 * (v[m / 2 - 1] + v[m / 2]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print() {
        for s in [
            "fedavg",
            "median",
            "trimmed-mean:0.2",
            "multi-krum:2,5",
            "bulyan:1",
            "centered-clip:1.5,3",
            "clipped-mean:4",
        ] {
            let r: Rule = s.parse().expect(s);
            assert_eq!(r.to_string(), s);
        }
        for s in ["", "krum", "median:1", "trimmed-mean:0.5", "trimmed-mean:x", "multi-krum:1", "clipped-mean:-1"] {
            assert!(s.parse::<Rule>().is_err(), "{s}");
        }
    }

    #[test]
    fn preconditions() {
        let krum = Rule::MultiKrum { f: 2, m: 3 };
        assert!(matches!(krum.check_count(6), Err(Error::Precondition { requirement: "n ≥ 2f + 3", .. })));
        assert!(krum.check_count(7).is_ok());
        assert!(matches!(Rule::Bulyan { f: 1 }.check_count(6), Err(Error::Precondition { .. })));
        assert!(Rule::Bulyan { f: 1 }.check_count(7).is_ok());
        assert!(matches!(Rule::TrimmedMean { beta: 0.4 }.check_count(2), Ok(())));
        assert!(matches!(Rule::Median.check_count(0), Err(Error::Empty)));
        // Fitted to fewer updates: the bound drops to what n allows, never rises.
        assert_eq!(krum.fitted(7), Some(krum));
        assert_eq!(Rule::MultiKrum { f: 6, m: 14 }.fitted(17), Some(Rule::MultiKrum { f: 6, m: 11 }));
        assert_eq!(Rule::MultiKrum { f: 6, m: 14 }.fitted(9), Some(Rule::MultiKrum { f: 3, m: 6 }));
        assert_eq!(Rule::Bulyan { f: 4 }.fitted(17), Some(Rule::Bulyan { f: 3 }));
        assert_eq!(Rule::Bulyan { f: 4 }.fitted(2), None);
        assert_eq!(Rule::Median.fitted(1), Some(Rule::Median));
        for n in 3..40 {
            for r in [Rule::MultiKrum { f: 9, m: 30 }, Rule::Bulyan { f: 9 }] {
                assert!(r.fitted(n).is_some_and(|f| f.check_count(n).is_ok()), "{r} n {n}");
            }
        }
    }

    #[test]
    fn robust_z_flags_the_outlier() {
        let z = robust_z(&[1.0, 1.1, 0.9, 1.05, 0.95, 10.0]);
        assert!(z[5] > 20.0 && z[..5].iter().all(|v| v.abs() < 2.0), "{z:?}");
        assert_eq!(robust_z(&[2.0, 2.0]), vec![0.0, 0.0]);
    }
}
