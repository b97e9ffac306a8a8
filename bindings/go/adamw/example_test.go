package adamw_test

import (
	"fmt"
	"math"

	"libadamw/go/adamw"
)

// Trains w toward 3 by minimizing (w - 3)^2 with Keras' AdamW.
func Example() {
	cfg := adamw.DefaultConfig()
	cfg.LearningRate = 0.1
	opt, err := adamw.New(cfg)
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{1}, DType: adamw.Float32}}); err != nil {
		panic(err)
	}
	w, grad := []float32{0}, []float32{0}
	for step := 0; step < 300; step++ {
		grad[0] = 2 * (w[0] - 3) // d/dw (w - 3)^2
		if _, err := opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w, grad)}); err != nil {
			panic(err)
		}
	}
	fmt.Printf("w = %.2f\n", w[0])
	// Output: w = 2.99
}

// One step of Keras' defaults on w = [1, -1] with gradient [0.5, 0.5]: the weight decay takes
// lr·wd·w, then Adam's first step moves each element by the learning rate against its gradient.
func ExampleOptimizer_ApplyGradients() {
	opt, err := adamw.New(adamw.DefaultConfig())
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{2}, DType: adamw.Float32}}); err != nil {
		panic(err)
	}
	w, grad := []float32{1, -1}, []float32{0.5, 0.5}
	iterations, err := opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w, grad)})
	if err != nil {
		panic(err)
	}
	fmt.Printf("after %d step: w = [%.6f %.6f]\n", iterations, w[0], w[1])
	// Output: after 1 step: w = [0.998996 -1.000996]
}

// An embedding of 4 rows of 2 takes a sparse gradient of rows 1 and 3 (Keras' IndexedSlices;
// a repeated index would add up). Every row decays; only the rows with a gradient move.
func ExampleSparse() {
	cfg := adamw.DefaultConfig()
	cfg.WeightDecay = 0
	opt, err := adamw.New(cfg)
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	if err := opt.Build([]adamw.Variable{{Name: "embedding", Shape: []int{4, 2}, DType: adamw.Float32}}); err != nil {
		panic(err)
	}
	table := []float32{1, 1, 1, 1, 1, 1, 1, 1}
	rows := []float32{0.5, -0.5, 2, 2} // row 1, then row 3
	if _, err := opt.ApplyGradients([]adamw.Gradient{adamw.Sparse(0, table, []int64{1, 3}, rows)}); err != nil {
		panic(err)
	}
	fmt.Printf("%.3f\n", table)
	// Output: [1.000 1.000 0.999 1.001 1.000 1.000 0.999 0.999]
}

// bfloat16 variables with float32 master weights: the step updates the float32 master as Keras
// updates a float32 variable, from a float32 gradient, and writes its rounding into the caller's
// bfloat16 values, which a step of 0.001 alone could not move from 1.
func ExampleDenseFloat32() {
	cfg := adamw.DefaultConfig()
	cfg.MasterWeights = true
	opt, err := adamw.New(cfg)
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	w := []adamw.BF16{adamw.BF16FromFloat32(1)}
	if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{1}, DType: adamw.BFloat16, Init: w}}); err != nil {
		panic(err)
	}
	for step := 0; step < 5; step++ {
		if _, err := opt.ApplyGradients([]adamw.Gradient{adamw.DenseFloat32(0, w, []float32{1})}); err != nil {
			panic(err)
		}
	}
	master := make([]float32, 1)
	if err := opt.Values(3, master); err != nil { // the counter, m, v, then the master
		panic(err)
	}
	fmt.Printf("master %.5f, bfloat16 value %.5f\n", master[0], w[0].Float32())
	// Output: master 0.99498, bfloat16 value 0.99609
}

// Keras' LossScaleOptimizer: multiply the loss by LossScale() and pass the scaled gradients; a
// step with an overflowed gradient is skipped and halves the scale.
func ExampleDefaultLossScale() {
	cfg := adamw.DefaultConfig()
	cfg.LossScale = adamw.DefaultLossScale()
	opt, err := adamw.New(cfg)
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{1}, DType: adamw.Float32}}); err != nil {
		panic(err)
	}
	w := []float32{1}
	scale, _, _ := opt.LossScale()
	opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w, []float32{float32(math.Inf(1))})})
	after, _, _ := opt.LossScale()
	fmt.Printf("scale %v, then %v after an overflow; w = %v\n", scale, after, w[0])
	// Output: scale 32768, then 16384 after an overflow; w = 1
}

// Sharded state: each rank holds a shard of a variable, and the mesh sums what the ranks need
// across them (here two goroutines and a coordinator summing in rank order; in a cluster,
// MPI_Allreduce or NCCL). With a clip norm the shards take the steps one optimizer over the
// whole variable would: both halves of [1 1 1 1] move as the first step of ApplyGradients'
// example.
func ExampleConfig_mesh() {
	in := [2]chan []float64{make(chan []float64), make(chan []float64)}
	out := [2]chan []float64{make(chan []float64), make(chan []float64)}
	go func() {
		for {
			total := <-in[0]
			for i, v := range <-in[1] {
				total[i] += v
			}
			out[0] <- total
			out[1] <- total
		}
	}()
	shards := [2][]float32{{1, 1}, {1, 1}}
	done := make(chan error)
	for rank := 0; rank < 2; rank++ {
		go func(rank int) {
			cfg := adamw.DefaultConfig()
			cfg.ClipNorm = 10
			cfg.Mesh = func(values []float64) error {
				in[rank] <- append([]float64(nil), values...)
				copy(values, <-out[rank])
				return nil
			}
			opt, err := adamw.New(cfg)
			if err != nil {
				done <- err
				return
			}
			defer opt.Close()
			shard := adamw.Variable{Name: "w", Shape: []int{4}, DType: adamw.Float32, Sharded: true, ShardOffset: 2 * rank, ShardLen: 2}
			if err := opt.Build([]adamw.Variable{shard}); err != nil {
				done <- err
				return
			}
			_, err = opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, shards[rank], []float32{0.5, 0.5})})
			done <- err
		}(rank)
	}
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			panic(err)
		}
	}
	fmt.Printf("%.6f %.6f\n", shards[0], shards[1])
	// Output: [0.998996 0.998996] [0.998996 0.998996]
}

// With UseEMA the optimizer keeps a moving average of each variable; at the end of training
// FinalizeVariableValues writes the averages into the variables (Keras' finalize_variable_values).
func ExampleOptimizer_FinalizeVariableValues() {
	cfg := adamw.DefaultConfig()
	cfg.LearningRate = 0.1
	cfg.UseEMA, cfg.EMAMomentum = true, 0.5
	opt, err := adamw.New(cfg)
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	w := []float64{1}
	if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{1}, DType: adamw.Float64, Init: w}}); err != nil {
		panic(err)
	}
	for step := 0; step < 3; step++ {
		if _, err := opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w, []float64{1})}); err != nil {
			panic(err)
		}
	}
	fmt.Printf("trained %.4f", w[0])
	if err := opt.FinalizeVariableValues([]adamw.Gradient{adamw.NoGradient(0, w)}); err != nil {
		panic(err)
	}
	fmt.Printf(", averaged %.4f\n", w[0])
	// Output: trained 0.6989, averaged 0.7867
}

// A checkpoint (Keras' save_own_variables, as a safetensors file) restores the state in another
// optimizer built over the same variables, which then continues bit for bit.
func ExampleOptimizer_Save() {
	build := func() *adamw.Optimizer {
		opt, err := adamw.New(adamw.DefaultConfig())
		if err != nil {
			panic(err)
		}
		if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{1}, DType: adamw.Float32}}); err != nil {
			panic(err)
		}
		return opt
	}
	first, second := build(), build()
	defer first.Close()
	defer second.Close()
	w := []float32{1}
	for step := 0; step < 10; step++ {
		first.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w, []float32{0.5})})
	}
	checkpoint, err := first.Save()
	if err != nil {
		panic(err)
	}
	if err := second.Load(checkpoint); err != nil {
		panic(err)
	}
	w2 := append([]float32(nil), w...)
	first.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w, []float32{0.5})})
	it, _ := second.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w2, []float32{0.5})})
	fmt.Println("step", it, "the same bits:", math.Float32bits(w[0]) == math.Float32bits(w2[0]))
	// Output: step 11 the same bits: true
}

// The optimizer's variables in Keras' order, by name, with Variable and Values.
func ExampleOptimizer_Variable() {
	opt, err := adamw.New(adamw.DefaultConfig())
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	if err := opt.Build([]adamw.Variable{{Name: "kernel", Shape: []int{2, 3}, DType: adamw.Float32}}); err != nil {
		panic(err)
	}
	opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, make([]float32, 6), []float32{1, 1, 1, 1, 1, 1})})
	n, _ := opt.NumVariables()
	for i := 0; i < n; i++ {
		info, _ := opt.Variable(i)
		fmt.Println(info.Name, info.Shape)
	}
	m := make([]float32, 6)
	if err := opt.Values(1, m); err != nil {
		panic(err)
	}
	fmt.Printf("m = %.2f\n", m)
	// Output:
	// iteration []
	// AdamW/m/kernel [2 3]
	// AdamW/v/kernel [2 3]
	// m = [0.10 0.10 0.10 0.10 0.10 0.10]
}

// Keras' get_config and from_config: the JSON of an optimizer's configuration, and an optimizer
// made from it.
func ExampleFromConfig() {
	cfg := adamw.DefaultConfig()
	cfg.LearningRate, cfg.Amsgrad = 0.01, true
	opt, err := adamw.New(cfg)
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	json, err := opt.GetConfig()
	if err != nil {
		panic(err)
	}
	copied, err := adamw.FromConfig(json)
	if err != nil {
		panic(err)
	}
	defer copied.Close()
	again, _ := copied.GetConfig()
	lr, _ := copied.LearningRate()
	fmt.Println("same config:", again == json, "learning rate:", lr)
	// Output: same config: true learning rate: 0.01
}

// Minimize computes the gradients from the current values, then steps (Keras' minimize).
func ExampleOptimizer_Minimize() {
	cfg := adamw.DefaultConfig()
	cfg.LearningRate = 0.5
	opt, err := adamw.New(cfg)
	if err != nil {
		panic(err)
	}
	defer opt.Close()
	if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{1}, DType: adamw.Float64}}); err != nil {
		panic(err)
	}
	w, grad := []float64{4}, []float64{0}
	entries := []adamw.Gradient{adamw.Dense(0, w, grad)}
	for step := 0; step < 200; step++ {
		opt.Minimize(entries, func() error {
			grad[0] = 2 * w[0] // d/dw w²
			return nil
		})
	}
	fmt.Printf("|w| < 0.1: %v\n", math.Abs(w[0]) < 0.1)
	// Output: |w| < 0.1: true
}
