//! The step report's sums of squares of a gradient, taken in the update pass when no clip mode
//! computes a norm (docs/numerics.md §23). Not Keras' order (that is [`crate::reduction`]'s): an
//! order of libadamw's own, fixed by the gradient's length alone, so that the sum is the same
//! bits on every SIMD level, for every thread count and whoever runs the tasks.
//!
//! The order: a pass's task (the update pass's, cut by the length alone) is taken in groups of
//! 512 elements from its start (the last may be shorter). Within a group, element `j` is
//! squared and added into group lane `j % 32`, in element order from 0, in the gradient's
//! arithmetic type (float32 for float32 and the 16-bit dtypes, widened exactly; float64 for
//! float64), each operation rounded. After each group its 32 lanes are widened to float64 and
//! added into 32 float64 task lanes. The task's total is `((0 + L0) + L1) + … + L31`, and the
//! variable's is the tasks' totals added in task order, from 0. (Each float32 lane sums at most
//! sixteen squares before float64 takes over, so the norm is good to about 1e-6 relative.)

use crate::dtype::Shared;
use crate::float::Real;

/// Elements per group (a caller's pieces are multiples of it), and lanes per group.
pub(crate) const GROUP: usize = 512;
const LANES: usize = 32;

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

impl Squares {
    /// Adds the squares of `values`, the next elements of the task; every call but the task's
    /// last must give a multiple of 512 values. Inlined, so that it is compiled for the SIMD
    /// level of the loop that calls it.
    #[inline(always)]
    pub fn add<G: Real>(&mut self, values: &[G], simd: bool) {
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

    /// The groups' loop; the lanes' additions are in element order, which vectorizing across
    /// the lanes does not change.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // one index into a row and the lanes reads best
    fn add_groups<M: Wide>(&mut self, values: &[M]) {
        for group in values.chunks(GROUP) {
            let mut lanes = [M::ZERO; LANES];
            let full = group.len() / LANES * LANES;
            for row in group[..full].chunks_exact(LANES) {
                let row: &[M; LANES] = row.try_into().expect("a row of LANES values");
                for j in 0..LANES {
                    lanes[j] = lanes[j] + row[j] * row[j];
                }
            }
            for (lane, &x) in lanes.iter_mut().zip(&group[full..]) {
                *lane = *lane + x * x;
            }
            for j in 0..LANES {
                self.0[j] += lanes[j].wide();
            }
        }
    }

    /// The task's total: the lanes added in order, from 0.
    pub fn total(&self) -> f64 {
        self.0.iter().fold(0.0, |sum, &lane| sum + lane)
    }
}

/// The arithmetic of a group's lanes: float32 or float64.
trait Wide: Copy + 'static + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    const ZERO: Self;
    fn wide(self) -> f64;
}

impl Wide for f32 {
    const ZERO: Self = 0.0;
    fn wide(self) -> f64 {
        self as f64
    }
}

impl Wide for f64 {
    const ZERO: Self = 0.0;
    fn wide(self) -> f64 {
        self
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

    /// The order written out element by element, float32 group lanes (`wide`: float64 ones).
    fn by_definition(values: &[f64], wide: bool) -> f64 {
        let mut task = [0f64; 32];
        for group in values.chunks(512) {
            let mut lanes = [0f64; 32];
            for (j, &x) in group.iter().enumerate() {
                lanes[j % 32] =
                    if wide { lanes[j % 32] + x * x } else { (lanes[j % 32] as f32 + (x as f32 * x as f32)) as f64 };
            }
            for j in 0..32 {
                task[j] += lanes[j];
            }
        }
        task.iter().fold(0.0, |s, &l| s + l)
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
