package adamw

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// Keras 3's gradient accumulation against Keras 3's own numbers (the case of
// tests/c/test_api.c): two calls a window, the third call only accumulates.
func TestGradientAccumulation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LearningRate = 0.1
	cfg.WeightDecay = 0.01
	cfg.GlobalClipNorm = 1.0
	cfg.GradientAccumulationSteps = 2
	o := newBuilt(t, cfg,
		Variable{Name: "w", Shape: []int{3}, DType: Float32},
		Variable{Name: "b", Shape: []int{2}, DType: Float32})
	defer o.Close()
	w, b := []float32{0.5, -1.0, 2.0}, []float32{0.25, -0.75}
	gw := [][]float32{{0.1, 0.2, -0.3}, {0.3, -0.1, 0.5}, {1, 1, 1}}
	gb := [][]float32{{0.5, 0.5}, {-1.5, 2.0}, {0, 3}}
	updates := []int64{0, 1, 1}
	for call := range gw {
		it, err := o.ApplyGradients([]Gradient{Dense(0, w, gw[call]), Dense(1, b, gb[call])})
		calls, _ := o.Calls()
		if err != nil || it != updates[call] || calls != int64(call+1) {
			t.Fatalf("call %d: iterations %d, calls %d, %v", call, it, calls, err)
		}
	}
	bits := func(x []float32) []uint32 {
		out := make([]uint32, len(x))
		for i, v := range x {
			out[i] = math.Float32bits(v)
		}
		return out
	}
	// 0x1.991746p-2, -0x1.195774p+0, 0x1.e5e3a8p+0; 0x1.662478p-2, -0x1.b2d0c4p-1
	wantW, wantB := []uint32{0x3ecc8ba3, 0xbf8cabba, 0x3ff2f1d4}, []uint32{0x3eb3123c, 0xbf596862}
	if got := bits(w); got[0] != wantW[0] || got[1] != wantW[1] || got[2] != wantW[2] {
		t.Errorf("w bits %x, want %x", got, wantW)
	}
	if got := bits(b); got[0] != wantB[0] || got[1] != wantB[1] {
		t.Errorf("b bits %x, want %x", got, wantB)
	}
	if json, _ := o.Config(); !strings.Contains(json, `"gradient_accumulation_steps":2`) {
		t.Errorf("config: %s", json)
	}
	bad := DefaultConfig()
	bad.GradientAccumulationSteps = 1
	if _, err := New(bad); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("1 call a window: %v", err)
	}
	bad.GradientAccumulationSteps = 2
	bad.MasterWeights = true
	if _, err := New(bad); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("with master weights: %v", err)
	}
}

// A variable added after a step steps as one built from the start and listed without a
// gradient for that step.
func TestAddVariables(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LearningRate = 0.1
	w := Variable{Name: "w", Shape: []int{3}, DType: Float32}
	b := Variable{Name: "b", Shape: []int{2}, DType: Float32}
	late := newBuilt(t, cfg, w)
	defer late.Close()
	early := newBuilt(t, cfg, w, b)
	defer early.Close()
	w1, w2 := []float32{0.5, -1, 2}, []float32{0.5, -1, 2}
	b1, b2 := []float32{0.25, -0.75}, []float32{0.25, -0.75}
	gw, gb := []float32{0.1, 0.2, -0.3}, []float32{0.5, -1.5}
	if _, err := late.ApplyGradients([]Gradient{Dense(0, w1, gw)}); err != nil {
		t.Fatal(err)
	}
	if _, err := early.ApplyGradients([]Gradient{Dense(0, w2, gw), NoGradient(1, b2)}); err != nil {
		t.Fatal(err)
	}
	if err := late.AddVariables([]Variable{w}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("a name that exists: %v", err)
	}
	if err := late.AddVariables([]Variable{b}); err != nil {
		t.Fatal(err)
	}
	for step := 0; step < 2; step++ {
		if _, err := late.ApplyGradients([]Gradient{Dense(0, w1, gw), Dense(1, b1, gb)}); err != nil {
			t.Fatal(err)
		}
		if _, err := early.ApplyGradients([]Gradient{Dense(0, w2, gw), Dense(1, b2, gb)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range w1 {
		if math.Float32bits(w1[i]) != math.Float32bits(w2[i]) {
			t.Errorf("w[%d]: %v vs %v", i, w1[i], w2[i])
		}
	}
	for i := range b1 {
		if math.Float32bits(b1[i]) != math.Float32bits(b2[i]) || b1[i] == 0.25 {
			t.Errorf("b[%d]: %v vs %v", i, b1[i], b2[i])
		}
	}
}
