package adamw_test

import (
	"fmt"

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
