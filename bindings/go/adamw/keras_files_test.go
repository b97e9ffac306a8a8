package adamw

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var kerasFiles = checkout("tests", "data", "keras_files") + "/"

// A Keras archive's config and state, the same state from the weights file and the plain
// store, refusals that change nothing, and a copy written back.
func TestKerasFiles(t *testing.T) {
	config, err := KerasFileOptimizerConfig(kerasFiles + "float64_clipnorm.keras")
	if err != nil || !strings.Contains(config, `"clipnorm":0.5`) {
		t.Fatalf("config %q, %v", config, err)
	}
	build := func() *Optimizer {
		o, err := FromConfig(config)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Build([]Variable{{Name: "wide/kernel", Shape: []int{5, 3}, DType: Float64},
			{Name: "wide/bias", Shape: []int{3}, DType: Float64}}); err != nil {
			t.Fatal(err)
		}
		return o
	}
	o := build()
	defer o.Close()
	if err := o.LoadKerasFile(kerasFiles + "float64_clipnorm.keras"); err != nil {
		t.Fatal(err)
	}
	if it, _ := o.Iterations(); it != 3 {
		t.Errorf("iterations %d, want Keras' 3", it)
	}
	state, _ := o.Save()
	other := build()
	defer other.Close()
	if err := other.LoadKerasFile(kerasFiles + "float64_clipnorm.weights.h5"); err != nil {
		t.Fatal(err)
	}
	store, err := os.ReadFile(kerasFiles + "float64_clipnorm.store.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	fromStore := build()
	defer fromStore.Close()
	if err := fromStore.LoadKerasStore(store); err != nil {
		t.Fatal(err)
	}
	for name, opt := range map[string]*Optimizer{"weights file": other, "plain store": fromStore} {
		if got, _ := opt.Save(); !bytes.Equal(got, state) {
			t.Errorf("the %s holds another state than the archive", name)
		}
	}
	if err := o.LoadKerasFile(kerasFiles + "dense_amsgrad.keras"); !errors.Is(err, ErrCheckpointMismatch) {
		t.Errorf("another model's file: %v", err)
	}
	if _, err := KerasFileOptimizerConfig(kerasFiles + "float64_clipnorm.weights.h5"); !errors.Is(err, ErrInvalidCheckpoint) {
		t.Errorf("the config of a weights file: %v", err)
	}
	if got, _ := o.Save(); !bytes.Equal(got, state) {
		t.Error("a refused load changed the state")
	}
	out := filepath.Join(t.TempDir(), "continued.keras")
	if err := o.SaveKerasFile(kerasFiles+"float64_clipnorm.keras", out); err != nil {
		t.Fatal(err)
	}
	reread := build()
	defer reread.Close()
	if err := reread.LoadKerasFile(out); err != nil {
		t.Fatal(err)
	}
	if got, _ := reread.Save(); !bytes.Equal(got, state) {
		t.Error("the written file reads back another state")
	}
}
