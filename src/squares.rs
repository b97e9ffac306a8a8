//! The step report's sums of squares of a gradient, taken in the update pass when no clip mode
//! computes a norm (docs/numerics.md §23). Not Keras' order (that is [`crate::reduction`]'s): an
//! order of libadamw's own, fixed by the gradient's length alone, so that the sum is the same
//! bits on every SIMD level, for every thread count and whoever runs the tasks.
//!
//! The order: a pass's task (the update pass's, cut by the length alone) is taken in groups of
//! 512 elements from its start (the last may be shorter). Within a group, element `j` is
//! squared and added into group lane `j % 32`, in element order from 0, in the gradient's
//! [`Lane::Square`] type (float32 for float32 and the 16-bit dtypes, widened exactly; float64
//! for float64), each operation rounded and flushed to zero as the step's arithmetic is (§7).
//! After each group its 32 lanes are widened to float64 and added into 32 float64 task lanes.
//! The task's total is `((0 + L0) + L1) + … + L31`, and the variable's is the tasks' totals
//! added in task order, from 0. (Each float32 lane sums at most sixteen squares before float64
//! takes over, so the norm is good to about 1e-6 relative.)
//!
//! Where the sums are taken: the vector loops (`engine::cpu::lanes`: 16-bit and float32
//! variables, float64 ones at AVX-512, and a master's gradient as it is widened,
//! `lanes::widen_summed`) add each row's squares into lanes held in registers
//! ([`plus_square`]); the other dense loops write each
//! element's square to a buffer as they step it and add a group's squares into its lanes after
//! the group ([`square`], [`Squares::add_group_squares`]); [`Squares::add`] sums a slice on its
//! own (a sparse gradient's values, what a master's widening leaves).

use crate::dtype::Shared;
use crate::float::{Arith, FlushToZero, Ftz, HARDWARE_FLUSH as HW, Lane, Real};

/// Elements per group (a caller's pieces are multiples of it), and lanes per group.
pub(crate) const GROUP: usize = 512;
pub(crate) const LANES: usize = 32;

/// The 32 float64 task lanes of the order above.
#[derive(Debug, Clone, Copy)]
pub struct Squares([f64; LANES]);

impl Default for Squares {
    fn default() -> Self {
        Squares([0.0; LANES])
    }
}

/// 16-bit values are widened to float32 this many at a time (whole groups).
const PIECE: usize = 512;

/// `x · x`, rounded and flushed to zero (`HW`: by the processor, under a `FlushToZero` guard,
/// as [`Ftz`]).
#[inline(always)]
pub fn square<S: Arith, const HW: bool>(x: S) -> S {
    let x = Ftz::<S, HW>::new(x);
    (x * x).get()
}

/// A lane plus the square of `x`, `lane + x · x`, each operation rounded and flushed as in
/// [`square`] and [`add_row`]: what the vector loops do to a row of lanes held in registers.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the vector loops are x86-64's
pub fn plus_square<S: Arith, const HW: bool>(lane: S, x: S) -> S {
    (Ftz::<S, HW>::new(lane) + Ftz::new(square::<S, HW>(x))).get()
}

impl Squares {
    /// Adds a group's lanes, once its elements (at most 512) are in them, into the task lanes.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // one index into both lane arrays reads best
    pub fn add_group<S: Arith + Into<f64>>(&mut self, lanes: &[S; LANES]) {
        for j in 0..LANES {
            self.0[j] += lanes[j].into();
        }
    }

    /// Adds the squares of `values`, the next elements of the task; every call but the task's
    /// last must give a multiple of 512 values. Runs under flush-to-zero. Inlined, so that it is
    /// compiled for the SIMD level of the loop that calls it.
    #[inline(always)]
    pub fn add<G: Real>(&mut self, values: &[G], simd: bool) {
        let _flush = FlushToZero::new();
        let tensor = G::wrap::<Shared<'_>>(values);
        if let Some(values) = tensor.typed::<f32>() {
            return self.add_groups(values);
        }
        if let Some(values) = tensor.typed::<f64>() {
            return self.add_groups(values);
        }
        let mut piece = [0f32; PIECE];
        for chunk in values.chunks(PIECE) {
            let wide = &mut piece[..chunk.len()];
            G::widen_slice(chunk, wide, simd); // exact for the 16-bit dtypes
            self.add_groups(wide);
        }
    }

    /// The groups' loop, under the caller's `FlushToZero` guard: each group's squares, then
    /// [`Squares::add_group_squares`].
    #[inline(always)]
    fn add_groups<L: Lane>(&mut self, values: &[L]) {
        let mut squares = [<L::Square as Arith>::ZERO; GROUP];
        for group in values.chunks(GROUP) {
            let squares = &mut squares[..group.len()];
            for (square_of, &x) in squares.iter_mut().zip(group) {
                *square_of = square::<_, HW>(L::square_value(x.load()));
            }
            self.add_group_squares::<_, HW>(squares);
        }
    }

    /// Adds one group's squares (`squares[j]` the square of its element `j`, as [`square`]
    /// makes it; at most 512) into its lanes, each lane in element order from 0, then the lanes
    /// into the task lanes. A short last row is padded with zeros, which add nothing (`lane + 0`
    /// is `lane`), so that the lanes are indexed by constants only and stay in registers; the
    /// additions run across the lanes, which vectorizing does not reorder.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // one index into a row and the lanes reads best
    pub fn add_group_squares<S: Arith + Into<f64>, const HW: bool>(&mut self, squares: &[S]) {
        let mut lanes = [S::ZERO; LANES];
        let rows = squares.chunks_exact(LANES);
        let tail = rows.remainder();
        for row in rows {
            add_row::<S, HW>(&mut lanes, row.try_into().expect("a row of LANES values"));
        }
        if !tail.is_empty() {
            let mut last = [S::ZERO; LANES];
            last[..tail.len()].copy_from_slice(tail);
            add_row::<S, HW>(&mut lanes, &last);
        }
        self.add_group(&lanes);
    }

    /// The task's total: the lanes added in order, from 0.
    pub fn total(&self) -> f64 {
        self.0.iter().fold(0.0, |sum, &lane| sum + lane)
    }
}

/// Each group lane plus its element's square from a row of the group (`row[j]` the square of
/// element `j`, as [`square`] makes it): `lane + x · x` once the square is taken, rounded and
/// flushed (`HW` as for [`square`]).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // one index into a row and the lanes reads best
pub fn add_row<S: Arith, const HW: bool>(lanes: &mut [S; LANES], row: &[S; LANES]) {
    for j in 0..LANES {
        lanes[j] = (Ftz::<S, HW>::new(lanes[j]) + Ftz::new(row[j])).get();
    }
}

/// The sum of the tasks' totals in task order, from 0.
pub fn total_of_tasks(totals: &[f64]) -> f64 {
    totals.iter().fold(0.0, |sum, &t| sum + t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// `x`, or a zero of its sign when it is below the smallest normal float32 (`wide`: float64).
    fn flushed(x: f64, wide: bool) -> f64 {
        let min = if wide { f64::MIN_POSITIVE } else { f32::MIN_POSITIVE as f64 };
        if x.abs() < min { 0.0f64.copysign(x) } else { x }
    }

    /// The order written out element by element, float32 group lanes (`wide`: float64 ones),
    /// each operation rounded and flushed to zero.
    fn by_definition(values: &[f64], wide: bool) -> f64 {
        let round = |x: f64| flushed(if wide { x } else { x as f32 as f64 }, wide);
        let mut task = [0f64; 32];
        for group in values.chunks(512) {
            let mut lanes = [0f64; 32];
            for (j, &x) in group.iter().enumerate() {
                let x = flushed(x, wide);
                lanes[j % 32] = round(lanes[j % 32] + round(x * x));
            }
            for j in 0..32 {
                task[j] += lanes[j];
            }
        }
        task.iter().fold(0.0, |s, &l| s + l)
    }

    #[test]
    fn tiny_squares_are_flushed_to_zero_as_the_step_flushes() {
        // Squares below the smallest normal number count as zero, in float32 and in float64.
        // (Inputs through `black_box`: folded at compile time, the arithmetic would not see
        // the processor's flushing mode.)
        use std::hint::black_box;
        let raw: Vec<f32> =
            black_box((0..1100).map(|i| if i % 3 == 0 { 1e-20 } else { 2e-19 * (i % 7) as f32 }).collect());
        let mut s = Squares::default();
        s.add(&raw, true);
        let want = by_definition(&raw.iter().map(|&x| x as f64).collect::<Vec<_>>(), false);
        assert_eq!(s.total().to_bits(), want.to_bits());
        assert!(want > 0.0, "squares of 2e-19 and up are normal");
        let tiny = black_box(vec![1e-20f32; 600]);
        let mut s = Squares::default();
        s.add(&tiny, true);
        assert_eq!(s.total(), 0.0, "1e-40 is a float32 subnormal");
        let wide = black_box(vec![1e-160f64; 40]);
        let mut s = Squares::default();
        s.add(&wide, true);
        assert_eq!(s.total(), 0.0, "1e-320 is a float64 subnormal");
    }

    #[test]
    fn the_sum_is_the_documented_order_for_every_dtype_and_split() {
        let n = 1000 + 3;
        let raw: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0).collect();
        let want32 = by_definition(&raw.iter().map(|&x| x as f64).collect::<Vec<_>>(), false);
        for split in [0, 512, 1003] {
            let mut s = Squares::default();
            s.add(&raw[..split], true);
            s.add(&raw[split..], true);
            assert_eq!(s.total().to_bits(), want32.to_bits(), "float32, split at {split}");
        }
        let wide: Vec<f64> = raw.iter().map(|&x| x as f64 * 1.1).collect();
        let mut s = Squares::default();
        s.add(&wide, true);
        assert_eq!(s.total().to_bits(), by_definition(&wide, true).to_bits(), "float64");
        for simd in [false, true] {
            let b: Vec<bf16> = raw.iter().map(|&x| bf16::from_f32(x)).collect();
            let h: Vec<f16> = raw.iter().map(|&x| f16::from_f32(x)).collect();
            let (mut sb, mut sh) = (Squares::default(), Squares::default());
            sb.add(&b, simd);
            sh.add(&h, simd);
            let want_b = by_definition(&b.iter().map(|x| x.to_f64()).collect::<Vec<_>>(), false);
            let want_h = by_definition(&h.iter().map(|x| x.to_f64()).collect::<Vec<_>>(), false);
            assert_eq!(
                (sb.total().to_bits(), sh.total().to_bits()),
                (want_b.to_bits(), want_h.to_bits()),
                "simd {simd}"
            );
        }
    }
}
