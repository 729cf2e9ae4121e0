// decode.cu — validation and decoding of one update's segments (docs/protocol.md §5, the
// scalar reference is kernels/src/decode.rs). Compiled at run time by NVRTC (--fmad=false)
// after common.cuh (u64, u32, block_sum).
//
// One launch handles every segment of an update. The host (kernels/src/cuda.rs) uploads a
// single staging buffer per update, laid out as
//
//   [0, 8)                 f64  sum of squares of the decoded values (the host sums `parts`
//                               into it after a check pass)
//   [8, 8 + 8·nseg)        u64  per segment: first bad position (host writes ~0)
//   [table_off, +64·nseg)  u64  segment table, 8 fields per segment (T_* below)
//   data                        each segment's encoded bytes at a 16-byte aligned offset
//
// so f32/u32 fields are 4-aligned and f16/bf16 fields 2-aligned. Only segments with work (at
// least one element or top-k entry) are in the table, in segment order. A segment's work is
// cut into chunks of CHUNK items; T_FIRST is the segment's first chunk in the launch-wide
// chunk numbering, so block b (grid-stride) finds its segment by binary search.
//
// `mode` bit 0: check (finite values and scales, top-k order/range) and sum squares: chunk b's
// sum goes to parts[b] (every chunk's, zero or not), summed by one block in a fixed order, so
// the total the host forms from them (reduce.cu sum_parts, chunks in order) is the same bits on
// every run and every GPU — the clip weight that depends on it too;
// bits 1-2: 0 no write, 1 overwrite dst (a dense row the host zeroed), 2 dst += w·v with
// w = *wptr, read on the device (clip_weight below writes it after the check, so the host never
// waits between the check and the add); w = 0 means "do not add" (an invalid update), and the
// launch then writes nothing.
// The destination is dst[dst_base + T_DST + coordinate], f32, 64-bit indexing throughout.
//
// Bad positions reported through atomicMin (the smallest, i.e. the first in the reference's
// order): dense, Int8Block (non-finite decoded value, e.g. from a bad scale) and SignScale (bad
// scale: 0): the element index; top-k: the entry (the host tells index from value errors by
// reading that entry itself).

typedef unsigned short u16;

#define BLOCK 256
#define ITEMS 8
#define CHUNK (BLOCK * ITEMS)

#define ENC_F32 0
#define ENC_F16 1
#define ENC_BF16 2
#define ENC_I8 3
#define ENC_TOPK_F32 4
#define ENC_TOPK_F16 5
#define ENC_SIGN 6

#define T_KIND 0
#define T_BLOCK_SIZE 1
#define T_DST 2
#define T_NUMEL 3
#define T_DATA 4
#define T_WORK 5
#define T_FIRST 6
#define T_FIELDS 8

#define MODE_CHECK 1u
#define WRITE_NONE 0u
#define WRITE_SET 1u
#define WRITE_ADD 2u

// IEEE half to f32 (exact). NVRTC defines __CUDACC_RTC__: one cvt instruction there; the
// integer version is for compiling this file as host C++ (kernel tests on machines without a GPU).
__device__ __forceinline__ float f16_to_f32(u16 h) {
#ifdef __CUDACC_RTC__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const u32 sign = (u32)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant·2^-24, exact in f32
        const float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    const u32 bits = sign | (exp == 0x1f ? 0x7f800000u : (exp + 112u) << 23) | (mant << 13);
    return __int_as_float((int)bits);
#endif
}

__device__ __forceinline__ bool f32_bits_finite(u32 b) { return (b & 0x7f800000u) != 0x7f800000u; }

// Decodes work item `e` of a segment: the value, the coordinate it goes to (inside the
// segment), and whether it is valid; `bad` is the position to report when it is not (and
// `report` says whether this item is the one that reports it, to spare atomics).
template <int KIND>
__device__ __forceinline__ bool decode_item(const unsigned char* data, u64 e, u64 numel, u64 work,
                                            u32 block_size, float* v, u64* coord, u64* bad,
                                            bool* report) {
    *coord = e;
    *bad = e;
    *report = true;
    if (KIND == ENC_F32) {
        const u32 b = ((const u32*)data)[e];
        *v = __int_as_float((int)b);
        return f32_bits_finite(b);
    } else if (KIND == ENC_F16) {
        const u16 h = ((const u16*)data)[e];
        *v = f16_to_f32(h);
        return (h & 0x7c00u) != 0x7c00u;
    } else if (KIND == ENC_BF16) {
        const u16 h = ((const u16*)data)[e];
        *v = __int_as_float((int)((u32)h << 16));
        return (h & 0x7f80u) != 0x7f80u;
    } else if (KIND == ENC_I8) {
        const u64 blk = e / block_size;
        const u64 nblocks = (numel + block_size - 1) / block_size;
        const u32 sb = ((const u32*)data)[blk];
        const signed char q = ((const signed char*)(data + 4 * nblocks))[e];
        *v = __fmul_rn((float)q, __int_as_float((int)sb));
        // Like the CPU backend, the decoded value must be finite (a bad scale makes the whole
        // block bad; only its first element reports, to spare atomics).
        *report = f32_bits_finite(sb) || e == blk * block_size;
        return f32_bits_finite((u32)__float_as_int(*v));
    } else if (KIND == ENC_TOPK_F32 || KIND == ENC_TOPK_F16) {
        const u32* idx = (const u32*)data;
        const u32 i = idx[e];
        bool ok = (u64)i < numel && (e == 0 || i > idx[e - 1]);
        if (KIND == ENC_TOPK_F32) {
            const u32 b = ((const u32*)(data + 4 * work))[e];
            *v = __int_as_float((int)b);
            ok = ok && f32_bits_finite(b);
        } else {
            const u16 h = ((const u16*)(data + 4 * work))[e];
            *v = f16_to_f32(h);
            ok = ok && (h & 0x7c00u) != 0x7c00u;
        }
        *coord = i;
        return ok;
    } else {  // ENC_SIGN
        const u32 sb = ((const u32*)data)[0];
        const float s = __int_as_float((int)sb);
        const bool neg = (data[4 + (e >> 3)] >> (e & 7)) & 1;
        *v = neg ? -s : s;
        *bad = 0;
        *report = (e == 0);
        return f32_bits_finite(sb);
    }
}

template <int KIND>
__device__ __forceinline__ double run_chunk(const u64* t, const unsigned char* stage, u64 chunk,
                                            float* dst, float weight, bool check, u32 write,
                                            u64* flag) {
    const unsigned char* data = stage + t[T_DATA];
    const u64 numel = t[T_NUMEL], work = t[T_WORK];
    const u32 block_size = (u32)t[T_BLOCK_SIZE];
    float* out = dst + t[T_DST];
    const u64 base = chunk * CHUNK + threadIdx.x;
    double sum = 0.0;
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
        const u64 e = base + (u64)it * BLOCK;
        if (e < work) {
            float v;
            u64 coord, bad;
            bool report;
            const bool ok = decode_item<KIND>(data, e, numel, work, block_size, &v, &coord, &bad, &report);
            if (check) {
                if (ok) {
                    sum += (double)v * (double)v;
                } else if (report) {
                    atomicMin(flag, bad);
                }
            }
            if (coord < numel) {
                if (write == WRITE_SET) {
                    out[coord] = v;
                } else if (write == WRITE_ADD) {
                    out[coord] = __fadd_rn(out[coord], __fmul_rn(weight, v));
                }
            }
        }
    }
    return sum;
}

extern "C" __global__ void __launch_bounds__(BLOCK)
    decode_segments(unsigned char* stage, u64 table_off, u32 nseg, u64 total_chunks, float* dst,
                    u64 dst_base, const float* wptr, u32 mode, double* parts) {
    __shared__ double red[BLOCK / 32];
    const float weight = *wptr;
    if ((mode >> 1) == WRITE_ADD && weight == 0.0f) return;  // uniform over the launch
    u64* flags = (u64*)(stage + 8);
    const u64* table = (const u64*)(stage + table_off);
    const bool check = (mode & MODE_CHECK) != 0;
    const u32 write = mode >> 1;
    for (u64 b = blockIdx.x; b < total_chunks; b += gridDim.x) {
        // The last segment whose first chunk is ≤ b (every tabled segment has ≥ 1 chunk).
        u32 lo = 0, hi = nseg - 1;
        while (lo < hi) {
            const u32 mid = lo + (hi - lo + 1) / 2;
            if (table[(u64)mid * T_FIELDS + T_FIRST] <= b) lo = mid; else hi = mid - 1;
        }
        const u64* t = table + (u64)lo * T_FIELDS;
        const u64 chunk = b - t[T_FIRST];
        float* out = dst + dst_base;
        u64* flag = flags + lo;
        double s = 0.0;
        switch ((u32)t[T_KIND]) {
            case ENC_F32: s = run_chunk<ENC_F32>(t, stage, chunk, out, weight, check, write, flag); break;
            case ENC_F16: s = run_chunk<ENC_F16>(t, stage, chunk, out, weight, check, write, flag); break;
            case ENC_BF16: s = run_chunk<ENC_BF16>(t, stage, chunk, out, weight, check, write, flag); break;
            case ENC_I8: s = run_chunk<ENC_I8>(t, stage, chunk, out, weight, check, write, flag); break;
            case ENC_TOPK_F32: s = run_chunk<ENC_TOPK_F32>(t, stage, chunk, out, weight, check, write, flag); break;
            case ENC_TOPK_F16: s = run_chunk<ENC_TOPK_F16>(t, stage, chunk, out, weight, check, write, flag); break;
            default: s = run_chunk<ENC_SIGN>(t, stage, chunk, out, weight, check, write, flag); break;
        }
        if (check) {
            s = block_sum(s, red);
            if (threadIdx.x == 0) parts[b] = s;
        }
    }
}

// The weight of an update's add, on the device, after its check pass and sum of squares
// (staging image [0, 8), reduce.cu sum_parts): 0 when any segment's flag reports a bad value
// (the add then writes nothing), else weight·min(1, clip/‖u‖) exactly as the host computes it
// (the CPU backend's ingest: f64 square root and quotient, one rounding to f32, one f32 multiply);
// clip ≤ 0 means no clipping. One thread.
extern "C" __global__ void clip_weight(const unsigned char* stage, u32 nseg, float weight, float clip, float* wout) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const u64* flags = (const u64*)(stage + 8);
    for (u32 t = 0; t < nseg; ++t) {
        if (flags[t] != ~0ull) {
            *wout = 0.0f;
            return;
        }
    }
    const double norm = __dsqrt_rn(*(const double*)stage);
    float factor = 1.0f;
    if (clip > 0.0f && norm > (double)clip) factor = __double2float_rn(__ddiv_rn((double)clip, norm));
    *wout = __fmul_rn(weight, factor);
}
