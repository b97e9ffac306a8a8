package adamw

/*
#include "adamw.h"
*/
import "C"

// NormSource tells where a step's gradient norms came from (adamw_norm_source).
type NormSource int

const (
	// NormsNone: not computed (no clip by norm, and SetReportGradientNorms off).
	NormsNone NormSource = C.ADAMW_NORM_SOURCE_NONE
	// NormsClipnorm: Keras' clipnorm sums, per variable.
	NormsClipnorm NormSource = C.ADAMW_NORM_SOURCE_CLIPNORM
	// NormsGlobalClipnorm: Keras' global_clipnorm sums.
	NormsGlobalClipnorm NormSource = C.ADAMW_NORM_SOURCE_GLOBAL_CLIPNORM
	// NormsUpdatePass: summed in the update pass (SetReportGradientNorms).
	NormsUpdatePass NormSource = C.ADAMW_NORM_SOURCE_UPDATE_PASS
)

// StepReport is what the last step saw (adamw_optimizer_step_report).
type StepReport struct {
	Iterations int64
	// Applied is false before any step and for a step a dynamic loss scale skipped.
	Applied bool
	// LossScale is the scale that unscaled the step's gradients (0 without a loss scaler).
	LossScale float32
	// GlobalNorm is the norm of all the step's gradients, unscaled and before clipping (NaN
	// when not computed); with global_clipnorm, Keras' own.
	GlobalNorm float64
	// ClipFactor is global_clipnorm's factor; 1 without a clip; NaN under clipnorm or clipvalue.
	ClipFactor float64
	Norms      NormSource
}

// StepReport returns what the last step saw; reading it costs nothing.
func (o *Optimizer) StepReport() (StepReport, error) {
	var r StepReport
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		var raw C.adamw_step_report
		s := C.adamw_optimizer_step_report(h, &raw)
		r = StepReport{
			Iterations: int64(raw.iterations), Applied: raw.applied != 0, LossScale: float32(raw.loss_scale),
			GlobalNorm: float64(raw.global_norm), ClipFactor: float64(raw.clip_factor), Norms: NormSource(raw.norms),
		}
		return s
	})
	return r, err
}

// GradientNorms fills out (one per variable given to Build) with each variable's gradient norm
// in the last step, unscaled and before clipping: NaN for a variable the step did not list and
// when no norm was computed. It allocates nothing.
func (o *Optimizer) GradientNorms(out []float64) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if len(out) == 0 {
			return C.adamw_optimizer_gradient_norms(h, nil, 0)
		}
		return C.adamw_optimizer_gradient_norms(h, (*C.double)(&out[0]), C.size_t(len(out)))
	})
}

// SetReportGradientNorms makes steps without clipnorm or global_clipnorm compute the gradient
// norms in the update pass (off by default; docs/numerics.md §23).
func (o *Optimizer) SetReportGradientNorms(enabled bool) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_set_report_gradient_norms(h, cBool(enabled))
	})
}
