//! The CPU backend: the element functions of `kernels` run over a variable's slices. Large
//! variables are split in halves with `rayon::join` down to chunks of about `CHUNK` elements; the
//! elements are independent, so the result is the same bits for any number of threads.
//! Nothing here allocates.

use super::{Clip, StepScalars, VariableOps, dense_element, sparse_element};
use crate::float::{Ftz, Real};

/// Below this many elements a variable is updated on the calling thread.
const CHUNK: usize = 1 << 15;

/// A variable's values and its optimizer slots, all of one length; `vhat` and `average` are
/// empty when amsgrad / EMA are off.
pub struct Lanes<'a, F> {
    pub var: &'a mut [F],
    pub m: &'a mut [F],
    pub v: &'a mut [F],
    pub vhat: &'a mut [F],
    pub average: &'a mut [F],
}

fn split_slot<F>(slot: &mut [F], mid: usize) -> (&mut [F], &mut [F]) {
    if slot.is_empty() { (slot, Default::default()) } else { slot.split_at_mut(mid) }
}

impl<'a, F> Lanes<'a, F> {
    fn len(&self) -> usize {
        self.var.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (var_l, var_r) = self.var.split_at_mut(mid);
        let (m_l, m_r) = self.m.split_at_mut(mid);
        let (v_l, v_r) = self.v.split_at_mut(mid);
        let (vhat_l, vhat_r) = split_slot(self.vhat, mid);
        let (avg_l, avg_r) = split_slot(self.average, mid);
        (
            Lanes { var: var_l, m: m_l, v: v_l, vhat: vhat_l, average: avg_l },
            Lanes { var: var_r, m: m_r, v: v_r, vhat: vhat_r, average: avg_r },
        )
    }

    fn amsgrad(&self) -> bool {
        !self.vhat.is_empty()
    }

    fn ema(&self) -> bool {
        !self.average.is_empty()
    }
}

/// Picks the monomorphized loop for the amsgrad / EMA combination in force.
macro_rules! dispatch_modes {
    ($lanes:expr, $f:ident ( $($arg:expr),* )) => {
        match ($lanes.amsgrad(), $lanes.ema()) {
            (false, false) => $f::<F, false, false>($($arg),*),
            (true, false) => $f::<F, true, false>($($arg),*),
            (false, true) => $f::<F, false, true>($($arg),*),
            (true, true) => $f::<F, true, true>($($arg),*),
        }
    };
}

/// The dense step over a whole variable: decay, moments, update, EMA, in one pass.
pub fn dense_step<F: Real>(s: &StepScalars<F>, ops: VariableOps, clip: Clip<F>, grad: &[F], lanes: Lanes<'_, F>) {
    assert_eq!(grad.len(), lanes.len(), "gradient and variable lengths are checked before the step");
    dispatch_modes!(lanes, dense_parallel(s, ops, clip, grad, lanes))
}

fn dense_parallel<F: Real, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F>,
    ops: VariableOps,
    clip: Clip<F>,
    grad: &[F],
    lanes: Lanes<'_, F>,
) {
    let n = lanes.len();
    if n > 2 * CHUNK {
        let mid = n / 2;
        let (left, right) = lanes.split_at(mid);
        let (grad_l, grad_r) = grad.split_at(mid);
        rayon::join(
            || dense_parallel::<F, AMSGRAD, EMA>(s, ops, clip, grad_l, left),
            || dense_parallel::<F, AMSGRAD, EMA>(s, ops, clip, grad_r, right),
        );
        return;
    }
    let Lanes { var, m, v, vhat, average } = lanes;
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    let (mut no_vhat, mut no_average) = (F::ZERO, F::ZERO);
    for i in 0..n {
        let vh = if AMSGRAD { &mut vhat[i] } else { &mut no_vhat };
        let avg = if EMA { &mut average[i] } else { &mut no_average };
        let g = clip.apply(Ftz::new(grad[i]));
        dense_element::<F, AMSGRAD, EMA>(s, ops, g, &mut var[i], &mut m[i], &mut v[i], vh, avg);
    }
}

/// A sparse gradient after validation: `entries` holds `(row, position)` for every index the
/// caller gave, sorted by row and then by position, so duplicates of a row are adjacent and in
/// the caller's order. `values` holds `row_len` numbers per position.
#[derive(Clone, Copy)]
pub struct SparseRows<'a, F> {
    pub entries: &'a [(usize, usize)],
    pub values: &'a [F],
    pub row_len: usize,
}

/// The sparse step over a whole variable or a shard of one (spec §1.4, §1.6): every element
/// decays; elements of rows with a gradient also receive their duplicates' sum (from +0.0, in
/// the caller's order). `first_element` is the flat index of `lanes[0]` in the whole variable
/// (a shard's offset, else 0); rows are the whole variable's.
pub fn sparse_step<F: Real>(
    s: &StepScalars<F>,
    ops: VariableOps,
    clip: Clip<F>,
    rows: SparseRows<'_, F>,
    first_element: usize,
    lanes: Lanes<'_, F>,
) {
    dispatch_modes!(lanes, sparse_parallel(s, ops, clip, rows, first_element, lanes))
}

fn sparse_parallel<F: Real, const AMSGRAD: bool, const EMA: bool>(
    s: &StepScalars<F>,
    ops: VariableOps,
    clip: Clip<F>,
    rows: SparseRows<'_, F>,
    first: usize,
    lanes: Lanes<'_, F>,
) {
    let n = lanes.len();
    let row_len = rows.row_len.max(1);
    if n > 2 * CHUNK {
        let mid = n / 2;
        let (left, right) = lanes.split_at(mid);
        // A row cut by the split is needed on both sides.
        let last_row_left = (first + mid - 1) / row_len;
        let first_row_right = (first + mid) / row_len;
        let left_end = rows.entries.partition_point(|&(row, _)| row <= last_row_left);
        let right_start = rows.entries.partition_point(|&(row, _)| row < first_row_right);
        let (entries_l, entries_r) = (&rows.entries[..left_end], &rows.entries[right_start..]);
        rayon::join(
            || sparse_parallel::<F, AMSGRAD, EMA>(s, ops, clip, SparseRows { entries: entries_l, ..rows }, first, left),
            || {
                sparse_parallel::<F, AMSGRAD, EMA>(
                    s,
                    ops,
                    clip,
                    SparseRows { entries: entries_r, ..rows },
                    first + mid,
                    right,
                )
            },
        );
        return;
    }
    let Lanes { var, m, v, vhat, average } = lanes;
    let (mut no_vhat, mut no_average) = (F::ZERO, F::ZERO);
    // The gradient rows of the current row are entries[group.0..group.1].
    let group_of = |row: usize, from: usize| {
        let start = from + rows.entries[from..].partition_point(|&(r, _)| r < row);
        let end = start + rows.entries[start..].partition_point(|&(r, _)| r == row);
        (start, end)
    };
    let (mut row, mut col) = (first / row_len, first % row_len);
    let mut group = group_of(row, 0);
    for i in 0..n {
        if col == row_len {
            (row, col) = (row + 1, 0);
            group = group_of(row, group.1);
        }
        let entries = &rows.entries[group.0..group.1];
        let summed = (!entries.is_empty()).then(|| {
            entries
                .iter()
                .fold(Ftz::ZERO, |acc, &(_, pos)| acc + clip.apply(Ftz::new(rows.values[pos * row_len + col])))
        });
        let vh = if AMSGRAD { &mut vhat[i] } else { &mut no_vhat };
        let avg = if EMA { &mut average[i] } else { &mut no_average };
        sparse_element::<F, AMSGRAD, EMA>(s, ops, summed, &mut var[i], &mut m[i], &mut v[i], vh, avg);
        col += 1;
    }
}
