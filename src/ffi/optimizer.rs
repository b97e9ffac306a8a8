//! The `adamw_optimizer_*` entry points.

use std::ffi::{c_char, c_void};

use super::config::{adamw_config, to_config};
use super::guard;
use super::handle::{self, Handle, adamw_optimizer};
use super::slice::{ByteRange, check_disjoint, check_parts, slice, slice_mut, utf8, write, write_out};
use super::status::{FfiError, adamw_status};
use crate::float::DType;
use crate::optimizer::{Optimizer, VariableSpec, Weight, WeightData};
use crate::tensor::{Gradient, TensorMut, TensorRef, Update, UpdateSource};

/// The version of this C ABI. It changes only when a declaration in this header changes
/// incompatibly; compare with ADAMW_ABI_VERSION from the header you compiled against.
pub const ADAMW_ABI_VERSION: u32 = 1;

/// The most dimensions a variable may have.
pub const ADAMW_MAX_NDIM: usize = 32;

/// Element types. Values start at 1 so that zeroed memory is invalid.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adamw_dtype {
    Float32 = 1,
    Float64 = 2,
    /// Only the iteration counter (optimizer variable 0) has this dtype.
    Int64 = 3,
}

/// A variable to build the optimizer over.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_variable {
    /// The variable's name, NUL-terminated UTF-8, copied. Exclusion patterns are searched in
    /// `name` + ":0", Keras' full name (so "bias", "^dense/" and "kernel:0$" work as in Keras).
    pub name: *const c_char,
    /// ADAMW_DTYPE_FLOAT32 or ADAMW_DTYPE_FLOAT64.
    pub dtype: u32,
    /// Number of dimensions (0 for a scalar), at most ADAMW_MAX_NDIM.
    pub ndim: usize,
    /// `ndim` dimensions; may be NULL when `ndim` is 0.
    pub shape: *const usize,
    /// The variable's current values (the elements held: all of them, or the shard's):
    /// required with use_ema (the averages start as copies), otherwise ignored. Read during the
    /// call only.
    pub data: *const c_void,
    /// 1 to hold only a shard of the variable (needs `mesh_all_reduce` in the config): flat
    /// elements `shard_offset .. shard_offset + shard_len` of the row-major variable of `shape`.
    /// Its `data`, dense gradients and slots then have `shard_len` elements; sparse gradients
    /// still name whole rows of the variable, and each shard applies its part of them.
    pub sharded: u8,
    pub shard_offset: usize,
    pub shard_len: usize,
}

/// One variable's entry in an `apply_gradients` call. Gradient forms:
/// - `dense` non-NULL: a dense gradient of `len` elements (`indices` and `values` must be NULL);
/// - `indices` or `values` non-NULL: a sparse gradient (Keras' IndexedSlices): `num_indices` row
///   indices, repeats summed, and `num_values` = `num_indices` rows of the variable's trailing
///   shape in `values`; zero indices is a gradient of zeros (every row still decays and moves);
/// - all three NULL: no gradient this step: the variable is left alone, as Keras does for None.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_gradient {
    /// Index of the variable in the list given to `adamw_optimizer_build`.
    pub variable: usize,
    /// The dtype of `data`, `dense` and `values`: the variable's dtype.
    pub dtype: u32,
    /// The variable's values, updated in place: `len` elements, not overlapping any other buffer.
    pub data: *mut c_void,
    pub len: usize,
    /// Dense gradient of `len` elements, or NULL.
    pub dense: *const c_void,
    /// Sparse gradient: row indices in [0, shape[0]).
    pub indices: *const i64,
    pub num_indices: usize,
    /// Sparse gradient rows: `num_values` = `num_indices` * (elements per row), or NULL.
    pub values: *const c_void,
    pub num_values: usize,
}

/// A variable's values, for `adamw_optimizer_finalize_variable_values`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_variable_data {
    /// Index of the variable in the list given to `adamw_optimizer_build`.
    pub variable: usize,
    /// The variable's dtype.
    pub dtype: u32,
    /// `len` elements, written.
    pub data: *mut c_void,
    pub len: usize,
}

/// A value for `adamw_optimizer_set_weights`: `dtype`, a shape, and the product of the shape
/// elements at `data` (read during the call only).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_weight {
    pub dtype: u32,
    pub ndim: usize,
    /// `ndim` dimensions; may be NULL when `ndim` is 0.
    pub shape: *const usize,
    pub data: *const c_void,
}

/// Describes one optimizer variable (see `adamw_optimizer_variable_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_variable_info {
    /// ADAMW_DTYPE_INT64 for the counter, else the variable's dtype.
    pub dtype: u32,
    pub ndim: usize,
    pub shape: [usize; ADAMW_MAX_NDIM],
    /// Number of elements (1 for a scalar).
    pub len: usize,
}

/// Computes the gradients for `adamw_optimizer_minimize`: called once, with the entries given
/// to minimize, on the calling thread; it writes the gradients into the buffers the caller
/// supplied as `dense` (or `values`) of those entries, from the current values in `data`.
/// Return 0 on success; anything else fails the call (nothing changes, CALLBACK_FAILED).
/// It must not unwind, and must not call this optimizer (that call returns BUSY).
pub type adamw_gradient_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, entries: *const adamw_gradient, num_entries: usize) -> i32>;

/// A variable's dtype; `what` names the field, and is only built for a message.
fn dtype_of(value: u32, what: impl FnOnce() -> String) -> Result<DType, FfiError> {
    match value {
        1 => Ok(DType::F32),
        2 => Ok(DType::F64),
        3 => Err(FfiError::new(adamw_status::DtypeMismatch, format!("`{}`: variables cannot be int64", what()))),
        other => Err(FfiError::invalid(format!(
            "`{}`: unknown dtype {other} (expected ADAMW_DTYPE_FLOAT32 or ADAMW_DTYPE_FLOAT64)",
            what()
        ))),
    }
}

fn dtype_code(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => adamw_dtype::Float32 as u32,
        DType::F64 => adamw_dtype::Float64 as u32,
        DType::I64 => adamw_dtype::Int64 as u32,
    }
}

/// # Safety
/// `shape` must be NULL or point at `ndim` elements.
unsafe fn shape_of<'a>(shape: *const usize, ndim: usize, what: &str) -> Result<&'a [usize], FfiError> {
    if ndim > ADAMW_MAX_NDIM {
        return Err(FfiError::invalid(format!(
            "`{what}` has {ndim} dimensions; at most {ADAMW_MAX_NDIM} are supported"
        )));
    }
    // SAFETY: forwarded contract.
    unsafe { slice(shape, ndim, what) }
}

/// # Safety
/// `data` must be NULL or point at `len` elements of `dtype`.
unsafe fn tensor_ref<'a>(dtype: DType, data: *const c_void, len: usize, what: &str) -> Result<TensorRef<'a>, FfiError> {
    // SAFETY: forwarded contract.
    unsafe {
        Ok(match dtype {
            DType::F64 => TensorRef::F64(slice(data.cast(), len, what)?),
            _ => TensorRef::F32(slice(data.cast(), len, what)?),
        })
    }
}

/// # Safety
/// As for `tensor_ref`, and the memory must not be referenced elsewhere for `'a`.
unsafe fn tensor_mut<'a>(dtype: DType, data: *mut c_void, len: usize, what: &str) -> Result<TensorMut<'a>, FfiError> {
    // SAFETY: forwarded contract.
    unsafe {
        Ok(match dtype {
            DType::F64 => TensorMut::F64(slice_mut(data.cast(), len, what)?),
            _ => TensorMut::F32(slice_mut(data.cast(), len, what)?),
        })
    }
}

/// Creates an optimizer from a config.
/// Ownership: `config` and what it points at are read during the call (callbacks and their
/// user_data are kept); on OK the caller owns `*out` and frees it with `adamw_optimizer_free`.
/// NULL: `config` and `out` must not be NULL. Threads: safe from any thread.
/// Callbacks in the config are called once here, with step 0.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a value Keras rejects, a flag not 0/1, an unknown
/// schedule kind, a name that is not UTF-8), CALLBACK_FAILED. `*out` is written only on OK.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_new(
    config: *const adamw_config,
    out: *mut *mut adamw_optimizer,
) -> adamw_status {
    guard(|| {
        if config.is_null() {
            return Err(FfiError::null("config"));
        }
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        // SAFETY: non-NULL; the caller passes a valid adamw_config.
        let config = unsafe { to_config(&*config) }?;
        let optimizer = Optimizer::new(config)?;
        // SAFETY: `out` is non-NULL and writable per the contract.
        unsafe { write(out, Handle::into_raw(optimizer), "out") }
    })
}

/// Creates an optimizer from Keras config JSON (what `get_config()` returns in Keras or here):
/// missing keys take Keras' defaults, a schedule is a serialized Keras schedule.
/// Ownership: `json` (`len` bytes of UTF-8, no NUL needed) is read during the call; on OK the
/// caller owns `*out`. NULL: `json` may be NULL only when `len` is 0; `out` must not be NULL.
/// Threads: safe from any thread.
/// Errors: NULL_ARGUMENT, INVALID_CONFIG (not JSON, unknown key, wrong type), INVALID_ARGUMENT
/// (a value Keras rejects, with Keras' message).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_from_config_json(
    json: *const c_char,
    len: usize,
    out: *mut *mut adamw_optimizer,
) -> adamw_status {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        // SAFETY: the caller promises `len` readable bytes at `json`.
        let bytes = unsafe { slice(json.cast::<u8>(), len, "json") }?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| FfiError::new(adamw_status::InvalidConfig, "config JSON is not valid UTF-8"))?;
        let optimizer = Optimizer::from_config_json(text)?;
        // SAFETY: `out` is non-NULL and writable per the contract.
        unsafe { write(out, Handle::into_raw(optimizer), "out") }
    })
}

/// Frees an optimizer and its state. NULL is a no-op.
/// Threads: no other call on this optimizer may be running or follow. Called from inside one of
/// the optimizer's own callbacks, or while another thread's call on it runs, it frees nothing
/// and records ADAMW_STATUS_BUSY for adamw_last_error (the memory is leaked, never corrupted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_free(optimizer: *mut adamw_optimizer) {
    if optimizer.is_null() {
        return;
    }
    // A foreign pointer is reported through adamw_last_error; there is no status to return.
    // SAFETY: the caller passes a handle from this library, not yet freed.
    let _ = guard(|| unsafe { handle::free(optimizer) });
}

/// Runs `body` on the locked optimizer of a handle.
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
unsafe fn with_optimizer(
    optimizer: *const adamw_optimizer,
    body: impl FnOnce(&mut handle::State) -> Result<(), FfiError>,
) -> adamw_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let handle = unsafe { handle::get(optimizer) }?;
        let mut state = handle.lock()?;
        body(&mut state)
    })
}

/// Writes `get_config()` as Keras-compatible JSON (UTF-8, NUL-terminated) into `buf`.
/// Size query: `buf` NULL and `cap` 0 give OK with the length in `*out_len`; then call with a
/// buffer of at least `*out_len + 1` bytes.
/// NULL: `optimizer`, `out_len` must not be NULL. Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not a handle), BUFFER_TOO_SMALL (`*out_len` holds
/// the length needed; nothing is written to `buf`), BUSY (from inside a callback).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_get_config(
    optimizer: *const adamw_optimizer,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a buffer of `cap` bytes.
    unsafe {
        with_optimizer(optimizer, |s| {
            let json = s.optimizer.get_config().to_string();
            write_out(json.as_bytes(), buf.cast(), cap, out_len, true)
        })
    }
}

/// Reads the iteration counter (the number of applied steps, plus any preset).
/// NULL: `optimizer`, `out` must not be NULL. Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_iterations(optimizer: *const adamw_optimizer, out: *mut i64) -> adamw_status {
    // SAFETY: the caller passes a live handle and a writable int64_t.
    unsafe { with_optimizer(optimizer, |s| write(out, s.optimizer.iterations(), "out")) }
}

/// Presets the iteration counter (Keras: `optimizer.iterations = ...`); before build only. The
/// bias correction and schedules continue from it, and checkpoints hold it.
/// NULL: `optimizer` must not be NULL. Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, ALREADY_BUILT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_iterations(
    optimizer: *mut adamw_optimizer,
    iterations: i64,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.set_iterations(iterations)?)) }
}

/// Reads the float32 learning rate of the last step (before any step: the rate at step 0), as
/// Keras' `optimizer.learning_rate` reads.
/// NULL: `optimizer`, `out` must not be NULL. Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_current_learning_rate(
    optimizer: *const adamw_optimizer,
    out: *mut f32,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a writable float.
    unsafe { with_optimizer(optimizer, |s| write(out, s.optimizer.current_learning_rate(), "out")) }
}

/// Sets a constant learning rate (Keras: `optimizer.learning_rate = x`), from the next step on.
/// NULL: `optimizer` must not be NULL. Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (the optimizer has a schedule or callback), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_learning_rate(
    optimizer: *mut adamw_optimizer,
    learning_rate: f64,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.set_learning_rate(learning_rate)?)) }
}

/// Excludes variables from weight decay (Keras: `exclude_from_weight_decay(var_list, var_names)`);
/// before build only; a second call replaces both lists. `variables` are indices into the list
/// build will receive; `patterns` are regular expressions searched in each variable's `name:0`.
/// Ownership: both arrays and the strings are read during the call.
/// NULL: `optimizer` must not be NULL; `variables` / `patterns` may be NULL only when their count is 0.
/// Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a pattern that is not a valid regex or not UTF-8),
/// ALREADY_BUILT, BUSY. An index beyond the built variables fails the later build (UNKNOWN_VARIABLE).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_exclude_from_weight_decay(
    optimizer: *mut adamw_optimizer,
    variables: *const usize,
    num_variables: usize,
    patterns: *const *const c_char,
    num_patterns: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and arrays of the stated lengths.
    unsafe {
        with_optimizer(optimizer, |s| {
            let variables = slice(variables, num_variables, "variables")?;
            let pointers = slice(patterns, num_patterns, "patterns")?;
            let mut strings = Vec::with_capacity(pointers.len());
            for &p in pointers {
                strings.push(utf8(p, "patterns[i]")?);
            }
            Ok(s.optimizer.exclude_from_weight_decay(variables, &strings)?)
        })
    }
}

/// Builds the optimizer's state (m, v, and vhat / averages when enabled) over `variables`;
/// afterwards a variable is named by its index in this list. Once per optimizer.
/// Ownership: the array, names, shapes and data are read during the call and copied.
/// NULL: `optimizer` must not be NULL; `variables` may be NULL only when `num_variables` is 0.
/// Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown dtype, too many dimensions, bad name),
/// DTYPE_MISMATCH, SHAPE_MISMATCH, UNKNOWN_VARIABLE (an excluded index beyond the list),
/// ALREADY_BUILT, OUT_OF_MEMORY (allocation failed or a shape overflows), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_build(
    optimizer: *mut adamw_optimizer,
    variables: *const adamw_variable,
    num_variables: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `num_variables` valid descriptors.
    unsafe {
        with_optimizer(optimizer, |s| {
            let descriptors = slice(variables, num_variables, "variables")?;
            let mut specs = Vec::with_capacity(descriptors.len());
            let mut values = Vec::with_capacity(descriptors.len());
            for (i, d) in descriptors.iter().enumerate() {
                let name = utf8(d.name, &format!("variables[{i}].name"))?;
                let dtype = dtype_of(d.dtype, || format!("variables[{i}].dtype"))?;
                let shape = shape_of(d.shape, d.ndim, &format!("variables[{i}].shape"))?;
                let mut spec = VariableSpec::new(name, dtype, shape);
                let mut len = spec.element_count()?;
                match d.sharded {
                    0 => {}
                    1 => {
                        spec = spec.sharded(d.shard_offset, d.shard_len);
                        len = d.shard_len.min(len);
                    }
                    other => {
                        return Err(FfiError::invalid(format!("`variables[{i}].sharded` must be 0 or 1, got {other}")));
                    }
                }
                // The values are read only for the EMA averages; otherwise `data` is ignored.
                if s.optimizer.config().use_ema {
                    if d.data.is_null() {
                        return Err(FfiError::null(&format!("variables[{i}].data (use_ema needs the initial values)")));
                    }
                    values.push(tensor_ref(dtype, d.data, len, &format!("variables[{i}].data"))?);
                }
                specs.push(spec);
            }
            // Scratch for apply_gradients, so that a step allocates nothing: a copy of the
            // entries, and up to four byte ranges per entry (data, dense or values, indices).
            let oom = |_| FfiError::new(adamw_status::OutOfMemory, "too many variables");
            let mut entries = Vec::new();
            entries.try_reserve_exact(num_variables).map_err(oom)?;
            let mut ranges = Vec::new();
            ranges.try_reserve_exact(num_variables.saturating_mul(4)).map_err(oom)?;
            s.optimizer.build(&specs, &values)?;
            s.entries = entries;
            s.ranges = ranges;
            Ok(())
        })
    }
}

/// Sets the number of threads a step uses, as `adamw_config.threads` does (0: the process's
/// shared pool; 1: the calling thread only; N > 1: a pool of N threads owned by this optimizer,
/// started here). Any time; the results are the same bits for every value.
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not a handle), OUT_OF_MEMORY (threads could not be
/// started; the setting is unchanged), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_threads(optimizer: *mut adamw_optimizer, threads: u32) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.set_threads(threads as usize)?)) }
}

/// Reserves room for sparse gradients of up to `max_indices` indices in one variable, so that no
/// later step allocates (otherwise the first step with more indices than before grows a buffer).
/// NULL: `optimizer`. Threads: serialized. Errors: NULL_ARGUMENT, INVALID_ARGUMENT, OUT_OF_MEMORY, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_reserve_sparse(
    optimizer: *mut adamw_optimizer,
    max_indices: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.reserve_sparse(max_indices)?)) }
}

/// The entries of a C `apply_gradients` call: the handle's own copy of the caller's array
/// (so that a write to a variable cannot change an entry after it was checked), structurally
/// checked; slices are made on demand.
struct Entries<'a> {
    entries: &'a [adamw_gradient],
}

impl Entries<'_> {
    /// Checks every pointer and length of the entries, and that no buffer the call writes
    /// overlaps any other buffer of the call, using `ranges` (capacity reserved at build).
    fn check(entries: &[adamw_gradient], ranges: &mut Vec<ByteRange>) -> Result<(), FfiError> {
        ranges.clear();
        for (i, e) in entries.iter().enumerate() {
            let dtype = dtype_of(e.dtype, || format!("entries[{i}].dtype"))?;
            let size = dtype.size();
            let check = |ptr: *const c_void, len: usize, what: &str| {
                check_parts(ptr, len, size, size, || format!("entries[{i}].{what}")).map(drop)
            };
            check(e.data, e.len, "data")?;
            let sparse = !e.values.is_null() || !e.indices.is_null();
            if !e.dense.is_null() && sparse {
                return Err(FfiError::invalid(format!("entries[{i}] has both a dense and a sparse gradient")));
            }
            if !e.dense.is_null() {
                check(e.dense, e.len, "dense")?;
            }
            if sparse {
                check(e.values, e.num_values, "values")?;
                check_parts(e.indices, e.num_indices, 8, 8, || format!("entries[{i}].indices"))?;
            }
            let bytes = |len: usize| len * size;
            ranges.push(ByteRange::of(e.data.cast::<u8>(), bytes(e.len), true));
            if !e.dense.is_null() {
                ranges.push(ByteRange::of(e.dense.cast::<u8>(), bytes(e.len), false));
            } else if sparse {
                ranges.push(ByteRange::of(e.values.cast::<u8>(), bytes(e.num_values), false));
                ranges.push(ByteRange::of(e.indices.cast::<u8>(), e.num_indices * 8, false));
            }
        }
        check_disjoint(ranges)
    }
}

impl UpdateSource for Entries<'_> {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&mut self, i: usize) -> Update<'_> {
        let e = self.entries[i];
        let dtype = if e.dtype == 2 { DType::F64 } else { DType::F32 };
        // SAFETY: `Entries::check` verified every pointer (non-NULL where the length is
        // non-zero, aligned, size within isize::MAX) and that written buffers overlap nothing;
        // the caller guarantees each points at the stated number of elements for the call.
        unsafe {
            let value = tensor_mut(dtype, e.data, e.len, "data").unwrap_or(TensorMut::F32(&mut []));
            let gradient = if !e.dense.is_null() {
                Some(Gradient::Dense(tensor_ref(dtype, e.dense, e.len, "dense").unwrap_or(TensorRef::F32(&[]))))
            } else if !e.values.is_null() || !e.indices.is_null() {
                Some(Gradient::Sparse {
                    indices: slice(e.indices, e.num_indices, "indices").unwrap_or(&[]),
                    values: tensor_ref(dtype, e.values, e.num_values, "values").unwrap_or(TensorRef::F32(&[])),
                })
            } else {
                None
            };
            Update { variable: e.variable, value, gradient }
        }
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
        return Err(crate::Error::NotBuilt(
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
    Entries::check(&state.entries, &mut state.ranges)?;
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
            let iterations = opt.apply_gradients(source)?;
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
/// Threads: serialized with other calls on this optimizer; the work may run on several threads.
/// A callback that hands work to another thread which calls this optimizer deadlocks (BUSY is
/// detected on the calling thread only); calling from a rayon worker thread that may run other
/// jobs on the same optimizer while it waits can return BUSY.
/// Allocation: libadamw allocates nothing once built, except that a sparse gradient with more
/// indices than any before grows a buffer (see `adamw_optimizer_reserve_sparse`). With a pool
/// (`threads` 0 or N > 1), a step with a variable of 64K elements or more is handed to the pool
/// through its job queue, which allocates a 1.5 KB block about every 63 such steps; with
/// `threads` = 1 nothing at all is allocated.
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
/// Errors: those of apply_gradients; CALLBACK_FAILED when `gradient_fn` returns non-zero.
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
                return Err(crate::Error::CallbackFailed(format!("the gradient callback returned {rc}")).into());
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
                let dtype = dtype_of(v.dtype, || format!("variables[{i}].dtype"))?;
                // Checks pointer, alignment and size before any slice exists.
                tensor_ref(dtype, v.data, v.len, &format!("variables[{i}].data"))?;
                ranges.push(ByteRange::of(v.data.cast::<u8>(), v.len * dtype.size(), true));
            }
            check_disjoint(&mut ranges)?;
            for (i, v) in vars.iter().enumerate() {
                let dtype = dtype_of(v.dtype, || "dtype".into())?;
                let value = tensor_mut(dtype, v.data, v.len, &format!("variables[{i}].data"))?;
                updates.push(Update { variable: v.variable, value, gradient: None });
            }
            Ok(s.optimizer.finalize_variable_values(updates.as_mut_slice())?)
        })
    }
}

/// The number of optimizer variables (Keras' `len(optimizer.variables)`): 1 (the counter)
/// before build. NULL: `optimizer`, `out`. Threads: serialized. Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_num_variables(
    optimizer: *const adamw_optimizer,
    out: *mut usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a writable size_t.
    unsafe { with_optimizer(optimizer, |s| write(out, s.optimizer.num_variables(), "out")) }
}

/// Describes optimizer variable `index` in Keras' order: 0 is the int64 counter, then (EMA) one
/// average per variable, then m and v interleaved per variable, then (amsgrad) one vhat each.
/// NULL: `optimizer`, `out`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, UNKNOWN_VARIABLE (index out of range), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_variable_info(
    optimizer: *const adamw_optimizer,
    index: usize,
    out: *mut adamw_variable_info,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a writable struct.
    unsafe {
        with_optimizer(optimizer, |s| {
            let var = variable(&s.optimizer, index)?;
            let mut info = adamw_variable_info {
                dtype: dtype_code(var.data.dtype()),
                ndim: var.shape.len(),
                shape: [0; ADAMW_MAX_NDIM],
                len: var.data.len(),
            };
            info.shape[..var.shape.len()].copy_from_slice(var.shape);
            write(out, info, "out")
        })
    }
}

fn variable(opt: &Optimizer, index: usize) -> Result<crate::OptimizerVariable<'_>, FfiError> {
    opt.variable(index).ok_or_else(|| {
        FfiError::new(
            adamw_status::UnknownVariable,
            format!("optimizer variable {index} does not exist; there are {}", opt.num_variables()),
        )
    })
}

/// Writes the name of optimizer variable `index` ("iteration", "AdamW/m/dense/kernel", ...),
/// NUL-terminated, with the size-query convention of `adamw_optimizer_get_config`.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, UNKNOWN_VARIABLE, BUFFER_TOO_SMALL, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_variable_name(
    optimizer: *const adamw_optimizer,
    index: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a buffer of `cap` bytes.
    unsafe {
        with_optimizer(optimizer, |s| {
            write_out(variable(&s.optimizer, index)?.name.as_bytes(), buf.cast(), cap, out_len, true)
        })
    }
}

/// Copies optimizer variable `index` into `out` (`len` elements of `dtype`, which must be the
/// variable's: see `adamw_optimizer_variable_info`).
/// NULL: `optimizer` must not be NULL; `out` may be NULL only when `len` is 0. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, UNKNOWN_VARIABLE, DTYPE_MISMATCH, SHAPE_MISMATCH, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_get_variable(
    optimizer: *const adamw_optimizer,
    index: usize,
    dtype: u32,
    out: *mut c_void,
    len: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `len` writable elements of `dtype`.
    unsafe {
        with_optimizer(optimizer, |s| {
            let var = variable(&s.optimizer, index)?;
            if dtype != dtype_code(var.data.dtype()) {
                return Err(FfiError::new(
                    adamw_status::DtypeMismatch,
                    format!(
                        "optimizer variable {index} ({}) is {}; dtype {dtype} was asked for",
                        var.name,
                        var.data.dtype().name()
                    ),
                ));
            }
            if len != var.data.len() {
                return Err(FfiError::new(
                    adamw_status::ShapeMismatch,
                    format!(
                        "optimizer variable {index} ({}) has {} elements; the buffer holds {len}",
                        var.name,
                        var.data.len()
                    ),
                ));
            }
            match var.data {
                WeightData::I64(x) => slice_mut(out.cast::<i64>(), len, "out")?.copy_from_slice(x),
                WeightData::F32(x) => slice_mut(out.cast::<f32>(), len, "out")?.copy_from_slice(x),
                WeightData::F64(x) => slice_mut(out.cast::<f64>(), len, "out")?.copy_from_slice(x),
            }
            Ok(())
        })
    }
}

/// Keras' `set_weights`: assigns `weights[i]` to optimizer variable i for i < min(count, num_weights)
/// (Keras zips the lists: fewer weights set a prefix, extra ones are ignored). Index 0 is the
/// int64 counter. Every weight is checked before any is assigned.
/// Ownership: read during the call. NULL: `optimizer` must not be NULL; `weights` may be NULL
/// only when `num_weights` is 0. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown dtype, too many dimensions), NOT_BUILT,
/// SHAPE_MISMATCH (Keras' message), DTYPE_MISMATCH, OUT_OF_MEMORY (a shape that overflows),
/// BUSY. On error nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_weights(
    optimizer: *mut adamw_optimizer,
    weights: *const adamw_weight,
    num_weights: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and valid weights.
    unsafe {
        with_optimizer(optimizer, |s| {
            let raw = slice(weights, num_weights, "weights")?;
            let mut converted = Vec::with_capacity(raw.len());
            for (i, w) in raw.iter().enumerate() {
                let shape = shape_of(w.shape, w.ndim, &format!("weights[{i}].shape"))?;
                let len = shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| FfiError::new(adamw_status::OutOfMemory, format!("weights[{i}] shape overflows")))?;
                let what = format!("weights[{i}].data");
                let data = match w.dtype {
                    1 => WeightData::F32(slice(w.data.cast(), len, &what)?),
                    2 => WeightData::F64(slice(w.data.cast(), len, &what)?),
                    3 => WeightData::I64(slice(w.data.cast(), len, &what)?),
                    other => return Err(FfiError::invalid(format!("weights[{i}]: unknown dtype {other}"))),
                };
                converted.push(Weight { shape, data });
            }
            Ok(s.optimizer.set_weights(&converted)?)
        })
    }
}

/// Keras' `save_own_variables`: writes every optimizer variable into `buf` as a safetensors file
/// (keys "0".."N-1" in `variables` order; see README), with the size-query convention:
/// `buf` NULL and `cap` 0 give the size in `*out_len`.
/// NULL: `optimizer`, `out_len`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUFFER_TOO_SMALL (`*out_len` holds the size), OUT_OF_MEMORY, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_save_own_variables(
    optimizer: *const adamw_optimizer,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a buffer of `cap` bytes.
    unsafe { with_optimizer(optimizer, |s| write_out(&s.optimizer.save_own_variables()?, buf, cap, out_len, false)) }
}

/// Keras' `load_own_variables`: replaces every optimizer variable (the counter included) from
/// bytes written by `adamw_optimizer_save_own_variables` for an optimizer built the same way
/// (before build: a checkpoint of an unbuilt optimizer, which holds only the counter).
/// Ownership: `buf` is read during the call. NULL: `optimizer` must not be NULL; `buf` may be NULL only when `len` is 0.
/// Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, INVALID_CHECKPOINT (not a libadamw checkpoint:
/// truncated, corrupted, foreign), CHECKPOINT_MISMATCH (another variable count, shape or dtype),
/// BUSY. On error nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_load_own_variables(
    optimizer: *mut adamw_optimizer,
    buf: *const u8,
    len: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `len` readable bytes.
    unsafe {
        with_optimizer(optimizer, |s| {
            let bytes = slice(buf, len, "buf")?;
            Ok(s.optimizer.load_own_variables(bytes)?)
        })
    }
}

/// Saves every optimizer variable to the file `path` (the format of
/// `adamw_optimizer_save_own_variables`), atomically: a temporary file in the same directory is
/// written, flushed to disk and renamed over `path`, so a crash or a write error (a full or
/// read-only disk) leaves the previous file intact.
/// Ownership: `path` (a NUL-terminated file name) is read during the call.
/// NULL: `optimizer`, `path` must not be NULL. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, IO (the system's reason in the message), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_save_file(
    optimizer: *const adamw_optimizer,
    path: *const c_char,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a NUL-terminated path.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.save_own_variables_to_file(&file_path(path)?)?)) }
}

/// Loads every optimizer variable from a file written by `adamw_optimizer_save_file`, as
/// `adamw_optimizer_load_own_variables` does from a buffer.
/// NULL: `optimizer`, `path` must not be NULL. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, IO (missing or unreadable file), INVALID_CHECKPOINT
/// (truncated, corrupted: the CRC-32 does not match, or foreign), CHECKPOINT_MISMATCH, BUSY.
/// On error nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_load_file(
    optimizer: *mut adamw_optimizer,
    path: *const c_char,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a NUL-terminated path.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.load_own_variables_from_file(&file_path(path)?)?)) }
}

/// A file name from C: any bytes but NUL (not necessarily UTF-8, as on Unix).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
unsafe fn file_path(path: *const c_char) -> Result<std::path::PathBuf, FfiError> {
    if path.is_null() {
        return Err(FfiError::null("path"));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let bytes = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Err(FfiError::invalid("`path` is empty"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(std::path::PathBuf::from)
            .map_err(|_| FfiError::invalid("`path` is not valid UTF-8"))
    }
}

/// ADAMW_ABI_VERSION of the library actually linked; compare with the header's macro.
/// Threads: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn adamw_abi_version() -> u32 {
    ADAMW_ABI_VERSION
}

/// The library version ("MAJOR.MINOR.PATCH"), a static NUL-terminated string; never free it.
/// Threads: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn adamw_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
