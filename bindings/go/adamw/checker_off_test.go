//go:build !goexperiment.cgocheck2

package adamw

// strictChecker: the test binary runs under the default checker (call arguments only).
const strictChecker = false
