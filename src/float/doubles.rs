//! Thirty-two float64 lanes in four AVX-512 registers, with plain IEEE operations: float64's
//! arithmetic thirty-two values at a time, lane by lane the same bits as `f64`'s (tested below).
//! The dense step runs float64 variables in them when the step report sums the gradient's
//! squares, so that the report's lanes stay in registers (`engine::cpu::lanes`).
//!
//! Every function is `#[inline(always)]` and runs only inside functions compiled for AVX-512 F
//! (a kernel run by `Zmm2::run`), under the processor's flush-to-zero mode (`FlushToZero`), as
//! the scalar float64 loops with hardware flushing do: that is the safety invariant every
//! `unsafe` block here relies on. Comparisons are not defined: `tf.maximum` and a value clip are
//! operations of their own ([`Arith::max_nan`], [`Arith::clip_to`]).

// Index loops over registers: every call between an intrinsic and the function compiled for
// the level must be inlined, and iterator adapters are not sure to be.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;
use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::arith::Arith;
use super::registers::LANES;

/// Float64 lanes per AVX-512 register.
const PER_REGISTER: usize = 8;

/// [`LANES`] float64 lanes in four AVX-512 registers, lane `j` in register `j / 8`.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Doubles([__m512d; LANES / PER_REGISTER]);

/// The sign bit of a float64, as the integer lanes of a register.
#[inline(always)]
fn sign_bits() -> __m512i {
    // SAFETY: AVX-512 F (the module's documentation).
    unsafe { _mm512_set1_epi64(i64::MIN) }
}

impl Doubles {
    /// Every lane `x`.
    #[inline(always)]
    pub fn splat(x: f64) -> Self {
        // SAFETY: AVX-512 F (the module's documentation).
        Doubles([unsafe { _mm512_set1_pd(x) }; LANES / PER_REGISTER])
    }

    /// The lanes' values, lane `j` at index `j`.
    #[inline(always)]
    pub fn lanes(self) -> [f64; LANES] {
        // SAFETY: four registers of eight float64 lanes are 32 float64s, lane order kept.
        unsafe { std::mem::transmute::<Self, [f64; LANES]>(self) }
    }

    /// `src`, lane `j` from `src[j]` (bit for bit: a signaling NaN stays signaling, and the
    /// first operation on it quiets it as the scalar one does).
    #[inline(always)]
    pub fn load(src: &[f64; LANES]) -> Self {
        let mut r = Self::ZERO.0;
        for k in 0..r.len() {
            // SAFETY: AVX-512 F; eight float64s are readable at src[8 * k] (32 in all).
            r[k] = unsafe { _mm512_loadu_pd(src.as_ptr().add(PER_REGISTER * k)) };
        }
        Doubles(r)
    }

    /// The lanes into `dst`.
    #[inline(always)]
    pub fn store(self, dst: &mut [f64; LANES]) {
        for k in 0..self.0.len() {
            // SAFETY: AVX-512 F; eight float64s are writable at dst[8 * k] (32 in all).
            unsafe { _mm512_storeu_pd(dst.as_mut_ptr().add(PER_REGISTER * k), self.0[k]) };
        }
    }
}

impl fmt::Debug for Doubles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Doubles").field(&self.lanes()).finish()
    }
}

impl Default for Doubles {
    #[inline(always)]
    fn default() -> Self {
        Self::ZERO
    }
}

/// Not an order: the loops that use lanes compare nothing.
impl PartialEq for Doubles {
    fn eq(&self, other: &Self) -> bool {
        self.lanes().map(f64::to_bits) == other.lanes().map(f64::to_bits)
    }
}
impl PartialOrd for Doubles {
    fn partial_cmp(&self, _: &Self) -> Option<std::cmp::Ordering> {
        None
    }
}

macro_rules! lane_op {
    ($trait:ident, $method:ident, $intrinsic:ident) => {
        impl $trait for Doubles {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: Self) -> Self {
                Doubles(each!(self.0, rhs.0, |a, b| $intrinsic(a, b)))
            }
        }
    };
}
lane_op!(Add, add, _mm512_add_pd);
lane_op!(Sub, sub, _mm512_sub_pd);
lane_op!(Mul, mul, _mm512_mul_pd);
lane_op!(Div, div, _mm512_div_pd);

impl Neg for Doubles {
    type Output = Self;
    /// The sign bit flipped, as `-x` does (an integer operation: AVX-512 F has no float64 XOR).
    #[inline(always)]
    fn neg(self) -> Self {
        Doubles(each!(self.0, |x| _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(x), sign_bits()))))
    }
}

const fn splat_const(x: f64) -> Doubles {
    // SAFETY: four registers of eight float64 lanes are 32 float64s; any bits are valid.
    unsafe { std::mem::transmute::<[f64; LANES], Doubles>([x; LANES]) }
}

impl Arith for Doubles {
    const ZERO: Self = splat_const(0.0);
    const ONE: Self = splat_const(1.0);
    const INFINITY: Self = splat_const(f64::INFINITY);
    /// Lanes are never flushed by this type (it runs under hardware flushing).
    const MIN_NORMAL: Self = Self::ZERO;

    #[inline(always)]
    fn abs(self) -> Self {
        Doubles(each!(self.0, |x| _mm512_abs_pd(x)))
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Doubles(each!(self.0, |x| _mm512_sqrt_pd(x)))
    }
    fn is_nan(self) -> bool {
        self.lanes().iter().any(|x| x.is_nan())
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        Doubles(each!(self.0, sign.0, |x, s| {
            // Bitwise `mask ? s : x` with the sign bit as the mask.
            _mm512_castsi512_pd(_mm512_ternarylogic_epi64::<0xca>(
                sign_bits(),
                _mm512_castpd_si512(s),
                _mm512_castpd_si512(x),
            ))
        }))
    }
    /// `tf.maximum`: each lane `other` where `self < other` or `other` is NaN, unless `self` is
    /// NaN; each lane one operand's bits.
    #[inline(always)]
    fn max_nan(self, other: Self) -> Self {
        Doubles(each!(self.0, other.0, |a, b| {
            let take_b = _mm512_cmp_pd_mask::<_CMP_NGE_UQ>(a, b) & _mm512_cmp_pd_mask::<_CMP_ORD_Q>(a, a);
            _mm512_mask_blend_pd(take_b, a, b)
        }))
    }
    /// A value clip with bounds that are not NaN: `minpd(hi, x)` is `hi < x ? hi : x` and
    /// gives `x` when it is NaN, and `maxpd(lo, ..)` likewise.
    #[inline(always)]
    fn clip_to(self, hi: Self, lo: Self) -> Self {
        let below_hi = each!(hi.0, self.0, |h, x| _mm512_min_pd(h, x));
        Doubles(each!(lo.0, below_hi, |l, b| _mm512_max_pd(l, b)))
    }
    /// Lanes are never flushed by this type (it runs under hardware flushing).
    fn flush(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::{FlushToZero, Registers, Zmm2};
    use crate::simd::{Kernel, SimdLevel};
    use std::hint::black_box;

    /// Values that reach every branch of the operations: zeros of both signs, subnormals (read
    /// as zero under flush-to-zero), the normal extremes, infinities, quiet and signaling NaNs
    /// with payloads, and ordinary numbers on both sides of each other.
    fn samples() -> Vec<f64> {
        let mut v = vec![
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 4.0,
            -5e-324,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff8_0000_dead_beef),
            f64::from_bits(0x7ff0_0000_0000_0001), // signaling
            f64::from_bits(0xfff4_0000_0000_1234), // signaling, negative
            1.0,
            -1.0,
            0.1,
            1e-300,
            1e300,
        ];
        let mut x = 0.3f64;
        while v.len() < 3 * LANES {
            x = (x * 3.7 + 0.123).fract();
            v.push((x - 0.5) * 10f64.powi((v.len() % 9) as i32 - 4));
        }
        v
    }

    /// Each operation on lanes gives each lane the bits of the scalar operation, under
    /// flush-to-zero, for every pair of sample values (both orders).
    #[test]
    fn lanes_are_the_scalar_arithmetic() {
        struct Check;
        impl Kernel for Check {
            type Output = ();
            #[inline(always)]
            fn run(self) {
                let all = black_box(samples());
                for (i, &a) in all.iter().enumerate() {
                    // Every sample against `a`, and `a` against every sample, lane by lane.
                    for rhs in all.chunks(LANES) {
                        let mut left = [a; LANES];
                        let mut right = [a; LANES];
                        right[..rhs.len()].copy_from_slice(rhs);
                        left[..rhs.len()].copy_from_slice(rhs);
                        for (x, y) in [([a; LANES], right), (left, [a; LANES])] {
                            check(x, y, i);
                        }
                    }
                }
            }
        }

        #[inline(always)]
        fn check(x: [f64; LANES], y: [f64; LANES], case: usize) {
            let (vx, vy) = (Doubles::load(&x), Doubles::load(&y));
            let bounds = (Doubles::splat(0.25), Doubles::splat(-3.0));
            type Scalar = fn(f64, f64) -> f64;
            let results: [(&str, Doubles, Scalar); 11] = [
                ("add", vx + vy, |a, b| a + b),
                ("sub", vx - vy, |a, b| a - b),
                ("mul", vx * vy, |a, b| a * b),
                ("div", vx / vy, |a, b| a / b),
                ("neg", -vx, |a, _| -a),
                ("abs", vx.abs(), |a, _| a.abs()),
                ("sqrt", vx.sqrt(), |a, _| a.sqrt()),
                ("copysign", vx.copysign(vy), |a, b| a.copysign(b)),
                ("max_nan", vx.max_nan(vy), |a, b| Arith::max_nan(a, b)),
                ("clip_to", vx.clip_to(bounds.0, bounds.1), |a, _| Arith::clip_to(a, 0.25, -3.0)),
                (
                    "round trip",
                    {
                        let mut out = [0.0; LANES];
                        vx.store(&mut out);
                        Doubles::load(&out)
                    },
                    |a, _| a,
                ),
            ];
            for (name, lanes, scalar) in results {
                for (j, got) in lanes.lanes().into_iter().enumerate() {
                    let want = scalar(black_box(x[j]), black_box(y[j]));
                    assert_eq!(got.to_bits(), want.to_bits(), "{name}({:e}, {:e}), case {case} lane {j}", x[j], y[j]);
                }
            }
        }

        if SimdLevel::detected() < Zmm2::<false>::LEVEL {
            eprintln!("skipped: this processor does not have AVX-512");
            return;
        }
        let _flush = FlushToZero::new();
        // SAFETY: the processor has AVX-512 (checked above).
        unsafe { <Zmm2>::run(Check) }
    }
}
