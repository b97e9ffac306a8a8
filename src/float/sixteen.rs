//! bfloat16 and float16 as TensorFlow's CPU kernels compute with them, fast (docs/numerics.md §17).
//!
//! Eigen's `bfloat16` and `half` do every operation in float32 and round its result to the
//! 16-bit type, to nearest even. [`Bf16Math`] and [`F16Math`] are that arithmetic on a float32
//! that always holds a value of the 16-bit type: an operation is one float32 operation and one
//! rounding written with integer and float32 operations only, branch-free, so the kernel loops
//! vectorize (AVX-512 or AVX2 lanes, or whatever the portable build targets) instead of
//! calling a conversion per operation. The conversions between the 16-bit bits and float32
//! are written the same way. Every function here gives the bits of `half`'s conversions and
//! operators (tested exhaustively below), which are IEEE's.
//!
//! Flushing: the float32 operations run in the kernels' environment (flush-to-zero on x86-64).
//! Rounding never creates a float32 subnormal (bfloat16's smallest normal is float32's, and
//! float16's subnormals are normal float32 numbers), so only the float32 result is flushed.

use super::arith::{Arith, Lane};

/// The float32 bits of bfloat16 `bits` (exact; a NaN is quieted, as `half` does).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    let wide = (bits as u32) << 16;
    let nan = (bits & 0x7fff) > 0x7f80;
    f32::from_bits(if nan { wide | 0x0040_0000 } else { wide })
}

/// `x` rounded to bfloat16 to nearest even, as bits (a NaN keeps its high bits and is quieted).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b >> 16) | 0x0040;
    (if (b & 0x7fff_ffff) > 0x7f80_0000 { nan } else { rounded }) as u16
}

/// `x` rounded to the nearest bfloat16, ties to even, kept as a float32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((f32_to_bf16(x) as u32) << 16)
}

/// [`round_bf16`] of the result of an operation on bfloat16 values, in fewer instructions: a
/// NaN result is the default NaN or an operand's NaN made quiet, so its low 16 bits are zero
/// and the rounding below leaves it as it is (adding at most 0x8000 carries into no higher bit),
/// which is what `round_bf16` gives it too.
#[inline(always)]
fn round_bf16_result(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// Float32 bits of float16 one half (the exponent at which float16's subnormals end, 2^-14).
const F16_MIN_NORMAL_BITS: u32 = 0x3880_0000;
/// 65536.0: float16's largest finite number is 65504, and anything that rounds to 65536 overflows.
const F16_OVERFLOW_BITS: u32 = 0x4780_0000;

/// The float32 value of float16 `bits` (exact; a NaN is quieted, as `half` does).
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits & 0x8000) as u32) << 16;
    let exponent = bits & 0x7c00;
    let mantissa = (bits & 0x03ff) as u32;
    // Normal: rebias the exponent (15 → 127) and widen the mantissa.
    let normal = (((bits & 0x7fff) as u32) << 13) + 0x3800_0000;
    // Subnormal: mantissa * 2^-24, as 0.5 + mantissa * 2^-24 (exact) less 0.5 (exact).
    let subnormal = (f32::from_bits(0x3f00_0000 + mantissa) - 0.5).to_bits();
    let quiet = if mantissa != 0 { 0x0040_0000 } else { 0 };
    let special = 0x7f80_0000 | quiet | (mantissa << 13);
    let magnitude = match exponent {
        0x7c00 => special,
        0 => subnormal,
        _ => normal,
    };
    f32::from_bits(sign | magnitude)
}

/// `x` rounded to float16 to nearest even, as bits (overflow to infinity, float16's
/// subnormals kept, a NaN keeps its high bits and is quieted).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = (b >> 16) & 0x8000;
    let a = b & 0x7fff_ffff;
    // Normal: round the mantissa to 10 bits, then rebias the exponent (127 → 15).
    let rounded = a.wrapping_add(0x0fff + ((a >> 13) & 1)) >> 13;
    let normal = if rounded >= F16_OVERFLOW_BITS >> 13 { 0x7c00 } else { rounded.wrapping_sub(0x1_c000) };
    // Subnormal: float32 addition at 0.5, where the ulp is 2^-24, rounds to the multiple of
    // 2^-24 (ties to even); the bits above 0.5's count those multiples (1024 is the smallest normal).
    let subnormal = (f32::from_bits(a) + 0.5).to_bits().wrapping_sub(0x3f00_0000);
    let nan = 0x7e00 | ((a >> 13) & 0x03ff);
    let magnitude = if a > 0x7f80_0000 {
        nan
    } else if a >= F16_MIN_NORMAL_BITS {
        normal
    } else {
        subnormal
    };
    (sign | magnitude) as u16
}

/// `x` rounded to the nearest float16, ties to even, kept as a float32.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    if x.is_nan() {
        return f32::from_bits((x.to_bits() & 0xffff_e000) | 0x0040_0000);
    }
    round_f16_result(x)
}

/// [`round_f16`] of the result of an operation on float16 values, in fewer instructions: one
/// float32 addition and subtraction of a power of two whose ulp is the float16 quantum at the
/// value's exponent (2^-24 below float16's normal range) round to nearest even. Infinity stays,
/// and so does a NaN result (its low 13 bits are zero, as in [`round_bf16_result`]).
#[inline(always)]
fn round_f16_result(x: f32) -> f32 {
    let b = x.to_bits();
    let a = b & 0x7fff_ffff;
    // 2^(e + 13) for a value of exponent e, whose ulp is 2^(e - 10): float16's 11 bits. The
    // exponent is clamped to float16's range: below it the quantum stays 2^-24; from 65536 up
    // (infinity and NaN included) the sum stays at least 65536, or NaN.
    let exponent = (a & 0x7f80_0000).clamp(F16_MIN_NORMAL_BITS, F16_OVERFLOW_BITS);
    let magic = f32::from_bits(exponent + (13 << 23));
    let rounded = (f32::from_bits(a) + magic) - magic;
    let rounded = if rounded >= 65536.0 { f32::INFINITY } else { rounded };
    f32::from_bits(rounded.to_bits() | (b & 0x8000_0000))
}

/// Declares a float32 that holds a value of a 16-bit type, with that type's arithmetic.
macro_rules! in_float32 {
    ($name:ident, $round:ident, $round_any:ident, $min_normal:expr, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Invariant: the float32 always holds a value of the 16-bit type (it is made only by
        /// [`Self::from_bits16`], [`Self::round`] and the rounded operators).
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
        #[repr(transparent)]
        pub struct $name(f32);

        impl $name {
            /// `x` rounded to the 16-bit type.
            #[inline(always)]
            pub fn round(x: f32) -> Self {
                $name($round_any(x))
            }

            /// The value, exactly.
            #[inline(always)]
            pub fn get(self) -> f32 {
                self.0
            }
        }

        /// A piece of a 16-bit slice widened for the loops computes in place.
        impl Lane for $name {
            type Math = $name;
            type Piece = $name;
            type Square = f32;
            #[inline(always)]
            fn load(self) -> $name {
                self
            }
            #[inline(always)]
            fn store(x: $name) -> Self {
                x
            }
            #[inline(always)]
            fn square_value(x: $name) -> f32 {
                x.get()
            }
        }

        impl std::ops::Neg for $name {
            type Output = Self;
            #[inline(always)]
            fn neg(self) -> Self {
                $name(-self.0)
            }
        }

        in_float32!(@op $name, $round, Add, add, +);
        in_float32!(@op $name, $round, Sub, sub, -);
        in_float32!(@op $name, $round, Mul, mul, *);
        in_float32!(@op $name, $round, Div, div, /);

        impl Arith for $name {
            const ZERO: Self = $name(0.0);
            const ONE: Self = $name(1.0);
            const INFINITY: Self = $name(f32::INFINITY);
            const MIN_NORMAL: Self = $name($min_normal);

            #[inline(always)]
            fn abs(self) -> Self {
                $name(self.0.abs())
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $name($round(self.0.sqrt()))
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                self.0.is_nan()
            }
            #[inline(always)]
            fn copysign(self, sign: Self) -> Self {
                $name(self.0.copysign(sign.0))
            }
        }
    };
    (@op $name:ident, $round:ident, $trait:ident, $method:ident, $op:tt) => {
        impl std::ops::$trait for $name {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: Self) -> Self {
                $name($round(self.0 $op rhs.0))
            }
        }
    };
}

in_float32!(
    Bf16Math,
    round_bf16_result,
    round_bf16,
    f32::MIN_POSITIVE,
    "bfloat16 arithmetic in a float32: every result rounded to bfloat16 (its subnormals are float32's and flush)."
);
in_float32!(
    F16Math,
    round_f16_result,
    round_f16,
    0.0,
    "float16 arithmetic in a float32: every result rounded to float16 (its subnormals are normal float32 numbers and stay)."
);

impl Bf16Math {
    /// The value of bfloat16 `bits`.
    #[inline(always)]
    pub fn from_bits16(bits: u16) -> Self {
        Bf16Math(bf16_to_f32(bits))
    }

    /// The bfloat16 bits of the value: its high half (exact by the type's invariant).
    #[inline(always)]
    pub fn to_bits16(self) -> u16 {
        (self.0.to_bits() >> 16) as u16
    }
}

impl F16Math {
    /// The value of float16 `bits`.
    #[inline(always)]
    pub fn from_bits16(bits: u16) -> Self {
        F16Math(f16_to_f32(bits))
    }

    /// The float16 bits of the value.
    #[inline(always)]
    pub fn to_bits16(self) -> u16 {
        f32_to_f16(self.0)
    }
}

/// Whole pieces of float16 converted with F16C, eight values per instruction (x86-64; every
/// AVX2 processor has it). The same bits as the portable functions above (tested below).
#[cfg(target_arch = "x86_64")]
pub mod f16c {
    use std::arch::x86_64::{
        __m128i, _MM_FROUND_TO_NEAREST_INT, _mm_loadu_si128, _mm_storeu_si128, _mm256_cvtph_ps, _mm256_cvtps_ph,
        _mm256_loadu_ps, _mm256_storeu_ps,
    };

    use super::{F16Math, f16_to_f32, f32_to_f16};
    use half::f16;

    /// Whether this processor has F16C and AVX2 (what the functions below require).
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx2")
    }

    /// Widens `src` into `dst` (exactly; `dst` at least as long as `src`).
    ///
    /// # Safety
    /// The processor must have F16C and AVX2 ([`available`]).
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn widen_into(src: &[f16], dst: &mut [f32]) {
        let n = src.len();
        let dst = &mut dst[..n];
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, and both slices have n elements: 16 bytes are readable at
            // src[i] and 32 writable at dst[i]; the unaligned load and store accept any address.
            unsafe {
                let halves = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(halves));
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = f16_to_f32(src[j].to_bits());
        }
    }

    /// Rounds `src` to nearest even into `dst` (`dst` at least as long as `src`).
    ///
    /// # Safety
    /// The processor must have F16C and AVX2 ([`available`]).
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn round_into(src: &[f32], dst: &mut [f16]) {
        let n = src.len();
        let dst = &mut dst[..n];
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: as in `widen_into`, with the roles of the slices swapped.
            unsafe {
                let wide = _mm256_loadu_ps(src.as_ptr().add(i));
                let halves = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(wide);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), halves);
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = f16::from_bits(f32_to_f16(src[j]));
        }
    }

    /// [`widen_into`] for the loops' float16 arithmetic.
    ///
    /// # Safety
    /// As for [`widen_into`].
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn load_into(src: &[f16], dst: &mut [F16Math]) {
        // SAFETY: F16Math is a repr(transparent) f32, and every widened value is a float16 value
        // (the type's invariant); the features are the caller's promise.
        unsafe { widen_into(src, std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), dst.len())) }
    }

    /// [`round_into`] for the loops' float16 arithmetic (exact: the values are float16's).
    ///
    /// # Safety
    /// As for [`round_into`].
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn store_into(src: &[F16Math], dst: &mut [f16]) {
        // SAFETY: F16Math is a repr(transparent) f32, read only; the features are the caller's promise.
        unsafe { round_into(std::slice::from_raw_parts(src.as_ptr().cast::<f32>(), src.len()), dst) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Every bit pattern of each 16-bit type, and float32 inputs around each of them: the value,
    /// the midpoints to its neighbours (ties), one ulp either side of those, and a spread of
    /// pseudo-random ones (every exponent, NaN payloads, subnormals).
    pub(crate) fn float32_inputs() -> Vec<f32> {
        let mut out = Vec::new();
        for bits in 0..=u16::MAX {
            for wide in [bf16::from_bits(bits).to_f32(), f16::from_bits(bits).to_f32()] {
                let b = wide.to_bits();
                for delta in [0u32, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x7fff, 0x8000, 0x8001, 0xffff] {
                    out.push(f32::from_bits(b.wrapping_add(delta)));
                    out.push(f32::from_bits(b.wrapping_sub(delta)));
                }
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push(f32::from_bits((state >> 32) as u32));
        }
        out
    }

    #[test]
    fn widening_matches_half_for_every_value() {
        for bits in 0..=u16::MAX {
            assert_eq!(bf16_to_f32(bits).to_bits(), bf16::from_bits(bits).to_f32().to_bits(), "bfloat16 {bits:#06x}");
            assert_eq!(f16_to_f32(bits).to_bits(), f16::from_bits(bits).to_f32().to_bits(), "float16 {bits:#06x}");
        }
    }

    #[test]
    fn rounding_matches_half() {
        for x in float32_inputs() {
            let (b, h) = (bf16::from_f32(x), f16::from_f32(x));
            assert_eq!(f32_to_bf16(x), b.to_bits(), "{x:e} ({:#010x}) to bfloat16", x.to_bits());
            assert_eq!(f32_to_f16(x), h.to_bits(), "{x:e} ({:#010x}) to float16", x.to_bits());
            assert_eq!(round_bf16(x).to_bits(), b.to_f32().to_bits(), "{x:e} in bfloat16");
            assert_eq!(round_f16(x).to_bits(), h.to_f32().to_bits(), "{x:e} in float16");
            // The shortcuts agree wherever an operation's result can be: not a NaN, or a quiet
            // NaN with its low bits clear.
            let bits = x.to_bits();
            if !x.is_nan() || (bits & 0x0040_ffff) == 0x0040_0000 {
                assert_eq!(round_bf16_result(x).to_bits(), b.to_f32().to_bits(), "{x:e} result in bfloat16");
            }
            if !x.is_nan() || (bits & 0x0040_1fff) == 0x0040_0000 {
                assert_eq!(round_f16_result(x).to_bits(), h.to_f32().to_bits(), "{x:e} result in float16");
            }
        }
    }

    #[test]
    fn operators_match_halfs_operators() {
        // Pairs of 16-bit values from a sweep of bit patterns (every exponent, both signs).
        let picks: Vec<u16> = (0..=u16::MAX).step_by(97).collect();
        for &a in &picks {
            for &b in picks.iter().step_by(7) {
                let (x, y) = (bf16::from_bits(a), bf16::from_bits(b));
                let (p, q) = (Bf16Math::from_bits16(a), Bf16Math::from_bits16(b));
                assert_eq!((p + q).to_bits16(), (x + y).to_bits());
                assert_eq!((p - q).to_bits16(), (x - y).to_bits());
                assert_eq!((p * q).to_bits16(), (x * y).to_bits());
                assert_eq!((p / q).to_bits16(), (x / y).to_bits());
                let (x, y) = (f16::from_bits(a), f16::from_bits(b));
                let (p, q) = (F16Math::from_bits16(a), F16Math::from_bits16(b));
                assert_eq!((p + q).to_bits16(), (x + y).to_bits());
                assert_eq!((p - q).to_bits16(), (x - y).to_bits());
                assert_eq!((p * q).to_bits16(), (x * y).to_bits());
                assert_eq!((p / q).to_bits16(), (x / y).to_bits());
            }
            let x = f16::from_bits(a);
            assert_eq!(F16Math::from_bits16(a).sqrt().to_bits16(), f16::from_f32(x.to_f32().sqrt()).to_bits());
            let x = bf16::from_bits(a);
            assert_eq!(Bf16Math::from_bits16(a).sqrt().to_bits16(), bf16::from_f32(x.to_f32().sqrt()).to_bits());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16c_conversions_match_the_portable_ones() {
        if !f16c::available() {
            eprintln!("skipped: this processor has no F16C");
            return;
        }
        let halves: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let mut wide = vec![0f32; halves.len()];
        // SAFETY: `available` said the processor has F16C and AVX2.
        unsafe { f16c::widen_into(&halves, &mut wide) };
        for (h, w) in halves.iter().zip(&wide) {
            assert_eq!(w.to_bits(), f16_to_f32(h.to_bits()).to_bits(), "float16 {:#06x}", h.to_bits());
        }
        let inputs = float32_inputs();
        let mut rounded = vec![f16::ZERO; inputs.len()];
        // SAFETY: as above.
        unsafe { f16c::round_into(&inputs, &mut rounded) };
        for (x, r) in inputs.iter().zip(&rounded) {
            assert_eq!(r.to_bits(), f32_to_f16(*x), "{x:e} ({:#010x})", x.to_bits());
        }
    }
}
