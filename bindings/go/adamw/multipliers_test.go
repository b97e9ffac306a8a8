package adamw

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// A zero gradient moves nothing but the decay, v - (v * wd) * lr, with the variable's own rate
// and decay: the multipliers' effect is computed exactly.
func TestVariableMultipliersAndWeightDecayMinNdim(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LearningRate = 1.0
	cfg.WeightDecay = 0.5
	cfg.WeightDecayMinNdim = 2
	o := newBuilt(t, cfg,
		Variable{Name: "kernel", Shape: []int{2, 1}, DType: Float32},
		Variable{Name: "bias", Shape: []int{2}, DType: Float32})
	defer o.Close()
	if err := o.SetVariableMultipliers(0, 0.25, 2.0); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]float64{{-1, 1}, {1, math.NaN()}, {math.Inf(1), 1}} {
		if err := o.SetVariableMultipliers(0, bad[0], bad[1]); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("multipliers %v: %v", bad, err)
		}
	}
	for _, index := range []int{2, -1} {
		if err := o.SetVariableMultipliers(index, 1, 1); !errors.Is(err, ErrUnknownVariable) {
			t.Errorf("index %d: %v", index, err)
		}
		if _, err := o.VariableProperties(index); !errors.Is(err, ErrUnknownVariable) {
			t.Errorf("properties of %d: %v", index, err)
		}
	}
	k, b, zero := []float32{2, 2}, []float32{2, 2}, []float32{0, 0}
	if _, err := o.ApplyGradients([]Gradient{Dense(0, k, zero), Dense(1, b, zero)}); err != nil {
		t.Fatal(err)
	}
	if k[0] != 1.5 || b[0] != 2 { // 2 - (2 * 1.0) * 0.25; the bias has one dimension: not decayed
		t.Errorf("kernel %v, bias %v", k, b)
	}
	kernel, err := o.VariableProperties(0)
	want := VariableProperties{DType: Float32, Ndim: 2, Decayed: true, LearningRateMultiplier: 0.25, WeightDecayMultiplier: 2}
	if err != nil || kernel != want {
		t.Errorf("kernel: %+v, %v", kernel, err)
	}
	bias, _ := o.VariableProperties(1)
	if bias.Decayed || !bias.Excluded || bias.Ndim != 1 || bias.LearningRateMultiplier != 1 {
		t.Errorf("bias: %+v", bias)
	}
	if json, _ := o.Config(); !strings.Contains(json, `"weight_decay_min_ndim":2`) {
		t.Errorf("config: %s", json)
	}
	unbuilt, _ := New(DefaultConfig())
	defer unbuilt.Close()
	if err := unbuilt.SetVariableMultipliers(0, 1, 1); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("before build: %v", err)
	}
	cfg.WeightDecayMinNdim = 33
	if _, err := New(cfg); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("WeightDecayMinNdim 33: %v", err)
	}
}

func TestStepReport(t *testing.T) {
	cfg := DefaultConfig()
	o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{3}, DType: Float32}, Variable{Name: "b", Shape: []int{2}, DType: Float32})
	defer o.Close()
	if err := o.SetReportGradientNorms(true); err != nil {
		t.Fatal(err)
	}
	w, b := []float32{1, 2, 3}, []float32{0, 0}
	if _, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{0.5, -1.5, 2}), Dense(1, b, []float32{3, 4})}); err != nil {
		t.Fatal(err)
	}
	r, err := o.StepReport()
	if err != nil || r.Iterations != 1 || !r.Applied || r.Norms != NormsUpdatePass || r.ClipFactor != 1 || r.GlobalNorm != math.Sqrt(31.5) {
		t.Errorf("%+v, %v", r, err)
	}
	norms := make([]float64, 2)
	if err := o.GradientNorms(norms); err != nil || norms[0] != math.Sqrt(6.5) || norms[1] != 5 {
		t.Errorf("%v, %v", norms, err)
	}
	if err := o.GradientNorms(make([]float64, 3)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("three norms of two variables: %v", err)
	}
}

func TestResetVariable(t *testing.T) {
	cfg := DefaultConfig()
	cfg.UseEMA = true
	w := []float32{1, 2, 3}
	o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{3}, DType: Float32, Init: w})
	defer o.Close()
	if _, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{0.5, -1, 2})}); err != nil {
		t.Fatal(err)
	}
	fresh := []float32{-1, -2, -3}
	if err := o.ResetVariable(0, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("no values with EMA: %v", err)
	}
	if err := o.ResetVariable(0, fresh[:2]); !errors.Is(err, ErrShapeMismatch) {
		t.Errorf("two values: %v", err)
	}
	if err := o.ResetVariable(1, fresh); !errors.Is(err, ErrUnknownVariable) {
		t.Errorf("variable 1: %v", err)
	}
	if err := o.ResetVariable(0, fresh); err != nil {
		t.Fatal(err)
	}
	average, m := make([]float32, 3), make([]float32, 3)
	if err := o.Values(1, average); err != nil || average[0] != -1 || average[2] != -3 {
		t.Errorf("average %v, %v", average, err)
	}
	if err := o.Values(2, m); err != nil || m[0] != 0 || m[1] != 0 || m[2] != 0 {
		t.Errorf("m %v, %v", m, err)
	}
}
