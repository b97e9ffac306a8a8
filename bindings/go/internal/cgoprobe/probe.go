// Package cgoprobe breaks cgo's pointer rules on purpose, so that a test can show which checker
// a test binary runs under: under GOEXPERIMENT=cgocheck2 StoreUnpinned is a fatal error, under
// the default checker it goes unnoticed. Only tests import it.
package cgoprobe

/*
#include <stdlib.h>
*/
import "C"

import "unsafe"

// StoreUnpinned writes the address of an unpinned Go object into C memory, which the rules
// forbid.
func StoreUnpinned() {
	slot := (*unsafe.Pointer)(C.malloc(C.size_t(unsafe.Sizeof(unsafe.Pointer(nil)))))
	object := new([4]float32)
	*slot = unsafe.Pointer(object)
	C.free(unsafe.Pointer(slot))
}
