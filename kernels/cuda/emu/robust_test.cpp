// robust_test.cpp — checks kernels/cuda/robust.cu (robust_p4 … robust_p256) bit for bit
// against a sort-based reference written here from robust.cu's specification, without a GPU,
// and the fused robust_dots_p4 … p32 against robust_p and sequential dot products.
//
// Why: no machine that runs the tests has a GPU, and the kernel's in-register bitonic network,
// +inf padding to the next power of two, select-based indexing and the binary search for the
// closest-to-median window are easy to get wrong in ways NVRTC's compile check cannot see.
// This compiles the real robust.cu as host C++ on the emulator in emu.h (threads, blocks and
// __syncthreads as emu.h models them; see its header for what that cannot catch: real warp
// scheduling, memory-model races, register pressure and local-memory spills of P = 128, 256)
// and checks, on 131 coordinates of rows with many ties (small integers, values 1e-7 apart) or
// none (uniform), for subset sizes m at both edges of every P (1 … 256, all seven kernels,
// each one checked to have run) plus random m:
//   * op 0 median (f32 midpoint for even m);
//   * op 1 trimmed mean for trim 0, the largest trim (2·trim < m) and a random one;
//   * op 2 mean of the β values closest to the median for β = 1, β = m and a random β.
// The reference sorts with std::sort, finds the op 2 window the way cpu.rs `order_stat` does
// (growing it from the middle, comparing the same f32 distances, ties to the lower side, an
// algorithm independent of the kernel's binary search) and sums windows in ascending order in
// f64 as robust.cu specifies. (The CPU backend itself sums Bulyan's window in growing order and
// the trimmed mean in f32, so it agrees with the kernel to rounding, not bit for bit; the Rust
// backend tests compare the two within 1e-5.)
#include "emu.h"

#include "../common.cuh"
#include "../robust.cu"

#include <algorithm>
#include <random>
#include <vector>

static std::mt19937_64 rng(11);

static float ref_stat(std::vector<float> s, u32 op, u32 param) {
    std::sort(s.begin(), s.end());
    const size_t m = s.size();
    const float med = m % 2 == 1 ? s[m / 2] : 0.5f * (s[m / 2 - 1] + s[m / 2]);
    if (op == OP_MEDIAN) return med;
    if (op == OP_TRIMMED) {
        double t = 0;
        for (size_t i = param; i < m - param; ++i) t += s[i];
        return (float)(t / (double)(m - 2 * param));
    }
    long lo = (long)(m - 1) / 2, hi = lo + 1;
    for (u32 k = 0; k < param; ++k) {
        const bool take_lo = lo >= 0 && (hi >= (long)m || (float)(med - s[lo]) <= (float)(s[hi] - med));
        if (take_lo)
            --lo;
        else
            ++hi;
    }
    double t = 0;
    for (long i = lo + 1; i < hi; ++i) t += s[i];  // the window (lo, hi), ascending
    return (float)(t / param);
}

static void launch(u32 P, unsigned grid, const float* x, u64 dim, const u32* idx, u32 m, u32 op, u32 param, float* out) {
    emu_launch({grid, 1, 1}, RB, [&] {
        switch (P) {
            case 4: robust_p4(x, dim, idx, m, op, param, out); break;
            case 8: robust_p8(x, dim, idx, m, op, param, out); break;
            case 16: robust_p16(x, dim, idx, m, op, param, out); break;
            case 32: robust_p32(x, dim, idx, m, op, param, out); break;
            case 64: robust_p64(x, dim, idx, m, op, param, out); break;
            case 128: robust_p128(x, dim, idx, m, op, param, out); break;
            default: robust_p256(x, dim, idx, m, op, param, out); break;
        }
    });
}

// robust_dots_p<P> over rows 0..m of x (no index list): out must equal robust_p<P>'s bit for
// bit, the chunk partials summed in chunk order must be the dots and ‖out‖² (1e-12 relative to
// the sequential sums), and two grids must give the same bits.
static void check_dots(const std::vector<float>& xs, u64 dim, u32 m, u32 op, u32 param, const std::vector<float>& want_out) {
    u32 P = 4;
    while (P < m) P <<= 1;
    const u64 chunks = (dim + DCHUNK - 1) / DCHUNK;
    std::vector<double> first;
    for (unsigned grid : {1u, 3u}) {
        std::vector<float> out(dim, -1.0f);
        std::vector<double> part(chunks * (m + 1), std::nan(""));
        emu_launch({grid, 1, 1}, RB, [&] {
            const float* x = xs.data();
            switch (P) {
                case 4: robust_dots_p4(x, dim, m, op, param, out.data(), part.data()); break;
                case 8: robust_dots_p8(x, dim, m, op, param, out.data(), part.data()); break;
                case 16: robust_dots_p16(x, dim, m, op, param, out.data(), part.data()); break;
                default: robust_dots_p32(x, dim, m, op, param, out.data(), part.data()); break;
            }
        });
        for (u64 j = 0; j < dim; ++j)
            EMU_CHECK(std::bit_cast<u32>(out[j]) == std::bit_cast<u32>(want_out[j]), "dots m %u op %u j %llu: out %.9g vs %.9g",
                      m, op, j, out[j], want_out[j]);
        std::vector<double> sums(m + 1, 0.0);
        for (u64 c = 0; c < chunks; ++c)
            for (u32 r = 0; r <= m; ++r) sums[r] += part[c * (m + 1) + r];
        for (u32 r = 0; r <= m; ++r) {
            double want = 0;
            for (u64 j = 0; j < dim; ++j) {
                const double o = want_out[j];
                want += (r < m ? (double)xs[r * dim + j] : o) * o;
            }
            EMU_CHECK(std::fabs(sums[r] - want) <= 1e-12 * std::max(1.0, std::fabs(want)),
                      "dots m %u op %u row %u: %.17g vs %.17g", m, op, r, sums[r], want);
        }
        if (first.empty()) first = sums;
        EMU_CHECK(std::memcmp(first.data(), sums.data(), 8 * sums.size()) == 0, "dots m %u op %u: grid %u differs", m, op, grid);
        emu_digest(sums.data(), 8 * sums.size());
    }
}

int main() {
    const u32 rows = 300;
    const u64 dim = 131;  // > RB: with a grid of 1 the grid-stride loop runs twice
    std::vector<float> x(rows * dim);
    std::vector<u32> ms = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256};
    const size_t fixed = ms.size();
    for (int k = 0; k < 24; ++k) ms.push_back(1 + (u32)(rng() % 256));
    unsigned long long launches = 0, values = 0;
    unsigned ran[9] = {};  // per log2(P)
    int trial = 0, trials_run = 0;
    for (size_t mi = 0; mi < ms.size(); ++mi)
        for (int style = 0; style < 3; ++style, ++trial) {
            if (mi >= fixed && style != trial % 3) continue;  // random m: one style each
            for (auto& v : x)
                v = style == 0   ? (float)((int)(rng() % 7) - 3)
                    : style == 1 ? std::uniform_real_distribution<float>(-1, 1)(rng)
                                 : (float)(rng() % 3) * 1e-7f + 1.0f;
            ++trials_run;
            const u32 m = ms[mi];
            std::vector<u32> idx(m);
            for (auto& i : idx) i = (u32)(rng() % rows);
            u32 P = 4;
            while (P < m) P *= 2;
            ++ran[std::countr_zero(P)];
            struct Op {
                u32 op, param;
            };
            const u32 max_trim = (m - 1) / 2;
            const Op ops[] = {{OP_MEDIAN, 0},
                              {OP_TRIMMED, 0},
                              {OP_TRIMMED, max_trim},
                              {OP_TRIMMED, (u32)(rng() % (max_trim + 1))},
                              {OP_CLOSEST, 1},
                              {OP_CLOSEST, m},
                              {OP_CLOSEST, 1 + (u32)(rng() % m)}};
            for (const Op& o : ops) {
                std::vector<float> out(dim, -99.f);
                const unsigned grid = trial % 2 ? 1u : 2u;
                launch(P, grid, x.data(), dim, idx.data(), m, o.op, o.param, out.data());
                ++launches;
                for (u64 j = 0; j < dim; ++j) {
                    std::vector<float> col(m);
                    for (u32 i = 0; i < m; ++i) col[i] = x[idx[i] * dim + j];
                    const float want = ref_stat(col, o.op, o.param);
                    ++values;
                    EMU_CHECK(std::bit_cast<u32>(out[j]) == std::bit_cast<u32>(want),
                              "m %u P %u op %u param %u style %d j %llu: %.9g vs %.9g", m, P, o.op, o.param, style, j,
                              out[j], want);
                }
            }
        }
    for (u32 P = 4; P <= 256; P *= 2)
        EMU_CHECK(ran[std::countr_zero(P)] > 0, "robust_p%u never ran", P);

    // The fused statistic-and-dots kernels, m ≤ 32, over several column chunks.
    unsigned long long fused = 0;
    for (u32 m : {1u, 2u, 3u, 5u, 8u, 13u, 17u, 32u})
        for (u32 op : {OP_MEDIAN, OP_TRIMMED}) {
            const u64 d = 2 * DCHUNK + 77;
            std::vector<float> xs(m * d);
            for (auto& v : xs) v = std::uniform_real_distribution<float>(-1, 1)(rng);
            const u32 param = op == OP_TRIMMED ? (m - 1) / 2 : 0;
            std::vector<u32> identity(m);
            for (u32 i = 0; i < m; ++i) identity[i] = i;
            u32 P = 4;
            while (P < m) P *= 2;
            std::vector<float> want(d);
            launch(P, 2, xs.data(), d, identity.data(), m, op, param, want.data());
            check_dots(xs, d, m, op, param, want);
            ++fused;
        }

    char what[256];
    std::snprintf(what, sizeof what,
                  "robust_p4..robust_p256 vs sort-based reference, bit-exact: %d (m, data) trials, m = 1..256, "
                  "7 (op, param) each = %llu launches, %llu coordinates; robust_dots_p4..p32 on %llu cases, 2 grids",
                  trials_run, launches, values, fused);
    return emu_finish("robust", what);
}
