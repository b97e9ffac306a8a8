//! Keras 3's gradient accumulation on the host (docs/numerics.md §25): the accumulators' pass
//! of each call, and the moving averages of the calls that step no variable.

use crate::dtype::TensorMut;
use crate::float::{Ftz, Real};
use crate::kernels::{self, StepHyper, StepScalars};
use crate::tensor::Gradient;

/// One gradient into its accumulator `acc`: `acc + g`, or with `average_over` the update call's
/// `(g + acc) / steps`. A sparse gradient is the dense tensor TF makes of it: zeros, and each
/// listed row the sum of its occurrences in order, starting from +0.
pub(super) fn gradient<F: Real>(
    acc: &mut [F],
    gradient: Gradient<'_>,
    row_len: usize,
    average_over: Option<i64>,
    sparse_rows: &mut Vec<(usize, usize)>,
) {
    let steps = average_over.map(|n| Ftz::new(F::from_i64(n)));
    let combine = |a: Ftz<F>, g: Ftz<F>| match steps {
        Some(steps) => kernels::averaged(g, a, steps),
        None => kernels::accumulated(a, g),
    };
    let values = gradient.values().typed::<F>().unwrap_or_default();
    match gradient {
        Gradient::Dense(_) => {
            for (a, &g) in acc.iter_mut().zip(values) {
                *a = combine(Ftz::new(*a), Ftz::new(g)).get();
            }
        }
        Gradient::Sparse { indices, .. } => {
            // A row TF's dense tensor holds as +0 (untouched, or whose occurrences sum to +0)
            // adds +0: only a -0 accumulator changes (to +0). A listed row's sum starts from +0,
            // so it is never -0, and adding it to the accumulator after that canonicalization is
            // adding it to the accumulator itself. The division, if any, comes last, for all.
            for a in acc.iter_mut() {
                *a = kernels::accumulated(Ftz::new(*a), Ftz::ZERO).get();
            }
            let rows = super::sorted_rows(sparse_rows, indices, values, row_len);
            for group in rows.entries.chunk_by(|a, b| a.0 == b.0) {
                let row = group[0].0;
                for j in 0..row_len {
                    let sum = group
                        .iter()
                        .fold(Ftz::<F>::ZERO, |sum, &(_, pos)| sum + Ftz::new(rows.values[pos * row_len + j]));
                    let a = &mut acc[row * row_len + j];
                    *a = kernels::accumulated(Ftz::new(*a), sum).get();
                }
            }
            if let Some(steps) = steps {
                for a in acc.iter_mut() {
                    *a = (Ftz::new(*a) / steps).get();
                }
            }
        }
    }
}

/// Keras 3's moving-average update of one variable outside its step; with `overwrite`, the
/// variable takes the new average.
pub(super) fn moving_average<F: Real>(values: &mut [F], average: TensorMut<'_>, hyper: &StepHyper, overwrite: bool) {
    let Some(average) = F::unwrap(average) else { return };
    let s = StepScalars::<F>::new(hyper);
    for (x, avg) in values.iter_mut().zip(average.iter_mut()) {
        let new = kernels::moving_average(&s, Ftz::<F>::new(*avg), Ftz::new(*x));
        *avg = new.get();
        if overwrite {
            *x = new.get();
        }
    }
}
