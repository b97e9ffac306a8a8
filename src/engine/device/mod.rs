//! The device engine: the optimizer state in a device's memory, and each pass over it one
//! launch of a kernel of `kernels.cu` over every variable of the call (a table of the
//! variables, as PyTorch's multi-tensor apply does) (docs/numerics.md §20).
//!
//! A [`Backend`] is where the memory and the kernels are: CUDA through cudarc ([`cuda`]), or the
//! same kernels compiled for the host ([`host`], for the tests). The engine does everything else
//! the same way on both, so that the host run tests what the GPU runs: the tables, the per-step
//! scalars (the host's, computed by the optimizer as for the CPU engine), the clip norms (a leaf
//! of Eigen's tree per device thread, then the CPU engine's tree over the leaves' sums).
//!
//! The caller's values and gradients are device memory (`Optimizer::apply_gradients_on_device`,
//! the C ABI's entries for an optimizer on a device), used where they are; or host memory (the
//! Rust API's slices), which each pass uploads into a staging buffer on the device and a step
//! downloads back.

pub(crate) mod abi;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "host-kernels")]
pub(crate) mod host;

use abi::{
    CheckEntry, CheckParams, Leaf, LeafParams, NormEntry, Plain, ReportEntry, ReportParams, StepEntry, StepParams,
    bytes, bytes_mut,
};

use super::cpu::loops::{task_count, task_len};
use super::cpu::widened;
use super::{Engine, NonFinite, Slot, Slots, StepPlan, VariableLayout, VariableScalars};
use crate::dtype::{DType, TensorMut, TensorRef, each_dtype, with_float};
use crate::error::{Error, Result};
use crate::float::{Bf16Math, F16Math, Ftz, Real};
use crate::kernels::{self, StepScalars};
use crate::reduction;
use crate::squares::total_of_tasks;
use crate::tensor::{CallEntries, DeviceGradient, DeviceTensor, Gradient};

/// The kernel source, compiled by NVRTC for a GPU and by the host compiler for the tests.
pub(crate) const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// The kernels of `kernels.cu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Step,
    LeafSums,
    FirstNonFinite,
    GroupLanes,
    TaskSums,
}

impl Kernel {
    pub const ALL: [Kernel; 5] =
        [Kernel::Step, Kernel::LeafSums, Kernel::FirstNonFinite, Kernel::GroupLanes, Kernel::TaskSums];

    /// The kernel's name in the source.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Step => "adamw_step",
            Kernel::LeafSums => "adamw_leaf_sums",
            Kernel::FirstNonFinite => "adamw_first_non_finite",
            Kernel::GroupLanes => "adamw_group_lanes",
            Kernel::TaskSums => "adamw_task_sums",
        }
    }
}

/// Memory and kernels of one device, in the order the calls are made: a download sees every
/// upload and launch before it.
pub(crate) trait Backend: Send {
    /// An allocation in the device's memory, freed on drop.
    type Buffer: Send;

    /// `bytes` zeroed bytes (at least one, so that every buffer has an address).
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer>;
    /// The device address of a buffer's first byte.
    fn address(&self, buffer: &Self::Buffer) -> u64;
    /// Copies `data` to device memory at `address`.
    ///
    /// # Safety
    /// `address .. address + data.len()` must be memory of this device.
    unsafe fn upload(&self, address: u64, data: &[u8]) -> Result<()>;
    /// Copies `out.len()` bytes of device memory at `address` into `out`, once every earlier
    /// call is done.
    ///
    /// # Safety
    /// As for `upload`.
    unsafe fn download(&self, address: u64, out: &mut [u8]) -> Result<()>;
    /// Copies `bytes` bytes within the device's memory.
    ///
    /// # Safety
    /// Both ranges must be memory of this device, and must not overlap.
    unsafe fn copy(&self, to: u64, from: u64, bytes: usize) -> Result<()>;
    /// Launches `kernel` on a grid of `grid` blocks of `block` threads, with `params` (the bytes
    /// of its one parameter struct).
    ///
    /// # Safety
    /// `params` must be the kernel's parameter struct, and every address in it memory of this
    /// device holding what the struct says, valid until the launch has run.
    unsafe fn launch(&self, kernel: Kernel, grid: u32, block: u32, params: &[u8]) -> Result<()>;
    /// Where later copies and launches are enqueued: a `CUstream` (0: the default stream).
    fn set_stream(&mut self, stream: u64);
    /// Waits until everything enqueued so far has run.
    fn synchronize(&self) -> Result<()>;
}

/// A device buffer that grows to what a call needs and is kept for the next one.
struct Staging<T> {
    buffer: Option<T>,
    capacity: usize,
}

impl<T> Staging<T> {
    fn new() -> Self {
        Staging { buffer: None, capacity: 0 }
    }

    /// The buffer's address, the buffer at least `bytes` long.
    fn at_least<B: Backend<Buffer = T>>(&mut self, device: &B, bytes: usize) -> Result<u64> {
        if self.buffer.is_none() || self.capacity < bytes {
            let capacity = bytes.max(self.capacity.saturating_mul(2)).max(256);
            if self.buffer.is_some() {
                device.synchronize()?; // an enqueued launch may still read the old one
            }
            self.buffer = None; // the old one is freed before the new one is allocated
            self.buffer = Some(device.alloc(capacity)?);
            self.capacity = capacity;
        }
        self.buffer.as_ref().map(|b| device.address(b)).ok_or_else(|| Error::Internal("a staging buffer".into()))
    }

    /// Uploads `table` into the buffer (grown to fit); its address.
    fn upload<B: Backend<Buffer = T>, P: Plain>(&mut self, device: &B, table: &[P]) -> Result<u64> {
        let data = bytes(table);
        let at = self.at_least(device, data.len())?;
        // SAFETY: the buffer holds at least `data.len()` bytes.
        unsafe { device.upload(at, data) }?;
        Ok(at)
    }
}

/// Where the data staged for a pass sits in the staging buffer: offsets rounded up to 256
/// bytes, so that every tensor starts aligned for any vector load.
#[derive(Default)]
struct StagingPlan {
    len: usize,
}

impl StagingPlan {
    fn place(&mut self, bytes: usize) -> usize {
        let at = self.len;
        self.len = (at + bytes).div_ceil(256) * 256;
        at
    }
}

/// One variable's state in device memory; a slot that is off is `None`.
struct DeviceVariable<T> {
    layout: VariableLayout,
    m: T,
    v: T,
    vhat: Option<T>,
    average: Option<T>,
    master: Option<T>,
}

/// An entry of the call with its memory on the device: the caller's own (device entries) or
/// the staging buffer's (host entries, uploaded). Offsets into the staging buffer are resolved
/// to addresses once it has its size.
#[derive(Debug, Clone, Copy)]
struct Placed {
    variable: usize,
    values: Where,
    values_dtype: DType,
    gradient: Option<PlacedGradient>,
}

#[derive(Debug, Clone, Copy)]
struct PlacedGradient {
    at: Where,
    dtype: DType,
    len: usize,
    /// A sparse gradient: its sorted (row, position) pairs (always staged) and their number.
    pairs: Option<(Where, usize)>,
}

/// A device address, or an offset into the staging buffer.
#[derive(Debug, Clone, Copy)]
enum Where {
    Address(u64),
    Staged(usize),
    Nowhere,
}

/// The bits a kernel reads for a value of a math type.
trait MathBits: Copy {
    fn bits(self) -> u64;
}
impl MathBits for f32 {
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
}
impl MathBits for f64 {
    fn bits(self) -> u64 {
        self.to_bits()
    }
}
impl MathBits for Bf16Math {
    fn bits(self) -> u64 {
        self.get().to_bits() as u64
    }
}
impl MathBits for F16Math {
    fn bits(self) -> u64 {
        self.get().to_bits() as u64
    }
}

fn math_bits<F: Real>(x: Ftz<F>) -> u64
where
    F::Math: MathBits,
{
    x.get().load().bits()
}

/// The step's scalars for `F` in the order `adamw_step_params.scalars` has them.
fn scalar_bits<F: Real>(s: &StepScalars<F>) -> [u64; 8]
where
    F::Math: MathBits,
{
    [s.lr, s.wd, s.one_minus_beta_1, s.one_minus_beta_2, s.alpha, s.epsilon, s.ema_momentum, s.one_minus_ema_momentum]
        .map(math_bits)
}

/// The gradient op of the `k`-th entry with a gradient, as the kernel's `op` bits.
fn op_bits<F: Real>(plan: &StepPlan<'_>, k: usize) -> [u64; 5]
where
    F::Math: MathBits,
{
    plan.gradient_op::<F>(k).fused().parts().map(math_bits)
}

/// The unscale factor of a loss scale in dtype `F`, as the kernels' bits.
fn unscale_bits(dtype: DType, loss_scale: f32) -> u64 {
    with_float!(dtype, F => math_bits(kernels::unscale_factor::<F>(loss_scale)), _ => 0)
}

/// The bytes of a tensor's elements.
fn tensor_bytes<'a>(t: TensorRef<'a>) -> &'a [u8] {
    each_dtype!(t, x => bytes(x))
}

/// The bytes of a tensor's elements, for writing.
fn tensor_bytes_mut<'a>(t: TensorMut<'a>) -> &'a mut [u8] {
    each_dtype!(t, x => bytes_mut(x))
}

fn blocks_for(len: u64) -> u64 {
    len.div_ceil(abi::BLOCK_ELEMENTS)
}

fn as_u32(x: u64, what: &str) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::OutOfMemory(format!("{what} ({x}) exceed what one launch covers")))
}

/// The step report's tasks and sparse gradients' groups in a call (`plan_report`).
#[derive(Debug, Clone, Copy)]
struct ReportCounts {
    tasks: u64,
    sparse_groups: u64,
}

/// The device engine over backend `B`.
pub(crate) struct DeviceEngine<B: Backend> {
    device: B,
    variables: Vec<DeviceVariable<B::Buffer>>,
    slots: Slots,
    /// The call's staged data: host values and gradients, sorted sparse pairs.
    data: Staging<B::Buffer>,
    /// The step's table, kept between calls: a call whose table is the last one's uploads none.
    step_table: Staging<B::Buffer>,
    last_step_table: Vec<StepEntry>,
    /// The other passes' tables and results.
    table: Staging<B::Buffer>,
    aux: Staging<B::Buffer>,
    results: Staging<B::Buffer>,
    /// Host copies reused from call to call.
    placed: Vec<Placed>,
    step_entries: Vec<StepEntry>,
    norm_entries: Vec<NormEntry>,
    leaves: Vec<Leaf>,
    /// Each leaf's sum as the bits of its tree's math type.
    leaf_sums: Vec<u64>,
    check_entries: Vec<CheckEntry>,
    first_bad: Vec<u64>,
    report_entries: Vec<ReportEntry>,
    task_sums: Vec<f64>,
    pairs: Vec<[u64; 2]>,
}

impl<B: Backend> DeviceEngine<B> {
    pub fn new(device: B) -> Self {
        DeviceEngine {
            device,
            variables: Vec::new(),
            slots: Slots { amsgrad: false, ema: false },
            data: Staging::new(),
            step_table: Staging::new(),
            last_step_table: Vec::new(),
            table: Staging::new(),
            aux: Staging::new(),
            results: Staging::new(),
            placed: Vec::new(),
            step_entries: Vec::new(),
            norm_entries: Vec::new(),
            leaves: Vec::new(),
            leaf_sums: Vec::new(),
            check_entries: Vec::new(),
            first_bad: Vec::new(),
            report_entries: Vec::new(),
            task_sums: Vec::new(),
            pairs: Vec::new(),
        }
    }

    fn variable(&self, i: usize) -> Result<&DeviceVariable<B::Buffer>> {
        self.variables.get(i).ok_or_else(|| Error::Internal(format!("no variable {i}")))
    }

    fn address_of(&self, at: Where) -> u64 {
        match (at, &self.data.buffer) {
            (Where::Address(a), _) => a,
            (Where::Staged(offset), Some(buffer)) => self.device.address(buffer) + offset as u64,
            _ => 0,
        }
    }

    /// Puts every entry of the call on the device: host entries' gradients (and with `step`
    /// their values) uploaded into the staging buffer, device entries as they are; with `step`
    /// the sorted rows of sparse gradients staged too.
    fn place(&mut self, entries: &mut CallEntries<'_>, step: bool) -> Result<()> {
        let mut plan = StagingPlan::default();
        self.placed.clear();
        self.pairs.clear();
        // Sorted (row, position) pairs, so that duplicates of a row are adjacent and in order.
        let stage_pairs = |pairs: &mut Vec<[u64; 2]>, plan: &mut StagingPlan, indices: &[i64]| {
            let start = pairs.len();
            pairs.extend(indices.iter().enumerate().map(|(pos, &row)| [row as u64, pos as u64]));
            pairs[start..].sort_unstable();
            (Where::Staged(plan.place(indices.len() * 16)), indices.len())
        };
        for i in 0..entries.len() {
            let placed = match entries {
                CallEntries::Host(host) => {
                    let e = host.get(i);
                    let gradient = e.gradient.map(|g| {
                        let values = g.values();
                        let at = Where::Staged(plan.place(tensor_bytes(values).len()));
                        let pairs = match g {
                            Gradient::Sparse { indices, .. } if step => {
                                Some(stage_pairs(&mut self.pairs, &mut plan, indices))
                            }
                            _ => None,
                        };
                        PlacedGradient { at, dtype: values.dtype(), len: values.len(), pairs }
                    });
                    let values = if step && gradient.is_some() {
                        Where::Staged(plan.place(e.values.len() * e.values.dtype().size()))
                    } else {
                        Where::Nowhere
                    };
                    Placed { variable: e.variable, values, values_dtype: e.values.dtype(), gradient }
                }
                CallEntries::Device(device, copies) => {
                    let e = device.get(i);
                    let indices = crate::tensor::device_indices(copies, i, &e);
                    let gradient = e.gradient.map(|g| {
                        let values = g.values();
                        let pairs = match g {
                            DeviceGradient::Sparse { .. } if step => {
                                Some(stage_pairs(&mut self.pairs, &mut plan, indices))
                            }
                            _ => None,
                        };
                        PlacedGradient {
                            at: Where::Address(values.address),
                            dtype: values.dtype,
                            len: values.len,
                            pairs,
                        }
                    });
                    Placed {
                        variable: e.variable,
                        values: Where::Address(e.values.address),
                        values_dtype: e.values.dtype,
                        gradient,
                    }
                }
            };
            self.placed.push(placed);
        }
        if plan.len == 0 {
            return Ok(());
        }
        let base = self.data.at_least(&self.device, plan.len)?;
        let mut next_pairs = 0;
        for (i, p) in self.placed.iter().enumerate() {
            if let Some((Where::Staged(at), count)) = p.gradient.and_then(|g| g.pairs) {
                // SAFETY: the plan placed `count` pairs at `at`, within the buffer's size.
                unsafe { self.device.upload(base + at as u64, bytes(&self.pairs[next_pairs..next_pairs + count])) }?;
                next_pairs += count;
            }
            let CallEntries::Host(host) = entries else { continue };
            let e = host.get(i);
            if let (Some(PlacedGradient { at: Where::Staged(at), .. }), Some(g)) = (p.gradient, e.gradient) {
                // SAFETY: as above, for the gradient's bytes.
                unsafe { self.device.upload(base + at as u64, tensor_bytes(g.values())) }?;
            }
            if let Where::Staged(at) = p.values {
                // SAFETY: as above, for the values' bytes.
                unsafe { self.device.upload(base + at as u64, tensor_bytes(e.values.as_ref())) }?;
            }
        }
        Ok(())
    }

    fn try_norm_partials(&mut self, halve: bool, loss_scale: Option<f32>, sums: &mut Vec<f64>) -> Result<()> {
        self.norm_entries.clear();
        self.leaves.clear();
        for p in &self.placed {
            let Some(g) = p.gradient else { continue };
            let layout = self.variable(p.variable)?.layout;
            let (terms, tree) = (layout.terms_dtype(), layout.tree_dtype(halve));
            let index = self.norm_entries.len() as u64;
            let mut flags = if halve { abi::flags::HALVE } else { 0 };
            if loss_scale.is_some() {
                flags |= abi::flags::UNSCALE;
            }
            self.norm_entries.push(NormEntry {
                gradient: self.address_of(g.at),
                unscale: loss_scale.map_or(0, |scale| unscale_bits(terms, scale)),
                gradient_dtype: abi::dtype_code(g.dtype),
                terms_dtype: abi::dtype_code(terms),
                tree_dtype: abi::dtype_code(tree),
                flags,
            });
            let leaves = &mut self.leaves;
            with_float!(tree, T => reduction::for_each_leaf::<T>(0, g.len, &mut |first, len| {
                leaves.push(Leaf { entry: index, first: first as u64, len: len as u64 })
            }), _ => {});
        }
        if self.leaves.is_empty() {
            return Ok(());
        }
        let count = self.leaves.len();
        let entries_at = self.table.upload(&self.device, &self.norm_entries)?;
        let leaves_at = self.aux.upload(&self.device, &self.leaves)?;
        let sums_at = self.results.at_least(&self.device, count * 8)?;
        let params = LeafParams { entries: entries_at, leaves: leaves_at, sums: sums_at, count: count as u64 };
        let grid = as_u32((count as u64).div_ceil(abi::BLOCK as u64), "clip-norm leaves")?;
        self.leaf_sums.clear();
        self.leaf_sums.resize(count, 0);
        // SAFETY: the tables were uploaded above and describe the placed gradients, which stay
        // where they are for the call; `sums_at` holds `count` u64s.
        unsafe {
            self.device.launch(Kernel::LeafSums, grid, abi::BLOCK, bytes(std::slice::from_ref(&params)))?;
            self.device.download(sums_at, bytes_mut(&mut self.leaf_sums))?;
        }
        // The CPU engine's tree over each gradient's leaves, in order.
        let mut next = self.leaf_sums.iter();
        for p in &self.placed {
            let Some(g) = p.gradient else { continue };
            let layout = self.variable(p.variable)?.layout;
            let total = with_float!(layout.tree_dtype(halve), T => {
                let sum = reduction::tree_sum::<T>(0, g.len, &mut |_, _| {
                    Ftz::new(leaf_value::<T>(next.next().copied().unwrap_or(0)))
                });
                sum.get().to_f64()
            }, _ => 0.0);
            sums.push(layout.norm_sum(halve, total));
        }
        Ok(())
    }

    fn try_find_non_finite(&mut self, loss_scale: Option<f32>) -> Result<Option<NonFinite>> {
        self.check_entries.clear();
        let mut blocks = 0u64;
        for p in &self.placed {
            let Some(g) = p.gradient else { continue };
            let layout = self.variable(p.variable)?.layout;
            // The unscaled gradient, in the dtype it is unscaled in (a master's float32).
            let check = if loss_scale.is_some() && layout.has_master() { DType::F32 } else { g.dtype };
            self.check_entries.push(CheckEntry {
                gradient: self.address_of(g.at),
                len: g.len as u64,
                first_block: blocks,
                unscale: loss_scale.map_or(0, |scale| unscale_bits(check, scale)),
                gradient_dtype: abi::dtype_code(g.dtype),
                check_dtype: abi::dtype_code(check),
                flags: if loss_scale.is_some() { abi::flags::UNSCALE } else { 0 },
                pad: 0,
            });
            blocks += blocks_for(g.len as u64);
        }
        if blocks == 0 {
            return Ok(None);
        }
        let count = self.check_entries.len();
        self.first_bad.clear();
        self.first_bad.resize(count, u64::MAX);
        let params = CheckParams {
            entries: self.table.upload(&self.device, &self.check_entries)?,
            first_bad: self.results.upload(&self.device, &self.first_bad)?,
            count: as_u32(count as u64, "gradients")?,
            total_blocks: as_u32(blocks, "blocks")?,
        };
        // SAFETY: the table describes the placed gradients; `first_bad` holds `count` integers.
        unsafe {
            self.device.launch(
                Kernel::FirstNonFinite,
                params.total_blocks,
                abi::BLOCK,
                bytes(std::slice::from_ref(&params)),
            )?;
            self.device.download(params.first_bad, bytes_mut(&mut self.first_bad))?;
        }
        let Some((k, &element)) = self.first_bad.iter().enumerate().find(|(_, at)| **at != u64::MAX) else {
            return Ok(None);
        };
        // Check entry k is the k-th placed entry with a gradient.
        let mut checked = self.placed.iter().enumerate().filter_map(|(i, p)| Some((i, p.gradient?)));
        let Some((entry, g)) = checked.nth(k) else {
            return Err(Error::Internal(format!("no gradient for check entry {k}")));
        };
        // The bad value itself, for the message.
        let size = g.dtype.size();
        let mut raw = [0u8; 8];
        // SAFETY: `element` < the gradient's length, so its bytes lie within the gradient.
        unsafe { self.device.download(self.address_of(g.at) + element * size as u64, &mut raw[..size]) }?;
        let value = with_float!(g.dtype, F => {
            use crate::dtype::Element;
            F::read_le(&raw).to_f64()
        }, _ => f64::NAN);
        Ok(Some(NonFinite { entry, element: element as usize, value }))
    }

    /// The step report's table (`crate::squares`' order, the CPU engine's bits), before the
    /// step: each placed gradient's tasks and where its groups' lanes go (the step takes a dense
    /// gradient's, `flags::REPORT`). Returns the report's tasks and sparse gradients' groups.
    fn plan_report(&mut self) -> Result<ReportCounts> {
        self.report_entries.clear();
        // `lane_bytes`: the group lanes' bytes so far (float32 lanes, float64 for float64).
        let (mut lane_bytes, mut tasks, mut sparse_groups) = (0u64, 0u64, 0u64);
        for p in &self.placed {
            let Some(g) = p.gradient else { continue };
            let len = g.len as u64;
            // A sparse gradient's values are one task (as the CPU engine sums them); a gradient
            // without elements has none, and sums to 0.
            let (per_task, count) = match (len, g.pairs) {
                (0, _) => (1, 0),
                (_, Some(_)) => (len, 1),
                _ => (task_len(g.len) as u64, task_count(g.len) as u64),
            };
            self.report_entries.push(ReportEntry {
                gradient: self.address_of(g.at),
                len,
                task_len: per_task,
                group_lanes: lane_bytes, // an offset until the buffer is known, below
                first_task: tasks,
                first_sparse_group: sparse_groups,
                gradient_dtype: abi::dtype_code(g.dtype),
                pad: 0,
            });
            lane_bytes += len.div_ceil(abi::GROUP) * abi::LANES * g.dtype.size().max(4) as u64;
            tasks += count;
            if g.pairs.is_some() {
                sparse_groups += len.div_ceil(abi::GROUP);
            }
        }
        let lanes = self.aux.at_least(&self.device, lane_bytes as usize)?;
        for e in &mut self.report_entries {
            e.group_lanes += lanes;
        }
        Ok(ReportCounts { tasks, sparse_groups })
    }

    /// The report's sums once the step has taken the dense gradients' group lanes: a sparse
    /// gradient's group lanes, then each task's total, then on the host each gradient's total
    /// into `squares[k]` for the call's `k`-th entry with a gradient (as the CPU engine).
    fn finish_report(&mut self, counts: ReportCounts, squares: &mut [f64]) -> Result<()> {
        let ReportCounts { tasks, sparse_groups } = counts;
        self.task_sums.clear();
        self.task_sums.resize(tasks as usize, 0.0);
        if tasks > 0 {
            let params = ReportParams {
                entries: self.table.upload(&self.device, &self.report_entries)?,
                task_sums: self.results.at_least(&self.device, tasks as usize * 8)?,
                sparse_groups,
                total_tasks: tasks,
                count: as_u32(self.report_entries.len() as u64, "gradients")?,
                pad: 0,
            };
            let grid = |threads: u64| as_u32(threads.div_ceil(abi::BLOCK as u64).min(1 << 16), "report blocks");
            let raw = bytes(std::slice::from_ref(&params));
            // SAFETY: the table describes the placed gradients, which stay where they are for
            // the call, and the group lanes' buffer (`plan_report`); the sums' buffer holds
            // `tasks` doubles.
            unsafe {
                if sparse_groups > 0 {
                    self.device.launch(Kernel::GroupLanes, grid(sparse_groups * abi::LANES)?, abi::BLOCK, raw)?;
                }
                self.device.launch(Kernel::TaskSums, grid(tasks)?, abi::BLOCK, raw)?;
                self.device.download(params.task_sums, bytes_mut(&mut self.task_sums))?;
            }
        }
        // One report entry per placed entry with a gradient, in the call's order.
        let mut entries = self.report_entries.iter().peekable();
        for square in squares.iter_mut() {
            let Some(e) = entries.next() else { break };
            let end = entries.peek().map_or(tasks, |next| next.first_task);
            *square = total_of_tasks(&self.task_sums[e.first_task as usize..end as usize]);
        }
        Ok(())
    }

    /// The step's launch; with `report`, it also takes the dense gradients' group lanes for
    /// the report (`plan_report` first).
    fn try_step(&mut self, plan: &StepPlan<'_>, report: bool) -> Result<()> {
        self.step_entries.clear();
        let mut blocks = 0u64;
        for (k, p) in self.placed.iter().filter(|p| p.gradient.is_some()).enumerate() {
            let Some(g) = p.gradient else { continue };
            let state = self.variable(p.variable)?;
            let layout = state.layout;
            let ops = plan.ops(p.variable);
            // A master steps in float32; otherwise the state's dtype.
            let math = if layout.has_master() { DType::F32 } else { layout.dtype };
            // A variable with multipliers steps with scalars of its own, in its math dtype.
            let (mut flags, scalars) = match plan.variable_scalars.get(p.variable) {
                None | Some(VariableScalars::Shared) => (0, [0; 8]),
                Some(own) => match with_float!(math, F => own.get::<F>().map(scalar_bits), _ => None) {
                    Some(bits) => (abi::flags::OWN_SCALARS, bits),
                    // Nothing is enqueued yet.
                    None => {
                        return Err(Error::Internal(format!(
                            "variable {}: scalars of another dtype than {math:?}",
                            p.variable
                        )));
                    }
                },
            };
            for (on, flag) in [
                (ops.decay, abi::flags::DECAY),
                (ops.overwrite_with_average, abi::flags::OVERWRITE),
                (self.slots.amsgrad, abi::flags::AMSGRAD),
                (self.slots.ema, abi::flags::EMA),
                (layout.has_master(), abi::flags::MASTER),
                (g.pairs.is_some(), abi::flags::SPARSE),
            ] {
                if on {
                    flags |= flag;
                }
            }
            let mut group_lanes = 0;
            if report && g.pairs.is_none() {
                flags |= abi::flags::REPORT;
                group_lanes = self.report_entries.get(k).map_or(0, |e| e.group_lanes);
            }
            let (pairs, pair_count) = g.pairs.map_or((0, 0), |(at, n)| (self.address_of(at), n as u64));
            let op = with_float!(math, F => op_bits::<F>(plan, k), _ => [0; 5]);
            let address = |b: &Option<B::Buffer>| b.as_ref().map_or(0, |b| self.device.address(b));
            let (values, gradient) = (self.address_of(p.values), self.address_of(g.at));
            let (m, v, vhat, average) = (
                self.device.address(&state.m),
                self.device.address(&state.v),
                address(&state.vhat),
                address(&state.average),
            );
            // Dense float32 with every array 16-byte aligned: 16-byte loads and stores.
            let float32 = [layout.dtype, p.values_dtype, g.dtype].iter().all(|&d| d == DType::F32);
            if float32 && g.pairs.is_none() && [values, gradient, m, v, vhat, average].iter().all(|a| a % 16 == 0) {
                flags |= abi::flags::VEC4;
            }
            self.step_entries.push(StepEntry {
                values,
                gradient,
                m,
                v,
                vhat,
                average,
                master: address(&state.master),
                pairs,
                len: layout.len as u64,
                row_len: layout.row_len.max(1) as u64,
                offset: layout.offset as u64,
                pair_count,
                first_block: blocks,
                op,
                scalars,
                group_lanes,
                state_dtype: abi::dtype_code(layout.dtype),
                values_dtype: abi::dtype_code(p.values_dtype),
                gradient_dtype: abi::dtype_code(g.dtype),
                flags,
            });
            blocks += blocks_for(layout.len as u64);
        }
        if blocks == 0 {
            return Ok(());
        }
        // The last table stays on the device: a loop over the same buffers uploads it once.
        let entries = match (&self.step_table.buffer, self.step_entries == self.last_step_table) {
            (Some(buffer), true) => self.device.address(buffer),
            _ => {
                let at = self.step_table.upload(&self.device, &self.step_entries)?;
                self.last_step_table.clone_from(&self.step_entries);
                at
            }
        };
        let mut params = StepParams {
            entries,
            count: as_u32(self.step_entries.len() as u64, "variables")?,
            total_blocks: as_u32(blocks, "blocks")?,
            ..Default::default()
        };
        if let Some(p) = &plan.f32 {
            params.scalars[0] = scalar_bits(&p.scalars);
        }
        if let Some(p) = &plan.f64 {
            params.scalars[1] = scalar_bits(&p.scalars);
        }
        if let Some(p) = &plan.bf16 {
            params.scalars[2] = scalar_bits(&p.scalars);
        }
        if let Some(p) = &plan.f16 {
            params.scalars[3] = scalar_bits(&p.scalars);
        }
        // SAFETY: the table describes the state's buffers and the placed values and gradients,
        // which stay where they are until the step has run (the caller's for the call, by its
        // contract; the staging buffer's until the next pass, which waits for this one).
        unsafe {
            self.device.launch(Kernel::Step, params.total_blocks, abi::BLOCK, bytes(std::slice::from_ref(&params)))
        }
    }

    /// Host entries' values back from the staging buffer, after a step.
    fn download_values(&mut self, entries: &mut CallEntries<'_>) -> Result<()> {
        let CallEntries::Host(host) = entries else { return Ok(()) };
        for (i, p) in self.placed.iter().enumerate() {
            if let Where::Staged(_) = p.values {
                let at = self.address_of(p.values);
                // SAFETY: the values were staged at `at`, with the entry's length and dtype.
                unsafe { self.device.download(at, tensor_bytes_mut(host.get(i).values)) }?;
            }
        }
        Ok(())
    }

    fn slot_buffer(&self, variable: usize, slot: Slot) -> Result<(&B::Buffer, DType, usize)> {
        let state = self.variable(variable)?;
        let missing = || Error::Internal(format!("variable {variable} has no {slot:?} slot"));
        let (buffer, dtype) = match slot {
            Slot::M => (&state.m, state.layout.dtype),
            Slot::V => (&state.v, state.layout.dtype),
            Slot::Vhat => (state.vhat.as_ref().ok_or_else(missing)?, state.layout.dtype),
            Slot::Average => (state.average.as_ref().ok_or_else(missing)?, state.layout.dtype),
            Slot::Master => (state.master.as_ref().ok_or_else(missing)?, DType::F32),
        };
        Ok((buffer, dtype, state.layout.len))
    }
}

impl<B: Backend> Drop for DeviceEngine<B> {
    /// The state's buffers are freed once the work enqueued on them has run.
    fn drop(&mut self) {
        let _ = self.device.synchronize(); // a failed device has nothing left to wait for
    }
}

/// A leaf's sum from the bits the kernel wrote: float64 bits, or the float32 bits of a value of
/// the tree's dtype (exact).
fn leaf_value<T: Real>(bits: u64) -> T {
    if T::DTYPE == DType::F64 { T::from_f64(f64::from_bits(bits)) } else { T::from_f32(f32::from_bits(bits as u32)) }
}

/// A device buffer holding `values` (zeros of `dtype` when `None`), `len` elements.
fn device_tensor<B: Backend>(device: &B, dtype: DType, len: usize, values: Option<TensorRef<'_>>) -> Result<B::Buffer> {
    let buffer = device.alloc(len * dtype.size())?;
    if let Some(values) = values {
        let copy = widened(values, dtype)?;
        // SAFETY: the buffer holds `len` elements of `dtype`, as many as `copy`.
        unsafe { device.upload(device.address(&buffer), tensor_bytes(copy.as_ref())) }?;
    }
    Ok(buffer)
}

impl<B: Backend> Engine for DeviceEngine<B> {
    fn build(&mut self, layouts: &[VariableLayout], slots: Slots, initial: &[TensorRef<'_>]) -> Result<()> {
        let mut variables = Vec::new();
        variables.try_reserve_exact(layouts.len()).map_err(|_| Error::OutOfMemory("too many variables".into()))?;
        for (i, layout) in layouts.iter().enumerate() {
            if layout.sharded {
                return Err(Error::InvalidArgument(format!(
                    "variable {i} is a shard: the device engine does not hold sharded state yet; build it on the CPU engine"
                )));
            }
            let (dtype, len) = (layout.dtype, layout.len);
            let initial_values = || {
                initial.get(i).copied().ok_or_else(|| Error::Internal(format!("no initial values for variable {i}")))
            };
            let d = &self.device;
            variables.push(DeviceVariable {
                layout: *layout,
                m: device_tensor(d, dtype, len, None)?,
                v: device_tensor(d, dtype, len, None)?,
                vhat: if slots.amsgrad { Some(device_tensor(d, dtype, len, None)?) } else { None },
                average: if slots.ema { Some(device_tensor(d, dtype, len, Some(initial_values()?))?) } else { None },
                master: if layout.has_master() {
                    Some(device_tensor(d, DType::F32, len, Some(initial_values()?))?)
                } else {
                    None
                },
            });
        }
        self.device.synchronize()?; // the initial values were read from the caller's memory
        self.variables = variables;
        self.slots = slots;
        self.last_step_table.clear();
        Ok(())
    }

    fn on_device(&self) -> bool {
        true
    }

    fn set_threads(&mut self, _threads: usize) -> Result<()> {
        Ok(()) // the device's threads are its own
    }

    fn set_parallel_for(&mut self, _hook: Option<std::sync::Arc<dyn crate::parallel::ParallelFor>>) {
        // no host tasks: the device runs the passes
    }

    fn set_stream(&mut self, stream: u64) -> Result<()> {
        // Work on the old stream may still read the tables and the staging buffer.
        self.device.synchronize()?;
        self.device.set_stream(stream);
        Ok(())
    }

    fn reserve_sparse(&mut self, indices: usize) -> Result<()> {
        let oom = |_| Error::OutOfMemory(format!("cannot reserve room for {indices} sparse indices"));
        self.pairs.try_reserve(indices.saturating_sub(self.pairs.len())).map_err(oom)
    }

    fn find_non_finite(&mut self, entries: &mut CallEntries<'_>, loss_scale: Option<f32>) -> Result<Option<NonFinite>> {
        self.place(entries, false)?;
        self.try_find_non_finite(loss_scale)
    }

    fn leaf_census(&self, _halve: bool, _out: &mut Vec<f64>) {}

    fn set_split_leaves(&mut self, _halve: bool, _census: &[f64]) -> Result<usize> {
        Ok(0) // no variable is sharded (build refuses shards)
    }

    fn norm_partials(
        &mut self,
        entries: &mut CallEntries<'_>,
        halve: bool,
        loss_scale: Option<f32>,
        sums: &mut Vec<f64>,
        _shared: &mut Vec<f64>,
    ) -> Result<()> {
        self.place(entries, false)?;
        self.try_norm_partials(halve, loss_scale, sums)
    }

    fn finish_norms(&self, _entries: &mut CallEntries<'_>, _halve: bool, _shared: &[f64], _sums: &mut [f64]) {}

    fn step(&mut self, plan: &StepPlan<'_>, entries: &mut CallEntries<'_>, squares: Option<&mut [f64]>) -> Result<()> {
        self.place(entries, true)?;
        let report = match squares {
            Some(squares) => Some((self.plan_report()?, squares)),
            None => None,
        };
        self.try_step(plan, report.is_some())?;
        // The values come back even when the report fails, so that the message below is true.
        let downloaded = self.download_values(entries);
        let reported = report.map_or(Ok(()), |(counts, squares)| self.finish_report(counts, squares));
        downloaded.and(reported).map_err(|e| {
            Error::Device(format!(
                "{e}; this happened after the step ran on the device, so the state and the variables are those after the step while the iteration counter is not: load a checkpoint before going on"
            ))
        })
    }

    fn read_slot(&self, variable: usize, slot: Slot, out: TensorMut<'_>) -> Result<()> {
        let (buffer, dtype, len) = self.slot_buffer(variable, slot)?;
        if out.dtype() != dtype || out.len() != len {
            return Err(Error::Internal(format!("a read of variable {variable}'s {slot:?} into the wrong tensor")));
        }
        // SAFETY: the slot holds `len` elements of `dtype`, as `out` does.
        unsafe { self.device.download(self.device.address(buffer), tensor_bytes_mut(out)) }
    }

    fn write_slot(&mut self, variable: usize, slot: Slot, values: TensorRef<'_>) -> Result<()> {
        let (buffer, dtype, len) = self.slot_buffer(variable, slot)?;
        if values.dtype() != dtype || values.len() != len {
            return Err(Error::Internal(format!("a write of variable {variable}'s {slot:?} from the wrong tensor")));
        }
        // SAFETY: as in `read_slot`.
        unsafe { self.device.upload(self.device.address(buffer), tensor_bytes(values)) }?;
        // From pinned memory the copy could still be reading the caller's values.
        self.device.synchronize()
    }

    fn download_indices(&self, address: u64, out: &mut [i64]) -> Result<()> {
        // SAFETY: the caller of apply_gradients_on_device guarantees that `address` holds the
        // stated number of int64 indices in this device's memory.
        unsafe { self.device.download(address, bytes_mut(out)) }
    }

    fn finalize_on_device(&mut self, variable: usize, values: DeviceTensor) -> Result<()> {
        let (average, dtype, len) = self.slot_buffer(variable, Slot::Average)?;
        let average = self.device.address(average);
        let state = self.variable(variable)?;
        let Some(master) = state.master.as_ref().map(|m| self.device.address(m)) else {
            // SAFETY: the average and the caller's values (checked against the layout) both hold
            // `len` elements of `dtype`; the caller's are its own memory.
            return unsafe { self.device.copy(values.address, average, len * dtype.size()) };
        };
        // A master copy takes the average, the caller's variable its rounding (on the host).
        let mut widened = vec![0f32; len];
        let mut rounded = crate::dtype::TensorBuf::zeros(values.dtype, len)?;
        // SAFETY: as above; the master holds `len` float32s, `rounded` `len` of the values' dtype.
        unsafe {
            self.device.copy(master, average, len * 4)?;
            self.device.download(average, bytes_mut(&mut widened))?;
            crate::float::round_into(rounded.as_mut(), &widened);
            self.device.upload(values.address, tensor_bytes(rounded.as_ref()))
        }
    }
}
