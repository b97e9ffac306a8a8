package adamw

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"libadamw/go/internal/cgoprobe"
)

// The tests of the package run under the strict checker in the test command: every store of a Go
// pointer into C memory is checked, so a step that broke cgo's rules would crash them. This test
// shows that the checker is on, by breaking a rule on purpose in a child process.
func TestStrictPointerCheckerIsOn(t *testing.T) {
	if os.Getenv("ADAMW_CGO_PROBE") == "1" {
		cgoprobe.StoreUnpinned()
		fmt.Println("the unpinned store went unnoticed")
		return
	}
	if !strictChecker {
		if os.Getenv("ADAMW_REQUIRE_CGOCHECK2") == "1" {
			t.Fatal("ADAMW_REQUIRE_CGOCHECK2=1, but the test binary was built without GOEXPERIMENT=cgocheck2")
		}
		t.Skip("built without GOEXPERIMENT=cgocheck2: the strict pointer checker is off (the test command turns it on)")
	}
	child := exec.Command(os.Args[0], "-test.run", "^TestStrictPointerCheckerIsOn$")
	child.Env = append(os.Environ(), "ADAMW_CGO_PROBE=1")
	out, err := child.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unpinned Go pointer stored into non-Go memory") {
		t.Fatalf("an unpinned Go pointer stored into C memory was not caught (%v):\n%s", err, out)
	}
}

// Every kind of step, once the optimizer has made it, allocates nothing.
func TestStepsAllocateNothing(t *testing.T) {
	const n = 64
	w32, g32 := make([]float32, n), gradientOf(n)
	w64, g64 := make([]float64, n), make([]float64, n)
	b16, h16, bm := make([]BF16, n), make([]F16, n), make([]BF16, n)
	table := make([]float32, 8*n)
	many := make([]Gradient, 40)
	manyVars := make([]Variable, 40)
	for i := range many {
		manyVars[i] = Variable{Name: fmt.Sprint("w", i), Shape: []int{n}, DType: Float32}
		many[i] = Dense(i, make([]float32, n), g32)
	}
	mesh := func(values []float64) error { return nil }
	cases := []struct {
		name  string
		cfg   func(*Config)
		vars  []Variable
		grads []Gradient
	}{
		{"dense float32", nil, []Variable{{Name: "w", Shape: []int{n}, DType: Float32}}, []Gradient{Dense(0, w32, g32)}},
		{"dense float64", nil, []Variable{{Name: "w", Shape: []int{n}, DType: Float64}}, []Gradient{Dense(0, w64, g64)}},
		{"sparse with repeats", nil, []Variable{{Name: "e", Shape: []int{8 * n / 4, 4}, DType: Float32}},
			[]Gradient{Sparse(0, table, []int64{3, 1, 3, 0}, g32[:16])}},
		{"40 variables, global clipnorm", func(c *Config) { c.GlobalClipNorm = 1 }, manyVars, many},
		{"bfloat16 and float16", nil, []Variable{{Name: "b", Shape: []int{n}, DType: BFloat16}, {Name: "h", Shape: []int{n}, DType: Float16}},
			[]Gradient{Dense(0, b16, make([]BF16, n)), Dense(1, h16, make([]F16, n))}},
		{"masters, float32 gradient", func(c *Config) { c.MasterWeights = true },
			[]Variable{{Name: "b", Shape: []int{n}, DType: BFloat16, Init: bm}}, []Gradient{DenseFloat32(0, bm, g32)}},
		{"amsgrad, EMA, clipvalue", func(c *Config) { c.Amsgrad, c.UseEMA, c.ClipValue = true, true, 0.1 },
			[]Variable{{Name: "w", Shape: []int{n}, DType: Float32, Init: w32}}, []Gradient{Dense(0, w32, g32)}},
		{"loss scale", func(c *Config) { c.LossScale = DefaultLossScale() }, []Variable{{Name: "w", Shape: []int{n}, DType: Float32}},
			[]Gradient{Dense(0, w32, g32)}},
		{"mesh, clipnorm, schedule function", func(c *Config) {
			c.Mesh, c.ClipNorm, c.LearningRateFunc = mesh, 1, func(step int64) float64 { return 1e-3 / float64(step+1) }
		}, []Variable{{Name: "w", Shape: []int{n}, DType: Float32, Sharded: true, ShardOffset: 0, ShardLen: n}},
			[]Gradient{Dense(0, w32, g32)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			o := newBuilt(t, cfg, c.vars...)
			defer o.Close()
			step := func() {
				if _, err := o.ApplyGradients(c.grads); err != nil {
					t.Fatal(err)
				}
			}
			if allocs := testing.AllocsPerRun(100, step); allocs != 0 {
				t.Errorf("%v allocations per step, want 0", allocs)
			}
			if cfg.UseEMA {
				finalize := func() {
					if err := o.FinalizeVariableValues([]Gradient{NoGradient(0, w32)}); err != nil {
						t.Fatal(err)
					}
				}
				if allocs := testing.AllocsPerRun(100, finalize); allocs != 0 {
					t.Errorf("%v allocations per finalize_variable_values, want 0", allocs)
				}
			}
		})
	}
}

// A step over many variables of every dtype, some sparse and some without a gradient, spread
// over several pinners, gives each variable the bits of an optimizer of its own.
func TestManyVariablesMatchOneAtATime(t *testing.T) {
	const count, n = 23, 12
	var vars []Variable
	var grads []Gradient
	var singles []func() (*Optimizer, []Gradient)
	var values []interface{}
	for i := 0; i < count; i++ {
		name := fmt.Sprint("v", i)
		g := make([]float64, n)
		for k := range g {
			g[k] = math.Sin(float64(i*n+k)) * 0.3
		}
		switch i % 4 {
		case 0:
			w, w1 := make([]float32, n), make([]float32, n)
			vars = append(vars, Variable{Name: name, Shape: []int{n}, DType: Float32})
			grads = append(grads, Dense(i, w, to32(g)))
			values = append(values, [2]interface{}{w, w1})
			singles = append(singles, single(t, Variable{Name: name, Shape: []int{n}, DType: Float32}, Dense(0, w1, to32(g))))
		case 1:
			w, w1 := make([]float64, n), make([]float64, n)
			vars = append(vars, Variable{Name: name, Shape: []int{n}, DType: Float64})
			grads = append(grads, Dense(i, w, g))
			values = append(values, [2]interface{}{w, w1})
			singles = append(singles, single(t, Variable{Name: name, Shape: []int{n}, DType: Float64}, Dense(0, w1, g)))
		case 2:
			w, w1 := make([]BF16, n), make([]BF16, n)
			rows := make([]BF16, 6)
			for k := range rows {
				rows[k] = BF16FromFloat32(float32(g[k]))
			}
			v := Variable{Name: name, Shape: []int{n / 3, 3}, DType: BFloat16}
			vars = append(vars, v)
			grads = append(grads, Sparse(i, w, []int64{2, 2}, rows))
			values = append(values, [2]interface{}{w, w1})
			singles = append(singles, single(t, v, Sparse(0, w1, []int64{2, 2}, rows)))
		case 3:
			w := make([]float32, n)
			vars = append(vars, Variable{Name: name, Shape: []int{n}, DType: Float32})
			grads = append(grads, NoGradient(i, w))
		}
	}
	o := newBuilt(t, DefaultConfig(), vars...)
	defer o.Close()
	for step := 0; step < 3; step++ {
		if _, err := o.ApplyGradients(grads); err != nil {
			t.Fatal(err)
		}
		for _, s := range singles {
			one, g := s()
			if _, err := one.ApplyGradients(g); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, pair := range values {
		got, want := fmt.Sprintf("%x", pair.([2]interface{})[0]), fmt.Sprintf("%x", pair.([2]interface{})[1])
		if got != want {
			t.Errorf("variable %d: %s, alone %s", i, got, want)
		}
	}
}

// single builds an optimizer over one variable, returned with its gradient by the closure.
func single(t *testing.T, v Variable, g Gradient) func() (*Optimizer, []Gradient) {
	o := newBuilt(t, DefaultConfig(), v)
	t.Cleanup(func() { o.Close() })
	grads := []Gradient{g}
	return func() (*Optimizer, []Gradient) { return o, grads }
}

// The library sees the caller's slices themselves, so it sees when two of them share memory: a
// gradient that is its variable's own values is refused, and nothing changes.
func TestSharedMemoryIsRefused(t *testing.T) {
	o := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{4}, DType: Float32})
	defer o.Close()
	w := []float32{1, 2, 3, 4}
	_, err := o.ApplyGradients([]Gradient{Dense(0, w, w)})
	var e *Error
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &e) || !strings.Contains(e.Message, "overlaps") {
		t.Fatalf("a gradient aliasing its values: %v, want ErrInvalidArgument about overlapping buffers", err)
	}
	if w[0] != 1 || w[3] != 4 {
		t.Errorf("a refused step changed the values: %v", w)
	}
	if it, _ := o.Iterations(); it != 0 {
		t.Errorf("a refused step counted: %d", it)
	}
}

// Values, SetWeights, Save and Load also work on the caller's memory; slots set from Go come
// back as they were given, for every dtype.
func TestStateThroughCallerMemory(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Amsgrad = true
	o := newBuilt(t, cfg, Variable{Name: "a", Shape: []int{2}, DType: Float64}, Variable{Name: "b", Shape: []int{3}, DType: Float16})
	defer o.Close()
	weights := []Weight{
		{Shape: nil, Values: []int64{7}},
		{Shape: []int{2}, Values: []float64{0.25, -1}}, {Shape: []int{2}, Values: []float64{3, 4}},
		{Shape: []int{3}, Values: []F16{0x3c00, 0x4000, 0xc000}}, {Shape: []int{3}, Values: []F16{1, 2, 3}},
		{Shape: []int{2}, Values: []float64{5, 6}}, {Shape: []int{3}, Values: []F16{0x7bff, 0, 0x8001}},
	}
	if err := o.SetWeights(weights); err != nil {
		t.Fatal(err)
	}
	saved, err := o.Save()
	if err != nil {
		t.Fatal(err)
	}
	other := newBuilt(t, cfg, Variable{Name: "a", Shape: []int{2}, DType: Float64}, Variable{Name: "b", Shape: []int{3}, DType: Float16})
	defer other.Close()
	if err := other.Load(saved); err != nil {
		t.Fatal(err)
	}
	for i, w := range weights {
		var got interface{}
		switch v := w.Values.(type) {
		case []int64:
			got = make([]int64, len(v))
		case []float64:
			got = make([]float64, len(v))
		case []F16:
			got = make([]F16, len(v))
		}
		if err := other.Values(i, got); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(w.Values) {
			t.Errorf("variable %d: %v, set %v", i, got, w.Values)
		}
	}
	if err := other.Load(nil); !errors.Is(err, ErrInvalidCheckpoint) {
		t.Errorf("an empty checkpoint: %v", err)
	}
}

// Build reads Init where it is, as many elements as the variable holds: an Init of another
// length, dtype or type is refused before the library sees it, and Build can then succeed.
func TestBuildChecksInit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.UseEMA = true
	cases := []struct {
		v    Variable
		want error
	}{
		{Variable{Name: "w", Shape: []int{2, 3}, DType: Float32, Init: make([]float32, 5)}, ErrShapeMismatch},
		{Variable{Name: "w", Shape: []int{2, 3}, DType: Float32, Init: make([]float64, 6)}, ErrDtypeMismatch},
		{Variable{Name: "w", Shape: []int{2, 3}, DType: Float32, Init: [6]float32{}}, ErrInvalidArgument},
		{Variable{Name: "w", Shape: []int{6}, DType: BFloat16, Init: make([]BF16, 6), Sharded: true, ShardLen: 3}, ErrShapeMismatch},
	}
	for i, c := range cases {
		o, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Build([]Variable{c.v}); !errors.Is(err, c.want) {
			t.Errorf("case %d: %v, want %v", i, err, c.want)
		}
		if err := o.Build([]Variable{{Name: "w", Shape: []int{2, 3}, DType: Float32, Init: make([]float32, 6)}}); err != nil {
			t.Errorf("case %d: a build after the refused one: %v", i, err)
		}
		o.Close()
	}
}

// After a garbage collection a step allocates one pinner at most (each collection empties the
// runtime's per-P cache of them); without one, nothing (TestStepsAllocateNothing). MemStats counts
// the whole process, so the test runs on one P, as testing.AllocsPerRun does: with more, the
// scheduler may start a thread (several allocations) inside the measured window while the step's
// cgo call blocks, which is the runtime's, not the step's.
func TestStepAfterACollection(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	o := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{64}, DType: Float32})
	defer o.Close()
	grads := []Gradient{Dense(0, make([]float32, 64), gradientOf(64))}
	if _, err := o.ApplyGradients(grads); err != nil { // the optimizer's first call of this size
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	for i := 0; i < 20; i++ {
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, err := o.ApplyGradients(grads); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if mallocs := after.Mallocs - before.Mallocs; mallocs > 1 {
			t.Errorf("step %d after a collection: %d allocations, want at most one", i, mallocs)
		}
	}
}

// A dense gradient is a dense gradient even when it is empty: a missing one is a shape mismatch,
// not a variable silently left alone.
func TestEmptyDenseGradientIsRefused(t *testing.T) {
	o := newBuilt(t, DefaultConfig(), Variable{Name: "w", Shape: []int{3}, DType: Float32})
	defer o.Close()
	w := []float32{1, 2, 3}
	if _, err := o.ApplyGradients([]Gradient{Dense(0, w, nil)}); !errors.Is(err, ErrShapeMismatch) {
		t.Errorf("Dense with no gradient: %v, want ErrShapeMismatch", err)
	}
}
