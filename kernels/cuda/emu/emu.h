// emu.h — a host (CPU) emulation of the CUDA subset the vAIn kernels use, so that the real
// kernels/cuda/*.cu files can be compiled as ordinary C++ and checked against reference code
// without a GPU. Neither the development machines nor CI have one; production compiles the
// same files with NVRTC at run time (kernels/src/cuda.rs). run.sh builds and runs the tests.
//
// Model:
//   * A launch runs its blocks one after another (x fastest, then y, then z; reversed when
//     EMU_ORDER=rev). The threads of a block are fibers on one OS thread (a 6-register stack
//     switch on x86-64, ucontext elsewhere), so the emulation is deterministic and needs no
//     locks.
//   * Scheduling is run-to-barrier: each thread runs, in thread order (ascending, or descending
//     with EMU_ORDER=rev), until it reaches __syncthreads, a warp shuffle, or the kernel's end.
//     A thread therefore sees none of the writes other threads make in the same barrier
//     interval if it runs before them, and all of them if it runs after: a missing
//     __syncthreads shows up as a wrong result in one of the two orders (run.sh runs both).
//   * __syncthreads releases when every thread of the block that has not returned waits at the
//     same __syncthreads call site (file, line and column: calls inside one macro expansion
//     may be indistinguishable); a block in which some threads wait at a barrier that others
//     can never reach (divergent barrier, shuffle with missing lanes) is reported as a deadlock
//     and the test aborts, where a GPU would hang or be undefined.
//   * __shfl_down_sync (full mask only) exchanges values among the 32 lanes of a warp, all of
//     which must reach the same call site; lanes whose source is out of range keep their value.
//   * atomicAdd / atomicMin are plain read-modify-writes (one OS thread); float atomics thus
//     add in thread order, which is one of the orders a GPU may use.
//   * __shared__ is `static`: one copy, reused by every block, like shared memory it is not
//     reset between blocks. The *_rn intrinsics are the host's IEEE operations; build with
//     -ffp-contract=off (as the device side uses --fmad=false) so no FMA is formed.
//
// What it cannot catch: real warp scheduling and independent-thread-scheduling interleavings;
// memory-model races (visibility and ordering without fences, races between blocks, which a
// GPU runs concurrently and this runs one after another, non-atomic read-modify-writes of one
// location by several threads, where the emulation's last writer simply wins); timing,
// occupancy, shared-memory bank conflicts, register pressure, spills and launch-bound
// violations; NVRTC-specific compile errors (kernels/tests/nvrtc.rs compiles every kernel with
// NVRTC); the accuracy of device-only code paths (decode.cu's cvt.f32.f16 under
// __CUDACC_RTC__ is replaced by its host fallback here) and fminf/fmaxf's sign-of-zero choice
// on the device.
#pragma once
#include <math.h>
#include <unistd.h>
#if defined(__x86_64__) && !defined(EMU_UCONTEXT) && !(defined(__CET__) && (__CET__ & 2))
#define EMU_X86_64_SWITCH 1
#else
#define EMU_X86_64_SWITCH 0
#include <ucontext.h>
#endif

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <source_location>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

struct emu_dim3 {
    unsigned x = 1, y = 1, z = 1;
};
// The running fiber's indices (one OS thread, so plain globals; the scheduler sets them on
// every switch).
inline emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static

// Fiber switching. On x86-64 a hand-written switch of the System V callee-saved registers
// (glibc's swapcontext makes a sigprocmask system call per switch, ~10x slower); elsewhere,
// with -DEMU_UCONTEXT, and when built for CET shadow stacks (-fcf-protection=return/full: the
// switch's `ret` into a new fiber would violate them), ucontext. `.weak` so that several
// translation units could include this header.
#if EMU_X86_64_SWITCH
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);
asm(R"(
    .pushsection .text
    .weak emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
    .popsection
)");
#endif

namespace emu {

// Error exit, status 3. _exit, not exit: this may run on a fiber's stack, which exit's static
// destructors would free under it.
[[noreturn]] inline void fail_exit() {
    std::fflush(nullptr);
    _exit(3);
}

#if EMU_X86_64_SWITCH
struct Ctx {
    void* sp = nullptr;
};
inline void ctx_switch(Ctx& save, Ctx& to) { emu_ctx_switch(&save.sp, to.sp); }
// A context that starts `entry` (which never returns) on the stack [base, base + size).
inline void ctx_make(Ctx& c, char* base, size_t size, void (*entry)()) {
    auto top = reinterpret_cast<uintptr_t>(base + size) & ~uintptr_t(15);
    auto* p = reinterpret_cast<void**>(top);
    *--p = nullptr;                             // entry's (never used) return address
    *--p = reinterpret_cast<void*>(entry);      // popped by emu_ctx_switch's ret, 16-aligned
    for (int i = 0; i < 6; ++i) *--p = nullptr;  // rbp rbx r12 r13 r14 r15
    c.sp = p;
}
#else
struct Ctx {
    ucontext_t uc;
};
inline void ctx_switch(Ctx& save, Ctx& to) { swapcontext(&save.uc, &to.uc); }
inline void ctx_make(Ctx& c, char* base, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = base;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

[[noreturn]] inline void die(const char* what, std::source_location loc) {
    std::fprintf(stderr, "EMU ERROR: %s (at %s:%u; block %u,%u,%u thread %u)\n", what, loc.file_name(),
                 (unsigned)loc.line(), blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
    fail_exit();
}

enum class St : unsigned char { Ready, BlockBar, WarpBar, Done };

struct Fiber {
    Ctx ctx;
    St st = St::Done;
    const char* file = "";  // where it waits
    unsigned line = 0, column = 0;
};
inline bool same_site(const Fiber& a, const Fiber& b) {
    return a.line == b.line && a.column == b.column && std::strcmp(a.file, b.file) == 0;
}

inline constexpr unsigned kMaxBlock = 1024;
inline constexpr size_t kStack = 256 * 1024;
inline Fiber fibers[kMaxBlock];
inline std::unique_ptr<char[]> stacks[kMaxBlock];
inline Ctx sched;
inline unsigned cur = 0;
inline void (*body)(void*) = nullptr;
inline void* body_arg = nullptr;
inline unsigned long long shfl[kMaxBlock / 32][32];
inline const void* sched_stack_bottom = nullptr;
inline size_t sched_stack_size = 0;

inline bool reverse() {
    static const int r = [] {
        const char* e = std::getenv("EMU_ORDER");
        if (!e || !*e || !std::strcmp(e, "fwd")) return 0;
        if (!std::strcmp(e, "rev")) return 1;
        std::fprintf(stderr, "EMU ERROR: EMU_ORDER must be fwd or rev, not '%s'\n", e);
        fail_exit();
    }();
    return r != 0;
}

// Fiber -> scheduler, the fiber resuming here when released.
inline void wait(St st, std::source_location loc) {
    Fiber& f = fibers[cur];
    f.st = st;
    f.file = loc.file_name();
    f.line = loc.line();
    f.column = loc.column();
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, sched_stack_bottom, sched_stack_size);
    ctx_switch(f.ctx, sched);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    ctx_switch(f.ctx, sched);
#endif
}

inline void trampoline() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_stack_bottom, &sched_stack_size);
#endif
    body(body_arg);
    fibers[cur].st = St::Done;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, sched_stack_bottom, sched_stack_size);
#endif
    static Ctx dead;  // the finished fiber's context, never resumed
    ctx_switch(dead, sched);
    __builtin_unreachable();
}

inline void run_fiber(unsigned t) {
    cur = t;
    threadIdx = {t, 0, 0};
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, stacks[t].get(), kStack);
    ctx_switch(sched, fibers[t].ctx);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    ctx_switch(sched, fibers[t].ctx);
#endif
}

[[noreturn]] inline void deadlock(unsigned block, const char* why) {
    std::fprintf(stderr, "EMU ERROR: deadlock in block (%u,%u,%u): %s; thread states:\n", blockIdx.x, blockIdx.y,
                 blockIdx.z, why);
    static const char* names[] = {"ready", "__syncthreads", "shuffle", "returned"};
    for (unsigned t = 0; t < block; ++t) {
        // Print runs of threads in the same state at the same site.
        unsigned u = t;
        while (u + 1 < block && fibers[u + 1].st == fibers[t].st && same_site(fibers[u + 1], fibers[t])) ++u;
        if (fibers[t].st == St::Done)
            std::fprintf(stderr, "  threads %u-%u: %s\n", t, u, names[(int)fibers[t].st]);
        else
            std::fprintf(stderr, "  threads %u-%u: %s at %s:%u:%u\n", t, u, names[(int)fibers[t].st], fibers[t].file,
                         fibers[t].line, fibers[t].column);
        t = u;
    }
    fail_exit();
}

// Runs one block to completion.
inline void run_block(unsigned block) {
    for (unsigned t = 0; t < block; ++t) {
        if (!stacks[t]) stacks[t].reset(new char[kStack]);
#if EMU_ASAN
        __asan_unpoison_memory_region(stacks[t].get(), kStack);
#endif
        Fiber& f = fibers[t];
        ctx_make(f.ctx, stacks[t].get(), kStack, trampoline);
        f.st = St::Ready;
        f.file = "";
        f.line = f.column = 0;
    }
    const bool rev = reverse();
    const unsigned warps = (block + 31) / 32;
    for (;;) {
        for (unsigned k = 0; k < block; ++k) {
            const unsigned t = rev ? block - 1 - k : k;
            if (fibers[t].st == St::Ready) run_fiber(t);
        }
        // Nobody is ready: release what can be released, warps first.
        if (block % 32 != 0)
            for (unsigned t = block & ~31u; t < block; ++t)
                if (fibers[t].st == St::WarpBar) deadlock(block, "full-mask shuffle in a partial warp");
        bool released = false;
        for (unsigned w = 0; w < warps; ++w) {
            const unsigned lo = 32 * w, hi = lo + 32;
            unsigned at = 0;
            for (unsigned t = lo; t < hi && t < block; ++t) at += fibers[t].st == St::WarpBar;
            if (at != 32) continue;  // none waiting, or checked below: cannot be released
            for (unsigned t = lo + 1; t < hi; ++t)
                if (!same_site(fibers[t], fibers[lo])) deadlock(block, "lanes of one warp wait at different shuffles");
            for (unsigned t = lo; t < hi; ++t) fibers[t].st = St::Ready;
            released = true;
        }
        if (released) continue;
        unsigned live = 0, at_bar = 0, first = block;
        for (unsigned t = 0; t < block; ++t) {
            if (fibers[t].st == St::Done) continue;
            ++live;
            if (fibers[t].st == St::BlockBar) {
                if (first == block) first = t;
                ++at_bar;
                if (!same_site(fibers[t], fibers[first])) deadlock(block, "threads wait at different __syncthreads");
            }
        }
        if (live == 0) return;
        if (at_bar != live) deadlock(block, "a shuffle or __syncthreads that not every thread reaches");
        for (unsigned t = 0; t < block; ++t)
            if (fibers[t].st == St::BlockBar) fibers[t].st = St::Ready;
    }
}

}  // namespace emu

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
    emu::wait(emu::St::BlockBar, loc);
}

template <class T>
T __shfl_down_sync(unsigned mask, T x, int delta, std::source_location loc = std::source_location::current()) {
    static_assert(sizeof(T) <= 8);
    if (mask != 0xffffffffu) emu::die("__shfl_down_sync: only the full mask is emulated", loc);
    const unsigned lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    unsigned long long b = 0;
    std::memcpy(&b, &x, sizeof(T));
    emu::shfl[w][lane] = b;
    emu::wait(emu::St::WarpBar, loc);  // every lane has published
    T r = x;
    if (delta >= 0 && lane + (unsigned)delta < 32) std::memcpy(&r, &emu::shfl[w][lane + delta], sizeof(T));
    emu::wait(emu::St::WarpBar, loc);  // every lane has read before the slots are reused
    return r;
}

inline double atomicAdd(double* p, double v) {
    const double old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline float __int_as_float(int b) { return std::bit_cast<float>(b); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline double __longlong_as_double(long long b) { return std::bit_cast<double>(b); }
inline long long __double_as_longlong(double d) { return std::bit_cast<long long>(d); }
inline float __double2float_rn(double d) { return (float)d; }

// kernel<<<grid, block>>>(...) as emu_launch(grid, block, [&] { kernel(...); }).
template <class F>
void emu_launch(emu_dim3 grid, unsigned block, F f) {
    if (block == 0 || block > emu::kMaxBlock || grid.x == 0 || grid.y == 0 || grid.z == 0) {
        std::fprintf(stderr, "EMU ERROR: bad launch configuration (%u,%u,%u) x %u\n", grid.x, grid.y, grid.z, block);
        emu::fail_exit();
    }
    blockDim = {block, 1, 1};
    gridDim = grid;
    emu::body = [](void* p) { (*static_cast<F*>(p))(); };
    emu::body_arg = &f;
    const bool rev = emu::reverse();
    const unsigned long long n = (unsigned long long)grid.x * grid.y * grid.z;
    for (unsigned long long k = 0; k < n; ++k) {
        const unsigned long long b = rev ? n - 1 - k : k;
        blockIdx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / grid.x / grid.y)};
        emu::run_block(block);
    }
    threadIdx = {0, 0, 0};
    blockIdx = {0, 0, 0};
}

// ---- Test support: counted checks and the one-line summary ----------------------------------

namespace emu {
inline unsigned long long checks = 0, failures = 0;
// FNV-1a over every result a test declares order-independent (emu_digest); printed by
// emu_finish, so run.sh can require the same digest in both thread orders.
inline unsigned long long digest = 0xcbf29ce484222325ull, digested = 0;
}

// Adds `len` bytes of results that must not depend on the thread or block order to the digest.
inline void emu_digest(const void* p, size_t len) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < len; ++i) {
        emu::digest ^= b[i];
        emu::digest *= 0x00000100000001b3ull;
    }
    emu::digested += len;
}

// Counts a check; on failure prints the message (the first 20) and makes emu_finish fail.
#define EMU_CHECK(cond, ...)                                                       \
    do {                                                                           \
        ++emu::checks;                                                             \
        if (!(cond) && ++emu::failures <= 20) {                                    \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);              \
            std::fprintf(stderr, __VA_ARGS__);                                     \
            std::fprintf(stderr, "\n");                                            \
        }                                                                          \
    } while (0)

// Prints "<name>: ok: <what> (<n> checks)" and returns 0, or a failure line and returns 1
// (also when no check ran at all).
inline int emu_finish(const char* name, const char* what) {
    if (emu::failures != 0 || emu::checks == 0) {
        std::printf("%s: FAILED: %llu of %llu checks failed (%s)\n", name, emu::failures, emu::checks, what);
        return 1;
    }
    if (emu::digested > 0) {
        std::printf("%s: ok: %s (%llu checks); order-independent results %llu bytes, digest %016llx\n", name, what,
                    emu::checks, emu::digested, emu::digest);
    } else {
        std::printf("%s: ok: %s (%llu checks)\n", name, what, emu::checks);
    }
    return 0;
}
