package adamw

/*
#include <stdlib.h>
#include <string.h>
#include "adamw.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Float is the element type of variables: float32, float64, BF16 or F16.
type Float interface {
	~float32 | ~float64 | BF16 | F16
}

// Half is the element type of 16-bit variables: BF16 or F16.
type Half interface {
	BF16 | F16
}

// Gradient is one variable's entry in ApplyGradients: its values (updated in place) and its
// gradient. Make one with Dense, Sparse, DenseFloat32, SparseFloat32 or NoGradient.
//
// A Gradient refers to the caller's slices themselves (it keeps them alive): a step reads and
// writes them where they are, pinned for the duration of the call.
type Gradient struct {
	variable int
	dtype    DType
	gradType DType          // a float32 gradient's dtype for a 16-bit variable; 0: the variable's
	value    unsafe.Pointer // the first element of the caller's values, or nil when empty
	len      int
	dense    unsafe.Pointer
	isDense  bool // Dense or DenseFloat32: a dense gradient, even an empty one
	sparse   bool
	indices  unsafe.Pointer
	numIdx   int
	rows     unsafe.Pointer
	numRows  int // the number of elements of the dense gradient or of the rows
}

func dtypeOf[T Float]() DType {
	var zero T
	switch any(zero).(type) {
	case BF16:
		return BFloat16
	case F16:
		return Float16
	}
	if unsafe.Sizeof(zero) == 8 {
		return Float64
	}
	return Float32
}

// dataOf is the address of s's first element, nil for an empty slice.
func dataOf[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

// Dense is a dense gradient for variable (len(grad) == len(value)). The step reads grad and
// writes value in place, so the two must not share memory, nor share it with another entry of
// the call (ErrInvalidArgument).
func Dense[T Float](variable int, value, grad []T) Gradient {
	return Gradient{variable: variable, dtype: dtypeOf[T](), value: dataOf(value), len: len(value),
		dense: dataOf(grad), isDense: true, numRows: len(grad)}
}

// Sparse is a gradient of whole rows of variable (Keras' IndexedSlices): rows holds one row of
// the variable's trailing shape per index; repeated indices add up. No indices (and no rows) is
// a gradient of zeros, as in Keras: every row still decays and its moments move.
func Sparse[T Float](variable int, value []T, indices []int64, rows []T) Gradient {
	return Gradient{variable: variable, dtype: dtypeOf[T](), value: dataOf(value), len: len(value),
		sparse: true, indices: dataOf(indices), numIdx: len(indices), rows: dataOf(rows), numRows: len(rows)}
}

// DenseFloat32 is a float32 dense gradient (accumulated in float32) for a bfloat16 or float16
// variable with master weights (Config.MasterWeights); without them the step fails with
// ErrDtypeMismatch.
func DenseFloat32[T Half](variable int, value []T, grad []float32) Gradient {
	g := Dense(variable, value, nil)
	g.gradType, g.dense, g.numRows = Float32, dataOf(grad), len(grad)
	return g
}

// SparseFloat32 is Sparse with float32 rows (accumulated in float32) for a bfloat16 or float16
// variable with master weights.
func SparseFloat32[T Half](variable int, value []T, indices []int64, rows []float32) Gradient {
	g := Sparse(variable, value, indices, nil)
	g.gradType, g.rows, g.numRows = Float32, dataOf(rows), len(rows)
	return g
}

// NoGradient lists variable without a gradient (Keras' None): it is left alone.
func NoGradient[T Float](variable int, value []T) Gradient {
	return Gradient{variable: variable, dtype: dtypeOf[T](), value: dataOf(value), len: len(value)}
}

func (d DType) size() int {
	switch d {
	case Float32:
		return 4
	case BFloat16, Float16:
		return 2
	}
	return 8
}

// pinsPerPinner is how many objects a runtime.Pinner holds in its own inline store (Go 1.21 to
// 1.23 on 64-bit targets): beyond that its list grows, and since Unpin drops the grown list, a
// single pinner would allocate on every call with many slices. A call therefore spreads its pins
// over several pinners of 5, which the optimizer keeps from call to call.
const pinsPerPinner = 5

// callMemory is what a call needs besides the caller's slices, kept by the optimizer so that a
// call allocates nothing once the optimizer has seen a call as large: the C table of the call's
// entries, one C word for a result, and the pinners that hold the caller's slices in place.
//
// cgo's rules allow C memory to hold a Go pointer only while it is pinned, so a call pins every
// slice before it writes its address into the table, and clears the table before it unpins.
type callMemory struct {
	table    unsafe.Pointer // C memory: adamw_gradient, adamw_variable_data or adamw_weight entries
	tableCap uintptr        // its size in bytes
	word     unsafe.Pointer // C memory, 8 bytes: the iteration count a step returns
	pinners  []runtime.Pinner
	pinned   int // the number of pins this call holds
}

// entries returns the table as room for n zeroed entries of size bytes, growing it when a call
// needs more than any before. It is never NULL, so that an empty list is still a list.
func (m *callMemory) entries(n int, size uintptr) unsafe.Pointer {
	need := uintptr(n)*size + 8
	if need > m.tableCap {
		C.free(m.table)
		m.table, m.tableCap = C.malloc(C.size_t(need)), need
	}
	clear(unsafe.Slice((*byte)(m.table), need)) // in Go: a cgo call costs more than the clearing
	return m.table
}

// pin pins the Go object p points into (nothing for nil) until release, and returns p.
func (m *callMemory) pin(p unsafe.Pointer) unsafe.Pointer {
	if p == nil {
		return nil
	}
	k := m.pinned / pinsPerPinner
	if k == len(m.pinners) {
		m.pinners = append(m.pinners, runtime.Pinner{})
	}
	m.pinners[k].Pin(p)
	m.pinned++
	return p
}

// release ends a call: it clears the table's first n entries of size bytes (C memory keeps no
// Go pointer after the call) and unpins everything the call pinned.
func (m *callMemory) release(n int, size uintptr) {
	if n > 0 && m.table != nil {
		clear(unsafe.Slice((*byte)(m.table), uintptr(n)*size))
	}
	for k := 0; k*pinsPerPinner < m.pinned; k++ {
		m.pinners[k].Unpin()
	}
	m.pinned = 0
}

// free releases the C memory; the optimizer is closing.
func (m *callMemory) free() {
	m.release(0, 0)
	C.free(m.table)
	C.free(m.word)
	*m = callMemory{}
}

// gradientDType is the dtype of g's gradient.
func (g *Gradient) gradientDType() DType {
	if g.gradType != 0 {
		return g.gradType
	}
	return g.dtype
}

// gradientTable writes the C entries of grads, pinning the slices they point to.
func (o *Optimizer) gradientTable(grads []Gradient) *C.adamw_gradient {
	m := &o.mem
	table := m.entries(len(grads), C.sizeof_adamw_gradient)
	entries := unsafe.Slice((*C.adamw_gradient)(table), len(grads))
	for i := range grads {
		g, e := &grads[i], &entries[i]
		e.variable = C.size_t(g.variable)
		e.dtype = C.uint32_t(g.dtype) | C.uint32_t(g.gradType)<<C.ADAMW_GRADIENT_DTYPE_SHIFT
		e.len = C.size_t(g.len)
		e.data = m.pin(g.value)
		switch {
		case g.sparse:
			e.indices = (*C.int64_t)(m.pin(g.indices))
			e.num_indices = C.size_t(g.numIdx)
			e.values = m.pin(g.rows)
			e.num_values = C.size_t(g.numRows)
			if e.indices == nil && e.values == nil {
				e.indices = (*C.int64_t)(table) // zero indices: still a gradient (of zeros)
			}
		case g.isDense:
			e.dense = m.pin(g.dense)
			if e.dense == nil {
				e.dense = table // an empty gradient of an empty variable: still a gradient
			}
		}
	}
	return (*C.adamw_gradient)(table)
}

// checkDenseLengths is the one check made on the Go side: C reads a dense gradient with its
// variable's length, so a shorter gradient must not reach it.
func (o *Optimizer) checkDenseLengths(grads []Gradient) C.enum_adamw_status {
	for i := range grads {
		if g := &grads[i]; g.isDense && g.numRows != g.len {
			return o.fail(StatusShapeMismatch, fmt.Sprintf(
				"the gradient of variable %d has %d elements; its values have %d", g.variable, g.numRows, g.len))
		}
	}
	return C.ADAMW_STATUS_OK
}

// ApplyGradients runs one optimizer step over the listed variables (Keras' apply_gradients) and
// returns the new iteration count. The library reads the gradients and writes the new values
// into the caller's slices directly, with no copy. On error nothing has changed, the caller's
// slices included. Once the optimizer has made a call as large, a step allocates nothing, but
// for one 64-byte object after a garbage collection (the runtime's pinner cache is emptied by
// each collection).
func (o *Optimizer) ApplyGradients(grads []Gradient) (int64, error) {
	err := o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if s := o.checkDenseLengths(grads); s != C.ADAMW_STATUS_OK {
			return s
		}
		defer o.mem.release(len(grads), C.sizeof_adamw_gradient) // also if pinning panics
		entries := o.gradientTable(grads)
		return C.adamw_optimizer_apply_gradients(h, entries, C.size_t(len(grads)), (*C.int64_t)(o.mem.word))
	})
	if err != nil {
		return 0, err
	}
	return int64(*(*C.int64_t)(o.mem.word)), nil
}

// Minimize is Keras' minimize: compute fills the gradient slices of grads from the current
// values, then the step runs. An error from compute is returned and nothing changes.
func (o *Optimizer) Minimize(grads []Gradient, compute func() error) (int64, error) {
	if err := compute(); err != nil {
		return 0, &Error{Status: StatusCallbackFailed, Message: "the gradient function failed: " + err.Error()}
	}
	return o.ApplyGradients(grads)
}

// FinalizeVariableValues gives each listed variable its moving average's value when UseEMA is
// on (Keras' finalize_variable_values), written into the caller's slices; without EMA nothing
// changes. Only the variable and values of each entry count (NoGradient makes one).
func (o *Optimizer) FinalizeVariableValues(variables []Gradient) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		m := &o.mem
		defer m.release(len(variables), C.sizeof_adamw_variable_data)
		table := m.entries(len(variables), C.sizeof_adamw_variable_data)
		entries := unsafe.Slice((*C.adamw_variable_data)(table), len(variables))
		for i := range variables {
			v, e := &variables[i], &entries[i]
			e.variable, e.dtype, e.len = C.size_t(v.variable), C.uint32_t(v.dtype), C.size_t(v.len)
			e.data = m.pin(v.value)
		}
		return C.adamw_optimizer_finalize_variable_values(h, (*C.adamw_variable_data)(table), C.size_t(len(variables)))
	})
}
