//! Thirty-two bfloat16 or float16 values in four AVX registers, with TensorFlow's arithmetic: every
//! operation one float32 vector operation whose result is rounded to the 16-bit type, to
//! nearest even (docs/numerics.md §17). The same bits as [`super::Bf16Math`] and
//! [`super::F16Math`] lane by lane (tested below, exhaustively for the roundings and unary steps).
//!
//! - bfloat16 rounds in integer lanes (add `0x7fff` plus the kept lowest bit, clear the low half);
//! - float16 rounds through F16C (`vcvtps2ph` then `vcvtph2ps`), which rounds to nearest even,
//!   keeps float16's subnormals and overflows to infinity, as IEEE does. Its float32 inputs are
//!   the results of float32 operations under flush-to-zero, never float32 subnormals.
//!
//! Every function here needs AVX2 and F16C: they are `#[inline(always)]` and run only inside
//! functions compiled for those features ([`crate::simd::dispatch`] at level AVX2 or above).
//! Comparisons are not defined (the loops that use these types have no `tf.maximum`).

// Index loops over registers: every call between an intrinsic and the function compiled for
// AVX2 must be inlined, and iterator adapters are not sure to be.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;
use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};

use half::{bf16, f16};

use super::arith::Arith;

/// AVX registers per vector: four, so that each step of the element function has four
/// independent operations in flight (its chain of rounded operations is long). Measured with
/// `cargo bench --bench modes -- --modes bf16,f16` (Zen 2, AVX2): one register 0.65 / 0.58 G
/// params/s at 1M, two 0.78 / 0.69, four 0.87 / 0.84.
const REGISTERS: usize = 4;
/// 16-bit values per vector.
pub(crate) const LANES: usize = 8 * REGISTERS;

/// Every lane `x`, at compile time (`x` must be a value of the 16-bit types: 0, 1, infinity).
const fn splat_const(x: f32) -> [__m256; REGISTERS] {
    // SAFETY: registers are plain f32 lanes, and every bit pattern of them is valid.
    unsafe { std::mem::transmute::<[f32; LANES], [__m256; REGISTERS]>([x; LANES]) }
}

/// [`LANES`] 16-bit values held as float32 lanes, with the 16-bit type's arithmetic.
pub trait Vector16: Arith {
    /// The 16-bit element type.
    type Element: Copy;
    /// Every lane `x` (a value of the 16-bit type, as float32).
    fn splat(x: f32) -> Self;
    /// Elements `src[..LANES]`, widened exactly (a signaling NaN is quieted).
    fn load(src: &[Self::Element]) -> Self;
    /// The lanes into `dst[..LANES]` (exact: every lane holds a value of the type).
    fn store(self, dst: &mut [Self::Element]);
    /// The lanes' values as float32 (exact).
    fn to_f32(self) -> [f32; LANES];
}

macro_rules! vector16 {
    ($name:ident, $element:ty, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Invariant: every lane holds a value of the 16-bit type.
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        pub struct $name([__m256; REGISTERS]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let lanes: [f32; LANES] = self.lanes();
                f.debug_tuple(stringify!($name)).field(&lanes).finish()
            }
        }

        impl $name {
            /// The lanes as float32.
            #[inline(always)]
            pub fn lanes(self) -> [f32; LANES] {
                // SAFETY: registers of eight f32, any bits valid.
                unsafe { std::mem::transmute::<[__m256; REGISTERS], [f32; LANES]>(self.0) }
            }

            /// Registers of float32 values, each rounded to the type.
            #[inline(always)]
            pub fn round(mut x: [__m256; REGISTERS]) -> Self {
                // Plain loops here and below: every call between the intrinsics and the
                // function compiled for AVX2 must be inlined (closures would not be).
                for k in 0..REGISTERS {
                    x[k] = Self::round_lanes(x[k]);
                }
                $name(x)
            }
        }

        impl Default for $name {
            #[inline(always)]
            fn default() -> Self {
                Self::ZERO
            }
        }

        /// Not an order: the loops that use vectors compare nothing.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.lanes().map(f32::to_bits) == other.lanes().map(f32::to_bits)
            }
        }
        impl PartialOrd for $name {
            fn partial_cmp(&self, _: &Self) -> Option<std::cmp::Ordering> {
                None
            }
        }

        vector16!(@op $name, Add, add, _mm256_add_ps);
        vector16!(@op $name, Sub, sub, _mm256_sub_ps);
        vector16!(@op $name, Mul, mul, _mm256_mul_ps);
        vector16!(@op $name, Div, div, _mm256_div_ps);

        impl Neg for $name {
            type Output = Self;
            #[inline(always)]
            fn neg(self) -> Self {
                let mut x = self.0;
                for k in 0..REGISTERS {
                    // SAFETY: AVX, see the module's documentation. Negation is exact.
                    x[k] = unsafe { _mm256_xor_ps(x[k], _mm256_set1_ps(-0.0)) };
                }
                $name(x)
            }
        }

        impl Arith for $name {
            const ZERO: Self = $name(splat_const(0.0));
            const ONE: Self = $name(splat_const(1.0));
            const INFINITY: Self = $name(splat_const(f32::INFINITY));
            const MIN_NORMAL: Self = Self::ZERO;

            #[inline(always)]
            fn abs(self) -> Self {
                let mut x = self.0;
                for k in 0..REGISTERS {
                    // SAFETY: AVX, see the module's documentation.
                    x[k] = unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), x[k]) };
                }
                $name(x)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                let mut x = self.0;
                for k in 0..REGISTERS {
                    // SAFETY: AVX, see the module's documentation.
                    x[k] = unsafe { _mm256_sqrt_ps(x[k]) };
                }
                Self::round(x)
            }
            fn is_nan(self) -> bool {
                self.lanes().iter().any(|x| x.is_nan())
            }
            #[inline(always)]
            fn copysign(self, sign: Self) -> Self {
                let mut x = self.0;
                for k in 0..REGISTERS {
                    // SAFETY: AVX, see the module's documentation.
                    x[k] = unsafe {
                        let s = _mm256_set1_ps(-0.0);
                        _mm256_or_ps(_mm256_andnot_ps(s, x[k]), _mm256_and_ps(s, sign.0[k]))
                    };
                }
                $name(x)
            }
            /// Lanes are never flushed by the vector types (they run under hardware flushing).
            fn flush(self) -> Self {
                self
            }
        }
    };
    (@op $name:ident, $trait:ident, $method:ident, $intrinsic:ident) => {
        impl $trait for $name {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: Self) -> Self {
                let mut x = self.0;
                for k in 0..REGISTERS {
                    // SAFETY: AVX, see the module's documentation.
                    x[k] = unsafe { $intrinsic(x[k], rhs.0[k]) };
                }
                Self::round(x)
            }
        }
    };
}

vector16!(Bf16x8, bf16, "bfloat16 values, `LANES` at a time, with TensorFlow's bfloat16 arithmetic.");
vector16!(F16x8, f16, "float16 values, `LANES` at a time, with TensorFlow's float16 arithmetic.");

impl Bf16x8 {
    /// Each lane rounded to bfloat16, to nearest even, for the result of an operation on
    /// bfloat16 values (a NaN result has zero low bits and stays, as `round_bf16_result`).
    #[inline(always)]
    fn round_lanes(x: __m256) -> __m256 {
        // SAFETY: AVX2, see the module's documentation.
        unsafe {
            let b = _mm256_castps_si256(x);
            let lowest_kept = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
            let biased = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lowest_kept));
            _mm256_castsi256_ps(_mm256_and_si256(biased, _mm256_set1_epi32(0xffff_0000u32 as i32)))
        }
    }
}

impl F16x8 {
    /// Each lane rounded to float16, to nearest even, through F16C.
    #[inline(always)]
    fn round_lanes(x: __m256) -> __m256 {
        // SAFETY: F16C, see the module's documentation.
        unsafe { _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)) }
    }
}

impl Vector16 for Bf16x8 {
    type Element = bf16;

    #[inline(always)]
    fn to_f32(self) -> [f32; LANES] {
        self.lanes()
    }

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX, see the module's documentation.
        Bf16x8([unsafe { _mm256_set1_ps(x) }; REGISTERS])
    }

    #[inline(always)]
    fn load(src: &[bf16]) -> Self {
        let src = &src[..LANES];
        let mut x = Self::ZERO.0;
        for k in 0..REGISTERS {
            // SAFETY: AVX2; 16 bytes are readable at src[8 * k] (eight elements), unaligned
            // loads allowed.
            x[k] = unsafe {
                let halves = _mm_loadu_si128(src.as_ptr().add(8 * k).cast::<__m128i>());
                let wide = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves));
                // A NaN (magnitude above infinity's) is quieted, as `bf16_to_f32` does.
                let magnitude = _mm256_and_si256(wide, _mm256_set1_epi32(0x7fff_ffff));
                let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f80_0000));
                let quiet = _mm256_and_si256(nan, _mm256_set1_epi32(0x0040_0000));
                _mm256_castsi256_ps(_mm256_or_si256(wide, quiet))
            };
        }
        Bf16x8(x)
    }

    #[inline(always)]
    fn store(self, dst: &mut [bf16]) {
        let dst = &mut dst[..LANES];
        for k in 0..REGISTERS {
            let register = self.0[k];
            // SAFETY: AVX2; 16 bytes are writable at dst[8 * k]. The lanes are bfloat16 values:
            // their high halves are the bits, and packing the shifted lanes saturates nothing.
            unsafe {
                let high = _mm256_srli_epi32::<16>(_mm256_castps_si256(register));
                let packed = _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256::<1>(high));
                _mm_storeu_si128(dst.as_mut_ptr().add(8 * k).cast::<__m128i>(), packed);
            }
        }
    }
}

impl Vector16 for F16x8 {
    type Element = f16;

    #[inline(always)]
    fn to_f32(self) -> [f32; LANES] {
        self.lanes()
    }

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX, see the module's documentation.
        F16x8([unsafe { _mm256_set1_ps(x) }; REGISTERS])
    }

    #[inline(always)]
    fn load(src: &[f16]) -> Self {
        let src = &src[..LANES];
        let mut x = Self::ZERO.0;
        for k in 0..REGISTERS {
            // SAFETY: F16C; 16 bytes are readable at src[8 * k]. `vcvtph2ps` quiets a signaling
            // NaN and widens float16's subnormals exactly, as `f16_to_f32` does.
            x[k] = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(8 * k).cast::<__m128i>())) };
        }
        F16x8(x)
    }

    #[inline(always)]
    fn store(self, dst: &mut [f16]) {
        let dst = &mut dst[..LANES];
        for k in 0..REGISTERS {
            let register = self.0[k];
            // SAFETY: F16C; 16 bytes are writable at dst[8 * k]; the lanes are float16 values.
            unsafe {
                let halves = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(register);
                _mm_storeu_si128(dst.as_mut_ptr().add(8 * k).cast::<__m128i>(), halves);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::{Bf16Math, F16Math, FlushToZero, Lane};
    use crate::simd::{Kernel, SimdLevel, dispatch};

    /// Runs `f` compiled for AVX2 (the vector types' requirement), if the processor has it.
    fn on_avx2(f: impl FnOnce()) {
        struct Run<F>(F);
        impl<F: FnOnce()> Kernel for Run<F> {
            type Output = ();
            #[inline(always)]
            fn run(self) {
                (self.0)()
            }
        }
        if SimdLevel::detected() >= SimdLevel::Avx2 {
            let _flush = FlushToZero::new();
            dispatch(SimdLevel::Avx2, Run(f));
        } else {
            eprintln!("skipped: this processor has no AVX2 and F16C");
        }
    }

    fn vector_of(x: [f32; LANES]) -> [__m256; REGISTERS] {
        // SAFETY: f32 lanes.
        unsafe { std::mem::transmute::<[f32; LANES], [__m256; REGISTERS]>(x) }
    }

    /// Every 16-bit value loads and stores as the scalar types do, and every one's square root
    /// and negation; float32 values around every 16-bit value (ties, one ulp either side, NaN
    /// payloads, subnormals) round as the scalar roundings of operation results.
    #[test]
    fn lanes_are_the_scalar_arithmetic() {
        on_avx2(|| {
            let all: Vec<u16> = (0..=u16::MAX).collect();
            for chunk in all.chunks(LANES) {
                let b: Vec<bf16> = chunk.iter().map(|&x| bf16::from_bits(x)).collect();
                let h: Vec<f16> = chunk.iter().map(|&x| f16::from_bits(x)).collect();
                let (vb, vh) = (Bf16x8::load(&b), F16x8::load(&h));
                for lane in 0..LANES {
                    let (sb, sh) = (b[lane].load(), h[lane].load());
                    assert_eq!(vb.lanes()[lane].to_bits(), sb.get().to_bits(), "bf16 {:#x}", chunk[lane]);
                    assert_eq!(vh.lanes()[lane].to_bits(), sh.get().to_bits(), "f16 {:#x}", chunk[lane]);
                    assert_eq!(vb.sqrt().lanes()[lane].to_bits(), sb.sqrt().get().to_bits());
                    assert_eq!(vh.sqrt().lanes()[lane].to_bits(), sh.sqrt().get().to_bits());
                    assert_eq!((-vb).lanes()[lane].to_bits(), (-sb).get().to_bits());
                    assert_eq!((-vh).lanes()[lane].to_bits(), (-sh).get().to_bits());
                }
                let (mut ob, mut oh) = ([bf16::ZERO; LANES], [f16::ZERO; LANES]);
                vb.store(&mut ob);
                vh.store(&mut oh);
                for lane in 0..LANES {
                    assert_eq!(ob[lane].to_bits(), bf16::store(b[lane].load()).to_bits());
                    assert_eq!(oh[lane].to_bits(), f16::store(h[lane].load()).to_bits());
                }
            }
            let inputs = crate::float::sixteen::tests::float32_inputs();
            for chunk in inputs.chunks_exact(LANES) {
                let x: [f32; LANES] = chunk.try_into().unwrap();
                let (rb, rh) = (Bf16x8::round(vector_of(x)).lanes(), F16x8::round(vector_of(x)).lanes());
                for lane in 0..LANES {
                    // The vector roundings serve operation results only: NaNs with zero low bits.
                    let v = x[lane];
                    if v.is_nan() && v.to_bits() & 0xffff != 0 {
                        continue;
                    }
                    // Under flush-to-zero, no operation yields a float32 subnormal.
                    if v != 0.0 && v.abs() < f32::MIN_POSITIVE {
                        continue;
                    }
                    assert_eq!(rb[lane].to_bits(), Bf16Math::round(v).get().to_bits(), "bf16 round {v:e}");
                    if !(v.is_nan() && v.to_bits() & 0x1fff != 0) {
                        assert_eq!(rh[lane].to_bits(), F16Math::round(v).get().to_bits(), "f16 round {v:e}");
                    }
                }
            }
        });
    }

    /// The four operations on lanes give the scalar types' bits, for pairs of 16-bit values
    /// drawn across the whole range (every exponent, both signs, zeros, infinities, NaN).
    #[test]
    fn operations_are_the_scalar_operations() {
        on_avx2(|| {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u16
            };
            for _ in 0..200_000 {
                let a: [u16; LANES] = std::array::from_fn(|_| next());
                let c: [u16; LANES] = std::array::from_fn(|_| next());
                check::<Bf16x8>(
                    a,
                    c,
                    bf16::from_bits,
                    |x: bf16| x.load().get(),
                    |x, y, op| {
                        let (x, y) = (x.load(), y.load());
                        [x + y, x - y, x * y, x / y][op].get()
                    },
                );
                check::<F16x8>(
                    a,
                    c,
                    f16::from_bits,
                    |x: f16| x.load().get(),
                    |x, y, op| {
                        let (x, y) = (x.load(), y.load());
                        [x + y, x - y, x * y, x / y][op].get()
                    },
                );
            }
        });

        fn check<V: Vector16>(
            a: [u16; LANES],
            c: [u16; LANES],
            of: impl Fn(u16) -> V::Element,
            value: impl Fn(V::Element) -> f32,
            scalar: impl Fn(V::Element, V::Element, usize) -> f32,
        ) {
            let (ea, ec): ([V::Element; LANES], [V::Element; LANES]) = (a.map(&of), c.map(&of));
            let (va, vc) = (V::load(&ea), V::load(&ec));
            let results = [va + vc, va - vc, va * vc, va / vc];
            for (op, v) in results.iter().enumerate() {
                let mut out = ea;
                v.store(&mut out);
                for lane in 0..LANES {
                    let (got, want) = (value(out[lane]), scalar(ea[lane], ec[lane], op));
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "op {op} on {:#x}, {:#x}: {got:e} vs {want:e}",
                        a[lane],
                        c[lane]
                    );
                }
            }
        }
    }
}
