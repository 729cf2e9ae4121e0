// robust.cu — coordinate-wise robust statistics over a subset of the round's rows.
// Compiled at run time by NVRTC (--fmad=false) after common.cuh (u64, u32, block_sum).
//
// Layout: `x` holds rows of `dim` f32, row-major (row r at x + r·dim, 64-bit index); `idx`
// lists the m selected rows (u32, each < the rows prepared, checked by the host); `out` is
// `dim` f32. One thread per coordinate j (grid-stride): thread j reads x[idx[i]·dim + j] for
// every i, so each load is coalesced across the warp. The m values are padded with +inf to
// P = the next power of two ≥ m (P ∈ {4, 8, …, 256}: one kernel per P, robust_p<P>), sorted by
// a fully unrolled bitonic network in registers (constant indices only, so nothing goes to
// local memory for P ≤ 64; P = 128 and 256 spill), and reduced according to `op`:
//
//   op 0  median: v[m/2] for odd m, 0.5·(v[m/2−1] + v[m/2]) in f32 for even m
//   op 1  trimmed mean, param = trim (2·trim < m): Σ v[trim .. m−trim) in f64, in ascending
//         order, / (m − 2·trim), rounded to f32
//   op 2  mean of the param = β values closest to the median (1 ≤ β ≤ m), ties to the smaller
//         value: they are a window v[a, a+β) of the sorted values, where a counts the positions
//         a' < m − β with v[a'+β] − med < med − v[a'] (f32 differences; true then false as a'
//         grows, so a binary search finds a); result Σ window in f64 / β, rounded to f32.
//
// The CPU backend (kernels/src/cpu.rs) selects the same values: its Bulyan step grows the
// window from the middle comparing the same f32 distances, ties to the lower side, so the
// window is the same one. Its sums are not bit-identical (f32 lane sums times an f32 reciprocal
// for the trimmed mean, window order for Bulyan), which the backend tests' 1e-5 tolerance
// covers; the emulator tests (emu/robust_test.cpp) check this file against its own description.
//
// MAX_SUBSET = 256 is the largest m supported; the host refuses more with a typed error.


#define RB 128  // block size
#define OP_MEDIAN 0u
#define OP_TRIMMED 1u
#define OP_CLOSEST 2u

// v[i] for a run-time i, without dynamic register indexing (which would force the array to
// local memory): one select per element.
template <int P>
__device__ __forceinline__ float pick(const float (&v)[P], u32 i) {
    float r = 0.0f;
#pragma unroll
    for (int k = 0; k < P; ++k) r = ((u32)k == i) ? v[k] : r;
    return r;
}

// Σ v[i] for lo ≤ i < hi, in f64.
template <int P>
__device__ __forceinline__ double range_sum(const float (&v)[P], u32 lo, u32 hi) {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < P; ++k) s += ((u32)k >= lo && (u32)k < hi) ? (double)v[k] : 0.0;
    return s;
}

// Ascending bitonic sort of P (a power of two) values.
template <int P>
__device__ __forceinline__ void bitonic_sort(float (&v)[P]) {
#pragma unroll
    for (int k = 2; k <= P; k <<= 1) {
#pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
#pragma unroll
            for (int i = 0; i < P; ++i) {
                const int l = i ^ j;
                if (l > i) {
                    const float a = v[i], b = v[l];
                    const float lo = fminf(a, b), hi = fmaxf(a, b);
                    if ((i & k) == 0) {
                        v[i] = lo;
                        v[l] = hi;
                    } else {
                        v[i] = hi;
                        v[l] = lo;
                    }
                }
            }
        }
    }
}

// The statistic of one coordinate from its m sorted values (m ≤ P, padding +inf at the end).
template <int P>
__device__ __forceinline__ float reduce_sorted(const float (&v)[P], u32 m, u32 op, u32 param) {
    const float upper = pick<P>(v, m / 2);
    const float med = (m & 1u) ? upper : __fmul_rn(0.5f, __fadd_rn(pick<P>(v, m / 2 - 1), upper));
    if (op == OP_MEDIAN) return med;
    if (op == OP_TRIMMED) {
        const u32 keep = m - 2 * param;
        return (float)(range_sum<P>(v, param, m - param) / (double)keep);
    }
    const u32 beta = param;
    u32 lo = 0, hi = m - beta;
    while (lo < hi) {
        const u32 mid = lo + (hi - lo) / 2;
        const float left = pick<P>(v, mid), right = pick<P>(v, mid + beta);
        if (__fsub_rn(right, med) < __fsub_rn(med, left)) lo = mid + 1; else hi = mid;
    }
    return (float)(range_sum<P>(v, lo, lo + beta) / (double)beta);
}

template <int P>
__device__ __forceinline__ void robust_body(const float* __restrict__ x, u64 dim,
                                            const u32* __restrict__ idx, u32 m, u32 op, u32 param,
                                            float* __restrict__ out, u32* sidx) {
    for (u32 i = threadIdx.x; i < P; i += blockDim.x) sidx[i] = i < m ? idx[i] : 0u;
    __syncthreads();
    const float inf = __int_as_float(0x7f800000);
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += stride) {
        float v[P];
#pragma unroll
        for (int i = 0; i < P; ++i) v[i] = ((u32)i < m) ? x[(u64)sidx[i] * dim + j] : inf;
        bitonic_sort<P>(v);
        out[j] = reduce_sorted<P>(v, m, op, param);
    }
}

#define ROBUST_KERNEL(P)                                                                         \
    extern "C" __global__ void __launch_bounds__(RB)                                             \
        robust_p##P(const float* __restrict__ x, u64 dim, const u32* __restrict__ idx, u32 m,    \
                    u32 op, u32 param, float* __restrict__ out) {                                \
        __shared__ u32 sidx[P];                                                                  \
        robust_body<P>(x, dim, idx, m, op, param, out, sidx);                                    \
    }

ROBUST_KERNEL(4)
ROBUST_KERNEL(8)
ROBUST_KERNEL(16)
ROBUST_KERNEL(32)
ROBUST_KERNEL(64)
ROBUST_KERNEL(128)
ROBUST_KERNEL(256)

// The statistic fused with the dot products Round needs next (`median_with_dots`,
// `trimmed_mean_with_dots`): for the rows 0 … m−1 themselves (no index list, m ≤ P ≤ 32),
// out[j] as robust_p<P> computes it, and per column chunk c (DCHUNK coordinates) the partials
// part[c·(m+1) + r] = Σ_{j in c} x[r, j]·out[j] for r < m and part[c·(m+1) + m] = Σ out[j]²,
// each summed by one block in a fixed order (per thread, then block_sum's tree), so that
// reduce.cu sum_parts over the chunks gives the same bits on every run and every grid. The
// rows are read once: the dots use the values loaded for the statistic, before sorting. Every
// slot of every chunk is written. blockDim.x == RB.
#define DITEMS 8
#define DCHUNK (RB * DITEMS)

template <int P>
__device__ __forceinline__ void robust_dots_body(const float* __restrict__ x, u64 dim, u32 m, u32 op, u32 param,
                                                 float* __restrict__ out, double* __restrict__ part) {
    __shared__ double red[RB / 32];
    const float inf = __int_as_float(0x7f800000);
    const u64 chunks = (dim + DCHUNK - 1) / DCHUNK;
    for (u64 c = blockIdx.x; c < chunks; c += gridDim.x) {
        double d[P + 1];
#pragma unroll
        for (int r = 0; r <= P; ++r) d[r] = 0.0;
        // Not unrolled: each item is a whole sorting network already (unrolled, the module's
        // code grows eightfold and NVRTC takes minutes).
#pragma unroll 1
        for (int it = 0; it < DITEMS; ++it) {
            const u64 j = c * DCHUNK + (u64)it * RB + threadIdx.x;
            if (j < dim) {
                float raw[P], v[P];
#pragma unroll
                for (int i = 0; i < P; ++i) {
                    raw[i] = ((u32)i < m) ? x[(u64)i * dim + j] : inf;
                    v[i] = raw[i];
                }
                bitonic_sort<P>(v);
                const float o = reduce_sorted<P>(v, m, op, param);
                out[j] = o;
                const double od = (double)o;
#pragma unroll
                for (int i = 0; i < P; ++i) {
                    if ((u32)i < m) d[i] = __dadd_rn(d[i], __dmul_rn((double)raw[i], od));
                }
                d[P] = __dadd_rn(d[P], __dmul_rn(od, od));
            }
        }
#pragma unroll
        for (int r = 0; r <= P; ++r) {
            if ((u32)r < m || r == P) {  // uniform over the block
                const double t = block_sum(d[r], red);
                if (threadIdx.x == 0) part[c * (m + 1) + ((u32)r < m ? (u32)r : m)] = t;
            }
        }
    }
}

#define ROBUST_DOTS_KERNEL(P)                                                                     \
    extern "C" __global__ void __launch_bounds__(RB)                                              \
        robust_dots_p##P(const float* __restrict__ x, u64 dim, u32 m, u32 op, u32 param,          \
                         float* __restrict__ out, double* __restrict__ part) {                    \
        robust_dots_body<P>(x, dim, m, op, param, out, part);                                     \
    }

ROBUST_DOTS_KERNEL(4)
ROBUST_DOTS_KERNEL(8)
ROBUST_DOTS_KERNEL(16)
ROBUST_DOTS_KERNEL(32)
