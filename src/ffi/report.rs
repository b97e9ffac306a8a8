//! The step report: what the last step saw, and the gradient norms (docs/numerics.md §23).

use super::handle::{adamw_optimizer, with_optimizer};
use super::slice::{slice_mut, write};
use super::status::{FfiError, adamw_status};
use super::types::{adamw_norm_source, adamw_step_report};
use crate::optimizer::NormSource;

/// What the last step saw: whether it was applied (a dynamic loss scale skips a step whose
/// gradients overflowed), the loss scale and clip factor it used, the global gradient norm and
/// where the norms came from. With clipnorm or global_clipnorm the norms are Keras' own, at no
/// cost; otherwise they are computed only after `adamw_optimizer_set_report_gradient_norms`.
/// Reading the report costs nothing and allocates nothing; a failed call leaves it as it was.
/// NULL: `optimizer`, `out`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_step_report(
    optimizer: *const adamw_optimizer,
    out: *mut adamw_step_report,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a writable struct.
    unsafe {
        with_optimizer(optimizer, |s| {
            let r = s.optimizer.step_report();
            let report = adamw_step_report {
                iterations: r.iterations,
                applied: r.applied as u8,
                has_loss_scale: r.loss_scale.is_some() as u8,
                loss_scale: r.loss_scale.unwrap_or(0.0),
                global_norm: r.global_norm,
                clip_factor: r.clip_factor,
                norms: match r.norms {
                    NormSource::None => adamw_norm_source::None,
                    NormSource::Clipnorm => adamw_norm_source::Clipnorm,
                    NormSource::GlobalClipnorm => adamw_norm_source::GlobalClipnorm,
                    NormSource::UpdatePass => adamw_norm_source::UpdatePass,
                } as u32,
            };
            write(out, report, "out")
        })
    }
}

/// Copies, per model variable in build order, the norm of its gradient in the last step,
/// unscaled and before clipping, into `out` (`count` doubles, the number of variables given to
/// build): NaN for a variable the step did not list and when no norm was computed (see
/// `adamw_step_report.norms`). Under clipnorm each is Keras' norm (float32 of the value is
/// exactly the norm Keras clipped with, for float32 gradients); under global_clipnorm
/// `sqrt(2 * l2_loss)` of Keras' sum; from the update pass `sqrt(sum) / loss_scale` of its sum.
/// NULL: `optimizer`; `out` only when `count` is 0. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (`count` is not the number of variables, not a
/// handle), NOT_BUILT, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_gradient_norms(
    optimizer: *const adamw_optimizer,
    out: *mut f64,
    count: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `count` writable doubles.
    unsafe {
        with_optimizer(optimizer, |s| {
            if !s.optimizer.is_built() {
                return Err(FfiError::new(adamw_status::NotBuilt, "gradient_norms: the optimizer is not built yet"));
            }
            let norms = s.optimizer.gradient_norms();
            if count != norms.len() {
                return Err(FfiError::invalid(format!(
                    "count is {count}, but the optimizer was built with {} variables",
                    norms.len()
                )));
            }
            slice_mut(out, count, "out")?.copy_from_slice(norms);
            Ok(())
        })
    }
}

/// Whether steps without clipnorm or global_clipnorm compute the gradient norms for the report
/// (`enabled` 1; 0, the default, does not). They are summed in the update pass, each block of a
/// gradient while it is in cache (no extra pass over memory), in libadamw's own order
/// (docs/numerics.md §23): the same bits for every thread count and SIMD level, and on a
/// device, where the step's kernel takes them too. Any time.
/// NULL: `optimizer`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (`enabled` not 0 or 1, not a handle), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_set_report_gradient_norms(
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
            s.optimizer.set_report_norms(enabled);
            Ok(())
        })
    }
}
