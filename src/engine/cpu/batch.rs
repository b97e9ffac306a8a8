//! The dense steps of a call's variables as one run of tasks (multi-tensor, as torch's
//! `_foreach` and fused kernels do): the variables are laid end to end and the whole is cut
//! into tasks by its length alone (`loops::task_count`), so a step of many small variables is
//! one hand-off to the other threads rather than one each, and a task may step the end of one
//! variable and the start of the next. The elements of a dense step are independent, so the
//! cut never changes a bit.

use std::mem::ManuallyDrop;

use half::{bf16, f16};

use super::lanes::DenseLanes;
use super::loops::{DensePart, for_each_task};
use crate::error::{Error, Result};
use crate::float::Real;
use crate::parallel::Workers;
use crate::simd::simd_level;

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
        for_each_task(workers, self.total, &|start, end| {
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
