package adamw

import (
	"errors"
	"math"
	"testing"
)

// Rounding as numpy (and TensorFlow) rounds float32 to float16 and bfloat16.
func TestSixteenBitRounding(t *testing.T) {
	cases := []struct {
		value  float32
		half   F16
		bfloat BF16
	}{
		{1.0, 0x3c00, 0x3f80}, {1.00048828125, 0x3c00, 0x3f80}, {1.00146484375, 0x3c02, 0x3f80},
		{65504, 0x7bff, 0x4780}, {65519, 0x7bff, 0x4780}, {65520, 0x7c00, 0x4780},
		{1e6, 0x7c00, 0x4974}, {6.1e-05, 0x03ff, 0x3880}, {3e-07, 0x0005, 0x34a1},
		{5.9604645e-08, 0x0001, 0x3380}, {2.9802322e-08, 0x0000, 0x3300}, {4.4703484e-08, 0x0001, 0x3340},
		{float32(math.Copysign(0, -1)), 0x8000, 0x8000}, {float32(math.Inf(1)), 0x7c00, 0x7f80},
		{0.1, 0x2e66, 0x3dcd}, {-2.5, 0xc100, 0xc020},
	}
	for _, c := range cases {
		if got := F16FromFloat32(c.value); got != c.half {
			t.Errorf("F16FromFloat32(%g) = %#04x, want %#04x", c.value, uint16(got), uint16(c.half))
		}
		if got := BF16FromFloat32(c.value); got != c.bfloat {
			t.Errorf("BF16FromFloat32(%g) = %#04x, want %#04x", c.value, uint16(got), uint16(c.bfloat))
		}
		if F16FromFloat32(c.half.Float32()) != c.half || BF16FromFloat32(c.bfloat.Float32()) != c.bfloat {
			t.Errorf("%g: a 16-bit value does not widen and round back to itself", c.value)
		}
	}
	if F16(1).Float32() != 5.9604644775390625e-08 {
		t.Error("the smallest float16 subnormal")
	}
	nan := float32(math.NaN())
	if !math.IsNaN(float64(F16FromFloat32(nan).Float32())) || !math.IsNaN(float64(BF16FromFloat32(nan).Float32())) {
		t.Error("NaN must stay NaN")
	}
}

// A float16 step with Keras' own semantics, against tf-keras 2.15.1's bits for
// AdamW(learning_rate=0.01) on [0.5, -1.5, 2.0] with the gradient [0.1, -0.2, 0.3].
func TestFloat16Step(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LearningRate = 0.01
	o := newBuilt(t, cfg, Variable{Name: "h", Shape: []int{3}, DType: Float16})
	defer o.Close()
	w, g := F16s([]float32{0.5, -1.5, 2}), F16s([]float32{0.1, -0.2, 0.3})
	if _, err := o.ApplyGradients([]Gradient{Dense(0, []float32{0.5, -1.5, 2}, []float32{0.1, -0.2, 0.3})}); !errors.Is(err, ErrDtypeMismatch) {
		t.Fatalf("a float32 gradient for a float16 variable: %v", err)
	}
	if it, err := o.ApplyGradients([]Gradient{Dense(0, w, g)}); err != nil || it != 1 {
		t.Fatal(it, err)
	}
	if w[0] != 0x37d8 || w[1] != 0xbdf6 || w[2] != 0x3ff6 {
		t.Errorf("values %#04x, want Keras' [0x37d8 0xbdf6 0x3ff6]", w)
	}
	v := make([]F16, 3)
	if err := o.Values(2, v); err != nil || v[0] != 0x00a8 || v[1] != 0x029f || v[2] != 0x05e7 {
		t.Errorf("v = %#04x (%v), want Keras' float16 subnormals [0xa8 0x29f 0x5e7]", v, err)
	}
	if err := o.Values(2, make([]BF16, 3)); !errors.Is(err, ErrDtypeMismatch) {
		t.Errorf("bfloat16 values of a float16 slot: %v", err)
	}
	state, err := o.Save()
	if err != nil {
		t.Fatal(err)
	}
	if err := o.SetWeights([]Weight{{Shape: []int{}, Values: []int64{7}}, {Shape: []int{3}, Values: v}}); err != nil {
		t.Fatal(err)
	}
	if err := o.Load(state); err != nil {
		t.Fatal(err)
	}
}

// Float32 master weights: Keras' float32 step on the widened values (tf-keras' bits), and the
// bfloat16 variable receives its rounding.
func TestMasterWeights(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LearningRate = 0.01
	cfg.MasterWeights = true
	b := []BF16{0x3f00, 0xbfc0, 0x4000}
	o := newBuilt(t, cfg, Variable{Name: "b", Shape: []int{3}, DType: BFloat16, Init: b})
	defer o.Close()
	if _, err := o.ApplyGradients([]Gradient{Dense(0, b, []BF16{0x3dcd, 0xbe4d, 0x3e9a})}); err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x3efb || b[1] != 0xbfbf || b[2] != 0x3fff {
		t.Errorf("values %#04x, want the master's rounding [0x3efb 0xbfbf 0x3fff]", b)
	}
	master := make([]float32, 3)
	if err := o.Values(3, master); err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint32{0x3efadeb6, 0xbfbeb65d, 0x3ffeb5b4} {
		if math.Float32bits(master[i]) != want {
			t.Errorf("master[%d] = %#08x, want %#08x", i, math.Float32bits(master[i]), want)
		}
	}
	info, err := o.Variable(3)
	if err != nil || info.Name != "AdamW/master/b" || info.DType != Float32 {
		t.Errorf("variable 3: %+v, %v", info, err)
	}
}

// A float32 gradient for a bfloat16 variable with a master: the master follows a float32
// variable given the same gradients (the first step's bits are tf-keras' for AdamW(0.01) on
// [0.5, -1.5, 2] with [0.1, -0.2, 0.3]); without a master the step is refused.
func TestMasterFloat32Gradients(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LearningRate = 0.01
	plain := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{3}, DType: BFloat16})
	defer plain.Close()
	wide := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{1, 3}, DType: Float32})
	defer wide.Close()
	cfg.MasterWeights = true
	b := []BF16{0x3f00, 0xbfc0, 0x4000}
	o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{1, 3}, DType: BFloat16, Init: b})
	defer o.Close()
	w := []float32{0.5, -1.5, 2}
	steps := [][]float32{{0.1, -0.2, 0.3}, {-0.37, 0.011, 2.5e-3}}
	for k, g := range steps {
		grad := DenseFloat32(0, b, g)
		if k == 1 {
			grad = SparseFloat32(0, b, []int64{0}, g)
		}
		if _, err := o.ApplyGradients([]Gradient{grad}); err != nil {
			t.Fatal(err)
		}
		if _, err := wide.ApplyGradients([]Gradient{Dense(0, w, g)}); err != nil {
			t.Fatal(err)
		}
		master := make([]float32, 3)
		if err := o.Values(3, master); err != nil {
			t.Fatal(err)
		}
		for i := range w {
			if math.Float32bits(master[i]) != math.Float32bits(w[i]) || b[i] != BF16FromFloat32(w[i]) {
				t.Errorf("step %d, element %d: master %v, value %#04x; float32 %v", k, i, master[i], b[i], w[i])
			}
		}
		if k == 0 && math.Float32bits(w[0]) != 0x3efadeb6 {
			t.Errorf("first step %#08x, want tf-keras' 0x3efadeb6", math.Float32bits(w[0]))
		}
	}
	p := []BF16{0x3f00, 0xbfc0, 0x4000}
	if _, err := plain.ApplyGradients([]Gradient{DenseFloat32(0, p, steps[0])}); !errors.Is(err, ErrDtypeMismatch) {
		t.Errorf("a float32 gradient without a master: %v, want ErrDtypeMismatch", err)
	}
	if p[0] != 0x3f00 {
		t.Errorf("a refused step changed the values: %#04x", p)
	}
}

// The loss scaler, with tf-keras' values for AdamW(0.01) in LossScaleOptimizer(initial_scale=4096,
// dynamic_growth_steps=3) on [0.5, 1.5] with scaled gradients [100, -200].
func TestLossScale(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LearningRate = 0.01
	cfg.LossScale = &LossScale{Dynamic: true, InitialScale: 4096, DynamicGrowthSteps: 3}
	o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{2}, DType: Float32})
	defer o.Close()
	w := []float32{0.5, 1.5}
	for i := 0; i < 3; i++ {
		if _, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{100, -200})}); err != nil {
			t.Fatal(err)
		}
	}
	if scale, counter, err := o.LossScale(); err != nil || scale != 8192 || counter != 0 {
		t.Errorf("after 3 finite steps: %v %v %v, want 8192 0", scale, counter, err)
	}
	if w[0] != 0.4699443578720093 || w[1] != 1.5298171043395996 {
		t.Errorf("w = %v", w)
	}
	it, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{float32(math.Inf(1)), 1})})
	if scale, _, _ := o.LossScale(); err != nil || it != 4 || scale != 4096 || w[0] != 0.4699443578720093 {
		t.Errorf("an overflowed step: iterations %d, scale %v, w %v, %v", it, scale, w, err)
	}
	plain := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{2}, DType: Float32})
	defer plain.Close()
	if _, _, err := plain.LossScale(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("no loss scale: %v", err)
	}
}

// A step on a view of []uint16 updates the uint16 slice itself.
func TestSixteenBitViews(t *testing.T) {
	o := newBuilt(t, DefaultConfig(), Variable{Name: "b", Shape: []int{2}, DType: BFloat16}, Variable{Name: "h", Shape: []int{2}, DType: Float16})
	defer o.Close()
	b, h := []uint16{0x3f80, 0xbf80}, []uint16{0x3c00, 0xbc00} // 1, -1 in each
	grads := []Gradient{
		Dense(0, BF16Bits(b), BF16Bits([]uint16{0x3f80, 0x3f80})),
		Dense(1, F16Bits(h), F16Bits([]uint16{0x3c00, 0x3c00})),
	}
	if _, err := o.ApplyGradients(grads); err != nil {
		t.Fatal(err)
	}
	// Keras' 16-bit step of 0.001 rounds: bfloat16 1 - 0.001 is 1 again, -1 - 0.001 is -1;
	// float16 has the resolution to move (0.999 and -1.001 round to 0x3bfe and 0xbc01).
	if b[0] != 0x3f80 || b[1] != 0xbf80 || h[0] != 0x3bfe || h[1] != 0xbc01 {
		t.Errorf("bfloat16 %#04x, float16 %#04x", b, h)
	}
	if BF16Bits(nil) != nil || F16Bits([]uint16{}) != nil {
		t.Error("an empty view is not nil")
	}
}
