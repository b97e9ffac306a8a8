package adamw

/*
#include "adamw.h"
*/
import "C"

import (
	"fmt"
	"math"
)

// SetVariableMultipliers sets model variable variable's learning-rate and weight-decay
// multipliers (its position in Build's list), from the next step on; any time after Build. The
// variable then steps as Keras' AdamW would with learning_rate float32(lr × learningRate) and
// weight_decay weightDecay × wd for it alone (docs/numerics.md §22); 1 and 1 is Keras' step,
// and a weight-decay multiplier of 0 is the same as excluding the variable. Multipliers are not
// in the config, but the checkpoint holds them and a load restores them. A negative, NaN or infinite
// multiplier is ErrInvalidArgument, an index out of range ErrUnknownVariable; neither changes
// anything.
func (o *Optimizer) SetVariableMultipliers(variable int, learningRate, weightDecay float64) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if variable < 0 {
			variable = math.MaxInt
		}
		return C.adamw_optimizer_set_variable_multipliers(h, C.size_t(variable), C.double(learningRate), C.double(weightDecay))
	})
}

// VariableProperties is what an optimizer does with one model variable.
type VariableProperties struct {
	DType DType
	Ndim  int
	// Decayed: its steps decay it (not excluded, and a weight-decay multiplier other than 0).
	Decayed bool
	// Excluded by ExcludeFromWeightDecay or Config.WeightDecayMinNdim.
	Excluded  bool
	HasMaster bool
	// The multipliers of SetVariableMultipliers (1 and 1 by default).
	LearningRateMultiplier float64
	WeightDecayMultiplier  float64
}

// VariableProperties describes what the optimizer does with model variable variable (its
// position in Build's list): ErrNotBuilt before Build, ErrUnknownVariable past the end.
func (o *Optimizer) VariableProperties(variable int) (VariableProperties, error) {
	var p VariableProperties
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if variable < 0 {
			variable = math.MaxInt
		}
		var raw C.adamw_variable_properties
		s := C.adamw_optimizer_variable_properties(h, C.size_t(variable), &raw)
		p = VariableProperties{
			DType: DType(raw.dtype), Ndim: int(raw.ndim), Decayed: raw.decayed != 0, Excluded: raw.excluded != 0,
			HasMaster: raw.has_master != 0, LearningRateMultiplier: float64(raw.learning_rate_multiplier),
			WeightDecayMultiplier: float64(raw.weight_decay_multiplier),
		}
		return s
	})
	return p, err
}

// ResetVariable resets model variable variable's optimizer state as Build made it, for a layer
// the caller re-initialized: m and v (and vhat) zeroed, the EMA average and a float32 master
// copy from values (the variable's new values: []float32, []float64, []BF16 or []F16 of its
// dtype and length; nil when the optimizer has neither EMA nor master weights). The other
// variables, the iteration count and the multipliers are untouched. A refused call
// (ErrDtypeMismatch, ErrShapeMismatch, ErrUnknownVariable, ErrInvalidArgument for missing
// values) changes nothing.
func (o *Optimizer) ResetVariable(variable int, values interface{}) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if variable < 0 {
			variable = math.MaxInt
		}
		if values == nil {
			return C.adamw_optimizer_reset_variable(h, C.size_t(variable), C.uint32_t(Float32), nil, 0)
		}
		data, dtype, n := typedValues(values)
		if dtype == 0 { // not a slice of a dtype
			return o.fail(StatusInvalidArgument, fmt.Sprintf("values must be []float32, []float64, []BF16 or []F16, got %T", values))
		}
		return C.adamw_optimizer_reset_variable(h, C.size_t(variable), C.uint32_t(dtype), data, C.size_t(n))
	})
}
