//! The floating-point environment that Keras runs in, reproduced exactly (docs/numerics.md §7).
//!
//! * TensorFlow's CPU kernels run with flush-to-zero and denormals-are-zero. [`Ftz`] is a number
//!   whose every arithmetic result is flushed, and whose constructor flushes its input, so kernel
//!   code written with it reads like the formula and rounds like TF. On x86-64 the kernel loops
//!   instead run under [`FlushToZero`] (the MXCSR FTZ and DAZ bits, TF's own mode) and use the
//!   `HW` form of [`Ftz`], which leaves flushing to the processor; the bits are the same.
//! * Scalar `tf.pow`, `tf.cos` and `tf.math.log` are glibc's `powf`, `cosf`, `logf` (and `pow`
//!   for float64); we call the same libm symbols.
//! * Python floats are binary64 and reach a tensor in one of two ways, which round differently:
//!   [`Real::convert`] (a Python float mixed into tensor arithmetic: rounded once to the dtype) and
//!   [`Real::cast`] (`tf.cast(python_float, dtype)`: rounded to float32 first, then widened).

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::dtype::{Element, TensorMut, each_float};

unsafe extern "C" {
    // glibc's libm, which TensorFlow's scalar kernels call (docs/numerics.md §7.2).
    fn powf(x: f32, y: f32) -> f32;
    fn pow(x: f64, y: f64) -> f64;
    fn cosf(x: f32) -> f32;
    fn logf(x: f32) -> f32;
}

/// glibc `powf`, as scalar `tf.pow` on float32.
pub fn libm_powf(x: f32, y: f32) -> f32 {
    // SAFETY: powf is a pure function of two floats; it reads and writes no memory of ours.
    unsafe { powf(x, y) }
}

/// glibc `cosf`, as scalar `tf.cos` on float32.
pub fn libm_cosf(x: f32) -> f32 {
    // SAFETY: as for powf.
    unsafe { cosf(x) }
}

/// glibc `logf`, as scalar `tf.math.log` on float32.
pub fn libm_logf(x: f32) -> f32 {
    // SAFETY: as for powf.
    unsafe { logf(x) }
}

/// A float type a variable can hold: `f32` or `f64`.
pub trait Real:
    Element
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// Lanes in one of Eigen's SIMD packets on the x86-64 wheels (AVX: 8 floats, 4 doubles),
    /// which fixes the order of Eigen's sums (docs/numerics.md §8).
    const PACKET: usize;
    const ZERO: Self;
    const ONE: Self;
    /// The smallest positive normal number: anything smaller in magnitude is flushed.
    const MIN_NORMAL: Self;

    fn abs(self) -> Self;
    fn sqrt(self) -> Self;
    /// `tf.pow` on a scalar of this dtype (glibc `powf` / `pow`).
    fn pow(self, y: Self) -> Self;
    fn is_nan(self) -> bool;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_i64(x: i64) -> Self;
    fn copysign(self, sign: Self) -> Self;

    /// A Python float used in tensor arithmetic of this dtype: rounded once.
    fn convert(x: f64) -> Self {
        Self::from_f64(x)
    }

    /// `tf.cast(python_float, dtype)`: the float becomes a float32 tensor first.
    fn cast(x: f64) -> Self {
        Self::from_f64(x as f32 as f64)
    }

    /// Flush-to-zero: a subnormal becomes a zero of the same sign.
    #[inline(always)]
    fn flush(self) -> Self {
        if self.abs() < Self::MIN_NORMAL { Self::ZERO.copysign(self) } else { self }
    }
}

impl Real for f32 {
    const PACKET: usize = 8;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const MIN_NORMAL: Self = f32::MIN_POSITIVE;

    #[inline(always)]
    fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn pow(self, y: Self) -> Self {
        libm_powf(self, y)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_i64(x: i64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        f32::copysign(self, sign)
    }
}

impl Real for f64 {
    const PACKET: usize = 4;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const MIN_NORMAL: Self = f64::MIN_POSITIVE;

    #[inline(always)]
    fn abs(self) -> Self {
        f64::abs(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn pow(self, y: Self) -> Self {
        // SAFETY: pow is a pure function of two doubles.
        unsafe { pow(self, y) }
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_i64(x: i64) -> Self {
        x as f64
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        f64::copysign(self, sign)
    }
}

/// The 16-bit floats, as TensorFlow's CPU kernels compute with them (Eigen's `bfloat16` and
/// `half`): every operation is done in float32 (under flush-to-zero, as every kernel runs) and its
/// result rounded to nearest even; a Python float or an int64 reaches the dtype through float32
/// first (measured with tf-keras 2.15.1: `tf.convert_to_tensor(x, tf.float16)` and `tf.cast` of
/// a Python float both round twice). The operators of `half`'s types do exactly that.
macro_rules! real_16_bit {
    ($t:ty, $min_normal:expr, $doc:literal) => {
        #[doc = $doc]
        impl Real for $t {
            // Eigen's reductions over these types are not measured yet (docs/numerics.md §17).
            const PACKET: usize = 8;
            const ZERO: Self = <$t>::ZERO;
            const ONE: Self = <$t>::ONE;
            const MIN_NORMAL: Self = $min_normal;

            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::from_bits(self.to_bits() & 0x7fff)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::from_f32(self.to_f32().sqrt())
            }
            fn pow(self, y: Self) -> Self {
                <$t>::from_f32(libm_powf(self.to_f32(), y.to_f32()))
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn from_f64(x: f64) -> Self {
                <$t>::from_f32(x as f32)
            }
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            fn from_i64(x: i64) -> Self {
                <$t>::from_f32(x as f32)
            }
            #[inline(always)]
            fn copysign(self, sign: Self) -> Self {
                <$t>::from_bits((self.to_bits() & 0x7fff) | (sign.to_bits() & 0x8000))
            }
        }
    };
}
real_16_bit!(
    half::bf16,
    half::bf16::MIN_POSITIVE,
    "bfloat16 has float32's exponent range: its subnormals are float32's, and flush to zero."
);
real_16_bit!(
    half::f16,
    half::f16::ZERO,
    "float16's subnormals are normal float32 numbers: TensorFlow keeps them (nothing flushes)."
);

/// A value widened exactly to float32 (for the 16-bit dtypes and float32 itself).
#[inline(always)]
pub(crate) fn widen<F: Real>(x: F) -> f32 {
    x.to_f64() as f32
}

/// Rounds float32 values into `dst`, to nearest even (a master's rounding).
#[inline(always)]
pub(crate) fn round_slice<F: Real>(dst: &mut [F], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = F::from_f64(s as f64);
    }
}

/// [`round_slice`] into a tensor of any float dtype.
pub(crate) fn round_into(dst: TensorMut<'_>, src: &[f32]) {
    each_float!(dst, d => round_slice(d, src), _ => {})
}

/// A number in TensorFlow's CPU environment: operands and results are flushed to zero when subnormal.
/// Every operator is one IEEE operation (no fused multiply-add), in the order written.
///
/// `HW = false` flushes explicitly after every operation. `HW = true` leaves flushing to the
/// processor: only for code that runs under a [`FlushToZero`] guard (x86-64's MXCSR with FTZ
/// and DAZ set, exactly the mode TF's kernels run in), where explicit flushes are redundant.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ftz<F, const HW: bool = false>(F);

#[inline(always)]
fn flushed<F: Real, const HW: bool>(x: F) -> F {
    if HW { x } else { x.flush() }
}

impl<F: Real> Ftz<F> {
    /// The same value for code with the flushing mode `HW` (it is already flushed).
    #[inline(always)]
    pub fn mode<const HW: bool>(self) -> Ftz<F, HW> {
        Ftz(self.0)
    }
}

impl<F: Real, const HW: bool> Ftz<F, HW> {
    pub const ZERO: Self = Ftz(F::ZERO);
    pub const ONE: Self = Ftz(F::ONE);

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

    /// `tf.pow` on scalars (glibc).
    pub fn pow(self, y: Self) -> Self {
        Ftz(flushed::<F, HW>(self.0.pow(y.0)))
    }

    /// `tf.maximum`: NaN in either operand gives NaN (Rust's `max` would drop it).
    #[inline(always)]
    pub fn max_nan(self, other: Self) -> Self {
        if self.0.is_nan() || other.0.is_nan() {
            Ftz(if self.0.is_nan() { self.0 } else { other.0 })
        } else if self.0 >= other.0 {
            self
        } else {
            other
        }
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
        impl<F: Real, const HW: bool> $trait for Ftz<F, HW> {
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

impl<F: Real, const HW: bool> Neg for Ftz<F, HW> {
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

    #[test]
    fn one_minus_beta_is_formed_in_double_before_rounding() {
        assert_eq!(f32::convert(1.0 - 0.9), 0.1f32);
        assert_ne!(1.0f32 - 0.9f32, 0.1f32);
        assert_eq!(f64::cast(0.9), 0.9f32 as f64);
    }

    /// The bias corrections use `tf.pow` on scalars, which is glibc's `powf` and not always
    /// `f32(pow(f64, f64))`. `tests/data/beta_power_exceptions.json` lists, per beta, every step
    /// up to `t_max_checked` where the two differ, with TF's bits. Our pow must give TF's bits at
    /// every one of those steps and `f32(pow(f64(f32(beta)), t))` at all the others.
    #[test]
    fn beta_powers_match_tensorflow_at_every_step_checked() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/beta_power_exceptions.json");
        let text = std::fs::read_to_string(path).expect("tests/data/beta_power_exceptions.json is missing");
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        let hex =
            |v: &serde_json::Value| u32::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        let mut checked = 0usize;
        for (beta, entry) in data["by_beta"].as_object().unwrap() {
            let beta_f32 = Ftz::<_>::new(f32::cast(beta.parse::<f64>().unwrap()));
            let t_max = entry["t_max_checked"].as_u64().unwrap();
            let exceptions: std::collections::HashMap<u64, u32> =
                entry["exceptions"].as_array().unwrap().iter().map(|e| (e[0].as_u64().unwrap(), hex(&e[1]))).collect();
            for t in 1..=t_max {
                let ours = beta_f32.pow(Ftz::<_>::new(t as f32)).get().to_bits();
                let expected = exceptions
                    .get(&t)
                    .copied()
                    .unwrap_or_else(|| (((beta_f32.get() as f64).powf(t as f64)) as f32).flush().to_bits());
                assert_eq!(ours, expected, "beta {beta}, t {t}: {ours:#x} vs TF {expected:#x}");
                checked += 1;
            }
            assert!(!exceptions.is_empty());
        }
        assert!(checked > 300_000);
    }
}
