// A Go module outside the repository using the Go package against an installed libadamw
// (tools/test-packaging.sh builds and runs it): Keras' first step, bit for bit.
package main

import (
	"fmt"
	"log"
	"math"

	"libadamw/go/adamw"
)

func main() {
	cfg := adamw.DefaultConfig()
	cfg.LearningRate = 0.01
	opt, err := adamw.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer opt.Close()
	if err := opt.Build([]adamw.Variable{{Name: "w", Shape: []int{3}, DType: adamw.Float32}}); err != nil {
		log.Fatal(err)
	}
	w := []float32{0.5, -1.5, 2.0}
	if _, err := opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, w, []float32{0.1, -0.2, 0.3})}); err != nil {
		log.Fatal(err)
	}
	// tf.keras.optimizers.AdamW(learning_rate=0.01) gives exactly these bits after one step.
	keras := []uint32{0x3efadeb6, 0xbfbeb65d, 0x3ffeb5b4}
	for i := range w {
		if math.Float32bits(w[i]) != keras[i] {
			log.Fatalf("element %d: %08x, Keras gives %08x", i, math.Float32bits(w[i]), keras[i])
		}
	}
	fmt.Println("go consumer outside the repository: Keras' first step, bit for bit")
}
