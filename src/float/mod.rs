//! The floating-point environment that Keras runs in, reproduced exactly (docs/numerics.md §7).
//!
//! - [`arith`]: IEEE operations one at a time under TensorFlow's flush-to-zero ([`Ftz`]).
//! - [`real`]: the dtypes a variable may have, how Python numbers reach them, glibc's libm.
//! - [`sixteen`]: bfloat16 and float16 arithmetic held in float32, vectorizable.
//! - [`vector`]: the same arithmetic on eight lanes at a time, with AVX2 and F16C.

mod arith;
mod real;
mod sixteen;
#[cfg(target_arch = "x86_64")]
mod vector;

pub use arith::{Arith, FlushToZero, Ftz, HARDWARE_FLUSH, Lane};
pub use real::{Real, libm_cosf, libm_logf};
pub(crate) use real::{round_into, widen};
#[cfg(any(feature = "cuda", feature = "host-kernels"))]
pub(crate) use sixteen::{Bf16Math, F16Math};
#[cfg(target_arch = "x86_64")]
pub(crate) use vector::{Bf16x8, F16x8, LANES, Vector16};
