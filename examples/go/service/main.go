// A service-style use of libadamw from Go: a model trained online, one small batch per request,
// from a generated stream (logistic regression on 4 features), with the optimizer checkpointed
// to disk every 100 requests. Halfway it "restarts": a new optimizer loads the last checkpoint
// and serves on, and its weights match an uninterrupted run's bit for bit.
package main

import (
	"fmt"
	"log"
	"math"
	"math/rand"
	"os"
	"path/filepath"

	"libadamw/go/adamw"
)

const features, batch, requests = 4, 32, 400

var truth = [features]float64{1.5, -2.0, 0.5, 3.0}

// nextBatch draws a batch from the stream: labels from a fixed linear rule plus noise.
func nextBatch(rng *rand.Rand) ([][features]float32, []float32) {
	xs := make([][features]float32, batch)
	ys := make([]float32, batch)
	for i := range xs {
		z := 0.25 * rng.NormFloat64()
		for j := range xs[i] {
			xs[i][j] = float32(rng.NormFloat64())
			z += truth[j] * float64(xs[i][j])
		}
		if z > 0 {
			ys[i] = 1
		}
	}
	return xs, ys
}

// gradient of the mean logistic loss; returns the batch accuracy before the update.
func gradient(w, b []float32, xs [][features]float32, ys []float32, gw, gb []float32) float64 {
	for j := range gw {
		gw[j] = 0
	}
	gb[0] = 0
	correct := 0
	for i := range xs {
		z := b[0]
		for j := range w {
			z += w[j] * xs[i][j]
		}
		p := float32(1 / (1 + math.Exp(-float64(z))))
		if (p > 0.5) == (ys[i] == 1) {
			correct++
		}
		d := (p - ys[i]) / batch
		for j := range w {
			gw[j] += d * xs[i][j]
		}
		gb[0] += d
	}
	return float64(correct) / batch
}

type service struct {
	opt  *adamw.Optimizer
	w, b []float32
}

func newService() *service {
	cfg := adamw.DefaultConfig()
	cfg.LearningRate = 0.05
	cfg.GlobalClipNorm = 5
	opt, err := adamw.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := opt.ExcludeFromWeightDecay(nil, []string{"bias"}); err != nil {
		log.Fatal(err)
	}
	err = opt.Build([]adamw.Variable{
		{Name: "logreg/kernel", Shape: []int{features}, DType: adamw.Float32},
		{Name: "logreg/bias", Shape: []int{1}, DType: adamw.Float32},
	})
	if err != nil {
		log.Fatal(err)
	}
	return &service{opt: opt, w: make([]float32, features), b: make([]float32, 1)}
}

// handle serves one request: a gradient step on its batch.
func (s *service) handle(xs [][features]float32, ys []float32) float64 {
	gw, gb := make([]float32, features), make([]float32, 1)
	acc := gradient(s.w, s.b, xs, ys, gw, gb)
	if _, err := s.opt.ApplyGradients([]adamw.Gradient{adamw.Dense(0, s.w, gw), adamw.Dense(1, s.b, gb)}); err != nil {
		log.Fatal(err)
	}
	return acc
}

func main() {
	dir, err := os.MkdirTemp("", "adamw-service")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	checkpoint := filepath.Join(dir, "optimizer.safetensors")

	rng := rand.New(rand.NewSource(7))
	stream := make([][][features]float32, requests)
	labels := make([][]float32, requests)
	for r := range stream {
		stream[r], labels[r] = nextBatch(rng)
	}

	live := newService()
	defer live.opt.Close()
	var savedW, savedB []float32
	savedAt := 0
	accuracy := 0.0
	for r := 0; r < requests; r++ {
		accuracy += live.handle(stream[r], labels[r])
		if (r+1)%100 == 0 {
			if err := live.opt.SaveFile(checkpoint); err != nil {
				log.Fatal(err)
			}
			savedW, savedB, savedAt = append([]float32(nil), live.w...), append([]float32(nil), live.b...), r+1
			fmt.Printf("request %3d: accuracy over the last 100 batches %.3f, checkpoint saved\n", r+1, accuracy/100)
			accuracy = 0
		}
		if r+1 == requests/2 {
			// Restart: a fresh process would do this with the checkpoint on disk.
			restarted := newService()
			defer restarted.opt.Close()
			if err := restarted.opt.LoadFile(checkpoint); err != nil {
				log.Fatal(err)
			}
			copy(restarted.w, savedW)
			copy(restarted.b, savedB)
			from := savedAt
			for q := from; q < requests; q++ {
				restarted.handle(stream[q], labels[q])
			}
			defer func() {
				same := true
				for j := range live.w {
					same = same && math.Float32bits(live.w[j]) == math.Float32bits(restarted.w[j])
				}
				same = same && math.Float32bits(live.b[0]) == math.Float32bits(restarted.b[0])
				fmt.Printf("restarted from request %d: weights %s\n", from, map[bool]string{true: "identical to the uninterrupted run", false: "DIFFERENT"}[same])
				if !same {
					os.Exit(1)
				}
			}()
		}
	}
	it, _ := live.opt.Iterations()
	fmt.Printf("after %d steps: w = %.2f, b = %.2f (truth %v scaled)\n", it, live.w, live.b[0], truth)
}
