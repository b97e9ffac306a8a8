package adamw

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// checkout is a path in the libadamw checkout: ADAMW_CHECKOUT when set (the package copied out of
// the tree, as tools/test-packaging.sh tests it), else the checkout this package lives in.
func checkout(parts ...string) string {
	root := os.Getenv("ADAMW_CHECKOUT")
	if root == "" {
		root = filepath.Join("..", "..", "..")
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

func newBuilt(t testing.TB, cfg Config, vars ...Variable) *Optimizer {
	t.Helper()
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Build(vars); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestKerasFirstStep(t *testing.T) {
	o := newBuilt(t, DefaultConfig(), Variable{Name: "x", Shape: []int{3}, DType: Float32})
	defer o.Close()
	x := []float32{0.5, -1.5, 2.0}
	it, err := o.ApplyGradients([]Gradient{Dense(0, x, []float32{0.1, -0.2, 0.3})})
	if err != nil || it != 1 {
		t.Fatal(it, err)
	}
	want := []uint32{0x3eff7cac, 0xbfbfdf0a, 0x3fffdef9} // the spec's appendix C
	for i := range x {
		if math.Float32bits(x[i]) != want[i] {
			t.Errorf("x[%d] = %#x, want %#x", i, math.Float32bits(x[i]), want[i])
		}
	}
}

func TestBadInput(t *testing.T) {
	x := []float32{1, 2, 3}
	x64 := []float64{1, 2, 3}
	g := []float32{1, 1, 1}
	cases := []struct {
		name string
		call func(o *Optimizer) error
		want error
	}{
		{"short gradient", func(o *Optimizer) error { _, e := o.ApplyGradients([]Gradient{Dense(0, x, g[:2])}); return e }, ErrShapeMismatch},
		{"unknown variable", func(o *Optimizer) error { _, e := o.ApplyGradients([]Gradient{Dense(3, x, g)}); return e }, ErrUnknownVariable},
		{"float64 values", func(o *Optimizer) error {
			_, e := o.ApplyGradients([]Gradient{Dense(0, x64, []float64{1, 1, 1})})
			return e
		}, ErrDtypeMismatch},
		{"no gradients", func(o *Optimizer) error { _, e := o.ApplyGradients([]Gradient{NoGradient(0, x)}); return e }, ErrNoGradients},
		{"row out of range", func(o *Optimizer) error {
			_, e := o.ApplyGradients([]Gradient{Sparse(0, x, []int64{3}, []float32{1})})
			return e
		}, ErrIndexOutOfRange},
		{"listed twice", func(o *Optimizer) error {
			_, e := o.ApplyGradients([]Gradient{Dense(0, x, g), Dense(0, []float32{0, 0, 0}, g)})
			return e
		}, ErrInvalidArgument},
		{"build twice", func(o *Optimizer) error { return o.Build([]Variable{{Name: "y", Shape: []int{1}, DType: Float32}}) }, ErrAlreadyBuilt},
		{"preset after build", func(o *Optimizer) error { return o.SetIterations(3) }, ErrAlreadyBuilt},
		{"garbage checkpoint", func(o *Optimizer) error { return o.Load([]byte("garbage")) }, ErrInvalidCheckpoint},
		{"set_weights shape", func(o *Optimizer) error {
			return o.SetWeights([]Weight{{Shape: nil, Values: []int64{5}}, {Shape: []int{2}, Values: []float32{1, 2}}})
		}, ErrShapeMismatch},
		{"bad variable index", func(o *Optimizer) error { _, e := o.Variable(99); return e }, ErrUnknownVariable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := newBuilt(t, DefaultConfig(), Variable{Name: "x", Shape: []int{3}, DType: Float32})
			defer o.Close()
			before, _ := o.Save()
			xBefore := append([]float32(nil), x...)
			err := c.call(o)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Message == "" {
				t.Fatalf("no message in %v", err)
			}
			after, _ := o.Save()
			if string(before) != string(after) || !equal32(x, xBefore) {
				t.Fatal("a rejected call changed the optimizer or the variable")
			}
		})
	}
}

func TestConfigErrorsAndRoundTrip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ClipNorm, cfg.GlobalClipNorm = 1, 1
	_, err := New(cfg)
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusInvalidArgument ||
		e.Message != "At most one of `clipnorm` and `global_clipnorm` can be set. Received: clipnorm=1.0, global_clipnorm=1.0." {
		t.Fatal(err)
	}
	if _, err := FromConfig(`{"foo": 1}`); !errors.Is(err, ErrInvalidConfig) {
		t.Fatal(err)
	}
	s := NewSchedule(PiecewiseConstantDecay)
	s.Boundaries, s.Values = []int64{3, 8}, []float64{0.1, 0.01, 0.001}
	cfg = DefaultConfig()
	cfg.Schedule = &s
	cfg.Amsgrad = true
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	js, err := o.GetConfig()
	if err != nil || !strings.Contains(js, `"class_name":"PiecewiseConstantDecay"`) {
		t.Fatal(js, err)
	}
	o2, err := FromConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	if js2, _ := o2.GetConfig(); js2 != js {
		t.Fatalf("round trip changed the config:\n%s\n%s", js, js2)
	}
	if err := o.SetLearningRate(0.5); !errors.Is(err, ErrInvalidArgument) {
		t.Fatal("a schedule's learning rate must not be settable:", err)
	}
}

func TestCallbacks(t *testing.T) {
	cfg := DefaultConfig()
	calls := 0
	cfg.LearningRateFunc = func(step int64) float64 {
		calls++
		if step >= 2 {
			panic("no rate past step 2")
		}
		return 0.1
	}
	o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{2}, DType: Float32})
	defer o.Close()
	w := []float32{1, 2}
	for i := 0; i < 2; i++ {
		if _, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{1, 1})}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{1, 1})})
	if !errors.Is(err, ErrCallbackFailed) || !strings.Contains(err.Error(), "panicked: no rate past step 2") {
		t.Fatal(err)
	}
	if it, _ := o.Iterations(); it != 2 || calls != 4 {
		t.Fatal(it, calls)
	}
	// minimize with a failing gradient function changes nothing
	if _, err := o.Minimize([]Gradient{Dense(0, w, []float32{1, 1})}, func() error { return errors.New("no loss") }); !errors.Is(err, ErrCallbackFailed) {
		t.Fatal(err)
	}
}

func TestCheckpointsAndEMA(t *testing.T) {
	cfg := DefaultConfig()
	cfg.UseEMA, cfg.EMAMomentum = true, 0.5
	init := []float64{1, 2, 3, 4}
	vars := []Variable{{Name: "w", Shape: []int{2, 2}, DType: Float64, Init: init}}
	a := newBuilt(t, cfg, vars...)
	defer a.Close()
	w := append([]float64(nil), init...)
	grad := []float64{0.5, -0.5, 0.25, 1}
	for i := 0; i < 3; i++ {
		a.ApplyGradients([]Gradient{Dense(0, w, grad)})
	}
	path := filepath.Join(t.TempDir(), "opt.safetensors")
	if err := a.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	b := newBuilt(t, cfg, vars...)
	defer b.Close()
	if err := b.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	w2 := append([]float64(nil), w...)
	a.ApplyGradients([]Gradient{Dense(0, w, grad)})
	b.ApplyGradients([]Gradient{Dense(0, w2, grad)})
	for i := range w {
		if w[i] != w2[i] {
			t.Fatal("resumed training differs", w, w2)
		}
	}
	info, err := a.Variable(1)
	if err != nil || info.Name != "AdamW/average/w" || info.DType != Float64 || info.Len != 4 {
		t.Fatal(info, err)
	}
	avg := make([]float64, 4)
	if err := a.Values(1, avg); err != nil {
		t.Fatal(err)
	}
	if err := a.FinalizeVariableValues([]Gradient{NoGradient(0, w)}); err != nil {
		t.Fatal(err)
	}
	for i := range w {
		if w[i] != avg[i] {
			t.Fatal("finalize did not give the averages", w, avg)
		}
	}
	counter := make([]int64, 1)
	if err := a.Values(0, counter); err != nil || counter[0] != 4 {
		t.Fatal(counter, err)
	}
}

func TestSparseRows(t *testing.T) {
	o := newBuilt(t, DefaultConfig(), Variable{Name: "emb", Shape: []int{4, 2}, DType: Float32})
	defer o.Close()
	if err := o.ReserveSparse(16); err != nil {
		t.Fatal(err)
	}
	if err := o.SetThreads(1); err != nil {
		t.Fatal(err)
	}
	emb := []float32{1, 1, 1, 1, 1, 1, 1, 1}
	// rows 2 and 0, row 2 twice (summed); untouched rows only decay
	if _, err := o.ApplyGradients([]Gradient{Sparse(0, emb, []int64{2, 0, 2}, []float32{1, 1, 0.5, 0.5, 1, 1})}); err != nil {
		t.Fatal(err)
	}
	// Rows 1 and 3 had no gradient: m and v stay 0, so only weight decay moves them,
	// v - (v * wd) * lr in float32 (explicit conversions keep Go from fusing).
	one := float32(1)
	decayed := one - float32(float32(one*float32(0.004))*float32(0.001))
	for _, i := range []int{2, 3, 6, 7} {
		if emb[i] != decayed {
			t.Fatalf("untouched element %d = %v, want %v", i, emb[i], decayed)
		}
	}
	// Rows 0 and 2 had positive gradients (row 2's two rows summed): both moved down.
	for _, i := range []int{0, 1, 4, 5} {
		if !(emb[i] < decayed) {
			t.Fatalf("element %d = %v did not move", i, emb[i])
		}
	}
}

func TestNonFiniteGuard(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RejectNonFiniteGradients = true
	o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{2}, DType: Float64})
	defer o.Close()
	w := []float64{1, 2}
	if _, err := o.ApplyGradients([]Gradient{Dense(0, w, []float64{0.5, math.Inf(1)})}); !errors.Is(err, ErrNonFiniteGradient) {
		t.Fatal(err)
	}
	if w[0] != 1 || w[1] != 2 {
		t.Fatal("a rejected step changed the values", w)
	}
	if js, _ := o.GetConfig(); !strings.Contains(js, `"reject_non_finite_gradients":true`) {
		t.Fatal(js)
	}
}

func TestClosed(t *testing.T) {
	o, _ := New(DefaultConfig())
	o.Close()
	o.Close()
	_, err := o.Iterations()
	if !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	// A closed optimizer is not a NULL argument, and a NULL argument is not a closed optimizer.
	if errors.Is(err, ErrNullArgument) || errors.Is(&Error{Status: StatusNullArgument}, ErrClosed) {
		t.Fatal("ErrClosed and ErrNullArgument match each other")
	}
}

// Several goroutines on one optimizer: with the same gradient every call, the result equals
// the same number of calls made one after another.
func TestGoroutines(t *testing.T) {
	const n, goroutines, calls = 10000, 4, 25
	grad := make([]float32, n)
	for i := range grad {
		grad[i] = float32(i%17-8) * 0.01
	}
	shared := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{n}, DType: Float32})
	defer shared.Close()
	values := make([]float32, n)
	var mu sync.Mutex // the caller's variable: one writer at a time
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := 0; c < calls; c++ {
				mu.Lock()
				_, err := shared.ApplyGradients([]Gradient{Dense(0, values, grad)})
				mu.Unlock()
				if err != nil {
					t.Error(err)
				}
				shared.Iterations()
				shared.GetConfig()
			}
		}()
	}
	wg.Wait()
	seq := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{n}, DType: Float32})
	defer seq.Close()
	expected := make([]float32, n)
	for i := 0; i < goroutines*calls; i++ {
		seq.ApplyGradients([]Gradient{Dense(0, expected, grad)})
	}
	if !equal32(values, expected) {
		t.Fatal("concurrent calls differ from sequential ones")
	}
}

func equal32(a, b []float32) bool {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return len(a) == len(b)
}

// number reads a trajectory number: a JSON number or "NaN" / "Infinity" / "-Infinity".
func number(v interface{}) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		return map[string]float64{"NaN": math.NaN(), "Infinity": math.Inf(1), "-Infinity": math.Inf(-1)}[x]
	}
	panic("not a number")
}

func numbers(v interface{}) []float64 {
	var out []float64
	var walk func(interface{})
	walk = func(v interface{}) {
		if list, ok := v.([]interface{}); ok {
			for _, x := range list {
				walk(x)
			}
			return
		}
		out = append(out, number(v))
	}
	walk(v)
	return out
}

func same(want float64, got float64) bool {
	return want == got || (math.IsNaN(want) && math.IsNaN(got))
}

// The smoke cases through the Go package, compared bit for bit with Keras' results.
func TestSmokeTrajectories(t *testing.T) {
	data := checkout("tests", "conformance")
	var cases, expected []map[string]interface{}
	for file, dst := range map[string]*[]map[string]interface{}{"smoke_cases.json": &cases, "smoke_expected.json": &expected} {
		text, err := os.ReadFile(filepath.Join(data, file))
		if err != nil {
			t.Fatal("the smoke cases are missing from tests/conformance: ", err)
		}
		if err := json.Unmarshal(text, dst); err != nil {
			t.Fatal(err)
		}
	}
	ran := 0
	for i, c := range cases {
		exp := expected[i]
		if _, isError := exp["error"]; isError {
			continue
		}
		cfgJSON, _ := json.Marshal(c["config"])
		o, err := FromConfig(string(cfgJSON))
		if err != nil {
			t.Fatal(c["id"], err)
		}
		var vars []Variable
		var f32 [][]float32
		var f64 [][]float64
		for _, raw := range c["variables"].([]interface{}) {
			v := raw.(map[string]interface{})
			var shape []int
			for _, d := range v["shape"].([]interface{}) {
				shape = append(shape, int(d.(float64)))
			}
			vals := numbers(v["value"])
			dt := Float32
			if v["dtype"] == "float64" {
				dt = Float64
			}
			f64 = append(f64, vals)
			f32 = append(f32, to32(vals))
			var init interface{} = f32[len(f32)-1]
			if dt == Float64 {
				init = vals
			}
			vars = append(vars, Variable{Name: v["name"].(string), Shape: shape, DType: dt, Init: init})
		}
		if ex, ok := c["exclude_from_weight_decay"].(map[string]interface{}); ok {
			var pats []string
			for _, p := range ex["var_names"].([]interface{}) {
				pats = append(pats, p.(string))
			}
			o.ExcludeFromWeightDecay(nil, pats)
		}
		if err := o.Build(vars); err != nil {
			t.Fatal(err)
		}
		all := func() []Gradient {
			var gs []Gradient
			for v := range vars {
				if vars[v].DType == Float64 {
					gs = append(gs, NoGradient(v, f64[v]))
				} else {
					gs = append(gs, NoGradient(v, f32[v]))
				}
			}
			return gs
		}
		compare := func(s int, want map[string]interface{}) {
			for v, values := range want["variables"].([]interface{}) {
				for k, w := range numbers(values) {
					got := float64(f32[v][k])
					if vars[v].DType == Float64 {
						got = f64[v][k]
					}
					if !same(w, got) {
						t.Fatalf("%v step %d variable %d[%d]: %v, Keras %v", c["id"], s, v, k, got, w)
					}
				}
			}
		}
		for s, rawStep := range c["steps"].([]interface{}) {
			want := exp["steps"].([]interface{})[s].(map[string]interface{})
			if rawStep.(map[string]interface{})["op"] == "finalize" {
				if err := o.FinalizeVariableValues(all()); err != nil {
					t.Fatal(err)
				}
				compare(s, want)
				continue
			}
			var grads []Gradient
			for v, g := range rawStep.(map[string]interface{})["grads"].([]interface{}) {
				g, _ := g.(map[string]interface{})
				switch {
				case g == nil && vars[v].DType == Float64:
					grads = append(grads, NoGradient(v, f64[v]))
				case g == nil:
					grads = append(grads, NoGradient(v, f32[v]))
				case g["dense"] != nil && vars[v].DType == Float64:
					grads = append(grads, Dense(v, f64[v], numbers(g["dense"])))
				case g["dense"] != nil:
					grads = append(grads, Dense(v, f32[v], to32(numbers(g["dense"]))))
				default:
					var idx []int64
					for _, x := range g["indices"].([]interface{}) {
						idx = append(idx, int64(x.(float64)))
					}
					grads = append(grads, Sparse(v, f32[v], idx, to32(numbers(g["values"]))))
				}
			}
			it, err := o.ApplyGradients(grads)
			if err != nil {
				t.Fatal(c["id"], err)
			}
			lr, _ := o.LearningRate()
			if it != int64(want["iterations"].(float64)) || !same(number(want["learning_rate"]), float64(lr)) {
				t.Fatalf("%v step %d: iterations %d lr %v", c["id"], s, it, lr)
			}
			compare(s, want)
		}
		o.Close()
		ran++
	}
	if ran < 12 {
		t.Fatal("only", ran, "smoke cases ran")
	}
}

func to32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// SetGoroutines: the library's tasks run on goroutines (three, and more than there are tasks),
// with the bits of one thread; with a global clip norm, so that the norm's sum runs in tasks too.
func TestSetGoroutines(t *testing.T) {
	const n = 200000
	run := func(threads, goroutines int) []float32 {
		cfg := DefaultConfig()
		cfg.LearningRate, cfg.GlobalClipNorm, cfg.Threads = 0.01, 1.0, threads
		o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{n}, DType: Float32})
		defer o.Close()
		if goroutines > 0 {
			if err := o.SetGoroutines(goroutines); err != nil {
				t.Fatal(err)
			}
		}
		w, g := make([]float32, n), make([]float32, n)
		for i := range w {
			w[i] = float32(i%1000) * 1e-3
			g[i] = float32((i*613)%977)*1e-3 - 0.488
		}
		for step := 0; step < 3; step++ {
			if _, err := o.ApplyGradients([]Gradient{Dense(0, w, g)}); err != nil {
				t.Fatal(err)
			}
		}
		return w
	}
	one := run(1, 0)
	for _, goroutines := range []int{3, 1000} {
		got := run(1, goroutines)
		for i := range one {
			if math.Float32bits(got[i]) != math.Float32bits(one[i]) {
				t.Fatalf("%d goroutines: element %d is %v, one thread gives %v", goroutines, i, got[i], one[i])
			}
		}
	}
	o := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{3}, DType: Float32})
	if err := o.SetGoroutines(2); err != nil {
		t.Fatal(err)
	}
	if err := o.SetGoroutines(0); err != nil { // back to Config.Threads
		t.Fatal(err)
	}
	o.Close()
	if err := o.SetGoroutines(2); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetGoroutines after Close: %v", err)
	}
}

// SetDevice before Build (the CPU; an unknown kind refused; after Build too late), and
// LoadShards with one unsharded checkpoint (one rank of itself): the state Load gives; a bad
// checkpoint refused with nothing changed.
func TestSetDeviceAndLoadShards(t *testing.T) {
	o, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.SetDevice(DeviceCPU, 0); err != nil {
		t.Fatal(err)
	}
	if err := o.SetDevice(DeviceKind(99), 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("an unknown device kind: %v", err)
	}
	if err := o.Build([]Variable{{Name: "w", Shape: []int{3}, DType: Float32}}); err != nil {
		t.Fatal(err)
	}
	if err := o.SetDevice(DeviceCPU, 0); !errors.Is(err, ErrAlreadyBuilt) {
		t.Fatalf("SetDevice after Build: %v", err)
	}
	w := []float32{0.5, -1.5, 2.0}
	if _, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{0.1, -0.2, 0.3})}); err != nil {
		t.Fatal(err)
	}
	saved, err := o.Save()
	if err != nil {
		t.Fatal(err)
	}
	fresh := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{3}, DType: Float32})
	defer fresh.Close()
	if err := fresh.LoadShards([][]byte{[]byte("not a checkpoint")}); err == nil {
		t.Fatal("a bad checkpoint was loaded")
	}
	if it, _ := fresh.Iterations(); it != 0 {
		t.Fatalf("a refused load changed the counter to %d", it)
	}
	if err := fresh.LoadShards([][]byte{saved}); err != nil {
		t.Fatal(err)
	}
	again, err := fresh.Save()
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(saved) {
		t.Fatal("LoadShards of one checkpoint differs from the checkpoint")
	}
	if cfg, err := fresh.Config(); err != nil || !strings.Contains(cfg, `"name":"AdamW"`) {
		t.Fatalf("Config: %v %s", err, cfg)
	}
}
