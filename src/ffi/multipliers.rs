//! Per-variable controls beyond Keras 2: learning-rate and weight-decay multipliers, the
//! `weight_decay_min_ndim` rule, what the optimizer does with each model variable, and resetting
//! one variable's state.

use std::ffi::c_void;

use super::handle::{adamw_optimizer, with_optimizer};
use super::slice::{tensor_ref, write};
use super::status::{FfiError, adamw_status};
use super::types::{adamw_variable_properties, decode_dtype, dtype_code};
use crate::optimizer::Multipliers;

/// Sets the learning-rate and weight-decay multipliers of model variable `variable` (its
/// position in the list given to build), from the next step on; any time after build, as often
/// as wanted. The variable then steps exactly as Keras' AdamW would with, for it alone,
/// `learning_rate` = the step's float32 rate (after the schedule or callback) times
/// `learning_rate_multiplier`, computed in double and rounded once to float32, and
/// `weight_decay` = `weight_decay` times `weight_decay_multiplier` in double, cast to the
/// variable's dtype as Keras casts it (docs/numerics.md §22). 1 and 1 (the default) is Keras'
/// step, bit for bit, with nothing multiplied; a weight-decay multiplier of 0 is the same bits as
/// `adamw_optimizer_exclude_from_weight_decay`, and an excluded variable stays undecayed
/// whatever its multiplier. Multipliers are not part of the config, but checkpoints hold them
/// (when one is not 1) and a load restores them. On MPI ranks, set the same on every rank. On a
/// device too: such a variable hands the kernels scalars of its own (the CPU engine's bits).
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a multiplier negative, NaN or infinite; not a
/// handle), NOT_BUILT, UNKNOWN_VARIABLE (`variable` out of range), BUSY. On error nothing
/// changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_variable_multipliers(
    optimizer: *mut adamw_optimizer,
    variable: usize,
    learning_rate_multiplier: f64,
    weight_decay_multiplier: f64,
) -> adamw_status {
    let multipliers = Multipliers { learning_rate: learning_rate_multiplier, weight_decay: weight_decay_multiplier };
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.set_multipliers(variable, multipliers)?)) }
}

/// Variables with fewer than `min_ndim` dimensions are excluded from weight decay (an extension;
/// 0, the default, excludes none; 2 is the rule of llm.c and nanoGPT: biases, norm scales and
/// scalars are not decayed). Applies at build, together with
/// `adamw_optimizer_exclude_from_weight_decay`. The config JSON spells it
/// "weight_decay_min_ndim": N, written by get_config only when not 0. Before build only.
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (`min_ndim` over ADAMW_MAX_NDIM, not a handle),
/// ALREADY_BUILT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_weight_decay_min_ndim(
    optimizer: *mut adamw_optimizer,
    min_ndim: u32,
) -> adamw_status {
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.set_weight_decay_min_ndim(min_ndim as usize)?)) }
}

/// What the optimizer does with model variable `variable` (its position in the list given to
/// build): its dtype and rank, whether its steps decay it and why not, its multipliers, and
/// whether it has a float32 master copy.
/// NULL: `optimizer`, `out`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NOT_BUILT, UNKNOWN_VARIABLE, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_variable_properties(
    optimizer: *const adamw_optimizer,
    variable: usize,
    out: *mut adamw_variable_properties,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a writable struct.
    unsafe {
        with_optimizer(optimizer, |s| {
            let opt = &s.optimizer;
            if !opt.is_built() {
                return Err(FfiError::new(
                    adamw_status::NotBuilt,
                    "variable_properties: the optimizer is not built yet",
                ));
            }
            let p = opt.variable_properties(variable).ok_or_else(|| {
                FfiError::new(
                    adamw_status::UnknownVariable,
                    format!(
                        "variable index {variable} is out of range: the optimizer was built with {} variables",
                        opt.num_built_variables()
                    ),
                )
            })?;
            let properties = adamw_variable_properties {
                dtype: dtype_code(p.dtype),
                ndim: p.ndim,
                decayed: p.decayed as u8,
                excluded: p.excluded as u8,
                has_master: p.has_master as u8,
                learning_rate_multiplier: p.multipliers.learning_rate,
                weight_decay_multiplier: p.multipliers.weight_decay,
            };
            write(out, properties, "out")
        })
    }
}

/// Resets model variable `variable`'s optimizer state to what build made of it, for a layer the
/// caller re-initialized: m and v (and vhat with amsgrad) zeroed; the EMA average and a float32
/// master copy start again as copies of `data` (the variable's new values: `len` elements of
/// its own `dtype`, its shard with a mesh; widened exactly for a master). `data` is needed only
/// with EMA or master weights (otherwise pass NULL, 0, and any dtype). The other variables,
/// `iterations` (the bias correction goes on from the optimizer's counter, as Keras counts) and
/// the multipliers are untouched. After build, between steps.
/// Ownership: `data` is read during the call. NULL: `optimizer`; `data` may be NULL only when
/// `len` is 0. Threads: serialized (a call while another thread's step runs is BUSY).
/// Errors: NULL_ARGUMENT (`data` NULL with `len` > 0), INVALID_ARGUMENT (no `data` for a
/// variable with EMA or a master, an unknown dtype, not a handle), NOT_BUILT, UNKNOWN_VARIABLE, DTYPE_MISMATCH, SHAPE_MISMATCH (`len` is
/// not the variable's), OUT_OF_MEMORY, DEVICE, BUSY. On error nothing changes (a device that fails
/// midway excepted: the message says so).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_reset_variable(
    optimizer: *mut adamw_optimizer,
    variable: usize,
    dtype: u32,
    data: *const c_void,
    len: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `len` elements of `dtype` at `data`.
    unsafe {
        with_optimizer(optimizer, |s| {
            let values = if data.is_null() && len == 0 {
                None // refused by the optimizer where the variable needs its values
            } else {
                let dtype = decode_dtype(dtype, || "dtype".into())?;
                Some(tensor_ref(dtype, data, len, "data")?)
            };
            Ok(s.optimizer.reset_variable(variable, values)?)
        })
    }
}
