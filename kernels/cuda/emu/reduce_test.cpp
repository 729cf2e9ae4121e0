// reduce_test.cpp — checks every kernel of kernels/cuda/reduce.cu against plain sequential
// reference loops written here, without a GPU.
//
// Why: no machine that runs the tests has a GPU, and these kernels' tiling (gram_tile's
// 64 × 64 tiles, split-K and shared-memory staging), row grouping (rows_vs_out's RGROUP rows per
// blockIdx.y), block-wide reductions and grid-stride loops are easy to get wrong in ways
// NVRTC's compile check cannot see. This compiles the real reduce.cu as host C++ on the
// emulator in emu.h (threads, blocks, __syncthreads and warp shuffles as emu.h models them; see
// its header for what that cannot catch: real warp scheduling, memory-model races, register
// pressure) and checks, for eight (dim, n) shapes from 1 × 1 to 5000 × 2 and 97 × 130 (n not a
// multiple of 64 or of RGROUP, dim not a multiple of 32 or 256, several column chunks):
//   * gram_small (n ≤ 32: f32 FMAs per 32-column k-tile folded into f64) within
//     (GK + 1)·2⁻²⁴·Σ|x_i,k·x_j,k| of the exact sum, upper triangle only;
//   * gram_tile's per-split partials summed by sum_parts, for three split-K chunk sizes: the
//     upper triangle and the diagonal tiles' lower triangle equal Σ_k x_i,k·x_j,k, and entries
//     of tiles below the diagonal stay 0 (1e-12 relative: the fixed order differs from the
//     sequential reference's);
//   * rows_vs_out in both modes (squared distance, dot product) under four grid shapes so that
//     both the x and the y grid-stride loops run, its chunk partials summed by sum_parts
//     (1e-12 relative), and the same bits under every grid;
//   * sumsq_vec likewise, under two grids;
//   * sum_parts itself: the partials added in ascending order, bit for bit.
// The reductions' results go into the order-independence digest that run.sh compares between
// the two thread orders: with no float atomics they are the same bits in both.
//   * weighted_sum over a row subset with repeats, and with m = 0; centered_clip; scale_rows
//     (rows past n untouched); mix_rows (in place, non-targets untouched); scale_acc — bit-exact, since each sums in one order in f64 and
//     rounds once, as the reference does.
#include "emu.h"

#include "../common.cuh"
#include "../reduce.cu"

#include <algorithm>
#include <random>
#include <vector>

static std::mt19937_64 rng(7);
static float rndf() { return std::uniform_real_distribution<float>(-2, 2)(rng); }
static bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * std::max(1.0, std::fabs(b)); }

int main() {
    struct Case {
        u64 dim;
        u32 n;
    };
    const Case cases[] = {{1, 1}, {1000, 70}, {33, 9}, {2051, 3}, {97, 130}, {5000, 2}, {700, 32}, {129, 31}};
    unsigned long long launches = 0;
    for (Case c : cases) {
        const u64 dim = c.dim;
        const u32 n = c.n;
        std::vector<float> x(n * dim), out(dim), acc(dim);
        for (auto& v : x) v = rndf();
        for (auto& v : out) v = rndf();
        for (auto& v : acc) v = rndf();
        auto dot = [&](u32 i, u32 j) {
            double r = 0;
            for (u64 k = 0; k < dim; ++k) r += (double)x[i * dim + k] * x[j * dim + k];
            return r;
        };

        // sum_parts: len entries of `parts` partials, added in ascending order.
        auto sum = [&](const std::vector<double>& part, u64 len, u32 parts) {
            std::vector<double> res(len, std::nan(""));
            emu_launch({2, 1, 1}, 64, [&] { sum_parts(part.data(), len, parts, res.data()); });
            ++launches;
            for (u64 e = 0; e < len; ++e) {
                double r = 0.0;
                for (u32 p = 0; p < parts; ++p) r += part[p * len + e];
                EMU_CHECK(std::bit_cast<u64>(res[e]) == std::bit_cast<u64>(r), "sum_parts %llu of %u: %.17g vs %.17g", e,
                          parts, res[e], r);
            }
            emu_digest(res.data(), 8 * len);
            return res;
        };

        // gram_tile with split-K; grid (splits, tiles, tiles) as cuda.rs launches it, partials
        // zeroed by the host, then summed.
        const u32 tiles = (n + GT - 1) / GT;
        for (u64 kchunk : {(u64)32, (u64)64, (u64)4096}) {
            const u32 splits = (u32)((dim + kchunk - 1) / kchunk);
            std::vector<double> part((u64)splits * n * n, 0.0);
            emu_launch({splits, tiles, tiles}, 256, [&] { gram_tile(x.data(), dim, n, kchunk, part.data()); });
            ++launches;
            const std::vector<double> g = sum(part, (u64)n * n, splits);
            for (u32 i = 0; i < n; ++i)
                for (u32 j = 0; j < n; ++j) {
                    if (j / GT < i / GT) {
                        EMU_CHECK(g[i * n + j] == 0.0, "gram %u %u below the diagonal tiles: %g (dim %llu n %u)", i, j,
                                  g[i * n + j], dim, n);
                        continue;
                    }
                    const double r = dot(i, j);
                    EMU_CHECK(close(g[i * n + j], r, 1e-12), "gram %u %u: %.17g vs %.17g (dim %llu n %u kchunk %llu)", i,
                              j, g[i * n + j], r, dim, n, kchunk);
                }
        }

        // gram_small (n ≤ 32): the upper triangle within the f32-fold bound, the lower one 0.
        if (n <= G32) {
            for (u64 kchunk : {(u64)32, (u64)96, (u64)4096}) {
                const u32 splits = (u32)((dim + kchunk - 1) / kchunk);
                std::vector<double> part((u64)splits * n * n, 0.0);
                emu_launch({splits, 1, 1}, 256, [&] { gram_small(x.data(), dim, n, kchunk, part.data()); });
                ++launches;
                const std::vector<double> g = sum(part, (u64)n * n, splits);
                for (u32 i = 0; i < n; ++i)
                    for (u32 j = 0; j < n; ++j) {
                        if (j < i) {
                            EMU_CHECK(g[i * n + j] == 0.0, "gram_small %u %u below the diagonal: %g", i, j, g[i * n + j]);
                            continue;
                        }
                        double mag = 0;
                        for (u64 k = 0; k < dim; ++k) mag += std::fabs((double)x[i * dim + k] * x[j * dim + k]);
                        const double bound = (GK + 1) * std::ldexp(1.0, -24) * mag + 1e-300;
                        EMU_CHECK(std::fabs(g[i * n + j] - dot(i, j)) <= bound,
                                  "gram_small %u %u: %.17g vs %.17g (bound %.3g, dim %llu n %u kchunk %llu)", i, j,
                                  g[i * n + j], dot(i, j), bound, dim, n, kchunk);
                    }
            }
        }

        // rows_vs_out, both modes, grids small enough that both grid-stride loops run; every
        // grid gives the same bits.
        const u32 chunks = (u32)((dim + RCHUNK - 1) / RCHUNK);
        for (u32 mode : {0u, 1u}) {
            std::vector<double> first;
            for (unsigned gx : {1u, 3u})
                for (unsigned gy : {1u, 2u}) {
                    std::vector<double> part((u64)chunks * n, std::nan(""));
                    emu_launch({gx, gy, 1}, RBLOCK, [&] { rows_vs_out(x.data(), dim, n, out.data(), part.data(), mode); });
                    ++launches;
                    const std::vector<double> res = sum(part, n, chunks);
                    if (first.empty()) first = res;
                    EMU_CHECK(std::memcmp(first.data(), res.data(), 8 * n) == 0, "rows_vs_out mode %u: grid %u x %u differs",
                              mode, gx, gy);
                    for (u32 i = 0; i < n; ++i) {
                        double r = 0;
                        for (u64 k = 0; k < dim; ++k) {
                            const double a = x[i * dim + k], o = out[k];
                            r += mode ? a * o : (a - o) * (a - o);
                        }
                        EMU_CHECK(close(res[i], r, 1e-12), "rows_vs_out mode %u grid %u x %u row %u: %.17g vs %.17g", mode,
                                  gx, gy, i, res[i], r);
                    }
                }
        }

        for (unsigned gx : {1u, 2u}) {
            std::vector<double> part(chunks, std::nan(""));
            emu_launch({gx, 1, 1}, RBLOCK, [&] { sumsq_vec(out.data(), dim, part.data()); });
            ++launches;
            const double res = sum(part, 1, chunks)[0];
            double r = 0;
            for (float o : out) r += (double)o * o;
            EMU_CHECK(close(res, r, 1e-12), "sumsq_vec dim %llu grid %u: %.17g vs %.17g", dim, gx, res, r);
        }

        // weighted_sum over a subset with repeats, then with m = 0.
        {
            std::vector<u32> idx;
            std::vector<float> w;
            for (u32 i = 0; i < n + 2; ++i) {
                idx.push_back((u32)(rng() % n));
                w.push_back(rndf());
            }
            std::vector<float> o(dim, -1.0f);
            emu_launch({2, 1, 1}, 256,
                       [&] { weighted_sum(x.data(), dim, idx.data(), w.data(), (u32)idx.size(), o.data()); });
            ++launches;
            for (u64 j = 0; j < dim; ++j) {
                double r = 0;
                for (size_t i = 0; i < idx.size(); ++i) r += (double)w[i] * x[idx[i] * dim + j];
                EMU_CHECK(o[j] == (float)r, "weighted_sum dim %llu j %llu: %.9g vs %.9g", dim, j, o[j], (float)r);
            }
            std::fill(o.begin(), o.end(), -1.0f);
            emu_launch({2, 1, 1}, 256, [&] { weighted_sum(x.data(), dim, idx.data(), w.data(), 0, o.data()); });
            ++launches;
            for (u64 j = 0; j < dim; ++j) EMU_CHECK(o[j] == 0.0f, "weighted_sum m = 0: out[%llu] = %g", j, o[j]);
        }

        // centered_clip_dists (n ≤ 32): out bit-identical to centered_clip's, the distances to the
        // new out within 1e-12 of the sequential sums, the same bits under two grids.
        if (n <= CC_MAX) {
            std::vector<float> f(n);
            for (auto& v : f) v = rndf();
            std::vector<float> plain(out);
            emu_launch({2, 1, 1}, 256, [&] { centered_clip(x.data(), dim, f.data(), n, plain.data()); });
            std::vector<double> first;
            for (unsigned gx : {1u, 3u}) {
                std::vector<float> o(out);
                std::vector<double> part((u64)chunks * n, std::nan(""));
                emu_launch({gx, 1, 1}, RBLOCK, [&] { centered_clip_dists(x.data(), dim, f.data(), n, o.data(), part.data()); });
                launches += 2;
                EMU_CHECK(std::memcmp(o.data(), plain.data(), 4 * dim) == 0, "centered_clip_dists dim %llu: out differs", dim);
                const std::vector<double> d = sum(part, n, chunks);
                for (u32 i = 0; i < n; ++i) {
                    double r = 0;
                    for (u64 k = 0; k < dim; ++k) {
                        const double e = (double)x[i * dim + k] - (double)o[k];
                        r += e * e;
                    }
                    EMU_CHECK(close(d[i], r, 1e-12), "centered_clip_dists row %u: %.17g vs %.17g", i, d[i], r);
                }
                if (first.empty()) first = d;
                EMU_CHECK(std::memcmp(first.data(), d.data(), 8 * n) == 0, "centered_clip_dists: grid %u differs", gx);
            }
        }

        // centered_clip.
        {
            std::vector<float> f(n);
            for (auto& v : f) v = rndf();
            std::vector<float> o(out);
            emu_launch({2, 1, 1}, 256, [&] { centered_clip(x.data(), dim, f.data(), n, o.data()); });
            ++launches;
            for (u64 j = 0; j < dim; ++j) {
                double s = 0;
                const double oo = out[j];
                for (u32 i = 0; i < n; ++i) s += (double)f[i] * (x[i * dim + j] - oo);
                const float want = (float)(oo + s / n);
                EMU_CHECK(o[j] == want, "centered_clip dim %llu j %llu: %.9g vs %.9g", dim, j, o[j], want);
            }
        }

        // scale_rows on the listed rows (every other one, from the last down), others untouched.
        {
            std::vector<u32> rows;
            for (u32 i = n; i-- > 0;)
                if (i % 2 == 0) rows.push_back(i);
            std::vector<float> f(rows.size());
            for (auto& v : f) v = rndf();
            std::vector<float> y(x);
            emu_launch({2, 2, 1}, 256, [&] { scale_rows(y.data(), dim, rows.data(), f.data(), (u32)rows.size()); });
            ++launches;
            for (u32 i = 0; i < n; ++i)
                for (u64 j = 0; j < dim; ++j) {
                    const auto at = std::find(rows.begin(), rows.end(), i);
                    const float want = at != rows.end() ? x[i * dim + j] * f[at - rows.begin()] : x[i * dim + j];
                    EMU_CHECK(y[i * dim + j] == want, "scale_rows row %u j %llu: %.9g vs %.9g", i, j, y[i * dim + j],
                              want);
                }
        }
        // mix_rows: targets {n−1, 0} (and row 1 when n > 2) from random weights, grid-stride in
        // x; other rows untouched; bit-exact against the f32 j-ascending reference.
        if (n <= 256) {
            std::vector<u32> targets = {n - 1};
            if (n > 1) targets.push_back(0);
            if (n > 2) targets.push_back(1);
            const u32 k = (u32)targets.size();
            std::vector<float> mix((size_t)k * n);
            for (auto& v : mix) v = rndf();
            std::vector<float> y(x);
            emu_launch({3, 1, 1}, 64, [&] { mix_rows(y.data(), dim, n, targets.data(), k, mix.data()); });
            ++launches;
            for (u32 i = 0; i < n; ++i) {
                const auto t = std::find(targets.begin(), targets.end(), i);
                for (u64 j = 0; j < dim; ++j) {
                    float want = x[i * dim + j];
                    if (t != targets.end()) {
                        const size_t ti = (size_t)(t - targets.begin());
                        want = 0.0f;
                        for (u32 r = 0; r < n; ++r) want = want + mix[ti * n + r] * x[r * dim + j];
                    }
                    EMU_CHECK(y[i * dim + j] == want, "mix_rows row %u j %llu: %.9g vs %.9g", i, j, y[i * dim + j], want);
                }
            }
        }
        {
            std::vector<float> o(dim);
            emu_launch({1, 1, 1}, 256, [&] { scale_acc(acc.data(), dim, 0.25f, o.data()); });
            ++launches;
            for (u64 j = 0; j < dim; ++j)
                EMU_CHECK(o[j] == 0.25f * acc[j], "scale_acc j %llu: %.9g vs %.9g", j, o[j], 0.25f * acc[j]);
        }
    }
    char what[256];
    std::snprintf(what, sizeof what,
                  "gram_small and gram_tile (3 split-K chunks each), centered_clip_dists, rows_vs_out (2 modes x 4 grids), sumsq_vec (2 grids), sum_parts, weighted_sum, "
                  "centered_clip, scale_rows, mix_rows, scale_acc vs sequential reference on %zu (dim, n) shapes; %llu launches",
                  std::size(cases), launches);
    return emu_finish("reduce", what);
}
