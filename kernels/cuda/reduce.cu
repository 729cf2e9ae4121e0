// reduce.cu — dense linear algebra over the round's rows, the output and the accumulator.
// Compiled at run time by NVRTC (--fmad=false) after common.cuh (u64, u32, block_sum).
//
// Layout: `x` holds rows of `dim` f32, row-major (row r starts at x + r·dim, 64-bit index);
// `out` and `acc` are `dim` f32. Sums run in f64 (a product of two f32 is exact in f64).
// Kernels use grid-stride loops, so any grid size is correct; the host picks sizes for
// occupancy.
//
// Reproducible sums: no float atomics. A reduction over columns is cut into fixed chunks of
// columns (RCHUNK, or the Gram product's kchunk, which the host derives from dim alone); each
// chunk's partial is summed by one block in a fixed order (per thread, then block_sum's fixed
// tree) and stored in its own slot, and sum_parts adds the slots in chunk order. The result
// therefore depends on neither the grid nor the scheduling: the same inputs give the same bits
// on every run and on every GPU. The summation order still differs from the CPU reference's, so
// the two agree to a tolerance, not bit for bit.


#define RBLOCK 256  // block size of the row reductions (rows_vs_out, sumsq_vec)
#define RGROUP 8    // rows per blockIdx.y in rows_vs_out
#define RITEMS 8    // columns per thread and chunk
#define RCHUNK (RBLOCK * RITEMS)  // columns per partial of rows_vs_out and sumsq_vec

// out[e] = Σ_{p < parts} part[p·len + e], p ascending, for e < len: the fixed-order second stage
// of every reduction here (and of decode.cu's sum of squares). Grid: (any).
extern "C" __global__ void sum_parts(const double* __restrict__ part, u64 len, u32 parts, double* out) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < len; e += stride) {
        double s = 0.0;
        for (u32 p = 0; p < parts; ++p) s = __dadd_rn(s, part[(u64)p * len + e]);
        out[e] = s;
    }
}

// x[rows[i]·dim + j] *= factors[i] for i < k: only the rows listed (the host lists those whose
// factor is not 1), so unclipped rows are neither read nor written. Grid: (any, any); y strides
// over the list.
extern "C" __global__ void scale_rows(float* x, u64 dim, const u32* rows, const float* factors, u32 k) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u32 i = blockIdx.y; i < k; i += gridDim.y) {
        const float f = factors[i];
        float* row = x + (u64)rows[i] * dim;
        for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += stride) {
            row[j] = __fmul_rn(row[j], f);
        }
    }
}

// Row mixing for the pre-aggregation steps (nearest-neighbour mixing, bucketing): for each
// target t < k, row targets[t] ← Σ_{j<n} mix[t·n + j]·row_j, every sum over the rows as they were
// before the launch. Each thread owns whole columns: it loads column c of the n rows (n ≤
// MIX_MAX) into a local array first, so writing the targets in place cannot race. The sum runs
// in f32, j ascending, one rounded multiply and one rounded add per term: the CPU backend's
// order, so the two agree bit for bit. Grid: (any); x strides over columns.
#define MIX_MAX 256
extern "C" __global__ void mix_rows(float* x, u64 dim, u32 n, const u32* targets, u32 k, const float* mix) {
    float col[MIX_MAX];
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += stride) {
        for (u32 j = 0; j < n; ++j) col[j] = x[(u64)j * dim + c];
        for (u32 t = 0; t < k; ++t) {
            const float* w = mix + (u64)t * n;
            float s = 0.0f;
            for (u32 j = 0; j < n; ++j) s = __fadd_rn(s, __fmul_rn(w[j], col[j]));
            x[(u64)targets[t] * dim + c] = s;
        }
    }
}

// Gram matrix partials: part[s·n·n + i·n + j] = Σ_k x[i,k]·x[j,k] over split s's k range
// [s·kchunk, +kchunk), for the 64 × 64 tile pair (blockIdx.y, blockIdx.z) with z ≥ y (the host
// mirrors the upper triangle); sum_parts over the splits gives G. Split-K: blockIdx.x = s, one
// block per split (the grid's x is the number of splits). 256 threads as 16 × 16, each owning a
// 4 × 4 f64 sub-tile with stride 16 (conflict-free shared reads). Every entry of the tiles on
// and above the diagonal is written, zero or not; those below it are not touched.
#define GT 64
#define GK 32
extern "C" __global__ void __launch_bounds__(256)
    gram_tile(const float* __restrict__ x, u64 dim, u32 n, u64 kchunk, double* part) {
    const u32 ti = blockIdx.y, tj = blockIdx.z;
    if (tj < ti) return;
    const u64 k0 = (u64)blockIdx.x * kchunk;
    if (k0 >= dim) return;
    const u64 k1 = (dim - k0 < kchunk) ? dim : k0 + kchunk;
    __shared__ float as[GK][GT + 1];
    __shared__ float bs[GK][GT + 1];
    const u32 tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const u32 lk = tid & 31, lr = tid >> 5;  // loader: k lane, first row (8 rows per pass)
    double acc[4][4];
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[q][r] = 0.0;
    for (u64 kb = k0; kb < k1; kb += GK) {
        const u64 k = kb + lk;
        const bool kin = k < k1;
#pragma unroll
        for (int p = 0; p < GT / 8; ++p) {
            const u32 r = lr + 8 * p;
            const u32 ri = ti * GT + r, rj = tj * GT + r;
            as[lk][r] = (kin && ri < n) ? x[(u64)ri * dim + k] : 0.0f;
            bs[lk][r] = (kin && rj < n) ? x[(u64)rj * dim + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < GK; ++kk) {
            double a[4], b[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                a[q] = (double)as[kk][ty + 16 * q];
                b[q] = (double)bs[kk][tx + 16 * q];
            }
#pragma unroll
            for (int q = 0; q < 4; ++q)
#pragma unroll
                for (int r = 0; r < 4; ++r) acc[q][r] = __fma_rn(a[q], b[r], acc[q][r]);
        }
        __syncthreads();
    }
    double* g = part + (u64)blockIdx.x * n * n;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const u32 i = ti * GT + ty + 16 * q;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const u32 j = tj * GT + tx + 16 * r;
            if (i < n && j < n) g[(u64)i * n + j] = acc[q][r];
        }
    }
}

// The Gram partials for n ≤ 32 rows, sized to them: one 32 × 32 tile, upper triangle only, f32
// arithmetic where the hardware is fastest. part[s·n·n + i·n + j] = Σ_k x[i,k]·x[j,k] over split
// s's k range [s·kchunk, +kchunk) (blockIdx.x = s), for i ≤ j < n (the host mirrors the rest,
// and zeroes the partials, so entries below the diagonal sum to 0). 256 threads as 16 × 16; a
// thread owns rows 2ty, 2ty+1 and columns 2tx, 2tx+1, and threads whose 2 × 2 block lies wholly
// below the diagonal (ty > tx) only help load: 136 of 256 compute 544 products for the 528
// needed. Products are summed with f32 FMAs over each GK-column k-tile, then added in f64 (the
// CPU backend's contract, over fewer columns): the error stays within (GK + 1)·2⁻²⁴·Σ|x_i,k·x_j,k|.
#define G32 32
extern "C" __global__ void __launch_bounds__(256)
    gram_small(const float* __restrict__ x, u64 dim, u32 n, u64 kchunk, double* part) {
    const u64 k0 = (u64)blockIdx.x * kchunk;
    if (k0 >= dim) return;
    const u64 k1 = (dim - k0 < kchunk) ? dim : k0 + kchunk;
    __shared__ float xs[GK][G32 + 1];
    const u32 tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const u32 lk = tid & 31, lr = tid >> 5;  // loader: k lane, first row (8 rows per pass)
    const bool active = ty <= tx;
    double acc[2][2] = {{0.0, 0.0}, {0.0, 0.0}};
    for (u64 kb = k0; kb < k1; kb += GK) {
        const u64 k = kb + lk;
        const bool kin = k < k1;
#pragma unroll
        for (int p = 0; p < G32 / 8; ++p) {
            const u32 r = lr + 8 * p;
            xs[lk][r] = (kin && r < n) ? x[(u64)r * dim + k] : 0.0f;
        }
        __syncthreads();
        if (active) {
            float t[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll 8
            for (int kk = 0; kk < GK; ++kk) {
                const float a0 = xs[kk][2 * ty], a1 = xs[kk][2 * ty + 1];
                const float b0 = xs[kk][2 * tx], b1 = xs[kk][2 * tx + 1];
                t[0][0] = __fmaf_rn(a0, b0, t[0][0]);
                t[0][1] = __fmaf_rn(a0, b1, t[0][1]);
                t[1][0] = __fmaf_rn(a1, b0, t[1][0]);
                t[1][1] = __fmaf_rn(a1, b1, t[1][1]);
            }
#pragma unroll
            for (int q = 0; q < 2; ++q)
#pragma unroll
                for (int r = 0; r < 2; ++r) acc[q][r] = __dadd_rn(acc[q][r], (double)t[q][r]);
        }
        __syncthreads();
    }
    if (!active) return;
    double* g = part + (u64)blockIdx.x * n * n;
#pragma unroll
    for (int q = 0; q < 2; ++q) {
        const u32 i = 2 * ty + q;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const u32 j = 2 * tx + r;
            if (i <= j && j < n) g[(u64)i * n + j] = acc[q][r];
        }
    }
}

// part[c·n + r] = Σ_{j in chunk c} (x[r,j] − out[j])² (mode 0) or x[r,j]·out[j] (mode 1), for
// r < n and the column chunks c < ⌈dim / RCHUNK⌉ (sum_parts over the chunks gives each row's
// total). x grid-strides over chunks, blockIdx.y over groups of RGROUP rows, so out[j] is read
// once per row group. blockDim.x == RBLOCK.
extern "C" __global__ void __launch_bounds__(RBLOCK)
    rows_vs_out(const float* __restrict__ x, u64 dim, u32 n, const float* __restrict__ out,
                double* part, u32 mode) {
    __shared__ double red[RBLOCK / 32];
    const u64 chunks = (dim + RCHUNK - 1) / RCHUNK;
    for (u64 c = blockIdx.x; c < chunks; c += gridDim.x) {
        for (u32 r0 = blockIdx.y * RGROUP; r0 < n; r0 += gridDim.y * RGROUP) {
            double s[RGROUP];
#pragma unroll
            for (int g = 0; g < RGROUP; ++g) s[g] = 0.0;
#pragma unroll
            for (int it = 0; it < RITEMS; ++it) {
                const u64 j = c * RCHUNK + (u64)it * RBLOCK + threadIdx.x;
                if (j < dim) {
                    const double o = (double)out[j];
#pragma unroll
                    for (int g = 0; g < RGROUP; ++g) {
                        if (r0 + g < n) {
                            const double v = (double)x[(u64)(r0 + g) * dim + j];
                            if (mode == 0) {
                                const double d = __dsub_rn(v, o);
                                s[g] = __dadd_rn(s[g], __dmul_rn(d, d));
                            } else {
                                s[g] = __dadd_rn(s[g], __dmul_rn(v, o));
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < RGROUP; ++g) {
                if (r0 + g < n) {  // uniform over the block
                    const double t = block_sum(s[g], red);
                    if (threadIdx.x == 0) part[c * n + r0 + g] = t;
                }
            }
        }
    }
}

// part[c] = Σ_{j in chunk c} v[j]² for the chunks c < ⌈len / RCHUNK⌉ (sum_parts gives the
// total). blockDim.x == RBLOCK.
extern "C" __global__ void __launch_bounds__(RBLOCK)
    sumsq_vec(const float* __restrict__ v, u64 len, double* part) {
    __shared__ double red[RBLOCK / 32];
    const u64 chunks = (len + RCHUNK - 1) / RCHUNK;
    for (u64 c = blockIdx.x; c < chunks; c += gridDim.x) {
        double s = 0.0;
#pragma unroll
        for (int it = 0; it < RITEMS; ++it) {
            const u64 j = c * RCHUNK + (u64)it * RBLOCK + threadIdx.x;
            if (j < len) {
                const double a = (double)v[j];
                s = __dadd_rn(s, __dmul_rn(a, a));
            }
        }
        s = block_sum(s, red);
        if (threadIdx.x == 0) part[c] = s;
    }
}

// out[j] = Σ_i w[i]·x[idx[i], j] (f64 sum, one rounding to f32). m ≥ 0 (m = 0 gives 0).
extern "C" __global__ void weighted_sum(const float* __restrict__ x, u64 dim,
                                        const u32* __restrict__ idx, const float* __restrict__ w,
                                        u32 m, float* out) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += stride) {
        double s = 0.0;
        for (u32 i = 0; i < m; ++i) s += (double)w[i] * (double)x[(u64)idx[i] * dim + j];
        out[j] = (float)s;
    }
}

// One CenteredClip iteration: out[j] += (1/n) Σ_{i<n} f[i]·(x[i,j] − out[j]), in f64, one
// rounding to f32. n ≥ 1.
extern "C" __global__ void centered_clip(const float* __restrict__ x, u64 dim,
                                         const float* __restrict__ f, u32 n, float* out) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += stride) {
        const double o = (double)out[j];
        double s = 0.0;
        for (u32 i = 0; i < n; ++i) s += (double)f[i] * ((double)x[(u64)i * dim + j] - o);
        out[j] = (float)(o + s / (double)n);
    }
}

// centered_clip fused with the next iteration's distances, for n ≤ CC_MAX rows: out[j] as
// centered_clip computes it, and per column chunk c (RCHUNK coordinates) the partials
// part[c·n + i] = Σ_{j in c} (x[i,j] − out[j])² with the new out[j] (as rows_vs_out mode 0
// would read it), each summed by one block in a fixed order; sum_parts over the chunks gives
// the distances. The rows are read once. Every slot of every chunk is written. blockDim.x ==
// RBLOCK.
#define CC_MAX 32
extern "C" __global__ void __launch_bounds__(RBLOCK)
    centered_clip_dists(const float* __restrict__ x, u64 dim, const float* __restrict__ f, u32 n,
                        float* out, double* part) {
    __shared__ double red[RBLOCK / 32];
    const u64 chunks = (dim + RCHUNK - 1) / RCHUNK;
    for (u64 c = blockIdx.x; c < chunks; c += gridDim.x) {
        double d[CC_MAX];
#pragma unroll
        for (int i = 0; i < CC_MAX; ++i) d[i] = 0.0;
#pragma unroll 1
        for (int it = 0; it < RITEMS; ++it) {
            const u64 j = c * RCHUNK + (u64)it * RBLOCK + threadIdx.x;
            if (j < dim) {
                float col[CC_MAX];
                const double o = (double)out[j];
                double s = 0.0;
#pragma unroll
                for (int i = 0; i < CC_MAX; ++i) {
                    col[i] = (u32)i < n ? x[(u64)i * dim + j] : 0.0f;
                    if ((u32)i < n) s += (double)f[i] * ((double)col[i] - o);
                }
                const float nf = (float)(o + s / (double)n);
                out[j] = nf;
                const double no = (double)nf;
#pragma unroll
                for (int i = 0; i < CC_MAX; ++i) {
                    if ((u32)i < n) {
                        const double e = __dsub_rn((double)col[i], no);
                        d[i] = __dadd_rn(d[i], __dmul_rn(e, e));
                    }
                }
            }
        }
#pragma unroll
        for (int i = 0; i < CC_MAX; ++i) {
            if ((u32)i < n) {  // uniform over the block
                const double t = block_sum(d[i], red);
                if (threadIdx.x == 0) part[c * n + i] = t;
            }
        }
    }
}

// out[j] = scale·acc[j] (one f32 multiply).
extern "C" __global__ void scale_acc(const float* __restrict__ acc, u64 dim, float scale, float* out) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += stride) {
        out[j] = __fmul_rn(scale, acc[j]);
    }
}
