// Package adamw is libadamw for Go: the AdamW optimizer of tf.keras, bit-exact, over cgo.
//
// It links libadamw statically, found by pkg-config as `adamw-static`: an installed libadamw
// (tools/install.sh PREFIX, then PKG_CONFIG_PATH=PREFIX/lib/pkgconfig), or a checkout's
// (PKG_CONFIG_PATH=<checkout>/bindings/go/pkgconfig after `cargo build --release`). The module
// path is libadamw/go; add it to your module with `require libadamw/go v0.0.0` and
// `replace libadamw/go => <path to this package's module>`.
//
// The caller owns variables and gradients ([]float32, []float64, []BF16 or []F16; BF16Bits and
// F16Bits view a []uint16 as either); an Optimizer owns its state. An Optimizer is safe for
// concurrent use by several goroutines: calls are serialized. While a call runs, no other
// goroutine may touch the slices it was given. Call Close when done (a finalizer frees a
// forgotten one).
//
// A step reads and writes the caller's slices where they are: it pins them with runtime.Pinner
// for the duration of the call (cgo's rules let C memory hold a Go pointer only while it is
// pinned), passes their addresses to the library, and unpins them when the call returns. No Go
// pointer is kept by C after a call and nothing is copied. Once an optimizer has made a call as
// large, a step allocates nothing, but for one 64-byte object after a garbage collection. The
// package needs Go 1.21 or newer (runtime.Pinner).
package adamw

/*
#cgo pkg-config: adamw-static
#include <stdlib.h>
#include <string.h>
#include "adamw.h"

extern int32_t goAdamwScalar(int64_t step, void *user_data, double *out_value);
extern int32_t goAdamwAllReduce(double *values, size_t count, void *user_data);
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Status is a libadamw status code (ADAMW_STATUS_* in adamw.h).
type Status int

// The status codes; the numbers are those of the C ABI and never change.
const (
	StatusOK                 Status = 0
	StatusNullArgument       Status = 1
	StatusInvalidArgument    Status = 2
	StatusInvalidConfig      Status = 3
	StatusShapeMismatch      Status = 4
	StatusDtypeMismatch      Status = 5
	StatusUnknownVariable    Status = 6
	StatusIndexOutOfRange    Status = 7
	StatusNotBuilt           Status = 8
	StatusAlreadyBuilt       Status = 9
	StatusNoGradients        Status = 10
	StatusCallbackFailed     Status = 11
	StatusBufferTooSmall     Status = 12
	StatusInvalidCheckpoint  Status = 13
	StatusCheckpointMismatch Status = 14
	StatusBusy               Status = 15
	StatusOutOfMemory        Status = 16
	StatusInternal           Status = 17
	StatusNonFiniteGradient  Status = 18
	StatusIO                 Status = 19
	StatusDevice             Status = 20
)

// String is the C name of the status, e.g. "ADAMW_STATUS_SHAPE_MISMATCH".
func (s Status) String() string { return C.GoString(C.adamw_status_name(C.uint32_t(s))) }

// Error is a failed call: its status and the library's message. errors.Is(err, ErrShapeMismatch)
// and the other Err values compare by status; errors.As(err, &e) gives the *Error.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("adamw: %s: %s", e.Status, e.Message) }

// Is reports whether target is an *Error with the same status; ErrClosed matches only itself.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	if t == ErrClosed || e == ErrClosed {
		return t == e // a closed optimizer is its own failure, not a NULL argument
	}
	return t.Status == e.Status
}

// Sentinels for errors.Is, one per failure status.
var (
	ErrNullArgument       = &Error{Status: StatusNullArgument}
	ErrInvalidArgument    = &Error{Status: StatusInvalidArgument}
	ErrInvalidConfig      = &Error{Status: StatusInvalidConfig}
	ErrShapeMismatch      = &Error{Status: StatusShapeMismatch}
	ErrDtypeMismatch      = &Error{Status: StatusDtypeMismatch}
	ErrUnknownVariable    = &Error{Status: StatusUnknownVariable}
	ErrIndexOutOfRange    = &Error{Status: StatusIndexOutOfRange}
	ErrNotBuilt           = &Error{Status: StatusNotBuilt}
	ErrAlreadyBuilt       = &Error{Status: StatusAlreadyBuilt}
	ErrNoGradients        = &Error{Status: StatusNoGradients}
	ErrCallbackFailed     = &Error{Status: StatusCallbackFailed}
	ErrBufferTooSmall     = &Error{Status: StatusBufferTooSmall} // never returned: the package sizes its buffers itself
	ErrInvalidCheckpoint  = &Error{Status: StatusInvalidCheckpoint}
	ErrCheckpointMismatch = &Error{Status: StatusCheckpointMismatch}
	ErrBusy               = &Error{Status: StatusBusy}
	ErrOutOfMemory        = &Error{Status: StatusOutOfMemory}
	ErrInternal           = &Error{Status: StatusInternal}
	ErrNonFiniteGradient  = &Error{Status: StatusNonFiniteGradient}
	ErrIO                 = &Error{Status: StatusIO}
	// ErrDevice: the device engine is unavailable or a device operation failed.
	ErrDevice = &Error{Status: StatusDevice}
	// ErrClosed is returned by every method of a closed Optimizer.
	ErrClosed = &Error{Status: StatusNullArgument, Message: "the optimizer is closed"}
)

func lastError() string {
	var n C.size_t
	C.adamw_last_error(nil, 0, &n)
	buf := C.malloc(n + 1)
	defer C.free(buf)
	C.adamw_last_error((*C.char)(buf), n+1, &n)
	return C.GoStringN((*C.char)(buf), C.int(n))
}

// check turns a status into an error; libadamw's message is per thread, so callers hold the OS
// thread (runtime.LockOSThread) between the call and check.
func check(status C.enum_adamw_status, extra string) error {
	if status == C.ADAMW_STATUS_OK {
		return nil
	}
	msg := lastError()
	if extra != "" {
		msg += " (" + extra + ")"
	}
	return &Error{Status: Status(status), Message: msg}
}

// Version is the library's version, ABIVersion its C ABI version (adamw_abi_version).
func Version() string    { return C.GoString(C.adamw_version()) }
func ABIVersion() uint32 { return uint32(C.adamw_abi_version()) }

// ScheduleKind names one of Keras' six learning-rate schedules.
type ScheduleKind int

const (
	ExponentialDecay       ScheduleKind = 1
	PiecewiseConstantDecay ScheduleKind = 2
	PolynomialDecay        ScheduleKind = 3
	InverseTimeDecay       ScheduleKind = 4
	CosineDecay            ScheduleKind = 5
	CosineDecayRestarts    ScheduleKind = 6
)

// Schedule is a learning-rate schedule; NewSchedule fills Keras' defaults for a kind.
// DecaySteps is first_decay_steps for CosineDecayRestarts; Boundaries/Values are for
// PiecewiseConstantDecay (len(Values) == len(Boundaries)+1); WarmupSteps > 0 enables
// CosineDecay's warmup to WarmupTarget.
type Schedule struct {
	Kind                                         ScheduleKind
	InitialLearningRate, DecaySteps, DecayRate   float64
	Staircase                                    bool
	EndLearningRate, Power                       float64
	Cycle                                        bool
	Alpha, WarmupTarget, WarmupSteps, TMul, MMul float64
	Boundaries                                   []int64
	Values                                       []float64
	Name                                         string
}

// NewSchedule returns a schedule of kind with Keras' defaults (EndLearningRate 0.0001, Power 1,
// TMul 2, MMul 1, the rest zero).
func NewSchedule(kind ScheduleKind) Schedule {
	return Schedule{Kind: kind, EndLearningRate: 0.0001, Power: 1, TMul: 2, MMul: 1}
}

// Config holds the AdamW constructor arguments. Start from DefaultConfig (Keras' defaults).
type Config struct {
	LearningRate float64
	// Schedule, when set, replaces LearningRate; LearningRateFunc (evaluated every step with
	// the pre-increment iteration count) replaces both.
	Schedule         *Schedule
	LearningRateFunc func(step int64) float64
	WeightDecay      float64
	Beta1, Beta2     float64
	// Beta1Func / Beta2Func, when set, are evaluated every step (an extension of Keras).
	Beta1Func, Beta2Func     func(step int64) float64
	Epsilon                  float64
	Amsgrad                  bool
	ClipNorm, GlobalClipNorm float64 // 0: none
	ClipValue                float64 // 0: none
	UseEMA                   bool
	EMAMomentum              float64
	EMAOverwriteFrequency    int64 // 0: never
	Name                     string
	// Threads for a step: 0 a pool shared by the process, 1 the calling thread only, N a pool
	// of N threads for this optimizer. The results are the same bits for every value.
	// Optimizer.SetGoroutines runs the steps' tasks on goroutines instead.
	Threads int
	// RejectNonFiniteGradients turns on the non-finite guard (an extension, off by default):
	// a gradient holding NaN or an infinity fails the whole step with ErrNonFiniteGradient.
	RejectNonFiniteGradients bool
	// MasterWeights gives BFloat16 and Float16 variables float32 master copies and slots (an
	// extension, off by default): a step updates the master as Keras updates a float32
	// variable and writes its rounding into the caller's variable. Build then needs every
	// variable's Init.
	MasterWeights bool
	// WeightDecayMinNdim excludes variables with fewer dimensions from weight decay (an
	// extension, 0 by default; 2 is llm.c's and nanoGPT's rule: biases, norm scales and
	// scalars are not decayed). Applied at Build, with ExcludeFromWeightDecay.
	WeightDecayMinNdim int
	// GradientAccumulationSteps is Keras 3's gradient_accumulation_steps (0, the default, is
	// off): every n-th ApplyGradients updates the variables with the average of the n calls'
	// gradients, the calls between only accumulate them (optimizer-owned, in the checkpoint).
	// Iterations then counts updates and Calls the calls. Not with LossScale or MasterWeights.
	GradientAccumulationSteps int64
	// LossScale puts Keras' LossScaleOptimizer around AdamW when non-nil: pass gradients of the
	// loss times Optimizer.LossScale(); each step unscales them, and a dynamic scale skips a
	// step with an overflowed gradient and adapts itself.
	LossScale *LossScale
	// Mesh, when set, is sharded state's all-reduce (Keras' mesh): it must sum values across
	// the ranks in place, the same on every rank (MPI, NCCL, or channels between goroutines).
	// Variables may then be shards (Variable.Sharded), and ApplyGradients is collective: every
	// rank makes the same calls. An error it returns fails the step (ErrCallbackFailed) and
	// changes nothing. See adamw_all_reduce_fn in adamw.h for what it sums.
	Mesh func(values []float64) error
}

// DefaultConfig returns Keras' defaults: learning rate 0.001, weight decay 0.004, betas 0.9 and
// 0.999, epsilon 1e-7, EMA momentum 0.99, name "AdamW".
func DefaultConfig() Config {
	d := C.adamw_config_default()
	return Config{
		LearningRate: float64(d.learning_rate), WeightDecay: float64(d.weight_decay),
		Beta1: float64(d.beta_1), Beta2: float64(d.beta_2), Epsilon: float64(d.epsilon),
		EMAMomentum: float64(d.ema_momentum), Name: "AdamW",
	}
}

// callbacks are the Go functions an optimizer's C callbacks reach through a cgo.Handle.
type callbacks struct {
	learningRate, beta1, beta2 func(int64) float64
	allReduce                  func([]float64) error
	panicked                   string
}

// scalarSlot tells the exported trampoline which function of callbacks to call.
type scalarSlot struct {
	cb   *callbacks
	kind int // 0 learning rate, 1 beta_1, 2 beta_2
}

//export goAdamwScalar
func goAdamwScalar(step C.int64_t, userData unsafe.Pointer, out *C.double) (rc C.int32_t) {
	slot := cgo.Handle(*(*C.uintptr_t)(userData)).Value().(*scalarSlot)
	defer func() {
		// A panic must not unwind into the library: it fails the call instead.
		if r := recover(); r != nil {
			slot.cb.panicked = fmt.Sprint("the Go function panicked: ", r)
			rc = 1
		}
	}()
	f := [...]func(int64) float64{slot.cb.learningRate, slot.cb.beta1, slot.cb.beta2}[slot.kind]
	*out = C.double(f(int64(step)))
	return 0
}

//export goAdamwAllReduce
func goAdamwAllReduce(values *C.double, count C.size_t, userData unsafe.Pointer) (rc C.int32_t) {
	cb := cgo.Handle(*(*C.uintptr_t)(userData)).Value().(*callbacks)
	defer func() {
		if r := recover(); r != nil {
			cb.panicked = fmt.Sprint("the mesh all-reduce panicked: ", r)
			rc = 1
		}
	}()
	// C memory: the Go function may read and write it during the call.
	if err := cb.allReduce(unsafe.Slice((*float64)(unsafe.Pointer(values)), int(count))); err != nil {
		cb.panicked = "the mesh all-reduce failed: " + err.Error()
		return 1
	}
	return 0
}

// Optimizer is tf.keras.optimizers.AdamW. Safe for concurrent use; Close frees it.
type Optimizer struct {
	mu      sync.Mutex
	h       *C.adamw_optimizer
	cb      *callbacks
	handles []cgo.Handle
	cMem    []unsafe.Pointer // C allocations owned by the optimizer (callback user data)
	mem     callMemory       // what a call needs besides the caller's slices
	// goFailure is an error found on the Go side of a call, reported instead of a status.
	goFailure *Error
	// runner runs the library's tasks on goroutines after SetGoroutines; runnerData is its
	// handle in C memory (the parallel-for's user_data).
	runner     *goroutineRunner
	runnerData unsafe.Pointer
}

// DType is an element type.
type DType int

const (
	Float32 DType = 1
	Float64 DType = 2
	Int64   DType = 3
	// BFloat16 variables hold BF16 values, with Keras' own 16-bit semantics.
	BFloat16 DType = 4
	// Float16 variables hold F16 values, with Keras' own 16-bit semantics.
	Float16 DType = 5
)

func cBool(b bool) C.uint8_t {
	if b {
		return 1
	}
	return 0
}

// newOptimizer is an optimizer without its handle yet, with the C word its calls return through.
func newOptimizer(cb *callbacks) *Optimizer {
	return &Optimizer{cb: cb, mem: callMemory{word: C.calloc(1, 8)}}
}

// New creates an optimizer. Callback functions are called once here, with step 0.
func New(cfg Config) (*Optimizer, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	o := newOptimizer(&callbacks{learningRate: cfg.LearningRateFunc, beta1: cfg.Beta1Func, beta2: cfg.Beta2Func,
		allReduce: cfg.Mesh})
	raw := C.adamw_config_default()
	raw.learning_rate = C.double(cfg.LearningRate)
	raw.weight_decay = C.double(cfg.WeightDecay)
	raw.beta_1 = C.double(cfg.Beta1)
	raw.beta_2 = C.double(cfg.Beta2)
	raw.epsilon = C.double(cfg.Epsilon)
	raw.amsgrad = cBool(cfg.Amsgrad)
	raw.clipnorm = C.double(cfg.ClipNorm)
	raw.global_clipnorm = C.double(cfg.GlobalClipNorm)
	raw.clipvalue = C.double(cfg.ClipValue)
	raw.use_ema = cBool(cfg.UseEMA)
	raw.ema_momentum = C.double(cfg.EMAMomentum)
	raw.ema_overwrite_frequency = C.int64_t(cfg.EMAOverwriteFrequency)
	raw.jit_compile = 0
	if cfg.Threads > 0 {
		raw.threads = C.uint32_t(cfg.Threads)
	}
	raw.reject_non_finite_gradients = cBool(cfg.RejectNonFiniteGradients)
	// Everything the C config points at lives in C memory for the call.
	var temporaries []unsafe.Pointer
	defer func() {
		for _, p := range temporaries {
			C.free(p)
		}
	}()
	cString := func(s string) *C.char {
		p := C.CString(s)
		temporaries = append(temporaries, unsafe.Pointer(p))
		return p
	}
	if cfg.Name != "" {
		raw.name = cString(cfg.Name)
	}
	if s := cfg.Schedule; s != nil {
		cs := (*C.adamw_schedule)(C.calloc(1, C.sizeof_adamw_schedule))
		temporaries = append(temporaries, unsafe.Pointer(cs))
		if err := check(C.adamw_schedule_init(C.uint32_t(s.Kind), cs), ""); err != nil {
			return nil, err
		}
		cs.initial_learning_rate = C.double(s.InitialLearningRate)
		cs.decay_steps = C.double(s.DecaySteps)
		cs.decay_rate = C.double(s.DecayRate)
		cs.staircase = cBool(s.Staircase)
		cs.end_learning_rate = C.double(s.EndLearningRate)
		cs.power = C.double(s.Power)
		cs.cycle = cBool(s.Cycle)
		cs.alpha = C.double(s.Alpha)
		cs.has_warmup = cBool(s.WarmupSteps > 0)
		cs.warmup_target = C.double(s.WarmupTarget)
		cs.warmup_steps = C.double(s.WarmupSteps)
		cs.t_mul = C.double(s.TMul)
		cs.m_mul = C.double(s.MMul)
		if s.Kind == PiecewiseConstantDecay {
			if len(s.Values) != len(s.Boundaries)+1 {
				return nil, &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf(
					"The length of boundaries should be 1 less than the length of values. Received: %d boundaries and %d values.",
					len(s.Boundaries), len(s.Values))}
			}
			b := C.calloc(C.size_t(len(s.Boundaries)+1), 8)
			v := C.calloc(C.size_t(len(s.Values)), 8)
			temporaries = append(temporaries, b, v)
			copy(unsafe.Slice((*int64)(b), len(s.Boundaries)), s.Boundaries)
			copy(unsafe.Slice((*float64)(v), len(s.Values)), s.Values)
			cs.boundaries = (*C.int64_t)(b)
			cs.num_boundaries = C.size_t(len(s.Boundaries))
			cs.values = (*C.double)(v)
		}
		if s.Name != "" {
			cs.name = cString(s.Name)
		}
		raw.learning_rate_schedule = cs
	}
	handleInC := o.keepInC
	userData := func(kind int) unsafe.Pointer { return handleInC(&scalarSlot{cb: o.cb, kind: kind}) }
	if cfg.Mesh != nil {
		raw.mesh_all_reduce, raw.mesh_user_data = C.adamw_all_reduce_fn(C.goAdamwAllReduce), handleInC(o.cb)
	}
	trampoline := C.adamw_scalar_fn(C.goAdamwScalar)
	if cfg.LearningRateFunc != nil {
		raw.learning_rate_fn, raw.learning_rate_user_data = trampoline, userData(0)
	}
	if cfg.Beta1Func != nil {
		raw.beta_1_fn, raw.beta_1_user_data = trampoline, userData(1)
	}
	if cfg.Beta2Func != nil {
		raw.beta_2_fn, raw.beta_2_user_data = trampoline, userData(2)
	}
	var h *C.adamw_optimizer
	if err := check(C.adamw_optimizer_new(&raw, &h), o.cb.takePanic()); err != nil {
		o.release()
		return nil, err
	}
	o.h = h
	runtime.SetFinalizer(o, (*Optimizer).Close)
	if cfg.MasterWeights {
		if err := check(C.adamw_optimizer_set_master_weights(h, 1), ""); err != nil {
			o.Close()
			return nil, err
		}
	}
	if n := cfg.WeightDecayMinNdim; n != 0 {
		if n < 0 || n > C.ADAMW_MAX_NDIM {
			o.Close()
			return nil, &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf("WeightDecayMinNdim must be from 0 to %d, got %d", C.ADAMW_MAX_NDIM, n)}
		}
		if err := check(C.adamw_optimizer_set_weight_decay_min_ndim(h, C.uint32_t(n)), ""); err != nil {
			o.Close()
			return nil, err
		}
	}
	if n := cfg.GradientAccumulationSteps; n != 0 {
		if err := check(C.adamw_optimizer_set_gradient_accumulation_steps(h, C.int64_t(n)), ""); err != nil {
			o.Close()
			return nil, err
		}
	}
	if ls := cfg.LossScale; ls != nil {
		s := C.adamw_optimizer_set_loss_scale(h, cBool(ls.Dynamic), C.double(ls.InitialScale), C.int64_t(ls.DynamicGrowthSteps))
		if err := check(s, ""); err != nil {
			o.Close()
			return nil, err
		}
	}
	return o, nil
}

// LossScale holds the arguments of Keras' LossScaleOptimizer; DefaultLossScale has Keras'.
type LossScale struct {
	Dynamic            bool
	InitialScale       float64
	DynamicGrowthSteps int64
}

// DefaultLossScale is Keras' default: dynamic, 2**15, doubling after 2000 finite steps.
func DefaultLossScale() *LossScale {
	return &LossScale{Dynamic: true, InitialScale: 32768, DynamicGrowthSteps: 2000}
}

// LossScale returns the current loss scale (multiply the loss by it) and the number of finite
// steps since it last changed; ErrInvalidArgument without a loss scale.
func (o *Optimizer) LossScale() (float32, int64, error) {
	var scale C.float
	var counter C.int64_t
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_loss_scale(h, &scale, &counter)
	})
	return float32(scale), int64(counter), err
}

func (c *callbacks) takePanic() string {
	p := c.panicked
	c.panicked = ""
	return p
}

// FromConfig creates an optimizer from Keras config JSON (Keras' from_config).
func FromConfig(json string) (*Optimizer, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cs := C.CString(json)
	defer C.free(unsafe.Pointer(cs))
	var h *C.adamw_optimizer
	if err := check(C.adamw_optimizer_from_config_json(cs, C.size_t(len(json)), &h), ""); err != nil {
		return nil, err
	}
	o := newOptimizer(&callbacks{})
	o.h = h
	runtime.SetFinalizer(o, (*Optimizer).Close)
	return o, nil
}

// keepInC returns C memory holding a cgo.Handle of value, both freed by Close: what a callback's
// user_data is, so that no Go pointer reaches C.
func (o *Optimizer) keepInC(value interface{}) unsafe.Pointer {
	h := cgo.NewHandle(value)
	o.handles = append(o.handles, h)
	p := C.malloc(C.sizeof_uintptr_t)
	*(*C.uintptr_t)(p) = C.uintptr_t(h)
	o.cMem = append(o.cMem, p)
	return p
}

func (o *Optimizer) release() {
	for _, h := range o.handles {
		h.Delete()
	}
	for _, p := range o.cMem {
		C.free(p)
	}
	o.mem.free()
	o.handles, o.cMem = nil, nil
}

// Close frees the optimizer; further calls return ErrClosed. Closing twice is a no-op.
func (o *Optimizer) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return nil
	}
	C.adamw_optimizer_free(o.h)
	o.h = nil
	o.release()
	runtime.SetFinalizer(o, nil)
	return nil
}

// call runs f with the optimizer locked and the OS thread held (libadamw's error message is
// per thread), turning its status into an error.
func (o *Optimizer) call(f func(h *C.adamw_optimizer) C.enum_adamw_status) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return ErrClosed
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := f(o.h)
	if e := o.goFailure; e != nil {
		o.goFailure = nil
		return e
	}
	return check(status, o.cb.takePanic())
}

// fail records a message for a check made on the Go side, so that it reads like the library's.
func (o *Optimizer) fail(status Status, message string) C.enum_adamw_status {
	o.cb.panicked = ""
	o.goFailure = &Error{Status: status, Message: message}
	return C.enum_adamw_status(status)
}

// GetConfig returns Keras' get_config() as JSON.
//
// Deprecated: use Config, the Go-style name.
func (o *Optimizer) GetConfig() (string, error) {
	var out string
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		var n C.size_t
		if s := C.adamw_optimizer_get_config(h, nil, 0, &n); s != C.ADAMW_STATUS_OK {
			return s
		}
		buf := C.malloc(n + 1)
		defer C.free(buf)
		s := C.adamw_optimizer_get_config(h, (*C.char)(buf), n+1, &n)
		out = C.GoStringN((*C.char)(buf), C.int(n))
		return s
	})
	return out, err
}

// Iterations returns the step counter.
func (o *Optimizer) Iterations() (int64, error) {
	var it C.int64_t
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status { return C.adamw_optimizer_iterations(h, &it) })
	return int64(it), err
}

// Calls returns the ApplyGradients calls counted (Keras 3's _iterations): with gradient
// accumulation of n calls, Iterations is Calls / n; without, the two are the same.
func (o *Optimizer) Calls() (int64, error) {
	var calls C.int64_t
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_gradient_accumulation(h, nil, &calls)
	})
	return int64(calls), err
}

// SetIterations presets the step counter; before Build only.
func (o *Optimizer) SetIterations(n int64) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_set_iterations(h, C.int64_t(n))
	})
}

// LearningRate is the float32 learning rate of the last step (before any: at step 0).
func (o *Optimizer) LearningRate() (float32, error) {
	var lr C.float
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status { return C.adamw_optimizer_current_learning_rate(h, &lr) })
	return float32(lr), err
}

// SetLearningRate sets a constant learning rate (not with a schedule or function).
func (o *Optimizer) SetLearningRate(lr float64) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_set_learning_rate(h, C.double(lr))
	})
}

// ExcludeFromWeightDecay excludes variables (indices into Build's list) and names matching the
// regular expressions (searched in "name:0") from weight decay; before Build only.
func (o *Optimizer) ExcludeFromWeightDecay(variables []int, patterns []string) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		idx := C.calloc(C.size_t(len(variables)+1), C.sizeof_size_t)
		defer C.free(idx)
		for i, v := range variables {
			if v < 0 {
				v = math.MaxInt
			}
			unsafe.Slice((*C.size_t)(idx), len(variables))[i] = C.size_t(v)
		}
		pats := C.calloc(C.size_t(len(patterns)+1), C.size_t(unsafe.Sizeof(uintptr(0))))
		defer C.free(pats)
		ps := unsafe.Slice((**C.char)(pats), len(patterns)+1)
		for i, p := range patterns {
			ps[i] = C.CString(p)
			defer C.free(unsafe.Pointer(ps[i]))
		}
		return C.adamw_optimizer_exclude_from_weight_decay(h, (*C.size_t)(idx), C.size_t(len(variables)),
			(**C.char)(pats), C.size_t(len(patterns)))
	})
}

// Variable describes a variable for Build: its name, shape and dtype; Init (a []float32,
// []float64, []BF16 or []F16 of its current values) is needed with UseEMA, whose averages
// start as copies.
//
// With a Mesh, Sharded makes the optimizer hold only the flat (row-major) elements ShardOffset
// .. ShardOffset+ShardLen: Init, values, dense gradients and slots then have ShardLen elements,
// while a sparse gradient is the whole IndexedSlices on every rank.
type Variable struct {
	Name                  string
	Shape                 []int
	DType                 DType
	Init                  interface{}
	Sharded               bool
	ShardOffset, ShardLen int
}

// Build creates the optimizer's state over the variables; afterwards a variable is named by its
// index in this list. Once per optimizer.
func (o *Optimizer) Build(variables []Variable) error {
	return o.withVariables(variables, func(h *C.adamw_optimizer, descs *C.adamw_variable, n C.size_t) C.enum_adamw_status {
		return C.adamw_optimizer_build(h, descs, n)
	})
}

// AddVariables adds variables after Build (a new head, a layer unfrozen), numbered after the
// built ones: their state starts as Build makes it (Init is needed as at Build), exclusion
// patterns and WeightDecayMinNdim apply, names must be new, and their bias correction uses the
// optimizer's iterations. Not with a Mesh or on a device. On error nothing changes.
func (o *Optimizer) AddVariables(variables []Variable) error {
	return o.withVariables(variables, func(h *C.adamw_optimizer, descs *C.adamw_variable, n C.size_t) C.enum_adamw_status {
		return C.adamw_optimizer_add_variables(h, descs, n)
	})
}

// withVariables calls f with C descriptors of variables (names, shapes and pinned Init).
func (o *Optimizer) withVariables(variables []Variable, f func(*C.adamw_optimizer, *C.adamw_variable, C.size_t) C.enum_adamw_status) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		n := len(variables)
		descs := (*C.adamw_variable)(C.calloc(C.size_t(n+1), C.sizeof_adamw_variable))
		defer C.free(unsafe.Pointer(descs))
		ds := unsafe.Slice(descs, n+1)
		var frees []unsafe.Pointer
		defer func() {
			C.memset(unsafe.Pointer(descs), 0, C.size_t(n+1)*C.sizeof_adamw_variable) // no Go pointer stays in C memory
			o.mem.release(0, 0)
			for _, p := range frees {
				C.free(p)
			}
		}()
		for i, v := range variables {
			ds[i].name = C.CString(v.Name)
			frees = append(frees, unsafe.Pointer(ds[i].name))
			ds[i].dtype = C.uint32_t(v.DType)
			ds[i].ndim = C.size_t(len(v.Shape))
			shape := C.calloc(C.size_t(len(v.Shape)+1), C.sizeof_size_t)
			frees = append(frees, shape)
			count, fits := 1, true // the number of elements, unless it overflows an int
			for k, d := range v.Shape {
				if d < 0 {
					d = math.MaxInt
				}
				unsafe.Slice((*C.size_t)(shape), len(v.Shape))[k] = C.size_t(d)
				if d != 0 && count > math.MaxInt/d {
					fits = false
				}
				count *= d
			}
			ds[i].shape = (*C.size_t)(shape)
			if v.Sharded {
				ds[i].sharded, ds[i].shard_offset, ds[i].shard_len = 1, C.size_t(v.ShardOffset), C.size_t(v.ShardLen)
				count, fits = v.ShardLen, v.ShardLen >= 0
			}
			if v.Init != nil && fits {
				// C reads as many elements as the variable holds: Init must have them all.
				data, dtype, length := typedValues(v.Init)
				switch {
				case dtype == 0:
					return o.fail(StatusInvalidArgument, fmt.Sprintf("variable %d (%s): Init must be a []float32, []float64, []BF16 or []F16, got %T", i, v.Name, v.Init))
				case dtype != v.DType:
					return o.fail(StatusDtypeMismatch, fmt.Sprintf("variable %d (%s): Init holds dtype %d, the variable %d", i, v.Name, dtype, v.DType))
				case length != count:
					return o.fail(StatusShapeMismatch, fmt.Sprintf("variable %d (%s): Init has %d elements, the variable holds %d", i, v.Name, length, count))
				}
				ds[i].data = o.mem.pin(data)
			}
		}
		return f(h, descs, C.size_t(n))
	})
}

// valuesOf is the address of the first element of a []float32, []float64, []int64, []BF16 or
// []F16 with its dtype and length; nil for an empty slice or another value.
func valuesOf(values interface{}) unsafe.Pointer {
	p, _, _ := typedValues(values)
	return p
}

func typedValues(values interface{}) (unsafe.Pointer, DType, int) {
	switch v := values.(type) {
	case []int64:
		return dataOf(v), Int64, len(v)
	case []float32:
		return dataOf(v), Float32, len(v)
	case []float64:
		return dataOf(v), Float64, len(v)
	case []BF16:
		return dataOf(v), BFloat16, len(v)
	case []F16:
		return dataOf(v), Float16, len(v)
	}
	return nil, 0, 0
}

// SetThreads changes the thread setting (see Config.Threads).
func (o *Optimizer) SetThreads(n int) error {
	if n < 0 {
		n = 0
	}
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_set_threads(h, C.uint32_t(n))
	})
}

// ReserveSparse reserves room in the library for sparse gradients of up to maxIndices indices,
// so that no later step grows that buffer.
func (o *Optimizer) ReserveSparse(maxIndices int) error {
	if maxIndices < 0 {
		maxIndices = 0
	}
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_reserve_sparse(h, C.size_t(maxIndices))
	})
}

// NumVariables is len(optimizer.variables) in Keras: 1 (the counter) before Build.
func (o *Optimizer) NumVariables() (int, error) {
	var n C.size_t
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status { return C.adamw_optimizer_num_variables(h, &n) })
	return int(n), err
}

// VariableInfo describes optimizer variable index (Keras' order).
type VariableInfo struct {
	Name  string
	DType DType
	Shape []int
	Len   int
}

// Variable describes optimizer variable index: 0 is the int64 counter, then (EMA) one average
// per variable, m and v interleaved per variable, then (amsgrad) one vhat per variable.
func (o *Optimizer) Variable(index int) (VariableInfo, error) {
	var info VariableInfo
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if index < 0 {
			index = math.MaxInt
		}
		var raw C.adamw_variable_info
		if s := C.adamw_optimizer_variable_info(h, C.size_t(index), &raw); s != C.ADAMW_STATUS_OK {
			return s
		}
		var n C.size_t
		C.adamw_optimizer_variable_name(h, C.size_t(index), nil, 0, &n)
		buf := C.malloc(n + 1)
		defer C.free(buf)
		s := C.adamw_optimizer_variable_name(h, C.size_t(index), (*C.char)(buf), n+1, &n)
		info = VariableInfo{Name: C.GoStringN((*C.char)(buf), C.int(n)), DType: DType(raw.dtype), Len: int(raw.len)}
		for k := 0; k < int(raw.ndim); k++ {
			info.Shape = append(info.Shape, int(raw.shape[k]))
		}
		return s
	})
	return info, err
}

// Values copies optimizer variable index into out, which must have its dtype and length:
// []int64 for the counter, []float32, []float64, []BF16 or []F16 for the slots. The library
// writes into out directly.
func (o *Optimizer) Values(index int, out interface{}) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		dst, dtype, n := typedValues(out)
		if dtype == 0 {
			return o.fail(StatusInvalidArgument, fmt.Sprintf("Values needs a []int64, []float32, []float64, []BF16 or []F16, got %T", out))
		}
		if index < 0 {
			index = math.MaxInt
		}
		// A Go pointer to memory without Go pointers may be a call's argument.
		return C.adamw_optimizer_get_variable(h, C.size_t(index), C.uint32_t(dtype), dst, C.size_t(n))
	})
}

// Weight is a value for SetWeights: a shape and a []int64 (the counter), []float32, []float64,
// []BF16 or []F16.
type Weight struct {
	Shape  []int
	Values interface{}
}

// SetWeights assigns weights[i] to optimizer variable i (Keras' set_weights; a shorter list sets
// a prefix). Every weight is checked before any is assigned.
func (o *Optimizer) SetWeights(weights []Weight) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		n := len(weights)
		raw := (*C.adamw_weight)(C.calloc(C.size_t(n+1), C.sizeof_adamw_weight))
		defer C.free(unsafe.Pointer(raw))
		ws := unsafe.Slice(raw, n+1)
		var shapes []unsafe.Pointer
		defer func() {
			C.memset(unsafe.Pointer(raw), 0, C.size_t(n+1)*C.sizeof_adamw_weight) // no Go pointer stays in C memory
			o.mem.release(0, 0)
			for _, p := range shapes {
				C.free(p)
			}
		}()
		for i, w := range weights {
			data, dtype, length := typedValues(w.Values)
			if dtype == 0 {
				return o.fail(StatusInvalidArgument, fmt.Sprintf("weights[%d]: values must be []int64, []float32, []float64, []BF16 or []F16, got %T", i, w.Values))
			}
			shape := C.calloc(C.size_t(len(w.Shape)+1), C.sizeof_size_t)
			shapes = append(shapes, shape)
			count := 1
			for k, d := range w.Shape {
				if d < 0 {
					d = math.MaxInt
				}
				unsafe.Slice((*C.size_t)(shape), len(w.Shape))[k] = C.size_t(d)
				count *= d
			}
			if length != count {
				return o.fail(StatusShapeMismatch, fmt.Sprintf("weights[%d]: shape %v needs %d values, got %d", i, w.Shape, count, length))
			}
			ws[i].dtype = C.uint32_t(dtype)
			ws[i].ndim = C.size_t(len(w.Shape))
			ws[i].shape = (*C.size_t)(shape)
			ws[i].data = o.mem.pin(data)
		}
		return C.adamw_optimizer_set_weights(h, raw, C.size_t(n))
	})
}

// Save is Keras' save_own_variables, as bytes (a safetensors file; see README).
func (o *Optimizer) Save() ([]byte, error) {
	var out []byte
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		var n C.size_t
		if s := C.adamw_optimizer_save_own_variables(h, nil, 0, &n); s != C.ADAMW_STATUS_OK {
			return s
		}
		out = make([]byte, int(n)+1) // never empty, so that its address is never NULL
		s := C.adamw_optimizer_save_own_variables(h, (*C.uint8_t)(unsafe.Pointer(&out[0])), n, &n)
		out = out[:n]
		return s
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// emptyCheckpoint is the address Load passes for an empty checkpoint (never NULL).
var emptyCheckpoint [1]byte

// Load is Keras' load_own_variables from Save's bytes; a mismatch changes nothing.
func (o *Optimizer) Load(checkpoint []byte) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		data := unsafe.Pointer(&emptyCheckpoint[0])
		if len(checkpoint) > 0 {
			data = unsafe.Pointer(&checkpoint[0])
		}
		return C.adamw_optimizer_load_own_variables(h, (*C.uint8_t)(data), C.size_t(len(checkpoint)))
	})
}

// SaveFile writes the checkpoint to path atomically (a temporary file beside it, flushed to
// disk and renamed over it): a failure (ErrIO) leaves the previous file intact.
func (o *Optimizer) SaveFile(path string) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		p := C.CString(path)
		defer C.free(unsafe.Pointer(p))
		return C.adamw_optimizer_save_file(h, p)
	})
}

// LoadFile loads a checkpoint written by SaveFile (ErrIO if it cannot be read).
func (o *Optimizer) LoadFile(path string) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		p := C.CString(path)
		defer C.free(unsafe.Pointer(p))
		return C.adamw_optimizer_load_file(h, p)
	})
}

// LoadKerasFile loads the optimizer state of a Keras file written by tf-keras (a .keras archive
// from model.save or a .weights.h5 file from model.save_weights) into the built optimizer:
// Keras' order of its variables, with every count, shape and dtype checked first
// (ErrCheckpointMismatch); a foreign, truncated or damaged file is ErrInvalidCheckpoint. Build
// the optimizer over the model's trainable variables in Keras' order, from the archive's config
// (KerasFileOptimizerConfig, FromConfig) or the same arguments. A refused load changes nothing.
func (o *Optimizer) LoadKerasFile(path string) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		p := C.CString(path)
		defer C.free(unsafe.Pointer(p))
		return C.adamw_optimizer_load_keras_file(h, p)
	})
}

// SaveKerasFile writes out: the Keras file template (of the same model and optimizer) with its
// optimizer state replaced by this optimizer's, for tf-keras to load and continue from. Written
// atomically.
func (o *Optimizer) SaveKerasFile(template, out string) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		t, p := C.CString(template), C.CString(out)
		defer C.free(unsafe.Pointer(t))
		defer C.free(unsafe.Pointer(p))
		return C.adamw_optimizer_save_keras_file(h, t, p)
	})
}

// LoadKerasStore loads a plain safetensors store of Keras' optimizer variables (keys "0".."N-1",
// no libadamw metadata, as safetensors.numpy.save_file writes it); checked as LoadKerasFile.
func (o *Optimizer) LoadKerasStore(store []byte) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		data := unsafe.Pointer(&emptyCheckpoint[0])
		if len(store) > 0 {
			data = unsafe.Pointer(&store[0])
		}
		return C.adamw_optimizer_load_keras_store(h, (*C.uint8_t)(data), C.size_t(len(store)))
	})
}

// KerasFileOptimizerConfig is the compiled optimizer's config in a .keras archive (Keras'
// get_config() JSON, for FromConfig); a .weights.h5 file holds none (ErrInvalidCheckpoint).
func KerasFileOptimizerConfig(path string) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	var n C.size_t
	if err := check(C.adamw_keras_file_optimizer_config(p, nil, 0, &n), ""); err != nil {
		return "", err
	}
	buf := C.malloc(n + 1)
	defer C.free(buf)
	if err := check(C.adamw_keras_file_optimizer_config(p, (*C.char)(buf), n+1, &n), ""); err != nil {
		return "", err
	}
	return C.GoStringN((*C.char)(buf), C.int(n)), nil
}
