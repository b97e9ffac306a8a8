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
//! The caller's values and gradients are host memory here: each pass uploads what it reads into
//! a staging buffer on the device and a step downloads the values it wrote.

pub(crate) mod abi;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "host-kernels")]
pub(crate) mod host;

use abi::{CheckEntry, CheckParams, Leaf, LeafParams, NormEntry, Plain, StepEntry, StepParams, bytes, bytes_mut};

use super::cpu::widened;
use super::{Engine, NonFinite, Slot, Slots, StepPlan, VariableLayout};
use crate::dtype::{DType, Tensor, TensorMut, TensorRef, each_dtype, with_float};
use crate::error::{Error, Result};
use crate::float::{Bf16Math, F16Math, Ftz, Real};
use crate::kernels::{self, StepScalars};
use crate::reduction;
use crate::tensor::{Gradient, GradientEntries};

/// The kernel source, compiled by NVRTC for a GPU and by the host compiler for the tests.
pub(crate) const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// The kernels of `kernels.cu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Step,
    LeafSums,
    FirstNonFinite,
}

impl Kernel {
    pub const ALL: [Kernel; 3] = [Kernel::Step, Kernel::LeafSums, Kernel::FirstNonFinite];

    /// The kernel's name in the source.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Step => "adamw_step",
            Kernel::LeafSums => "adamw_leaf_sums",
            Kernel::FirstNonFinite => "adamw_first_non_finite",
        }
    }
}

/// Memory and kernels of one device, in the order the calls are made: a download sees every
/// upload and launch before it.
pub(crate) trait Backend: Send {
    /// An allocation in the device's memory.
    type Buffer: Send;

    /// `bytes` zeroed bytes (at least one, so that every buffer has an address).
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer>;
    /// The device address of a buffer's first byte.
    fn address(&self, buffer: &Self::Buffer) -> u64;
    /// Copies `data` to `buffer` at `offset` (within its size).
    fn upload(&self, buffer: &mut Self::Buffer, offset: usize, data: &[u8]) -> Result<()>;
    /// Copies `out.len()` bytes of `buffer` at `offset` into `out`, once every earlier call is done.
    fn download(&self, buffer: &Self::Buffer, offset: usize, out: &mut [u8]) -> Result<()>;
    /// Launches `kernel` on a grid of `grid` blocks of `block` threads, with `params` (the bytes
    /// of its one parameter struct).
    fn launch(&self, kernel: Kernel, grid: u32, block: u32, params: &[u8]) -> Result<()>;
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

    fn at_least<B: Backend<Buffer = T>>(&mut self, device: &B, bytes: usize) -> Result<&mut T> {
        if self.buffer.is_none() || self.capacity < bytes {
            let capacity = bytes.max(self.capacity.saturating_mul(2)).max(256);
            self.buffer = None; // the old one is freed before the new one is allocated
            self.buffer = Some(device.alloc(capacity)?);
            self.capacity = capacity;
        }
        self.buffer.as_mut().ok_or_else(|| Error::Internal("a staging buffer".into()))
    }
}

/// Where data staged for a pass sits in the staging buffer: offsets rounded up to 256 bytes, so
/// that every tensor starts aligned for any vector load.
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

/// The device engine over backend `B`.
pub(crate) struct DeviceEngine<B: Backend> {
    device: B,
    variables: Vec<DeviceVariable<B::Buffer>>,
    slots: Slots,
    /// The caller's values and gradients (and sorted sparse indices) of the current pass.
    data: Staging<B::Buffer>,
    /// The pass's table.
    table: Staging<B::Buffer>,
    /// A second table (the leaves of the norms) and the passes' results.
    aux: Staging<B::Buffer>,
    results: Staging<B::Buffer>,
    /// Host copies reused from call to call.
    step_entries: Vec<StepEntry>,
    norm_entries: Vec<NormEntry>,
    leaves: Vec<Leaf>,
    leaf_sums: Vec<f64>,
    check_entries: Vec<CheckEntry>,
    first_bad: Vec<u64>,
    pairs: Vec<[u64; 2]>,
    /// Per entry of the call: where its gradient (and values, for a step) were staged.
    gradient_at: Vec<Option<usize>>,
    values_at: Vec<Option<usize>>,
    pairs_at: Vec<Option<(usize, usize)>>,
}

impl<B: Backend> DeviceEngine<B> {
    pub fn new(device: B) -> Self {
        DeviceEngine {
            device,
            variables: Vec::new(),
            slots: Slots { amsgrad: false, ema: false },
            data: Staging::new(),
            table: Staging::new(),
            aux: Staging::new(),
            results: Staging::new(),
            step_entries: Vec::new(),
            norm_entries: Vec::new(),
            leaves: Vec::new(),
            leaf_sums: Vec::new(),
            check_entries: Vec::new(),
            first_bad: Vec::new(),
            pairs: Vec::new(),
            gradient_at: Vec::new(),
            values_at: Vec::new(),
            pairs_at: Vec::new(),
        }
    }

    fn variable(&self, i: usize) -> Result<&DeviceVariable<B::Buffer>> {
        self.variables.get(i).ok_or_else(|| Error::Internal(format!("no variable {i}")))
    }

    /// Stages every gradient of the call (and with `values` the caller's values and the sorted
    /// rows of sparse gradients) into `data`, recording where each went.
    fn stage(&mut self, entries: &mut dyn GradientEntries, values: bool) -> Result<()> {
        let mut plan = StagingPlan::default();
        self.gradient_at.clear();
        self.values_at.clear();
        self.pairs_at.clear();
        self.pairs.clear();
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let (mut g, mut x, mut p) = (None, None, None);
            if let Some(gradient) = entry.gradient {
                g = Some(plan.place(tensor_bytes(gradient.values()).len()));
                if values {
                    x = Some(plan.place(entry.values.len() * entry.values.dtype().size()));
                    if let Gradient::Sparse { indices, .. } = gradient {
                        let start = self.pairs.len();
                        self.pairs.extend(indices.iter().enumerate().map(|(pos, &row)| [row as u64, pos as u64]));
                        self.pairs[start..].sort_unstable();
                        p = Some((plan.place(indices.len() * 16), start));
                    }
                }
            }
            self.gradient_at.push(g);
            self.values_at.push(x);
            self.pairs_at.push(p);
        }
        let data = self.data.at_least(&self.device, plan.len)?;
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let Some(gradient) = entry.gradient else { continue };
            if let Some(at) = self.gradient_at[i] {
                self.device.upload(data, at, tensor_bytes(gradient.values()))?;
            }
            if let Some(at) = self.values_at[i] {
                self.device.upload(data, at, tensor_bytes(entry.values.as_ref()))?;
            }
            if let (Some((at, start)), Gradient::Sparse { indices, .. }) = (self.pairs_at[i], gradient) {
                self.device.upload(data, at, bytes(&self.pairs[start..start + indices.len()]))?;
            }
        }
        Ok(())
    }

    fn data_address(&self, offset: Option<usize>) -> u64 {
        match (offset, &self.data.buffer) {
            (Some(at), Some(buffer)) => self.device.address(buffer) + at as u64,
            _ => 0,
        }
    }

    /// Uploads `table` into `staging` and returns its address.
    fn upload_table<T: Plain>(device: &B, staging: &mut Staging<B::Buffer>, table: &[T]) -> Result<u64> {
        let data = bytes(table);
        let buffer = staging.at_least(device, data.len())?;
        device.upload(buffer, 0, data)?;
        Ok(device.address(buffer))
    }

    fn try_norm_partials(
        &mut self,
        entries: &mut dyn GradientEntries,
        halve: bool,
        loss_scale: Option<f32>,
        sums: &mut Vec<f64>,
    ) -> Result<()> {
        self.stage(entries, false)?;
        self.norm_entries.clear();
        self.leaves.clear();
        let mut with_gradient = Vec::new();
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let Some(gradient) = entry.gradient else { continue };
            let layout = self.variable(entry.variable)?.layout;
            let (terms, tree) = (layout.terms_dtype(), layout.tree_dtype(halve));
            let index = self.norm_entries.len() as u64;
            let mut flags = if halve { abi::flags::HALVE } else { 0 };
            if loss_scale.is_some() {
                flags |= abi::flags::UNSCALE;
            }
            self.norm_entries.push(NormEntry {
                gradient: self.data_address(self.gradient_at[i]),
                unscale: loss_scale.map_or(0, |scale| unscale_bits(terms, scale)),
                gradient_dtype: abi::dtype_code(gradient.values().dtype()),
                terms_dtype: abi::dtype_code(terms),
                tree_dtype: abi::dtype_code(tree),
                flags,
            });
            let n = gradient.values().len();
            let leaves = &mut self.leaves;
            with_float!(tree, T => reduction::for_each_leaf::<T>(0, n, &mut |first, len| {
                leaves.push(Leaf { entry: index, first: first as u64, len: len as u64 })
            }), _ => {});
            with_gradient.push((n, terms, tree));
        }
        if self.leaves.is_empty() {
            sums.extend(with_gradient.iter().map(|_| 0.0));
            return Ok(());
        }
        let count = self.leaves.len();
        let entries_at = Self::upload_table(&self.device, &mut self.table, &self.norm_entries)?;
        let leaves_at = Self::upload_table(&self.device, &mut self.aux, &self.leaves)?;
        let results = self.results.at_least(&self.device, count * 8)?;
        let params = LeafParams {
            entries: entries_at,
            leaves: leaves_at,
            sums: self.device.address(results),
            count: count as u64,
        };
        let grid = as_u32((count as u64).div_ceil(abi::BLOCK as u64), "clip-norm leaves")?;
        self.device.launch(Kernel::LeafSums, grid, abi::BLOCK, bytes(std::slice::from_ref(&params)))?;
        self.leaf_sums.clear();
        self.leaf_sums.resize(count, 0.0);
        self.device.download(results, 0, bytes_mut(&mut self.leaf_sums))?;
        // The CPU engine's tree over each gradient's leaves, in order.
        let mut next = self.leaf_sums.iter();
        for (n, terms, tree) in with_gradient {
            let total = with_float!(tree, T => {
                let sum = reduction::tree_sum::<T>(0, n, &mut |_, _| {
                    Ftz::new(T::from_f64(next.next().copied().unwrap_or(0.0)))
                });
                sum.get().to_f64()
            }, _ => 0.0);
            sums.push(if tree == terms {
                total
            } else {
                // bfloat16's reduce_sum: the float32 total rounded once.
                with_float!(terms, G => G::from_f32(total as f32).to_f64(), _ => total)
            });
        }
        Ok(())
    }

    fn try_find_non_finite(
        &mut self,
        entries: &mut dyn GradientEntries,
        loss_scale: Option<f32>,
    ) -> Result<Option<NonFinite>> {
        self.stage(entries, false)?;
        self.check_entries.clear();
        let mut blocks = 0u64;
        let mut checked = Vec::new();
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let Some(gradient) = entry.gradient else { continue };
            let layout = self.variable(entry.variable)?.layout;
            let values = gradient.values();
            // The unscaled gradient, in the dtype it is unscaled in (a master's float32).
            let check = if loss_scale.is_some() && layout.has_master() { DType::F32 } else { values.dtype() };
            let len = values.len() as u64;
            self.check_entries.push(CheckEntry {
                gradient: self.data_address(self.gradient_at[i]),
                len,
                first_block: blocks,
                unscale: loss_scale.map_or(0, |scale| unscale_bits(check, scale)),
                gradient_dtype: abi::dtype_code(values.dtype()),
                check_dtype: abi::dtype_code(check),
                flags: if loss_scale.is_some() { abi::flags::UNSCALE } else { 0 },
                pad: 0,
            });
            blocks += blocks_for(len);
            checked.push(i);
        }
        if blocks == 0 {
            return Ok(None);
        }
        let count = self.check_entries.len();
        let entries_at = Self::upload_table(&self.device, &mut self.table, &self.check_entries)?;
        self.first_bad.clear();
        self.first_bad.resize(count, u64::MAX);
        let results = self.results.at_least(&self.device, count * 8)?;
        self.device.upload(results, 0, bytes(&self.first_bad))?;
        let params = CheckParams {
            entries: entries_at,
            first_bad: self.device.address(results),
            count: as_u32(count as u64, "gradients")?,
            total_blocks: as_u32(blocks, "blocks")?,
        };
        self.device.launch(
            Kernel::FirstNonFinite,
            params.total_blocks,
            abi::BLOCK,
            bytes(std::slice::from_ref(&params)),
        )?;
        self.device.download(results, 0, bytes_mut(&mut self.first_bad))?;
        let Some((k, &element)) = self.first_bad.iter().enumerate().find(|(_, at)| **at != u64::MAX) else {
            return Ok(None);
        };
        let entry = checked[k];
        let gradient = entries.get(entry).gradient.map(|g| g.values());
        let value = gradient.and_then(|g| element_f64(g, element as usize)).unwrap_or(f64::NAN);
        Ok(Some(NonFinite { entry, element: element as usize, value }))
    }

    fn try_step(&mut self, plan: &StepPlan<'_>, entries: &mut dyn GradientEntries) -> Result<()> {
        self.stage(entries, true)?;
        self.step_entries.clear();
        let mut blocks = 0u64;
        let mut with_gradient = 0;
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let Some(gradient) = entry.gradient else { continue };
            let k = with_gradient;
            with_gradient += 1;
            let state = self.variable(entry.variable)?;
            let layout = state.layout;
            let mut flags = 0;
            let ops = plan.ops(entry.variable);
            if ops.decay {
                flags |= abi::flags::DECAY;
            }
            if ops.overwrite_with_average {
                flags |= abi::flags::OVERWRITE;
            }
            if self.slots.amsgrad {
                flags |= abi::flags::AMSGRAD;
            }
            if self.slots.ema {
                flags |= abi::flags::EMA;
            }
            if layout.has_master() {
                flags |= abi::flags::MASTER;
            }
            let (pairs, pair_count) = match (self.pairs_at[i], gradient) {
                (Some((at, _)), Gradient::Sparse { indices, .. }) => {
                    flags |= abi::flags::SPARSE;
                    (self.data_address(Some(at)), indices.len() as u64)
                }
                _ => (0, 0),
            };
            // A master steps in float32; otherwise the state's dtype.
            let op = with_float!(if layout.has_master() { DType::F32 } else { layout.dtype }, F => op_bits::<F>(plan, k), _ => [0; 5]);
            let address = |b: &Option<B::Buffer>| b.as_ref().map_or(0, |b| self.device.address(b));
            self.step_entries.push(StepEntry {
                values: self.data_address(self.values_at[i]),
                gradient: self.data_address(self.gradient_at[i]),
                m: self.device.address(&state.m),
                v: self.device.address(&state.v),
                vhat: address(&state.vhat),
                average: address(&state.average),
                master: address(&state.master),
                pairs,
                len: layout.len as u64,
                row_len: layout.row_len.max(1) as u64,
                offset: layout.offset as u64,
                pair_count,
                first_block: blocks,
                op,
                state_dtype: abi::dtype_code(layout.dtype),
                values_dtype: abi::dtype_code(layout.values_dtype),
                gradient_dtype: abi::dtype_code(gradient.values().dtype()),
                flags,
            });
            blocks += blocks_for(layout.len as u64);
        }
        if blocks > 0 {
            let mut params = StepParams {
                entries: Self::upload_table(&self.device, &mut self.table, &self.step_entries)?,
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
            self.device.launch(Kernel::Step, params.total_blocks, abi::BLOCK, bytes(std::slice::from_ref(&params)))?;
        }
        // The caller's values back.
        let data = self.data.buffer.as_ref();
        for i in 0..entries.len() {
            let entry = entries.get(i);
            if let (Some(at), Some(data)) = (self.values_at[i], data) {
                self.device.download(data, at, tensor_bytes_mut(entry.values))?;
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

/// Element `i` of a tensor as float64, if it has one.
fn element_f64(t: TensorRef<'_>, i: usize) -> Option<f64> {
    match t {
        Tensor::F32(x) => x.get(i).map(|&v| v as f64),
        Tensor::F64(x) => x.get(i).copied(),
        Tensor::BF16(x) => x.get(i).map(|v| v.to_f64()),
        Tensor::F16(x) => x.get(i).map(|v| v.to_f64()),
        Tensor::I64(_) => None,
    }
}

/// A device buffer holding `values` (zeros of `dtype` when `None`), `len` elements.
fn device_tensor<B: Backend>(device: &B, dtype: DType, len: usize, values: Option<TensorRef<'_>>) -> Result<B::Buffer> {
    let mut buffer = device.alloc(len * dtype.size())?;
    if let Some(values) = values {
        let copy = widened(values, dtype)?;
        device.upload(&mut buffer, 0, tensor_bytes(copy.as_ref()))?;
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
        self.variables = variables;
        self.slots = slots;
        Ok(())
    }

    fn on_device(&self) -> bool {
        true
    }

    fn set_threads(&mut self, _threads: usize) -> Result<()> {
        Ok(()) // the device's threads are its own
    }

    fn reserve_sparse(&mut self, indices: usize) -> Result<()> {
        let oom = |_| Error::OutOfMemory(format!("cannot reserve room for {indices} sparse indices"));
        self.pairs.try_reserve(indices.saturating_sub(self.pairs.len())).map_err(oom)
    }

    fn find_non_finite(
        &mut self,
        entries: &mut dyn GradientEntries,
        loss_scale: Option<f32>,
    ) -> Result<Option<NonFinite>> {
        self.try_find_non_finite(entries, loss_scale)
    }

    fn leaf_census(&self, _halve: bool, _out: &mut Vec<f64>) {}

    fn set_split_leaves(&mut self, _halve: bool, _census: &[f64]) -> Result<usize> {
        Ok(0) // no variable is sharded (build refuses shards)
    }

    fn norm_partials(
        &mut self,
        entries: &mut dyn GradientEntries,
        halve: bool,
        loss_scale: Option<f32>,
        sums: &mut Vec<f64>,
        _shared: &mut Vec<f64>,
    ) -> Result<()> {
        self.try_norm_partials(entries, halve, loss_scale, sums)
    }

    fn finish_norms(&self, _entries: &mut dyn GradientEntries, _halve: bool, _shared: &[f64], _sums: &mut [f64]) {}

    fn step(&mut self, plan: &StepPlan<'_>, entries: &mut dyn GradientEntries) -> Result<()> {
        self.try_step(plan, entries)
    }

    fn read_slot(&self, variable: usize, slot: Slot, out: TensorMut<'_>) -> Result<()> {
        let (buffer, dtype, len) = self.slot_buffer(variable, slot)?;
        if out.dtype() != dtype || out.len() != len {
            return Err(Error::Internal(format!("a read of variable {variable}'s {slot:?} into the wrong tensor")));
        }
        self.device.download(buffer, 0, tensor_bytes_mut(out))
    }

    fn write_slot(&mut self, variable: usize, slot: Slot, values: TensorRef<'_>) -> Result<()> {
        let (_, dtype, len) = self.slot_buffer(variable, slot)?;
        if values.dtype() != dtype || values.len() != len {
            return Err(Error::Internal(format!("a write of variable {variable}'s {slot:?} from the wrong tensor")));
        }
        let state =
            self.variables.get_mut(variable).ok_or_else(|| Error::Internal(format!("no variable {variable}")))?;
        let buffer = match slot {
            Slot::M => Some(&mut state.m),
            Slot::V => Some(&mut state.v),
            Slot::Vhat => state.vhat.as_mut(),
            Slot::Average => state.average.as_mut(),
            Slot::Master => state.master.as_mut(),
        };
        let buffer = buffer.ok_or_else(|| Error::Internal(format!("variable {variable} has no {slot:?} slot")))?;
        self.device.upload(buffer, 0, tensor_bytes(values))
    }
}
