//! Eigen's sums, as TensorFlow's CPU kernels take them for the clip norms (docs/numerics.md §8,
//! §17), and the same sums over a tensor sharded across ranks, exact (§14).

use std::marker::PhantomData;
use std::ops::Range;

use crate::float::{FlushToZero, Ftz, HARDWARE_FLUSH as HW, Real};
use crate::parallel::{Disjoint, Workers};
use crate::simd::{self, Kernel, SimdLevel, simd_level};

/// Subtrees of Eigen's tree up to this many elements are one task; a larger tree is cut into
/// subtrees of at most this size (or of `n / MAX_SUBTREES * 2` for the largest tensors).
const SUBTREE_TASK: usize = 1 << 17;
/// The most subtrees one sum is cut into (their sums are kept on the calling thread's stack).
const MAX_SUBTREES: usize = 512;

/// `tf.reduce_sum` over `n` values `x(first)..x(first + n - 1)` (docs/numerics.md §8, §17):
/// Eigen's sum of the dtype ([`sum_eigen_in`]), or for bfloat16, whose sum TF casts, Eigen's
/// float32 sum of the values rounded once.
pub fn reduce_sum_in<F: Real>(x: &impl Fn(usize) -> Ftz<F>, first: usize, n: usize) -> Ftz<F> {
    if sums_in_f32::<F>(false) {
        let wide = sum_eigen_in(&|i| Ftz::new(x(i).get().to_f32()), first, n);
        return Ftz::new(F::from_f32(wide.get()));
    }
    sum_eigen_in(x, first, n)
}

/// Eigen's sum (`SumReducer`) of `n` values `x(first)..x(first + n - 1)` in the exact order of
/// its full reducer on the x86-64 wheels (docs/numerics.md §8): a tree of halves split on packet
/// boundaries down to leaves of `PACKET * LEAF` elements, each summed with four interleaved packet
/// accumulators, then one packet, then a scalar tail. (The lane loops index like Eigen's packets.)
pub fn sum_eigen_in<F: Real>(x: &impl Fn(usize) -> Ftz<F>, first: usize, n: usize) -> Ftz<F> {
    match halves::<F>(first, n) {
        Some((n_left, split)) => {
            combine_halves(sum_eigen_in(x, first, n_left), || (n_left < n).then(|| sum_eigen_in(x, split, n - n_left)))
        }
        None => leaf_sum(x, first, n),
    }
}

/// An inner node of Eigen's tree: its left half's sum plus its right half's, if it has one.
#[inline(always)]
fn combine_halves<F: Real>(left: Ftz<F>, right: impl FnOnce() -> Option<Ftz<F>>) -> Ftz<F> {
    let acc = Ftz::ZERO + left;
    match right() {
        Some(r) => acc + r,
        None => acc,
    }
}

/// Eigen's tree over `n` values summed by `subtree(first, n)` (a subtree's sum, taken serially):
/// a large tree is cut into subtrees by its length alone, which `workers` sums as tasks, and
/// the nodes above them are combined on the calling thread in the tree's order (same bits).
fn tree_in_tasks<F: Real>(workers: &Workers, n: usize, subtree: &(impl Fn(usize, usize) -> Ftz<F> + Sync)) -> Ftz<F> {
    let cut = SUBTREE_TASK.max(n.div_ceil(MAX_SUBTREES / 4));
    if !workers.parallel() || n <= cut {
        return subtree(0, n);
    }
    // Halves are within a packet of equal, so every subtree holds over a quarter of `cut`.
    let mut nodes = [(0usize, 0usize); MAX_SUBTREES];
    let mut count = 0;
    walk_subtrees::<F>(0, n, cut, &mut |first, len| {
        nodes[count] = (first, len);
        count += 1;
    });
    let mut sums = [Ftz::<F>::ZERO; MAX_SUBTREES];
    let shared = Disjoint::new(&mut sums[..count]);
    workers.run(count, &|task| {
        let (first, len) = nodes[task];
        // SAFETY: task `task` writes element `task` only.
        let slot = unsafe { shared.range(task, task + 1) };
        slot[0] = subtree(first, len);
    });
    let mut next = sums.iter().copied();
    combine_subtrees::<F>(0, n, cut, &mut || next.next().unwrap_or(Ftz::ZERO))
}

/// Calls `subtree` for each subtree of at most `cut` elements (or a leaf), in the tree's order.
fn walk_subtrees<F: Real>(first: usize, n: usize, cut: usize, subtree: &mut impl FnMut(usize, usize)) {
    match halves::<F>(first, n) {
        Some((n_left, split)) if n > cut => {
            walk_subtrees::<F>(first, n_left, cut, subtree);
            if n_left < n {
                walk_subtrees::<F>(split, n - n_left, cut, subtree);
            }
        }
        _ => subtree(first, n),
    }
}

/// The tree's nodes above [`walk_subtrees`]' subtrees, whose sums `next` gives in order.
fn combine_subtrees<F: Real>(first: usize, n: usize, cut: usize, next: &mut impl FnMut() -> Ftz<F>) -> Ftz<F> {
    match halves::<F>(first, n) {
        Some((n_left, split)) if n > cut => {
            let left = combine_subtrees::<F>(first, n_left, cut, next);
            combine_halves(left, || (n_left < n).then(|| combine_subtrees::<F>(split, n - n_left, cut, next)))
        }
        _ => next(),
    }
}

/// [`sum_eigen_in`] of `term(w)` over every value of a whole tensor, taken on slices: the same
/// tree and bits, each leaf one loop compiled for the CPU's SIMD level (so that it runs at
/// memory speed). A leaf's values are converted a window at a time by `widen` (into `W`, the
/// type `term` reads: a 16-bit dtype's arithmetic type, or float32 for a master copy) and summed
/// in `F`'s arithmetic as the type the loops compute with (`F::Math`, the same bits), under TF's
/// flushing mode ([`FlushToZero`]; `term` computes in that mode, [`HW`]). The subtrees of
/// large trees are tasks for `workers`.
pub fn sum_terms<F: Real, G: Copy + Sync, W: Copy + Default>(
    workers: &Workers,
    values: &[G],
    widen: &(impl Fn(&[G], &mut [W]) + Sync),
    term: &(impl Fn(W) -> Ftz<F::Math, HW> + Sync),
) -> Ftz<F> {
    let leaves = Leaves { values, widen, term, level: simd_level(), types: PhantomData };
    tree_in_tasks(workers, values.len(), &|first, n| leaves.tree(first, n))
}

/// What [`sum_terms`] sums and how.
struct Leaves<'a, F, G, W, X, T> {
    values: &'a [G],
    widen: &'a X,
    term: &'a T,
    level: SimdLevel,
    /// The tree's dtype, and the type `widen` converts to.
    types: PhantomData<fn() -> (F, W)>,
}

impl<F, G, W, X, T> Clone for Leaves<'_, F, G, W, X, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F, G, W, X, T> Copy for Leaves<'_, F, G, W, X, T> {}

impl<F: Real, G: Copy + Sync, W: Copy + Default, X: Fn(&[G], &mut [W]) + Sync, T: Fn(W) -> Ftz<F::Math, HW> + Sync>
    Leaves<'_, F, G, W, X, T>
{
    /// Eigen's tree over `first..first + n`, on the calling thread.
    fn tree(self, first: usize, n: usize) -> Ftz<F> {
        let Some((n_left, split)) = halves::<F>(first, n) else {
            let _flush = FlushToZero::new();
            return simd::dispatch(self.level, Leaf { leaves: self, first, n });
        };
        combine_halves(self.tree(first, n_left), || (n_left < n).then(|| self.tree(split, n - n_left)))
    }
}

/// One leaf of [`sum_terms`], as a kernel for [`simd::dispatch`].
struct Leaf<'a, F, G, W, X, T> {
    leaves: Leaves<'a, F, G, W, X, T>,
    first: usize,
    n: usize,
}

impl<F: Real, G: Copy, W: Copy + Default, X: Fn(&[G], &mut [W]), T: Fn(W) -> Ftz<F::Math, HW>> Kernel
    for Leaf<'_, F, G, W, X, T>
{
    type Output = Ftz<F>;

    #[inline(always)]
    fn run(self) -> Ftz<F> {
        let values = &self.leaves.values[self.first..self.first + self.n];
        let (widen, term) = (self.leaves.widen, self.leaves.term);
        match F::PACKET {
            8 => slice_leaf::<F, G, W, _, _, 8>(values, widen, term),
            4 => slice_leaf::<F, G, W, _, _, 4>(values, widen, term),
            _ => unreachable!("Eigen packets here have 4 or 8 lanes"),
        }
    }
}

/// Values a leaf converts at a time: a multiple of every `4 * P`.
const WINDOW: usize = 256;

/// [`leaf_sum`] over a slice, with packets of `P` lanes: four interleaved packet accumulators,
/// then one packet, then a scalar tail, then the packet's lanes. Every loop has a fixed length,
/// so that the packets' lanes become vector lanes.
#[inline(always)]
fn slice_leaf<
    F: Real,
    G: Copy,
    W: Copy + Default,
    X: Fn(&[G], &mut [W]),
    T: Fn(W) -> Ftz<F::Math, HW>,
    const P: usize,
>(
    values: &[G],
    widen: &X,
    term: &T,
) -> Ftz<F> {
    let zero = Ftz::<F::Math, HW>::ZERO;
    let mut acc = [[zero; P]; 4];
    let mut window = [W::default(); WINDOW];
    let mut windows = values.chunks(WINDOW).peekable();
    while let Some(part) = windows.next() {
        let wide = &mut window[..part.len()];
        widen(part, wide);
        let quads = wide.chunks_exact(4 * P);
        let rest = quads.remainder();
        for quad in quads {
            for (a, packet) in acc.iter_mut().zip(quad.chunks_exact(P)) {
                let packet: &[W; P] = packet.try_into().expect("chunks of P");
                for (a, &x) in a.iter_mut().zip(packet) {
                    *a = *a + term(x);
                }
            }
        }
        if windows.peek().is_some() {
            continue; // every window but the last holds whole quads
        }
        if values.len() >= 4 * P {
            #[allow(clippy::needless_range_loop)] // lanes index like Eigen's packets
            for k in 1..4 {
                for lane in 0..P {
                    acc[0][lane] = acc[0][lane] + acc[k][lane];
                }
            }
        }
        let packets = rest.chunks_exact(P);
        let tail = packets.remainder();
        for packet in packets {
            let packet: &[W; P] = packet.try_into().expect("chunks of P");
            for (a, &x) in acc[0].iter_mut().zip(packet) {
                *a = *a + term(x);
            }
        }
        let scalar = tail.iter().fold(zero, |sum, &x| sum + term(x));
        let lanes: [Ftz<F>; P] = std::array::from_fn(|lane| Ftz::new(F::store(acc[0][lane].get())));
        let total = scalar + Ftz::new(horizontal_sum(&lanes).get().load());
        return Ftz::new(F::store(total.get()));
    }
    Ftz::ZERO // an empty tensor
}

/// A clip norm's sum over a whole tensor's values, as float64: the sum of `(x * x) * 0.5` with
/// `halve` (`tf.nn.l2_loss`) or of `x * x` (`tf.reduce_sum(tf.square(x))`, for bfloat16 summed
/// in float32), each `x = input(w)` in the terms' dtype `T`, `w` a value converted by `widen`
/// (see [`sum_terms`]).
pub fn squares_sum_of_slice<T: Real, G: Copy + Sync, W: Copy + Default>(
    workers: &Workers,
    values: &[G],
    halve: bool,
    widen: &(impl Fn(&[G], &mut [W]) + Sync),
    input: &(impl Fn(W) -> Ftz<T::Math, HW> + Sync),
) -> f64 {
    // Multiplying by one is exact, so one form serves both sums without a branch per element.
    let factor = Ftz::<T::Math, HW>::new(T::from_f64(if halve { 0.5 } else { 1.0 }).load());
    let term = |w: W| {
        let x = input(w);
        (x * x) * factor
    };
    if sums_in_f32::<T>(halve) {
        let wide = sum_terms::<f32, G, W>(workers, values, widen, &|w| Ftz::new(T::store(term(w).get()).to_f32()));
        return T::from_f32(wide.get()).to_f64();
    }
    sum_terms::<T, G, W>(workers, values, widen, &term).get().to_f64()
}

/// Where Eigen's tree splits `first..first + n` in two, when it is more than one leaf: the
/// length of the left half and where the right one starts (on a packet boundary).
fn halves<F: Real>(first: usize, n: usize) -> Option<(usize, usize)> {
    let p = F::PACKET;
    if n <= p * F::LEAF {
        return None;
    }
    let split = p * (first + n.div_ceil(2)).div_ceil(p);
    Some(((split - first).min(n), split))
}

/// One leaf of Eigen's tree: four interleaved packet accumulators, then one packet, then a
/// scalar tail, then the packet's lanes.
#[allow(clippy::needless_range_loop)]
fn leaf_sum<F: Real>(x: &(impl Fn(usize) -> Ftz<F> + ?Sized), first: usize, n: usize) -> Ftz<F> {
    let p = F::PACKET;
    let mut packets = [[Ftz::<F>::ZERO; 8]; 4];
    let mut start = 0;
    if n >= 4 * p {
        let unrolled = n / (4 * p) * (4 * p);
        for j in (0..unrolled).step_by(4 * p) {
            for (k, packet) in packets.iter_mut().enumerate() {
                for (lane, acc) in packet[..p].iter_mut().enumerate() {
                    *acc = *acc + x(first + j + k * p + lane);
                }
            }
        }
        for k in 1..4 {
            for lane in 0..p {
                packets[0][lane] = packets[0][lane] + packets[k][lane];
            }
        }
        start = unrolled;
    }
    if start + p <= n {
        let vectorized = n / p * p;
        for j in (start..vectorized).step_by(p) {
            for lane in 0..p {
                packets[0][lane] = packets[0][lane] + x(first + j + lane);
            }
        }
        start = vectorized;
    }
    let mut acc = Ftz::ZERO;
    for j in start..n {
        acc = acc + x(first + j);
    }
    acc + horizontal_sum(&packets[0][..p])
}

/// Eigen's `predux`: halves of the packet added pairwise until one lane remains (for the
/// 16-bit packets in float32, rounded once at the end).
fn horizontal_sum<F: Real>(lanes: &[Ftz<F>]) -> Ftz<F> {
    if F::PREDUX_IN_F32 {
        let mut wide = [Ftz::<f32>::ZERO; 8];
        for (w, lane) in wide.iter_mut().zip(lanes) {
            *w = Ftz::new(lane.get().to_f32());
        }
        return Ftz::new(F::from_f32(horizontal_sum(&wide[..lanes.len()]).get()));
    }
    match lanes.len() {
        8 => {
            let s: [Ftz<F>; 4] = std::array::from_fn(|i| lanes[i] + lanes[i + 4]);
            (s[0] + s[2]) + (s[1] + s[3])
        }
        4 => {
            let s: [Ftz<F>; 2] = std::array::from_fn(|i| lanes[i] + lanes[i + 2]);
            s[0] + s[1]
        }
        _ => unreachable!("Eigen packets here have 4 or 8 lanes"),
    }
}

/// The sum of `g * g` over a gradient's values (`tf.reduce_sum(tf.square(g))`), or with
/// `halve` of `(g * g) * 0.5` (`tf.nn.l2_loss`, whose kernel sums with Eigen's sum of the dtype
/// even for bfloat16), in Eigen's order.
#[cfg(test)]
pub fn squares_sum<F: Real>(values: &[F], halve: bool) -> Ftz<F> {
    squares_sum_of(values.len(), &|i| values[i], halve)
}

/// `squares_sum` over `len` values given by `value` (a gradient widened on the fly).
#[cfg(test)]
pub fn squares_sum_of<F: Real>(len: usize, value: &impl Fn(usize) -> F, halve: bool) -> Ftz<F> {
    let term = |i: usize| square_term(value(i), halve);
    if halve { sum_eigen_in(&term, 0, len) } else { reduce_sum_in(&term, 0, len) }
}

/// One term of a clip norm's sum: `g * g`, or with `halve` `(g * g) * 0.5`, in `g`'s dtype.
#[inline(always)]
pub fn square_term<F: Real>(g: F, halve: bool) -> Ftz<F> {
    let g = Ftz::new(g);
    if halve { (g * g) * Ftz::new(F::from_f64(0.5)) } else { g * g }
}

/// Whether the clip norm's sum of terms of dtype `F` is taken in float32 (bfloat16's
/// `tf.reduce_sum`) rather than in `F` (see [`reduce_sum_in`]).
pub fn sums_in_f32<F: Real>(halve: bool) -> bool {
    !halve && F::REDUCE_SUM_IN_F32
}

// ---------------------------------------------------------------------------------------------
// Sums over a tensor sharded across ranks (docs/numerics.md §14).
//
// Each rank holds the contiguous range `held` of a tensor's `n` elements. Eigen's tree over the
// whole tensor depends on `n` only, so every rank knows its leaves. A leaf that one rank holds
// whole is summed there; a leaf that a shard boundary splits cannot be (its accumulators run
// through it in order), so its holders send its terms. After one sum all-reduce, in which every
// slot has exactly one rank's non-zero value, every rank has the same leaf sums and element
// terms and runs the same tree: the bits of one process. Which leaves are split is learnt once,
// from an all-reduced census of who holds what.
// ---------------------------------------------------------------------------------------------

/// Calls `f(first, len)` for every leaf of Eigen's tree over `first..first + n`, in order.
pub(crate) fn for_each_leaf<F: Real>(first: usize, n: usize, f: &mut impl FnMut(usize, usize)) {
    match halves::<F>(first, n) {
        None => f(first, n),
        Some((n_left, split)) => {
            for_each_leaf::<F>(first, n_left, f);
            if n_left < n {
                for_each_leaf::<F>(split, n - n_left, f);
            }
        }
    }
}

/// Eigen's tree over `first..first + n` with the leaves' sums given by `leaf`, called in order.
pub(crate) fn tree_sum<F: Real>(first: usize, n: usize, leaf: &mut impl FnMut(usize, usize) -> Ftz<F>) -> Ftz<F> {
    match halves::<F>(first, n) {
        None => leaf(first, n),
        Some((n_left, split)) => {
            let mut acc = Ftz::ZERO + tree_sum(first, n_left, leaf);
            if n_left < n {
                acc = acc + tree_sum(split, n - n_left, leaf);
            }
            acc
        }
    }
}

/// The number of leaves of Eigen's tree over `n` elements of `F`.
pub fn leaf_count<F: Real>(n: usize) -> usize {
    let mut count = 0;
    for_each_leaf::<F>(0, n, &mut |_, _| count += 1);
    count
}

/// Appends this rank's census of the leaves over `n` elements of `F`: per leaf, 1 if it holds
/// any element of it and the number of its elements it holds (two slots).
pub fn leaf_census<F: Real>(n: usize, held: Range<usize>, out: &mut Vec<f64>) {
    for_each_leaf::<F>(0, n, &mut |first, len| {
        let overlap = held.end.min(first + len).saturating_sub(held.start.max(first));
        out.push(if overlap > 0 { 1.0 } else { 0.0 });
        out.push(overlap as f64);
    });
}

/// From the all-reduced census: per leaf, whether more than one rank holds part of it. An error
/// says which leaf is not held exactly once (the shards do not partition the tensor).
pub fn split_leaves<F: Real>(n: usize, census: &[f64], out: &mut Vec<bool>) -> std::result::Result<(), String> {
    let mut k = 0;
    let mut bad = None;
    for_each_leaf::<F>(0, n, &mut |first, len| {
        let (holders, held) = (census.get(2 * k).copied(), census.get(2 * k + 1).copied());
        if held != Some(len as f64) && bad.is_none() {
            bad = Some(format!(
                "the ranks hold {} of the {len} elements {first}..{} (each must be held by exactly one rank)",
                held.unwrap_or(0.0),
                first + len
            ));
        }
        out.push(holders.unwrap_or(0.0) > 1.0);
        k += 1;
    });
    bad.map_or(Ok(()), Err)
}

/// The slots a sum over `n` elements takes in a step's all-reduce: one per whole leaf, and a
/// split leaf's length.
pub fn shared_len<F: Real>(n: usize, split: &[bool]) -> usize {
    let (mut k, mut len) = (0, 0);
    for_each_leaf::<F>(0, n, &mut |_, leaf_len| {
        len += if split.get(k).copied().unwrap_or(false) { leaf_len } else { 1 };
        k += 1;
    });
    len
}

/// Appends this rank's part of the sum over `n` elements, of which it holds `held` and `term(i)`
/// gives the global element `i`'s term: per whole leaf, its sum if held here, else 0; per split
/// leaf, the terms of the elements held here and 0 for the others.
pub fn contribute<F: Real>(
    n: usize,
    held: Range<usize>,
    split: &[bool],
    term: &(impl Fn(usize) -> Ftz<F> + Sync),
    out: &mut Vec<f64>,
) {
    let mut k = 0;
    for_each_leaf::<F>(0, n, &mut |first, len| {
        let end = first + len;
        if split.get(k).copied().unwrap_or(false) {
            out.extend((first..end).map(|i| if held.contains(&i) { term(i).get().to_f64() } else { 0.0 }));
        } else if held.start <= first && end <= held.end && len > 0 {
            out.push(leaf_sum(term, first, len).get().to_f64());
        } else {
            out.push(0.0);
        }
        k += 1;
    });
}

/// The sum over `n` elements from the all-reduced parts of every rank (`shared`, as laid out by
/// [`contribute`]): the bits of [`sum_eigen_in`] over the whole tensor.
pub fn combine<F: Real>(n: usize, split: &[bool], shared: &[f64]) -> Ftz<F> {
    let (mut k, mut at) = (0, 0);
    let value = |slot: usize| Ftz::new(F::from_f64(shared.get(slot).copied().unwrap_or(0.0)));
    tree_sum::<F>(0, n, &mut |first, len| {
        let leaf = if split.get(k).copied().unwrap_or(false) {
            let sum = leaf_sum(&|i: usize| value(at + i - first), first, len);
            at += len;
            sum
        } else {
            at += 1;
            value(at - 1)
        };
        k += 1;
        leaf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_sum_of_small_inputs_follows_lane_order() {
        let x: Vec<f32> = (1..=40).map(|i| i as f32 * 0.1).collect();
        let got = sum_eigen_in(&|i| Ftz::<_>::new(x[i]), 0, x.len()).get();
        // 40 = one unrolled block of 32 + one packet of 8; exact in this order:
        let mut p = [[0f32; 8]; 4];
        for k in 0..4 {
            for l in 0..8 {
                p[k][l] += x[k * 8 + l];
            }
        }
        let mut q: [f32; 8] = std::array::from_fn(|l| ((p[0][l] + p[1][l]) + p[2][l]) + p[3][l]);
        for l in 0..8 {
            q[l] += x[32 + l];
        }
        let s: [f32; 4] = std::array::from_fn(|i| q[i] + q[i + 4]);
        assert_eq!(got.to_bits(), (0.0f32 + ((s[0] + s[2]) + (s[1] + s[3]))).to_bits());
    }

    /// The sums on slices (vectorized leaves, windows, threads) give the bits of the sums by
    /// index, at every SIMD level this processor has: every dtype, both kinds of sum, lengths
    /// around packets, quads, windows and leaves, and large enough to split across threads.
    #[test]
    fn sums_on_slices_are_the_sums_by_index() {
        fn check<F: Real>(values: &[F], level: SimdLevel) {
            let mut reversed = Workers::new(1);
            reversed.set_hook(Some(std::sync::Arc::new(|n: usize, task: &(dyn Fn(usize) + Sync)| {
                (0..n).rev().for_each(task)
            })));
            for halve in [false, true] {
                let want = squares_sum_of(values.len(), &|i| values[i], halve).get().to_f64();
                for workers in [&Workers::new(1), &Workers::new(3), &reversed] {
                    let widen = |g: &[F], w: &mut [F::Math]| F::widen_math(g, w, level > SimdLevel::Portable);
                    let got = squares_sum_of_slice::<F, F, F::Math>(workers, values, halve, &widen, &|w| Ftz::new(w));
                    assert_eq!(got.to_bits(), want.to_bits(), "n {} halve {halve} {level:?}", values.len());
                }
            }
        }
        for level in SimdLevel::supported() {
            crate::simd::set_simd_level(Some(level));
            for n in [0, 1, 7, 8, 31, 33, 255, 257, 1023, 1601, 8192 + 5, 70_001, 600_000] {
                let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
                let d: Vec<f64> = x.iter().map(|&v| v as f64 * 1.000001).collect();
                let b: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
                let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
                check(&x, level);
                check(&d, level);
                check(&b, level);
                check(&h, level);
            }
        }
        crate::simd::set_simd_level(None);
        // Long enough that the subtrees cut into tasks grow with the length (`MAX_SUBTREES`).
        let x: Vec<f32> = (0..(1 << 24) + 12_345).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        check(&x, simd_level());
    }

    /// Any split of a tensor into shards, with the all-reduce simulated, gives the one-process
    /// sum's bits: f32 and bfloat16 (leaves of 1024 elements) and float16 (1600), boundaries
    /// inside leaves and on them, an empty shard, a shard of one element.
    #[test]
    fn sharded_sums_are_the_bits_of_one_sum() {
        fn check<F: Real>(values: &[F], cuts: &[usize]) {
            let n = values.len();
            let term = |i: usize| square_term(values[i], false);
            let whole = sum_eigen_in(&term, 0, n);
            let ranges: Vec<Range<usize>> = cuts.windows(2).map(|w| w[0]..w[1]).collect();
            let mut census = vec![0.0; 2 * leaf_count::<F>(n)];
            for held in &ranges {
                let mut part = Vec::new();
                leaf_census::<F>(n, held.clone(), &mut part);
                census.iter_mut().zip(part).for_each(|(c, p)| *c += p);
            }
            let mut split = Vec::new();
            split_leaves::<F>(n, &census, &mut split).unwrap();
            let mut shared = vec![0.0; shared_len::<F>(n, &split)];
            for held in &ranges {
                let mut part = Vec::new();
                contribute(n, held.clone(), &split, &term, &mut part);
                assert_eq!(part.len(), shared.len());
                shared.iter_mut().zip(part).for_each(|(s, p)| *s += p);
            }
            assert_eq!(combine::<F>(n, &split, &shared).get().to_f64().to_bits(), whole.get().to_f64().to_bits());
            // A gap between shards is an error, not a wrong sum.
            if ranges.len() > 1 && !ranges[1].is_empty() {
                let mut gap = vec![0.0; 2 * leaf_count::<F>(n)];
                leaf_census::<F>(n, ranges[0].clone(), &mut gap);
                assert!(split_leaves::<F>(n, &gap, &mut Vec::new()).is_err());
            }
        }
        let n = 70_001;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let b: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
        for cuts in [vec![0, n], vec![0, 8192, n], vec![0, 12_345, 12_346, 40_000, n], vec![0, 0, 3, n, n]] {
            check(&x, &cuts);
            check(&b, &cuts);
            check(&h, &cuts);
        }
    }
}
