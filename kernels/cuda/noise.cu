// noise.cu — Gaussian noise for differential privacy from the Philox4x32-10 stream.
// Compiled at run time by NVRTC (--fmad=false) after common.cuh (u64, u32, block_sum).
//
// A line-by-line port of kernels/src/philox.rs (`philox4x32_10`, `ln`, `sincos_2pi`,
// `gaussian4`, `add_noise`): the CPU and CUDA backends must add the *same bits*. Every f64 and
// f32 operation is written as an explicit round-to-nearest intrinsic (__dadd_rn, __dmul_rn, …)
// in the reference's order, so no FMA contraction can happen even if --fmad changed; the
// conversions are the correctly rounded ones of the reference. Keep the two files in step.
//
// Layout: `out` is `dim` f32. Thread t (grid-stride) handles coordinate block t = coordinates
// 4t … 4t+3 (the last block may be partial), whose four Gaussians come from one Philox call
// with counter (t low, t high, round low, round high) and key (seed low, seed high).


#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ double bits_f64(u64 b) { return __longlong_as_double((long long)b); }

#define VAIN_LN2 bits_f64(0x3FE62E42FEFA39EFull)      // std::f64::consts::LN_2
#define VAIN_SQRT2 bits_f64(0x3FF6A09E667F3BCDull)    // std::f64::consts::SQRT_2
#define VAIN_HALF_PI bits_f64(0x3FF921FB54442D18ull)  // std::f64::consts::FRAC_PI_2
#define VAIN_TWO_M32 bits_f64(0x3DF0000000000000ull)  // 2^-32

// philox.rs `philox4x32_10`.
__device__ __forceinline__ void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const u64 p0 = (u64)PHILOX_M0 * (u64)c[0];
        const u64 p1 = (u64)PHILOX_M1 * (u64)c[2];
        const u32 n0 = (u32)(p1 >> 32) ^ c[1] ^ k0;
        const u32 n1 = (u32)p1;
        const u32 n2 = (u32)(p0 >> 32) ^ c[3] ^ k1;
        const u32 n3 = (u32)p0;
        c[0] = n0;
        c[1] = n1;
        c[2] = n2;
        c[3] = n3;
    }
}

// philox.rs `INV_ODD`, `INV_SIN`, `INV_COS`: correctly rounded reciprocals, so the series
// multiply where a division would cost tens of instructions (entry 0 unused).
#define VAIN_INV_ODD {0ull, 0x3FD5555555555555ull, 0x3FC999999999999Aull, 0x3FC2492492492492ull, \
    0x3FBC71C71C71C71Cull, 0x3FB745D1745D1746ull, 0x3FB3B13B13B13B14ull, 0x3FB1111111111111ull, \
    0x3FAE1E1E1E1E1E1Eull, 0x3FAAF286BCA1AF28ull, 0x3FA8618618618618ull, 0x3FA642C8590B2164ull, \
    0x3FA47AE147AE147Bull}
#define VAIN_INV_SIN {0ull, 0x3FC5555555555555ull, 0x3FA999999999999Aull, 0x3F98618618618618ull, \
    0x3F8C71C71C71C71Cull, 0x3F829E4129E4129Eull, 0x3F7A41A41A41A41Aull, 0x3F73813813813814ull, \
    0x3F6E1E1E1E1E1E1Eull, 0x3F67F405FD017F40ull, 0x3F63813813813814ull, 0x3F603091B51F5E1Aull}
#define VAIN_INV_COS {0ull, 0x3FE0000000000000ull, 0x3FB5555555555555ull, 0x3FA1111111111111ull, \
    0x3F92492492492492ull, 0x3F86C16C16C16C17ull, 0x3F7F07C1F07C1F08ull, 0x3F76816816816817ull, \
    0x3F71111111111111ull, 0x3F6AC5701AC5701Bull, 0x3F658ED2308158EDull, 0x3F61BB4A4046ED29ull}

// philox.rs `ln`: natural log of a normal positive x from atanh's series.
__device__ __forceinline__ double vain_ln(double x) {
    const u64 bits = (u64)__double_as_longlong(x);
    long long e = (long long)((bits >> 52) & 0x7ffull) - 1023;
    double m = bits_f64((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    if (m > VAIN_SQRT2) {
        m = __dmul_rn(m, 0.5);
        e += 1;
    }
    const double s = __ddiv_rn(__dsub_rn(m, 1.0), __dadd_rn(m, 1.0));
    const double s2 = __dmul_rn(s, s);
    const u64 inv_odd[13] = VAIN_INV_ODD;
    double p = bits_f64(inv_odd[12]);
#pragma unroll
    for (int k = 11; k >= 1; --k) {
        p = __dadd_rn(bits_f64(inv_odd[k]), __dmul_rn(s2, p));
    }
    const double ln_m = __dadd_rn(__dmul_rn(2.0, s), __dmul_rn(__dmul_rn(__dmul_rn(2.0, s), s2), p));
    return __dadd_rn(__dmul_rn((double)e, VAIN_LN2), ln_m);
}

// philox.rs `sincos_2pi`: (sin 2πt, cos 2πt) for t in [0, 1).
__device__ __forceinline__ void vain_sincos_2pi(double t, double* sin_out, double* cos_out) {
    const double t4 = __dmul_rn(t, 4.0);
    const u32 q = (u32)t4;  // truncation = floor, t4 ≥ 0
    const double a = __dmul_rn(__dsub_rn(t4, (double)q), VAIN_HALF_PI);
    const double a2 = __dmul_rn(a, a);
    const u64 inv_sin[12] = VAIN_INV_SIN;
    const u64 inv_cos[12] = VAIN_INV_COS;
    double s = 1.0;
    double c = 1.0;
#pragma unroll
    for (int k = 11; k >= 1; --k) {
        s = __dsub_rn(1.0, __dmul_rn(__dmul_rn(a2, s), bits_f64(inv_sin[k])));
        c = __dsub_rn(1.0, __dmul_rn(__dmul_rn(a2, c), bits_f64(inv_cos[k])));
    }
    s = __dmul_rn(a, s);
    switch (q & 3u) {
        case 0: *sin_out = s; *cos_out = c; break;
        case 1: *sin_out = c; *cos_out = -s; break;
        case 2: *sin_out = -s; *cos_out = -c; break;
        default: *sin_out = -c; *cos_out = s; break;
    }
}

// philox.rs `gaussian4` `pair`: Box–Muller of one (even, odd) word pair.
__device__ __forceinline__ void box_muller(u32 a, u32 b, float* z_even, float* z_odd) {
    const double u = __dmul_rn(__dadd_rn((double)a, 1.0), VAIN_TWO_M32);
    const double r = __dsqrt_rn(__dmul_rn(-2.0, vain_ln(u)));
    double s, c;
    vain_sincos_2pi(__dmul_rn((double)b, VAIN_TWO_M32), &s, &c);
    *z_even = __double2float_rn(__dmul_rn(r, c));
    *z_odd = __double2float_rn(__dmul_rn(r, s));
}

// philox.rs `gaussian4`.
__device__ __forceinline__ void gaussian4(u64 seed, u64 round, u64 block, float z[4]) {
    u32 c[4] = {(u32)block, (u32)(block >> 32), (u32)round, (u32)(round >> 32)};
    philox4x32_10(c, (u32)seed, (u32)(seed >> 32));
    box_muller(c[0], c[1], &z[0], &z[1]);
    box_muller(c[2], c[3], &z[2], &z[3]);
}

// philox.rs `add_noise` with first = 0: out[i] += std·z_i, one f32 multiply then one f32 add.
extern "C" __global__ void add_noise(float* out, u64 dim, float std_dev, u64 seed, u64 round) {
    const u64 blocks = (dim + 3) / 4;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < blocks; t += stride) {
        float z[4];
        gaussian4(seed, round, t, z);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const u64 i = 4 * t + l;
            if (i < dim) out[i] = __fadd_rn(out[i], __fmul_rn(std_dev, z[l]));
        }
    }
}
