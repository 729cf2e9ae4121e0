//! Rényi-DP accountant for the sampled Gaussian mechanism (SGM): DP-SGD style training where each
//! round includes every example independently with probability `q` (Poisson sampling), clips each
//! contribution to L2 norm 1 and adds N(0, σ²) noise to the sum.
//!
//! The math follows Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism" (2019, arXiv:1908.10530) and the accountant of TensorFlow Privacy / Google's
//! `dp_accounting`, so numbers agree with theirs (the tests check published values):
//!
//! * [`rdp`] is the RDP of one step at one order α, `ln(A_α)/(α−1)`. Integer orders sum the
//!   binomial expansion of `A_α` exactly; fractional orders use the paper's two-sided series, whose
//!   terms carry `erfc` factors. Everything is summed in log space, so order 1024 or σ = 0.1 do not
//!   overflow; an RDP that really is unbounded comes back as `f64::INFINITY`.
//! * RDP composes by addition: `T` identical steps cost `T·rdp`, and mechanisms with different
//!   `(q, σ)` compose by adding their [`rdp_curve`]s order by order.
//! * [`epsilon`] / [`delta`] turn the composed RDP into (ε, δ)-DP at the best order, with the
//!   conversion of Canonne, Kamath and Steinke (arXiv:2004.00010, Prop. 12) / Balle et al. 2020,
//!   which current TF Privacy uses. [`epsilon_classic`] keeps Mironov's original conversion
//!   (arXiv:1702.07476, Prop. 3) because older published figures were computed with it.
//!
//! The guarantee is for add-or-remove-one-example neighbours, as in the paper.

use std::f64::consts::{LN_2, PI, SQRT_2};

use thiserror::Error;

/// The order grid to pass when there is no reason to pick another: 1.25 to 10 in steps of 0.25,
/// then every integer 11..=64, then 128, 256, 512 and 1024.
///
/// Runs with a large ε are optimal at low orders, where ε moves quickly with α, hence the fine
/// steps there; strong guarantees (small ε, tiny δ) are optimal at high orders, which are cheap to
/// include (the integer sum is O(α)) and keep such requests from being pinned to the top of the grid.
pub const DEFAULT_ORDERS: &[f64] = &[
    1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0, 5.25, 5.5, 5.75, 6.0, 6.25,
    6.5, 6.75, 7.0, 7.25, 7.5, 7.75, 8.0, 8.25, 8.5, 8.75, 9.0, 9.25, 9.5, 9.75, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 32.0, 33.0, 34.0,
    35.0, 36.0, 37.0, 38.0, 39.0, 40.0, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0, 47.0, 48.0, 49.0, 50.0, 51.0, 52.0, 53.0,
    54.0, 55.0, 56.0, 57.0, 58.0, 59.0, 60.0, 61.0, 62.0, 63.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Largest accepted order. The cost of one order is linear in α, so this bounds the time a single
/// bad argument can take (about a million log-space terms); no realistic (ε, δ) is optimal near it.
pub const MAX_ORDER: f64 = 1_000_000.0;

/// A bad argument to the accountant; each variant names the parameter and carries its value.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The sampling probability is not in [0, 1] (or is NaN).
    #[error("sample rate must be in [0, 1], got {value}")]
    SampleRate {
        /// The rejected sample rate.
        value: f64,
    },
    /// The noise multiplier is not positive and finite. Zero noise has no finite guarantee, so it
    /// is refused rather than reported as ε = ∞.
    #[error("noise multiplier must be positive and finite, got {value}")]
    NoiseMultiplier {
        /// The rejected noise multiplier.
        value: f64,
    },
    /// The target δ is not in (0, 1).
    #[error("delta must be in (0, 1), got {value}")]
    Delta {
        /// The rejected δ.
        value: f64,
    },
    /// The target ε is negative or not finite.
    #[error("epsilon must be finite and non-negative, got {value}")]
    Epsilon {
        /// The rejected ε.
        value: f64,
    },
    /// An RDP order is not finite, not above 1, or above [`MAX_ORDER`].
    #[error("RDP order must be in (1, {MAX_ORDER}], got {value}")]
    Order {
        /// The rejected order.
        value: f64,
    },
    /// The order list is empty.
    #[error("at least one RDP order is required")]
    NoOrders,
    /// The RDP values passed to a conversion do not pair up with the orders.
    #[error("{orders} orders but {rdp} RDP values")]
    LengthMismatch {
        /// Number of orders.
        orders: usize,
        /// Number of RDP values.
        rdp: usize,
    },
    /// An RDP value passed to a conversion is negative or NaN (+∞ is allowed).
    #[error("RDP values must be non-negative, got {value}")]
    Rdp {
        /// The rejected RDP value.
        value: f64,
    },
}

/// A privacy guarantee: the mechanism is (`epsilon`, `delta`)-DP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spent {
    /// ε; `f64::INFINITY` when no order gives a finite bound.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The order that gave the optimum (the first one on ties).
    pub order: f64,
}

/// How an RDP curve is turned into (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conversion {
    /// Canonne–Kamath–Steinke / Balle et al. 2020: `ε = r + ln((α−1)/α) − (ln δ + ln α)/(α−1)`,
    /// together with the KL-divergence bound `δ ≥ √(1 − e^(−r))` ⇒ ε = 0. What TF Privacy and
    /// `dp_accounting` use today; at every order it is below [`Conversion::Classic`].
    #[default]
    Improved,
    /// Mironov 2017, Prop. 3: `ε = r + ln(1/δ)/(α−1)`. For reproducing older published figures.
    Classic,
}

/// RDP of one step of the sampled Gaussian mechanism at `order` (α > 1).
///
/// `sample_rate` is the Poisson inclusion probability q and `noise_multiplier` the noise standard
/// deviation over the clipping norm. q = 0 gives 0 and q = 1 the plain Gaussian mechanism's
/// α/(2σ²). Integer orders use the exact binomial expansion, fractional ones the series of
/// Mironov et al. 2019 §3.3; both in log space. Returns `f64::INFINITY` when the divergence
/// overflows (σ so small that the bound is meaningless), never NaN.
pub fn rdp(sample_rate: f64, noise_multiplier: f64, order: f64) -> Result<f64, Error> {
    check_sample_rate(sample_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    check_order(order)?;
    Ok(rdp_one_step(sample_rate, noise_multiplier, order))
}

/// RDP of `steps` steps at each of `orders`: `steps · rdp(q, σ, α)`, in the order given.
///
/// Add curves computed on the same orders to compose mechanisms with different parameters, then
/// convert the sum with [`epsilon_from_rdp`] or [`delta_from_rdp`].
pub fn rdp_curve(sample_rate: f64, noise_multiplier: f64, steps: u64, orders: &[f64]) -> Result<Vec<f64>, Error> {
    check_sample_rate(sample_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    check_orders(orders)?;
    Ok(orders
        .iter()
        .map(|&order| {
            // Zero steps cost nothing even where one step is unbounded; ∞ · 0 would be NaN.
            if steps == 0 { 0.0 } else { rdp_one_step(sample_rate, noise_multiplier, order) * steps as f64 }
        })
        .collect())
}

/// (ε, δ) after `steps` steps of the sampled Gaussian mechanism, for the given `delta`.
///
/// ε is minimised over `orders` (pass [`DEFAULT_ORDERS`] unless you have a reason not to) with
/// the improved conversion ([`Conversion::Improved`]): per order
/// `ε = T·rdp + ln((α−1)/α) − (ln δ + ln α)/(α−1)`, clamped at 0. This is TF Privacy's
/// `get_privacy_spent(orders, compute_rdp(q, σ, T, orders), target_delta=δ)`.
pub fn epsilon(
    sample_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
    orders: &[f64],
) -> Result<Spent, Error> {
    epsilon_with(sample_rate, noise_multiplier, steps, delta, orders, Conversion::Improved)
}

/// Like [`epsilon`] but with Mironov's original conversion `ε = T·rdp + ln(1/δ)/(α−1)`
/// ([`Conversion::Classic`]), which is looser; for comparing with figures published before the
/// improved conversion was adopted (TF Privacy's MNIST tutorial and its older tests).
pub fn epsilon_classic(
    sample_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
    orders: &[f64],
) -> Result<Spent, Error> {
    epsilon_with(sample_rate, noise_multiplier, steps, delta, orders, Conversion::Classic)
}

/// [`epsilon`] with the conversion chosen by the caller.
pub fn epsilon_with(
    sample_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
    orders: &[f64],
    conversion: Conversion,
) -> Result<Spent, Error> {
    check_delta(delta)?;
    let curve = rdp_curve(sample_rate, noise_multiplier, steps, orders)?;
    epsilon_from_rdp(orders, &curve, delta, conversion)
}

/// The inverse question: δ after `steps` steps for a target `epsilon`, minimised over `orders`
/// with the improved conversion. This is TF Privacy's `get_privacy_spent(..., target_eps=ε)`.
pub fn delta(
    sample_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    epsilon: f64,
    orders: &[f64],
) -> Result<Spent, Error> {
    check_epsilon(epsilon)?;
    let curve = rdp_curve(sample_rate, noise_multiplier, steps, orders)?;
    delta_from_rdp(orders, &curve, epsilon, Conversion::Improved)
}

/// Smallest ε over `orders` for a mechanism whose RDP at `orders[k]` is `rdp[k]` (already
/// composed over all steps), at the given `delta`.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64, conversion: Conversion) -> Result<Spent, Error> {
    check_delta(delta)?;
    check_curve(orders, rdp)?;
    let ln_delta = delta.ln();
    let (epsilon, order) = argmin(orders, rdp, |alpha, r| match conversion {
        Conversion::Improved => improved_epsilon(alpha, r, delta, ln_delta),
        Conversion::Classic => r - ln_delta / (alpha - 1.0),
    });
    // The improved formula can dip below zero when the RDP is tiny; ε = 0 is then already proven
    // (by the same bound), and a negative ε means nothing.
    Ok(Spent { epsilon: epsilon.max(0.0), delta, order })
}

/// Smallest δ over `orders` for a mechanism whose RDP at `orders[k]` is `rdp[k]` (already
/// composed over all steps), at the given `epsilon`; at most 1.
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64, conversion: Conversion) -> Result<Spent, Error> {
    check_epsilon(epsilon)?;
    check_curve(orders, rdp)?;
    // Minimise ln δ rather than δ: at large orders δ underflows to 0 for every candidate and the
    // optimum would be lost.
    let (ln_delta, order) = argmin(orders, rdp, |alpha, r| match conversion {
        Conversion::Improved => improved_ln_delta(alpha, r, epsilon),
        Conversion::Classic => (alpha - 1.0) * (r - epsilon),
    });
    Ok(Spent { epsilon, delta: ln_delta.exp().min(1.0), order })
}

/// Per-order ε of the improved conversion; `r` is the composed RDP at order `alpha`.
fn improved_epsilon(alpha: f64, r: f64, delta: f64, ln_delta: f64) -> f64 {
    if r == f64::INFINITY {
        return f64::INFINITY;
    }
    // KL ≤ D_α and total variation ≤ √(1 − e^(−KL)) (Bretagnolle–Huber), so a δ at least that
    // large is met with ε = 0; the RDP formula below would only give something weaker.
    if delta * delta + (-r).exp_m1() >= 0.0 {
        return 0.0;
    }
    r + (-1.0 / alpha).ln_1p() - (ln_delta + alpha.ln()) / (alpha - 1.0)
}

/// Per-order ln δ of the improved conversion: the better of the KL bound and the RDP bound.
fn improved_ln_delta(alpha: f64, r: f64, epsilon: f64) -> f64 {
    let kl = if r == 0.0 { f64::NEG_INFINITY } else { 0.5 * ln_one_minus_exp(-r) };
    let rdp_bound = (alpha - 1.0) * (r - epsilon + (-1.0 / alpha).ln_1p()) - alpha.ln();
    kl.min(rdp_bound)
}

/// The minimum of `f(order, rdp)` over the curve and the order where it is first reached. NaN
/// candidates are skipped; if every candidate is NaN or +∞ the first order is reported.
fn argmin(orders: &[f64], rdp: &[f64], f: impl Fn(f64, f64) -> f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, orders[0]);
    for (&alpha, &r) in orders.iter().zip(rdp) {
        let value = f(alpha, r);
        if value < best.0 {
            best = (value, alpha);
        }
    }
    best
}

/// RDP of one step; arguments already validated.
fn rdp_one_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    // 1/(2σ²), the coefficient of every exponent below.
    let c = 0.5 / (sigma * sigma);
    if q == 1.0 {
        return alpha * c;
    }
    if c == f64::INFINITY {
        // σ² underflowed: every term with two or more sampled copies is e^∞.
        return f64::INFINITY;
    }
    let ln_a =
        if alpha.fract() == 0.0 { ln_a_integer(q, c, alpha as u64) } else { ln_a_fractional(q, sigma, c, alpha) };
    let r = ln_a / (alpha - 1.0);
    if r.is_nan() {
        // Only reachable when ∞ − ∞ appears for a σ whose divergence is astronomically large; an
        // accountant must never under-report, so answer with the only safe bound.
        f64::INFINITY
    } else {
        // A_α ≥ 1 by Jensen, so a negative result is rounding in the series.
        r.max(0.0)
    }
}

/// ln A_α for integer α, 0 < q < 1:
/// `A_α = Σ_{i=0}^{α} C(α, i) q^i (1−q)^(α−i) exp((i² − i)/(2σ²))`.
fn ln_a_integer(q: f64, c: f64, alpha: u64) -> f64 {
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let n = alpha as f64;
    let mut ln_binom = 0.0_f64;
    let mut acc = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let k = i as f64;
        if i > 0 {
            // C(α, i) = C(α, i−1)·(α − i + 1)/i, kept in log space; the gamma function is not in
            // std and the running sum is accurate to ~1e-12 even at α = 1024.
            ln_binom += (n - k + 1.0).ln() - k.ln();
        }
        let term = ln_binom + k * ln_q + (n - k) * ln_1mq + k * (k - 1.0) * c;
        acc = log_add_exp(acc, term);
        if acc == f64::INFINITY || acc.is_nan() {
            return acc;
        }
    }
    acc
}

/// Longest the fractional series may run; far beyond what a convergent case needs (α/2 terms, then
/// at most a few hundred thousand more even for α just above 1 with q near ½ and huge σ).
const MAX_SERIES_TERMS: u64 = 20_000_000;

/// ln A_α for fractional α, 0 < q < 1, by the series of Mironov et al. 2019 §3.3: split the
/// integral defining A_α at z0 = σ² ln(1/q − 1) + ½, where q·N(1, σ²) overtakes (1 − q)·N(0, σ²),
/// so that on each side the binomial expansion of the mixture's α-th power has ratio < 1 and
/// converges. Each term i carries `C(α, i)`, whose sign alternates once i > α + 1.
fn ln_a_fractional(q: f64, sigma: f64, c: f64, alpha: f64) -> f64 {
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let ln_odds = ln_1mq - ln_q;
    // With σ² = ∞ (σ > 1e154) and q = ½ the product would be ∞ · 0.
    let z0 = if ln_odds == 0.0 { 0.5 } else { sigma * sigma * ln_odds + 0.5 };
    let inv_scale = 1.0 / (SQRT_2 * sigma);
    let mut sum = SignedLogSum::default();
    let mut ln_binom = 0.0_f64;
    let mut positive = true;
    let mut i: u64 = 0;
    loop {
        let k = i as f64;
        if i > 0 {
            let factor = alpha - (k - 1.0);
            ln_binom += factor.abs().ln() - k.ln();
            if factor < 0.0 {
                positive = !positive;
            }
        }
        let j = alpha - k;
        // Left of z0: N(k, σ²) mass below z0; right of z0: N(j, σ²) mass above it.
        let left = ln_binom + k * ln_q + j * ln_1mq + k * (k - 1.0) * c - LN_2 + ln_erfc((k - z0) * inv_scale);
        let right = ln_binom + j * ln_q + k * ln_1mq + j * (j - 1.0) * c - LN_2 + ln_erfc((z0 - j) * inv_scale);
        if left.is_nan() || right.is_nan() {
            return f64::NAN;
        }
        if left == f64::INFINITY || right == f64::INFINITY {
            return f64::INFINITY;
        }
        sum.add(positive, left);
        sum.add(positive, right);
        // Both families of terms are e^(const)·|C(α, i)|·erfcx(·) with an argument increasing in
        // i, so they decrease strictly once |C(α, i)| does (i > (α−1)/2). TF Privacy stops at the
        // first i where both are below e^−30, which can be i = 0, before the bulk (q = 0.1,
        // σ = 15, α = 400.5); here that cut-off (relative, as A_α ≥ 1) applies only where every
        // later term is smaller still.
        if k > 0.5 * (alpha - 1.0) && left.max(right) < -30.0 {
            break;
        }
        i += 1;
        if i == MAX_SERIES_TERMS {
            // Not converged: the partial sum could under-report, so report unbounded instead.
            return f64::INFINITY;
        }
    }
    sum.value()
}

/// Sum of signed terms, each given as its log magnitude; positive and negative parts are kept
/// apart and subtracted once at the end, where the result is known to be ≥ 1.
#[derive(Clone, Copy)]
struct SignedLogSum {
    positive: f64,
    negative: f64,
}

impl Default for SignedLogSum {
    fn default() -> Self {
        Self { positive: f64::NEG_INFINITY, negative: f64::NEG_INFINITY }
    }
}

impl SignedLogSum {
    fn add(&mut self, positive: bool, ln_magnitude: f64) {
        if positive {
            self.positive = log_add_exp(self.positive, ln_magnitude);
        } else {
            self.negative = log_add_exp(self.negative, ln_magnitude);
        }
    }

    fn value(self) -> f64 {
        log_sub_exp(self.positive, self.negative)
    }
}

/// ln(eᵃ + eᵇ) without overflow.
fn log_add_exp(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY || hi == f64::INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// ln(eᵃ − eᵇ); −∞ when the difference is not positive (callers clamp the result).
fn log_sub_exp(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if b == f64::NEG_INFINITY || a == f64::INFINITY {
        return a;
    }
    if b >= a {
        return f64::NEG_INFINITY;
    }
    a + ln_one_minus_exp(b - a)
}

/// ln(1 − eˣ) for x ≤ 0, switching formula at −ln 2 so neither branch cancels (Mächler 2012).
fn ln_one_minus_exp(x: f64) -> f64 {
    if x > -LN_2 { (-x.exp_m1()).ln() } else { (-x.exp()).ln_1p() }
}

/// Below this `erfc` comes from the power series of `erf`, above it from the continued fraction:
/// at 2 the series loses under two digits to `1 − erf` and the fraction needs ~60 terms.
const ERFC_SERIES_BELOW: f64 = 2.0;

/// ln erfc(x) for any x, accurate to ~1e-14 relative and finite far past erfc's underflow
/// (x ≈ 27), where the fractional series needs it. std has no `erfc`.
fn ln_erfc(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x == f64::INFINITY {
        // Reached when σ² overflows and z0 = ∞; the fraction itself would compute ∞ · 0.
        f64::NEG_INFINITY
    } else if x == f64::NEG_INFINITY {
        LN_2
    } else if x < 0.0 {
        // erfc(x) = 2 − erfc(−x) ∈ (1, 2]: no cancellation.
        let tail = if -x < ERFC_SERIES_BELOW { 1.0 - erf_series(-x) } else { ln_erfc_continued_fraction(-x).exp() };
        (2.0 - tail).ln()
    } else if x < ERFC_SERIES_BELOW {
        (-erf_series(x)).ln_1p()
    } else {
        ln_erfc_continued_fraction(x)
    }
}

/// erf(x) for 0 ≤ x < 2 from `erf(x) = (2/√π) e^(−x²) Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`, whose
/// terms are all positive (the textbook alternating series cancels badly near 2).
fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0_f64;
    while term > sum * 1e-17 {
        n += 1.0;
        term *= two_x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / PI.sqrt() * (-x * x).exp() * sum
}

/// ln erfc(x) for x ≥ 2 from Laplace's continued fraction
/// `erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))`, evaluated by the modified Lentz
/// method; the e^(−x²) factor stays in log space so huge x does not underflow.
fn ln_erfc_continued_fraction(x: f64) -> f64 {
    // All partial numerators and denominators are positive, so Lentz's zero guards are not needed.
    let mut f = x;
    let mut c = x;
    let mut d = 0.0_f64;
    for n in 1..=500 {
        let a = 0.5 * f64::from(n);
        d = 1.0 / (x + a * d);
        c = x + a / c;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    -x * x - 0.5 * PI.ln() - f.ln()
}

fn check_sample_rate(value: f64) -> Result<(), Error> {
    if (0.0..=1.0).contains(&value) { Ok(()) } else { Err(Error::SampleRate { value }) }
}

fn check_noise_multiplier(value: f64) -> Result<(), Error> {
    if value > 0.0 && value.is_finite() { Ok(()) } else { Err(Error::NoiseMultiplier { value }) }
}

fn check_delta(value: f64) -> Result<(), Error> {
    if value > 0.0 && value < 1.0 { Ok(()) } else { Err(Error::Delta { value }) }
}

fn check_epsilon(value: f64) -> Result<(), Error> {
    if value >= 0.0 && value.is_finite() { Ok(()) } else { Err(Error::Epsilon { value }) }
}

fn check_order(value: f64) -> Result<(), Error> {
    if value > 1.0 && value <= MAX_ORDER { Ok(()) } else { Err(Error::Order { value }) }
}

fn check_orders(orders: &[f64]) -> Result<(), Error> {
    if orders.is_empty() {
        return Err(Error::NoOrders);
    }
    orders.iter().try_for_each(|&order| check_order(order))
}

fn check_curve(orders: &[f64], rdp: &[f64]) -> Result<(), Error> {
    check_orders(orders)?;
    if orders.len() != rdp.len() {
        return Err(Error::LengthMismatch { orders: orders.len(), rdp: rdp.len() });
    }
    match rdp.iter().find(|r| r.is_nan() || **r < 0.0) {
        Some(&value) => Err(Error::Rdp { value }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: f64, want: f64, rtol: f64, what: &str) {
        assert!((got - want).abs() <= rtol * want.abs(), "{what}: got {got}, want {want} (rtol {rtol})");
    }

    /// The order grid of TF Privacy's `compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy`.
    fn tf_dp_sgd_orders() -> Vec<f64> {
        let mut orders = vec![1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5];
        orders.extend((5..64).map(f64::from));
        orders.extend([128.0, 256.0, 512.0]);
        orders
    }

    /// Opacus `RDPAccountant.DEFAULT_ALPHAS`, also the grid of TF Privacy's MNIST tutorial.
    fn opacus_orders() -> Vec<f64> {
        let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
        orders.extend((12..64).map(f64::from));
        orders
    }

    // ln erfc against mpmath (40 digits).
    #[test]
    fn ln_erfc_matches_reference() {
        let cases = [
            (-30.0, LN_2),
            (-1.0, 1.8427007929497148_f64.ln()),
            (0.0, 0.0),
            (0.1, -0.11930497373739561),
            (0.5, -0.7350111298370844),
            (1.0, -1.8496055099332482),
            (1.99, -5.320852015139977),
            (2.0, -5.364941264616638),
            (3.0, -10.720363041981113),
            (10.0, -102.87988902484489),
            (1e3, -1000007.4801207219),
        ];
        for (x, want) in cases {
            let got = ln_erfc(x);
            assert!((got - want).abs() <= 1e-14 * want.abs().max(1.0), "ln_erfc({x}) = {got}, want {want}");
        }
        assert_eq!(ln_erfc(f64::INFINITY), f64::NEG_INFINITY);
        assert_eq!(ln_erfc(f64::NEG_INFINITY), LN_2);
    }

    #[test]
    fn log_space_helpers() {
        assert_close(log_add_exp(1000.0, 1000.0), 1000.0 + LN_2, 1e-15, "log_add_exp");
        assert_eq!(log_add_exp(f64::NEG_INFINITY, 3.0), 3.0);
        assert_eq!(log_add_exp(f64::INFINITY, f64::INFINITY), f64::INFINITY);
        assert_close(log_sub_exp(1000.0 + LN_2, 1000.0), 1000.0, 1e-15, "log_sub_exp");
        assert_eq!(log_sub_exp(2.0, 2.0), f64::NEG_INFINITY);
        assert_close(ln_one_minus_exp(-1e-20), (1e-20_f64).ln(), 1e-12, "ln(1 - e^x) near 0");
    }

    // tensorflow/privacy tensorflow_privacy/privacy/analysis/rdp_accountant_test.py:
    // test_compute_rdp_no_data (q = 0 → 0) and test_compute_rdp_no_sampling (q = 1 → α/(2σ²) = 0.1).
    #[test]
    fn edge_sample_rates_published() {
        assert_eq!(rdp(0.0, 10.0, 20.0), Ok(0.0));
        assert_eq!(rdp(1.0, 10.0, 20.0), Ok(0.1));
    }

    #[test]
    fn full_batch_is_plain_gaussian() {
        for &(sigma, alpha) in &[(0.5, 1.5), (1.0, 2.0), (1.1, 7.25), (4.0, 1024.0), (0.1, 64.0)] {
            let got = rdp(1.0, sigma, alpha).expect("valid");
            assert_close(got, alpha / (2.0 * sigma * sigma), 1e-15, "q = 1");
        }
        // Just below q = 1 the series must approach the same value from below.
        for &alpha in &[2.0, 2.5, 16.0, 16.5] {
            let near = rdp(1.0 - 1e-9, 1.0, alpha).expect("valid");
            assert_close(near, alpha / 2.0, 1e-6, "q → 1");
            assert!(near <= alpha / 2.0 * (1.0 + 1e-12));
        }
    }

    // tensorflow/privacy rdp_accountant_test.py, test_compute_rdp_scalar:
    // compute_rdp(q=0.1, σ=2, steps=10, order=5) ≈ 0.07737 to 5 places.
    #[test]
    fn rdp_scalar_published() {
        let curve = rdp_curve(0.1, 2.0, 10, &[5.0]).expect("valid");
        assert!((curve[0] - 0.07737).abs() < 5e-6, "got {}", curve[0]);
    }

    // tensorflow/privacy rdp_accountant_test.py, test_compute_rdp_sequence, and google/differential-privacy
    // python/dp_accounting/rdp/rdp_privacy_accountant_test.py, test_compute_rdp_poisson_sampled_gaussian:
    // q = 0.01, σ = 2.5, 50 steps, orders [1.5, 2.5, 5, 50, 100] (rtol 1e-4 there too). Covers
    // fractional orders, small integers and a large integer order where the RDP explodes.
    #[test]
    fn rdp_sequence_published() {
        let orders = [1.5, 2.5, 5.0, 50.0, 100.0];
        let want = [6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02];
        let got = rdp_curve(0.01, 2.5, 50, &orders).expect("valid");
        for ((g, w), o) in got.iter().zip(want).zip(orders) {
            assert_close(*g, w, 1e-4, &format!("order {o}"));
        }
    }

    // The parameter sets of TF Privacy's test_compute_log_a_equals_mp (rdp_accountant_test.py), which
    // compares ln A_α with a multi-precision integral at rtol 1e-4. The expected ln A_α here were
    // computed the same way (mpmath 1.3 `quad` of μ0(z)·(μ(z)/μ0(z))^α, 50 digits) for this test,
    // so they are reference values, not published ones; same tolerance.
    #[test]
    fn ln_a_matches_numerical_integral() {
        let cases = [
            (1e-7, 0.1, 1.01, 4.003412322526338e-8),
            (1e-6, 0.1, 256.0, 3260448.8237019717),
            (1e-5, 0.1, 256.1, 3263586.4328729605),
            (1e-6, 1.0, 27.0, 8.769511304848498e-10),
            (1e-4, 1.0, 1.5, 6.4426869538366497e-9),
            (1e-3, 1.0, 2.0, 1.7182803522145154e-6),
            (0.01, 10.0, 20.0, 0.00019129699912842963),
            (0.1, 100.0, 20.5, 0.00019991818458068296),
            (0.99, 0.1, 256.0, 3263983.021518832),
            (0.999, 100.0, 256.1, 3.260108037973113),
        ];
        for (q, sigma, alpha, want) in cases {
            let got = rdp(q, sigma, alpha).expect("valid") * (alpha - 1.0);
            assert_close(got, want, 1e-4, &format!("ln A at q={q} σ={sigma} α={alpha}"));
        }
    }

    // The case where stopping the fractional series at the first e^−30 terms (as TF does) would stop
    // at i = 0 and miss the bulk near i ≈ qα. The neighbouring integer orders bracket the answer,
    // since RDP is non-decreasing in α.
    #[test]
    fn fractional_series_does_not_stop_before_its_bulk() {
        let lo = rdp(0.1, 15.0, 400.0).expect("valid");
        let mid = rdp(0.1, 15.0, 400.5).expect("valid");
        let hi = rdp(0.1, 15.0, 401.0).expect("valid");
        assert!(lo > 0.01, "lo = {lo}");
        assert!(lo < mid && mid < hi, "{lo} {mid} {hi}");
        assert_close(mid, 0.5 * (lo + hi), 1e-4, "α = 400.5 between its neighbours");
    }

    // RDP is non-decreasing in α; check across the whole default grid, where the method switches
    // between the integer sum and the fractional series.
    #[test]
    fn rdp_is_monotone_in_order() {
        for &(q, sigma) in &[(0.004, 1.1), (0.01, 0.5), (0.3, 2.0), (0.9, 5.0)] {
            let curve = rdp_curve(q, sigma, 1, DEFAULT_ORDERS).expect("valid");
            for (w, o) in curve.windows(2).zip(DEFAULT_ORDERS.windows(2)) {
                assert!(
                    w[1] >= w[0] * (1.0 - 1e-9),
                    "q={q} σ={sigma}: rdp({}) = {} > rdp({}) = {}",
                    o[0],
                    w[0],
                    o[1],
                    w[1]
                );
            }
        }
    }

    // tensorflow/privacy tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py,
    // test_compute_dp_sgd_privacy: (n, batch, σ, epochs, δ) → (ε, order) with q = batch/n,
    // steps = ⌈epochs·n/batch⌉ and the orders of tf_dp_sgd_orders(). The current file has the
    // improved-conversion values; the 2019 version of the same test (before the switch) has the
    // classic ones. Both were asserted to 7 decimal places; Test2's ε is ~6e6, so it is checked to
    // 1e-12 relative instead.
    #[test]
    fn dp_sgd_epsilon_published_tf_privacy() {
        let cases = [
            (60_000_u64, 150_u64, 1.3, 15_u64, 1e-5, 0.7242234026109595, 0.941870567, 19.0),
            (100_000, 100, 1.0, 30, 1e-7, 1.4154988495444845, 1.70928734, 13.0),
            (100_000_000, 1024, 0.1, 10, 1e-7, 5907982.31138195, 5907984.81339406, 1.25),
        ];
        let orders = tf_dp_sgd_orders();
        for (n, batch, sigma, epochs, delta, improved, classic, order) in cases {
            let q = batch as f64 / n as f64;
            let steps = (epochs * n).div_ceil(batch);
            let got = epsilon(q, sigma, steps, delta, &orders).expect("valid");
            let old = epsilon_classic(q, sigma, steps, delta, &orders).expect("valid");
            for (spent, want) in [(got, improved), (old, classic)] {
                let tol = if want > 1e3 { 1e-12 * want } else { 5e-8 };
                assert!((spent.epsilon - want).abs() < tol, "n={n}: got {spent:?}, want ε = {want}");
                assert_eq!(spent.order, order, "n={n}");
                assert_eq!(spent.delta, delta);
            }
        }
    }

    // pytorch/opacus opacus/tests/accountants_test.py, test_rdp_accountant: σ = 1.5, q = 0.04,
    // steps = int(90/0.04) = 2250, δ = 1e-5 → ε = 7.32911117143 (assertAlmostEqual, 7 places) over
    // RDPAccountant.DEFAULT_ALPHAS. Opacus uses the improved conversion (Balle et al. 2020, Thm 21).
    #[test]
    fn dp_sgd_epsilon_published_opacus() {
        let spent = epsilon(0.04, 1.5, 2250, 1e-5, &opacus_orders()).expect("valid");
        assert!((spent.epsilon - 7.32911117143).abs() < 5e-8, "got {spent:?}");
    }

    // tensorflow/privacy tutorials/README.md, the MNIST DP-SGD tutorial (60 000 examples, batch 256,
    // steps = epochs·60000 // 256, δ = 1e-5, orders as opacus_orders(), classic conversion, which the
    // tutorial used then), quoted to 2 decimals. 2019 revision: σ = 1.1 for 60 epochs → 3.01 (also
    // after 1 and 2 epochs: 1.03, 1.11), σ = 1.3 for 15 → 1.19, σ = 0.7 for 45 → 7.10. Current
    // revision: σ = 1.12 for 60 → 2.92.
    #[test]
    fn mnist_tutorial_published() {
        let cases =
            [(1.1, 60, 3.01), (1.1, 1, 1.03), (1.1, 2, 1.11), (1.3, 15, 1.19), (0.7, 45, 7.10), (1.12, 60, 2.92)];
        let orders = opacus_orders();
        for (sigma, epochs, want) in cases {
            let spent = epsilon_classic(256.0 / 60_000.0, sigma, epochs * 60_000 / 256, 1e-5, &orders).expect("valid");
            assert!((spent.epsilon - want).abs() <= 0.005, "σ={sigma} epochs={epochs}: {spent:?}, published {want}");
        }
    }

    // tensorflow/privacy rdp_accountant_test.py, test_check_composition: two mechanisms composed by
    // adding RDP curves. With the classic conversion the published answer is ε = 8.509656 (5 places)
    // at order 2.5; the improved conversion must not be worse.
    #[test]
    fn composition_published() {
        let orders =
            [1.25, 1.5, 1.75, 2., 2.5, 3., 4., 5., 6., 7., 8., 10., 12., 14., 16., 20., 24., 28., 32., 64., 256.];
        let first = rdp_curve(1e-4, 0.4, 40_000, &orders).expect("valid");
        let second = rdp_curve(0.1, 2.0, 100, &orders).expect("valid");
        let total: Vec<f64> = first.iter().zip(&second).map(|(a, b)| a + b).collect();
        let classic = epsilon_from_rdp(&orders, &total, 1e-5, Conversion::Classic).expect("valid");
        assert!((classic.epsilon - 8.509656).abs() < 5e-6, "got {classic:?}");
        assert_eq!(classic.order, 2.5);
        let improved = epsilon_from_rdp(&orders, &total, 1e-5, Conversion::Improved).expect("valid");
        assert!(improved.epsilon <= 8.509656, "got {improved:?}");
    }

    // tensorflow/privacy rdp_accountant_test.py, test_get_privacy_spent_check_target_delta and
    // _check_target_eps (same numbers in dp_accounting's test_compute_epsilon_delta_pure_dp):
    // constant RDP 1.1 on orders 2..=32 at δ = 1e-5 gives ε = 1.32783806176 at order 32, and back.
    #[test]
    fn conversion_pure_dp_published() {
        let orders: Vec<f64> = (2..=32).map(f64::from).collect();
        let curve = vec![1.1; orders.len()];
        let spent = epsilon_from_rdp(&orders, &curve, 1e-5, Conversion::Improved).expect("valid");
        assert!((spent.epsilon - 1.32783806176).abs() < 5e-8, "got {spent:?}");
        assert_eq!(spent.order, 32.0);
        let back = delta_from_rdp(&orders, &curve, 1.32783806176, Conversion::Improved).expect("valid");
        assert!((back.delta - 1e-5).abs() < 5e-8, "got {back:?}");
        assert_eq!(back.order, 32.0);
    }

    // Same tests, second half: the plain Gaussian mechanism with σ = 4.530877117 is exactly
    // (1, 1e-6)-DP, and a fine order grid (0.001 steps) recovers ε = 1 and δ = 1e-6 to 7 places.
    // TF's grid starts at α = 1.0, which this API rejects, so it starts at 1.001.
    #[test]
    fn conversion_gaussian_published() {
        let orders: Vec<f64> = (1001..100_000).map(|i| 0.001 * f64::from(i)).collect();
        let curve = rdp_curve(1.0, 4.530877117, 1, &orders).expect("valid");
        let spent = epsilon_from_rdp(&orders, &curve, 1e-6, Conversion::Improved).expect("valid");
        assert!((spent.epsilon - 1.0).abs() < 5e-8, "got {spent:?}");
        let back = delta(1.0, 4.530877117, 1, 1.0, &orders).expect("valid");
        assert!((back.delta - 1e-6).abs() < 5e-8, "got {back:?}");
    }

    // tensorflow/privacy rdp_accountant_test.py, test_get_privacy_spent_gaussian (also in
    // dp_accounting): for the Gaussian mechanism with σ = 1 the RDP-derived δ(ε) must lie between the
    // exact optimum (Balle & Wang 2018, Thm 8) and the "standard" bound exp(−(ε − ½)²/2).
    #[test]
    fn delta_bracketed_by_gaussian_bounds() {
        let orders: Vec<f64> = (11..505).map(|x| 0.1 * f64::from(x)).collect();
        let curve = rdp_curve(1.0, 1.0, 1, &orders).expect("valid");
        let erfc = |x: f64| ln_erfc(x).exp();
        for e in (0..500).map(|x| 0.1 * f64::from(x)) {
            let got = delta_from_rdp(&orders, &curve, e, Conversion::Improved).expect("valid").delta;
            let optimal = erfc((e - 0.5) / SQRT_2) / 2.0 - e.exp() * erfc((e + 0.5) / SQRT_2) / 2.0;
            assert!(optimal <= got + 1e-300, "ε={e}: δ {got} below the optimum {optimal}");
            let standard = if e >= 0.5 { (-0.5 * (e - 0.5) * (e - 0.5)).exp() } else { 1.0 };
            assert!(got <= standard + 1e-300, "ε={e}: δ {got} above the standard bound {standard}");
        }
    }

    // TF Privacy's test_get_privacy_spent_consistency / dp_accounting's
    // test_epsilon_delta_consistency: δ → ε → δ round-trips at the same order whenever ε > 0.
    #[test]
    fn epsilon_delta_round_trip() {
        let orders: Vec<f64> = (2..50).map(f64::from).collect();
        for q in [0.01, 0.1, 0.8, 1.0] {
            for sigma in [0.1, 1.0, 3.0, 10.0, 100.0] {
                for d in [0.9, 0.5, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6, 1e-9, 1e-12] {
                    let forward = epsilon(q, sigma, 1, d, &orders).expect("valid");
                    let back = delta(q, sigma, 1, forward.epsilon, &orders).expect("valid");
                    if forward.epsilon > 0.0 {
                        assert_eq!(forward.order, back.order, "q={q} σ={sigma} δ={d}");
                        assert_close(back.delta, d, 1e-9, &format!("q={q} σ={sigma} δ={d}"));
                    } else {
                        assert!(back.delta <= d, "q={q} σ={sigma} δ={d}: {back:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn improved_never_worse_than_classic() {
        for &(q, sigma, steps) in &[(0.004, 1.1, 14_000), (0.01, 0.8, 1_000), (0.1, 3.0, 50), (1.0, 2.0, 10)] {
            for d in [1e-3, 1e-5, 1e-9] {
                let new = epsilon(q, sigma, steps, d, DEFAULT_ORDERS).expect("valid");
                let old = epsilon_classic(q, sigma, steps, d, DEFAULT_ORDERS).expect("valid");
                assert!(new.epsilon <= old.epsilon, "{new:?} vs {old:?}");
            }
        }
    }

    #[test]
    fn epsilon_is_monotone_in_parameters() {
        let eps =
            |q: f64, sigma: f64, steps: u64| epsilon(q, sigma, steps, 1e-5, DEFAULT_ORDERS).expect("valid").epsilon;
        let sigmas = [0.6, 0.8, 1.0, 1.1, 1.5, 2.0, 4.0, 8.0];
        for w in sigmas.windows(2) {
            assert!(eps(0.01, w[1], 1000) < eps(0.01, w[0], 1000), "ε must fall as σ grows: {w:?}");
        }
        let steps = [1, 10, 100, 1000, 10_000, 100_000];
        for w in steps.windows(2) {
            assert!(eps(0.01, 1.1, w[1]) > eps(0.01, 1.1, w[0]), "ε must grow with T: {w:?}");
        }
        let rates = [1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, 1.0];
        for w in rates.windows(2) {
            assert!(eps(w[1], 1.1, 100) > eps(w[0], 1.1, 100), "ε must grow with q: {w:?}");
        }
        // δ moves the other way.
        assert!(eps(0.01, 1.1, 1000) < epsilon(0.01, 1.1, 1000, 1e-7, DEFAULT_ORDERS).expect("valid").epsilon);
    }

    #[test]
    fn degenerate_inputs() {
        // No steps, or never sampled: nothing is spent.
        let none = epsilon(0.01, 1.0, 0, 1e-5, DEFAULT_ORDERS).expect("valid");
        assert_eq!(none.epsilon, 0.0);
        let never = epsilon(0.0, 1.0, 1000, 1e-5, DEFAULT_ORDERS).expect("valid");
        assert_eq!(never.epsilon, 0.0);
        assert_eq!(delta(0.0, 1.0, 1000, 0.0, DEFAULT_ORDERS).expect("valid").delta, 0.0);
        // An infinite curve gives ε = ∞ and δ = 1, not NaN.
        let inf = [f64::INFINITY; 3];
        let orders = [2.0, 3.0, 4.0];
        let spent = epsilon_from_rdp(&orders, &inf, 1e-5, Conversion::Improved).expect("valid");
        assert_eq!((spent.epsilon, spent.order), (f64::INFINITY, 2.0));
        let spent = delta_from_rdp(&orders, &inf, 1.0, Conversion::Improved).expect("valid");
        assert_eq!(spent.delta, 1.0);
    }

    #[test]
    fn extreme_parameters_stay_finite_or_infinite() {
        // Large orders with little noise: huge but finite, no overflow inside.
        for &(q, sigma, alpha) in &[(0.01, 0.1, 1024.0), (0.5, 0.05, 1024.0), (1e-9, 0.3, 1023.5), (0.999, 0.1, 1000.5)]
        {
            let r = rdp(q, sigma, alpha).expect("valid");
            assert!(r.is_finite() && r > 0.0, "q={q} σ={sigma} α={alpha}: {r}");
        }
        // σ² underflows: the divergence is unbounded.
        assert_eq!(rdp(0.01, 1e-170, 2.5), Ok(f64::INFINITY));
        assert_eq!(rdp(0.01, 1e-170, 3.0), Ok(f64::INFINITY));
        // Tiny but representable σ²: astronomically large or infinite, never NaN.
        for alpha in [1.5, 2.0, 64.5, 1024.0] {
            let r = rdp(0.01, 1e-150, alpha).expect("valid");
            assert!(r > 1e250, "α={alpha}: {r}");
        }
        // Huge σ: free up to rounding of ln(1 + tiny), including q = ½ where z0's log-odds vanish.
        for &(q, alpha) in &[(0.5, 2.5), (0.5, 3.0), (0.01, 10.5), (0.99, 7.0)] {
            let r = rdp(q, 1e200, alpha).expect("valid");
            assert!((0.0..1e-15).contains(&r), "q={q} α={alpha}: {r}");
        }
        // The default grid, including order 1024, on a typical DP-SGD run.
        let spent = epsilon(256.0 / 60_000.0, 1.1, 60 * 60_000 / 256, 1e-5, DEFAULT_ORDERS).expect("valid");
        assert!(spent.epsilon.is_finite() && spent.epsilon > 0.0, "{spent:?}");
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        let o = DEFAULT_ORDERS;
        for q in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(rdp(q, 1.0, 2.0), Err(Error::SampleRate { .. })), "q = {q}");
            assert!(matches!(epsilon(q, 1.0, 10, 1e-5, o), Err(Error::SampleRate { .. })), "q = {q}");
        }
        assert_eq!(rdp(1.5, 1.0, 2.0), Err(Error::SampleRate { value: 1.5 }));
        for sigma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(rdp(0.1, sigma, 2.0), Err(Error::NoiseMultiplier { .. })), "σ = {sigma}");
            assert!(matches!(delta(0.1, sigma, 10, 1.0, o), Err(Error::NoiseMultiplier { .. })), "σ = {sigma}");
        }
        assert_eq!(rdp(0.1, 0.0, 2.0), Err(Error::NoiseMultiplier { value: 0.0 }));
        for alpha in [1.0, 0.5, -3.0, f64::NAN, f64::INFINITY, MAX_ORDER + 1.0] {
            assert!(matches!(rdp(0.1, 1.0, alpha), Err(Error::Order { .. })), "α = {alpha}");
            assert!(matches!(epsilon(0.1, 1.0, 10, 1e-5, &[2.0, alpha]), Err(Error::Order { .. })), "α = {alpha}");
        }
        assert_eq!(rdp(0.1, 1.0, 1.0), Err(Error::Order { value: 1.0 }));
        for d in [0.0, 1.0, -1e-5, 2.0, f64::NAN] {
            assert!(matches!(epsilon(0.1, 1.0, 10, d, o), Err(Error::Delta { .. })), "δ = {d}");
            assert!(matches!(epsilon_classic(0.1, 1.0, 10, d, o), Err(Error::Delta { .. })), "δ = {d}");
        }
        assert_eq!(epsilon(0.1, 1.0, 10, 0.0, o), Err(Error::Delta { value: 0.0 }));
        for e in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(delta(0.1, 1.0, 10, e, o), Err(Error::Epsilon { .. })), "ε = {e}");
        }
        assert_eq!(delta(0.1, 1.0, 10, -1.0, o), Err(Error::Epsilon { value: -1.0 }));
        assert_eq!(epsilon(0.1, 1.0, 10, 1e-5, &[]), Err(Error::NoOrders));
        assert_eq!(rdp_curve(0.1, 1.0, 10, &[]), Err(Error::NoOrders));
        assert_eq!(
            epsilon_from_rdp(&[2.0, 3.0], &[0.1], 1e-5, Conversion::Improved),
            Err(Error::LengthMismatch { orders: 2, rdp: 1 })
        );
        assert_eq!(
            delta_from_rdp(&[2.0, 3.0], &[0.1, -0.2], 1.0, Conversion::Classic),
            Err(Error::Rdp { value: -0.2 })
        );
        assert!(matches!(epsilon_from_rdp(&[2.0], &[f64::NAN], 1e-5, Conversion::Improved), Err(Error::Rdp { .. })));
        // Messages name the parameter.
        assert_eq!(Error::Delta { value: 2.0 }.to_string(), "delta must be in (0, 1), got 2");
    }

    #[test]
    fn default_orders_are_valid_and_sorted() {
        assert_eq!(DEFAULT_ORDERS.len(), 36 + 54 + 4);
        assert!(DEFAULT_ORDERS.windows(2).all(|w| w[0] < w[1]));
        assert!(DEFAULT_ORDERS.iter().all(|&o| check_order(o).is_ok()));
        assert_eq!((DEFAULT_ORDERS[0], DEFAULT_ORDERS[35], DEFAULT_ORDERS[36]), (1.25, 10.0, 11.0));
    }
}
