//! What the last step saw (an extension; docs/numerics.md §23): whether it was applied, the
//! loss scale and clip factor it used, and the gradient norms, Keras' own when a clip mode
//! computes them, else (when asked for) taken in the update pass at no extra memory traffic.

/// The last step's report ([`crate::Optimizer::step_report`]); per-variable norms are in
/// [`crate::Optimizer::gradient_norms`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// `iterations` after the step (0 before any).
    pub iterations: i64,
    /// Whether the variables moved: false before any step and when a dynamic loss scale skipped
    /// the step (its gradients held NaN or an infinity).
    pub applied: bool,
    /// The loss scale that unscaled the step's gradients (None without a loss scaler).
    pub loss_scale: Option<f32>,
    /// The norm of all the step's gradients, unscaled and before clipping (NaN when not
    /// computed): with `global_clipnorm` Keras' own `global_norm`, in the gradients' dtype.
    pub global_norm: f64,
    /// With `global_clipnorm`, the factor every gradient was multiplied by (Keras' `clip_norm /
    /// max(global_norm, clip_norm)`, in the gradients' dtype); 1 without a clip; NaN with
    /// `clipnorm` or `clipvalue`, which clip per variable or per element.
    pub clip_factor: f64,
    /// Where the norms came from.
    pub norms: NormSource,
}

/// How a step's gradient norms were computed (docs/numerics.md §23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSource {
    /// Not computed: no clip by norm, and the update pass was not asked for them (or the
    /// optimizer is on a device, or the step was skipped).
    None,
    /// Keras' `clipnorm` sums (Eigen's order), per variable.
    Clipnorm,
    /// Keras' `global_clipnorm` sums (Eigen's order, of `l2_loss`).
    GlobalClipnorm,
    /// Summed in the update pass in libadamw's own order (`set_report_norms`).
    UpdatePass,
}

impl Default for StepReport {
    fn default() -> Self {
        StepReport {
            iterations: 0,
            applied: false,
            loss_scale: None,
            global_norm: f64::NAN,
            clip_factor: f64::NAN,
            norms: NormSource::None,
        }
    }
}
