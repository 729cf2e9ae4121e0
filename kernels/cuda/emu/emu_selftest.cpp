// emu_selftest.cpp — checks the emulator (emu.h) itself, so that the kernel tests' passing
// means something: that a kernel missing a __syncthreads, with a divergent barrier or with a
// shuffle not every lane reaches actually fails under it, and that shuffles, barriers and the
// block/thread indices behave as the kernels assume. (No GPU in CI: see emu.h's header for the
// model and for what it cannot catch.)
#include "emu.h"
// The block-wide sum the kernels use, tested as they compile it.
#include "../common.cuh"

#include <sys/wait.h>
#include <unistd.h>

#include <vector>

// Runs f in a child process; returns true if the child exited with status 3 (emu's error exit).
template <class F>
static bool emu_aborts(F f) {
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        if (!std::freopen("/dev/null", "w", stderr)) _exit(99);
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 3;
}

__global__ void sum_kernel(double* out) {
    __shared__ double red[32];
    const double s = block_sum((double)(threadIdx.x + 1) * (blockIdx.x + 1), red);
    if (threadIdx.x == 0) atomicAdd(out, s);
}

// Each thread publishes its id and reads both neighbours'; with `sync` false the barrier
// between the write and the reads is missing.
__global__ void neighbours(unsigned* out, bool sync) {
    __shared__ unsigned sh[1024];
    const unsigned t = threadIdx.x, n = blockDim.x;
    sh[t] = t + 1000 * blockIdx.x;
    if (sync) __syncthreads();
    out[blockIdx.x * n + t] = sh[(t + 1) % n] + sh[(t + n - 1) % n];
    __syncthreads();
    sh[t] = 0;  // stale values for the next block
}

int main() {
    // Shuffle + barrier block sums for every block size the kernels could use.
    for (unsigned b = 32; b <= 1024; b += 32) {
        double out = 0;
        emu_launch({3, 1, 1}, b, [&] { sum_kernel(&out); });
        const double want = (double)b * (b + 1) / 2 * (1 + 2 + 3);
        EMU_CHECK(out == want, "block_sum with %u threads: %g, want %g", b, out, want);
    }
    // Indices: every (block, thread) runs exactly once with consistent blockDim/gridDim.
    {
        const emu_dim3 g{3, 2, 2};
        std::vector<int> seen(3 * 2 * 2 * 64, 0);
        bool dims_ok = true;
        emu_launch(g, 64, [&] {
            dims_ok &= blockDim.x == 64 && gridDim.x == 3 && gridDim.y == 2 && gridDim.z == 2;
            ++seen[((blockIdx.z * 2 + blockIdx.y) * 3 + blockIdx.x) * 64 + threadIdx.x];
        });
        EMU_CHECK(dims_ok, "blockDim/gridDim wrong inside a launch");
        for (size_t i = 0; i < seen.size(); ++i) EMU_CHECK(seen[i] == 1, "thread slot %zu ran %d times", i, seen[i]);
    }
    // A missing __syncthreads must change the result (in both EMU_ORDERs); with it, correct.
    {
        const unsigned n = 128;
        std::vector<unsigned> out(2 * n);
        emu_launch({2, 1, 1}, n, [&] { neighbours(out.data(), true); });
        bool ok = true;
        for (unsigned b = 0; b < 2; ++b)
            for (unsigned t = 0; t < n; ++t) ok &= out[b * n + t] == (t + 1) % n + (t + n - 1) % n + 2000 * b;
        EMU_CHECK(ok, "neighbour exchange with __syncthreads is wrong");
        emu_launch({2, 1, 1}, n, [&] { neighbours(out.data(), false); });
        ok = true;
        for (unsigned b = 0; b < 2; ++b)
            for (unsigned t = 0; t < n; ++t) ok &= out[b * n + t] == (t + 1) % n + (t + n - 1) % n + 2000 * b;
        EMU_CHECK(!ok, "a missing __syncthreads went unnoticed");
    }
    // Threads that return early do not block a barrier the others reach (as on the device).
    {
        unsigned count = 0;
        emu_launch({1, 1, 1}, 64, [&] {
            if (threadIdx.x >= 40) return;
            __syncthreads();
            ++count;
        });
        EMU_CHECK(count == 40, "early return: %u threads passed the barrier", count);
    }
    // Divergent barriers and incomplete shuffles abort instead of passing or hanging. (The
    // kernels are lambdas outside EMU_CHECK: the call sites inside one macro expansion would
    // all get the same source location.)
    auto divergent = [] {
        emu_launch({1, 1, 1}, 64, [] {
            if (threadIdx.x < 16)
                __syncthreads();
            else
                __syncthreads();
        });
    };
    auto warp_uniform = [] {  // legal: warp 0 shuffles and returns, warp 1 passes the barrier
        emu_launch({1, 1, 1}, 64, [] {
            if (threadIdx.x < 32)
                (void)__shfl_down_sync(0xffffffffu, 1.0, 1);
            else
                __syncthreads();
        });
    };
    auto half_warp = [] {
        emu_launch({1, 1, 1}, 64, [] {
            if (threadIdx.x < 16) (void)__shfl_down_sync(0xffffffffu, 1.0, 1);
            __syncthreads();
        });
    };
    auto partial_warp = [] { emu_launch({1, 1, 1}, 48, [] { (void)__shfl_down_sync(0xffffffffu, 1.0, 1); }); };
    auto partial_mask = [] { emu_launch({1, 1, 1}, 32, [] { (void)__shfl_down_sync(0xffffu, 1.0, 1); }); };
    EMU_CHECK(emu_aborts(divergent), "divergent __syncthreads not reported");
    EMU_CHECK(!emu_aborts(warp_uniform), "a warp-uniform shuffle beside a barrier reported as a deadlock");
    EMU_CHECK(emu_aborts(half_warp), "a shuffle half a warp reaches not reported");
    EMU_CHECK(emu_aborts(partial_warp), "a full-mask shuffle in a partial warp not reported");
    EMU_CHECK(emu_aborts(partial_mask), "a partial-mask shuffle not reported");

    return emu_finish("emu", "emulator self-test: block sums for 32..1024 threads, indices, missing/divergent "
                             "barriers and incomplete shuffles detected");
}
