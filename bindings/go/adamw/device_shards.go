package adamw

/*
#include <stdlib.h>
#include "adamw.h"
*/
import "C"

import "unsafe"

// DeviceKind is where an optimizer's state lives and its steps run (adamw_device_kind).
type DeviceKind int

const (
	// DeviceCPU is host memory and the CPU (the default).
	DeviceCPU DeviceKind = C.ADAMW_DEVICE_KIND_CPU
	// DeviceCUDA is a CUDA GPU: the state in its memory; needs the driver and NVRTC at run time.
	DeviceCUDA DeviceKind = C.ADAMW_DEVICE_KIND_CUDA
	// DeviceHostKernels runs the device kernels on the host (a library built with the
	// host-kernels feature, for tests); its "device memory" is host memory.
	DeviceHostKernels DeviceKind = C.ADAMW_DEVICE_KIND_HOST_KERNELS
)

// SetDevice moves the optimizer's state and steps to a device before Build
// (adamw_optimizer_set_device; ordinal picks the GPU for DeviceCUDA). An unavailable device is
// ErrDevice, with the reason, and changes nothing.
func (o *Optimizer) SetDevice(kind DeviceKind, ordinal int) error {
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		return C.adamw_optimizer_set_device(h, C.uint32_t(kind), C.uint32_t(ordinal))
	})
}

// LoadShards loads the checkpoints every rank of another sharding saved (in any order; a single
// unsharded checkpoint counts as one rank) into this optimizer's own shards or whole variables
// (adamw_optimizer_load_shards). The checkpoints are copied into C memory for the call.
func (o *Optimizer) LoadShards(checkpoints [][]byte) error {
	n := len(checkpoints)
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if n == 0 {
			return C.adamw_optimizer_load_shards(h, nil, nil, 0)
		}
		// C memory throughout: cgo lets C hold no Go pointer to memory holding Go pointers.
		pointers := (*[1 << 30]*C.uint8_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:n:n]
		lens := (*[1 << 30]C.size_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.size_t(0)))))[:n:n]
		defer C.free(unsafe.Pointer(&pointers[0]))
		defer C.free(unsafe.Pointer(&lens[0]))
		for i, c := range checkpoints {
			p := C.malloc(C.size_t(len(c)) + 1) // + 1: never a zero-size allocation
			copy(unsafe.Slice((*byte)(p), len(c)), c)
			pointers[i] = (*C.uint8_t)(p)
			lens[i] = C.size_t(len(c))
		}
		defer func() {
			for _, p := range pointers {
				C.free(unsafe.Pointer(p))
			}
		}()
		return C.adamw_optimizer_load_shards(h, &pointers[0], &lens[0], C.size_t(n))
	})
}

// Config returns Keras' get_config() as JSON (GetConfig's Go-style name).
func (o *Optimizer) Config() (string, error) { return o.GetConfig() }
