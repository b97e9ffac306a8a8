//! Thirty-two float32 lanes held in vector registers of one width, with plain IEEE operations,
//! the roundings of their results to bfloat16 and float16, and the loads and stores of every
//! element type the vector lanes step ([`super::vector`] builds the dtypes' arithmetic on them).
//!
//! - [`Ymm4`]: four AVX registers. Every function needs AVX2 and F16C.
//! - [`Zmm2`]: two AVX-512 registers. Every function needs AVX-512 F and BW (with AVX2 and F16C).
//!   `Zmm2<true>` ([`Zmm2Bf16`]) also needs AVX512_BF16: it rounds to bfloat16 with
//!   `vcvtne2ps2bf16`, and loads and stores bfloat16 a whole 64-byte row at a time.
//!
//! The functions are `#[inline(always)]` and run only inside functions compiled for those
//! features ([`Registers::run`], which for `Zmm2<true>` is `simd::run_avx512bf16`; the generic
//! `simd::dispatch` runs the AVX512_BF16 level as plain AVX-512): that is the safety invariant
//! every `unsafe` block here relies on.
//!
//! The roundings serve operation results only, which under flush-to-zero are never float32
//! subnormals and whose NaNs have zero low bits (they come from 16-bit operands or the processor's
//! default NaN). Both widths round the same way: bfloat16 in integer lanes (add `0x7fff` plus the
//! kept lowest bit, clear the low half), float16 by a `vcvtps2ph` / `vcvtph2ps` round trip, which
//! rounds to nearest even, keeps float16's subnormals and overflows to infinity, as IEEE does.
//! `vcvtne2ps2bf16` rounds to nearest even too; it reads a subnormal as zero and flushes a
//! subnormal result, neither of which an operation's result under flush-to-zero can give (a
//! normal float32 rounds to a normal bfloat16, whose exponent range is float32's), and it keeps a
//! NaN's high bits, quieted, as the integer rounding does with zero low bits.

// Index loops over registers: every call between an intrinsic and the function compiled for
// the level must be inlined, and iterator adapters are not sure to be.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use half::{bf16, f16};

use crate::simd::{self, Kernel, SimdLevel};

/// Float32 lanes per [`Registers`] value.
pub(crate) const LANES: usize = 32;

/// [`LANES`] float32 lanes in registers, each operation one vector instruction per register.
pub trait Registers: Copy + Send + Sync + 'static {
    /// The SIMD level whose features every function needs.
    const LEVEL: SimdLevel;

    /// Runs `kernel` compiled for the features of [`Registers::LEVEL`].
    ///
    /// # Safety
    /// The processor must have the level (`Self::LEVEL <= SimdLevel::detected()`).
    unsafe fn run<K: Kernel>(kernel: K) -> K::Output;

    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;

    fn splat(x: f32) -> Self;
    fn lanes(self) -> [f32; LANES];
    fn add(self, rhs: Self) -> Self;
    fn sub(self, rhs: Self) -> Self;
    fn mul(self, rhs: Self) -> Self;
    fn div(self, rhs: Self) -> Self;
    fn sqrt(self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    /// The magnitudes of `self` with the signs of `sign`.
    fn copysign(self, sign: Self) -> Self;
    /// `tf.maximum` ([`super::Arith::max_nan`]): each lane `other` where `self < other` or
    /// `other` is NaN, unless `self` is NaN; the comparisons under the processor's flush mode,
    /// as the scalar ones, and each lane one operand's bits.
    fn max_nan(self, other: Self) -> Self;
    /// A value clip ([`super::Arith::clip_to`]) with bounds that are not NaN: `minps(hi, x)`
    /// is `hi < x ? hi : x` and gives `x` when it is NaN, and `maxps(lo, ..)` likewise.
    fn clip_to(self, hi: Self, lo: Self) -> Self;

    /// Thirty-two bfloat16 values, their bits in element order, in registers.
    type Bf16Row: Copy + Send + Sync;
    /// Thirty-two float16 values, their bits in element order, in registers.
    type F16Row: Copy + Send + Sync;

    /// Each lane rounded to bfloat16, to nearest even (a NaN with zero low bits stays): the
    /// lanes, and their bits as a store writes them. Where one instruction gives the bits and
    /// the lanes come from them, a result that is stored costs no second conversion.
    fn round_bf16_row(self) -> (Self, Self::Bf16Row);
    /// Each lane rounded to float16, to nearest even: the lanes, and their bits.
    fn round_f16_row(self) -> (Self, Self::F16Row);
    /// The lanes, bfloat16 values, as their bits (exact).
    fn bf16_row(self) -> Self::Bf16Row;
    /// The lanes, float16 values, as their bits (exact).
    fn f16_row(self) -> Self::F16Row;

    /// `src[..LANES]`.
    fn load_f32(src: &[f32]) -> Self;
    /// The lanes into `dst[..LANES]`.
    fn store_f32(self, dst: &mut [f32]);
    /// `src[..LANES]` widened exactly (a signaling NaN is quieted, as `bf16_to_f32` does).
    #[inline(always)]
    fn load_bf16(src: &[bf16]) -> Self {
        Self::widen_bf16(src).quiet()
    }
    /// `src[..LANES]` widened bit for bit: a signaling NaN stays signaling.
    fn widen_bf16(src: &[bf16]) -> Self;
    /// Each NaN lane made quiet (its quiet bit set; other lanes as they are).
    fn quiet(self) -> Self;
    /// A row's bits into `dst[..LANES]`.
    fn store_bf16_row(row: Self::Bf16Row, dst: &mut [bf16]);
    /// `src[..LANES]` widened exactly (`vcvtph2ps` quiets a signaling NaN and widens
    /// subnormals exactly, as `f16_to_f32` does).
    fn load_f16(src: &[f16]) -> Self;
    /// A row's bits into `dst[..LANES]`.
    fn store_f16_row(row: Self::F16Row, dst: &mut [f16]);
}

/// Every lane `x`, at compile time.
const fn splat_const<R: Copy>(x: f32) -> R {
    assert!(std::mem::size_of::<R>() == std::mem::size_of::<[f32; LANES]>());
    // SAFETY: `R` is registers of f32 lanes of this size (asserted), any bits valid.
    unsafe { std::mem::transmute_copy::<[f32; LANES], R>(&[x; LANES]) }
}

/// The low half of each lane cleared, the result rounded to nearest even at bit 16.
macro_rules! bf16_rounding {
    ($bits:expr, $srli:ident, $and:ident, $add:ident, $set1:ident) => {{
        let b = $bits;
        let lowest_kept = $and($srli::<16>(b), $set1(1));
        let biased = $add(b, $add($set1(0x7fff), lowest_kept));
        $and(biased, $set1(0xffff_0000u32 as i32))
    }};
}

/// Four AVX registers: [`LANES`] float32 lanes with AVX2 and F16C.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Ymm4([__m256; 4]);

impl Ymm4 {
    /// A register of zero words, to fill rows with before they are written.
    // SAFETY: integers, any bits valid.
    const ZERO_WORDS: __m128i = unsafe { std::mem::zeroed() };

    /// A row of 32 float16 values widened exactly into the lanes.
    #[inline(always)]
    fn widen_f16_row(row: [__m128i; 4]) -> Self {
        let mut x = Self::ZERO.0;
        for k in 0..4 {
            // SAFETY: F16C, see the module's documentation.
            x[k] = unsafe { _mm256_cvtph_ps(row[k]) };
        }
        Ymm4(x)
    }

    /// A row of 32 16-bit values (bfloat16 or float16 bits) into `dst[..LANES]`.
    #[inline(always)]
    fn store_words<T: Copy>(row: [__m128i; 4], dst: &mut [T]) {
        const { assert!(std::mem::size_of::<T>() == 2) };
        let dst = &mut dst[..LANES];
        for k in 0..4 {
            // SAFETY: SSE2; 16 bytes (eight 2-byte elements) are writable at dst[8 * k].
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().add(8 * k).cast::<__m128i>(), row[k]) };
        }
    }
}

impl Registers for Ymm4 {
    const LEVEL: SimdLevel = SimdLevel::Avx2;

    #[inline(always)]
    unsafe fn run<K: Kernel>(kernel: K) -> K::Output {
        // SAFETY: the caller's guarantee.
        unsafe { simd::run_avx2(kernel) }
    }
    const ZERO: Self = splat_const(0.0);
    const ONE: Self = splat_const(1.0);
    const INFINITY: Self = splat_const(f32::INFINITY);

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX, see the module's documentation.
        Ymm4([unsafe { _mm256_set1_ps(x) }; 4])
    }
    #[inline(always)]
    fn lanes(self) -> [f32; LANES] {
        // SAFETY: registers of f32 lanes, any bits valid.
        unsafe { std::mem::transmute::<[__m256; 4], [f32; LANES]>(self.0) }
    }
    #[inline(always)]
    fn add(self, rhs: Self) -> Self {
        Ymm4(each!(self.0, rhs.0, |x, y| _mm256_add_ps(x, y)))
    }
    #[inline(always)]
    fn sub(self, rhs: Self) -> Self {
        Ymm4(each!(self.0, rhs.0, |x, y| _mm256_sub_ps(x, y)))
    }
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        Ymm4(each!(self.0, rhs.0, |x, y| _mm256_mul_ps(x, y)))
    }
    #[inline(always)]
    fn div(self, rhs: Self) -> Self {
        Ymm4(each!(self.0, rhs.0, |x, y| _mm256_div_ps(x, y)))
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Ymm4(each!(self.0, |x| _mm256_sqrt_ps(x)))
    }
    #[inline(always)]
    fn neg(self) -> Self {
        Ymm4(each!(self.0, |x| _mm256_xor_ps(x, _mm256_set1_ps(-0.0))))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Ymm4(each!(self.0, |x| _mm256_andnot_ps(_mm256_set1_ps(-0.0), x)))
    }
    #[inline(always)]
    fn max_nan(self, other: Self) -> Self {
        Ymm4(each!(self.0, other.0, |a, b| {
            let take_b = _mm256_and_ps(_mm256_cmp_ps::<_CMP_NGE_UQ>(a, b), _mm256_cmp_ps::<_CMP_ORD_Q>(a, a));
            _mm256_blendv_ps(a, b, take_b)
        }))
    }
    #[inline(always)]
    fn clip_to(self, hi: Self, lo: Self) -> Self {
        let below_hi = each!(hi.0, self.0, |h, x| _mm256_min_ps(h, x));
        Ymm4(each!(lo.0, below_hi, |l, b| _mm256_max_ps(l, b)))
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        Ymm4(each!(self.0, sign.0, |x, s| {
            let bit = _mm256_set1_ps(-0.0);
            _mm256_or_ps(_mm256_andnot_ps(bit, x), _mm256_and_ps(bit, s))
        }))
    }
    type Bf16Row = [__m128i; 4];
    type F16Row = [__m128i; 4];

    #[inline(always)]
    fn round_bf16_row(self) -> (Self, Self::Bf16Row) {
        let rounded = Ymm4(each!(self.0, |x| {
            _mm256_castsi256_ps(bf16_rounding!(
                _mm256_castps_si256(x),
                _mm256_srli_epi32,
                _mm256_and_si256,
                _mm256_add_epi32,
                _mm256_set1_epi32
            ))
        }));
        (rounded, rounded.bf16_row())
    }
    #[inline(always)]
    fn round_f16_row(self) -> (Self, Self::F16Row) {
        let row = self.f16_row();
        (Self::widen_f16_row(row), row)
    }
    #[inline(always)]
    fn bf16_row(self) -> Self::Bf16Row {
        let mut row = [Self::ZERO_WORDS; 4];
        for k in 0..4 {
            // SAFETY: AVX2. The lanes are bfloat16 values: their high halves are the bits, and
            // packing the shifted lanes saturates nothing.
            row[k] = unsafe {
                let high = _mm256_srli_epi32::<16>(_mm256_castps_si256(self.0[k]));
                _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256::<1>(high))
            };
        }
        row
    }
    #[inline(always)]
    fn f16_row(self) -> Self::F16Row {
        let mut row = [Self::ZERO_WORDS; 4];
        for k in 0..4 {
            // SAFETY: F16C. Rounds to nearest even (exact for float16 values).
            row[k] = unsafe { _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0[k]) };
        }
        row
    }

    #[inline(always)]
    fn load_f32(src: &[f32]) -> Self {
        let src = &src[..LANES];
        let mut x = Self::ZERO.0;
        for k in 0..4 {
            // SAFETY: AVX; 32 bytes are readable at src[8 * k], unaligned loads allowed.
            x[k] = unsafe { _mm256_loadu_ps(src.as_ptr().add(8 * k)) };
        }
        Ymm4(x)
    }
    #[inline(always)]
    fn store_f32(self, dst: &mut [f32]) {
        let dst = &mut dst[..LANES];
        for k in 0..4 {
            // SAFETY: AVX; 32 bytes are writable at dst[8 * k].
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(8 * k), self.0[k]) };
        }
    }
    #[inline(always)]
    fn widen_bf16(src: &[bf16]) -> Self {
        let src = &src[..LANES];
        let mut x = Self::ZERO.0;
        for k in 0..4 {
            // SAFETY: AVX2; 16 bytes are readable at src[8 * k] (eight elements).
            x[k] = unsafe {
                let halves = _mm_loadu_si128(src.as_ptr().add(8 * k).cast::<__m128i>());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
            };
        }
        Ymm4(x)
    }
    #[inline(always)]
    fn quiet(self) -> Self {
        Ymm4(each!(self.0, |x| {
            // A NaN's magnitude is above infinity's.
            let wide = _mm256_castps_si256(x);
            let magnitude = _mm256_and_si256(wide, _mm256_set1_epi32(0x7fff_ffff));
            let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f80_0000));
            let quiet = _mm256_and_si256(nan, _mm256_set1_epi32(0x0040_0000));
            _mm256_castsi256_ps(_mm256_or_si256(wide, quiet))
        }))
    }
    #[inline(always)]
    fn store_bf16_row(row: Self::Bf16Row, dst: &mut [bf16]) {
        Self::store_words(row, dst)
    }
    #[inline(always)]
    fn load_f16(src: &[f16]) -> Self {
        let src = &src[..LANES];
        let mut row = [Self::ZERO_WORDS; 4];
        for k in 0..4 {
            // SAFETY: SSE2; 16 bytes are readable at src[8 * k].
            row[k] = unsafe { _mm_loadu_si128(src.as_ptr().add(8 * k).cast::<__m128i>()) };
        }
        Self::widen_f16_row(row)
    }
    #[inline(always)]
    fn store_f16_row(row: Self::F16Row, dst: &mut [f16]) {
        Self::store_words(row, dst)
    }
}

/// Two AVX-512 registers: [`LANES`] float32 lanes with AVX-512 F and BW; with `BF16`, also
/// AVX512_BF16's conversions for bfloat16 (the same bits).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Zmm2<const BF16: bool = false>([__m512; 2]);

/// [`Zmm2`] with AVX512_BF16.
pub type Zmm2Bf16 = Zmm2<true>;

/// Word indices for `vpermw`/`vpermt2w`: each float32 lane's bfloat16 is its high word, so the
/// row's `k`-th value is word `2k + 1` of its register.
mod words {
    use std::arch::x86_64::__m512i;

    /// The indices as a register.
    const fn register(words: [u16; 32]) -> __m512i {
        // SAFETY: 64 bytes of integers, any bits valid.
        unsafe { std::mem::transmute::<[u16; 32], __m512i>(words) }
    }
    /// `(low, high, narrow)`, see below.
    const fn tables() -> [[u16; 32]; 3] {
        let mut t = [[0u16; 32]; 3];
        let mut i = 0;
        while i < 32 {
            t[0][i] = (i / 2) as u16;
            t[1][i] = (16 + i / 2) as u16;
            t[2][i] = if i < 16 { 2 * i + 1 } else { 32 + 2 * (i - 16) + 1 } as u16;
            i += 1;
        }
        t
    }
    /// Word `2k + 1` of the result is word `k` (the row's first sixteen values, packed).
    pub(super) const WIDEN_LOW: __m512i = register(tables()[0]);
    /// Word `2k + 1` of the result is word `16 + k` (the row's last sixteen values).
    pub(super) const WIDEN_HIGH: __m512i = register(tables()[1]);
    /// Word `k` is the high word of lane `k` of the first register, then of the second
    /// (`vpermt2w`: bit 5 of an index picks the second).
    pub(super) const NARROW: __m512i = register(tables()[2]);
    /// The odd words: the high word of every float32 lane.
    pub(super) const HIGH_WORDS: u32 = 0xaaaa_aaaa;
}

impl<const BF16: bool> Zmm2<BF16> {
    /// A row of 32 float16 values, two registers of sixteen, widened exactly into the lanes.
    #[inline(always)]
    fn widen_f16_row(row: [__m256i; 2]) -> Self {
        // SAFETY: AVX-512 F, see the module's documentation.
        Zmm2(unsafe { [_mm512_cvtph_ps(row[0]), _mm512_cvtph_ps(row[1])] })
    }

    /// A row of 32 bfloat16 values, packed in one register, widened exactly into the lanes
    /// (AVX-512 BW; the high word of each lane, the low word zero).
    #[inline(always)]
    fn widen_bf16_row(packed: __m512i) -> [__m512i; 2] {
        // SAFETY: AVX-512 BW, see the module's documentation.
        unsafe {
            [
                _mm512_maskz_permutexvar_epi16(words::HIGH_WORDS, words::WIDEN_LOW, packed),
                _mm512_maskz_permutexvar_epi16(words::HIGH_WORDS, words::WIDEN_HIGH, packed),
            ]
        }
    }
}

impl<const BF16: bool> Registers for Zmm2<BF16> {
    const LEVEL: SimdLevel = if BF16 { SimdLevel::Avx512Bf16 } else { SimdLevel::Avx512 };

    #[inline(always)]
    unsafe fn run<K: Kernel>(kernel: K) -> K::Output {
        // SAFETY: the caller's guarantee.
        unsafe { if BF16 { simd::run_avx512bf16(kernel) } else { simd::run_avx512(kernel) } }
    }
    const ZERO: Self = splat_const(0.0);
    const ONE: Self = splat_const(1.0);
    const INFINITY: Self = splat_const(f32::INFINITY);

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX-512 F, see the module's documentation.
        Zmm2([unsafe { _mm512_set1_ps(x) }; 2])
    }
    #[inline(always)]
    fn lanes(self) -> [f32; LANES] {
        // SAFETY: registers of f32 lanes, any bits valid.
        unsafe { std::mem::transmute::<[__m512; 2], [f32; LANES]>(self.0) }
    }
    #[inline(always)]
    fn add(self, rhs: Self) -> Self {
        Zmm2(each!(self.0, rhs.0, |x, y| _mm512_add_ps(x, y)))
    }
    #[inline(always)]
    fn sub(self, rhs: Self) -> Self {
        Zmm2(each!(self.0, rhs.0, |x, y| _mm512_sub_ps(x, y)))
    }
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        Zmm2(each!(self.0, rhs.0, |x, y| _mm512_mul_ps(x, y)))
    }
    #[inline(always)]
    fn div(self, rhs: Self) -> Self {
        Zmm2(each!(self.0, rhs.0, |x, y| _mm512_div_ps(x, y)))
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Zmm2(each!(self.0, |x| _mm512_sqrt_ps(x)))
    }
    #[inline(always)]
    fn neg(self) -> Self {
        Zmm2(each!(self.0, |x| {
            _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN)))
        }))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Zmm2(each!(self.0, |x| _mm512_abs_ps(x)))
    }
    #[inline(always)]
    fn max_nan(self, other: Self) -> Self {
        Zmm2(each!(self.0, other.0, |a, b| {
            let take_b = _mm512_cmp_ps_mask::<_CMP_NGE_UQ>(a, b) & _mm512_cmp_ps_mask::<_CMP_ORD_Q>(a, a);
            _mm512_mask_blend_ps(take_b, a, b)
        }))
    }
    #[inline(always)]
    fn clip_to(self, hi: Self, lo: Self) -> Self {
        let below_hi = each!(hi.0, self.0, |h, x| _mm512_min_ps(h, x));
        Zmm2(each!(lo.0, below_hi, |l, b| _mm512_max_ps(l, b)))
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        Zmm2(each!(self.0, sign.0, |x, s| {
            // Bitwise `mask ? s : x` with the sign bit as the mask.
            _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xca>(
                _mm512_set1_epi32(i32::MIN),
                _mm512_castps_si512(s),
                _mm512_castps_si512(x),
            ))
        }))
    }
    type Bf16Row = __m512i;
    type F16Row = [__m256i; 2];

    #[inline(always)]
    fn round_bf16_row(self) -> (Self, Self::Bf16Row) {
        if BF16 {
            // SAFETY: AVX512_BF16 (`BF16`) and BW; the conversion packs the first register's
            // values into the low words, the second's into the high ones.
            let packed = unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(self.0[1], self.0[0])) };
            let [low, high] = Self::widen_bf16_row(packed);
            // SAFETY: AVX-512 F.
            return (Zmm2(unsafe { [_mm512_castsi512_ps(low), _mm512_castsi512_ps(high)] }), packed);
        }
        let rounded = Zmm2(each!(self.0, |x| {
            _mm512_castsi512_ps(bf16_rounding!(
                _mm512_castps_si512(x),
                _mm512_srli_epi32,
                _mm512_and_si512,
                _mm512_add_epi32,
                _mm512_set1_epi32
            ))
        }));
        (rounded, rounded.bf16_row())
    }
    #[inline(always)]
    fn round_f16_row(self) -> (Self, Self::F16Row) {
        let row = self.f16_row();
        (Self::widen_f16_row(row), row)
    }
    #[inline(always)]
    fn bf16_row(self) -> Self::Bf16Row {
        // SAFETY: AVX-512 F and BW. The lanes are bfloat16 values: their high words are the
        // bits, which `vpermt2w` packs in order.
        unsafe {
            let (a, b) = (_mm512_castps_si512(self.0[0]), _mm512_castps_si512(self.0[1]));
            _mm512_permutex2var_epi16(a, words::NARROW, b)
        }
    }
    #[inline(always)]
    fn f16_row(self) -> Self::F16Row {
        // SAFETY: AVX-512 F. Rounds to nearest even (exact for float16 values).
        unsafe {
            [
                _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0[0]),
                _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0[1]),
            ]
        }
    }

    #[inline(always)]
    fn load_f32(src: &[f32]) -> Self {
        let src = &src[..LANES];
        let mut x = Self::ZERO.0;
        for k in 0..2 {
            // SAFETY: AVX-512 F; 64 bytes are readable at src[16 * k], unaligned loads allowed.
            x[k] = unsafe { _mm512_loadu_ps(src.as_ptr().add(16 * k)) };
        }
        Zmm2(x)
    }
    #[inline(always)]
    fn store_f32(self, dst: &mut [f32]) {
        let dst = &mut dst[..LANES];
        for k in 0..2 {
            // SAFETY: AVX-512 F; 64 bytes are writable at dst[16 * k].
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(16 * k), self.0[k]) };
        }
    }
    #[inline(always)]
    fn widen_bf16(src: &[bf16]) -> Self {
        let src = &src[..LANES];
        if BF16 {
            // SAFETY: AVX-512 F; 64 bytes (the row) are readable at src.
            let [low, high] = Self::widen_bf16_row(unsafe { _mm512_loadu_si512(src.as_ptr().cast()) });
            // SAFETY: AVX-512 F.
            return Zmm2(unsafe { [_mm512_castsi512_ps(low), _mm512_castsi512_ps(high)] });
        }
        let mut x = Self::ZERO.0;
        for k in 0..2 {
            // SAFETY: AVX-512 F; 32 bytes are readable at src[16 * k] (sixteen elements).
            x[k] = unsafe {
                let halves = _mm256_loadu_si256(src.as_ptr().add(16 * k).cast::<__m256i>());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves)))
            };
        }
        Zmm2(x)
    }
    #[inline(always)]
    fn quiet(self) -> Self {
        Zmm2(each!(self.0, |x| {
            // A NaN's magnitude is above infinity's.
            let wide = _mm512_castps_si512(x);
            let magnitude = _mm512_and_si512(wide, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
            _mm512_castsi512_ps(_mm512_mask_or_epi32(wide, nan, wide, _mm512_set1_epi32(0x0040_0000)))
        }))
    }
    #[inline(always)]
    fn store_bf16_row(row: Self::Bf16Row, dst: &mut [bf16]) {
        let dst = &mut dst[..LANES];
        // SAFETY: AVX-512 F; 64 bytes are writable at dst.
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), row) };
    }
    #[inline(always)]
    fn load_f16(src: &[f16]) -> Self {
        let src = &src[..LANES];
        // SAFETY: AVX; 32 bytes are readable at src[0] and at src[16].
        let row = unsafe {
            [
                _mm256_loadu_si256(src.as_ptr().cast::<__m256i>()),
                _mm256_loadu_si256(src.as_ptr().add(16).cast::<__m256i>()),
            ]
        };
        Self::widen_f16_row(row)
    }
    #[inline(always)]
    fn store_f16_row(row: Self::F16Row, dst: &mut [f16]) {
        let dst = &mut dst[..LANES];
        for k in 0..2 {
            // SAFETY: AVX; 32 bytes are writable at dst[16 * k].
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(16 * k).cast::<__m256i>(), row[k]) };
        }
    }
}
