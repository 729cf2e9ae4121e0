//! Philox4x32-10 counter-based random numbers and the Gaussian noise built on them.
//!
//! The CPU and CUDA backends must add the *same bits* of noise, so that a round aggregated on one
//! can be checked against the other. Everything here therefore uses only IEEE-754 operations that
//! are correctly rounded on both (integer ops, f64 `+ − × ÷ sqrt`, conversions), in the same order,
//! with no fused multiply-add: the CUDA side is compiled with `--fmad=false`, and `ln`/`sin`/`cos`
//! are the polynomial routines below rather than the platform's libm, whose last bits differ
//! between glibc and CUDA. `kernels/cuda/noise.cu` is a line-by-line port; keep the two in step.
//!
//! Stream layout (docs/kernels.md repeats it for other implementations): key = `seed` (low
//! word first), counter = (j low, j high, round low, round high) for block j = coordinate / 4; the
//! four output words of block j give the Gaussians of coordinates 4j … 4j+3 through Box–Muller:
//! (x0, x1) → (z0, z1) and (x2, x3) → (z2, z3), with u = (x_even + 1)·2⁻³², t = x_odd·2⁻³²,
//! r = √(−2 ln u), z_even = r·cos 2πt, z_odd = r·sin 2πt, each rounded once to f32.
//!
//! A round's `seed` and `round` words are not chosen by hand in production: [`Secret::stream`]
//! derives both from a 32-byte secret drawn from the OS CSPRNG, so 128 bits of the block input
//! are secret. Whoever knows them can regenerate the noise and subtract it from the aggregate, so
//! the secret never goes into a report; the report carries [`Secret::commitment`], and the secret
//! itself is only sealed to an auditor.

use zeroize::Zeroizing;

/// Key-derivation context of [`Secret::commitment`] (BLAKE3 `derive_key`).
pub const COMMITMENT_CONTEXT: &str = "vain 2026 dp-noise commitment v1";
/// The noise stream's version: what [`gaussian4`] computes from the Philox words (2: the series
/// multiply by precomputed reciprocals; 1 divided). Reports carry it, so an auditor regenerates
/// a round's noise with the same stream or is told it cannot.
pub const STREAM_VERSION: u32 = 2;
/// Key-derivation context of [`Secret::stream`] (BLAKE3 `derive_key`).
pub const STREAM_CONTEXT: &str = "vain 2026 dp-noise stream v2";

/// The secret behind a round's DP noise: 32 bytes, zeroed on drop, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<[u8; 32]>);

impl Secret {
    /// A fresh secret from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut b = Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut())?;
        Ok(Self(b))
    }

    /// A secret from its bytes (an auditor's opened copy, or a test's fixed value).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes, for sealing to an auditor. Never log or report them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public commitment: BLAKE3 `derive_key(COMMITMENT_CONTEXT, secret)`. Hiding because
    /// the secret is 256 uniformly random bits; binding because BLAKE3 is collision resistant.
    pub fn commitment(&self) -> [u8; 32] {
        blake3::derive_key(COMMITMENT_CONTEXT, self.0.as_ref())
    }

    /// The (`seed`, `round`) words of round `round`'s noise stream: the first 16 bytes of
    /// BLAKE3 `derive_key(STREAM_CONTEXT, secret ‖ round as u64 LE)`, little-endian.
    pub fn stream(&self, round: u64) -> (u64, u64) {
        let mut h = blake3::Hasher::new_derive_key(STREAM_CONTEXT);
        h.update(self.0.as_ref());
        h.update(&round.to_le_bytes());
        let out = h.finalize();
        let b = out.as_bytes();
        let word =
            |i: usize| u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
        (word(0), word(8))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(commitment {})", hex::encode(&self.commitment()[..8]))
    }
}

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32 block function with 10 rounds (Salmon et al., SC'11; Random123's reference).
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

const LN2: f64 = std::f64::consts::LN_2;
const SQRT2: f64 = std::f64::consts::SQRT_2;
const HALF_PI: f64 = std::f64::consts::FRAC_PI_2;
/// 2^-32, exact.
const TWO_M32: f64 = 1.0 / 4_294_967_296.0;

/// Reciprocals the series multiply by, each the correctly rounded `1 / d` (a division costs tens
/// of instructions on a GPU, a multiply one). Entry 0 is unused. `INV_ODD[k]` = 1/(2k + 1)…
const INV_ODD: [f64; 13] = reciprocals(0);
/// … `INV_SIN[k]` = 1/((2k)(2k + 1)) and `INV_COS[k]` = 1/((2k − 1)(2k)) (the Taylor steps).
const INV_SIN: [f64; 12] = reciprocals(1);
const INV_COS: [f64; 12] = reciprocals(2);

/// The table of `which` (0: odd numbers, 1: sine steps, 2: cosine steps).
const fn reciprocals<const N: usize>(which: u8) -> [f64; N] {
    let mut t = [0.0; N];
    let mut k = 1;
    while k < N {
        let k2 = 2 * k as u64;
        let d = match which {
            0 => k2 + 1,
            1 => k2 * (k2 + 1),
            _ => (k2 - 1) * k2,
        };
        t[k] = 1.0 / d as f64;
        k += 1;
    }
    t
}

/// Natural log for normal positive `x` from atanh's series, ≤ 2 ulp; only `+ − × ÷`.
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // m ∈ [1, 2); folded to [√½, √2) so the series argument stays below 0.172.
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // 2·atanh(s) = 2(s + s³/3 + s⁵/5 + …); |s| < 0.172 so terms to s²⁵ reach 1e-19.
    let mut p = INV_ODD[12];
    for k in (1..12).rev() {
        p = INV_ODD[k] + s2 * p;
    }
    let ln_m = 2.0 * s + 2.0 * s * s2 * p;
    e as f64 * LN2 + ln_m
}

/// (sin 2πt, cos 2πt) for t ∈ [0, 1), by quadrant and Taylor series on [0, π/2); only `+ − × ÷`.
pub fn sincos_2pi(t: f64) -> (f64, f64) {
    let t4 = t * 4.0;
    let q = t4 as u32; // floor: t4 ≥ 0
    let a = (t4 - f64::from(q)) * HALF_PI;
    let a2 = a * a;
    // sin a = a(1 − a²/3! + a⁴/5! − … − a²²/23!), cos a = 1 − a²/2! + … + a²²/22!; the last
    // term at a = π/2 is below 1e-17.
    let mut s = 1.0;
    let mut c = 1.0;
    for k in (1..12).rev() {
        s = 1.0 - a2 * s * INV_SIN[k];
        c = 1.0 - a2 * c * INV_COS[k];
    }
    let s = a * s;
    match q & 3 {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// Four standard normal variates for coordinate block `block` of stream (`seed`, `round`).
pub fn gaussian4(seed: u64, round: u64, block: u64) -> [f32; 4] {
    let x = philox4x32_10(
        [block as u32, (block >> 32) as u32, round as u32, (round >> 32) as u32],
        [seed as u32, (seed >> 32) as u32],
    );
    let pair = |a: u32, b: u32| {
        let u = (f64::from(a) + 1.0) * TWO_M32;
        let r = (-2.0 * ln(u)).sqrt();
        let (s, c) = sincos_2pi(f64::from(b) * TWO_M32);
        ((r * c) as f32, (r * s) as f32)
    };
    let (z0, z1) = pair(x[0], x[1]);
    let (z2, z3) = pair(x[2], x[3]);
    [z0, z1, z2, z3]
}

/// Adds `std × z_i` to `out[i]`, where coordinate `first + i` of the stream gives `z_i`; the
/// single f32 multiply and add are what the CUDA kernel does too.
pub fn add_noise(out: &mut [f32], first: u64, std: f32, seed: u64, round: u64) {
    let mut i = 0usize;
    while i < out.len() {
        let coord = first + i as u64;
        let z = gaussian4(seed, round, coord / 4);
        let lane = (coord % 4) as usize;
        let take = (4 - lane).min(out.len() - i);
        for l in 0..take {
            out[i + l] += std * z[lane + l];
        }
        i += take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123 `tests/kat_vectors`, the three `philox4x32 10` lines (counter, key → output).
    #[test]
    fn random123_known_answers() {
        let kat = [
            ([0u32; 4], [0u32; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in kat {
            assert_eq!(philox4x32_10(ctr, key), want);
        }
    }

    #[test]
    fn ln_matches_libm_to_two_ulp() {
        let mut x = 2f64.powi(-32);
        while x <= 1.0 {
            for f in [1.0, 1.1, 1.3, 1.41, 1.42, 1.7, 1.999] {
                let v = x * f;
                let (a, b) = (ln(v), v.ln());
                assert!((a - b).abs() <= 2.0 * f64::EPSILON * b.abs().max(1.0), "ln({v}) = {a}, libm {b}");
            }
            x *= 2.0;
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sincos_matches_libm() {
        for i in 0..4096 {
            let t = f64::from(i) / 4096.0 + 1.0 / 9973.0;
            let t = t - t.floor();
            let (s, c) = sincos_2pi(t);
            let a = 2.0 * std::f64::consts::PI * t;
            // libm's own argument 2πt is rounded (≈ 4e-16 at t ≈ 1), so allow a few of those.
            assert!((s - a.sin()).abs() < 2e-15 && (c - a.cos()).abs() < 2e-15, "t={t}: {s} {c}");
        }
    }

    #[test]
    fn gaussian_moments() {
        let n = 1u64 << 18;
        let (mut m1, mut m2, mut m4, mut tail) = (0f64, 0f64, 0f64, 0u64);
        for b in 0..n / 4 {
            for z in gaussian4(0x1234_5678_9abc_def0, 7, b) {
                let z = f64::from(z);
                m1 += z;
                m2 += z * z;
                m4 += z * z * z * z;
                tail += u64::from(z.abs() > 3.0);
            }
        }
        let nf = n as f64;
        // Standard errors at n = 2¹⁸: mean 0.002, variance 0.003, 4th moment 0.019.
        assert!((m1 / nf).abs() < 0.01, "mean {}", m1 / nf);
        assert!((m2 / nf - 1.0).abs() < 0.015, "variance {}", m2 / nf);
        assert!((m4 / nf - 3.0).abs() < 0.1, "4th moment {}", m4 / nf);
        // P(|z| > 3) = 0.0027.
        let p = tail as f64 / nf;
        assert!((p - 0.0027).abs() < 0.0006, "tail {p}");
    }

    #[test]
    fn secret_streams_differ_by_round_and_secret_and_debug_hides_the_secret() {
        let a = Secret::from_bytes([7; 32]);
        let b = Secret::from_bytes([8; 32]);
        assert_ne!(a.stream(1), a.stream(2));
        assert_ne!(a.stream(1), b.stream(1));
        assert_ne!(a.commitment(), b.commitment());
        assert_ne!(a.commitment()[..16], [a.stream(0).0.to_le_bytes(), a.stream(0).1.to_le_bytes()].concat()[..]);
        let shown = format!("{a:?}");
        assert!(!shown.contains("0707"), "{shown}");
        assert!(shown.contains("commitment"));
        let fresh = Secret::generate().expect("OS random");
        assert_ne!(fresh.expose(), Secret::generate().expect("OS random").expose());
    }

    #[test]
    fn streams_differ_by_seed_and_round_and_noise_is_positional() {
        assert_ne!(gaussian4(1, 0, 0), gaussian4(2, 0, 0));
        assert_ne!(gaussian4(1, 0, 0), gaussian4(1, 1, 0));
        let mut whole = vec![1.5f32; 37];
        add_noise(&mut whole, 0, 0.5, 9, 3);
        let mut parts = vec![1.5f32; 37];
        let (a, b) = parts.split_at_mut(13);
        add_noise(a, 0, 0.5, 9, 3);
        add_noise(b, 13, 0.5, 9, 3);
        assert_eq!(whole, parts);
        assert!(whole.iter().all(|v| *v != 1.5));
    }
}
