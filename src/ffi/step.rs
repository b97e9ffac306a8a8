//! One step: `adamw_optimizer_apply_gradients`, `adamw_optimizer_minimize`, and
//! `adamw_optimizer_finalize_variable_values`, with the checks of the caller's entries.

use std::ffi::c_void;

use super::handle::{self, adamw_optimizer, with_optimizer};
use super::slice::{ByteRange, check_disjoint, check_parts, empty_mut, empty_ref, slice, tensor_mut, tensor_ref};
use super::status::{FfiError, adamw_status};
use super::types::{
    ADAMW_INDICES_ON_DEVICE, adamw_gradient, adamw_gradient_fn, adamw_variable_data, entry_dtypes, variable_dtype,
};
use crate::dtype::DType;
use crate::optimizer::Optimizer;
use crate::tensor::{
    DeviceEntries, DeviceEntry, DeviceGradient, DeviceIndices, DeviceTensor, Gradient, GradientEntries, GradientEntry,
};

/// The entries of a C `apply_gradients` call: the handle's own copy of the caller's array
/// (so that a write to a variable cannot change an entry after it was checked), structurally
/// checked; slices are made on demand.
struct Entries<'a> {
    entries: &'a [adamw_gradient],
}

impl Entries<'_> {
    /// Checks every entry's variable and dtype, then every pointer and length, and that no
    /// buffer the call writes overlaps any other buffer of the call, using `ranges` (capacity
    /// reserved at build). The variable and dtype come first: the pointer checks size every
    /// buffer by the dtype, so a wrong dtype would otherwise be reported as a misaligned or
    /// overlapping buffer.
    fn check(optimizer: &Optimizer, entries: &[adamw_gradient], ranges: &mut Vec<ByteRange>) -> Result<(), FfiError> {
        ranges.clear();
        for (i, e) in entries.iter().enumerate() {
            let (dtype, gradient_dtype) = entry_dtypes(e.dtype, || format!("entries[{i}].dtype"))?;
            optimizer.check_variable_dtype(e.variable, dtype)?;
            let (size, gradient_size) = (dtype.size(), gradient_dtype.size());
            let check = |ptr: *const c_void, len: usize, size: usize, what: &str| {
                check_parts(ptr, len, size, size, || format!("entries[{i}].{what}")).map(drop)
            };
            check(e.data, e.len, size, "data")?;
            let sparse = !e.values.is_null() || !e.indices.is_null();
            if e.dtype & ADAMW_INDICES_ON_DEVICE != 0 && !optimizer.on_device() {
                return Err(FfiError::invalid(format!(
                    "entries[{i}].dtype says its indices are device memory, but the optimizer is not on a device"
                )));
            }
            if !e.dense.is_null() && sparse {
                return Err(FfiError::invalid(format!("entries[{i}] has both a dense and a sparse gradient")));
            }
            if !e.dense.is_null() {
                check(e.dense, e.len, gradient_size, "dense")?;
            }
            if sparse {
                check(e.values, e.num_values, gradient_size, "values")?;
                check_parts(e.indices, e.num_indices, 8, 8, || format!("entries[{i}].indices"))?;
            }
            ranges.push(ByteRange::of(e.data.cast::<u8>(), e.len * size, true, i, "data"));
            if !e.dense.is_null() {
                ranges.push(ByteRange::of(e.dense.cast::<u8>(), e.len * gradient_size, false, i, "dense"));
            } else if sparse {
                ranges.push(ByteRange::of(e.values.cast::<u8>(), e.num_values * gradient_size, false, i, "values"));
                ranges.push(ByteRange::of(e.indices.cast::<u8>(), e.num_indices * 8, false, i, "indices"));
            }
        }
        check_disjoint(ranges, |r| describe_range(optimizer, "entries", r, entries[r.entry].variable))
    }

    /// Entry `i`, its slices made from the caller's pointers.
    ///
    /// # Safety
    /// While the entry lives, nothing else reaches the buffers it writes: no other borrow of
    /// entry `i`, and no use of the buffers outside the entries (`Entries::check` verified
    /// that entries share no written byte).
    unsafe fn entry<'s>(&self, i: usize) -> GradientEntry<'s> {
        let e = self.entries[i];
        // `Entries::check` decoded every dtype; the fallback is never taken.
        let (dtype, gradient_dtype) = entry_dtypes(e.dtype, String::new).unwrap_or((DType::F32, DType::F32));
        // SAFETY: `Entries::check` verified every pointer (non-NULL where the length is
        // non-zero, aligned, size within isize::MAX) and that written buffers overlap nothing;
        // the caller guarantees each points at the stated number of elements for the call.
        unsafe {
            let empty = || empty_ref(gradient_dtype);
            let values = tensor_mut(dtype, e.data, e.len, "data").unwrap_or_else(|_| empty_mut(dtype));
            let gradient = if !e.dense.is_null() {
                Some(Gradient::Dense(tensor_ref(gradient_dtype, e.dense, e.len, "dense").unwrap_or_else(|_| empty())))
            } else if !e.values.is_null() || !e.indices.is_null() {
                Some(Gradient::Sparse {
                    indices: slice(e.indices, e.num_indices, "indices").unwrap_or(&[]),
                    values: tensor_ref(gradient_dtype, e.values, e.num_values, "values").unwrap_or_else(|_| empty()),
                })
            } else {
                None
            };
            GradientEntry { variable: e.variable, values, gradient }
        }
    }
}

/// A buffer of a call, for messages: `entries[1].data (variable 0, `dense/kernel`)`.
fn describe_range(optimizer: &Optimizer, list: &str, range: &ByteRange, variable: usize) -> String {
    match optimizer.built_variable_name(variable) {
        Some(name) => format!("{list}[{}].{} (variable {variable}, `{name}`)", range.entry, range.field),
        None => format!("{list}[{}].{} (variable {variable})", range.entry, range.field),
    }
}

/// The checked entries as device memory, for an optimizer on a device: the same pointers, never
/// read here (sparse indices are read when they are host memory), each entry made on demand.
struct OnDevice<'a>(&'a [adamw_gradient]);

impl DeviceEntries for OnDevice<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, i: usize) -> DeviceEntry<'_> {
        let e = &self.0[i];
        // `Entries::check` decoded every dtype; the fallback is never taken.
        let (dtype, gradient_dtype) = entry_dtypes(e.dtype, String::new).unwrap_or((DType::F32, DType::F32));
        let tensor = |dtype, ptr: *const c_void, len| DeviceTensor { dtype, address: ptr as u64, len };
        let gradient = if !e.dense.is_null() {
            Some(DeviceGradient::Dense(tensor(gradient_dtype, e.dense, e.len)))
        } else if !e.values.is_null() || !e.indices.is_null() {
            let indices = if e.dtype & ADAMW_INDICES_ON_DEVICE != 0 {
                DeviceIndices::Device { address: e.indices as u64, len: e.num_indices }
            } else {
                // SAFETY: `Entries::check` verified the pointer; the caller guarantees that it
                // points at `num_indices` host int64s for the call.
                DeviceIndices::Host(unsafe { slice(e.indices, e.num_indices, "indices") }.unwrap_or(&[]))
            };
            Some(DeviceGradient::Sparse { indices, values: tensor(gradient_dtype, e.values, e.num_values) })
        } else {
            None
        };
        DeviceEntry { variable: e.variable, values: tensor(dtype, e.data, e.len), gradient }
    }
}

impl GradientEntries for Entries<'_> {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&mut self, i: usize) -> GradientEntry<'_> {
        // SAFETY: the entry is borrowed for as long as `self` is, mutably.
        unsafe { self.entry(i) }
    }

    fn visit_all<'s>(&'s mut self, visit: &mut dyn FnMut(GradientEntry<'s>)) -> bool {
        // SAFETY: `Entries::check` verified that no buffer an entry writes overlaps any other
        // buffer of the call, so the entries can all be borrowed at once; for as long as `self`
        // is, mutably.
        (0..self.entries.len()).for_each(|i| visit(unsafe { self.entry(i) }));
        true
    }
}

/// Runs `step` over the checked entries of a call.
///
/// # Safety
/// `entries` must be NULL or point at `num_entries` entries, each valid as documented.
unsafe fn with_entries(
    state: &mut handle::State,
    entries: *const adamw_gradient,
    num_entries: usize,
    step: impl FnOnce(&mut Optimizer, &mut Entries<'_>) -> Result<(), FfiError>,
) -> Result<(), FfiError> {
    // SAFETY: forwarded contract.
    let caller = unsafe { slice(entries, num_entries, "entries") }?;
    if !caller.is_empty() && !state.optimizer.is_built() {
        return Err(crate::error::Error::NotBuilt(
            "apply_gradients needs a built optimizer: call adamw_optimizer_build with the full list of trainable variables first".into(),
        )
        .into());
    }
    let num_built = state.optimizer.num_built_variables();
    if caller.len() > num_built {
        return Err(FfiError::invalid(format!(
            "{} entries for an optimizer built with {num_built} variables: a variable is listed twice or unknown",
            caller.len()
        )));
    }
    // Within the capacity reserved at build: no allocation. The caller's array is not read again.
    state.entries.clear();
    state.entries.extend_from_slice(caller);
    Entries::check(&state.optimizer, &state.entries, &mut state.ranges)?;
    let mut source = Entries { entries: &state.entries };
    step(&mut state.optimizer, &mut source)
}

/// The step shared by apply_gradients and minimize: check the entries, apply, report the count.
///
/// # Safety
/// As for `with_entries`; `out_iterations` must be NULL or a writable int64_t.
unsafe fn apply_entries(
    state: &mut handle::State,
    entries: *const adamw_gradient,
    num_entries: usize,
    out_iterations: *mut i64,
) -> Result<(), FfiError> {
    // SAFETY: forwarded contract.
    unsafe {
        with_entries(state, entries, num_entries, |opt, source| {
            let iterations = if opt.on_device() {
                // For an optimizer on a device the entries' buffers are the device's memory (the
                // header's contract), checked for NULL, alignment and overlaps.
                opt.apply_gradients_on_device(&OnDevice(source.entries))?
            } else {
                opt.apply_gradients(source)?
            };
            if !out_iterations.is_null() {
                *out_iterations = iterations;
            }
            Ok(())
        })
    }
}

/// One optimizer step over the listed variables (Keras: `apply_gradients(zip(grads, vars))`):
/// clipping, weight decay, the Adam update, EMA, and the counter's increment. A variable not
/// listed, or listed with no gradient, is left alone. An empty list changes nothing but the
/// current learning rate (re-read, as in Keras).
/// Ownership: `entries` and all buffers are borrowed for the call; `data` buffers are written.
/// NULL: `optimizer` must not be NULL; `entries` may be NULL only when `num_entries` is 0;
/// `out_iterations` may be NULL.
/// Threads: serialized with other calls on this optimizer; the work may run on several threads
/// (the optimizer's pool, or the caller's through `adamw_optimizer_set_parallel_for`). A
/// callback that hands work to another thread which calls this optimizer deadlocks (BUSY is
/// detected on the calling thread only).
/// Allocation: libadamw allocates nothing once built (on a device too: its tables and the host
/// copies of device indices are kept from call to call; with a pool too, whose threads start
/// at the first step that needs them), except that a call larger than any before grows a
/// buffer, such as a sparse gradient with more indices (see `adamw_optimizer_reserve_sparse`).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown dtype, misaligned or overlapping buffers,
/// dense and sparse together, a variable listed twice, global_clipnorm over mixed dtypes),
/// NOT_BUILT, UNKNOWN_VARIABLE, DTYPE_MISMATCH, SHAPE_MISMATCH, INDEX_OUT_OF_RANGE,
/// NO_GRADIENTS, NON_FINITE_GRADIENT (with the non-finite guard on), CALLBACK_FAILED (callbacks
/// run only once every check has passed), OUT_OF_MEMORY (a length whose byte size overflows),
/// BUSY. On any error nothing has changed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_apply_gradients(
    optimizer: *mut adamw_optimizer,
    entries: *const adamw_gradient,
    num_entries: usize,
    out_iterations: *mut i64,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and valid entries.
    unsafe { with_optimizer(optimizer, |s| apply_entries(s, entries, num_entries, out_iterations)) }
}

/// Keras' `minimize`: calls `gradient_fn(user_data, entries, num_entries)` to compute the
/// gradients into the caller's `dense` / `values` buffers of `entries`, then applies them as
/// `adamw_optimizer_apply_gradients` does.
/// NULL: as for apply_gradients; `gradient_fn` must not be NULL. Threads: serialized; the
/// callback runs on the calling thread, with this optimizer locked (calling it returns BUSY).
/// Errors: those of apply_gradients: NULL_ARGUMENT, INVALID_ARGUMENT, NOT_BUILT,
/// UNKNOWN_VARIABLE, DTYPE_MISMATCH, SHAPE_MISMATCH, INDEX_OUT_OF_RANGE, NO_GRADIENTS,
/// NON_FINITE_GRADIENT, CALLBACK_FAILED (also when `gradient_fn` returns non-zero; nothing has
/// changed then), OUT_OF_MEMORY, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_minimize(
    optimizer: *mut adamw_optimizer,
    entries: *const adamw_gradient,
    num_entries: usize,
    gradient_fn: adamw_gradient_fn,
    user_data: *mut c_void,
    out_iterations: *mut i64,
) -> adamw_status {
    // SAFETY: the caller passes a live handle, valid entries and a valid callback.
    unsafe {
        with_optimizer(optimizer, |s| {
            let f = gradient_fn.ok_or_else(|| FfiError::null("gradient_fn"))?;
            let rc = f(user_data, entries, num_entries);
            if rc != 0 {
                return Err(crate::error::Error::CallbackFailed(format!("the gradient callback returned {rc}")).into());
            }
            apply_entries(s, entries, num_entries, out_iterations)
        })
    }
}

/// Keras' `finalize_variable_values`: with use_ema, each listed variable takes the value of its
/// moving average; without EMA nothing is written. Ownership: buffers borrowed for the call.
/// NULL: `optimizer` must not be NULL; `variables` may be NULL only when `num_variables` is 0.
/// Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown dtype, misaligned or overlapping buffers),
/// NOT_BUILT, UNKNOWN_VARIABLE, DTYPE_MISMATCH, SHAPE_MISMATCH, OUT_OF_MEMORY, BUSY.
/// On error nothing is written.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_finalize_variable_values(
    optimizer: *mut adamw_optimizer,
    variables: *const adamw_variable_data,
    num_variables: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and valid descriptors.
    unsafe {
        with_optimizer(optimizer, |s| {
            // A copy: the descriptors are not read while the variables' memory is borrowed.
            let vars: Vec<adamw_variable_data> = slice(variables, num_variables, "variables")?.to_vec();
            let mut updates = Vec::with_capacity(vars.len());
            let mut ranges = Vec::with_capacity(vars.len());
            for (i, v) in vars.iter().enumerate() {
                let dtype = variable_dtype(v.dtype, || format!("variables[{i}].dtype"))?;
                // As in apply_gradients, the variable and dtype are checked before the buffer
                // they size (an unbuilt optimizer is reported by the core below).
                if s.optimizer.is_built() {
                    s.optimizer.check_variable_dtype(v.variable, dtype)?;
                }
                // Checks pointer, alignment and size before any slice exists.
                check_parts(v.data, v.len, dtype.size(), dtype.size(), || format!("variables[{i}].data"))?;
                ranges.push(ByteRange::of(v.data.cast::<u8>(), v.len * dtype.size(), true, i, "data"));
            }
            check_disjoint(&mut ranges, |r| describe_range(&s.optimizer, "variables", r, vars[r.entry].variable))?;
            if s.optimizer.on_device() {
                let on_device: Vec<DeviceEntry<'_>> = vars
                    .iter()
                    .map(|v| {
                        let dtype = variable_dtype(v.dtype, String::new).unwrap_or(DType::F32);
                        let values = DeviceTensor { dtype, address: v.data as u64, len: v.len };
                        DeviceEntry { variable: v.variable, values, gradient: None }
                    })
                    .collect();
                // For an optimizer on a device the variables are the device's memory (the
                // header's contract), checked for NULL, alignment and overlaps.
                return Ok(s.optimizer.finalize_variable_values_on_device(&on_device)?);
            }
            for (i, v) in vars.iter().enumerate() {
                let dtype = variable_dtype(v.dtype, || format!("variables[{i}].dtype"))?;
                let values = tensor_mut(dtype, v.data, v.len, &format!("variables[{i}].data"))?;
                updates.push(GradientEntry { variable: v.variable, values, gradient: None });
            }
            Ok(s.optimizer.finalize_variable_values(updates.as_mut_slice())?)
        })
    }
}
