//! Keras' `optimizer.variables` from C: count, description, name, copy out, `set_weights`.

use std::ffi::{c_char, c_void};

use super::handle::{adamw_optimizer, with_optimizer};
use super::slice::{shape_of, slice, tensor_mut, tensor_ref, write, write_out};
use super::status::{FfiError, adamw_status};
use super::types::{ADAMW_MAX_NDIM, adamw_variable_info, adamw_weight, decode_dtype, dtype_code};
use crate::optimizer::{Optimizer, StateInfo, Weight};

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
/// average per variable, then m and v interleaved per variable, then (amsgrad) one vhat each;
/// then libadamw's own: a float32 master per variable that has one, and (gradient accumulation)
/// one accumulator per variable.
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
                dtype: dtype_code(var.dtype),
                ndim: var.shape.len(),
                shape: [0; ADAMW_MAX_NDIM],
                len: var.len,
            };
            info.shape[..var.shape.len()].copy_from_slice(&var.shape);
            write(out, info, "out")
        })
    }
}

fn variable(opt: &Optimizer, index: usize) -> Result<StateInfo, FfiError> {
    opt.variable_info(index).ok_or_else(|| {
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
            // The dtype the caller names sizes its buffer: it must be the variable's before the
            // buffer is looked at.
            let dtype = decode_dtype(dtype, || "dtype".into())?;
            s.optimizer.check_variable_buffer(index, dtype, len)?;
            Ok(s.optimizer.read_variable(index, tensor_mut(dtype, out, len, "out")?)?)
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
                let dtype = decode_dtype(w.dtype, || format!("weights[{i}].dtype"))?;
                // The dtype sizes the buffer: it is checked against the variable's first.
                if s.optimizer.is_built() {
                    s.optimizer.check_weight_dtype(i, dtype)?;
                }
                converted.push(Weight { shape, values: tensor_ref(dtype, w.data, len, &what)? });
            }
            Ok(s.optimizer.set_weights(&converted)?)
        })
    }
}
