// libadamw's device kernels: the AdamW step, the clip norms' leaf sums and the non-finite check,
// with the bits of the CPU engine (docs/numerics.md §20).
//
// One source, two compilers:
// - NVRTC for the GPU, with `--fmad=false` (no contraction), IEEE division and square root and
//   `--ftz=true` (float32 flushes in hardware, as TF's CPU kernels do under MXCSR FTZ + DAZ);
// - a host C++ compiler (tests), with `host_shim.h` defining the CUDA built-ins and
//   ADAMW_SOFTWARE_FTZ_F32, so float32 flushes explicitly.
// float64 always flushes explicitly (a GPU has no float64 flush mode).
//
// The structs below are mirrored in `abi.rs`; both sides assert their sizes.
// Every kernel is a pure function of its table and the state it updates: no element depends on
// another, so neither the launch shape nor the order of blocks changes a bit.

#ifndef ADAMW_HOST_SHIM
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
#define ADAMW_KERNEL extern "C" __global__
#define ADAMW_FN static __device__ __forceinline__
ADAMW_FN float bits_f32(u32 b) { return __uint_as_float(b); }
ADAMW_FN u32 f32_bits(float x) { return __float_as_uint(x); }
ADAMW_FN double bits_f64(u64 b) { return __longlong_as_double((long long)b); }
ADAMW_FN u64 f64_bits(double x) { return (u64)__double_as_longlong(x); }
ADAMW_FN void atomic_min_u64(u64* at, u64 x) { atomicMin(at, x); }
#endif

// ---------------------------------------------------------------------------------------------
// The tables the host uploads (abi.rs).
// ---------------------------------------------------------------------------------------------

enum { ADAMW_F32 = 0, ADAMW_F64 = 1, ADAMW_BF16 = 2, ADAMW_F16 = 3 };

enum {
    ADAMW_DECAY = 1u,
    ADAMW_SPARSE = 2u,
    ADAMW_AMSGRAD = 4u,
    ADAMW_EMA = 8u,
    ADAMW_OVERWRITE = 16u,
    ADAMW_MASTER = 32u,
    ADAMW_UNSCALE = 64u,
    ADAMW_HALVE = 128u,
    ADAMW_VEC4 = 256u,
    ADAMW_OWN_SCALARS = 512u,
    ADAMW_REPORT = 1024u,
};

// Threads per block, and elements per thread, of the step and the non-finite check.
#define ADAMW_BLOCK 256
#define ADAMW_PER_THREAD 4
#define ADAMW_BLOCK_ELEMENTS (ADAMW_BLOCK * ADAMW_PER_THREAD)

// One variable of a step.
struct adamw_entry {
    u64 values;    // the caller's values (values_dtype)
    u64 gradient;  // dense: `len` values; sparse: `row_len` per index (gradient_dtype)
    u64 m, v, vhat, average, master;  // state (state_dtype; master float32), 0 when off
    u64 pairs;     // sparse: (row, position) of every index, sorted by row then position
    u64 len;       // elements held
    u64 row_len;   // elements per row
    u64 offset;    // flat index of the first element held
    u64 pair_count;
    u64 first_block;  // the launch's first block for this entry
    u64 op[5];     // the gradient op (r, a, d, hi, lo), bits of the math type
    u64 scalars[8];  // with ADAMW_OWN_SCALARS (per-variable multipliers): the step's scalars
    u64 group_lanes;  // with ADAMW_REPORT: the report's lanes of each group (float, double for float64)
    u32 state_dtype, values_dtype, gradient_dtype, flags;
};
static_assert(sizeof(struct adamw_entry) == 232, "adamw_entry is mirrored in abi.rs");

// The scalars of the step per dtype (lr, wd, 1-b1, 1-b2, alpha, eps, ema, 1-ema), bits of the
// math type: float32 bits for float32 and the 16-bit dtypes, float64 bits for float64.
struct adamw_step_params {
    u64 entries;
    u64 scalars[4][8];
    u32 count;
    u32 total_blocks;
};
static_assert(sizeof(struct adamw_step_params) == 272, "adamw_step_params is mirrored in abi.rs");

// One gradient of a clip-norm sum.
struct adamw_norm_entry {
    u64 gradient;
    u64 unscale;   // bits of the terms' math type
    u32 gradient_dtype, terms_dtype, tree_dtype, flags;  // flags: ADAMW_UNSCALE, ADAMW_HALVE
};
static_assert(sizeof(struct adamw_norm_entry) == 32, "adamw_norm_entry is mirrored in abi.rs");

// One leaf of Eigen's tree over a gradient: elements first..first+len of entry `entry`.
struct adamw_leaf {
    u64 entry, first, len;
};

struct adamw_leaf_params {
    u64 entries;  // adamw_norm_entry[]
    u64 leaves;   // adamw_leaf[count]
    u64 sums;     // u64[count]: each leaf's sum, the bits of the tree's math type
    u64 count;
};
static_assert(sizeof(struct adamw_leaf_params) == 32, "adamw_leaf_params is mirrored in abi.rs");

// One gradient of the non-finite check.
struct adamw_check_entry {
    u64 gradient;
    u64 len;
    u64 first_block;
    u64 unscale;   // bits of the check's math type
    u32 gradient_dtype, check_dtype, flags, pad;  // flags: ADAMW_UNSCALE
};
static_assert(sizeof(struct adamw_check_entry) == 48, "adamw_check_entry is mirrored in abi.rs");

struct adamw_check_params {
    u64 entries;
    u64 first_bad;  // u64[count]: the first bad element's index, or ~0
    u32 count;
    u32 total_blocks;
};
static_assert(sizeof(struct adamw_check_params) == 24, "adamw_check_params is mirrored in abi.rs");

// ---------------------------------------------------------------------------------------------
// Flushing and the 16-bit conversions (src/float/sixteen.rs, bit for bit).
// ---------------------------------------------------------------------------------------------

ADAMW_FN float flush32(float x) {
#ifdef ADAMW_SOFTWARE_FTZ_F32
    u32 b = f32_bits(x);
    return (b & 0x7fffffffu) < 0x00800000u ? bits_f32(b & 0x80000000u) : x;
#else
    return x;  // --ftz=true: the operations flush their operands and results
#endif
}

ADAMW_FN double flush64(double x) {
    u64 b = f64_bits(x);
    return (b & 0x7fffffffffffffffull) < 0x0010000000000000ull ? bits_f64(b & 0x8000000000000000ull) : x;
}

ADAMW_FN float bf16_to_f32(u16 bits) {
    u32 wide = (u32)bits << 16;
    return bits_f32((bits & 0x7fffu) > 0x7f80u ? (wide | 0x00400000u) : wide);
}

ADAMW_FN u16 f32_to_bf16(float x) {
    u32 b = f32_bits(x);
    u32 rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    u32 nan = (b >> 16) | 0x0040u;
    return (u16)((b & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// The NaN of an x86 SSE operation, which the CPU engine computes with: a NaN operand's, quieted
// (the first one's), or for an invalid operation the default NaN, sign set. A GPU gives one
// canonical NaN (0x7fffffff) instead; with these the NaNs of a step have the CPU's bits, and a
// NaN's low bits stay zero, as the 16-bit roundings below rely on.
ADAMW_FN float x86_nan(float r, float a, float b) {
    if (r == r) return r;
    if (a != a) return bits_f32(f32_bits(a) | 0x00400000u);
    if (b != b) return bits_f32(f32_bits(b) | 0x00400000u);
    return bits_f32(0xffc00000u);
}

ADAMW_FN double x86_nan(double r, double a, double b) {
    if (r == r) return r;
    if (a != a) return bits_f64(f64_bits(a) | 0x0008000000000000ull);
    if (b != b) return bits_f64(f64_bits(b) | 0x0008000000000000ull);
    return bits_f64(0xfff8000000000000ull);
}

// A bfloat16 operation's float32 result rounded to bfloat16 (its NaN results, whose low bits
// are zero, round to themselves).
ADAMW_FN float round_bf16_result(float x) {
    u32 b = f32_bits(x);
    return bits_f32((b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u);
}

ADAMW_FN float round_bf16(float x) { return bits_f32((u32)f32_to_bf16(x) << 16); }

#define ADAMW_F16_MIN_NORMAL_BITS 0x38800000u
#define ADAMW_F16_OVERFLOW_BITS 0x47800000u

ADAMW_FN float f16_to_f32(u16 bits) {
    u32 sign = (u32)(bits & 0x8000u) << 16;
    u32 exponent = bits & 0x7c00u;
    u32 mantissa = bits & 0x03ffu;
    u32 normal = (((u32)(bits & 0x7fffu)) << 13) + 0x38000000u;
    u32 subnormal = f32_bits(bits_f32(0x3f000000u + mantissa) - 0.5f);
    u32 quiet = mantissa != 0 ? 0x00400000u : 0u;
    u32 special = 0x7f800000u | quiet | (mantissa << 13);
    u32 magnitude = exponent == 0x7c00u ? special : (exponent == 0 ? subnormal : normal);
    return bits_f32(sign | magnitude);
}

ADAMW_FN u16 f32_to_f16(float x) {
    u32 b = f32_bits(x);
    u32 sign = (b >> 16) & 0x8000u;
    u32 a = b & 0x7fffffffu;
    u32 rounded = (a + 0x0fffu + ((a >> 13) & 1u)) >> 13;
    u32 normal = rounded >= (ADAMW_F16_OVERFLOW_BITS >> 13) ? 0x7c00u : rounded - 0x1c000u;
    u32 subnormal = f32_bits(bits_f32(a) + 0.5f) - 0x3f000000u;
    u32 nan = 0x7e00u | ((a >> 13) & 0x03ffu);
    u32 magnitude = a > 0x7f800000u ? nan : (a >= ADAMW_F16_MIN_NORMAL_BITS ? normal : subnormal);
    return (u16)(sign | magnitude);
}

// A float16 operation's float32 result rounded to float16: adding and subtracting a power of two
// whose ulp is float16's quantum at the value's exponent rounds to nearest even.
ADAMW_FN float round_f16_result(float x) {
    if (x != x) return x;  // a quiet NaN result: what the float32 arithmetic below gives it on x86
    u32 b = f32_bits(x);
    u32 a = b & 0x7fffffffu;
    u32 exponent = a & 0x7f800000u;
    exponent = exponent < ADAMW_F16_MIN_NORMAL_BITS ? ADAMW_F16_MIN_NORMAL_BITS : exponent;
    exponent = exponent > ADAMW_F16_OVERFLOW_BITS ? ADAMW_F16_OVERFLOW_BITS : exponent;
    float magic = bits_f32(exponent + (13u << 23));
    float rounded = (bits_f32(a) + magic) - magic;
    rounded = rounded >= 65536.0f ? bits_f32(0x7f800000u) : rounded;
    return bits_f32(f32_bits(rounded) | (b & 0x80000000u));
}

ADAMW_FN float round_f16(float x) {
    if (x != x) return bits_f32((f32_bits(x) & 0xffffe000u) | 0x00400000u);
    return round_f16_result(x);
}

// A stored element of `dtype` as the math type (exact), and back.
ADAMW_FN float load_f(u64 base, u64 i, u32 dtype) {
    switch (dtype) {
    case ADAMW_BF16: return bf16_to_f32(((const u16*)base)[i]);
    case ADAMW_F16: return f16_to_f32(((const u16*)base)[i]);
    default: return ((const float*)base)[i];
    }
}

ADAMW_FN void store_f(u64 base, u64 i, u32 dtype, float x) {
    switch (dtype) {
    case ADAMW_BF16: ((u16*)base)[i] = (u16)(f32_bits(x) >> 16); break;  // x holds a bfloat16
    case ADAMW_F16: ((u16*)base)[i] = f32_to_f16(x); break;
    default: ((float*)base)[i] = x; break;
    }
}

// ---------------------------------------------------------------------------------------------
// The arithmetic of each dtype (src/float): one IEEE operation at a time, flushed; the 16-bit
// types compute in float32 and round every result. `in` reads a stored value as TF does
// (denormals are zero).
// ---------------------------------------------------------------------------------------------

struct MathF32 {
    typedef float T;
    ADAMW_FN T load(u64 base, u64 i, u32 dtype) { return load_f(base, i, dtype); }
    ADAMW_FN void store(u64 base, u64 i, u32 dtype, T x) { store_f(base, i, dtype, x); }
    enum { PACKET = 8, PREDUX_IN_F32 = 0 };
    ADAMW_FN T in(T x) { return flush32(x); }
    ADAMW_FN T add(T a, T b) { return flush32(x86_nan(a + b, a, b)); }
    ADAMW_FN T sub(T a, T b) { return flush32(x86_nan(a - b, a, b)); }
    ADAMW_FN T mul(T a, T b) { return flush32(x86_nan(a * b, a, b)); }
    ADAMW_FN T div(T a, T b) { return flush32(x86_nan(a / b, a, b)); }
    ADAMW_FN T root(T a) { return flush32(x86_nan(sqrtf(a), a, a)); }
    ADAMW_FN T scalar(u64 bits) { return bits_f32((u32)bits); }
    ADAMW_FN T from_f32(float x) { return flush32(x); }
    ADAMW_FN u64 bits(T x) { return f32_bits(x); }
};

struct MathF64 {
    typedef double T;
    ADAMW_FN T load(u64 base, u64 i, u32) { return ((const double*)base)[i]; }
    ADAMW_FN void store(u64 base, u64 i, u32, T x) { ((double*)base)[i] = x; }
    enum { PACKET = 4, PREDUX_IN_F32 = 0 };
    ADAMW_FN T in(T x) { return flush64(x); }
    ADAMW_FN T add(T a, T b) { return flush64(x86_nan(a + b, a, b)); }
    ADAMW_FN T sub(T a, T b) { return flush64(x86_nan(a - b, a, b)); }
    ADAMW_FN T mul(T a, T b) { return flush64(x86_nan(a * b, a, b)); }
    ADAMW_FN T div(T a, T b) { return flush64(x86_nan(a / b, a, b)); }
    ADAMW_FN T root(T a) { return flush64(x86_nan(sqrt(a), a, a)); }
    ADAMW_FN T scalar(u64 bits) { return bits_f64(bits); }
    ADAMW_FN u64 bits(T x) { return f64_bits(x); }
};

struct MathBf16 {
    typedef float T;
    ADAMW_FN T load(u64 base, u64 i, u32 dtype) { return load_f(base, i, dtype); }
    ADAMW_FN void store(u64 base, u64 i, u32 dtype, T x) { store_f(base, i, dtype, x); }
    enum { PACKET = 8, PREDUX_IN_F32 = 1 };
    ADAMW_FN T in(T x) { return flush32(x); }
    ADAMW_FN T add(T a, T b) { return round_bf16_result(flush32(x86_nan(a + b, a, b))); }
    ADAMW_FN T sub(T a, T b) { return round_bf16_result(flush32(x86_nan(a - b, a, b))); }
    ADAMW_FN T mul(T a, T b) { return round_bf16_result(flush32(x86_nan(a * b, a, b))); }
    ADAMW_FN T div(T a, T b) { return round_bf16_result(flush32(x86_nan(a / b, a, b))); }
    ADAMW_FN T root(T a) { return round_bf16_result(flush32(x86_nan(sqrtf(a), a, a))); }
    ADAMW_FN T scalar(u64 bits) { return bits_f32((u32)bits); }
    ADAMW_FN T from_f32(float x) { return flush32(round_bf16(x)); }
    ADAMW_FN u64 bits(T x) { return f32_bits(x); }
};

// float16's values are normal float32 numbers, and so are the results of operations on them:
// nothing flushes.
struct MathF16 {
    typedef float T;
    ADAMW_FN T load(u64 base, u64 i, u32 dtype) { return load_f(base, i, dtype); }
    ADAMW_FN void store(u64 base, u64 i, u32 dtype, T x) { store_f(base, i, dtype, x); }
    enum { PACKET = 8, PREDUX_IN_F32 = 1 };
    ADAMW_FN T in(T x) { return x; }
    ADAMW_FN T add(T a, T b) { return round_f16_result(x86_nan(a + b, a, b)); }
    ADAMW_FN T sub(T a, T b) { return round_f16_result(x86_nan(a - b, a, b)); }
    ADAMW_FN T mul(T a, T b) { return round_f16_result(x86_nan(a * b, a, b)); }
    ADAMW_FN T div(T a, T b) { return round_f16_result(x86_nan(a / b, a, b)); }
    ADAMW_FN T root(T a) { return round_f16_result(x86_nan(sqrtf(a), a, a)); }
    ADAMW_FN T scalar(u64 bits) { return bits_f32((u32)bits); }
    ADAMW_FN T from_f32(float x) { return round_f16(x); }
    ADAMW_FN u64 bits(T x) { return f32_bits(x); }
};

// tf.maximum / tf.minimum: a NaN operand gives NaN (the first NaN operand).
template <class T>
ADAMW_FN T max_nan(T a, T b) {
    if (a != a || b != b) return a != a ? a : b;
    return a >= b ? a : b;
}

template <class T>
ADAMW_FN T min_nan(T a, T b) {
    if (a != a || b != b) return a != a ? a : b;
    return a <= b ? a : b;
}

// ---------------------------------------------------------------------------------------------
// The step (src/kernels.rs: dense_element, sparse_element, finish_element, decay, the fused
// gradient op), line for line.
// ---------------------------------------------------------------------------------------------

template <class M>
struct Scalars {
    typename M::T lr, wd, one_minus_beta_1, one_minus_beta_2, alpha, epsilon, ema, one_minus_ema;
};

template <class M>
ADAMW_FN Scalars<M> scalars_of(const u64* bits) {
    Scalars<M> s;
    s.lr = M::scalar(bits[0]);
    s.wd = M::scalar(bits[1]);
    s.one_minus_beta_1 = M::scalar(bits[2]);
    s.one_minus_beta_2 = M::scalar(bits[3]);
    s.alpha = M::scalar(bits[4]);
    s.epsilon = M::scalar(bits[5]);
    s.ema = M::scalar(bits[6]);
    s.one_minus_ema = M::scalar(bits[7]);
    return s;
}

// max(min(((g * r) * a) / d, hi), lo): unscale, then clip (GradientOp::fused).
template <class M>
ADAMW_FN typename M::T gradient_op(const adamw_entry& e, typename M::T g) {
    typename M::T x = M::div(M::mul(M::mul(g, M::scalar(e.op[0])), M::scalar(e.op[1])), M::scalar(e.op[2]));
    return max_nan(min_nan(x, M::scalar(e.op[3])), M::scalar(e.op[4]));
}

// One element's variable (or master) and slots, read as TF reads them.
template <class M>
struct Element {
    typename M::T var, m, v, vhat, average;
};

template <class M>
ADAMW_FN Element<M> load_element(const adamw_entry& e, u64 var_base, u32 dtype, u64 i) {
    Element<M> x;
    x.var = M::in(M::load(var_base, i, dtype));
    x.m = M::in(M::load(e.m, i, dtype));
    x.v = M::in(M::load(e.v, i, dtype));
    x.vhat = (e.flags & ADAMW_AMSGRAD) ? M::in(M::load(e.vhat, i, dtype)) : (typename M::T)0;
    x.average = (e.flags & ADAMW_EMA) ? M::in(M::load(e.average, i, dtype)) : (typename M::T)0;
    return x;
}

template <class M>
ADAMW_FN void store_element(const adamw_entry& e, u64 var_base, u32 dtype, u64 i, const Element<M>& x) {
    M::store(var_base, i, dtype, x.var);
    M::store(e.m, i, dtype, x.m);
    M::store(e.v, i, dtype, x.v);
    if (e.flags & ADAMW_AMSGRAD) M::store(e.vhat, i, dtype, x.vhat);
    if (e.flags & ADAMW_EMA) M::store(e.average, i, dtype, x.average);
}

// v - ((v * wd) * lr): Keras' _apply_weight_decay.
template <class M>
ADAMW_FN typename M::T decay(const Scalars<M>& s, u32 flags, typename M::T var) {
    return (flags & ADAMW_DECAY) ? M::sub(var, M::mul(M::mul(var, s.wd), s.lr)) : var;
}

template <class M>
ADAMW_FN void finish(const Scalars<M>& s, u32 flags, typename M::T x, Element<M>& e) {
    typename M::T denominator_source = e.v;
    if (flags & ADAMW_AMSGRAD) {
        e.vhat = max_nan(e.vhat, e.v);
        denominator_source = e.vhat;
    }
    x = M::sub(x, M::div(M::mul(e.m, s.alpha), M::add(M::root(denominator_source), s.epsilon)));
    if (flags & ADAMW_EMA) {
        e.average = M::add(M::mul(s.ema, e.average), M::mul(s.one_minus_ema, x));
        if (flags & ADAMW_OVERWRITE) x = e.average;
    }
    e.var = x;
}

template <class M>
ADAMW_FN void dense_element(const Scalars<M>& s, u32 flags, typename M::T g, Element<M>& e) {
    typename M::T x = decay(s, flags, e.var);
    e.m = M::add(e.m, M::mul(M::sub(g, e.m), s.one_minus_beta_1));
    e.v = M::add(e.v, M::mul(M::sub(M::mul(g, g), e.v), s.one_minus_beta_2));
    finish(s, flags, x, e);
}

template <class M>
ADAMW_FN void sparse_element(const Scalars<M>& s, u32 flags, bool touched, typename M::T g, Element<M>& e) {
    typename M::T x = decay(s, flags, e.var);
    e.m = M::add(e.m, M::mul(-e.m, s.one_minus_beta_1));
    e.v = M::add(e.v, M::mul(-e.v, s.one_minus_beta_2));
    if (touched) {
        e.m = M::add(e.m, M::mul(g, s.one_minus_beta_1));
        e.v = M::add(e.v, M::mul(M::mul(g, g), s.one_minus_beta_2));
    }
    finish(s, flags, x, e);
}

// The first pair of `row` in the sorted pairs, or pair_count.
ADAMW_FN u64 first_pair(const adamw_entry& e, u64 row) {
    const u64* pairs = (const u64*)e.pairs;
    u64 lo = 0, hi = e.pair_count;
    while (lo < hi) {
        u64 mid = lo + (hi - lo) / 2;
        if (pairs[2 * mid] < row) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// Element i of entry e, in math type M (state dtype `dtype`; a master's float32 with `var_base`
// the master and the gradient widened exactly).
template <class M>
ADAMW_FN void step_element(const Scalars<M>& s, const adamw_entry& e, u64 var_base, u32 dtype, u64 i) {
    typedef typename M::T T;
    Element<M> x = load_element<M>(e, var_base, dtype, i);
    if (e.flags & ADAMW_SPARSE) {
        u64 flat = e.offset + i;
        u64 row = flat / e.row_len, col = flat % e.row_len;
        const u64* pairs = (const u64*)e.pairs;
        T summed = (T)0;  // +0.0, then the duplicates in the caller's order
        bool touched = false;
        for (u64 k = first_pair(e, row); k < e.pair_count && pairs[2 * k] == row; k++) {
            T g = M::in(M::load(e.gradient, pairs[2 * k + 1] * e.row_len + col, e.gradient_dtype));
            summed = M::add(summed, gradient_op<M>(e, g));
            touched = true;
        }
        sparse_element<M>(s, e.flags, touched, summed, x);
    } else {
        T g = M::in(M::load(e.gradient, i, e.gradient_dtype));
        dense_element<M>(s, e.flags, gradient_op<M>(e, g), x);
    }
    store_element<M>(e, var_base, dtype, i, x);
    if (e.flags & ADAMW_MASTER) {
        // The caller's 16-bit values: the master rounded to nearest even.
        u16 bits = e.values_dtype == ADAMW_BF16 ? f32_to_bf16((float)x.var) : f32_to_f16((float)x.var);
        ((u16*)e.values)[i] = bits;
    }
}

// The scalars entry `e` steps with: its own (a variable with multipliers), else its math dtype's.
ADAMW_FN const u64* scalars_for(const adamw_step_params& p, const adamw_entry& e, u32 math) {
    return (e.flags & ADAMW_OWN_SCALARS) ? e.scalars : p.scalars[math];
}

ADAMW_FN void step_any(const adamw_step_params& p, const adamw_entry& e, u64 i) {
    if (e.flags & ADAMW_MASTER) {
        step_element<MathF32>(scalars_of<MathF32>(scalars_for(p, e, ADAMW_F32)), e, e.master, ADAMW_F32, i);
        return;
    }
    switch (e.state_dtype) {
    case ADAMW_F64: step_element<MathF64>(scalars_of<MathF64>(scalars_for(p, e, ADAMW_F64)), e, e.values, ADAMW_F64, i); break;
    case ADAMW_BF16: step_element<MathBf16>(scalars_of<MathBf16>(scalars_for(p, e, ADAMW_BF16)), e, e.values, ADAMW_BF16, i); break;
    case ADAMW_F16: step_element<MathF16>(scalars_of<MathF16>(scalars_for(p, e, ADAMW_F16)), e, e.values, ADAMW_F16, i); break;
    default: step_element<MathF32>(scalars_of<MathF32>(scalars_for(p, e, ADAMW_F32)), e, e.values, ADAMW_F32, i); break;
    }
}

// The table entry that block `block` works on: the last whose first block is at most `block`
// (entries without elements have no block of their own).
ADAMW_FN u32 entry_of_block(const u64* first_block, u64 stride_words, u32 count, u64 block) {
    u32 lo = 0, hi = count;
    while (hi - lo > 1) {
        u32 mid = lo + (hi - lo) / 2;
        if (first_block[mid * stride_words] <= block) lo = mid; else hi = mid;
    }
    return lo;
}

// Elements i..i+3 of a dense float32 entry whose arrays all start 16-byte aligned (the host
// sets ADAMW_VEC4), with one 16-byte load and store per array: the element function of
// step_element, so the same bits.
ADAMW_FN void step_four_f32(const Scalars<MathF32>& s, const adamw_entry& e, u64 i) {
    typedef MathF32 M;
    const bool amsgrad = (e.flags & ADAMW_AMSGRAD) != 0, ema = (e.flags & ADAMW_EMA) != 0;
    const u64 q = i / 4;
    const float4 g4 = ((const float4*)e.gradient)[q];
    const float4 x4 = ((const float4*)e.values)[q], m4 = ((const float4*)e.m)[q], v4 = ((const float4*)e.v)[q];
    const float4 h4 = amsgrad ? ((const float4*)e.vhat)[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float4 a4 = ema ? ((const float4*)e.average)[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float g[4] = {g4.x, g4.y, g4.z, g4.w}, x[4] = {x4.x, x4.y, x4.z, x4.w}, m[4] = {m4.x, m4.y, m4.z, m4.w};
    float v[4] = {v4.x, v4.y, v4.z, v4.w}, h[4] = {h4.x, h4.y, h4.z, h4.w}, a[4] = {a4.x, a4.y, a4.z, a4.w};
    for (int k = 0; k < 4; k++) {
        Element<M> el;
        el.var = M::in(x[k]);
        el.m = M::in(m[k]);
        el.v = M::in(v[k]);
        el.vhat = amsgrad ? M::in(h[k]) : 0.0f;
        el.average = ema ? M::in(a[k]) : 0.0f;
        dense_element<M>(s, e.flags, gradient_op<M>(e, M::in(g[k])), el);
        x[k] = el.var;
        m[k] = el.m;
        v[k] = el.v;
        h[k] = el.vhat;
        a[k] = el.average;
    }
    ((float4*)e.values)[q] = make_float4(x[0], x[1], x[2], x[3]);
    ((float4*)e.m)[q] = make_float4(m[0], m[1], m[2], m[3]);
    ((float4*)e.v)[q] = make_float4(v[0], v[1], v[2], v[3]);
    if (amsgrad) ((float4*)e.vhat)[q] = make_float4(h[0], h[1], h[2], h[3]);
    if (ema) ((float4*)e.average)[q] = make_float4(a[0], a[1], a[2], a[3]);
}

// ---------------------------------------------------------------------------------------------
// The step report's sums of squares (src/squares.rs, docs/numerics.md §23): each gradient in
// groups of 512 elements from its start (the update pass's tasks are whole groups), element j of
// a group squared and added into lane j % 32 in element order, in float32 (float64 for a float64
// gradient; 16-bit values widened exactly), each operation flushed as the step's; then each
// task's group lanes added lane by lane in float64, group after group, and the task's 32 lanes
// in order from 0. The host adds the tasks' totals in task order.
//
// A dense gradient's group lanes are taken in the step's launch (ADAMW_REPORT): each block's
// 1,024 elements are two whole groups, whose squares the block's threads leave in shared memory
// for 64 of them to add up, so the gradient is read once. A sparse gradient's (its values as
// passed, one task) are taken by a launch of their own (adamw_group_lanes).
// ---------------------------------------------------------------------------------------------

#define ADAMW_GROUP 512
#define ADAMW_LANES 32

// A float32 as float64, exactly, a NaN's payload kept as x86's cvtss2sd keeps it (a GPU's
// conversion would give its canonical NaN).
ADAMW_FN double widen_f32(float x) {
    if (x == x) return (double)x;
    const u64 b = f32_bits(x);
    return bits_f64(((b & 0x80000000ull) << 32) | 0x7ff8000000000000ull | ((b & 0x7fffffull) << 29));
}

ADAMW_FN double widen_f32(double x) { return x; }

// The square of element i of a gradient, as given (widened exactly), in M: float32, or float64
// for a float64 gradient.
template <class M>
ADAMW_FN typename M::T given_square(u64 gradient, u32 dtype, u64 i) {
    typename M::T x = M::in(M::load(gradient, i, dtype));
    return M::mul(x, x);
}

// Lane `lane` of the group that starts at element `first` of `len`: the squares `square(i)`
// of its elements in element order, in M. Rows past the end are left out, as the CPU's zero
// padding leaves the lane unchanged.
template <class M, class Square>
ADAMW_FN typename M::T group_lane(Square square, u64 first, u64 len, u32 lane) {
    typename M::T sum = 0;
    for (u32 row = 0; row < ADAMW_GROUP / ADAMW_LANES; row++) {
        u64 i = first + (u64)row * ADAMW_LANES + lane;
        if (i >= len) break;
        sum = M::add(sum, square(i));
    }
    return sum;
}

// Group lanes in memory, in the type they were summed in: float32 (4 bytes a lane), or float64
// for a float64 gradient.
ADAMW_FN void store_lane(u64 lanes, u64 index, float x) { ((float*)lanes)[index] = x; }
ADAMW_FN void store_lane(u64 lanes, u64 index, double x) { ((double*)lanes)[index] = x; }
ADAMW_FN double load_lane(u64 lanes, u32 gradient_dtype, u64 index) {
    return gradient_dtype == ADAMW_F64 ? ((const double*)lanes)[index] : widen_f32(((const float*)lanes)[index]);
}

// The squares of a step block's gradient elements (ADAMW_REPORT), in shared memory as bits,
// indexed by the element's place in the block.
ADAMW_FN void keep_square(const adamw_entry& e, u64 base, u64 i, u64* squares) {
    squares[i - base] = e.gradient_dtype == ADAMW_F64
        ? MathF64::bits(given_square<MathF64>(e.gradient, e.gradient_dtype, i))
        : MathF32::bits(given_square<MathF32>(e.gradient, e.gradient_dtype, i));
}

// Thread t < 64 of a step block: lane t % 32 of the block's group t / 32, from the squares the
// block's threads kept.
ADAMW_FN void block_group_lane(const adamw_entry& e, u64 base, const u64* squares, u32 t) {
    const u64 first = base + (u64)(t / ADAMW_LANES) * ADAMW_GROUP;
    if (t >= 2 * ADAMW_LANES || first >= e.len) return;
    const u32 lane = t % ADAMW_LANES;
    const u64 at = first / ADAMW_GROUP * ADAMW_LANES + lane;
    if (e.gradient_dtype == ADAMW_F64) {
        store_lane(e.group_lanes, at, group_lane<MathF64>([&](u64 i) { return bits_f64(squares[i - base]); }, first, e.len, lane));
    } else {
        store_lane(e.group_lanes, at, group_lane<MathF32>([&](u64 i) { return bits_f32((u32)squares[i - base]); }, first, e.len, lane));
    }
}

// ---------------------------------------------------------------------------------------------
// The step's launch.
// ---------------------------------------------------------------------------------------------

// The entry that block `block` of the step works on.
ADAMW_FN const adamw_entry& step_entry(const adamw_step_params& p, u64 block) {
    const adamw_entry* table = (const adamw_entry*)p.entries;
    const u64 stride = sizeof(adamw_entry) / sizeof(u64);
    return table[entry_of_block(&table[0].first_block, stride, p.count, block)];
}

// Thread `t` of a step block on entry `e` whose first element is `base`: its elements, and with
// ADAMW_REPORT their squares kept in `squares` (then, once every thread of the block has run
// this, `block_group_lane`: the flag is the block's, as a block works on one entry).
ADAMW_FN void step_block(const adamw_step_params& p, const adamw_entry& e, u64 base, u32 t, u64* squares) {
    const bool report = (e.flags & ADAMW_REPORT) != 0;
    if (e.flags & ADAMW_VEC4) {
        u64 i = base + 4 * (u64)t;
        if (i + 4 <= e.len) {
            step_four_f32(scalars_of<MathF32>(scalars_for(p, e, ADAMW_F32)), e, i);
        } else {
            for (u64 j = i; j < e.len; j++) step_any(p, e, j);  // the variable's last 1 to 3 elements
        }
        if (report) {
            for (u64 j = i; j < i + 4 && j < e.len; j++) keep_square(e, base, j, squares);
        }
        return;
    }
    for (u32 k = 0; k < ADAMW_PER_THREAD; k++) {
        u64 i = base + (u64)k * ADAMW_BLOCK + t;
        if (i < e.len) {
            step_any(p, e, i);
            if (report) keep_square(e, base, i, squares);
        }
    }
}

// The whole step: every element of every variable of the call, in one launch. Block b works on
// ADAMW_BLOCK_ELEMENTS consecutive elements of one variable (thread t on elements t, t + 256, ...,
// or with ADAMW_VEC4 on elements 4t..4t+3), so that a warp's accesses are contiguous; a grid
// smaller than the table's blocks strides over them. (The host build runs `step_block` for every
// thread of a block, then `block_group_lane`: host_launch.cpp.)
#ifndef ADAMW_HOST_SHIM
ADAMW_KERNEL void adamw_step(struct adamw_step_params p) {
    __shared__ u64 squares[ADAMW_BLOCK_ELEMENTS];
    for (u64 block = blockIdx.x; block < p.total_blocks; block += gridDim.x) {
        const adamw_entry& e = step_entry(p, block);
        const u64 base = (block - e.first_block) * ADAMW_BLOCK_ELEMENTS;
        step_block(p, e, base, threadIdx.x, squares);
        if (e.flags & ADAMW_REPORT) {
            __syncthreads();
            block_group_lane(e, base, squares, threadIdx.x);
            __syncthreads();  // before the next block's squares
        }
    }
}
#endif

// ---------------------------------------------------------------------------------------------
// Clip norms: the terms and one leaf of Eigen's tree (src/reduction.rs: square_term, leaf_sum,
// horizontal_sum). The host sums the leaves with the same tree as the CPU engine.
// ---------------------------------------------------------------------------------------------

// Term j of a clip norm's sum in the terms' math type: the gradient (widened for a master),
// unscaled, squared, and halved for l2_loss.
template <class M>
ADAMW_FN typename M::T norm_term(const adamw_norm_entry& e, u64 j) {
    typename M::T g = M::in(M::load(e.gradient, j, e.gradient_dtype));
    if (e.flags & ADAMW_UNSCALE) g = M::mul(g, M::scalar(e.unscale));
    typename M::T t = M::mul(g, g);
    if (e.flags & ADAMW_HALVE) t = M::mul(t, (typename M::T)0.5);
    return t;
}

// Term j in the tree's math type M: float32 for bfloat16's reduce_sum (exact), else the terms'.
template <class M>
ADAMW_FN typename M::T tree_term(const adamw_norm_entry& e, u64 j) {
    if constexpr (sizeof(typename M::T) == sizeof(float)) {
        switch (e.terms_dtype) {
        case ADAMW_BF16: return norm_term<MathBf16>(e, j);
        case ADAMW_F16: return norm_term<MathF16>(e, j);
        default: return norm_term<MathF32>(e, j);
        }
    } else {
        return norm_term<M>(e, j);
    }
}

// Eigen's predux: halves of the packet added pairwise; 16-bit packets in float32, rounded once.
template <class M>
ADAMW_FN typename M::T horizontal_sum(const typename M::T* lanes) {
    typedef typename M::T T;
    if constexpr (M::PREDUX_IN_F32) {
        return M::from_f32(horizontal_sum<MathF32>(lanes));
    } else if constexpr (M::PACKET == 4) {
        T s0 = M::add(lanes[0], lanes[2]), s1 = M::add(lanes[1], lanes[3]);
        return M::add(s0, s1);
    } else {
        T s[4];
        for (int i = 0; i < 4; i++) s[i] = M::add(lanes[i], lanes[i + 4]);
        return M::add(M::add(s[0], s[2]), M::add(s[1], s[3]));
    }
}

// One leaf: four interleaved packet accumulators, then one packet, then a scalar tail, then the
// packet's lanes.
template <class M>
ADAMW_FN typename M::T leaf_sum(const adamw_norm_entry& e, u64 first, u64 n) {
    typedef typename M::T T;
    const u64 p = M::PACKET;
    T packets[4][8];
    for (int k = 0; k < 4; k++)
        for (int lane = 0; lane < 8; lane++) packets[k][lane] = (T)0;
    u64 start = 0;
    if (n >= 4 * p) {
        u64 unrolled = n / (4 * p) * (4 * p);
        for (u64 j = 0; j < unrolled; j += 4 * p)
            for (u64 k = 0; k < 4; k++)
                for (u64 lane = 0; lane < p; lane++)
                    packets[k][lane] = M::add(packets[k][lane], tree_term<M>(e, first + j + k * p + lane));
        for (u64 k = 1; k < 4; k++)
            for (u64 lane = 0; lane < p; lane++) packets[0][lane] = M::add(packets[0][lane], packets[k][lane]);
        start = unrolled;
    }
    if (start + p <= n) {
        u64 vectorized = n / p * p;
        for (u64 j = start; j < vectorized; j += p)
            for (u64 lane = 0; lane < p; lane++)
                packets[0][lane] = M::add(packets[0][lane], tree_term<M>(e, first + j + lane));
        start = vectorized;
    }
    T acc = (T)0;
    for (u64 j = start; j < n; j++) acc = M::add(acc, tree_term<M>(e, first + j));
    return M::add(acc, horizontal_sum<M>(packets[0]));
}

// One thread per leaf of every gradient's tree.
ADAMW_KERNEL void adamw_leaf_sums(struct adamw_leaf_params p) {
    const adamw_norm_entry* entries = (const adamw_norm_entry*)p.entries;
    const adamw_leaf* leaves = (const adamw_leaf*)p.leaves;
    u64* sums = (u64*)p.sums;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < p.count; k += (u64)gridDim.x * blockDim.x) {
        const adamw_leaf& leaf = leaves[k];
        const adamw_norm_entry& e = entries[leaf.entry];
        // As bits: a GPU's conversion to double would not keep a NaN's payload.
        u64 sum;
        switch (e.tree_dtype) {
        case ADAMW_F64: sum = MathF64::bits(leaf_sum<MathF64>(e, leaf.first, leaf.len)); break;
        case ADAMW_BF16: sum = MathBf16::bits(leaf_sum<MathBf16>(e, leaf.first, leaf.len)); break;
        case ADAMW_F16: sum = MathF16::bits(leaf_sum<MathF16>(e, leaf.first, leaf.len)); break;
        default: sum = MathF32::bits(leaf_sum<MathF32>(e, leaf.first, leaf.len)); break;
        }
        sums[k] = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// The non-finite check (engine::cpu::first_non_finite*): the first element per gradient whose
// value, unscaled if asked, is NaN or infinite.
// ---------------------------------------------------------------------------------------------

template <class M>
ADAMW_FN bool is_bad(const adamw_check_entry& e, u64 i) {
    typename M::T x = M::in(M::load(e.gradient, i, e.gradient_dtype));
    if (e.flags & ADAMW_UNSCALE) x = M::mul(x, M::scalar(e.unscale));
    return !(M::sub(x, x) == (typename M::T)0);
}

ADAMW_KERNEL void adamw_first_non_finite(struct adamw_check_params p) {
    const adamw_check_entry* table = (const adamw_check_entry*)p.entries;
    const u64 stride = sizeof(adamw_check_entry) / sizeof(u64);
    u64* first_bad = (u64*)p.first_bad;
    for (u64 block = blockIdx.x; block < p.total_blocks; block += gridDim.x) {
        u32 k = entry_of_block(&table[0].first_block, stride, p.count, block);
        const adamw_check_entry& e = table[k];
        u64 base = (block - e.first_block) * ADAMW_BLOCK_ELEMENTS;
        for (u32 j = 0; j < ADAMW_PER_THREAD; j++) {
            u64 i = base + (u64)j * ADAMW_BLOCK + threadIdx.x;
            if (i >= e.len) continue;
            bool bad;
            switch (e.check_dtype) {
            case ADAMW_F64: bad = is_bad<MathF64>(e, i); break;
            case ADAMW_BF16: bad = is_bad<MathBf16>(e, i); break;
            case ADAMW_F16: bad = is_bad<MathF16>(e, i); break;
            default: bad = is_bad<MathF32>(e, i); break;
            }
            if (bad) atomic_min_u64(&first_bad[k], i);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The step report's other launches: a sparse gradient's group lanes, then every gradient's
// tasks.
// ---------------------------------------------------------------------------------------------

// One gradient of the report's sums.
struct adamw_report_entry {
    u64 gradient;
    u64 len;          // values: a dense gradient's elements, a sparse one's values as passed
    u64 task_len;     // elements per task: a multiple of 512, or a sparse gradient's whole length
    u64 group_lanes;  // its groups' lanes, float[groups * 32] (double for float64; the step's table's)
    u64 first_task;   // the call's index of this gradient's first task
    u64 first_sparse_group;  // adamw_group_lanes' index of its first group (a sparse gradient's)
    u32 gradient_dtype, pad;
};
static_assert(sizeof(struct adamw_report_entry) == 56, "adamw_report_entry is mirrored in abi.rs");

struct adamw_report_params {
    u64 entries;
    u64 task_sums;  // double[total_tasks]
    u64 sparse_groups;
    u64 total_tasks;
    u32 count;
    u32 pad;
};
static_assert(sizeof(struct adamw_report_params) == 40, "adamw_report_params is mirrored in abi.rs");

// One thread per lane of every group of every sparse gradient; a warp reads a row of 32
// consecutive values at a time.
ADAMW_KERNEL void adamw_group_lanes(struct adamw_report_params p) {
    const adamw_report_entry* table = (const adamw_report_entry*)p.entries;
    const u64 stride = sizeof(adamw_report_entry) / sizeof(u64);
    const u64 total = p.sparse_groups * ADAMW_LANES, step = (u64)gridDim.x * blockDim.x;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += step) {
        const u64 group = k / ADAMW_LANES;
        const u32 lane = (u32)(k % ADAMW_LANES);
        const adamw_report_entry& e = table[entry_of_block(&table[0].first_sparse_group, stride, p.count, group)];
        const u64 first = (group - e.first_sparse_group) * ADAMW_GROUP;
        const u64 g = e.gradient, at = k - e.first_sparse_group * ADAMW_LANES;
        const u32 dtype = e.gradient_dtype;
        if (dtype == ADAMW_F64) {
            store_lane(e.group_lanes, at, group_lane<MathF64>([&](u64 i) { return given_square<MathF64>(g, dtype, i); }, first, e.len, lane));
        } else {
            store_lane(e.group_lanes, at, group_lane<MathF32>([&](u64 i) { return given_square<MathF32>(g, dtype, i); }, first, e.len, lane));
        }
    }
}

// One thread per task of every gradient: its groups' lanes added into 32 float64 lanes, then
// those in order.
ADAMW_KERNEL void adamw_task_sums(struct adamw_report_params p) {
    const adamw_report_entry* table = (const adamw_report_entry*)p.entries;
    const u64 stride = sizeof(adamw_report_entry) / sizeof(u64);
    double* task_sums = (double*)p.task_sums;
    const u64 step = (u64)gridDim.x * blockDim.x;
    for (u64 task = (u64)blockIdx.x * blockDim.x + threadIdx.x; task < p.total_tasks; task += step) {
        const adamw_report_entry& e = table[entry_of_block(&table[0].first_task, stride, p.count, task)];
        const u64 start = (task - e.first_task) * e.task_len;
        const u64 end = start + e.task_len < e.len ? start + e.task_len : e.len;
        double sums[ADAMW_LANES];
        for (u32 j = 0; j < ADAMW_LANES; j++) sums[j] = 0.0;
        for (u64 group = start / ADAMW_GROUP; group * ADAMW_GROUP < end; group++) {
            for (u32 j = 0; j < ADAMW_LANES; j++) {
                sums[j] = MathF64::add(sums[j], load_lane(e.group_lanes, e.gradient_dtype, group * ADAMW_LANES + j));
            }
        }
        double total = 0.0;
        for (u32 j = 0; j < ADAMW_LANES; j++) total = MathF64::add(total, sums[j]);
        task_sums[task] = total;
    }
}
