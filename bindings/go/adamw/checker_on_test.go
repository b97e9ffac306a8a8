//go:build goexperiment.cgocheck2

package adamw

// strictChecker: the test binary was built with GOEXPERIMENT=cgocheck2, which checks every
// store of a Go pointer into C memory.
const strictChecker = true
