//! The dense steps of a call's variables as one run of tasks (multi-tensor, as torch's
//! `_foreach` and fused kernels do): the variables are laid end to end and the whole is cut
//! into tasks by its length alone ([`run_tasks`]), so a step of many small variables is one
//! hand-off to the other threads rather than one each, and a task may step the end of one
//! variable and the start of the next. The elements of a dense step are independent, so the
//! cut never changes a bit.

use std::mem::ManuallyDrop;

use half::{bf16, f16};

use super::lanes::DenseLanes;
use super::loops::{CHUNK, DensePart, MAX_TASKS};
use crate::error::{Error, Result};
use crate::float::Real;
use crate::parallel::Workers;
use crate::simd::simd_level;
use crate::squares::GROUP;

/// One variable's part of a run, in its dtype.
pub(crate) enum DenseWork<'a> {
    F32(DensePart<'a, f32>),
    F64(DensePart<'a, f64>),
    Bf16(DensePart<'a, bf16>),
    F16(DensePart<'a, f16>),
}

/// The element types a run takes.
pub(crate) trait Batched: Real + DenseLanes {
    fn work(part: DensePart<'_, Self>) -> DenseWork<'_>;
}

macro_rules! batched {
    ($($t:ty => $variant:ident),*) => {$(
        impl Batched for $t {
            fn work(part: DensePart<'_, Self>) -> DenseWork<'_> {
                DenseWork::$variant(part)
            }
        }
    )*};
}
batched!(f32 => F32, f64 => F64, bf16 => Bf16, f16 => F16);

impl DenseWork<'_> {
    fn len(&self) -> usize {
        match self {
            DenseWork::F32(p) => p.len(),
            DenseWork::F64(p) => p.len(),
            DenseWork::Bf16(p) => p.len(),
            DenseWork::F16(p) => p.len(),
        }
    }

    /// # Safety
    /// As [`DensePart::step`]: no two calls in flight step overlapping ranges.
    unsafe fn step(&self, start: usize, end: usize, isa: crate::simd::SimdLevel) {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                DenseWork::F32(p) => p.step(start, end, isa),
                DenseWork::F64(p) => p.step(start, end, isa),
                DenseWork::Bf16(p) => p.step(start, end, isa),
                DenseWork::F16(p) => p.step(start, end, isa),
            }
        }
    }
}

/// A run being gathered: each variable's part with the place of its first element.
pub(crate) struct DenseBatch<'a> {
    parts: Vec<(usize, DenseWork<'a>)>,
    total: usize,
}

/// The room for a run's parts, kept between steps: reserved when variables are built, so that
/// a step allocates nothing.
#[derive(Default)]
pub(crate) struct BatchRoom(Vec<(usize, DenseWork<'static>)>);

impl BatchRoom {
    /// Room for the parts of `variables` variables.
    pub fn reserve(&mut self, variables: usize) -> Result<()> {
        // The room is empty between steps, so this makes its capacity `variables` or more.
        self.0
            .try_reserve_exact(variables)
            .map_err(|_| Error::OutOfMemory(format!("no room to step {variables} variables")))
    }
}

/// `parts`' allocation, emptied, for parts of another lifetime.
fn recycle<'a, 'b>(parts: Vec<(usize, DenseWork<'a>)>) -> Vec<(usize, DenseWork<'b>)> {
    let mut parts = ManuallyDrop::new(parts);
    parts.clear();
    // SAFETY: the element types differ in lifetime only (so in nothing of their layout), the
    // vector is empty (no part outlives its borrows), and the allocation passes whole to the
    // new vector, the old one forgotten.
    unsafe { Vec::from_raw_parts(parts.as_mut_ptr().cast(), 0, parts.capacity()) }
}

impl<'a> DenseBatch<'a> {
    pub fn new(room: BatchRoom) -> Self {
        DenseBatch { parts: recycle(room.0), total: 0 }
    }

    pub fn push<F: Batched>(&mut self, part: DensePart<'a, F>) {
        let len = part.len();
        if len > 0 {
            self.parts.push((self.total, F::work(part)));
            self.total += len;
        }
    }

    /// Steps every part, the whole cut into tasks that `workers` run; gives the room back.
    pub fn run(self, workers: &Workers) -> BatchRoom {
        let isa = simd_level();
        let parts = &self.parts;
        let (total, tasks) = (self.total, run_tasks(self.total));
        workers.run(tasks, &|task| {
            let (start, end) = run_task_range(total, tasks, task);
            let first = parts.partition_point(|(at, work)| at + work.len() <= start);
            for (at, work) in parts[first..].iter().take_while(|(at, _)| *at < end) {
                let (lo, hi) = (start.max(*at) - at, end.min(at + work.len()) - at);
                // SAFETY: the parts lie end to end without overlap, and each task steps its own
                // range of the whole.
                unsafe { work.step(lo, hi, isa) }
            }
        });
        BatchRoom(recycle(self.parts))
    }
}

/// The tasks a run of `total` elements is cut into: one up to `CHUNK` elements (on the calling
/// thread), else about one per `CHUNK` elements, at most `MAX_TASKS`, as for one variable, but a
/// count that splits evenly (a multiple of 12 from 12 up, so that the shares of 2, 3, 4 and 6
/// threads under a static schedule are equal; an even count below) and tasks of equal lengths
/// ([`run_task_range`]) rather than full tasks and a short last one. A static schedule (an
/// OpenMP hook's, the pool's shares) then gives every thread the same number of elements, to
/// within two groups: OpenMP's `schedule(static)` over 96 tasks of 32,768 and a short one had given
/// the first of two threads 2% more than half of a 3.15M-element model, and over 100 tensors of
/// 1K (four tasks, the last an eighth of one) 28% more.
pub(crate) fn run_tasks(total: usize) -> usize {
    if total <= CHUNK {
        return 1;
    }
    let tasks = (total / CHUNK).clamp(2, MAX_TASKS);
    match tasks {
        12.. => tasks - tasks % 12,
        _ => tasks - tasks % 2,
    }
}

/// The elements of task `task` of `tasks` ([`run_tasks`]) over a run of `total`: the run cut at
/// `total * k / tasks`, rounded down to a multiple of `GROUP`; each task of a run of more than
/// one has `CHUNK / 2 - GROUP` elements or more.
pub(crate) fn run_task_range(total: usize, tasks: usize, task: usize) -> (usize, usize) {
    let cut = |k: usize| {
        if k >= tasks { total } else { (total as u128 * k as u128 / tasks as u128) as usize / GROUP * GROUP }
    };
    (cut(task), cut(task + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_cut_into_tasks_of_equal_lengths_that_cover_it_once() {
        // (total elements, tasks): one task up to a chunk, two up to four chunks; a
        // 3.15M-element model's 96.1 chunks are 96 tasks; the count stops at the largest
        // multiple of 12 below MAX_TASKS.
        let cases = [
            (1, 1),
            (CHUNK, 1),
            (CHUNK + 1, 2),
            (2 * CHUNK - 1, 2),
            (2 * CHUNK, 2),
            (3 * CHUNK + 5, 2),
            (102_400, 2),
            (11 * CHUNK + 100, 10),
            (12 * CHUNK, 12),
            (23 * CHUNK, 12),
            (3_149_568, 96),
            (1 << 20, 24),
            (1 << 24, 252),
            (1 << 30, 252),
        ];
        for (total, expected) in cases {
            let tasks = run_tasks(total);
            assert_eq!(tasks, expected, "tasks of a run of {total}");
            let mut next = 0;
            for task in 0..tasks {
                let (start, end) = run_task_range(total, tasks, task);
                assert_eq!(start, next, "task {task} of {total} starts where the one before ended");
                assert!(end - start >= (total / tasks).min(CHUNK / 2 - GROUP), "task {task} of {total}");
                assert!(end - start <= total / tasks + GROUP, "task {task} of {total} is no longer than its share");
                if task + 1 < tasks {
                    assert_eq!(end % GROUP, 0, "task {task} of {total} ends on a group");
                }
                next = end;
            }
            assert_eq!(next, total, "the tasks of {total} end at its end");
            // What the cut is for: the static shares of 2, 3, 4 and 6 threads (the tasks split
            // into equal runs) differ by less than two groups (each cut lies less than a group
            // before its exact place), wherever the count allows.
            for threads in [2, 3, 4, 6].into_iter().filter(|t| tasks.is_multiple_of(*t)) {
                let share = |p: usize| {
                    let (lo, hi) = (tasks * p / threads, tasks * (p + 1) / threads);
                    run_task_range(total, tasks, hi - 1).1 - run_task_range(total, tasks, lo).0
                };
                let shares: Vec<usize> = (0..threads).map(share).collect();
                let (least, most) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(most - least < 2 * GROUP, "{threads} threads' shares of {total}: {shares:?}");
            }
        }
    }
}
