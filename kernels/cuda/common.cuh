// common.cuh — what every kernel module shares. kernels/src/cuda.rs puts it in front of each
// .cu file before NVRTC compiles it (with a #line so errors name the .cu file's own lines); the
// emulator tests include it before the .cu file they test. NVRTC is given no headers.

typedef unsigned long long u64;
typedef unsigned int u32;

// Sum of `x` over the block, valid in thread 0. All threads must call it; blockDim.x is a
// multiple of 32 and at most 1024. A fixed tree (warp shuffles, then the warps' sums in warp 0),
// so the result does not depend on scheduling.
__device__ __forceinline__ double block_sum(double x, double* red) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) red[warp] = x;
    __syncthreads();
    double r = 0.0;
    if (warp == 0) {
        r = lane < (blockDim.x >> 5) ? red[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) r += __shfl_down_sync(0xffffffffu, r, o);
    }
    __syncthreads();
    return r;
}
