//! The step report's sums of squares of a gradient, taken in the update pass when no clip mode
//! computes a norm (docs/numerics.md §23). Not Keras' order (that is [`crate::reduction`]'s): an
//! order of libadamw's own, fixed by the gradient's length alone, so that the sum is the same
//! bits on every SIMD level, for every thread count and whoever runs the tasks.
//!
//! The order: each value is widened exactly to float64 and squared in float64 (exact for the
//! 16-bit dtypes and float32, rounded once for float64). A pass's task (the update pass's, cut
//! by the length alone) keeps eight running sums: element `j` of the task goes into sum `j % 8`,
//! in element order. The task's total is `((0 + s0) + s1) + … + s7`, and the variable's is the
//! tasks' totals added in task order, from 0.

use crate::dtype::DType;
use crate::float::Real;

/// Eight running float64 sums of squares (the lanes of the order above).
#[derive(Debug, Clone, Copy, Default)]
pub struct Squares([f64; 8]);

/// 16-bit values are widened to float32 this many at a time (a multiple of 8, so each lane keeps
/// its elements from one piece to the next).
const PIECE: usize = 256;

impl Squares {
    /// Adds the squares of `values`, the next elements of the task; every call but the task's
    /// last must give a multiple of 8 values.
    #[inline]
    pub fn add<G: Real>(&mut self, values: &[G], simd: bool) {
        if matches!(G::DTYPE, DType::BF16 | DType::F16) {
            let mut piece = [0f32; PIECE];
            for chunk in values.chunks(PIECE) {
                let wide = &mut piece[..chunk.len()];
                G::widen_slice(chunk, wide, simd); // exact
                self.add_widened(wide, |x| x as f64);
            }
        } else {
            self.add_widened(values, G::to_f64);
        }
    }

    /// The lanes' loop: each lane's additions in element order, which vectorizing across the
    /// lanes does not change.
    #[inline(always)]
    fn add_widened<T: Copy>(&mut self, values: &[T], widen: impl Fn(T) -> f64) {
        let lanes = &mut self.0;
        let mut chunks = values.chunks_exact(8);
        for chunk in &mut chunks {
            for j in 0..8 {
                let x = widen(chunk[j]);
                lanes[j] += x * x;
            }
        }
        for (j, &value) in chunks.remainder().iter().enumerate() {
            let x = widen(value);
            lanes[j] += x * x;
        }
    }

    /// The task's total: the lanes added in order, from 0.
    pub fn total(&self) -> f64 {
        self.0.iter().fold(0.0, |sum, &lane| sum + lane)
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

    /// The order written out element by element.
    fn by_definition(values: &[f64]) -> f64 {
        let mut lanes = [0f64; 8];
        for (j, &x) in values.iter().enumerate() {
            lanes[j % 8] += x * x;
        }
        lanes.iter().fold(0.0, |s, &l| s + l)
    }

    #[test]
    fn the_sum_is_the_documented_order_for_every_dtype_and_split() {
        let n = 1000 + 3;
        let raw: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0).collect();
        let want32 = by_definition(&raw.iter().map(|&x| x as f64).collect::<Vec<_>>());
        for split in [8, 64, 256, 512, 1000] {
            let mut s = Squares::default();
            s.add(&raw[..split], true);
            s.add(&raw[split..], true);
            assert_eq!(s.total().to_bits(), want32.to_bits(), "float32, split at {split}");
        }
        let wide: Vec<f64> = raw.iter().map(|&x| x as f64 * 1.1).collect();
        let mut s = Squares::default();
        s.add(&wide, true);
        assert_eq!(s.total().to_bits(), by_definition(&wide).to_bits(), "float64");
        for simd in [false, true] {
            let b: Vec<bf16> = raw.iter().map(|&x| bf16::from_f32(x)).collect();
            let h: Vec<f16> = raw.iter().map(|&x| f16::from_f32(x)).collect();
            let (mut sb, mut sh) = (Squares::default(), Squares::default());
            sb.add(&b, simd);
            sh.add(&h, simd);
            let want_b = by_definition(&b.iter().map(|x| x.to_f64()).collect::<Vec<_>>());
            let want_h = by_definition(&h.iter().map(|x| x.to_f64()).collect::<Vec<_>>());
            assert_eq!(
                (sb.total().to_bits(), sh.total().to_bits()),
                (want_b.to_bits(), want_h.to_bits()),
                "simd {simd}"
            );
        }
    }
}
