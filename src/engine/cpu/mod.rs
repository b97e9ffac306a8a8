//! The CPU engine: the state in host memory, the passes run by the vectorized loops of
//! [`loops`], large variables cut into tasks for [`Workers`].
//!
//! Threads: `threads = 0` uses a pool shared by the process, 1 runs everything on the calling
//! thread, N > 1 gives the engine a pool of its own; a parallel-for hook runs the tasks on the
//! caller's threads instead. A pass is handed to other threads only when it is large enough to
//! cut (more than `loops::CHUNK` elements); otherwise it stays on the calling thread, where a
//! hand-off would only add its cost. The dense updates of a call's variables are one pass over
//! all of them ([`batch`]); the report's sums, clip norms, finite checks, sparse and master
//! steps run a variable at a time. Tasks are cut by the shapes alone and every element is
//! independent, so whoever runs them never changes a bit.

mod accumulate;
mod batch;
mod lanes;
pub(crate) mod loops;

use std::sync::Arc;

use batch::{BatchRoom, Batched, DenseBatch};
use loops::{DensePart, SlotSlices, SparseRows};

use super::{Engine, NonFinite, Slot, Slots, StepPlan, VariableLayout};
use crate::aligned::SlotBuf;
use crate::dtype::{Element, TensorBuf, TensorMut, TensorRef, each_float, with_float};
use crate::error::{Error, Result, invalid};
use crate::float::{Arith, Ftz, HARDWARE_FLUSH as HW, Real, widen};
use crate::kernels;
use crate::parallel::{Disjoint, ParallelFor, Workers};
use crate::reduction;
use crate::simd::{self, SimdLevel, simd_level};
use crate::squares::{Squares, total_of_tasks};
use crate::tensor::{CallEntries, Gradient, GradientEntries, GradientEntry};

/// One variable's state in host memory; a slot that is off is empty.
#[derive(Debug)]
struct VariableSlots {
    layout: VariableLayout,
    m: SlotBuf,
    v: SlotBuf,
    vhat: SlotBuf,
    average: SlotBuf,
    master: SlotBuf,
    /// A sharded variable's leaves of its clip-norm sum that shard boundaries split
    /// (`reduction::split_leaves`); empty until the ranks' census.
    split_leaves: Vec<bool>,
}

impl VariableSlots {
    fn slot(&self, slot: Slot) -> &SlotBuf {
        match slot {
            Slot::M => &self.m,
            Slot::V => &self.v,
            Slot::Vhat => &self.vhat,
            Slot::Average => &self.average,
            Slot::Master => &self.master,
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut SlotBuf {
        match slot {
            Slot::M => &mut self.m,
            Slot::V => &mut self.v,
            Slot::Vhat => &mut self.vhat,
            Slot::Average => &mut self.average,
            Slot::Master => &mut self.master,
        }
    }

    fn has_master(&self) -> bool {
        self.layout.has_master()
    }
}

/// The CPU engine.
pub(crate) struct CpuEngine {
    variables: Vec<VariableSlots>,
    /// Who runs a step's tasks.
    workers: Workers,
    /// `(row, position)` of a sparse gradient's indices, sorted to sum duplicates in order.
    sparse_rows: Vec<(usize, usize)>,
    /// A 16-bit sparse gradient's rows widened to float32, for a variable with a master copy.
    widened_rows: Vec<f32>,
    /// The longest row of a variable with a master copy (what `reserve_sparse` reserves for).
    master_row_len: usize,
    /// Room for the dense steps of a call's variables, run together (`batch`).
    batch_room: BatchRoom,
}

impl CpuEngine {
    /// An engine with no variables, using `threads` as [`Engine::set_threads`] describes.
    pub fn new(threads: usize) -> Result<Self> {
        Ok(CpuEngine {
            variables: Vec::new(),
            workers: Workers::new(threads),
            sparse_rows: Vec::new(),
            widened_rows: Vec::new(),
            master_row_len: 0,
            batch_room: BatchRoom::default(),
        })
    }
}

impl Engine for CpuEngine {
    fn build(&mut self, layouts: &[VariableLayout], slots: Slots, initial: &[TensorRef<'_>]) -> Result<()> {
        self.batch_room.reserve(layouts.len())?;
        self.variables = variable_slots(layouts, slots, initial)?;
        self.master_row_len = master_row_len(&self.variables);
        Ok(())
    }

    fn add_variables(&mut self, layouts: &[VariableLayout], slots: Slots, initial: &[TensorRef<'_>]) -> Result<()> {
        let added = variable_slots(layouts, slots, initial)?;
        let oom = |_| Error::OutOfMemory("too many variables".into());
        self.variables.try_reserve_exact(added.len()).map_err(oom)?;
        self.batch_room.reserve(self.variables.len() + added.len())?;
        // What reserve_sparse reserved covers the added variables' rows too.
        let row_len = master_row_len(&added).max(self.master_row_len);
        let widened = self.sparse_rows.capacity().saturating_mul(row_len);
        self.widened_rows.try_reserve(widened.saturating_sub(self.widened_rows.len())).map_err(oom)?;
        self.variables.extend(added);
        self.master_row_len = row_len;
        Ok(())
    }

    fn set_threads(&mut self, threads: usize) -> Result<()> {
        let mut workers = Workers::new(threads);
        workers.set_hook(self.workers.hook());
        self.workers = workers;
        Ok(())
    }

    fn set_parallel_for(&mut self, hook: Option<Arc<dyn ParallelFor>>) {
        self.workers.set_hook(hook);
    }

    fn reserve_sparse(&mut self, indices: usize) -> Result<()> {
        let oom = |_| Error::OutOfMemory(format!("cannot reserve room for {indices} sparse indices"));
        self.sparse_rows.try_reserve(indices.saturating_sub(self.sparse_rows.len())).map_err(oom)?;
        let values = indices.saturating_mul(self.master_row_len);
        self.widened_rows.try_reserve(values.saturating_sub(self.widened_rows.len())).map_err(oom)
    }

    fn find_non_finite(&mut self, entries: &mut CallEntries<'_>, loss_scale: Option<f32>) -> Result<Option<NonFinite>> {
        let entries = host(entries)?;
        let (variables, workers) = (&self.variables, &self.workers);
        let level = simd_level();
        Ok((0..entries.len()).find_map(|entry| {
            let e = entries.get(entry);
            let gradient = e.gradient?;
            let found = if variables[e.variable].has_master() && loss_scale.is_some() {
                // The unscaled gradient, in the dtype it is unscaled in (a master's float32).
                let scale = loss_scale.unwrap_or(1.0);
                each_float!(gradient.values(), x => first_non_finite_widened(x, scale, workers, level), _ => None)
            } else {
                each_float!(gradient.values(), x => first_non_finite_in(x, loss_scale, workers, level), _ => None)
            };
            let (element, value) = found?;
            Some(NonFinite { entry, element, value })
        }))
    }

    fn leaf_census(&self, halve: bool, out: &mut Vec<f64>) {
        for v in self.variables.iter().filter(|v| v.layout.sharded) {
            let l = v.layout;
            let held = l.offset..l.offset + l.len;
            with_float!(l.tree_dtype(halve), T => reduction::leaf_census::<T>(l.full_len, held, out), _ => {})
        }
    }

    fn set_split_leaves(&mut self, halve: bool, census: &[f64]) -> Result<usize> {
        // Every variable is checked before any is changed.
        let (mut splits, mut at, mut shared) = (Vec::new(), 0, 0);
        for (i, v) in self.variables.iter().enumerate().filter(|(_, v)| v.layout.sharded) {
            let l = v.layout;
            let mut split = Vec::new();
            shared += with_float!(l.tree_dtype(halve), T => {
                let count = reduction::leaf_count::<T>(l.full_len);
                let part = census.get(at..at + 2 * count).ok_or_else(|| Error::Internal("a short leaf census".into()))?;
                at += 2 * count;
                split.try_reserve_exact(count).map_err(|_| Error::OutOfMemory("the shards' leaf census".into()))?;
                reduction::split_leaves::<T>(l.full_len, part, &mut split)
                    .map_err(|e| invalid!("variable {i}: {e}: the ranks' shards do not partition it"))?;
                reduction::shared_len::<T>(l.full_len, &split)
            }, _ => 0);
            splits.push((i, split));
        }
        for (i, split) in splits {
            self.variables[i].split_leaves = split;
        }
        Ok(shared)
    }

    fn norm_partials(
        &mut self,
        entries: &mut CallEntries<'_>,
        halve: bool,
        loss_scale: Option<f32>,
        sums: &mut Vec<f64>,
        shared: &mut Vec<f64>,
    ) -> Result<()> {
        let entries = host(entries)?;
        let (variables, workers) = (&self.variables, &self.workers);
        {
            for i in 0..entries.len() {
                let entry = entries.get(i);
                let Some(gradient) = entry.gradient else { continue };
                let state = &variables[entry.variable];
                let part = match gradient {
                    Gradient::Dense(_) if state.layout.sharded => Some(&mut *shared),
                    _ => None,
                };
                let sum = each_float!(gradient.values(), g => squares_sum(state, g, halve, loss_scale, workers, part), _ => 0.0);
                sums.push(sum);
            }
        }
        Ok(())
    }

    fn finish_norms(&self, entries: &mut CallEntries<'_>, halve: bool, shared: &[f64], sums: &mut [f64]) {
        let CallEntries::Host(entries) = entries else { return };
        let (mut at, mut k) = (0, 0);
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let Some(gradient) = entry.gradient else { continue };
            let state = &self.variables[entry.variable];
            if matches!(gradient, Gradient::Dense(_)) && state.layout.sharded {
                let (l, split) = (state.layout, &state.split_leaves);
                let total = with_float!(l.tree_dtype(halve), T => {
                    let len = reduction::shared_len::<T>(l.full_len, split);
                    let part = shared.get(at..at + len).unwrap_or_default();
                    at += len;
                    reduction::combine::<T>(l.full_len, split, part).get().to_f64()
                }, _ => 0.0);
                sums[k] = l.norm_sum(halve, total);
            }
            k += 1;
        }
    }

    fn step(&mut self, plan: &StepPlan<'_>, entries: &mut CallEntries<'_>, squares: Option<&mut [f64]>) -> Result<()> {
        let entries = host(entries)?;
        let CpuEngine { variables, sparse_rows, widened_rows, workers, batch_room, .. } = self;
        let mut call = CallStep {
            states: Disjoint::new(variables.as_mut_slice()),
            plan,
            squares,
            scratch: Scratch { sparse_rows, widened_rows },
            workers,
            with_gradient: 0,
        };
        // Every entry at once where the entries allow it: one run for all dense steps.
        let mut batch = DenseBatch::new(std::mem::take(batch_room));
        let all_at_once = entries.visit_all(&mut |entry| call.step_entry(entry, &mut batch));
        let mut room = batch.run(workers);
        if !all_at_once {
            for i in 0..entries.len() {
                let mut batch = DenseBatch::new(room);
                call.step_entry(entries.get(i), &mut batch);
                room = batch.run(workers);
            }
        }
        *batch_room = room;
        Ok(())
    }

    fn read_slot(&self, variable: usize, slot: Slot, mut out: TensorMut<'_>) -> Result<()> {
        let state = self.variables.get(variable).ok_or_else(|| Error::Internal(format!("no variable {variable}")))?;
        out.copy_from(state.slot(slot).as_ref())
    }

    fn write_slot(&mut self, variable: usize, slot: Slot, values: TensorRef<'_>) -> Result<()> {
        let state =
            self.variables.get_mut(variable).ok_or_else(|| Error::Internal(format!("no variable {variable}")))?;
        state.slot_mut(slot).as_mut().copy_from(values)
    }

    fn accumulate(
        &mut self,
        entries: &mut CallEntries<'_>,
        accumulators: &mut [TensorBuf],
        average_over: Option<i64>,
    ) -> Result<()> {
        let entries = host(entries)?;
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let Some(gradient) = entry.gradient else { continue };
            let row_len = self.variables[entry.variable].layout.row_len;
            let accumulator = accumulators[entry.variable].as_mut();
            let sparse_rows = &mut self.sparse_rows;
            each_float!(accumulator, acc => accumulate::gradient(acc, gradient, row_len, average_over, sparse_rows), _ => {});
        }
        Ok(())
    }

    fn update_averages(
        &mut self,
        entries: &mut CallEntries<'_>,
        hyper: &kernels::StepHyper,
        without_gradient_only: bool,
        overwrite: bool,
    ) -> Result<()> {
        let entries = host(entries)?;
        for i in 0..entries.len() {
            let entry = entries.get(i);
            if without_gradient_only && entry.gradient.is_some() {
                continue;
            }
            let average = self.variables[entry.variable].average.as_mut();
            each_float!(entry.values, values => accumulate::moving_average(values, average, hyper, overwrite), _ => {});
        }
        Ok(())
    }
}

/// Where each slot of a large variable starts within a page (`crate::aligned`): 512 bytes or
/// more from one another and from the offsets of the caller's buffers (0 to 128), so that no
/// load of one waits on a store still in flight to another (4K aliasing).
fn page_offset(slot: Slot) -> usize {
    match slot {
        Slot::Master => 512,
        Slot::M => 1024,
        Slot::V => 2048,
        Slot::Vhat => 3072,
        Slot::Average => 3584,
    }
}

/// The state of variables with `layouts`: m and v zeroed, the optional slots as `slots` says,
/// the averages and masters from `initial` in the state's dtype.
fn variable_slots(layouts: &[VariableLayout], slots: Slots, initial: &[TensorRef<'_>]) -> Result<Vec<VariableSlots>> {
    let mut variables = Vec::new();
    variables.try_reserve_exact(layouts.len()).map_err(|_| Error::OutOfMemory("too many variables".into()))?;
    for (i, layout) in layouts.iter().enumerate() {
        let (dtype, len) = (layout.dtype, layout.len);
        let zeros = |slot: Slot, on: bool| SlotBuf::zeros(dtype, if on { len } else { 0 }, page_offset(slot));
        // A copy of the initial values in the state's dtype, or an empty slot.
        let copy = |slot: Slot, on: bool| match (on, initial.get(i)) {
            (true, Some(&values)) => {
                let mut buf = SlotBuf::zeros(dtype, values.len(), page_offset(slot))?;
                widen_into(values, buf.as_mut())?;
                Ok(buf)
            }
            (true, None) => Err(Error::Internal(format!("no initial values for variable {i}"))),
            (false, _) => zeros(slot, false),
        };
        variables.push(VariableSlots {
            layout: *layout,
            m: zeros(Slot::M, true)?,
            v: zeros(Slot::V, true)?,
            vhat: zeros(Slot::Vhat, slots.amsgrad)?,
            average: copy(Slot::Average, slots.ema)?,
            master: copy(Slot::Master, layout.has_master())?,
            split_leaves: Vec::new(),
        });
    }
    Ok(variables)
}

/// The longest row of a variable with a master copy (what `reserve_sparse` reserves for).
fn master_row_len(variables: &[VariableSlots]) -> usize {
    variables.iter().filter(|v| v.has_master()).map(|v| v.layout.row_len.max(1)).max().unwrap_or(0)
}

/// The host entries of a call: the CPU engine is given no others (the optimizer passes device
/// memory only to an engine on a device).
fn host<'e>(entries: &'e mut CallEntries<'_>) -> Result<&'e mut dyn GradientEntries> {
    match entries {
        CallEntries::Host(entries) => Ok(&mut **entries),
        CallEntries::Device(..) => Err(Error::Internal("device memory given to the CPU engine".into())),
    }
}

/// The first element of `x` whose `checked` value is NaN or infinite, with its position and
/// value; `checked` reads the values as `widen` converts them (exactly). Checked a chunk at a
/// time with the vector loop of [`AllFinite`], in parallel when `parallel`; only a chunk that
/// fails is searched element by element.
#[allow(clippy::eq_op)] // `v - v` is the point: NaN exactly when v is NaN or infinite
fn first_non_finite<G: Real, W: Copy + Default, M: Arith>(
    x: &[G],
    widen: impl Fn(&[G], &mut [W]) + Sync,
    checked: impl Fn(W) -> M + Sync,
    workers: &Workers,
    level: SimdLevel,
) -> Option<(usize, f64)> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let finite = |chunk: &[G]| {
        simd::dispatch(
            level,
            AllFinite { values: chunk, widen: &widen, checked: &checked, widened: std::marker::PhantomData },
        )
    };
    // The first task (in order) whose chunk is not all finite; a task after one known bad skips.
    let bad_task = AtomicUsize::new(usize::MAX);
    workers.run(loops::task_count(x.len()), &|task| {
        if task < bad_task.load(Relaxed) {
            let (start, end) = loops::task_range(x.len(), task);
            if !finite(&x[start..end]) {
                bad_task.fetch_min(task, Relaxed);
            }
        }
    });
    let bad_task = bad_task.into_inner();
    if bad_task == usize::MAX {
        return None;
    }
    let (start, end) = loops::task_range(x.len(), bad_task);
    let k = start
        + (start..end).position(|i| {
            let mut w = [W::default()];
            widen(&x[i..i + 1], &mut w);
            let v = checked(w[0]);
            !(v - v == M::ZERO)
        })?;
    Some((k, x[k].to_f64()))
}

/// [`first_non_finite`] of `x` in its dtype's arithmetic, unscaled there by `scale` if given.
fn first_non_finite_in<G: Real>(
    x: &[G],
    scale: Option<f32>,
    workers: &Workers,
    level: SimdLevel,
) -> Option<(usize, f64)> {
    // Multiplying by one is exact: without a loss scale the values are checked as they are.
    let r = Ftz::<G::Math>::new(scale.map_or(Ftz::ONE, kernels::unscale_factor::<G>).get().load());
    let simd = level > SimdLevel::Portable;
    first_non_finite(
        x,
        |g: &[G], w: &mut [G::Math]| G::widen_math(g, w, simd),
        |w| (Ftz::new(w) * r).get(),
        workers,
        level,
    )
}

/// [`first_non_finite`] of `x` widened to a master's float32 and unscaled there by `scale`.
fn first_non_finite_widened<G: Real>(x: &[G], scale: f32, workers: &Workers, level: SimdLevel) -> Option<(usize, f64)> {
    let r = kernels::unscale_factor::<f32>(scale);
    let simd = level > SimdLevel::Portable;
    first_non_finite(
        x,
        |g: &[G], w: &mut [f32]| G::widen_slice(g, w, simd),
        |w| (Ftz::new(w) * r).get(),
        workers,
        level,
    )
}

/// Whether `checked(w)` is finite for every value of `values` as `widen` converts it (a window
/// at a time): a sum of `v - v`, which is zero for every finite `v` and NaN once any `v` is NaN
/// or infinite, in one vector loop.
struct AllFinite<'a, G, W, X, C> {
    values: &'a [G],
    widen: &'a X,
    checked: &'a C,
    widened: std::marker::PhantomData<fn() -> W>,
}

impl<G: Copy, W: Copy + Default, M: Arith, X: Fn(&[G], &mut [W]), C: Fn(W) -> M> simd::Kernel
    for AllFinite<'_, G, W, X, C>
{
    type Output = bool;

    #[inline(always)]
    #[allow(clippy::eq_op)] // see the type's documentation
    fn run(self) -> bool {
        const WINDOW: usize = 256;
        let checked = self.checked;
        let mut lanes = [M::ZERO; 16];
        let mut window = [W::default(); WINDOW];
        let mut tail = M::ZERO;
        for part in self.values.chunks(WINDOW) {
            let wide = &mut window[..part.len()];
            (self.widen)(part, wide);
            let blocks = wide.chunks_exact(16);
            tail = blocks.remainder().iter().fold(tail, |acc, &w| {
                let v = checked(w);
                acc + (v - v)
            });
            for block in blocks {
                for (lane, &w) in lanes.iter_mut().zip(block) {
                    let v = checked(w);
                    *lane = *lane + (v - v);
                }
            }
        }
        lanes.iter().fold(tail, |acc, &lane| acc + lane) == M::ZERO
    }
}

/// A gradient's sum of squares (or `l2_loss`) in the state's dtype (widened to float32 for a
/// variable with a master copy), unscaled by `loss_scale` if given, as float64; or with
/// `shared`, this rank's part of a sharded dense gradient's sum appended there (and 0).
fn squares_sum<F: Real>(
    state: &VariableSlots,
    values: &[F],
    halve: bool,
    loss_scale: Option<f32>,
    workers: &Workers,
    shared: Option<&mut Vec<f64>>,
) -> f64 {
    let n = values.len();
    let widened = state.has_master();
    if let Some(shared) = shared {
        return match loss_scale {
            None if widened => sum_of(state, n, &|i| widen(values[i]), halve, shared),
            None => sum_of(state, n, &|i| values[i], halve, shared),
            Some(scale) if widened => {
                let r = kernels::unscale_factor::<f32>(scale);
                sum_of(state, n, &|i| (Ftz::new(widen(values[i])) * r).get(), halve, shared)
            }
            Some(scale) => {
                let r = kernels::unscale_factor::<F>(scale);
                sum_of(state, n, &|i| (Ftz::new(values[i]) * r).get(), halve, shared)
            }
        };
    }
    // The unscaling factor is one without a loss scale: multiplying by one is exact.
    let simd = loops::simd_enabled();
    if widened {
        let r = loss_scale.map_or(Ftz::ONE, kernels::unscale_factor::<f32>).mode::<HW>();
        let to_f32 = |g: &[F], w: &mut [f32]| F::widen_slice(g, w, simd);
        reduction::squares_sum_of_slice::<f32, F, f32>(workers, values, halve, &to_f32, &|w| Ftz::new(w) * r)
    } else {
        let r = Ftz::<F::Math, HW>::new(loss_scale.map_or(Ftz::ONE, kernels::unscale_factor::<F>).get().load());
        let to_math = |g: &[F], w: &mut [F::Math]| F::widen_math(g, w, simd);
        reduction::squares_sum_of_slice::<F, F, F::Math>(workers, values, halve, &to_math, &|w| Ftz::new(w) * r)
    }
}

/// This rank's part of a sharded dense gradient's sum, of the `n` terms that `value` gives
/// (indexed from the shard's start), appended to `shared`; returns 0.
fn sum_of<G: Real>(
    state: &VariableSlots,
    n: usize,
    value: &(impl Fn(usize) -> G + Sync),
    halve: bool,
    shared: &mut Vec<f64>,
) -> f64 {
    let (l, split) = (&state.layout, &state.split_leaves[..]);
    debug_assert_eq!(n, l.len);
    let held = l.offset..l.offset + l.len;
    let term = |i: usize| reduction::square_term(value(i - l.offset), halve);
    if reduction::sums_in_f32::<G>(halve) {
        reduction::contribute::<f32>(l.full_len, held, split, &|i| Ftz::new(term(i).get().to_f32()), shared);
    } else {
        reduction::contribute::<G>(l.full_len, held, split, &term, shared);
    }
    0.0
}

/// A copy of `values` in `dtype`: the same, or widened to a master's float32 (the device
/// engine's copy at build).
#[cfg(any(feature = "cuda", feature = "host-kernels"))]
pub(crate) fn widened(values: TensorRef<'_>, dtype: crate::dtype::DType) -> Result<TensorBuf> {
    let mut out = TensorBuf::zeros(dtype, values.len())?;
    widen_into(values, out.as_mut())?;
    Ok(out)
}

/// Copies `values` into `out` (of the same length): the same dtype, or widened to a master's
/// float32.
fn widen_into(values: TensorRef<'_>, mut out: TensorMut<'_>) -> Result<()> {
    if values.dtype() == out.dtype() {
        return out.copy_from(values);
    }
    let (dtype, len) = (out.dtype(), out.len());
    match f32::unwrap(out) {
        Some(dst) if dst.len() == values.len() => {
            each_float!(values, src => Real::widen_slice(src, dst, loops::simd_enabled()), _ => {});
            Ok(())
        }
        _ => Err(Error::Internal(format!(
            "copy of {} {} elements into {len} {} elements",
            values.len(),
            values.dtype().name(),
            dtype.name()
        ))),
    }
}

/// The buffers a sparse step reuses (within the capacity of earlier steps or `reserve_sparse`).
struct Scratch<'a> {
    sparse_rows: &'a mut Vec<(usize, usize)>,
    widened_rows: &'a mut Vec<f32>,
}

/// What an `apply_gradients` call's step takes from the engine and the call.
struct CallStep<'c, 'p> {
    /// The variables' states, each taken by the one entry that lists its variable.
    states: Disjoint<'c, VariableSlots>,
    plan: &'c StepPlan<'p>,
    squares: Option<&'c mut [f64]>,
    scratch: Scratch<'c>,
    workers: &'c Workers,
    /// The entries with a gradient seen so far.
    with_gradient: usize,
}

impl<'c> CallStep<'c, '_> {
    /// Steps the next entry of the call, or adds its dense step to `batch`.
    fn step_entry<'x>(&mut self, entry: GradientEntry<'x>, batch: &mut DenseBatch<'x>)
    where
        'c: 'x,
    {
        let Some(gradient) = entry.gradient else { return };
        let k = self.with_gradient;
        self.with_gradient += 1;
        let variable = entry.variable;
        // SAFETY: validation lets no variable be listed twice in a call, so each entry takes
        // its own variable's state.
        let state: &'x mut VariableSlots = &mut unsafe { self.states.range(variable, variable + 1) }[0];
        let listed = Listed { k, variable, squares: self.squares.as_deref_mut().map(|s| &mut s[k]) };
        let Scratch { sparse_rows, widened_rows } = &mut self.scratch;
        let scratch = Scratch { sparse_rows, widened_rows };
        let (plan, workers) = (self.plan, self.workers);
        each_float!(entry.values, values => step_variable(state, values, gradient, plan, listed, scratch, workers, batch), _ => {})
    }
}

/// Which entry of a call a step is for, and where its report's sum of squares goes.
struct Listed<'a> {
    /// Its position among the call's entries with a gradient.
    k: usize,
    /// The built variable.
    variable: usize,
    /// The step report's sum of squares of the gradient (`crate::squares`), when asked for.
    squares: Option<&'a mut f64>,
}

/// The report's sum of a sparse gradient: its values as passed, in one task.
fn sparse_squares<G: Real>(values: &[G]) -> f64 {
    let mut sums = Squares::default();
    sums.add(values, loops::simd_enabled());
    total_of_tasks(&[sums.total()])
}

/// Decays and updates a built variable with its gradient; a dense step without the report's
/// sums joins `batch`, to run with the call's other variables.
#[allow(clippy::too_many_arguments)]
fn step_variable<'a, F: Batched>(
    state: &'a mut VariableSlots,
    values: &'a mut [F],
    gradient: Gradient<'a>,
    plan: &'a StepPlan<'_>,
    listed: Listed<'_>,
    scratch: Scratch<'_>,
    workers: &Workers,
    batch: &mut DenseBatch<'a>,
) {
    if state.has_master() {
        return step_master(state, values, gradient, plan, listed, scratch, workers);
    }
    let Listed { k, variable, squares } = listed;
    let ops = plan.ops(variable);
    let (s, op) = (plan.scalars::<F>(variable), plan.gradient_op::<F>(k));
    let VariableLayout { row_len, offset, .. } = state.layout;
    let VariableSlots { m, v, vhat, average, .. } = state;
    let slots = slot_slices(values, m, v, vhat, average);
    let gradient_values = gradient.values().typed::<F>().unwrap_or_default();
    match gradient {
        Gradient::Dense(_) => match squares {
            Some(squares) => loops::dense_step_with_squares(s, ops, op, gradient_values, slots, workers, squares),
            None => batch.push(DensePart::new(s, ops, op, gradient_values, slots)),
        },
        Gradient::Sparse { indices, .. } => {
            if let Some(squares) = squares {
                *squares = sparse_squares(gradient_values);
            }
            let rows = sorted_rows(scratch.sparse_rows, indices, gradient_values, row_len);
            loops::sparse_step(s, ops, op, rows, offset, slots, workers);
        }
    }
}

/// The slices a step runs over: `var` (the caller's values, or a master) and the slots in its
/// dtype (validation matched every dtype to the layout's, so none is empty by mistake).
fn slot_slices<'a, F: Real>(
    var: &'a mut [F],
    m: &'a mut SlotBuf,
    v: &'a mut SlotBuf,
    vhat: &'a mut SlotBuf,
    average: &'a mut SlotBuf,
) -> SlotSlices<'a, F> {
    SlotSlices { var, m: typed_slot(m), v: typed_slot(v), vhat: typed_slot(vhat), average: typed_slot(average) }
}

/// `(row, position)` of every index, sorted, so duplicates of a row are adjacent and in order.
fn sorted_rows<'a, F>(
    entries: &'a mut Vec<(usize, usize)>,
    indices: &[i64],
    values: &'a [F],
    row_len: usize,
) -> SparseRows<'a, F> {
    entries.clear();
    entries.extend(indices.iter().enumerate().map(|(pos, &row)| (row as usize, pos)));
    entries.sort_unstable();
    SparseRows { entries, values, row_len }
}

/// The step of a variable with a float32 master copy: the master and its float32 slots take
/// Keras' float32 step for the gradient widened exactly, and `values` the master rounded to
/// nearest even.
fn step_master<H: Real>(
    state: &mut VariableSlots,
    values: &mut [H],
    gradient: Gradient<'_>,
    plan: &StepPlan<'_>,
    listed: Listed<'_>,
    scratch: Scratch<'_>,
    workers: &Workers,
) {
    let Listed { k, variable, squares } = listed;
    let ops = plan.ops(variable);
    let (s, op) = (plan.scalars::<f32>(variable), plan.gradient_op::<f32>(k));
    let VariableLayout { row_len, offset, .. } = state.layout;
    let VariableSlots { m, v, vhat, average, master, .. } = state;
    let slots = slot_slices(typed_slot::<f32>(master), m, v, vhat, average);
    match gradient {
        Gradient::Dense(g) => {
            each_float!(g, g => loops::master_dense_step(s, ops, op, g, slots, values, workers, squares), _ => {})
        }
        Gradient::Sparse { indices, values: rows } => {
            if let Some(squares) = squares {
                *squares = each_float!(rows, r => sparse_squares(r), _ => f64::NAN);
            }
            let widened = scratch.widened_rows;
            widened.clear();
            widened.resize(rows.len(), 0.0); // within the room reserve_sparse made
            each_float!(rows, r => Real::widen_slice(r, widened, loops::simd_enabled()), _ => {});
            let rows = sorted_rows(scratch.sparse_rows, indices, widened, row_len);
            loops::sparse_step(s, ops, op, rows, offset, slots, workers);
            // Every element decays: every element of the caller's variable takes its rounding.
            loops::round_master(typed_slot::<f32>(master), values, workers);
        }
    }
}

/// A slot as `F`: validation matched every dtype to the layout's, so it is never empty by mistake.
fn typed_slot<F: Real>(slot: &mut SlotBuf) -> &mut [F] {
    F::unwrap(slot.as_mut()).unwrap_or_default()
}
