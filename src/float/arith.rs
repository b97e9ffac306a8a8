//! The arithmetic of TensorFlow's CPU kernels: IEEE operations one at a time, in the order
//! written, under flush-to-zero (docs/numerics.md §7).
//!
//! TensorFlow's CPU kernels run with flush-to-zero and denormals-are-zero. [`Ftz`] is a number
//! whose every arithmetic result is flushed, and whose constructor flushes its input, so kernel
//! code written with it reads like the formula and rounds like TF. On x86-64 the kernel loops
//! instead run under [`FlushToZero`] (the MXCSR FTZ and DAZ bits, TF's own mode) and use the
//! `HW` form of [`Ftz`], which leaves flushing to the processor; the bits are the same.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A number type the kernels compute with: each operator is one correctly rounded operation of
/// the type (a float32 or float64 one, or for the 16-bit types one done in float32 and rounded).
pub trait Arith:
    Copy
    + Default
    + Debug
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    /// The smallest positive normal number: anything smaller in magnitude is flushed.
    const MIN_NORMAL: Self;

    fn abs(self) -> Self;
    fn sqrt(self) -> Self;
    fn is_nan(self) -> bool;
    fn copysign(self, sign: Self) -> Self;

    /// A value clip (`tf.maximum(tf.minimum(x, hi), lo)` for bounds that are not NaN): `hi`
    /// where `self > hi`, then `lo` where that is below `lo`; a NaN stays. Comparisons and
    /// selections only, so exact. (Not `clamp`: `f32::clamp` would be called instead, with
    /// its bounds the other way round.)
    #[inline(always)]
    fn clip_to(self, hi: Self, lo: Self) -> Self {
        let below_hi = if self > hi { hi } else { self };
        if below_hi < lo { lo } else { below_hi }
    }

    /// `tf.maximum`: `self` where it is NaN or not below `other`, else `other` (so NaN in
    /// either operand gives NaN). Comparisons and selections only, so exact; each result is one
    /// operand's bits.
    #[inline(always)]
    fn max_nan(self, other: Self) -> Self {
        if self.is_nan() || other.is_nan() {
            if self.is_nan() { self } else { other }
        } else if self >= other {
            self
        } else {
            other
        }
    }

    /// Flush-to-zero: a subnormal becomes a zero of the same sign.
    #[inline(always)]
    fn flush(self) -> Self {
        if self.abs() < Self::MIN_NORMAL { Self::ZERO.copysign(self) } else { self }
    }
}

/// An element of the slices the kernel loops run over, and the type they compute with: the
/// dtype itself, or for a 16-bit dtype its arithmetic held in a float32 (the same bits,
/// vectorizable).
pub trait Lane: Copy + Send + Sync {
    type Math: Arith;
    /// What the loops widen a piece of a slice to first when [`Lane::WIDEN_PIECES`]: for
    /// float16, whose conversions cost less a piece at a time (F16C), its `Math`; else `Self`.
    type Piece: Lane<Math = Self::Math>;
    const WIDEN_PIECES: bool = false;
    /// What the step report's sums of squares of a gradient add in (`crate::squares`): float32
    /// for float32 and the 16-bit types, float64 for float64.
    type Square: Arith + Into<f64>;

    /// The value as `Math` (exact).
    fn load(self) -> Self::Math;
    /// A `Math` value back in this type (exact: `Math` holds values of the type).
    fn store(x: Self::Math) -> Self;
    /// A `Math` value as a [`Lane::Square`] (exact).
    fn square_value(x: Self::Math) -> Self::Square;

    /// `src` as pieces (exact; `dst` as long as `src`), with SIMD instructions if `simd`.
    #[inline(always)]
    fn widen_piece(src: &[Self], dst: &mut [Self::Piece], _simd: bool) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = Self::Piece::store(x.load());
        }
    }

    /// `src` in the type the loops compute with (exact; `dst` as long as `src`), with SIMD
    /// instructions if `simd`.
    #[inline(always)]
    fn widen_math(src: &[Self], dst: &mut [Self::Math], _simd: bool) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x.load();
        }
    }

    /// Pieces back into `dst` (exact; `dst` as long as `src`), with SIMD instructions if `simd`.
    #[inline(always)]
    fn narrow_piece(src: &[Self::Piece], dst: &mut [Self], _simd: bool) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = Self::store(x.load());
        }
    }
}

macro_rules! arith_ieee {
    ($t:ty) => {
        impl Arith for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const MIN_NORMAL: Self = <$t>::MIN_POSITIVE;

            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn copysign(self, sign: Self) -> Self {
                <$t>::copysign(self, sign)
            }
        }

        impl Lane for $t {
            type Math = $t;
            type Piece = $t;
            type Square = $t;
            #[inline(always)]
            fn load(self) -> $t {
                self
            }
            #[inline(always)]
            fn store(x: $t) -> Self {
                x
            }
            #[inline(always)]
            fn square_value(x: $t) -> $t {
                x
            }
        }
    };
}
arith_ieee!(f32);
arith_ieee!(f64);

/// A number in TensorFlow's CPU environment: operands and results are flushed to zero when subnormal.
/// Every operator is one IEEE operation (no fused multiply-add), in the order written.
///
/// `HW = false` flushes explicitly after every operation. `HW = true` leaves flushing to the
/// processor: only for code that runs under a [`FlushToZero`] guard (x86-64's MXCSR with FTZ
/// and DAZ set, exactly the mode TF's kernels run in), where explicit flushes are redundant.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ftz<F, const HW: bool = false>(F);

#[inline(always)]
fn flushed<F: Arith, const HW: bool>(x: F) -> F {
    if HW { x } else { x.flush() }
}

impl<F: Arith> Ftz<F> {
    /// The same value for code with the flushing mode `HW` (it is already flushed).
    #[inline(always)]
    pub fn mode<const HW: bool>(self) -> Ftz<F, HW> {
        Ftz(self.0)
    }
}

impl<F: Arith, const HW: bool> Ftz<F, HW> {
    pub const ZERO: Self = Ftz(F::ZERO);
    pub const ONE: Self = Ftz(F::ONE);
    pub const INFINITY: Self = Ftz(F::INFINITY);

    /// Reads a value as TF would (denormals-are-zero).
    #[inline(always)]
    pub fn new(x: F) -> Self {
        Ftz(flushed::<F, HW>(x))
    }

    #[inline(always)]
    pub fn get(self) -> F {
        self.0
    }

    #[inline(always)]
    pub fn sqrt(self) -> Self {
        Ftz(flushed::<F, HW>(self.0.sqrt()))
    }

    /// [`Arith::clip_to`] (its result is an operand: nothing to flush).
    #[inline(always)]
    pub fn clip_to(self, hi: Self, lo: Self) -> Self {
        Ftz(self.0.clip_to(hi.0, lo.0))
    }

    /// `tf.maximum`: NaN in either operand gives NaN (Rust's `max` would drop it).
    #[inline(always)]
    pub fn max_nan(self, other: Self) -> Self {
        Ftz(self.0.max_nan(other.0))
    }

    /// `tf.minimum`: NaN in either operand gives NaN.
    #[inline(always)]
    pub fn min_nan(self, other: Self) -> Self {
        if self.0.is_nan() || other.0.is_nan() {
            Ftz(if self.0.is_nan() { self.0 } else { other.0 })
        } else if self.0 <= other.0 {
            self
        } else {
            other
        }
    }
}

macro_rules! flushed_binary_op {
    ($trait:ident, $method:ident, $op:tt) => {
        impl<F: Arith, const HW: bool> $trait for Ftz<F, HW> {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: Self) -> Self {
                Ftz(flushed::<F, HW>(self.0 $op rhs.0))
            }
        }
    };
}
flushed_binary_op!(Add, add, +);
flushed_binary_op!(Sub, sub, -);
flushed_binary_op!(Mul, mul, *);
flushed_binary_op!(Div, div, /);

impl<F: Arith, const HW: bool> Neg for Ftz<F, HW> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Ftz(-self.0)
    }
}

/// Whether this target runs the kernel loops under [`FlushToZero`] (x86-64) or flushes
/// explicitly (elsewhere).
pub const HARDWARE_FLUSH: bool = cfg!(target_arch = "x86_64");

/// While alive, the calling thread's floating-point unit flushes subnormal results to zero and
/// reads subnormal operands as zero (MXCSR bits FTZ and DAZ), as TF's CPU kernels run; dropping
/// it restores the previous mode. A no-op where [`HARDWARE_FLUSH`] is false.
pub struct FlushToZero {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
const MXCSR_FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl FlushToZero {
    #[inline(always)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved: u32 = 0;
            // SAFETY: stmxcsr stores the 32-bit control register into `saved`, a live local;
            // ldmxcsr loads a value that differs only in the FTZ and DAZ bits, which change how
            // subnormals round and nothing else. Neither touches other memory or the stack. The
            // asm blocks are not `nomem`, so the compiler keeps the loop's loads and stores
            // between this guard's creation and its drop.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack, preserves_flags));
                let flushing = saved | MXCSR_FTZ_DAZ;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &flushing, options(nostack, preserves_flags));
            }
            FlushToZero { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushToZero {}
    }
}

impl Drop for FlushToZero {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the value read in `new`, as above.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, preserves_flags));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_below_the_normal_range_flush_to_signed_zero() {
        let tiny = Ftz::<_>::new(1e-38f32) * Ftz::<_>::new(0.01f32);
        assert_eq!(tiny.get().to_bits(), 0);
        let negative = Ftz::<_>::new(-1e-38f32) * Ftz::<_>::new(0.01f32);
        assert_eq!(negative.get().to_bits(), 0x8000_0000);
    }

    #[test]
    fn subnormal_inputs_read_as_zero() {
        assert_eq!(Ftz::<_>::new(1e-40f32).sqrt().get(), 0.0);
        assert_eq!(Ftz::<_>::new(1e-310f64).get(), 0.0);
    }

    #[test]
    fn max_and_min_propagate_nan_from_either_side() {
        let nan = Ftz::<_>::new(f32::NAN);
        let one = Ftz::<_>::new(1.0f32);
        assert!(one.max_nan(nan).get().is_nan());
        assert!(nan.max_nan(one).get().is_nan());
        assert!(one.min_nan(nan).get().is_nan());
        assert!(nan.min_nan(one).get().is_nan());
    }

    #[test]
    fn the_hardware_mode_flushes_like_the_explicit_one() {
        let tiny = std::hint::black_box(1e-38f32);
        let hundredth = std::hint::black_box(0.01f32);
        let explicit = (Ftz::<f32>::new(tiny) * Ftz::<_>::new(hundredth)).get();
        let hardware = {
            let _guard = FlushToZero::new();
            std::hint::black_box(std::hint::black_box(tiny) * hundredth)
        };
        assert_eq!(explicit.to_bits(), 0);
        if HARDWARE_FLUSH {
            assert_eq!(hardware.to_bits(), 0);
        }
        // and the guard restored IEEE subnormals
        assert_ne!(std::hint::black_box(tiny) * hundredth, 0.0);
    }
}
