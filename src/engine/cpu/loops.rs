//! The CPU engine's loops: the element functions of `kernels` run over a variable's slices.
//!
//! - **Vectorized**: the loops are written so that the compiler vectorizes them (equal-length
//!   slices, the clip mode and the amsgrad / EMA modes as compile-time parameters), compiled
//!   for AVX2 and portably, and float32's for AVX-512 too, picked at run time (on x86-64 the
//!   portable loops are a fallback, compiled for one gradient op form). Vector IEEE division and
//!   square root round like scalar ones and nothing is fused, so every path gives the same bits
//!   (tested with the SIMD paths switched off).
//! - **Parallel**: a pass over more than `CHUNK` elements is cut into tasks of `CHUNK` elements
//!   or more, by its length alone, which [`Workers`] runs (the calling thread, the pool, or the
//!   caller's hook); the dense updates of a call's variables are one run over all of them, cut
//!   into tasks of equal lengths (`super::batch`). The elements are independent, so whoever
//!   runs the tasks never changes a bit.
//! - **Flush-to-zero**: on x86-64 each loop runs under a [`FlushToZero`] guard, the processor
//!   mode TF's kernels run in, and the element functions skip their explicit flushes (`HW`).
//! - Nothing here allocates.

use super::lanes::{DenseLanes, LanesOp, widen_summed};
use crate::float::{Arith, FlushToZero, Ftz, HARDWARE_FLUSH as HW, Lane, Real};
use crate::kernels::{
    FusedGradientOp, GradientForm, GradientOp, StepScalars, VariableOps, clamp, dense_element, sparse_element,
};
use crate::parallel::{Disjoint, Workers};
use crate::simd::{self, SimdLevel as Isa, set_simd_level, simd_level};
use crate::squares::{GROUP, Squares, square, total_of_tasks};

/// Variables up to this many elements are one task (run on the calling thread, no hand-off);
/// larger ones are cut into tasks of this many elements or more. Measured with `cargo bench --bench quick`
/// (2 threads, G params/s at 64K / 1M): 2^13 gave 3.4 / 3.8, 2^15 gave 7.4 / 6.8, 2^17 gave
/// 7.6 / 6.2; smaller chunks cost more in hand-offs than the second core gains.
pub(crate) const CHUNK: usize = 1 << 15;

/// The most tasks a pass over one variable is cut into: larger variables get longer tasks, so
/// that the per-task costs (a claim, a flush-mode switch) stay negligible and a run's claim
/// flags stay a few words. (Two tasks or 512 for 16M elements measured the same.)
pub(crate) const MAX_TASKS: usize = 256;

/// Elements per task of a pass over `n` elements: by the length alone, a multiple of the
/// report's groups (`crate::squares::GROUP`, 512), so that every group of the report's order
/// starts at a multiple of 512 of the variable (the device engine's report relies on it).
pub(crate) fn task_len(n: usize) -> usize {
    CHUNK.max(n.div_ceil(MAX_TASKS).next_multiple_of(GROUP))
}

/// The tasks a pass over `n` elements is cut into: one up to `CHUNK` elements.
pub(crate) fn task_count(n: usize) -> usize {
    if n > CHUNK { n.div_ceil(task_len(n)) } else { 1 }
}

/// The elements of task `task` of a pass over `n` (tasks of [`task_count`]).
pub(crate) fn task_range(n: usize, task: usize) -> (usize, usize) {
    let len = task_len(n);
    ((task * len).min(n), ((task + 1) * len).min(n))
}

/// Runs `pass(start, end)` over the tasks of a pass over `n` elements.
pub(crate) fn for_each_task(workers: &Workers, n: usize, pass: &(dyn Fn(usize, usize) + Sync)) {
    workers.run(task_count(n), &|task| {
        let (start, end) = task_range(n, task);
        pass(start, end)
    });
}

/// Turns the SIMD code paths off (or back on) for the whole process: the portable loops then
/// run everywhere (see [`crate::simd::set_simd_level`], which can also pick a level between).
pub fn set_simd_enabled(enabled: bool) {
    set_simd_level(if enabled { None } else { Some(Isa::Portable) });
}

/// Whether loops above the portable level run (see [`set_simd_enabled`]).
pub(crate) fn simd_enabled() -> bool {
    simd_level() > Isa::Portable
}

/// A variable's values (`var`) and its optimizer slots, all of one length; `vhat` and `average`
/// are empty when amsgrad / EMA are off.
pub struct SlotSlices<'a, F> {
    pub var: &'a mut [F],
    pub m: &'a mut [F],
    pub v: &'a mut [F],
    pub vhat: &'a mut [F],
    pub average: &'a mut [F],
}

fn split_slot<F>(slot: &mut [F], mid: usize) -> (&mut [F], &mut [F]) {
    if slot.is_empty() { (slot, Default::default()) } else { slot.split_at_mut(mid) }
}

impl<'a, F> SlotSlices<'a, F> {
    fn len(&self) -> usize {
        self.var.len()
    }

    /// The slices, for tasks that each take their own range.
    fn shared(self) -> SharedSlots<'a, F> {
        SharedSlots {
            var: Disjoint::new(self.var),
            m: Disjoint::new(self.m),
            v: Disjoint::new(self.v),
            vhat: Disjoint::new(self.vhat),
            average: Disjoint::new(self.average),
        }
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (var_l, var_r) = self.var.split_at_mut(mid);
        let (m_l, m_r) = self.m.split_at_mut(mid);
        let (v_l, v_r) = self.v.split_at_mut(mid);
        let (vhat_l, vhat_r) = split_slot(self.vhat, mid);
        let (avg_l, avg_r) = split_slot(self.average, mid);
        (
            SlotSlices { var: var_l, m: m_l, v: v_l, vhat: vhat_l, average: avg_l },
            SlotSlices { var: var_r, m: m_r, v: v_r, vhat: vhat_r, average: avg_r },
        )
    }

    fn reborrow(&mut self) -> SlotSlices<'_, F> {
        SlotSlices { var: self.var, m: self.m, v: self.v, vhat: self.vhat, average: self.average }
    }

    /// Elements `start..end` of every lane (an empty slot stays empty).
    fn sub(&mut self, start: usize, end: usize) -> SlotSlices<'_, F> {
        SlotSlices {
            var: &mut self.var[start..end],
            m: &mut self.m[start..end],
            v: &mut self.v[start..end],
            vhat: if self.vhat.is_empty() { &mut [] } else { &mut self.vhat[start..end] },
            average: if self.average.is_empty() { &mut [] } else { &mut self.average[start..end] },
        }
    }

    fn amsgrad(&self) -> bool {
        !self.vhat.is_empty()
    }

    fn ema(&self) -> bool {
        !self.average.is_empty()
    }
}

/// [`SlotSlices`] shared by the tasks of one pass.
struct SharedSlots<'a, F> {
    var: Disjoint<'a, F>,
    m: Disjoint<'a, F>,
    v: Disjoint<'a, F>,
    vhat: Disjoint<'a, F>,
    average: Disjoint<'a, F>,
}

impl<'a, F> SharedSlots<'a, F> {
    /// Elements `start..end` of every slot (an empty slot stays empty).
    ///
    /// # Safety
    /// As [`Disjoint::range`]: the ranges of live results do not overlap.
    unsafe fn sub(&self, start: usize, end: usize) -> SlotSlices<'a, F> {
        // SAFETY: the caller's contract, for every slot alike.
        unsafe {
            SlotSlices {
                var: self.var.range(start, end),
                m: self.m.range(start, end),
                v: self.v.range(start, end),
                vhat: self.vhat.range(start, end),
                average: self.average.range(start, end),
            }
        }
    }
}

/// One element's values and slots in the type the loops compute with: loaded from the
/// slices before the element functions run and stored back after (both exact, and free for
/// float32 and float64). `vhat` and `average` are touched only when amsgrad / EMA are on.
struct Element<F: Lane> {
    var: F::Math,
    m: F::Math,
    v: F::Math,
    vhat: F::Math,
    average: F::Math,
}

impl<F: Lane> Element<F> {
    #[inline(always)]
    fn load<const AMSGRAD: bool, const EMA: bool>(
        var: &[F],
        m: &[F],
        v: &[F],
        vhat: &[F],
        average: &[F],
        i: usize,
    ) -> Self {
        Element {
            var: var[i].load(),
            m: m[i].load(),
            v: v[i].load(),
            vhat: if AMSGRAD { vhat[i].load() } else { F::Math::ZERO },
            average: if EMA { average[i].load() } else { F::Math::ZERO },
        }
    }

    #[inline(always)]
    fn store<const AMSGRAD: bool, const EMA: bool>(
        &self,
        var: &mut [F],
        m: &mut [F],
        v: &mut [F],
        vhat: &mut [F],
        average: &mut [F],
        i: usize,
    ) {
        var[i] = F::store(self.var);
        m[i] = F::store(self.m);
        v[i] = F::store(self.v);
        if AMSGRAD {
            vhat[i] = F::store(self.vhat);
        }
        if EMA {
            average[i] = F::store(self.average);
        }
    }
}

/// A gradient op (unscale, clip) fixed at compile time when it is the identity, so the plain
/// loops carry no per-element branch for it.
trait ClipOp<F: Arith>: Copy + Send + Sync {
    fn apply<const H: bool>(self, g: Ftz<F, H>) -> Ftz<F, H>;

    /// The op as a [`GradientForm`] (whose [`GradientForm::fused`] the fallback loops run).
    fn form(self) -> GradientForm<F>;

    /// Whether the op leaves every gradient as it is, so that a loop may skip it.
    fn is_identity(self) -> bool {
        matches!(self.form(), GradientForm::Identity)
    }

    /// The op for the vector-lane loops, if they can run it: never unless `IN_LANES`, and
    /// then for every value of the op but a NaN bound.
    fn lanes_op(self) -> Option<LanesOp<F>> {
        None
    }
    /// Whether the vector-lane loops can run this op.
    const IN_LANES: bool = false;

    /// Whether the SIMD loops of this op sum the report's squares. The update pass sums them
    /// only when no clip norm computes the norms, so the full fused op (a norm clip's form)
    /// meets them only with a value clip whose bounds are NaN: the portable loop runs that, and
    /// this form's SIMD loops carry no summing copy.
    const SUMS_IN_SIMD: bool = true;
}

#[derive(Clone, Copy)]
struct NoClip;
/// [`GradientForm::Scale`].
#[derive(Clone, Copy)]
struct Scaled<F> {
    r: Ftz<F>,
    a: Ftz<F>,
}
/// [`GradientForm::Clamp`].
#[derive(Clone, Copy)]
struct Clamped<F> {
    r: Ftz<F>,
    hi: Ftz<F>,
    lo: Ftz<F>,
}
#[derive(Clone, Copy)]
struct Fixed<F>(FusedGradientOp<F>);

impl<F: Arith> ClipOp<F> for NoClip {
    #[inline(always)]
    fn apply<const H: bool>(self, g: Ftz<F, H>) -> Ftz<F, H> {
        g
    }

    fn form(self) -> GradientForm<F> {
        GradientForm::Identity
    }

    fn lanes_op(self) -> Option<LanesOp<F>> {
        Some(LanesOp::Identity)
    }
    const IN_LANES: bool = true;
}

impl<F: Arith> ClipOp<F> for Scaled<F> {
    #[inline(always)]
    fn apply<const H: bool>(self, g: Ftz<F, H>) -> Ftz<F, H> {
        (g * self.r.mode()) * self.a.mode()
    }

    fn form(self) -> GradientForm<F> {
        GradientForm::Scale { r: self.r, a: self.a }
    }

    fn lanes_op(self) -> Option<LanesOp<F>> {
        Some(LanesOp::Scale(self.r, self.a))
    }
    const IN_LANES: bool = true;
}

impl<F: Arith> ClipOp<F> for Clamped<F> {
    #[inline(always)]
    fn apply<const H: bool>(self, g: Ftz<F, H>) -> Ftz<F, H> {
        clamp(g * self.r.mode(), self.hi.mode(), self.lo.mode())
    }

    fn lanes_op(self) -> Option<LanesOp<F>> {
        Some(LanesOp::Clamp { r: self.r, hi: self.hi, lo: self.lo })
    }
    const IN_LANES: bool = true;

    fn form(self) -> GradientForm<F> {
        GradientForm::Clamp { r: self.r, hi: self.hi, lo: self.lo }
    }
}

impl<F: Arith> ClipOp<F> for Fixed<F> {
    #[inline(always)]
    fn apply<const H: bool>(self, g: Ftz<F, H>) -> Ftz<F, H> {
        self.0.apply(g)
    }

    /// `((g * 1) * 1) / 1` within `[-inf, inf]` is `g` (`fused_gradient_ops_are_the_ops`).
    fn is_identity(self) -> bool {
        let [r, a, d, hi, lo] = self.0.parts().map(|x| x.get());
        [r, a, d] == [F::ONE; 3] && hi == F::INFINITY && lo == -F::INFINITY
    }

    /// In lanes only with bounds that are numbers (every norm clip; a value clip with a NaN
    /// bound makes every gradient NaN, and the portable loop runs it).
    fn lanes_op(self) -> Option<LanesOp<F>> {
        let [r, a, d, hi, lo] = self.0.parts();
        (!hi.get().is_nan() && !lo.get().is_nan()).then_some(LanesOp::Full { r, a, d, hi, lo })
    }
    const IN_LANES: bool = true;

    const SUMS_IN_SIMD: bool = false;

    fn form(self) -> GradientForm<F> {
        GradientForm::Full(self.0)
    }
}

/// Calls `$call` with the monomorphized loop for the gradient op's form (`$c`) and the amsgrad /
/// EMA modes (`$a`, `$e`). With `fused:`, the full fused op for every form (the same bits,
/// `fused_gradient_ops_are_the_ops`), for loops where the op is not the cost and each form would
/// be one more copy of the loop.
macro_rules! with_modes {
    ($op:expr, $slots:expr, |$c:ident, $a:ident, $e:ident| $call:expr) => {{
        match $op.form() {
            GradientForm::Identity => with_modes!(@slots NoClip, $slots, |$c, $a, $e| $call),
            GradientForm::Scale { r, a } => with_modes!(@slots Scaled { r, a }, $slots, |$c, $a, $e| $call),
            GradientForm::Clamp { r, hi, lo } => {
                with_modes!(@slots Clamped { r, hi, lo }, $slots, |$c, $a, $e| $call)
            }
            GradientForm::Full(fused) => with_modes!(@slots Fixed(fused), $slots, |$c, $a, $e| $call),
        }
    }};
    (fused: $op:expr, $slots:expr, |$c:ident, $a:ident, $e:ident| $call:expr) => {{
        with_modes!(@slots Fixed($op.fused()), $slots, |$c, $a, $e| $call)
    }};
    (@slots $cc:expr, $slots:expr, |$c:ident, $a:ident, $e:ident| $call:expr) => {
        match ($slots.amsgrad(), $slots.ema()) {
            (false, false) => {
                let $c = $cc;
                const $a: bool = false;
                const $e: bool = false;
                $call
            }
            (true, false) => {
                let $c = $cc;
                const $a: bool = true;
                const $e: bool = false;
                $call
            }
            (false, true) => {
                let $c = $cc;
                const $a: bool = false;
                const $e: bool = true;
                $call
            }
            (true, true) => {
                let $c = $cc;
                const $a: bool = true;
                const $e: bool = true;
                $call
            }
        }
    };
}

/// The dense step over a whole variable with the step report's sum of squares of `grad`
/// (`crate::squares`), each element squared as it is stepped: no extra pass over memory. The
/// sums follow the variable's own tasks, so it is stepped alone (a [`DensePart`] without them).
#[allow(clippy::too_many_arguments)]
pub fn dense_step_with_squares<F: Real + DenseLanes>(
    s: &StepScalars<F>,
    ops: VariableOps,
    op: GradientOp<F>,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    workers: &Workers,
    squares: &mut f64,
) {
    assert_eq!(grad.len(), slots.len(), "gradient and variable lengths are checked before the step");
    let isa = simd_level();
    let s = &s.to_math();
    *squares = with_modes!(op.to_math(), slots, |c, A, E| in_tasks(
        workers,
        grad.len(),
        &|start, end, slots: &SharedSlots<'_, F>| {
            let mut sums = Squares::default();
            // SAFETY: each task takes its own range.
            let slots = unsafe { slots.sub(start, end) };
            dense_dispatch::<F, _, A, E>(s, ops, c, &grad[start..end], slots, isa, Some(&mut sums));
            sums.total()
        },
        slots,
    ));
}

/// One variable's dense step (decay, moments, update, EMA, in one pass) as a part of a run
/// over many variables (`super::batch`): the elements are independent, so any range of them
/// steps alone with the same bits.
pub(crate) struct DensePart<'a, F> {
    s: &'a StepScalars<F>,
    ops: VariableOps,
    op: GradientOp<F>,
    grad: &'a [F],
    slots: SharedSlots<'a, F>,
}

impl<'a, F: Real + DenseLanes> DensePart<'a, F> {
    pub fn new(
        s: &'a StepScalars<F>,
        ops: VariableOps,
        op: GradientOp<F>,
        grad: &'a [F],
        slots: SlotSlices<'a, F>,
    ) -> Self {
        assert_eq!(grad.len(), slots.len(), "gradient and variable lengths are checked before the step");
        DensePart { s, ops, op, grad, slots: slots.shared() }
    }

    pub fn len(&self) -> usize {
        self.grad.len()
    }

    /// Steps elements `start..end` at the SIMD level `isa`.
    ///
    /// # Safety
    /// No two calls in flight at once step overlapping ranges.
    pub unsafe fn step(&self, start: usize, end: usize, isa: Isa) {
        // SAFETY: the caller's contract.
        let slots = unsafe { self.slots.sub(start, end) };
        dense_piece(self.s, self.ops, self.op, &self.grad[start..end], slots, isa, None)
    }
}

/// The dense step of a piece of a task on the calling thread. With `sums`, also the report's
/// squares of `grad`, added into the task's sums: `grad` starts a group of the task, and is the
/// task's last piece or whole groups.
fn dense_piece<F: Real + DenseLanes>(
    s: &StepScalars<F>,
    ops: VariableOps,
    op: GradientOp<F>,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    isa: Isa,
    sums: Option<&mut Squares>,
) {
    let s = &s.to_math();
    with_modes!(op.to_math(), slots, |c, A, E| dense_dispatch::<F, _, A, E>(s, ops, c, grad, slots, isa, sums))
}

const _: () = assert!(WIDEN.is_multiple_of(GROUP) && PIECE == GROUP && CHUNK.is_multiple_of(GROUP));

/// Runs `task(start, end, slots)` over the tasks of a pass over the slots and returns the sum of
/// the tasks' results in task order, from 0 (`crate::squares::total_of_tasks`).
fn in_tasks<F: Send>(
    workers: &Workers,
    n: usize,
    task: &(dyn Fn(usize, usize, &SharedSlots<'_, F>) -> f64 + Sync),
    slots: SlotSlices<'_, F>,
) -> f64 {
    let tasks = task_count(n);
    let slots = slots.shared();
    if tasks == 1 {
        return total_of_tasks(&[task(0, n, &slots)]); // on the calling thread, no hand-off
    }
    let mut totals = [0f64; MAX_TASKS];
    let totals_out = Disjoint::new(&mut totals[..tasks]);
    workers.run(tasks, &|t| {
        let (start, end) = task_range(n, t);
        let total = task(start, end, &slots);
        // SAFETY: task t writes only its own total.
        let out = unsafe { totals_out.range(t, t + 1) };
        out[0] = total;
    });
    total_of_tasks(&totals[..tasks])
}

/// Declares a function that runs the loop `$body` compiled for `$feature`.
macro_rules! isa_variant {
    ($name:ident, $feature:literal, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        /// # Safety
        /// The CPU must support the target features (checked by `SimdLevel::detected`).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>($($arg: $ty),*) {
            $body::<F, C, AMSGRAD, EMA>($($arg),*)
        }
    };
}

isa_variant!(dense_avx512, "avx512f,avx512bw,avx512vl,avx2,f16c", dense_simd, (s: &StepScalars<F::Math>, ops: VariableOps, clip: C, grad: &[F], slots: SlotSlices<'_, F>, sums: Option<&mut Squares>));
isa_variant!(dense_avx2, "avx2,f16c", dense_simd, (s: &StepScalars<F::Math>, ops: VariableOps, clip: C, grad: &[F], slots: SlotSlices<'_, F>, sums: Option<&mut Squares>));

/// The dense step of one task (or a piece of one) at the SIMD level `isa`, under
/// flush-to-zero. With `sums`, also the report's squares of `grad` (`crate::squares`): `grad`
/// starts a group of the task, and is the task's last piece or whole groups.
// Not inlined: a copy per caller (a piece of a run, a task with the report's sums) costs a
// static program hundreds of kilobytes; the call is once per piece.
#[inline(never)]
fn dense_dispatch<F: Real + DenseLanes, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    isa: Isa,
    mut sums: Option<&mut Squares>,
) {
    let _flush = FlushToZero::new();
    let in_lanes = match clip.lanes_op() {
        Some(op) => {
            let lanes = [&mut *slots.var, &mut *slots.m, &mut *slots.v, &mut *slots.vhat, &mut *slots.average];
            F::dense_lanes::<AMSGRAD, EMA>(s, ops, op, grad, lanes, isa, sums.as_deref_mut())
        }
        _ => 0,
    };
    let (grad, slots) = if in_lanes > 0 { (&grad[in_lanes..], slots.split_at(in_lanes).1) } else { (grad, slots) };
    if F::ALWAYS_IN_LANES && C::IN_LANES {
        // At AVX2 and above the vector lanes took every whole row (of one or two vectors, every
        // whole group with `sums`): what is left is shorter, and the portable loop runs it. So no SIMD copy of
        // this mode's dense loop is compiled at all.
        return dense_fallback::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums);
    }
    if !C::SUMS_IN_SIMD && sums.is_some() {
        return dense_fallback::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums);
    }
    match isa {
        // SAFETY: `simd_level` returns these only after the CPU reported the feature.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 if F::AVX512_LOOPS => unsafe {
            dense_avx512::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums)
        },
        // SAFETY: as above (the AVX-512 levels include AVX2 and F16C).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Avx2 => unsafe {
            dense_avx2::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums)
        },
        _ => dense_fallback::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums),
    }
}

/// Whether the portable loops are a fallback only: on x86-64 the SIMD levels run every step
/// but the last elements of a 16-bit one's vectors, and machines without AVX2.
const PORTABLE_IS_FALLBACK: bool = cfg!(target_arch = "x86_64");

/// The portable dense loop. Where it is a fallback only, it is compiled for one gradient op,
/// the fused one (the same bits, `gradient_forms_are_the_ops`), not for each form: a fourth of
/// the code of a static program's step loops, for a few elements a step.
#[inline(always)]
fn dense_fallback<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    sums: Option<&mut Squares>,
) {
    if PORTABLE_IS_FALLBACK {
        dense_portable_fused::<F, AMSGRAD, EMA>(s, ops, clip.form().fused(), grad, slots, sums)
    } else {
        dense_chunk::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums)
    }
}

/// [`dense_chunk`] with the fused op: one copy per type and amsgrad / EMA mode.
#[inline(never)]
fn dense_portable_fused<F: Lane, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    fused: FusedGradientOp<F::Math>,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    sums: Option<&mut Squares>,
) {
    dense_chunk::<F, Fixed<F::Math>, AMSGRAD, EMA>(s, ops, Fixed(fused), grad, slots, sums)
}

/// The dense loop of the SIMD levels: with the report's sums only for an op whose SIMD loops
/// sum them (`ClipOp::SUMS_IN_SIMD`; `dense_dispatch` sends the others to the portable loop).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn dense_simd<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    sums: Option<&mut Squares>,
) {
    let sums = if C::SUMS_IN_SIMD { sums } else { None };
    dense_chunk::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums)
}

/// Elements of a 16-bit slice widened at a time (`Lane::WIDEN_PIECES`): six buffers on the
/// stack. One group of the report's sums, so that each piece starts one.
const PIECE: usize = GROUP;

/// The dense loop over one chunk, a piece at a time for a type that widens pieces first.
#[inline(always)]
fn dense_chunk<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    mut sums: Option<&mut Squares>,
) {
    if !F::WIDEN_PIECES {
        return dense_loop::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, slots, sums);
    }
    let simd = simd_enabled();
    let SlotSlices { var, m, v, vhat, average } = slots;
    let zero = F::Piece::store(F::Math::ZERO);
    let [mut g, mut x, mut mp, mut vp, mut vh, mut avg] = [[zero; PIECE]; 6];
    for start in (0..var.len()).step_by(PIECE) {
        let end = (start + PIECE).min(var.len());
        let k = end - start;
        F::widen_piece(&grad[start..end], &mut g[..k], simd);
        F::widen_piece(&var[start..end], &mut x[..k], simd);
        F::widen_piece(&m[start..end], &mut mp[..k], simd);
        F::widen_piece(&v[start..end], &mut vp[..k], simd);
        if AMSGRAD {
            F::widen_piece(&vhat[start..end], &mut vh[..k], simd);
        }
        if EMA {
            F::widen_piece(&average[start..end], &mut avg[..k], simd);
        }
        let piece = SlotSlices {
            var: &mut x[..k],
            m: &mut mp[..k],
            v: &mut vp[..k],
            vhat: if AMSGRAD { &mut vh[..k] } else { &mut [] },
            average: if EMA { &mut avg[..k] } else { &mut [] },
        };
        dense_loop::<F::Piece, C, AMSGRAD, EMA>(s, ops, clip, &g[..k], piece, sums.as_deref_mut());
        F::narrow_piece(&x[..k], &mut var[start..end], simd);
        F::narrow_piece(&mp[..k], &mut m[start..end], simd);
        F::narrow_piece(&vp[..k], &mut v[start..end], simd);
        if AMSGRAD {
            F::narrow_piece(&vh[..k], &mut vhat[start..end], simd);
        }
        if EMA {
            F::narrow_piece(&avg[..k], &mut average[start..end], simd);
        }
    }
}

/// The dense loop over one chunk: equal-length slices, no branch that varies per element.
/// With `sums`, each element's gradient is squared into its group lane as it is stepped
/// (`crate::squares`; the chunk starts a group, and is the task's last or whole groups).
#[inline(always)]
fn dense_loop<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    grad: &[F],
    slots: SlotSlices<'_, F>,
    sums: Option<&mut Squares>,
) {
    let SlotSlices { var, m, v, vhat, average } = slots;
    let n = var.len();
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    let vhat = if AMSGRAD { &mut vhat[..n] } else { &mut vhat[..0] };
    let average = if EMA { &mut average[..n] } else { &mut average[..0] };
    let Some(sums) = sums else {
        for i in 0..n {
            step_element::<F, C, AMSGRAD, EMA>(s, ops, clip, grad, var, m, v, vhat, average, i);
        }
        return;
    };
    // Each group is stepped by the plain loop, which also writes each gradient's square to a
    // buffer in the first-level cache; the squares are then added into the group's lanes. (A
    // loop that added them into the lanes itself would carry the lanes through memory from row
    // to row, and run a fifth slower.)
    let mut group_squares = [<F::Square as Arith>::ZERO; GROUP];
    for group in (0..n).step_by(GROUP) {
        let end = (group + GROUP).min(n);
        let r = group..end;
        let (g, x, mr, vr) = (&grad[r.clone()], &mut var[r.clone()], &mut m[r.clone()], &mut v[r.clone()]);
        let vh = if AMSGRAD { &mut vhat[r.clone()] } else { &mut vhat[..0] };
        let avg = if EMA { &mut average[r] } else { &mut average[..0] };
        let squares = &mut group_squares[..end - group];
        step_squaring::<F, C, AMSGRAD, EMA>(s, ops, clip, g, x, mr, vr, vh, avg, squares);
        sums.add_group_squares::<_, HW>(squares);
    }
}

/// The plain loop over a group, each gradient's square (`crate::squares::square`) written to
/// `squares`. A function of its own, each slice a reference argument, so that the compiler
/// knows they do not overlap.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_squaring<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    grad: &[F],
    var: &mut [F],
    m: &mut [F],
    v: &mut [F],
    vhat: &mut [F],
    average: &mut [F],
    squares: &mut [F::Square],
) {
    let n = var.len();
    let (grad, m, v, squares) = (&grad[..n], &mut m[..n], &mut v[..n], &mut squares[..n]);
    // The loop taken apart on the decay flag by hand (the compiler does it for the plain loop,
    // not for this one inside the groups' loop): a constant flag leaves no branch per element.
    macro_rules! squaring_loop {
        ($ops:expr) => {
            for i in 0..n {
                let given = step_element::<F, C, AMSGRAD, EMA>(s, $ops, clip, grad, var, m, v, vhat, average, i);
                squares[i] = square::<_, HW>(F::square_value(given));
            }
        };
    }
    if ops.decay {
        squaring_loop!(VariableOps { decay: true, ..ops })
    } else {
        squaring_loop!(VariableOps { decay: false, ..ops })
    }
}

/// Steps element `i` of the slices (each at least `i + 1` long, or empty when its mode is off)
/// and returns its gradient as given, before the gradient op.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_element<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    grad: &[F],
    var: &mut [F],
    m: &mut [F],
    v: &mut [F],
    vhat: &mut [F],
    average: &mut [F],
    i: usize,
) -> F::Math {
    let given = grad[i].load();
    let g = clip.apply(Ftz::<F::Math, HW>::new(given));
    let mut e = Element::<F>::load::<AMSGRAD, EMA>(var, m, v, vhat, average, i);
    dense_element::<F::Math, AMSGRAD, EMA, HW>(s, ops, g, &mut e.var, &mut e.m, &mut e.v, &mut e.vhat, &mut e.average);
    e.store::<AMSGRAD, EMA>(var, m, v, vhat, average, i);
    given
}

/// A sparse gradient after validation: `entries` holds `(row, position)` for every index the
/// caller gave, sorted by row and then by position, so duplicates of a row are adjacent and in
/// the caller's order. `values` holds `row_len` numbers per position.
#[derive(Clone, Copy)]
pub struct SparseRows<'a, F> {
    pub entries: &'a [(usize, usize)],
    pub values: &'a [F],
    pub row_len: usize,
}

/// The sparse step over a whole variable or a shard of one (docs/numerics.md §2.4, §4): every element
/// decays; elements of rows with a gradient also receive their duplicates' sum (from +0.0, in
/// the caller's order). `first_element` is the flat index of `slots[0]` in the whole variable
/// (a shard's offset, else 0); rows are the whole variable's.
pub fn sparse_step<F: Real + DenseLanes>(
    s: &StepScalars<F>,
    ops: VariableOps,
    op: GradientOp<F>,
    rows: SparseRows<'_, F>,
    first_element: usize,
    slots: SlotSlices<'_, F>,
    workers: &Workers,
) {
    let isa = simd_level();
    let s = &s.to_math();
    // One form: the op runs once per gradient value of a touched row, which a step's moment
    // updates of every element outweigh (a form each was 0.14 MB of a static program).
    with_modes!(fused: op.to_math(), slots, |c, A, E| sparse_parallel::<F, _, A, E>(
        s,
        ops,
        c,
        rows,
        first_element,
        slots,
        workers,
        isa
    ))
}

#[allow(clippy::too_many_arguments)]
fn sparse_parallel<F: Real + DenseLanes, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    rows: SparseRows<'_, F>,
    first: usize,
    slots: SlotSlices<'_, F>,
    workers: &Workers,
    isa: Isa,
) {
    let n = slots.len();
    if task_count(n) == 1 {
        return sparse_serial::<F, C, AMSGRAD, EMA>(s, ops, clip, rows, first, slots, isa);
    }
    let slots = slots.shared();
    for_each_task(workers, n, &|start, end| {
        // SAFETY: each task takes its own range. A row cut by a task boundary is updated in
        // part by each side: `sparse_serial` touches only the elements of its range.
        let slots = unsafe { slots.sub(start, end) };
        sparse_serial::<F, C, AMSGRAD, EMA>(s, ops, clip, rows, first + start, slots, isa)
    });
}

/// One chunk of the sparse step: the spans between rows with a gradient run the vectorized
/// no-gradient loop; the rows with one sum their duplicates a piece of 256 columns at a time
/// ([`sum_duplicates`]) and step the piece.
fn sparse_serial<F: Real + DenseLanes, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    clip: C,
    rows: SparseRows<'_, F>,
    first: usize,
    mut slots: SlotSlices<'_, F>,
    isa: Isa,
) {
    let _flush = FlushToZero::new();
    let n = slots.len();
    let row_len = rows.row_len.max(1);
    let end = first + n;
    let mut at = first; // flat index of the next element to update
    let mut next = rows.entries.partition_point(|&(r, _)| r * row_len + row_len <= first);
    while at < end {
        // The next row with a gradient that reaches into [at, end), if any.
        let (row_start, group_end) = match rows.entries.get(next) {
            Some(&(row, _)) if row * row_len < end => {
                let group_end = next + rows.entries[next..].partition_point(|&(r, _)| r == row);
                (row * row_len, group_end)
            }
            _ => (end, next),
        };
        // Untouched elements before it: the vectorized loop.
        let untouched_end = row_start.max(at).min(end);
        if untouched_end > at {
            let chunk = slots.sub(at - first, untouched_end - first);
            untouched_dispatch::<F, AMSGRAD, EMA>(s, ops, chunk, isa);
            at = untouched_end;
        }
        if at >= end {
            break;
        }
        // The touched row's elements that lie in this chunk, a piece at a time: the piece's
        // sums first (each from +0.0, the duplicates in the caller's order), then its step, a
        // loop without a dependency from element to element (no fold over the duplicates).
        let group = &rows.entries[next..group_end];
        let row_end = (row_start + row_len).min(end);
        let SlotSlices { var, m, v, vhat, average } = slots.reborrow();
        const ROW_PIECE: usize = 256;
        let mut summed = [Ftz::<F::Math, HW>::ZERO; ROW_PIECE];
        for piece_start in (at..row_end).step_by(ROW_PIECE) {
            let len = ROW_PIECE.min(row_end - piece_start);
            let summed = &mut summed[..len];
            sum_duplicates::<F, C>(clip, group, rows, piece_start - row_start, summed);
            for (k, &sum) in summed.iter().enumerate() {
                let i = piece_start - first + k;
                sparse_at::<F, AMSGRAD, EMA>(s, ops, Some(sum), [var, m, v, vhat, average], i);
            }
        }
        at = row_end;
        next = group_end;
    }
}

/// Element `i` of the sparse step ([`sparse_element`]): `slots` are the variable's values, m,
/// v, vhat and average; `summed` its row's summed gradient, or `None` for a row without one.
#[inline(always)]
fn sparse_at<F: Lane, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    summed: Option<Ftz<F::Math, HW>>,
    [var, m, v, vhat, average]: [&mut [F]; 5],
    i: usize,
) {
    let mut e = Element::<F>::load::<AMSGRAD, EMA>(var, m, v, vhat, average, i);
    sparse_element::<F::Math, AMSGRAD, EMA, HW>(
        s,
        ops,
        summed,
        &mut e.var,
        &mut e.m,
        &mut e.v,
        &mut e.vhat,
        &mut e.average,
    );
    e.store::<AMSGRAD, EMA>(var, m, v, vhat, average, i);
}

/// `summed[k]`: the clipped values at column `col + k` of a row's duplicates `group`, added in
/// the caller's order from +0.0. Not inlined: one copy per dtype and gradient op, not per mode.
#[inline(never)]
fn sum_duplicates<F: Real, C: ClipOp<F::Math>>(
    clip: C,
    group: &[(usize, usize)],
    rows: SparseRows<'_, F>,
    col: usize,
    summed: &mut [Ftz<F::Math, HW>],
) {
    summed.fill(Ftz::ZERO);
    // The step's op is one form for every sparse step (`sparse_step`): without a clip or an
    // unscale it is skipped here, where it would cost a division per value.
    let identity = clip.is_identity();
    for &(_, pos) in group {
        let values = &rows.values[pos * rows.row_len + col..][..summed.len()];
        if identity {
            for (sum, value) in summed.iter_mut().zip(values) {
                *sum = *sum + Ftz::<F::Math, HW>::new(value.load());
            }
        } else {
            for (sum, value) in summed.iter_mut().zip(values) {
                *sum = *sum + clip.apply(Ftz::<F::Math, HW>::new(value.load()));
            }
        }
    }
}

isa_variant!(untouched_avx512_inner, "avx512f,avx512bw,avx512vl,avx2,f16c", untouched_generic, (s: &StepScalars<F::Math>, ops: VariableOps, clip: C, slots: SlotSlices<'_, F>));
isa_variant!(untouched_avx2_inner, "avx2,f16c", untouched_generic, (s: &StepScalars<F::Math>, ops: VariableOps, clip: C, slots: SlotSlices<'_, F>));

#[inline(always)]
fn untouched_dispatch<F: Real + DenseLanes, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    slots: SlotSlices<'_, F>,
    isa: Isa,
) {
    match isa {
        // SAFETY: `simd_level` returns these only after the CPU reported the feature.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 if F::AVX512_LOOPS => unsafe {
            untouched_avx512_inner::<F, NoClip, AMSGRAD, EMA>(s, ops, NoClip, slots)
        },
        // SAFETY: as above (the AVX-512 levels include AVX2 and F16C).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Avx2 => unsafe {
            untouched_avx2_inner::<F, NoClip, AMSGRAD, EMA>(s, ops, NoClip, slots)
        },
        _ => untouched_generic::<F, NoClip, AMSGRAD, EMA>(s, ops, NoClip, slots),
    }
}

/// Elements of rows without a gradient: they decay and move (Keras' sparse update decays m
/// and v everywhere). `_clip` only keeps the signature of the ISA variants uniform.
#[inline(always)]
fn untouched_generic<F: Lane, C: ClipOp<F::Math>, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F::Math>,
    ops: VariableOps,
    _clip: C,
    slots: SlotSlices<'_, F>,
) {
    let SlotSlices { var, m, v, vhat, average } = slots;
    let n = var.len();
    let (m, v) = (&mut m[..n], &mut v[..n]);
    let vhat = if AMSGRAD { &mut vhat[..n] } else { &mut vhat[..0] };
    let average = if EMA { &mut average[..n] } else { &mut average[..0] };
    for i in 0..n {
        sparse_at::<F, AMSGRAD, EMA>(s, ops, None, [var, m, v, vhat, average], i);
    }
}

/// Elements a master step widens at a time, into a buffer on the stack.
const WIDEN: usize = 1024;

/// The dense step of a variable with a float32 master copy: `slots.var` is the master, `grad`
/// the caller's gradient (16-bit, or float32), widened exactly a piece at a time; after each
/// piece the caller's values `out` take the master rounded to nearest even.
#[allow(clippy::too_many_arguments)]
pub fn master_dense_step<G: Real, H: Real>(
    s: &StepScalars<f32>,
    ops: VariableOps,
    op: GradientOp<f32>,
    grad: &[G],
    slots: SlotSlices<'_, f32>,
    out: &mut [H],
    workers: &Workers,
    squares: Option<&mut f64>,
) {
    let n = slots.len();
    assert!(grad.len() == n && out.len() == n, "gradient and variable lengths are checked before the step");
    let level = simd_level();
    let report = squares.is_some();
    let out = Disjoint::new(out);
    let total = in_tasks(
        workers,
        n,
        &|start, end, slots: &SharedSlots<'_, f32>| {
            // SAFETY: each task takes its own range.
            let (slots, out) = unsafe { (slots.sub(start, end), out.range(start, end)) };
            let pieces = MasterPieces { s, ops, op, grad: &grad[start..end], slots, out, level, report };
            simd::dispatch(level, pieces)
        },
        slots,
    );
    if let Some(squares) = squares {
        *squares = total;
    }
}

/// The serial part of [`master_dense_step`], compiled for the SIMD level (so that the widening
/// and rounding loops are vectorized for it too). With `report`, returns the report's sum of
/// squares of the widened gradient (`crate::squares`), else 0.
struct MasterPieces<'a, G, H> {
    s: &'a StepScalars<f32>,
    ops: VariableOps,
    op: GradientOp<f32>,
    grad: &'a [G],
    slots: SlotSlices<'a, f32>,
    out: &'a mut [H],
    level: Isa,
    report: bool,
}

impl<G: Real, H: Real> simd::Kernel for MasterPieces<'_, G, H> {
    type Output = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        let MasterPieces { s, ops, op, grad, mut slots, out, level, report } = self;
        let simd = level > Isa::Portable;
        let mut widened = [0f32; WIDEN];
        let mut sums = report.then(Squares::default);
        for start in (0..grad.len()).step_by(WIDEN) {
            let end = (start + WIDEN).min(grad.len());
            let piece = &mut widened[..end - start];
            // The report's sums are taken as the gradient is widened (exact for every 16-bit
            // value), so that the step runs its plain loop.
            match sums.as_mut() {
                Some(sums) => widen_summed(&grad[start..end], piece, sums, level),
                None => G::widen_slice(&grad[start..end], piece, simd),
            }
            let mut part = slots.sub(start, end);
            dense_piece(s, ops, op, piece, part.reborrow(), level, None);
            H::round_slice(part.var, &mut out[start..end], simd);
        }
        sums.map_or(0.0, |sums| sums.total())
    }
}

/// The caller's values of a variable with a master copy: the master rounded to nearest even.
pub fn round_master<H: Real>(master: &[f32], out: &mut [H], workers: &Workers) {
    let simd = simd_enabled();
    let out = Disjoint::new(out);
    for_each_task(workers, out.len(), &|start, end| {
        // SAFETY: each task takes its own range.
        H::round_slice(&master[start..end], unsafe { out.range(start, end) }, simd)
    });
}
