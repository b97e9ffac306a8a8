//! Thirty-two values of a dtype held as float32 lanes in vector registers, with the dtype's
//! arithmetic as TensorFlow's CPU kernels do it: every operation one float32 vector operation,
//! whose result is rounded to the dtype (bfloat16 and float16, to nearest even,
//! docs/numerics.md §17) or kept (float32). The same bits as [`super::Bf16Math`],
//! [`super::F16Math`] and `f32` lane by lane (tested below, exhaustively for the roundings and
//! unary steps, at each register width).
//!
//! [`Vector`] is generic over the registers ([`super::registers`]): four AVX registers at the AVX2
//! level, two AVX-512 registers at the AVX-512 level. Its functions run only inside functions
//! compiled for the registers' level. Comparisons are not defined: `tf.maximum` and a value
//! clip are operations of their own ([`Arith::max_nan`], [`Arith::clip_to`]).

use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};

use half::{bf16, f16};

use super::arith::Arith;
pub(crate) use super::registers::LANES;
use super::registers::Registers;

/// A dtype the vector lanes hold: how its values load, store, and how an operation's float32
/// result is rounded to it.
pub trait LaneElement: Copy + Send + Sync + fmt::Debug + 'static {
    /// The lanes' values as a store writes them, kept beside the lanes (`()` for float32, which
    /// stores the lanes themselves).
    type Row<R: Registers>: Copy + Send + Sync;
    /// The bits of 0, 1 and infinity in the dtype (unused for float32).
    const ZERO_BITS: u16;
    const ONE_BITS: u16;
    const INFINITY_BITS: u16;

    /// An operation's result rounded to the dtype, and its row.
    fn round<R: Registers>(x: R) -> (R, Self::Row<R>);
    /// The row of lanes that hold values of the dtype (exact).
    fn row<R: Registers>(x: R) -> Self::Row<R>;
    /// `src[..LANES]` widened exactly.
    fn load<R: Registers>(src: &[Self]) -> R;
    /// `src[..LANES]` widened exactly, for values that only enter arithmetic: a signaling NaN
    /// may stay signaling (the first operation quiets it and keeps its payload, as an IEEE
    /// operation on x86-64 does, so the result is the bits of one on the loaded value).
    #[inline(always)]
    fn load_operand<R: Registers>(src: &[Self]) -> R {
        Self::load(src)
    }
    /// The values (lanes `x`, whose row is `row`) into `dst[..LANES]`, exactly.
    fn store<R: Registers>(x: R, row: Self::Row<R>, dst: &mut [Self]);
}

impl LaneElement for f32 {
    type Row<R: Registers> = ();
    const ZERO_BITS: u16 = 0;
    const ONE_BITS: u16 = 0;
    const INFINITY_BITS: u16 = 0;

    #[inline(always)]
    fn round<R: Registers>(x: R) -> (R, ()) {
        (x, ())
    }
    #[inline(always)]
    fn row<R: Registers>(_: R) {}
    #[inline(always)]
    fn load<R: Registers>(src: &[f32]) -> R {
        R::load_f32(src)
    }
    #[inline(always)]
    fn store<R: Registers>(x: R, _: (), dst: &mut [f32]) {
        x.store_f32(dst)
    }
}

impl LaneElement for bf16 {
    type Row<R: Registers> = R::Bf16Row;
    const ZERO_BITS: u16 = bf16::ZERO.to_bits();
    const ONE_BITS: u16 = bf16::ONE.to_bits();
    const INFINITY_BITS: u16 = bf16::INFINITY.to_bits();

    #[inline(always)]
    fn round<R: Registers>(x: R) -> (R, R::Bf16Row) {
        x.round_bf16_row()
    }
    #[inline(always)]
    fn row<R: Registers>(x: R) -> R::Bf16Row {
        x.bf16_row()
    }
    #[inline(always)]
    fn load<R: Registers>(src: &[bf16]) -> R {
        R::load_bf16(src)
    }
    #[inline(always)]
    fn load_operand<R: Registers>(src: &[bf16]) -> R {
        R::widen_bf16(src)
    }
    #[inline(always)]
    fn store<R: Registers>(_: R, row: R::Bf16Row, dst: &mut [bf16]) {
        R::store_bf16_row(row, dst)
    }
}

impl LaneElement for f16 {
    type Row<R: Registers> = R::F16Row;
    const ZERO_BITS: u16 = f16::ZERO.to_bits();
    const ONE_BITS: u16 = f16::ONE.to_bits();
    const INFINITY_BITS: u16 = f16::INFINITY.to_bits();

    #[inline(always)]
    fn round<R: Registers>(x: R) -> (R, R::F16Row) {
        x.round_f16_row()
    }
    #[inline(always)]
    fn row<R: Registers>(x: R) -> R::F16Row {
        x.f16_row()
    }
    #[inline(always)]
    fn load<R: Registers>(src: &[f16]) -> R {
        R::load_f16(src)
    }
    #[inline(always)]
    fn store<R: Registers>(_: R, row: R::F16Row, dst: &mut [f16]) {
        R::store_f16_row(row, dst)
    }
}

/// A row of [`LANES`] 16-bit values all `bits`, at compile time (for a row type of no size,
/// float32's, nothing).
const fn splat_row<W: Copy>(bits: u16) -> W {
    if std::mem::size_of::<W>() == 0 {
        // SAFETY: a type of no size has one value.
        return unsafe { std::mem::zeroed() };
    }
    assert!(std::mem::size_of::<W>() == std::mem::size_of::<[u16; LANES]>());
    // SAFETY: `W` is registers of 16-bit words of this size (asserted), any bits valid.
    unsafe { std::mem::transmute_copy::<[u16; LANES], W>(&[bits; LANES]) }
}

/// [`LANES`] values of `T` in registers `R`, with `T`'s arithmetic.
///
/// Invariant: every lane holds a value of `T`, and the row is the lanes' (`T::row`). The row
/// is computed with every value and discarded by the compiler where nothing stores it; a
/// rounding gives it at no cost where its instruction makes the row first (float16's
/// `vcvtps2ph`, AVX512_BF16's `vcvtne2ps2bf16`), so a result that is stored is converted once.
#[derive(Clone, Copy)]
pub struct Vector<R: Registers, T: LaneElement>(R, T::Row<R>);

impl<R: Registers, T: LaneElement> Vector<R, T> {
    /// Lanes that hold values of `T`, with their row.
    #[inline(always)]
    fn exact(x: R) -> Self {
        Vector(x, T::row(x))
    }
    /// Every lane `x` (a value of `T`, as float32).
    #[inline(always)]
    pub fn splat(x: f32) -> Self {
        Self::exact(R::splat(x))
    }
    /// Elements `src[..LANES]`, widened exactly (a signaling NaN is quieted).
    #[inline(always)]
    pub fn load(src: &[T]) -> Self {
        Self::exact(T::load(src))
    }
    /// Elements `src[..LANES]`, widened exactly, for values that only enter arithmetic
    /// ([`LaneElement::load_operand`]: a signaling NaN may stay signaling).
    #[inline(always)]
    pub fn load_operand(src: &[T]) -> Self {
        Self::exact(T::load_operand(src))
    }
    /// The lanes into `dst[..LANES]` (exact: every lane holds a value of `T`).
    #[inline(always)]
    pub fn store(self, dst: &mut [T]) {
        T::store(self.0, self.1, dst)
    }
    /// The lanes' values as float32 (exact).
    #[inline(always)]
    pub fn lanes(self) -> [f32; LANES] {
        self.0.lanes()
    }
    /// The same values with float32's arithmetic (exact: float32 holds every value of `T`).
    #[inline(always)]
    pub fn as_f32(self) -> Vector<R, f32> {
        Vector(self.0, ())
    }
    /// Registers of float32 values, each rounded to `T`.
    #[inline(always)]
    pub fn round(x: R) -> Self {
        let (x, row) = T::round(x);
        Vector(x, row)
    }
}

impl<R: Registers, T: LaneElement> fmt::Debug for Vector<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Vector").field(&self.lanes()).finish()
    }
}

impl<R: Registers, T: LaneElement> Default for Vector<R, T> {
    #[inline(always)]
    fn default() -> Self {
        Self::ZERO
    }
}

/// Not an order: the loops that use vectors compare nothing.
impl<R: Registers, T: LaneElement> PartialEq for Vector<R, T> {
    fn eq(&self, other: &Self) -> bool {
        self.lanes().map(f32::to_bits) == other.lanes().map(f32::to_bits)
    }
}
impl<R: Registers, T: LaneElement> PartialOrd for Vector<R, T> {
    fn partial_cmp(&self, _: &Self) -> Option<std::cmp::Ordering> {
        None
    }
}

macro_rules! rounded_op {
    ($trait:ident, $method:ident) => {
        impl<R: Registers, T: LaneElement> $trait for Vector<R, T> {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: Self) -> Self {
                Self::round(self.0.$method(rhs.0))
            }
        }
    };
}
rounded_op!(Add, add);
rounded_op!(Sub, sub);
rounded_op!(Mul, mul);
rounded_op!(Div, div);

impl<R: Registers, T: LaneElement> Neg for Vector<R, T> {
    type Output = Self;
    /// Exact.
    #[inline(always)]
    fn neg(self) -> Self {
        Self::exact(self.0.neg())
    }
}

impl<R: Registers, T: LaneElement> Arith for Vector<R, T> {
    const ZERO: Self = Vector(R::ZERO, splat_row(T::ZERO_BITS));
    const ONE: Self = Vector(R::ONE, splat_row(T::ONE_BITS));
    const INFINITY: Self = Vector(R::INFINITY, splat_row(T::INFINITY_BITS));
    const MIN_NORMAL: Self = Self::ZERO;

    #[inline(always)]
    fn abs(self) -> Self {
        Self::exact(self.0.abs())
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Self::round(self.0.sqrt())
    }
    fn is_nan(self) -> bool {
        self.lanes().iter().any(|x| x.is_nan())
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        Self::exact(self.0.copysign(sign.0))
    }
    /// Exact: each lane is one of its operands.
    #[inline(always)]
    fn max_nan(self, other: Self) -> Self {
        Self::exact(self.0.max_nan(other.0))
    }
    /// Exact: each lane is one of its operands. The bounds are not NaN (the lanes run value
    /// clips with numbers as bounds only).
    #[inline(always)]
    fn clip_to(self, hi: Self, lo: Self) -> Self {
        Self::exact(self.0.clip_to(hi.0, lo.0))
    }
    /// Lanes are never flushed by the vector types (they run under hardware flushing).
    fn flush(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::registers::{Ymm4, Zmm2, Zmm2Bf16};
    use crate::float::{Bf16Math, F16Math, FlushToZero, Ftz, Lane};
    use crate::simd::{Kernel, SimdLevel};

    /// Runs `ymm` compiled for AVX2, `zmm` for AVX-512 and `zmm_bf16` for AVX512_BF16, under
    /// flush-to-zero, each where the processor has the level.
    fn at_every_width(ymm: fn(), zmm: fn(), zmm_bf16: fn()) {
        struct Run(fn());
        impl Kernel for Run {
            type Output = ();
            #[inline(always)]
            fn run(self) {
                (self.0)()
            }
        }
        let _flush = FlushToZero::new();
        for (level, f) in [(Ymm4::LEVEL, ymm), (Zmm2::<false>::LEVEL, zmm), (Zmm2Bf16::LEVEL, zmm_bf16)] {
            if SimdLevel::detected() < level {
                eprintln!("skipped at {}: this processor does not have it", level.name());
                continue;
            }
            // SAFETY: the processor has the level (checked above).
            unsafe {
                match level {
                    SimdLevel::Avx2 => Ymm4::run(Run(f)),
                    SimdLevel::Avx512 => <Zmm2>::run(Run(f)),
                    _ => Zmm2Bf16::run(Run(f)),
                }
            }
        }
    }

    /// Every 16-bit value loads and stores as the scalar types do, and every one's square root
    /// and negation; float32 values around every 16-bit value (ties, one ulp either side, NaN
    /// payloads, subnormals) round as the scalar roundings of operation results.
    #[test]
    fn lanes_are_the_scalar_arithmetic() {
        at_every_width(unary::<Ymm4>, unary::<Zmm2>, unary::<Zmm2Bf16>);

        #[inline(always)]
        fn unary<R: Registers>() {
            let all: Vec<u16> = (0..=u16::MAX).collect();
            for chunk in all.chunks(LANES) {
                let b: Vec<bf16> = chunk.iter().map(|&x| bf16::from_bits(x)).collect();
                let h: Vec<f16> = chunk.iter().map(|&x| f16::from_bits(x)).collect();
                let (vb, vh) = (Vector::<R, bf16>::load(&b), Vector::<R, f16>::load(&h));
                // An operand load gives every operation the bits of one on the quieting load.
                let (ob, oh) = (Vector::<R, bf16>::load_operand(&b), Vector::<R, f16>::load_operand(&h));
                let (one_b, one_h) = (Vector::<R, bf16>::splat(1.0), Vector::<R, f16>::splat(1.0));
                let (nan_b, nan_h) = (Vector::<R, bf16>::splat(f32::NAN), Vector::<R, f16>::splat(f32::NAN));
                for (x, y) in [(ob * one_b, vb * one_b), (one_b * ob, one_b * vb), (ob + nan_b, vb + nan_b)] {
                    assert_eq!(x.lanes().map(f32::to_bits), y.lanes().map(f32::to_bits), "bf16 operand {chunk:x?}");
                }
                for (x, y) in [(oh * one_h, vh * one_h), (one_h * oh, one_h * vh), (oh + nan_h, vh + nan_h)] {
                    assert_eq!(x.lanes().map(f32::to_bits), y.lanes().map(f32::to_bits), "f16 operand {chunk:x?}");
                }
                for lane in 0..LANES {
                    let (sb, sh) = (b[lane].load(), h[lane].load());
                    if !sb.get().is_nan() {
                        assert_eq!(ob.lanes()[lane].to_bits(), sb.get().to_bits(), "bf16 operand {:#x}", chunk[lane]);
                    }
                    assert_eq!(vb.lanes()[lane].to_bits(), sb.get().to_bits(), "bf16 {:#x}", chunk[lane]);
                    assert_eq!(vh.lanes()[lane].to_bits(), sh.get().to_bits(), "f16 {:#x}", chunk[lane]);
                    assert_eq!(vb.sqrt().lanes()[lane].to_bits(), sb.sqrt().get().to_bits());
                    assert_eq!(vh.sqrt().lanes()[lane].to_bits(), sh.sqrt().get().to_bits());
                    assert_eq!((-vb).lanes()[lane].to_bits(), (-sb).get().to_bits());
                    assert_eq!((-vh).lanes()[lane].to_bits(), (-sh).get().to_bits());
                    assert_eq!(vb.abs().lanes()[lane].to_bits(), sb.abs().get().to_bits());
                    let sign = Vector::<R, bf16>::splat(-0.0);
                    assert_eq!(
                        vb.copysign(sign).lanes()[lane].to_bits(),
                        sb.copysign(Bf16Math::round(-0.0)).get().to_bits()
                    );
                }
                let (mut ob, mut oh) = ([bf16::ZERO; LANES], [f16::ZERO; LANES]);
                vb.store(&mut ob);
                vh.store(&mut oh);
                for lane in 0..LANES {
                    assert_eq!(ob[lane].to_bits(), <bf16 as Lane>::store(b[lane].load()).to_bits());
                    assert_eq!(oh[lane].to_bits(), <f16 as Lane>::store(h[lane].load()).to_bits());
                }
            }
            let inputs = crate::float::sixteen::tests::float32_inputs();
            for chunk in inputs.chunks_exact(LANES) {
                let registers = R::load_f32(chunk);
                let (rb, rh) =
                    (Vector::<R, bf16>::round(registers).lanes(), Vector::<R, f16>::round(registers).lanes());
                let mut out = [0f32; LANES];
                Vector::<R, f32>::load(chunk).store(&mut out);
                for lane in 0..LANES {
                    let v = chunk[lane];
                    assert_eq!(out[lane].to_bits(), v.to_bits(), "f32 load and store {v:e}");
                    // The vector roundings serve operation results only: NaNs with zero low bits.
                    if v.is_nan() && v.to_bits() & 0xffff != 0 {
                        continue;
                    }
                    // Under flush-to-zero, no operation yields a float32 subnormal.
                    // (Tested on the bits: under DAZ a comparison would read it as zero.)
                    if v.is_subnormal() {
                        continue;
                    }
                    assert_eq!(rb[lane].to_bits(), Bf16Math::round(v).get().to_bits(), "bf16 round {v:e}");
                    if !(v.is_nan() && v.to_bits() & 0x1fff != 0) {
                        assert_eq!(rh[lane].to_bits(), F16Math::round(v).get().to_bits(), "f16 round {v:e}");
                    }
                }
            }
        }
    }

    /// A value clip on lanes gives the scalar clip's bits: every bfloat16 and float16 value
    /// (NaNs, infinities, both zeros; not bfloat16's subnormals, which no operation yields under
    /// flush-to-zero) against bounds that are numbers, zeros of either sign and infinities among
    /// them.
    #[test]
    fn value_clips_are_the_scalar_clip() {
        at_every_width(clips::<Ymm4>, clips::<Zmm2>, clips::<Zmm2Bf16>);

        #[inline(always)]
        fn clips<R: Registers>() {
            let bounds = [
                (0.25f32, -0.25f32),
                (0.0, -0.0),
                (-0.0, 0.0),
                (0.0, 0.0),
                (f32::INFINITY, f32::NEG_INFINITY),
                (-1.5, -3.0),
                (1e-3, 1e-3),
                (65504.0, -65504.0),
            ];
            let all: Vec<u16> = (0..=u16::MAX).collect();
            for chunk in all.chunks(LANES) {
                let b: Vec<bf16> = chunk.iter().map(|&x| bf16::from_bits(x)).collect();
                let h: Vec<f16> = chunk.iter().map(|&x| f16::from_bits(x)).collect();
                for (hi, lo) in bounds {
                    let vb = Vector::<R, bf16>::load(&b).clip_to(Vector::splat(hi), Vector::splat(lo)).lanes();
                    let vh = Vector::<R, f16>::load(&h).clip_to(Vector::splat(hi), Vector::splat(lo)).lanes();
                    for lane in 0..LANES {
                        let (sb, sh) = (b[lane].load().get(), h[lane].load().get());
                        let (wb, wh) = (sb.clip_to(hi, lo), sh.clip_to(hi, lo));
                        // A clip follows an operation, whose result under flush-to-zero is never
                        // a float32 subnormal (bfloat16's subnormals are).
                        if !(sb != 0.0 && sb.abs() < f32::MIN_POSITIVE) {
                            assert_eq!(vb[lane].to_bits(), wb.to_bits(), "bf16 {:#x} to ({hi}, {lo})", chunk[lane]);
                        }
                        assert_eq!(vh[lane].to_bits(), wh.to_bits(), "f16 {:#x} to ({hi}, {lo})", chunk[lane]);
                    }
                }
            }
        }
    }

    /// `tf.maximum` on lanes gives the scalar one's bits: every bfloat16 and float16 value,
    /// as either operand, against NaNs, zeros of either sign, infinities, ordinary and tiny
    /// values (bfloat16's subnormals included: both compare them as zero, and keep their bits).
    #[test]
    fn maxima_are_the_scalar_maximum() {
        at_every_width(maxima::<Ymm4>, maxima::<Zmm2>, maxima::<Zmm2Bf16>);

        #[inline(always)]
        fn maxima<R: Registers>() {
            let others = [f32::NAN, -f32::NAN, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1.0, -1.0, 3.0e-5, 1e-40];
            let all: Vec<u16> = (0..=u16::MAX).collect();
            for chunk in all.chunks(LANES) {
                let b: Vec<bf16> = chunk.iter().map(|&x| bf16::from_bits(x)).collect();
                let h: Vec<f16> = chunk.iter().map(|&x| f16::from_bits(x)).collect();
                let (vb, vh) = (Vector::<R, bf16>::load(&b), Vector::<R, f16>::load(&h));
                for other in others {
                    let o = Vector::<R, bf16>::splat(other);
                    let (first, second) = (vb.max_nan(o).lanes(), o.max_nan(vb).lanes());
                    let oh = Vector::<R, f16>::splat(other);
                    let (first_h, second_h) = (vh.max_nan(oh).lanes(), oh.max_nan(vh).lanes());
                    for lane in 0..LANES {
                        let (x, y) = (b[lane].load().get(), h[lane].load().get());
                        let what = |t: &str| format!("{t} {:#x} and {other:e}", chunk[lane]);
                        assert_eq!(first[lane].to_bits(), x.max_nan(other).to_bits(), "{}", what("bf16"));
                        assert_eq!(second[lane].to_bits(), other.max_nan(x).to_bits(), "{}", what("bf16, swapped"));
                        assert_eq!(first_h[lane].to_bits(), y.max_nan(other).to_bits(), "{}", what("f16"));
                        assert_eq!(second_h[lane].to_bits(), other.max_nan(y).to_bits(), "{}", what("f16, swapped"));
                    }
                }
            }
        }
    }

    /// The four operations on lanes give the scalar types' bits, for pairs of values drawn
    /// across the whole range (every exponent, both signs, zeros, infinities, NaN, and for
    /// float32 subnormals, flushed by the processor as the scalar operations are).
    #[test]
    fn operations_are_the_scalar_operations() {
        at_every_width(binary::<Ymm4>, binary::<Zmm2>, binary::<Zmm2Bf16>);

        #[inline(always)]
        fn binary<R: Registers>() {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for _ in 0..100_000 {
                let a: [u64; LANES] = std::array::from_fn(|_| next());
                let c: [u64; LANES] = std::array::from_fn(|_| next());
                check::<R, bf16>(
                    a.map(|x| bf16::from_bits(x as u16)),
                    c.map(|x| bf16::from_bits(x as u16)),
                    |x, y, op| {
                        let (x, y) = (x.load(), y.load());
                        [x + y, x - y, x * y, x / y][op].get()
                    },
                );
                check::<R, f16>(
                    a.map(|x| f16::from_bits(x as u16)),
                    c.map(|x| f16::from_bits(x as u16)),
                    |x, y, op| {
                        let (x, y) = (x.load(), y.load());
                        [x + y, x - y, x * y, x / y][op].get()
                    },
                );
                check::<R, f32>(
                    a.map(|x| f32::from_bits(x as u32)),
                    c.map(|x| f32::from_bits(x as u32)),
                    |x, y, op| {
                        let (x, y) = (Ftz::<f32, true>::new(x), Ftz::<f32, true>::new(y));
                        [x + y, x - y, x * y, x / y][op].get()
                    },
                );
            }
        }

        fn same_bits<T: Copy>(a: &[T; LANES], b: &[T; LANES]) -> bool {
            let bytes = |x: &[T; LANES]| {
                // SAFETY: the array's own bytes (floats of 16 or 32 bits: no padding).
                unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
            };
            bytes(a) == bytes(b)
        }

        #[inline(always)]
        fn check<R: Registers, T: LaneElement>(ea: [T; LANES], ec: [T; LANES], scalar: impl Fn(T, T, usize) -> f32) {
            let value = |x: T| Vector::<R, T>::load(&[x; LANES]).lanes()[0];
            let (va, vc) = (Vector::<R, T>::load(&ea), Vector::<R, T>::load(&ec));
            let results = [va + vc, va - vc, va * vc, va / vc];
            for (op, v) in results.iter().enumerate() {
                let mut out = ea;
                v.store(&mut out);
                // The row a rounding gives is the row of its lanes, NaN payloads included.
                let mut from_lanes = ea;
                Vector::<R, T>::exact(R::load_f32(&v.lanes())).store(&mut from_lanes);
                assert!(same_bits(&out, &from_lanes), "op {op}: the rounding's row is not its lanes' row");
                for lane in 0..LANES {
                    let (got, want) = (value(out[lane]), scalar(ea[lane], ec[lane], op));
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "op {op} on {:?}, {:?}: {got:e} vs {want:e}",
                        ea[lane],
                        ec[lane]
                    );
                }
            }
        }
    }
}
