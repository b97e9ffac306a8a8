package adamw

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
)

// meshOf returns an all-reduce for each of n ranks (goroutines): a coordinator sums what every
// rank sends, in rank order, and hands the sum back to each.
func meshOf(n int) ([]func([]float64) error, func()) {
	ins, outs := make([]chan []float64, n), make([]chan []float64, n)
	for r := range ins {
		ins[r], outs[r] = make(chan []float64), make(chan []float64)
	}
	done := make(chan struct{})
	go func() {
		for {
			var sum []float64
			for r := 0; r < n; r++ {
				select {
				case part := <-ins[r]:
					if sum == nil {
						sum = make([]float64, len(part))
					}
					for i, v := range part {
						sum[i] += v
					}
				case <-done:
					return
				}
			}
			for r := 0; r < n; r++ {
				outs[r] <- append([]float64(nil), sum...)
			}
		}
	}()
	reduces := make([]func([]float64) error, n)
	for r := range reduces {
		r := r
		reduces[r] = func(values []float64) error {
			ins[r] <- append([]float64(nil), values...)
			copy(values, <-outs[r])
			return nil
		}
	}
	return reduces, func() { close(done) }
}

// Two ranks on goroutines, their all-reduce a Go function reached through a cgo.Handle, a shard
// boundary inside a leaf of Eigen's sum: with clipnorm the shards hold one optimizer's bits.
func TestMeshShardsGiveTheUnshardedBits(t *testing.T) {
	const n, cut = 20000, 9001
	grad := func(step, i int) float32 { return float32((i*7+step*13)%101)*1e-3 - 0.05 }
	cfg := DefaultConfig()
	cfg.LearningRate = 0.01
	cfg.ClipNorm = 0.5
	whole := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{n}, DType: Float32})
	defer whole.Close()
	w := make([]float32, n)
	for i := range w {
		w[i] = 0.5
	}
	for step := 0; step < 3; step++ {
		g := make([]float32, n)
		for i := range g {
			g[i] = grad(step, i)
		}
		if _, err := whole.ApplyGradients([]Gradient{Dense(0, w, g)}); err != nil {
			t.Fatal(err)
		}
	}
	reduces, stop := meshOf(2)
	defer stop()
	held := [2][]float32{}
	errs := [2]error{}
	var wg sync.WaitGroup
	for rank := 0; rank < 2; rank++ {
		wg.Add(1)
		go func(rank int) {
			defer wg.Done()
			offset, length := 0, cut
			if rank == 1 {
				offset, length = cut, n-cut
			}
			c := cfg
			c.Mesh = reduces[rank]
			o, err := New(c)
			if err != nil {
				errs[rank] = err
				return
			}
			defer o.Close()
			v := Variable{Name: "w", Shape: []int{n}, DType: Float32, Sharded: true, ShardOffset: offset, ShardLen: length}
			if errs[rank] = o.Build([]Variable{v}); errs[rank] != nil {
				return
			}
			held[rank] = make([]float32, length)
			for i := range held[rank] {
				held[rank][i] = 0.5
			}
			for step := 0; step < 3; step++ {
				g := make([]float32, length)
				for i := range g {
					g[i] = grad(step, offset+i)
				}
				if _, errs[rank] = o.ApplyGradients([]Gradient{Dense(0, held[rank], g)}); errs[rank] != nil {
					return
				}
			}
		}(rank)
	}
	wg.Wait()
	for rank, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", rank, err)
		}
	}
	gathered := append(append([]float32(nil), held[0]...), held[1]...)
	for i := range w {
		if math.Float32bits(gathered[i]) != math.Float32bits(w[i]) {
			t.Fatalf("element %d: sharded %v, one optimizer %v", i, gathered[i], w[i])
		}
	}
}

// An error from the mesh fails the step with ErrCallbackFailed and its text; nothing changes.
func TestMeshErrorFailsTheStep(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ClipNorm = 0.5
	cfg.Mesh = func([]float64) error { return errors.New("rank 1 is gone") }
	o := newBuilt(t, cfg, Variable{Name: "w", Shape: []int{4}, DType: Float32, Sharded: true, ShardLen: 4})
	defer o.Close()
	w := []float32{1, 1, 1, 1}
	_, err := o.ApplyGradients([]Gradient{Dense(0, w, []float32{0.5, 0.5, 0.5, 0.5})})
	var e *Error
	if !errors.Is(err, ErrCallbackFailed) || !errors.As(err, &e) || !strings.Contains(e.Message, "rank 1 is gone") {
		t.Fatalf("got %v, want ErrCallbackFailed with the mesh's message", err)
	}
	if w[0] != 1 {
		t.Errorf("a failed step changed the values: %v", w)
	}
}
