//! The dense step of bfloat16 and float16 variables in vector lanes: thirty-two elements at a time in
//! [`Bf16x8`] / [`F16x8`], the same element function ([`dense_element`]) as every other loop,
//! so the same formula and bits, at AVX2 speed (one F16C round trip, or four integer operations,
//! per rounded operation instead of the portable rounding's dozen).
//!
//! It serves the forms of the step the vector types can express: no amsgrad (`tf.maximum` would
//! compare lanes) and a gradient op that is the identity or multiplications (a loss scale's
//! unscaling, a global clip). Everything else, and the last elements short of a whole vector, runs the
//! portable-vectorized loops.

#[cfg(target_arch = "x86_64")]
use crate::float::{Bf16x8, F16x8, HARDWARE_FLUSH as HW, LANES, Vector16};
use crate::float::{Ftz, Lane};
#[cfg(target_arch = "x86_64")]
use crate::kernels::dense_element;
use crate::kernels::{StepScalars, VariableOps};
use crate::simd::SimdLevel;
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Kernel};
use crate::squares::Squares;
#[cfg(target_arch = "x86_64")]
use crate::squares::{GROUP, add_row, row_squares};

/// The gradient op of a step in vector lanes: none, or `(g * r) * a`.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum LanesOp<F> {
    Identity,
    Scale(Ftz<F>, Ftz<F>),
}

/// Element types whose dense step may run in vector lanes.
pub(crate) trait DenseLanes: Lane {
    /// Runs the step over the longest prefix of whole vectors it can (none without a vector
    /// type, or below AVX2) and returns that prefix's length. Runs under flush-to-zero.
    /// `slots` are a variable's values, m, v and its EMA average (empty without EMA). With
    /// `sums`, also the report's squares of `grad` (`crate::squares`), and the prefix is whole
    /// groups (`grad` starts one).
    #[inline(always)]
    fn dense_lanes<const EMA: bool>(
        _s: &StepScalars<Self::Math>,
        _ops: VariableOps,
        _op: LanesOp<Self::Math>,
        _grad: &[Self],
        _slots: [&mut [Self]; 4],
        _level: SimdLevel,
        _sums: Option<&mut Squares>,
    ) -> usize {
        0
    }
}

impl DenseLanes for f32 {}
impl DenseLanes for f64 {}

#[cfg(target_arch = "x86_64")]
macro_rules! dense_lanes_16 {
    ($element:ty, $vector:ty) => {
        impl DenseLanes for $element {
            #[inline(always)]
            fn dense_lanes<const EMA: bool>(
                s: &StepScalars<Self::Math>,
                ops: VariableOps,
                op: LanesOp<Self::Math>,
                grad: &[Self],
                slots: [&mut [Self]; 4],
                level: SimdLevel,
                sums: Option<&mut Squares>,
            ) -> usize {
                if level.min(SimdLevel::detected()) < SimdLevel::Avx2 {
                    return 0;
                }
                let splat = |x: Ftz<Self::Math>| Ftz::<$vector>::new(<$vector>::splat(x.get().get()));
                let s = s.map(splat);
                let [var, m, v, average] = slots;
                let whole = if sums.is_some() { GROUP } else { LANES };
                let n = var.len() / whole * whole;
                let (var, m, v) = (&mut var[..n], &mut m[..n], &mut v[..n]);
                let average = if EMA { &mut average[..n] } else { &mut average[..0] };
                let grad = &grad[..n];
                match op {
                    LanesOp::Identity => {
                        let one = Ftz::<$vector>::ONE;
                        let kernel =
                            Step::<$vector, false, EMA> { s, ops, r: one, a: one, grad, var, m, v, average, sums };
                        simd::dispatch(level, kernel)
                    }
                    LanesOp::Scale(r, a) => {
                        let (r, a) = (splat(r), splat(a));
                        let kernel = Step::<$vector, true, EMA> { s, ops, r, a, grad, var, m, v, average, sums };
                        simd::dispatch(level, kernel)
                    }
                }
                n
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
dense_lanes_16!(half::bf16, Bf16x8);
#[cfg(target_arch = "x86_64")]
dense_lanes_16!(half::f16, F16x8);
#[cfg(not(target_arch = "x86_64"))]
impl DenseLanes for half::bf16 {}
#[cfg(not(target_arch = "x86_64"))]
impl DenseLanes for half::f16 {}

/// The step over whole vectors, as a kernel for [`simd::dispatch`] (at AVX2 or above).
#[cfg(target_arch = "x86_64")]
struct Step<'a, V: Vector16, const SCALE: bool, const EMA: bool> {
    s: StepScalars<V>,
    ops: VariableOps,
    r: Ftz<V>,
    a: Ftz<V>,
    grad: &'a [V::Element],
    var: &'a mut [V::Element],
    m: &'a mut [V::Element],
    v: &'a mut [V::Element],
    average: &'a mut [V::Element],
    sums: Option<&'a mut Squares>,
}

// A row of the report's groups is one vector.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(LANES == crate::squares::LANES && GROUP % LANES == 0);

#[cfg(target_arch = "x86_64")]
impl<V: Vector16, const SCALE: bool, const EMA: bool> Kernel for Step<'_, V, SCALE, EMA> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Step { s, ops, r, a, grad, var, m, v, average, sums } = self;
        let mut unused = V::ZERO;
        // Steps the vector at `i` and gives its gradient as given. A macro, not a closure:
        // everything here must inline into the function compiled for the SIMD level.
        macro_rules! step {
            ($i:expr) => {{
                let i = $i;
                let given = V::load(&grad[i..]);
                let mut g = Ftz::<V, HW>::new(given);
                if SCALE {
                    g = (g * r.mode()) * a.mode();
                }
                let (mut x, mut mt, mut vt) = (V::load(&var[i..]), V::load(&m[i..]), V::load(&v[i..]));
                let mut avg = if EMA { V::load(&average[i..]) } else { V::ZERO };
                dense_element::<V, false, EMA, HW>(&s, ops, g, &mut x, &mut mt, &mut vt, &mut unused, &mut avg);
                x.store(&mut var[i..]);
                mt.store(&mut m[i..]);
                vt.store(&mut v[i..]);
                if EMA {
                    avg.store(&mut average[i..]);
                }
                given
            }};
        }
        let Some(sums) = sums else {
            for i in (0..var.len()).step_by(LANES) {
                step!(i);
            }
            return;
        };
        for group in (0..var.len()).step_by(GROUP) {
            let mut lanes = [0f32; LANES];
            for row in (group..group + GROUP).step_by(LANES) {
                let given = step!(row).to_f32();
                add_row::<f32, HW>(&mut lanes, &row_squares::<f32, HW>(&given));
            }
            sums.add_group(&lanes);
        }
    }
}
