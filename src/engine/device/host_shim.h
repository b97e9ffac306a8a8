// The CUDA built-ins that kernels.cu uses, for a host C++ compiler: the kernels then run on the
// host, one simulated thread at a time (host_launch.cpp), with float32 flushing done in software.
// This is how the test command checks the kernels' arithmetic and indexing without a GPU.
#pragma once
#include <math.h>
#include <string.h>

#define ADAMW_HOST_SHIM 1
#define ADAMW_SOFTWARE_FTZ_F32 1

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

#define ADAMW_KERNEL static
#define ADAMW_FN static inline

struct adamw_dim3 {
    unsigned x, y, z;
};
// The simulated launch's coordinates (set by host_launch.cpp before each simulated thread).
static thread_local adamw_dim3 blockIdx, threadIdx, blockDim, gridDim;

ADAMW_FN float bits_f32(u32 b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}
ADAMW_FN u32 f32_bits(float x) {
    u32 b;
    memcpy(&b, &x, sizeof b);
    return b;
}
ADAMW_FN double bits_f64(u64 b) {
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}
ADAMW_FN u64 f64_bits(double x) {
    u64 b;
    memcpy(&b, &x, sizeof b);
    return b;
}
// CUDA's vector type: four floats, 16-byte aligned.
struct alignas(16) float4 {
    float x, y, z, w;
};
ADAMW_FN float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// The simulated threads run one at a time.
ADAMW_FN void atomic_min_u64(u64* at, u64 x) {
    if (x < *at) *at = x;
}
