//! Client behaviours of an attacker, each as its paper defines it.
//!
//! | attack | what the client sends | reference |
//! |---|---|---|
//! | `label-flip` | an honest update trained on labels y → 9 − y | Biggio et al. 2012; Tolpegin et al., ESORICS 2020 |
//! | `sign-flip` | −u, the negated honest update | Karimireddy, He and Jaggi, ICML 2021 (§ attacks); Allen-Zhu et al. 2021 |
//! | `scale:λ` | λ·u, the honest update boosted | Bhagoji et al., ICML 2019 ("explicit boosting") |
//! | `noise` | N(0, σ²I) in place of an update (σ = `noise:σ`, default 1) | Blanchard et al., NeurIPS 2017 (Gaussian Byzantine); Fang et al., USENIX Sec. 2020 |
//! | `free-ride` | a zero update (`free-ride`) or the last global step replayed (`free-ride:stale`) | Lin, Du and Liu 2019, "Free-riders in federated learning" |
//! | `alie` | μ − z·σ per coordinate over the honest updates, z = Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − f | Baruch, Baruch and Goldberg, NeurIPS 2019 ("A Little Is Enough") |
//! | `ipm:ε` | −ε·μ, μ the honest updates' mean (default ε = 0.1) | Xie, Koyejo and Gupta, UAI 2020 (inner-product manipulation) |
//! | `backdoor` | trained with half of each batch stamped with a 4×4 white square at the bottom right and relabelled to the target (7), then scaled by n/f (model replacement) | Gu et al. 2017 (BadNets trigger); Bagdasaryan et al., AISTATS 2020 (model replacement) |
//!
//! ALIE and IPM attackers collude and know the honest updates' statistics, as in the papers
//! (an omniscient adversary is the stronger one to defend against). All attackers of a round
//! send the same ALIE or IPM vector.

use crate::Error;
use crate::data::SIDE;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use std::fmt;
use std::str::FromStr;

/// The backdoor's target class.
pub const BACKDOOR_TARGET: u8 = 7;

/// One attack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// Train on flipped labels.
    LabelFlip,
    /// Send the negated update.
    SignFlip,
    /// Send the update times λ.
    Scale(f32),
    /// Send Gaussian noise of this standard deviation.
    Noise(f32),
    /// Send nothing useful: zero (`stale = false`) or the previous global step (`stale = true`).
    FreeRide {
        /// Replay the last global change instead of zero.
        stale: bool,
    },
    /// A Little Is Enough.
    Alie,
    /// Inner-product manipulation with this ε.
    Ipm(f32),
    /// Pixel-pattern backdoor with model-replacement scaling.
    Backdoor,
}

impl Attack {
    /// The attacks `mixed` deals out, in order.
    pub const MIXED: [Attack; 8] = [
        Attack::Alie,
        Attack::Ipm(0.1),
        Attack::LabelFlip,
        Attack::SignFlip,
        Attack::Scale(10.0),
        Attack::Noise(1.0),
        Attack::FreeRide { stale: false },
        Attack::Backdoor,
    ];

    /// Whether it needs the honest updates' statistics (collusion).
    pub fn colludes(self) -> bool {
        matches!(self, Attack::Alie | Attack::Ipm(_))
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attack::LabelFlip => write!(f, "label-flip"),
            Attack::SignFlip => write!(f, "sign-flip"),
            Attack::Scale(l) => write!(f, "scale:{l}"),
            Attack::Noise(s) => write!(f, "noise:{s}"),
            Attack::FreeRide { stale: false } => write!(f, "free-ride"),
            Attack::FreeRide { stale: true } => write!(f, "free-ride:stale"),
            Attack::Alie => write!(f, "alie"),
            Attack::Ipm(e) => write!(f, "ipm:{e}"),
            Attack::Backdoor => write!(f, "backdoor"),
        }
    }
}

/// Which attack the malicious clients run.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Every attacker runs this one.
    One(Attack),
    /// Attacker k runs `Attack::MIXED[k % 8]`.
    Mixed,
    /// Attacker k runs the k-th of these (cyclically); written `a,b,c`.
    List(Vec<Attack>),
}

impl Plan {
    /// The attack of the k-th attacker.
    pub fn for_attacker(&self, k: usize) -> Attack {
        match self {
            Plan::One(a) => *a,
            Plan::Mixed => Attack::MIXED[k % Attack::MIXED.len()],
            Plan::List(v) if v.is_empty() => Attack::MIXED[k % Attack::MIXED.len()],
            Plan::List(v) => v[k % v.len()],
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::One(a) => a.fmt(f),
            Plan::Mixed => write!(f, "mixed"),
            Plan::List(v) => {
                let parts: Vec<String> = v.iter().map(ToString::to_string).collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

impl FromStr for Attack {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Parse {
            what: "attack (label-flip | sign-flip | scale:λ | noise[:σ] | free-ride[:stale] | alie | ipm[:ε] | backdoor)",
            text: s.to_string(),
        };
        let num = |v: &str| -> Result<f32, Error> {
            let x: f32 = v.parse().map_err(|_| bad())?;
            if x.is_finite() { Ok(x) } else { Err(bad()) }
        };
        Ok(match s.split_once(':') {
            None => match s {
                "label-flip" => Attack::LabelFlip,
                "sign-flip" => Attack::SignFlip,
                "noise" => Attack::Noise(1.0),
                "free-ride" => Attack::FreeRide { stale: false },
                "alie" => Attack::Alie,
                "ipm" => Attack::Ipm(0.1),
                "backdoor" => Attack::Backdoor,
                "scale" => Attack::Scale(100.0),
                _ => return Err(bad()),
            },
            Some(("scale", v)) => Attack::Scale(num(v)?),
            Some(("noise", v)) if num(v)? > 0.0 => Attack::Noise(num(v)?),
            Some(("ipm", v)) => Attack::Ipm(num(v)?),
            Some(("free-ride", "stale")) => Attack::FreeRide { stale: true },
            _ => return Err(bad()),
        })
    }
}

impl FromStr for Plan {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "mixed" {
            Ok(Plan::Mixed)
        } else if s.contains(',') {
            Ok(Plan::List(s.split(',').map(str::parse).collect::<Result<_, _>>()?))
        } else {
            Ok(Plan::One(s.parse()?))
        }
    }
}

/// Label flipping: y → 9 − y.
pub fn flip_label(l: u8) -> u8 {
    9 - l
}

/// Stamps the backdoor trigger (a 4×4 white square, one pixel in from the bottom-right corner)
/// on an image whose pixels are in [0, 1].
pub fn stamp_trigger(pixels: &mut [f32]) {
    for r in SIDE - 5..SIDE - 1 {
        for c in SIDE - 5..SIDE - 1 {
            pixels[r * SIDE + c] = 1.0;
        }
    }
}

/// The inverse of the standard normal CDF (Acklam's rational approximation, relative error
/// below 1.2e-9 on (0, 1)).
#[allow(clippy::excessive_precision)] // Acklam's published coefficients, kept as printed
pub fn inv_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// ALIE's z for n clients of which f are attackers: s = ⌊n/2 + 1⌋ − f supporters are needed,
/// z = Φ⁻¹((n − s)/n).
pub fn alie_z(n: usize, f: usize) -> f64 {
    let s = (n / 2 + 1).saturating_sub(f);
    inv_normal_cdf((n - s.min(n)) as f64 / n as f64)
}

/// Per-coordinate mean and (population) standard deviation of `updates`.
pub fn mean_std(updates: &[&[f32]]) -> (Vec<f32>, Vec<f32>) {
    let dim = updates.first().map_or(0, |u| u.len());
    let n = updates.len().max(1) as f64;
    let mut mean = vec![0f64; dim];
    for u in updates {
        mean.iter_mut().zip(u.iter()).for_each(|(m, v)| *m += f64::from(*v) / n);
    }
    let mut var = vec![0f64; dim];
    for u in updates {
        var.iter_mut().zip(u.iter().zip(&mean)).for_each(|(s, (v, m))| *s += (f64::from(*v) - m).powi(2) / n);
    }
    (mean.iter().map(|&m| m as f32).collect(), var.iter().map(|&v| v.sqrt() as f32).collect())
}

/// ALIE's vector: μ − z·σ per coordinate.
pub fn alie(mean: &[f32], std: &[f32], z: f64) -> Vec<f32> {
    mean.iter().zip(std).map(|(m, s)| (f64::from(*m) - z * f64::from(*s)) as f32).collect()
}

/// IPM's vector: −ε·μ.
pub fn ipm(mean: &[f32], eps: f32) -> Vec<f32> {
    mean.iter().map(|m| -eps * m).collect()
}

/// Gaussian noise N(0, σ²) of `dim` coordinates.
pub fn gaussian(dim: usize, sigma: f32, rng: &mut ChaCha20Rng) -> Result<Vec<f32>, Error> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::Shape { what: "noise σ" });
    }
    let n = Normal::new(0.0f32, sigma).map_err(|_| Error::Shape { what: "noise σ" })?;
    Ok((0..dim).map(|_| n.sample(rng)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn inverse_normal_cdf_matches_known_quantiles() {
        for (p, z) in [
            (0.5, 0.0),
            (0.75, 0.674_489_750_196_081_7),
            (0.975, 1.959_963_984_540_054),
            (0.01, -2.326_347_874_040_841),
            (0.999, 3.090_232_306_167_813),
        ] {
            assert!((inv_normal_cdf(p) - z).abs() < 1e-8, "Φ⁻¹({p}) = {} not {z}", inv_normal_cdf(p));
        }
    }

    #[test]
    fn alie_is_mean_minus_z_sigma_with_the_papers_z() {
        // n = 20, f = 6: s = 11 − 6 = 5, z = Φ⁻¹(15/20) = Φ⁻¹(0.75).
        assert!((alie_z(20, 6) - 0.674_489_750_196_081_7).abs() < 1e-8);
        // n = 50, f = 24 (the paper's Table): s = 2, z = Φ⁻¹(0.96) ≈ 1.75.
        assert!((alie_z(50, 24) - 1.750_686_071_252_17).abs() < 1e-6);
        let a = [1.0f32, 2.0, -1.0];
        let b = [3.0f32, 2.0, 1.0];
        let (m, s) = mean_std(&[&a, &b]);
        assert_eq!(m, vec![2.0, 2.0, 0.0]);
        assert_eq!(s, vec![1.0, 0.0, 1.0]);
        assert_eq!(alie(&m, &s, 1.5), vec![0.5, 2.0, -1.5]);
    }

    #[test]
    fn ipm_sign_flip_scale_and_noise_follow_their_formulas() {
        assert_eq!(ipm(&[2.0, -4.0], 0.5), vec![-1.0, 2.0]);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let g = gaussian(20_000, 2.0, &mut rng).expect("noise");
        let var = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / g.len() as f64;
        assert!((var - 4.0).abs() < 0.15, "variance {var}");
        assert!(gaussian(3, -1.0, &mut rng).is_err());
        assert_eq!(flip_label(0), 9);
        assert_eq!(flip_label(7), 2);
        let mut img = vec![0.0f32; 784];
        stamp_trigger(&mut img);
        assert_eq!(img.iter().filter(|v| **v == 1.0).count(), 16);
        assert_eq!(img[26 * 28 + 26], 1.0);
        assert_eq!(img[27 * 28 + 27], 0.0);
    }

    #[test]
    fn attacks_parse_and_print_back() {
        for s in [
            "label-flip",
            "sign-flip",
            "scale:100",
            "noise:1",
            "free-ride",
            "free-ride:stale",
            "alie",
            "ipm:0.1",
            "backdoor",
        ] {
            let a: Attack = s.parse().expect(s);
            assert_eq!(a.to_string(), s);
        }
        assert_eq!("mixed".parse::<Plan>().expect("mixed"), Plan::Mixed);
        assert_eq!(Plan::Mixed.for_attacker(9), Attack::Ipm(0.1));
        for bad in ["scale:x", "noise:-1", "ipm:nan", "trojan", "free-ride:later"] {
            assert!(bad.parse::<Attack>().is_err(), "{bad}");
        }
    }
}
