// decode_test.cpp — checks kernels/cuda/decode.cu (decode_segments) against reference code
// written here from the wire format (docs/protocol.md §5, kernels/src/decode.rs), without a GPU.
//
// Why: no machine that runs the tests has a GPU, and the kernel's indexing (the launch-wide
// chunk numbering, the binary search for a block's segment, 64-bit offsets, the block-wide
// sum) is easy to get wrong in ways NVRTC's compile check cannot see. This compiles the real
// decode.cu as host C++ on the emulator in emu.h (threads, blocks, __syncthreads, warp
// shuffles and atomics as emu.h models them; see its header for what that cannot catch:
// real warp scheduling, memory-model races, register pressure) and checks:
//   * the host fallback of f16_to_f32 (the device uses cvt.f32.f16 instead) on all 65536
//     halves against an independent ldexp-based conversion;
//   * random updates (every encoding, segments of 0 to 6000 elements so that some span
//     several CHUNKs, gaps between segments, a small grid so the grid-stride loop runs several
//     rounds and a grid of one block per chunk), staged exactly as cuda.rs plan_update/
//     fill_stage lay them out, in the three modes the host uses:
//       - MODE_CHECK: the sum of squares (each chunk's partial, summed in chunk order as the host
//         does with reduce.cu sum_parts; tolerance 1e-12 relative against the sequential sum,
//         and bit for bit the same under both grids and both thread orders) and every
//         segment's flag left at ~0; nothing written;
//       - WRITE_ADD (no check): acc[c] += weight·v, bit-exact (one f32 multiply, one add);
//       - MODE_CHECK | WRITE_SET into row 1 of a 2-row matrix: the row equals the decoded
//         values bit for bit, the other row is untouched, and the sum of squares again;
//   * clip_weight: the host's clip arithmetic bit for bit after a check pass, 0 for an update
//     with a bad value, and an add launch with weight 0 writes nothing;
//   * error reports: one bad item (NaN/Inf value, NaN/Inf scale, Int8 overflow to Inf, top-k
//     index out of range or not increasing) per update; the segment's flag must be the first
//     bad position in the reference's order (element; first element of the block for a bad
//     Int8 scale; 0 for a bad SignScale scale; entry for top-k), another segment's flag its
//     own first bad position or ~0, and the check pass must not write.
// Top-level reference code: ref_value (decoding of one item) and stage_of (staging layout).
#include "emu.h"

#include "../common.cuh"
#include "../decode.cu"

#include <algorithm>
#include <random>
#include <vector>

typedef unsigned char u8;

static std::mt19937_64 rng(42);

// IEEE binary16 -> f32, written independently of decode.cu's f16_to_f32.
static float ref_half(u16 h) {
    const int e = (h >> 10) & 31, m = h & 0x3ff;
    float v;
    if (e == 0)
        v = std::ldexp((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = std::ldexp((float)(m | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}

struct Seg {
    int kind;
    u32 bs;
    u64 off, numel;
    std::vector<u8> bytes;
    u64 work;  // elements, or top-k entries
};
static void put32(std::vector<u8>& b, u32 v) {
    for (int i = 0; i < 4; ++i) b.push_back((v >> (8 * i)) & 0xff);
}
static void put16(std::vector<u8>& b, u16 v) {
    b.push_back(v & 0xff);
    b.push_back(v >> 8);
}
static float rndf() { return std::uniform_real_distribution<float>(-2, 2)(rng); }
// f32 -> f16 for generating inputs: normal values of magnitude < 4 only, truncating.
static u16 f2h(float f) {
    const u32 b = std::bit_cast<u32>(f);
    const u32 s = (b >> 16) & 0x8000;
    const int e = (int)((b >> 23) & 0xff) - 127 + 15;
    const u32 m = (b >> 13) & 0x3ff;
    if (e <= 0) return (u16)s;
    return (u16)(s | ((u32)e << 10) | m);
}
static Seg make(int kind, u64 off, u64 numel) {
    Seg s{kind, 0, off, numel, {}, numel};
    switch (kind) {
        case ENC_F32:
            for (u64 i = 0; i < numel; ++i) put32(s.bytes, std::bit_cast<u32>(rndf()));
            break;
        case ENC_F16:  // with some subnormals
            for (u64 i = 0; i < numel; ++i) put16(s.bytes, i % 97 == 5 ? (u16)(rng() % 0x400) : f2h(rndf()));
            break;
        case ENC_BF16:
            for (u64 i = 0; i < numel; ++i) put16(s.bytes, (u16)(std::bit_cast<u32>(rndf()) >> 16));
            break;
        case ENC_I8: {
            s.bs = 1 + rng() % 300;
            const u64 nb = (numel + s.bs - 1) / s.bs;
            for (u64 i = 0; i < nb; ++i) put32(s.bytes, std::bit_cast<u32>(rndf() * 0.01f));
            for (u64 i = 0; i < numel; ++i) s.bytes.push_back(rng() & 0xff);
            break;
        }
        case ENC_TOPK_F32:
        case ENC_TOPK_F16: {
            std::vector<u32> idx;
            for (u64 i = 0; i < numel; ++i)
                if (rng() % 3 == 0) idx.push_back((u32)i);
            s.work = idx.size();
            for (u32 i : idx) put32(s.bytes, i);
            for (size_t e = 0; e < idx.size(); ++e) {
                if (kind == ENC_TOPK_F32)
                    put32(s.bytes, std::bit_cast<u32>(rndf()));
                else
                    put16(s.bytes, f2h(rndf()));
            }
            break;
        }
        case ENC_SIGN:
            put32(s.bytes, std::bit_cast<u32>(rndf()));
            for (u64 i = 0; i < (numel + 7) / 8; ++i) s.bytes.push_back(rng() & 0xff);
            break;
    }
    return s;
}

// Reference decoding of work item e: its value, and in *coord the coordinate it goes to.
static float ref_value(const Seg& s, u64 e, u64* coord) {
    const u8* d = s.bytes.data();
    *coord = e;
    auto f32at = [&](u64 o) {
        u32 v;
        std::memcpy(&v, d + o, 4);
        return std::bit_cast<float>(v);
    };
    auto u16at = [&](u64 o) {
        u16 v;
        std::memcpy(&v, d + o, 2);
        return v;
    };
    switch (s.kind) {
        case ENC_F32: return f32at(4 * e);
        case ENC_F16: return ref_half(u16at(2 * e));
        case ENC_BF16: return std::bit_cast<float>((u32)u16at(2 * e) << 16);
        case ENC_I8: {
            const u64 nb = (s.numel + s.bs - 1) / s.bs;
            return (float)(signed char)d[4 * nb + e] * f32at(4 * (e / s.bs));
        }
        case ENC_TOPK_F32:
        case ENC_TOPK_F16: {
            u32 i;
            std::memcpy(&i, d + 4 * e, 4);
            *coord = i;
            return s.kind == ENC_TOPK_F32 ? f32at(4 * s.work + 4 * e) : ref_half(u16at(4 * s.work + 2 * e));
        }
        default: {
            const float sc = f32at(0);
            return ((d[4 + e / 8] >> (e % 8)) & 1) ? -sc : sc;
        }
    }
}

// The staging image exactly as cuda.rs plan_update + fill_stage lay it out: sum 0, flags ~0,
// the table of segments with work, then each segment's bytes 16-aligned. The vector is exactly
// as long as the image, so ASan catches reads past it.
static std::vector<u8> stage_of(const std::vector<Seg>& segs, std::vector<int>& tabled, u64& table_off, u64& total) {
    tabled.clear();
    for (size_t i = 0; i < segs.size(); ++i)
        if (segs[i].work > 0) tabled.push_back((int)i);
    const size_t nt = tabled.size();
    table_off = 8 + 8 * nt;
    size_t data = (table_off + 64 * nt + 15) & ~(size_t)15;
    std::vector<size_t> offs;
    for (int i : tabled) {
        offs.push_back(data);
        data = (data + segs[i].bytes.size() + 15) & ~(size_t)15;
    }
    std::vector<u8> st(data, 0);
    std::memset(st.data() + 8, 0xff, 8 * nt);
    u64 first = 0;
    for (size_t t = 0; t < nt; ++t) {
        const Seg& s = segs[tabled[t]];
        const u64 row[8] = {(u64)s.kind, s.bs, s.off, s.numel, offs[t], s.work, first, 0};
        std::memcpy(st.data() + table_off + 64 * t, row, 64);
        std::memcpy(st.data() + offs[t], s.bytes.data(), s.bytes.size());
        first += (s.work + CHUNK - 1) / CHUNK;
    }
    total = first;
    return st;
}

static unsigned long long launches = 0;
// One launch; after a check pass, the chunks' partial sums are added in chunk order into the
// staging image's first 8 bytes, as cuda.rs does with reduce.cu sum_parts (s = 0, s += part[c]).
static void run(std::vector<u8>& st, u64 table_off, u32 nt, u64 total, float* dst, u64 base, float w, u32 mode,
                unsigned grid) {
    if (nt == 0) return;  // the host does not launch for an update without work
    ++launches;
    std::vector<double> parts(total, std::nan(""));
    emu_launch({grid, 1, 1}, BLOCK,
               [&] { decode_segments(st.data(), table_off, nt, total, dst, base, &w, mode, parts.data()); });
    if (mode & MODE_CHECK) {
        double s = 0.0;
        for (double p : parts) s += p;  // a chunk the kernel missed leaves NaN
        std::memcpy(st.data(), &s, 8);
    }
}
static u64 flag_of(const std::vector<u8>& st, size_t t) {
    u64 f;
    std::memcpy(&f, st.data() + 8 + 8 * t, 8);
    return f;
}
static double sumsq_of(const std::vector<u8>& st) {
    double s;
    std::memcpy(&s, st.data(), 8);
    return s;
}

int main() {
    // f16_to_f32's host branch, exhaustively.
    for (u32 h = 0; h < 65536; ++h) {
        const float got = f16_to_f32((u16)h), want = ref_half((u16)h);
        if (std::isnan(want))
            EMU_CHECK(std::isnan(got), "f16_to_f32(%04x) = %08x, want NaN", h, std::bit_cast<u32>(got));
        else
            EMU_CHECK(std::bit_cast<u32>(got) == std::bit_cast<u32>(want), "f16_to_f32(%04x) = %08x, want %08x", h,
                      std::bit_cast<u32>(got), std::bit_cast<u32>(want));
    }

    const int kRounds = 30;
    unsigned long long segments = 0, items = 0, kind_items[7] = {};
    for (int round = 0; round < kRounds; ++round) {
        std::vector<Seg> segs;
        u64 off = rng() % 5;
        const int nsegs = 1 + rng() % 7;
        for (int k = 0; k < nsegs; ++k) {
            const u64 numel = (round % 3 == 0) ? rng() % 6000 : rng() % 40;  // some > CHUNK, some 0
            segs.push_back(make((int)(rng() % 7), off, numel));
            off += numel + rng() % 3;
            ++segments;
            items += segs.back().work;
            kind_items[segs.back().kind] += segs.back().work;
        }
        const u64 dim = off + 3, rows = 2, row = 1;
        std::vector<int> tabled;
        u64 table_off, total;
        auto st = stage_of(segs, tabled, table_off, total);
        const unsigned grid = round % 2 ? 2 : (unsigned)std::max<u64>(total, 1);
        const float w = 0.37f;

        // Check pass: sum of squares and flags; writes nothing.
        std::vector<float> acc(dim);
        for (u64 i = 0; i < dim; ++i) acc[i] = rndf();
        const std::vector<float> acc0(acc);
        run(st, table_off, (u32)tabled.size(), total, acc.data(), 0, 0.0f, MODE_CHECK, grid);
        EMU_CHECK(acc == acc0, "round %d: the check pass wrote to dst", round);
        double ss = 0;
        std::vector<float> want(acc);
        for (auto& s : segs)
            for (u64 e = 0; e < s.work; ++e) {
                u64 c;
                const float v = ref_value(s, e, &c);
                ss += (double)v * v;
                want[s.off + c] += w * v;  // one f32 multiply, one f32 add (-ffp-contract=off)
            }
        const double got = sumsq_of(st);
        EMU_CHECK(std::fabs(got - ss) <= 1e-12 * ss, "round %d: sumsq %.17g vs %.17g", round, got, ss);
        emu_digest(&got, 8);
        // The other grid gives the same bits: the sum depends on the chunks, not the launch.
        {
            auto st_other = stage_of(segs, tabled, table_off, total);
            const unsigned other = grid == 2 ? (unsigned)std::max<u64>(total, 1) : 2;
            run(st_other, table_off, (u32)tabled.size(), total, acc.data(), 0, 0.0f, MODE_CHECK, other);
            const double again = sumsq_of(st_other);
            EMU_CHECK(std::bit_cast<u64>(again) == std::bit_cast<u64>(got), "round %d: sumsq %.17g with grid %u, %.17g with %u",
                      round, got, grid, again, other);
        }
        for (size_t t = 0; t < tabled.size(); ++t)
            EMU_CHECK(flag_of(st, t) == ~0ull, "round %d: flag %zu = %llu on a valid update", round, t, flag_of(st, t));

        // Add pass (the host's second launch, without check).
        run(st, table_off, (u32)tabled.size(), total, acc.data(), 0, w, WRITE_ADD << 1, grid);
        for (u64 i = 0; i < dim; ++i)
            EMU_CHECK(std::bit_cast<u32>(acc[i]) == std::bit_cast<u32>(want[i]), "round %d: acc[%llu] %.9g vs %.9g",
                      round, i, acc[i], want[i]);

        // clip_weight after the check: the CPU backend's clip weight bit for bit (f64 norm and
        // quotient, one rounding to f32, one f32 multiply), for no clip, a clip above the norm
        // and one below it.
        for (float clip : {0.0f, (float)(2.0 * std::sqrt(got) + 1.0), (float)(0.5 * std::sqrt(got))}) {
            float wd = -1.0f;
            ++launches;
            emu_launch({1, 1, 1}, 32, [&] { clip_weight(st.data(), (u32)tabled.size(), w, clip, &wd); });
            const double norm = std::sqrt(got);
            const float factor = (clip > 0.0f && norm > (double)clip) ? (float)((double)clip / norm) : 1.0f;
            const float want_w = tabled.empty() ? w : w * factor;
            EMU_CHECK(std::bit_cast<u32>(wd) == std::bit_cast<u32>(want_w), "round %d clip %g: weight %.9g vs %.9g",
                      round, clip, wd, want_w);
        }

        // Check + overwrite into row 1 of a 2-row matrix (the host zeroed that row).
        std::vector<float> x(rows * dim, 7.0f);
        std::fill(x.begin() + row * dim, x.begin() + (row + 1) * dim, 0.0f);
        std::vector<float> wx(x);
        for (auto& s : segs)
            for (u64 e = 0; e < s.work; ++e) {
                u64 c;
                wx[row * dim + s.off + c] = ref_value(s, e, &c);
            }
        auto st2 = stage_of(segs, tabled, table_off, total);
        run(st2, table_off, (u32)tabled.size(), total, x.data(), row * dim, 1.0f, MODE_CHECK | (WRITE_SET << 1), grid);
        for (u64 i = 0; i < rows * dim; ++i)
            EMU_CHECK(std::bit_cast<u32>(x[i]) == std::bit_cast<u32>(wx[i]), "round %d: x[%llu] %.9g vs %.9g", round, i,
                      x[i], wx[i]);
        const double got2 = sumsq_of(st2);
        EMU_CHECK(std::bit_cast<u64>(got2) == std::bit_cast<u64>(got), "round %d: set-pass sumsq %.17g vs %.17g", round,
                  got2, got);
    }

    for (int k = 0; k < 7; ++k) EMU_CHECK(kind_items[k] > 0, "no random update had encoding %d", k);

    // Error reports: segment 0 is a 3-element f32 segment (bad at element 2 in odd trials),
    // segment 1 has one planted error.
    const int kTrials = 10;
    unsigned long long error_cases = 0;
    for (int kind = 0; kind < 7; ++kind)
        for (int trial = 0; trial < kTrials; ++trial) {
            const u64 numel = 1 + rng() % 5000;
            Seg s = make(kind, 3, numel);
            if (s.work == 0) continue;
            u64 want = ~0ull;
            auto setf32 = [&](u64 o, float v) {
                const u32 b = std::bit_cast<u32>(v);
                std::memcpy(s.bytes.data() + o, &b, 4);
            };
            const float bad = trial % 2 ? NAN : INFINITY;
            switch (kind) {
                case ENC_F32: {
                    const u64 a = rng() % numel, b = rng() % numel;
                    setf32(4 * a, bad);
                    setf32(4 * b, -bad);
                    want = std::min(a, b);
                    break;
                }
                case ENC_F16:
                case ENC_BF16: {
                    const u64 a = rng() % numel;
                    const u16 h = kind == ENC_F16 ? (u16)(0x7c00 | (trial % 2)) : (u16)(0x7f80 | (trial % 2));
                    std::memcpy(s.bytes.data() + 2 * a, &h, 2);
                    want = a;
                    break;
                }
                case ENC_I8: {
                    const u64 nb = (numel + s.bs - 1) / s.bs, blk = rng() % nb;
                    setf32(4 * blk, bad);  // a bad scale: the block's first element reports
                    want = blk * s.bs;
                    if (trial >= 4) {
                        // A finite huge scale and q = 100: the decoded value overflows to Inf
                        // (the CPU backend's rule); the block's earlier elements are q = 0.
                        setf32(4 * blk, 3e38f);
                        const u64 e = blk * s.bs + rng() % std::min<u64>(s.bs, numel - blk * s.bs);
                        s.bytes[4 * nb + e] = 100;
                        for (u64 i = blk * s.bs; i < e; ++i) s.bytes[4 * nb + i] = 0;
                        want = e;
                    }
                    break;
                }
                case ENC_TOPK_F32:
                case ENC_TOPK_F16: {
                    const u64 e = rng() % s.work;
                    want = e;
                    if (trial % 3 == 0) {  // index out of range
                        const u32 i = (u32)numel + (u32)(rng() % 3);
                        std::memcpy(s.bytes.data() + 4 * e, &i, 4);
                    } else if (trial % 3 == 1 && e > 0) {  // index equal to the previous one
                        u32 p;
                        std::memcpy(&p, s.bytes.data() + 4 * (e - 1), 4);
                        std::memcpy(s.bytes.data() + 4 * e, &p, 4);
                    } else if (kind == ENC_TOPK_F32) {  // bad value
                        setf32(4 * s.work + 4 * e, bad);
                    } else {
                        const u16 h = 0xfc00;  // -Inf
                        std::memcpy(s.bytes.data() + 4 * s.work + 2 * e, &h, 2);
                    }
                    break;
                }
                default:  // SignScale: bad scale, reported at 0
                    setf32(0, bad);
                    want = 0;
            }
            std::vector<Seg> segs = {make(ENC_F32, 0, 3), s};
            u64 want0 = ~0ull;
            if (trial % 2) {
                const float b = -INFINITY;
                std::memcpy(segs[0].bytes.data() + 8, &b, 4);
                want0 = 2;
            }
            std::vector<int> tabled;
            u64 table_off, total;
            auto st = stage_of(segs, tabled, table_off, total);
            std::vector<float> acc(numel + 3, 0.f);
            run(st, table_off, (u32)tabled.size(), total, acc.data(), 0, 0, MODE_CHECK, trial % 2 ? 1 : 5);
            ++error_cases;
            EMU_CHECK(flag_of(st, 0) == want0, "kind %d trial %d: segment 0 flag %llu, want %llu", kind, trial,
                      flag_of(st, 0), want0);
            EMU_CHECK(flag_of(st, 1) == want, "kind %d trial %d: flag %llu, want %llu (numel %llu)", kind, trial,
                      flag_of(st, 1), want, numel);
            EMU_CHECK(std::all_of(acc.begin(), acc.end(), [](float a) { return a == 0.f; }),
                      "kind %d trial %d: the check pass wrote", kind, trial);
            // The device's weight for a bad update is 0, and the add launch with it writes nothing.
            float wd = -1.0f;
            emu_launch({1, 1, 1}, 32, [&] { clip_weight(st.data(), (u32)tabled.size(), 0.37f, 0.0f, &wd); });
            EMU_CHECK(wd == 0.0f, "kind %d trial %d: weight %g for a bad update", kind, trial, wd);
            run(st, table_off, (u32)tabled.size(), total, acc.data(), 0, wd, WRITE_ADD << 1, trial % 2 ? 1 : 5);
            EMU_CHECK(std::all_of(acc.begin(), acc.end(), [](float a) { return a == 0.f; }),
                      "kind %d trial %d: an add with weight 0 wrote", kind, trial);
        }

    char what[256];
    std::snprintf(what, sizeof what,
                  "decode_segments vs reference: f16_to_f32 on all 65536 halves, %d random updates (%llu segments, "
                  "%llu items) x check/add/set, %llu planted-error updates; %llu launches",
                  kRounds, segments, items, error_cases, launches);
    return emu_finish("decode", what);
}
