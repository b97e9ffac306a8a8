//! The dense step in vector lanes: thirty-two elements at a time in a [`Vector`], four AVX
//! registers at the AVX2 level and two AVX-512 registers at the AVX-512 levels, through the same
//! element function ([`dense_element`]) as every other loop, so the same formula and bits. At the
//! AVX-512 levels the 16-bit steps take two rows of 32 side by side ([`TwoRows`]), so that the
//! processor has a second chain of dependent operations at hand while one waits (8–12% faster
//! on a Zen 4).
//!
//! - **bfloat16 and float16**: always. Each rounded operation is one vector operation and an
//!   F16C round trip, five integer operations, or with AVX512_BF16 one conversion and two word
//!   permutations for both registers, instead of the portable rounding's dozen.
//! - **float32**: only when the step report sums the gradient's squares. The lanes then stay in
//!   registers from row to row ([`plus_square`]), where the compiler's loop would store each
//!   square and add it back; without the sums the compiler's loop runs (in cache it measured about
//!   a tenth faster than this one on a Zen 4, BENCHMARKS.md).
//! - **float64**: at the AVX-512 levels, a row in four registers ([`Doubles`]): 8–30% faster in
//!   cache than the compiler's AVX2 loop on a Zen 4, and the report's lanes stay in registers.
//!   At AVX2 a row would take eight of the sixteen registers, and the compiler's loop runs.
//!
//! It serves every form of the step: amsgrad (`tf.maximum` as a lane operation), EMA, and every
//! gradient op (a loss scale's unscaling, every clip; a value clip with bounds that are
//! numbers). The last elements short of a whole row (one vector, or two side by side) run the
//! compiler's loops at AVX2 and above (float32, float64), or the portable loops (16-bit).

#[cfg(target_arch = "x86_64")]
use crate::dtype::Shared;
#[cfg(target_arch = "x86_64")]
use crate::float::{
    Arith, Doubles, HARDWARE_FLUSH as HW, LANES, LaneElement, Pair, Registers, Vector, Ymm4, Zmm2, Zmm2Bf16,
};
use crate::float::{FlushToZero, Ftz, Lane, Real};
#[cfg(target_arch = "x86_64")]
use crate::kernels::dense_element;
use crate::kernels::{StepScalars, VariableOps};
#[cfg(target_arch = "x86_64")]
use crate::simd::Kernel;
use crate::simd::SimdLevel;
use crate::squares::Squares;
#[cfg(target_arch = "x86_64")]
use crate::squares::{GROUP, plus_square};
#[cfg(target_arch = "x86_64")]
use std::marker::PhantomData;

/// The gradient op of a step in vector lanes, in the forms of [`crate::kernels::GradientForm`]:
/// none; `(g * r) * a`; `clip(g * r, hi, lo)`; `clip(((g * r) * a) / d, hi, lo)`. The bounds of
/// a clip are numbers (`clip` is [`crate::float::Arith::clip_to`]; with such bounds it is the
/// fused op's `tf.minimum` and `tf.maximum`).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum LanesOp<F> {
    Identity,
    Scale(Ftz<F>, Ftz<F>),
    Clamp { r: Ftz<F>, hi: Ftz<F>, lo: Ftz<F> },
    Full { r: Ftz<F>, a: Ftz<F>, d: Ftz<F>, hi: Ftz<F>, lo: Ftz<F> },
}

/// The forms of [`LanesOp`], as the lanes kernel's compile-time parameter.
#[cfg(target_arch = "x86_64")]
mod form {
    pub(super) const IDENTITY: u8 = 0;
    pub(super) const SCALE: u8 = 1;
    pub(super) const CLAMP: u8 = 2;
    pub(super) const FULL: u8 = 3;
}

/// Element types whose dense step may run in vector lanes.
pub(crate) trait DenseLanes: Lane {
    /// Whether [`DenseLanes::dense_lanes`] takes every whole row at AVX2 and above, with or
    /// without `sums` (for a gradient op the lanes can run: every one but a value clip with a
    /// NaN bound).
    const ALWAYS_IN_LANES: bool = false;

    /// Whether the compiler-vectorized loops of this type (the dense step's, and the sparse
    /// step's over rows without a gradient) are compiled for AVX-512 as well as for AVX2. Only
    /// float32's are: its steps outside the lanes are the common ones (every float32 step
    /// without the report). float64's whole rows step in the lanes at the AVX-512 levels, and
    /// its AVX2 loops take the rest there too, with the same bits: less code (BENCHMARKS.md,
    /// "Code size"). (The 16-bit types step in the lanes.)
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const AVX512_LOOPS: bool = false;

    /// Runs the step over the longest prefix of whole rows it can (a row: one vector, or two
    /// side by side for the 16-bit types at AVX-512; none without a vector type, or below
    /// AVX2) and returns that prefix's length. Runs under flush-to-zero.
    /// `slots` are a variable's values, m, v, vhat (empty without amsgrad) and its EMA average
    /// (empty without EMA). With
    /// `sums`, also the report's squares of `grad` (`crate::squares`), and the prefix is whole
    /// groups (`grad` starts one).
    #[inline(always)]
    fn dense_lanes<const AMSGRAD: bool, const EMA: bool>(
        _s: &StepScalars<Self::Math>,
        _ops: VariableOps,
        _op: LanesOp<Self::Math>,
        _grad: &[Self],
        _slots: [&mut [Self]; 5],
        _level: SimdLevel,
        _sums: Option<&mut Squares>,
    ) -> usize {
        0
    }
}

// float64 runs in the lanes at the AVX-512 levels only, with or without the report's sums: a
// row of 32 float64 values takes four of AVX-512's 32 registers, where at AVX2 it would take
// eight of 16 and the step's values would not fit (the compiler's AVX2 loop runs there).
#[cfg(target_arch = "x86_64")]
impl DenseLanes for f64 {
    #[inline(always)]
    fn dense_lanes<const AMSGRAD: bool, const EMA: bool>(
        s: &StepScalars<f64>,
        ops: VariableOps,
        op: LanesOp<f64>,
        grad: &[f64],
        slots: [&mut [f64]; 5],
        level: SimdLevel,
        sums: Option<&mut Squares>,
    ) -> usize {
        match level.min(SimdLevel::detected()) {
            SimdLevel::Avx512 | SimdLevel::Avx512Bf16 => {
                lanes_in::<Zmm2, Doubles, _, AMSGRAD, EMA>(s, ops, op, grad, slots, sums, |x| x.get())
            }
            _ => 0,
        }
    }
}
#[cfg(not(target_arch = "x86_64"))]
impl DenseLanes for f64 {}

#[cfg(target_arch = "x86_64")]
macro_rules! dense_lanes {
    ($element:ty, |$x:ident| $as_f32:expr, only_with_sums: $only_with_sums:expr, avx512_loops: $avx512_loops:expr,
     avx512_rows: $rows:ident, avx512bf16: $avx512bf16:ty) => {
        impl DenseLanes for $element {
            const ALWAYS_IN_LANES: bool = !$only_with_sums;
            const AVX512_LOOPS: bool = $avx512_loops;

            #[inline(always)]
            fn dense_lanes<const AMSGRAD: bool, const EMA: bool>(
                s: &StepScalars<Self::Math>,
                ops: VariableOps,
                op: LanesOp<Self::Math>,
                grad: &[Self],
                slots: [&mut [Self]; 5],
                level: SimdLevel,
                sums: Option<&mut Squares>,
            ) -> usize {
                if $only_with_sums && sums.is_none() {
                    return 0;
                }
                let as_f32 = |$x: Ftz<Self::Math>| $as_f32;
                match level.min(SimdLevel::detected()) {
                    SimdLevel::Portable => 0,
                    SimdLevel::Avx2 => {
                        lanes_in::<Ymm4, OneRow<Ymm4, _>, _, AMSGRAD, EMA>(s, ops, op, grad, slots, sums, as_f32)
                    }
                    SimdLevel::Avx512 => {
                        lanes_in::<Zmm2, $rows<Zmm2, _>, _, AMSGRAD, EMA>(s, ops, op, grad, slots, sums, as_f32)
                    }
                    _ => lanes_in::<$avx512bf16, $rows<$avx512bf16, _>, _, AMSGRAD, EMA>(
                        s, ops, op, grad, slots, sums, as_f32,
                    ),
                }
            }
        }
    };
}
// float32 runs in the lanes with the report's sums only, at memory speed: one row at a time
// is enough, and half the code. With AVX2's 16 registers two rows side by side measured no
// faster (float16 slower: a row's values take four registers).
#[cfg(target_arch = "x86_64")]
dense_lanes!(f32, |x| x.get(), only_with_sums: true, avx512_loops: true, avx512_rows: OneRow, avx512bf16: Zmm2);
// Only bfloat16 has a step of its own at the AVX512_BF16 level (its roundings, loads and stores).
#[cfg(target_arch = "x86_64")]
dense_lanes!(half::bf16, |x| x.get().get(), only_with_sums: false, avx512_loops: false, avx512_rows: TwoRows,
    avx512bf16: Zmm2Bf16);
#[cfg(target_arch = "x86_64")]
dense_lanes!(half::f16, |x| x.get().get(), only_with_sums: false, avx512_loops: false, avx512_rows: TwoRows,
    avx512bf16: Zmm2);
#[cfg(not(target_arch = "x86_64"))]
impl DenseLanes for f32 {}
#[cfg(not(target_arch = "x86_64"))]
impl DenseLanes for half::bf16 {}
#[cfg(not(target_arch = "x86_64"))]
impl DenseLanes for half::f16 {}

/// [`DenseLanes::dense_lanes`] in registers `R`, whose level the processor has.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes_in<R: Registers, U: Rows<T>, T: Lane, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<T::Math>,
    ops: VariableOps,
    op: LanesOp<T::Math>,
    grad: &[T],
    slots: [&mut [T]; 5],
    sums: Option<&mut Squares>,
    as_scalar: impl Fn(Ftz<T::Math>) -> U::Scalar,
) -> usize {
    // Scalars go to the kernel as the lanes' scalar type (float32 or float64) and are splat
    // there: each becomes one broadcast into a register, where registers built here would be
    // copied through memory on every call (a master step calls this for every 1024 elements).
    debug_assert!(R::LEVEL <= SimdLevel::detected());
    let scalar = |x: Ftz<T::Math>| Ftz::<U::Scalar>::new(as_scalar(x));
    let s = s.map(scalar);
    let [var, m, v, vhat, average] = slots;
    let whole = if sums.is_some() { GROUP } else { U::ROWS * LANES };
    let n = var.len() / whole * whole;
    let (var, m, v) = (&mut var[..n], &mut m[..n], &mut v[..n]);
    let vhat = if AMSGRAD { &mut vhat[..n] } else { &mut vhat[..0] };
    let average = if EMA { &mut average[..n] } else { &mut average[..0] };
    let grad = &grad[..n];
    macro_rules! run {
        ($form:expr, $parts:expr) => {{
            let kernel = Step::<R, U, T, { $form }, AMSGRAD, EMA> {
                s,
                ops,
                parts: $parts,
                grad,
                var,
                m,
                v,
                vhat,
                average,
                sums,
                _registers: PhantomData,
            };
            // SAFETY: the caller checked the processor has `R::LEVEL`.
            unsafe { R::run(kernel) }
        }};
    }
    // The op's parts as the lanes' scalars, those its form leaves out neutral.
    let (one, inf) = (Ftz::<U::Scalar>::ONE, Ftz::<U::Scalar>::INFINITY);
    match op {
        LanesOp::Identity => run!(form::IDENTITY, [one, one, one, inf, -inf]),
        LanesOp::Scale(r, a) => run!(form::SCALE, [scalar(r), scalar(a), one, inf, -inf]),
        LanesOp::Clamp { r, hi, lo } => run!(form::CLAMP, [scalar(r), one, one, scalar(hi), scalar(lo)]),
        LanesOp::Full { r, a, d, hi, lo } => run!(form::FULL, [r, a, d, hi, lo].map(scalar)),
    }
    n
}

/// The rows a [`Step`] takes at a time: [`OneRow`], or [`TwoRows`] side by side (a [`Pair`]: the
/// two rows' chains of dependent operations, each a vector operation and a rounding, interleave
/// in the instruction stream, so the processor has independent work at hand); for float64 one
/// row of [`Doubles`].
#[cfg(target_arch = "x86_64")]
trait Rows<T>: Arith {
    const ROWS: usize;
    /// The type the lanes' scalars come as: float32, or float64 for [`Doubles`].
    type Scalar: Arith + Into<f64>;
    /// The report's group lanes, one per element of a row, in the [`Rows::Scalar`] type.
    type Sums: Arith;
    fn splat(x: Self::Scalar) -> Self;
    /// Rows `src[..ROWS]` (a signaling NaN quieted, [`Vector::load`]).
    fn load(src: &[[T; LANES]]) -> Self;
    /// Rows `src[..ROWS]` for arithmetic only ([`Vector::load_operand`]).
    fn load_operand(src: &[[T; LANES]]) -> Self;
    fn store(self, dst: &mut [[T; LANES]]);
    /// `lanes` plus the squares of each row, row after row ([`plus_square`]).
    fn plus_squares(self, lanes: Self::Sums) -> Self::Sums;
    /// The group lanes' values, lane `j` at index `j`.
    fn group_lanes(lanes: Self::Sums) -> [Self::Scalar; LANES];
}

#[cfg(target_arch = "x86_64")]
type OneRow<R, T> = Vector<R, T>;
#[cfg(target_arch = "x86_64")]
type TwoRows<R, T> = Pair<Vector<R, T>>;

#[cfg(target_arch = "x86_64")]
impl<R: Registers, T: LaneElement> Rows<T> for OneRow<R, T> {
    const ROWS: usize = 1;
    type Scalar = f32;
    type Sums = Vector<R, f32>;
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Vector::splat(x)
    }
    #[inline(always)]
    fn load(src: &[[T; LANES]]) -> Self {
        Vector::load(&src[0])
    }
    #[inline(always)]
    fn load_operand(src: &[[T; LANES]]) -> Self {
        Vector::load_operand(&src[0])
    }
    #[inline(always)]
    fn store(self, dst: &mut [[T; LANES]]) {
        Vector::store(self, &mut dst[0])
    }
    #[inline(always)]
    fn plus_squares(self, lanes: Vector<R, f32>) -> Vector<R, f32> {
        plus_square::<_, HW>(lanes, self.as_f32())
    }
    #[inline(always)]
    fn group_lanes(lanes: Vector<R, f32>) -> [f32; LANES] {
        lanes.lanes()
    }
}

#[cfg(target_arch = "x86_64")]
impl<R: Registers, T: LaneElement> Rows<T> for TwoRows<R, T> {
    const ROWS: usize = 2;
    type Scalar = f32;
    type Sums = Vector<R, f32>;
    #[inline(always)]
    fn splat(x: f32) -> Self {
        let one = Vector::splat(x);
        Pair(one, one)
    }
    #[inline(always)]
    fn load(src: &[[T; LANES]]) -> Self {
        Pair(Vector::load(&src[0]), Vector::load(&src[1]))
    }
    #[inline(always)]
    fn load_operand(src: &[[T; LANES]]) -> Self {
        Pair(Vector::load_operand(&src[0]), Vector::load_operand(&src[1]))
    }
    #[inline(always)]
    fn store(self, dst: &mut [[T; LANES]]) {
        self.0.store(&mut dst[0]);
        self.1.store(&mut dst[1]);
    }
    #[inline(always)]
    fn plus_squares(self, lanes: Vector<R, f32>) -> Vector<R, f32> {
        plus_square::<_, HW>(plus_square::<_, HW>(lanes, self.0.as_f32()), self.1.as_f32())
    }
    #[inline(always)]
    fn group_lanes(lanes: Vector<R, f32>) -> [f32; LANES] {
        lanes.lanes()
    }
}

#[cfg(target_arch = "x86_64")]
impl Rows<f64> for Doubles {
    const ROWS: usize = 1;
    type Scalar = f64;
    type Sums = Doubles;
    #[inline(always)]
    fn splat(x: f64) -> Self {
        Doubles::splat(x)
    }
    /// Bit for bit: every value but vhat's enters arithmetic first (as `Vector::load_operand`),
    /// and `tf.maximum` passes vhat's on as it is, as the scalar loop's float64 does.
    #[inline(always)]
    fn load(src: &[[f64; LANES]]) -> Self {
        Doubles::load(&src[0])
    }
    #[inline(always)]
    fn load_operand(src: &[[f64; LANES]]) -> Self {
        Doubles::load(&src[0])
    }
    #[inline(always)]
    fn store(self, dst: &mut [[f64; LANES]]) {
        Doubles::store(self, &mut dst[0])
    }
    #[inline(always)]
    fn plus_squares(self, lanes: Doubles) -> Doubles {
        plus_square::<_, HW>(lanes, self)
    }
    #[inline(always)]
    fn group_lanes(lanes: Doubles) -> [f64; LANES] {
        lanes.lanes()
    }
}

/// The step over whole vectors, `U::ROWS` rows at a time, as a kernel run at its registers'
/// level (`R::LEVEL`).
#[cfg(target_arch = "x86_64")]
struct Step<'a, R, U: Rows<T>, T, const FORM: u8, const AMSGRAD: bool, const EMA: bool> {
    s: StepScalars<U::Scalar>,
    ops: VariableOps,
    /// The gradient op's `[r, a, d, hi, lo]` ([`LanesOp`]), those its form leaves out neutral.
    parts: [Ftz<U::Scalar>; 5],
    grad: &'a [T],
    var: &'a mut [T],
    m: &'a mut [T],
    v: &'a mut [T],
    vhat: &'a mut [T],
    average: &'a mut [T],
    sums: Option<&'a mut Squares>,
    _registers: PhantomData<(R, U)>,
}

// A row of the report's groups is one vector, and a group is whole pairs of rows.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(LANES == crate::squares::LANES && GROUP.is_multiple_of(2 * LANES));

#[cfg(target_arch = "x86_64")]
impl<R: Registers, U: Rows<T>, T, const FORM: u8, const AMSGRAD: bool, const EMA: bool> Kernel
    for Step<'_, R, U, T, FORM, AMSGRAD, EMA>
{
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Step { s, ops, parts, grad, var, m, v, vhat, average, sums, _registers } = self;
        let splat = |x: Ftz<U::Scalar>| Ftz::<U>::new(U::splat(x.get()));
        let s = s.map(splat);
        // Each by hand, not `array::map`, which need not inline into the function compiled for
        // the level.
        let mode = |x: Ftz<U::Scalar>| splat(x).mode::<HW>();
        let (r, a, d, hi, lo) = (mode(parts[0]), mode(parts[1]), mode(parts[2]), mode(parts[3]), mode(parts[4]));
        // Rows of whole vectors, all of one length, a whole number of `U::ROWS` (checked once
        // here, so not per row).
        let (grad, var) = (grad.as_chunks::<LANES>().0, var.as_chunks_mut::<LANES>().0);
        let (m, v) = (m.as_chunks_mut::<LANES>().0, v.as_chunks_mut::<LANES>().0);
        let (vhat, average) = (vhat.as_chunks_mut::<LANES>().0, average.as_chunks_mut::<LANES>().0);
        let rows = var.len();
        assert!(rows.is_multiple_of(U::ROWS) && grad.len() == rows && m.len() == rows && v.len() == rows);
        assert!((!AMSGRAD || vhat.len() == rows) && (!EMA || average.len() == rows));
        // Steps the rows from `i` on and gives their gradient as given. A macro, not a
        // closure: everything here must inline into the function compiled for the SIMD level.
        macro_rules! step {
            ($i:expr) => {{
                let i = $i;
                // Every value but vhat's enters arithmetic before it is stored or returned (a
                // clip passes a NaN gradient on to `g - m`; `given` is squared), so it may load
                // with a signaling NaN left signaling. `tf.maximum` passes vhat's on as it is.
                let given = U::load_operand(&grad[i..]);
                let g = Ftz::<U, HW>::new(given);
                let g = match FORM {
                    form::SCALE => (g * r) * a,
                    form::CLAMP => (g * r).clip_to(hi, lo),
                    form::FULL => (((g * r) * a) / d).clip_to(hi, lo),
                    _ => g,
                };
                let (mut x, mut mt, mut vt) =
                    (U::load_operand(&var[i..]), U::load_operand(&m[i..]), U::load_operand(&v[i..]));
                let mut vh = if AMSGRAD { U::load(&vhat[i..]) } else { U::ZERO };
                let mut avg = if EMA { U::load_operand(&average[i..]) } else { U::ZERO };
                dense_element::<U, AMSGRAD, EMA, HW>(&s, ops, g, &mut x, &mut mt, &mut vt, &mut vh, &mut avg);
                x.store(&mut var[i..]);
                mt.store(&mut m[i..]);
                vt.store(&mut v[i..]);
                if EMA {
                    avg.store(&mut average[i..]);
                }
                if AMSGRAD {
                    vh.store(&mut vhat[i..]);
                }
                given
            }};
        }
        let Some(sums) = sums else {
            for i in (0..rows).step_by(U::ROWS) {
                step!(i);
            }
            return;
        };
        const ROWS_PER_GROUP: usize = GROUP / LANES;
        for group in (0..rows).step_by(ROWS_PER_GROUP) {
            let mut lanes = U::Sums::ZERO;
            for row in (group..group + ROWS_PER_GROUP).step_by(U::ROWS) {
                lanes = step!(row).plus_squares(lanes);
            }
            sums.add_group(&U::group_lanes(lanes));
        }
    }
}

/// Widens a master step's gradient piece `src` exactly into `dst` (as long) and adds the squares
/// of the widened values into `sums` (the report's order, `crate::squares`; `src` starts a group
/// of its task), in one pass: the whole groups in vector lanes at AVX2 and above (each row's
/// squares added into 32 float32 lanes held in registers, as the step's own vector loops do),
/// the rest as [`Squares::add`] does. The step then runs without the sums, in the compiler's
/// loop, which is faster in cache than the vector loop (`lanes.rs`' float32 note).
pub(crate) fn widen_summed<G: Real>(src: &[G], dst: &mut [f32], sums: &mut Squares, level: SimdLevel) {
    let simd = level > SimdLevel::Portable;
    let _flush = FlushToZero::new();
    let whole = widened_groups_in_lanes(src, dst, sums, level);
    if whole < src.len() {
        G::widen_slice(&src[whole..], &mut dst[whole..], simd); // exact for every 16-bit value
        sums.add(&dst[whole..], simd);
    }
}

/// The whole groups of [`widen_summed`] in vector lanes, where the level and type allow: their
/// length (0 where not).
#[cfg(target_arch = "x86_64")]
fn widened_groups_in_lanes<G: Real>(src: &[G], dst: &mut [f32], sums: &mut Squares, level: SimdLevel) -> usize {
    let whole = src.len() / GROUP * GROUP;
    let tensor = G::wrap::<Shared<'_>>(&src[..whole]);
    let dst = &mut dst[..whole];
    macro_rules! run {
        ($src:expr) => {
            match level.min(SimdLevel::detected()) {
                SimdLevel::Portable => return 0,
                // SAFETY: the processor has the level (`min` with the detected one).
                SimdLevel::Avx2 => unsafe {
                    Ymm4::run(WidenSummed::<Ymm4, _> { src: $src, dst, sums, _registers: PhantomData })
                },
                // SAFETY: as above (the AVX512_BF16 level has AVX-512's features).
                _ => unsafe { <Zmm2>::run(WidenSummed::<Zmm2, _> { src: $src, dst, sums, _registers: PhantomData }) },
            }
        };
    }
    if let Some(src) = tensor.typed::<half::bf16>() {
        run!(src)
    } else if let Some(src) = tensor.typed::<half::f16>() {
        run!(src)
    } else if let Some(src) = tensor.typed::<f32>() {
        run!(src)
    } else {
        return 0;
    }
    whole
}

#[cfg(not(target_arch = "x86_64"))]
fn widened_groups_in_lanes<G: Real>(_: &[G], _: &mut [f32], _: &mut Squares, _: SimdLevel) -> usize {
    0
}

/// [`widen_summed`]'s whole groups, as a kernel run at its registers' level (`R::LEVEL`).
#[cfg(target_arch = "x86_64")]
struct WidenSummed<'a, R, T> {
    src: &'a [T],
    dst: &'a mut [f32],
    sums: &'a mut Squares,
    _registers: PhantomData<R>,
}

#[cfg(target_arch = "x86_64")]
impl<R: Registers, T: LaneElement> Kernel for WidenSummed<'_, R, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let WidenSummed { src, dst, sums, _registers } = self;
        let (src, dst) = (src.as_chunks::<LANES>().0, dst.as_chunks_mut::<LANES>().0);
        assert!(src.len() == dst.len() && src.len().is_multiple_of(GROUP / LANES));
        for (src, dst) in src.chunks_exact(GROUP / LANES).zip(dst.chunks_exact_mut(GROUP / LANES)) {
            let mut lanes = Vector::<R, f32>::ZERO;
            for (src, dst) in src.iter().zip(dst) {
                // Not quieted: the step only computes with the widened gradient, and so does
                // the square (`load_operand`); quieting took a third of this loop's time.
                let x = Vector::<R, T>::load_operand(src).as_f32();
                x.store(dst);
                lanes = plus_square::<_, HW>(lanes, x);
            }
            sums.add_group(&lanes.lanes());
        }
    }
}
