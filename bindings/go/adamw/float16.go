package adamw

import (
	"math"
	"unsafe"
)

// BF16 is a bfloat16 value held as its bits (the top half of a float32): the element type of
// BFloat16 variables, gradients and slots.
type BF16 uint16

// F16 is an IEEE binary16 value held as its bits: the element type of Float16 variables,
// gradients and slots.
type F16 uint16

// BF16FromFloat32 rounds f to the nearest bfloat16 (ties to even; NaN stays NaN), as TensorFlow
// rounds.
func BF16FromFloat32(f float32) BF16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return BF16(u>>16 | 0x40)
	}
	u += 0x7fff + (u>>16)&1
	return BF16(u >> 16)
}

// Float32 is the exact float32 value of b.
func (b BF16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// F16FromFloat32 rounds f to the nearest float16 (ties to even, subnormals included; NaN stays
// NaN, 65520 and above become infinity), as TensorFlow rounds.
func F16FromFloat32(f float32) F16 {
	u := math.Float32bits(f)
	sign := (u >> 16) & 0x8000
	a := u & 0x7fffffff
	var out uint32
	switch {
	case a >= 0x47800000: // 2^16 and above, infinity, NaN
		out = 0x7c00
		if a > 0x7f800000 {
			out = 0x7e00
		}
	case a < 0x38800000: // below 2^-14: a subnormal float16 (or zero)
		// Adding 0.5 puts the subnormal's bits at the bottom of the significand, rounded to
		// nearest even by the float32 addition itself.
		out = math.Float32bits(math.Float32frombits(a)+0.5) - 0x3f000000
	default: // normal: rebias the exponent, round the 13 dropped bits to nearest even
		out = (a + 0xc8000fff + (a>>13)&1) >> 13
	}
	return F16(sign | out)
}

// Float32 is the exact float32 value of h.
func (h F16) Float32() float32 {
	sign := uint32(h&0x8000) << 16
	exponent, mantissa := uint32(h>>10)&0x1f, uint32(h)&0x3ff
	switch {
	case exponent == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mantissa<<13)
	case exponent != 0:
		return math.Float32frombits(sign | (exponent+112)<<23 | mantissa<<13)
	default: // zero or subnormal: mantissa * 2^-24, exact in float32
		return math.Float32frombits(sign | math.Float32bits(float32(mantissa)*5.9604644775390625e-08))
	}
}

// BF16s rounds every element of fs (see BF16FromFloat32).
func BF16s(fs []float32) []BF16 {
	out := make([]BF16, len(fs))
	for i, f := range fs {
		out[i] = BF16FromFloat32(f)
	}
	return out
}

// F16s rounds every element of fs (see F16FromFloat32).
func F16s(fs []float32) []F16 {
	out := make([]F16, len(fs))
	for i, f := range fs {
		out[i] = F16FromFloat32(f)
	}
	return out
}

// BF16Bits views a slice of bfloat16 bits held as []uint16 (from a file, a network buffer or a
// C array) as []BF16, without copying: a step on the view updates bits.
func BF16Bits(bits []uint16) []BF16 {
	if len(bits) == 0 {
		return nil
	}
	return unsafe.Slice((*BF16)(unsafe.Pointer(&bits[0])), len(bits))
}

// F16Bits views a slice of IEEE binary16 bits held as []uint16 as []F16, without copying.
func F16Bits(bits []uint16) []F16 {
	if len(bits) == 0 {
		return nil
	}
	return unsafe.Slice((*F16)(unsafe.Pointer(&bits[0])), len(bits))
}
