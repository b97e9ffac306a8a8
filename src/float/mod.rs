//! The floating-point environment that Keras runs in, reproduced exactly (docs/numerics.md §7).
//!
//! - [`arith`]: IEEE operations one at a time under TensorFlow's flush-to-zero ([`Ftz`]).
//! - [`real`]: the dtypes a variable may have, how Python numbers reach them, glibc's libm.
//! - [`sixteen`]: bfloat16 and float16 arithmetic held in float32, vectorizable.
//! - [`registers`]: thirty-two float32 lanes in AVX or AVX-512 registers.
//! - [`vector`]: the dtypes' arithmetic on those lanes, thirty-two values at a time.
//! - [`pair`]: two values of such a type computed side by side.
//! - [`doubles`]: thirty-two float64 lanes in AVX-512 registers.

/// Every register of `$v` (and of `$w`) through `$f`, an expression of intrinsics of the
/// registers' width (`registers`, `doubles`).
#[cfg(target_arch = "x86_64")]
macro_rules! each {
    ($v:expr, |$x:ident| $f:expr) => {{
        let mut r = $v;
        for k in 0..r.len() {
            let $x = r[k];
            // SAFETY: the registers' target features, which every function here runs under
            // (see the module's documentation).
            r[k] = unsafe { $f };
        }
        r
    }};
    ($v:expr, $w:expr, |$x:ident, $y:ident| $f:expr) => {{
        let (mut r, w) = ($v, $w);
        for k in 0..r.len() {
            let ($x, $y) = (r[k], w[k]);
            // SAFETY: as above.
            r[k] = unsafe { $f };
        }
        r
    }};
}

mod arith;
#[cfg(target_arch = "x86_64")]
mod doubles;
#[cfg(target_arch = "x86_64")]
mod pair;
mod real;
#[cfg(target_arch = "x86_64")]
mod registers;
mod sixteen;
#[cfg(target_arch = "x86_64")]
mod vector;

pub use arith::{Arith, FlushToZero, Ftz, HARDWARE_FLUSH, Lane};
#[cfg(target_arch = "x86_64")]
pub(crate) use doubles::Doubles;
#[cfg(target_arch = "x86_64")]
pub(crate) use pair::Pair;
pub use real::{Real, libm_cosf, libm_logf};
pub(crate) use real::{round_into, widen};
#[cfg(target_arch = "x86_64")]
pub(crate) use registers::{Registers, Ymm4, Zmm2, Zmm2Bf16};
#[cfg(any(feature = "cuda", feature = "host-kernels"))]
pub(crate) use sixteen::{Bf16Math, F16Math};
#[cfg(target_arch = "x86_64")]
pub(crate) use vector::{LANES, LaneElement, Vector};
