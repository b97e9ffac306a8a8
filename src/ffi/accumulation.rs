//! Keras 3's gradient accumulation (docs/numerics.md §25): turning it on, and where a call
//! stands in its window.

use super::handle::{adamw_optimizer, with_optimizer};
use super::slice::write;
use super::status::adamw_status;

/// Keras 3's `gradient_accumulation_steps`: with `steps` >= 2, every `steps`-th call of
/// apply_gradients updates the variables with the average `(g + acc) / steps` of the gradients
/// of the `steps` calls, and the calls between only add their gradients to optimizer-owned
/// accumulators (each variable's dtype and size; in the checkpoint, and the last optimizer
/// variables of `adamw_optimizer_get_variable`). 0 turns it off. The counters are
/// Keras 3's: `adamw_optimizer_iterations` and apply_gradients' `iterations` give the updates
/// made (calls / steps), `adamw_optimizer_gradient_accumulation` the calls, which optimizer
/// variable 0 and checkpoints hold. Bit-exact with eager Keras 3 (TF
/// backend), including schedules (which see the calls), clipping, EMA (every call moves every
/// variable's average, so with use_ema every call must list every variable), sparse gradients
/// and a weight decay. The config JSON spells it "gradient_accumulation_steps": N, written by
/// get_config only when set. Before build only; refused with a loss scale, master weights, a
/// mesh or a device (INVALID_ARGUMENT).
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (`steps` 1, negative or over 2^31 - 1; one of the
/// combinations above; not a handle), ALREADY_BUILT, BUSY. On error nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_gradient_accumulation_steps(
    optimizer: *mut adamw_optimizer,
    steps: i64,
) -> adamw_status {
    let steps = (steps != 0).then_some(steps);
    // SAFETY: the caller passes a live handle.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.set_gradient_accumulation_steps(steps)?)) }
}

/// Where gradient accumulation stands: `*steps` its `gradient_accumulation_steps` (0 when off)
/// and `*calls` the apply_gradients calls counted (Keras 3's `_iterations`; the next call
/// updates the variables when `(*calls + 1) % *steps == 0`). Without accumulation `*calls` is
/// the iteration counter. Either pointer may be NULL (not written).
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_gradient_accumulation(
    optimizer: *const adamw_optimizer,
    steps: *mut i64,
    calls: *mut i64,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and writable int64_t's or NULL.
    unsafe {
        with_optimizer(optimizer, |s| {
            if !steps.is_null() {
                write(steps, s.optimizer.config().gradient_accumulation_steps.unwrap_or(0), "steps")?;
            }
            if !calls.is_null() {
                write(calls, s.optimizer.calls(), "calls")?;
            }
            Ok(())
        })
    }
}
