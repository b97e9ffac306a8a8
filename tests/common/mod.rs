//! Helpers shared by the integration tests.
#![allow(dead_code)] // each integration test uses its part

/// A deterministic pseudo-random sequence in [-1, 1) (a 64-bit LCG), so tests need no RNG crate.
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One `apply_gradients` call over float32 variables 0, 1, …: variable i's gradient is
/// `noise(seed * 10 + i)` where `with` (when given) says so, and the others are listed without one.
pub fn noise_step<V: AsMut<[f32]>>(
    opt: &mut adamw::Optimizer,
    values: &mut [V],
    seed: u64,
    with: Option<&[bool]>,
) -> adamw::Result<i64> {
    let grads: Vec<Vec<f32>> =
        values.iter_mut().enumerate().map(|(i, v)| noise(seed * 10 + i as u64, v.as_mut().len())).collect();
    let mut entries = dense_entries(values, &grads);
    for (i, entry) in entries.iter_mut().enumerate() {
        if with.is_some_and(|w| !w[i]) {
            entry.gradient = None;
        }
    }
    opt.apply_gradients(&mut entries[..])
}

/// An entry for each of `values` (variables 0, 1, …), variable i with the dense float32
/// gradient `grads[i]` (as many entries as the shorter of the two lists).
pub fn dense_entries<'a, V: AsMut<[f32]>>(values: &'a mut [V], grads: &'a [Vec<f32>]) -> Vec<adamw::GradientEntry<'a>> {
    values
        .iter_mut()
        .zip(grads)
        .enumerate()
        .map(|(i, (v, g))| adamw::GradientEntry {
            variable: i,
            values: adamw::TensorMut::F32(v.as_mut()),
            gradient: Some(adamw::Gradient::Dense(adamw::TensorRef::F32(g))),
        })
        .collect()
}

use std::sync::{Arc, Barrier, Mutex};

/// An in-process all-reduce between ranks on threads: every rank gets the sum in rank order.
pub struct Collective {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
}

impl Collective {
    pub fn new(ranks: usize) -> Arc<Self> {
        Arc::new(Collective { barrier: Barrier::new(ranks), slots: Mutex::new(vec![Vec::new(); ranks]) })
    }

    pub fn all_reduce(&self, rank: usize, values: &mut [f64]) {
        self.slots.lock().unwrap()[rank] = values.to_vec();
        self.barrier.wait();
        {
            let slots = self.slots.lock().unwrap();
            for (i, v) in values.iter_mut().enumerate() {
                *v = slots.iter().map(|s| s[i]).fold(0.0, |a, b| a + b);
            }
        }
        self.barrier.wait();
    }

    /// The mesh of `rank`.
    pub fn mesh(self: &Arc<Self>, rank: usize) -> adamw::Mesh {
        let c = self.clone();
        adamw::Mesh::new(move |v: &mut [f64]| {
            c.all_reduce(rank, v);
            Ok(())
        })
    }
}

/// Runs `f(rank, mesh)` for each of `ranks` ranks, each on a thread of its own with its mesh of
/// one in-process collective, and returns their results in rank order.
pub fn on_ranks<T: Send>(ranks: usize, f: impl Fn(usize, adamw::Mesh) -> T + Sync) -> Vec<T> {
    let collective = Collective::new(ranks);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let (mesh, f) = (collective.mesh(rank), &f);
                scope.spawn(move || f(rank, mesh))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The report's order written out: within each task (the update pass's: one up to 32768
/// elements, else tasks of max(32768, ceil(n / 256) rounded up to 512) elements), groups of 512
/// elements; in a group, element j squared and added into float32 lane j % 32; after each group
/// its lanes widened and added into 32 float64 lanes; those added in order, the tasks too.
/// Each float32 operation's subnormal operands and results count as zero (flush-to-zero).
/// (`values` are float32 values, or 16-bit ones widened.)
pub fn documented_sum(values: &[f32]) -> f64 {
    documented_sum_in(&values.iter().map(|&x| x as f64).collect::<Vec<_>>(), false)
}

/// [`documented_sum`] of float64 values: float64 group lanes.
pub fn documented_sum_wide(values: &[f64]) -> f64 {
    documented_sum_in(values, true)
}

/// The order in float32 group lanes, or float64 ones (`wide`).
pub fn documented_sum_in(values: &[f64], wide: bool) -> f64 {
    let min_normal = if wide { f64::MIN_POSITIVE } else { f32::MIN_POSITIVE as f64 };
    let flush = |x: f64| if x.abs() < min_normal { 0.0f64.copysign(x) } else { x };
    let round = |x: f64| flush(if wide { x } else { x as f32 as f64 });
    let n = values.len();
    let task = if n <= 32768 { n.max(1) } else { 32768usize.max(n.div_ceil(256).next_multiple_of(512)) };
    let mut total = 0.0;
    for chunk in values.chunks(task) {
        let mut lanes = [0f64; 32];
        for group in chunk.chunks(512) {
            let mut group_lanes = [0f64; 32];
            for (j, &x) in group.iter().enumerate() {
                let x = flush(x);
                group_lanes[j % 32] = round(group_lanes[j % 32] + round(x * x));
            }
            for j in 0..32 {
                lanes[j] += group_lanes[j];
            }
        }
        total += lanes.iter().fold(0.0, |s, &l| s + l);
    }
    total
}
