package adamw

import (
	"fmt"
	"testing"
)

// The benchmarks time one step through the package, as tools/bench_go.sh runs them beside the
// same steps of the C loop tools/bench/go_peer.c. They report allocations: a step allocates
// nothing once the optimizer has seen a call as large.

var benchSizes = []struct {
	name string
	n    int
}{{"1K", 1 << 10}, {"64K", 1 << 16}, {"1M", 1 << 20}, {"16M", 1 << 24}}

// benchmarkSteps times ApplyGradients(grads) after one untimed call.
func benchmarkSteps(b *testing.B, o *Optimizer, grads []Gradient, bytes int64) {
	defer o.Close()
	if _, err := o.ApplyGradients(grads); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(bytes)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := o.ApplyGradients(grads); err != nil {
			b.Fatal(err)
		}
	}
}

func gradientOf(n int) []float32 {
	g := make([]float32, n)
	for i := range g {
		g[i] = float32(i%7)*0.1 - 0.3
	}
	return g
}

// BenchmarkDense: one float32 variable with a dense gradient, Keras' defaults.
func BenchmarkDense(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			o := newBuilt(b, DefaultConfig(), Variable{Name: "w", Shape: []int{size.n}, DType: Float32})
			w := make([]float32, size.n)
			benchmarkSteps(b, o, []Gradient{Dense(0, w, gradientOf(size.n))}, int64(size.n)*4)
		})
	}
}

// BenchmarkSparse: a 64K x 16 float32 embedding with 1,024 rows of gradient (repeats included).
func BenchmarkSparse(b *testing.B) {
	const rows, width, hits = 1 << 16, 16, 1024
	o := newBuilt(b, DefaultConfig(), Variable{Name: "e", Shape: []int{rows, width}, DType: Float32})
	if err := o.ReserveSparse(hits); err != nil {
		b.Fatal(err)
	}
	table := make([]float32, rows*width)
	indices := make([]int64, hits)
	for i := range indices {
		indices[i] = int64(i*7919) % rows
	}
	benchmarkSteps(b, o, []Gradient{Sparse(0, table, indices, gradientOf(hits*width))}, int64(rows*width)*4)
}

// BenchmarkManyVariables: 100 float32 variables of 1K in one step, with a global clip norm.
func BenchmarkManyVariables(b *testing.B) {
	const count, n = 100, 1 << 10
	cfg := DefaultConfig()
	cfg.GlobalClipNorm = 1
	vars := make([]Variable, count)
	grads := make([]Gradient, count)
	for i := range vars {
		vars[i] = Variable{Name: fmt.Sprint("w", i), Shape: []int{n}, DType: Float32}
		grads[i] = Dense(i, make([]float32, n), gradientOf(n))
	}
	benchmarkSteps(b, newBuilt(b, cfg, vars...), grads, count*n*4)
}

// BenchmarkModes: one 64K variable in each dtype and mode, with a mesh of one rank.
func BenchmarkModes(b *testing.B) {
	const n = 1 << 16
	half := make([]BF16, n)
	cases := []struct {
		name  string
		cfg   func(*Config)
		dtype DType
		grad  Gradient
	}{
		{"float64", nil, Float64, Dense(0, make([]float64, n), make([]float64, n))},
		{"bfloat16", nil, BFloat16, Dense(0, make([]BF16, n), make([]BF16, n))},
		{"float16", nil, Float16, Dense(0, make([]F16, n), make([]F16, n))},
		{"bfloat16 masters", func(c *Config) { c.MasterWeights = true }, BFloat16, DenseFloat32(0, half, gradientOf(n))},
		{"amsgrad ema", func(c *Config) { c.Amsgrad, c.UseEMA = true, true }, Float32, Dense(0, make([]float32, n), gradientOf(n))},
		{"loss scale", func(c *Config) { c.LossScale = DefaultLossScale() }, Float32, Dense(0, make([]float32, n), gradientOf(n))},
		{"mesh clipnorm", func(c *Config) { c.ClipNorm, c.Mesh = 1, func([]float64) error { return nil } }, Float32,
			Dense(0, make([]float32, n), gradientOf(n))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			cfg := DefaultConfig()
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			v := Variable{Name: "w", Shape: []int{n}, DType: c.dtype, Init: zerosOf(c.dtype, n)}
			if cfg.Mesh != nil {
				v.Sharded, v.ShardLen = true, n
			}
			benchmarkSteps(b, newBuilt(b, cfg, v), []Gradient{c.grad}, n*int64(c.dtype.size()))
		})
	}
}

func zerosOf(d DType, n int) interface{} {
	switch d {
	case Float64:
		return make([]float64, n)
	case BFloat16:
		return make([]BF16, n)
	case Float16:
		return make([]F16, n)
	}
	return make([]float32, n)
}
