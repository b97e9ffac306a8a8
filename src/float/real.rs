//! The dtypes a variable may have, as numbers: how Python floats and integers reach them, the
//! libm functions TensorFlow's scalar kernels call, and the type each is computed with.
//!
//! * Scalar `tf.pow`, `tf.cos` and `tf.math.log` are glibc's `powf`, `cosf`, `logf` (and `pow`
//!   for float64); we call the same libm symbols.
//! * Python floats are binary64 and reach a tensor in one of two ways, which round differently:
//!   [`Real::convert`] (a Python float mixed into tensor arithmetic: rounded once to the dtype) and
//!   [`Real::cast`] (`tf.cast(python_float, dtype)`: rounded to float32 first, then widened).

use super::arith::{Arith, Ftz, Lane};
#[cfg(target_arch = "x86_64")]
use super::sixteen;
use super::sixteen::{Bf16Math, F16Math};
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

/// A float dtype a variable can hold: float32, float64, bfloat16 or float16.
pub trait Real: Element + Arith + Lane {
    /// Lanes in one of Eigen's SIMD packets on the x86-64 wheels (AVX: 8 floats, 4 doubles,
    /// 8 bfloat16 or half), which fixes the order of Eigen's sums (docs/numerics.md §8).
    const PACKET: usize;
    /// Eigen's `LeafSize`: a sum splits in halves until a part has at most `PACKET * LEAF`
    /// elements (1024; Eigen takes 128 for bfloat16 and 200 for half, to lose less precision).
    const LEAF: usize = 1024;
    /// Whether Eigen adds a packet's lanes together in float32 and rounds the total once
    /// (`predux` of the 16-bit packets), rather than in this type.
    const PREDUX_IN_F32: bool = false;
    /// Whether `tf.reduce_sum` sums in float32 and rounds the total once (TF's casting
    /// specialization of its sum for bfloat16), rather than with Eigen's sum of this type.
    const REDUCE_SUM_IN_F32: bool = false;

    /// `tf.pow` on a scalar of this dtype (glibc `powf` / `pow`).
    fn pow(self, y: Self) -> Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_i64(x: i64) -> Self;
    /// A float32 rounded to this dtype, to nearest even (exact for float32 and float64).
    fn from_f32(x: f32) -> Self;
    /// The value as a float32 (exact for float32 and the 16-bit dtypes).
    fn to_f32(self) -> f32;

    /// [`Real::to_f32`] of every element of `src` into `dst` (as long as `src`), with SIMD
    /// instructions if `simd`.
    #[inline(always)]
    fn widen_slice(src: &[Self], dst: &mut [f32], _simd: bool) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x.to_f32();
        }
    }

    /// [`Real::from_f32`] of every element of `src` into `dst` (as long as `src`), with SIMD
    /// instructions if `simd`.
    #[inline(always)]
    fn round_slice(src: &[f32], dst: &mut [Self], _simd: bool) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(x);
        }
    }

    /// A Python float used in tensor arithmetic of this dtype: rounded once.
    fn convert(x: f64) -> Self {
        Self::from_f64(x)
    }

    /// `tf.cast(python_float, dtype)`: the float becomes a float32 tensor first.
    fn cast(x: f64) -> Self {
        Self::from_f64(x as f32 as f64)
    }
}

impl<F: Real, const HW: bool> Ftz<F, HW> {
    /// `tf.pow` on scalars (glibc).
    pub fn pow(self, y: Self) -> Self {
        Ftz::new(self.get().pow(y.get()))
    }
}

impl Real for f32 {
    const PACKET: usize = 8;
    fn pow(self, y: Self) -> Self {
        libm_powf(self, y)
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
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Real for f64 {
    const PACKET: usize = 4;
    fn pow(self, y: Self) -> Self {
        // SAFETY: pow is a pure function of two doubles.
        unsafe { pow(self, y) }
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
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// The 16-bit floats, as TensorFlow's CPU kernels compute with them (Eigen's `bfloat16` and
/// `half`): every operation is done in float32 (under flush-to-zero, as every kernel runs) and its
/// result rounded to nearest even; a Python float or an int64 reaches the dtype through float32
/// first (measured with tf-keras 2.15.1: `tf.convert_to_tensor(x, tf.float16)` and `tf.cast` of
/// a Python float both round twice). `half`'s operators do exactly that (the scalar code here);
/// `Math` does the same in a float32 without a conversion per operation (the kernel loops).
macro_rules! real_16_bit {
    ($t:ty, $math:ty, $min_normal:expr, $doc:literal, { $($lane:tt)* }, { $($real:tt)* }) => {
        #[doc = $doc]
        impl Arith for $t {
            const ZERO: Self = <$t>::ZERO;
            const ONE: Self = <$t>::ONE;
            const INFINITY: Self = <$t>::INFINITY;
            const MIN_NORMAL: Self = $min_normal;

            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::from_bits(self.to_bits() & 0x7fff)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::from_f32(self.to_f32().sqrt())
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn copysign(self, sign: Self) -> Self {
                <$t>::from_bits((self.to_bits() & 0x7fff) | (sign.to_bits() & 0x8000))
            }
        }

        impl Lane for $t {
            type Math = $math;
            type Square = f32;
            #[inline(always)]
            fn load(self) -> $math {
                <$math>::from_bits16(self.to_bits())
            }
            #[inline(always)]
            fn store(x: $math) -> Self {
                <$t>::from_bits(x.to_bits16())
            }
            #[inline(always)]
            fn square_value(x: $math) -> f32 {
                x.get()
            }
            $($lane)*
        }

        impl Real for $t {
            const PACKET: usize = 8;
            const PREDUX_IN_F32: bool = true;
            fn pow(self, y: Self) -> Self {
                <$t>::from_f32(libm_powf(self.to_f32(), y.to_f32()))
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
            fn from_f32(x: f32) -> Self {
                Self::store(<$math>::round(x))
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self.load().get()
            }
            $($real)*
        }
    };
}
real_16_bit!(
    half::bf16,
    Bf16Math,
    half::bf16::MIN_POSITIVE,
    "bfloat16 has float32's exponent range: its subnormals are float32's, and flush to zero.",
    {
        // A shift each way: converted in the loops, element by element.
        type Piece = half::bf16;
    },
    {
        const LEAF: usize = 128;
        const REDUCE_SUM_IN_F32: bool = true;
    }
);
real_16_bit!(
    half::f16,
    F16Math,
    half::f16::ZERO,
    "float16's subnormals are normal float32 numbers: TensorFlow keeps them (nothing flushes).",
    {
        // Converted a piece at a time: with F16C eight values per instruction.
        type Piece = F16Math;
        const WIDEN_PIECES: bool = cfg!(target_arch = "x86_64");

        #[inline(always)]
        fn widen_piece(src: &[Self], dst: &mut [F16Math], simd: bool) {
            #[cfg(not(target_arch = "x86_64"))]
            let _ = simd; // F16C is x86-64's
            #[cfg(target_arch = "x86_64")]
            if simd && sixteen::f16c::available() {
                // SAFETY: the processor has F16C and AVX2.
                return unsafe { sixteen::f16c::load_into(src, dst) };
            }
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = x.load();
            }
        }

        #[inline(always)]
        fn widen_math(src: &[Self], dst: &mut [F16Math], simd: bool) {
            Self::widen_piece(src, dst, simd)
        }

        #[inline(always)]
        fn narrow_piece(src: &[F16Math], dst: &mut [Self], simd: bool) {
            #[cfg(not(target_arch = "x86_64"))]
            let _ = simd; // F16C is x86-64's
            #[cfg(target_arch = "x86_64")]
            if simd && sixteen::f16c::available() {
                // SAFETY: the processor has F16C and AVX2.
                return unsafe { sixteen::f16c::store_into(src, dst) };
            }
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = Self::store(x);
            }
        }
    },
    {
        const LEAF: usize = 200;

        fn widen_slice(src: &[Self], dst: &mut [f32], simd: bool) {
            #[cfg(not(target_arch = "x86_64"))]
            let _ = simd; // F16C is x86-64's
            #[cfg(target_arch = "x86_64")]
            if simd && sixteen::f16c::available() {
                // SAFETY: the processor has F16C and AVX2.
                return unsafe { sixteen::f16c::widen_into(src, dst) };
            }
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = x.to_f32();
            }
        }

        fn round_slice(src: &[f32], dst: &mut [Self], simd: bool) {
            #[cfg(not(target_arch = "x86_64"))]
            let _ = simd; // F16C is x86-64's
            #[cfg(target_arch = "x86_64")]
            if simd && sixteen::f16c::available() {
                // SAFETY: the processor has F16C and AVX2.
                return unsafe { sixteen::f16c::round_into(src, dst) };
            }
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = Self::from_f32(x);
            }
        }
    }
);

/// A value widened exactly to float32 (for the 16-bit dtypes and float32 itself).
#[inline(always)]
pub(crate) fn widen<F: Real>(x: F) -> f32 {
    x.to_f32()
}

/// Rounds float32 values into a tensor of any float dtype, to nearest even (a master's rounding).
pub(crate) fn round_into(dst: TensorMut<'_>, src: &[f32]) {
    each_float!(dst, d => Real::round_slice(src, d, true), _ => {})
}

#[cfg(test)]
mod tests {
    use super::*;

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
