//! Prints the expected values embedded in kernels/cuda/emu/noise_test.cpp, from the Rust
//! reference itself (`vain_kernels::philox`). Not run by the tests: run it only to regenerate the
//! tables after a deliberate change of the noise stream (bump `philox::STREAM_VERSION`), and
//! paste its output over the tables in noise_test.cpp:
//!
//!   cargo run --release -p vain-kernels --example noise_expected
//!
//! philox.rs's own unit test `random123_known_answers` anchors philox4x32_10 to Random123's
//! published known-answer vectors, so these tables are anchored too; noise_test.cpp also
//! checks those vectors directly against noise.cu.

use vain_kernels::philox;

const TWO_M32: f64 = 1.0 / 4_294_967_296.0;

fn fnv1a(bits: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bits {
        for byte in b.to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

// Inputs on both sides of √2 on purpose (the fold in `ln`), not approximations of it.
#[allow(clippy::approx_constant)]
fn main() {
    // add_noise(out, first = 0, std, seed, round) with out[i] = ((i % 8) − 4)·base beforehand.
    // The full output is pinned by an FNV-1a hash of its bits; samples (every value for small
    // dims) make a mismatch readable.
    let cases: [(usize, f32, u64, u64, f32); 4] = [
        (37, 0.5, 9, 3, 0.125),
        (1001, 1.25, 0x1234_5678_9abc_def0, 7, 0.125),
        (5, 1e-3, 0, 0, 0.125),
        (4096, 1.0, u64::MAX, u64::MAX, 0.0),
    ];
    println!("static const NoiseCase kNoiseCases[] = {{");
    for (dim, std, seed, round, base) in cases {
        let mut out: Vec<f32> = (0..dim).map(|i| ((i % 8) as i32 - 4) as f32 * base).collect();
        philox::add_noise(&mut out, 0, std, seed, round);
        let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        println!(
            "    {{{dim}, {:#010x}u, {seed:#x}ull, {round:#x}ull, {:#010x}u, {:#018x}ull, {{",
            std.to_bits(),
            base.to_bits(),
            fnv1a(&bits)
        );
        let idx: Vec<usize> = if dim <= 64 {
            (0..dim).collect()
        } else {
            let step = if dim < 2000 { 100 } else { 512 };
            let mut v: Vec<usize> = (0..8).chain((0..dim).step_by(step)).chain(dim - 5..dim).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let items: Vec<String> = idx.iter().map(|&i| format!("{{{i}, {:#010x}u}}", bits[i])).collect();
        for row in items.chunks(5) {
            println!("        {},", row.join(", "));
        }
        println!("    }}}},");
    }
    println!("}};");

    // gaussian4 at counters add_noise cannot reach with small dims (block ≥ 2³², big rounds).
    println!("static const G4Case kG4Cases[] = {{");
    for (seed, round, block) in [
        (0u64, 0u64, 0x1_0000_0005u64),
        (0x0123_4567_89ab_cdef, 0xffff_ffff_0000_0001, u64::MAX),
        (42, 1 << 40, 0x8000_0000),
    ] {
        let z: Vec<String> =
            philox::gaussian4(seed, round, block).iter().map(|v| format!("{:#010x}u", v.to_bits())).collect();
        println!("    {{{seed:#x}ull, {round:#x}ull, {block:#x}ull, {{{}}}}},", z.join(", "));
    }
    println!("}};");

    // ln at the exponent extremes of u = (a + 1)·2⁻³², both sides of the √2 fold, and 1.
    println!("static const U64Pair kLnCases[] = {{");
    for x in [2f64.powi(-32), 1.0, 1.414_213_56, 1.414_213_57, 0.75, 0.5, 0.999_999_999_767_169, 3.0e-5] {
        println!("    {{{:#018x}ull, {:#018x}ull}},", x.to_bits(), philox::ln(x).to_bits());
    }
    println!("}};");

    // sincos_2pi at quadrant boundaries and just below them, and two generic points.
    println!("static const SinCosCase kSinCosCases[] = {{");
    for t in [0.0f64, 0.125, 0.25, 0.5, 0.75, 0.249_999_999_9, 0.999_999_999_767_169_4, 0.3, 0.618_033_988_7] {
        let (s, c) = philox::sincos_2pi(t);
        println!("    {{{:#018x}ull, {:#018x}ull, {:#018x}ull}},", t.to_bits(), s.to_bits(), c.to_bits());
    }
    println!("}};");

    // Box–Muller of one word pair exactly as gaussian4's `pair` closure computes it, at edge
    // words: u = 2⁻³² and u = 1 (r = 0), t at each quadrant start and at the top.
    println!("static const BoxMullerCase kBoxMullerCases[] = {{");
    for (a, b) in [
        (0u32, 0u32),
        (0xffff_ffff, 0x4000_0000),
        (0, 0x8000_0000),
        (1, 0xc000_0000),
        (0x7fff_ffff, 0xffff_ffff),
        (12345, 0x3fff_ffff),
    ] {
        let u = (f64::from(a) + 1.0) * TWO_M32;
        let r = (-2.0 * philox::ln(u)).sqrt();
        let (s, c) = philox::sincos_2pi(f64::from(b) * TWO_M32);
        println!(
            "    {{{a:#010x}u, {b:#010x}u, {:#010x}u, {:#010x}u}},",
            ((r * c) as f32).to_bits(),
            ((r * s) as f32).to_bits()
        );
    }
    println!("}};");
}
