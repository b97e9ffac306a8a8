//! The `adamw_optimizer` handle's life and settings: creation, free, config, counter,
//! learning rate, exclusion, build, threads.

use std::ffi::{c_char, c_void};

use super::config::{adamw_config, to_config};
use super::guard::guard;
use super::handle::{self, Handle, adamw_optimizer, with_optimizer};
use super::slice::{shape_of, slice, tensor_ref, utf8, write, write_out};
use super::status::{FfiError, adamw_status};
use super::types::{adamw_device_kind, adamw_variable, variable_dtype};
use crate::config::Device;
use crate::optimizer::{Optimizer, VariableSpec};

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
/// Errors: NULL_ARGUMENT, INVALID_CONFIG (not JSON, unknown key, wrong type, a LossScaleOptimizer
/// around another), INVALID_ARGUMENT (a value Keras rejects, with Keras' message; a hostile loss
/// scale, as `adamw_optimizer_set_loss_scale` refuses it).
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

/// Reads the iteration counter (the number of applied steps, plus any preset; with gradient
/// accumulation Keras 3's `iterations`, the updates made: see
/// `adamw_optimizer_set_gradient_accumulation_steps`).
/// NULL: `optimizer`, `out` must not be NULL. Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_iterations(optimizer: *const adamw_optimizer, out: *mut i64) -> adamw_status {
    // SAFETY: the caller passes a live handle and a writable int64_t.
    unsafe { with_optimizer(optimizer, |s| write(out, s.optimizer.iterations(), "out")) }
}

/// Presets the iteration counter (Keras: `optimizer.iterations = ...`); before build only. The
/// bias correction and schedules continue from it, and checkpoints hold it. With gradient
/// accumulation of N calls, the calls are set to `iterations * N`.
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
/// build will receive; `patterns` are regular expressions searched in each variable's `name:0`
/// (Rust's regex syntax; `\w`, `\d`, `\s` and `(?i)` Unicode-aware as in Python's `re`; no
/// look-around and no Unicode property classes `\p{..}`, which Python lacks too).
/// Ownership: both arrays and the strings are read during the call.
/// NULL: `optimizer` must not be NULL; `variables` / `patterns` may be NULL only when their count is 0.
/// Threads: serialized with other calls.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a pattern that is not a valid regex or not UTF-8),
/// ALREADY_BUILT, BUSY. An index beyond the variables build receives makes that build fail.
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
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown dtype, too many dimensions, bad name, a shard
/// outside its variable or without a mesh), DTYPE_MISMATCH (not a float dtype),
/// UNKNOWN_VARIABLE (an excluded index beyond the list),
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
            let (specs, values) = variable_specs(&s.optimizer, variables, num_variables)?;
            s.reserve_step_scratch(num_variables)?;
            Ok(s.optimizer.build(&specs, &values)?)
        })
    }
}

/// Adds variables after build (a new head, a layer unfrozen, a grown vocabulary): numbered after
/// the built ones, their state as build would have made it (m and v zero; with EMA or master
/// weights `data` is read as at build; a zeroed gradient accumulator). Exclusion patterns and
/// weight_decay_min_ndim apply to them. Their bias correction uses the optimizer's iterations,
/// as Keras does for every variable (torch counts steps per parameter: a parameter added late
/// starts its own count there, here it does not). Names must differ from every variable's.
/// Checkpoints written before and after an addition load only into an optimizer with the same
/// variables (CHECKPOINT_MISMATCH otherwise). On MPI ranks (a mesh) and on a device, refused.
/// Ownership: read during the call and copied. NULL: `optimizer`; `variables` may be NULL only
/// when `num_variables` is 0. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a name that exists, a mesh, a device, a shard, and
/// what build refuses), DTYPE_MISMATCH (not a float dtype), NOT_BUILT, OUT_OF_MEMORY (allocation
/// failed or a shape overflows), BUSY. On error nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_add_variables(
    optimizer: *mut adamw_optimizer,
    variables: *const adamw_variable,
    num_variables: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `num_variables` valid descriptors.
    unsafe {
        with_optimizer(optimizer, |s| {
            let (specs, values) = variable_specs(&s.optimizer, variables, num_variables)?;
            // The step's scratch grows with the variables: room for every variable.
            s.reserve_step_scratch(s.optimizer.num_built_variables().saturating_add(num_variables))?;
            Ok(s.optimizer.add_variables(&specs, &values)?)
        })
    }
}

/// The specs of `num_variables` C descriptors, and their values where build needs them.
///
/// # Safety
/// `variables` points to `num_variables` descriptors whose names, shapes and data are valid.
unsafe fn variable_specs<'a>(
    optimizer: &crate::Optimizer,
    variables: *const adamw_variable,
    num_variables: usize,
) -> Result<(Vec<VariableSpec>, Vec<crate::TensorRef<'a>>), FfiError> {
    // SAFETY: as the caller promises.
    unsafe {
        let descriptors = slice(variables, num_variables, "variables")?;
        let mut specs = Vec::with_capacity(descriptors.len());
        let mut lens = Vec::with_capacity(descriptors.len());
        for (i, d) in descriptors.iter().enumerate() {
            let name = utf8(d.name, &format!("variables[{i}].name"))?;
            let dtype = variable_dtype(d.dtype, || format!("variables[{i}].dtype"))?;
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
            specs.push(spec);
            lens.push(len);
        }
        // The values are read only for the EMA averages and the float32 masters; otherwise
        // `data` is ignored.
        let mut values = Vec::with_capacity(descriptors.len());
        if optimizer.needs_initial_values(&specs) {
            for (i, (d, spec)) in descriptors.iter().zip(&specs).enumerate() {
                if d.data.is_null() {
                    return Err(FfiError::null(&format!(
                        "variables[{i}].data (use_ema and master_weights need the initial values)"
                    )));
                }
                values.push(tensor_ref(spec.dtype, d.data, lens[i], &format!("variables[{i}].data"))?);
            }
        }
        Ok((specs, values))
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

/// Moves the optimizer to a device: `kind` an `adamw_device_kind`, `ordinal` the GPU for
/// ADAMW_DEVICE_KIND_CUDA (ignored otherwise). The optimizer state then lives there and every
/// step runs there, with the CPU's bits; get_config reports "jit_compile": true. The kernels are
/// compiled here, for the GPU's architecture. Before build only; needs `jit_compile` 1 (Keras'
/// device path).
/// From then on the `data`, `dense` and `values` buffers of `adamw_gradient` (apply_gradients,
/// minimize) and the `data` of `adamw_variable_data` (finalize_variable_values) are device
/// memory (CUDA device pointers, in this optimizer's context); sparse `indices` are host memory,
/// or device memory when the entry's dtype has ADAMW_INDICES_ON_DEVICE (they are then copied to
/// the host, a wait, and checked there); build's initial `data` and every optimizer-variable
/// buffer (get_variable, set_weights, checkpoints) are host memory, copies through the host. Every argument check runs on
/// the host before anything is enqueued. See `adamw_optimizer_set_stream` for what a step waits for.
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (an unknown kind, jit_compile 0, not a handle),
/// ALREADY_BUILT, DEVICE (no CUDA driver, no NVRTC, no GPU `ordinal`, a library built without
/// the device: the message says which; nothing changed), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_device(
    optimizer: *mut adamw_optimizer,
    kind: u32,
    ordinal: u32,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe {
        with_optimizer(optimizer, |s| {
            let device = match kind {
                k if k == adamw_device_kind::Cpu as u32 => Device::Cpu,
                k if k == adamw_device_kind::Cuda as u32 => Device::Cuda(ordinal),
                k if k == adamw_device_kind::HostKernels as u32 => Device::HostKernels,
                other => {
                    return Err(FfiError::invalid(format!(
                        "`kind` must be an adamw_device_kind (0, 1 or 2), got {other}"
                    )));
                }
            };
            Ok(s.optimizer.set_device(device)?)
        })
    }
}

/// For an optimizer on a CUDA device: enqueues its steps, copies and finalize_variable_values
/// on `stream` (a `cudaStream_t` / `CUstream` of the optimizer's context; NULL: the default
/// stream) from now on. Any time between calls.
/// A step returns once its work is enqueued, without waiting for the device, except that: it
/// waits for the results it needs on the host when it clips by norm (one number per leaf of
/// 8,192 float32 elements) or checks for non-finite gradients (the guard, a dynamic loss scale:
/// one number per gradient); uploading its table of variables (only when the call's buffers
/// or clips differ from the previous call's) and sparse indices waits for the stream's earlier
/// work. The caller must keep every buffer of the call alive and unchanged until the stream
/// has run the step, and synchronize the stream before reading the variables on the host.
/// Ownership: the stream is borrowed, never created or destroyed here; it must stay valid while
/// the optimizer uses it (until the next set_stream, or adamw_optimizer_free, which first waits
/// for the work enqueued on it).
/// NULL: `optimizer`; `stream` NULL is the default stream. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not on a device, not a handle), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_stream(
    optimizer: *mut adamw_optimizer,
    stream: *mut c_void,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.set_stream(stream as u64)?)) }
}

/// Gives every bfloat16 and float16 variable a float32 master copy and float32 slots (the
/// extension `master_weights`, off by default; the Keras-style config JSON spells it
/// "master_weights": true). A step then updates the master exactly as Keras updates a float32
/// variable, from the gradient widened exactly (a float32 gradient is taken too), and writes the
/// master rounded to nearest even into the caller's variable. Build then needs every variable's
/// `data` (the masters start as copies). The masters are optimizer variables, after Keras' own,
/// named `<optimizer name>/master/<variable>`. Before build only.
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (`enabled` not 0 or 1, not a handle), ALREADY_BUILT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_master_weights(
    optimizer: *mut adamw_optimizer,
    enabled: u8,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe {
        with_optimizer(optimizer, |s| {
            let enabled = match enabled {
                0 => false,
                1 => true,
                other => return Err(FfiError::invalid(format!("`enabled` must be 0 or 1, got {other}"))),
            };
            Ok(s.optimizer.set_master_weights(enabled)?)
        })
    }
}

/// Puts Keras' LossScaleOptimizer around this AdamW (tf_keras.mixed_precision.LossScaleOptimizer;
/// Keras' defaults: dynamic 1, initial_scale 32768, dynamic_growth_steps 2000). The caller
/// multiplies its loss by the current scale (adamw_optimizer_loss_scale) and passes the scaled
/// gradients; each step unscales them (times 1 / scale, as Keras' get_unscaled_gradients). With
/// `dynamic` 1, a step whose unscaled gradients hold NaN or an infinity changes no variable and
/// no slot but still advances the iteration counter, and halves the scale (never below 1);
/// `dynamic_growth_steps` finite steps in a row double it (if the double is finite). With
/// `dynamic` 0 the scale stays `initial_scale` and every step is applied. Under a mesh every
/// rank takes the same decision (one more all-reduce of one value per step). get_config then
/// writes, and from_config reads, the LossScaleOptimizer's config. A dynamic scale's value and
/// counter are in checkpoints; a fixed scale is never changed by a load (docs/numerics.md §19).
/// Before build only. A deliberate difference from Keras, which accepts them: `initial_scale`
/// must be a positive finite number that float32 holds as a normal number (not NaN, not
/// infinite, not 0 or negative, not beyond 3.4028235e+38, not below 1.1754944e-38), and a
/// dynamic scale's `dynamic_growth_steps` at least 1 (ignored with `dynamic` 0); the same
/// message comes from a config's from_config and a Keras archive's config.
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (`dynamic` not 0 or 1; dynamic together with
/// reject_non_finite_gradients; a hostile `initial_scale` or `dynamic_growth_steps`, nothing
/// changed), ALREADY_BUILT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_loss_scale(
    optimizer: *mut adamw_optimizer,
    dynamic: u8,
    initial_scale: f64,
    dynamic_growth_steps: i64,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe {
        with_optimizer(optimizer, |s| {
            let dynamic = match dynamic {
                0 => false,
                1 => true,
                other => return Err(FfiError::invalid(format!("`dynamic` must be 0 or 1, got {other}"))),
            };
            let loss_scale = crate::config::LossScale { dynamic, initial_scale, dynamic_growth_steps };
            Ok(s.optimizer.set_loss_scale(Some(loss_scale))?)
        })
    }
}

/// Reads the loss scale: its current value into `*out_scale` (multiply the loss by it) and the
/// number of finite steps since it last changed into `*out_counter`. Before build it is the
/// initial scale.
/// NULL: `optimizer`, `out_scale` must not be NULL; `out_counter` may be NULL. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (the optimizer has no loss scale), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_loss_scale(
    optimizer: *const adamw_optimizer,
    out_scale: *mut f32,
    out_counter: *mut i64,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and writable outputs.
    unsafe {
        with_optimizer(optimizer, |s| {
            if out_scale.is_null() {
                return Err(FfiError::null("out_scale"));
            }
            let (scale, counter) = s.optimizer.loss_scale().ok_or_else(|| {
                FfiError::invalid("this optimizer has no loss scale (see adamw_optimizer_set_loss_scale)")
            })?;
            write(out_scale, scale, "out_scale")?;
            if !out_counter.is_null() {
                write(out_counter, counter, "out_counter")?;
            }
            Ok(())
        })
    }
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
