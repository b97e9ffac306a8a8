//! The seam between what a step computes and where the state lives.
//!
//! The optimizer decides *what* a call computes: it validates the call, evaluates the schedule
//! and callbacks, and computes every per-step scalar (the rounded hyper-parameters, the bias
//! corrections, each gradient's clip) once, on the host, into a [`StepPlan`]. An [`Engine`]
//! decides *where* the optimizer state (m, v, vhat, EMA averages) lives and runs every pass over
//! it: the element-wise dense and sparse steps, the clip norms in Eigen's order, the non-finite
//! check, and the copies of a slot out and in. Everything else that touches state (`variables`,
//! `set_weights`, checkpoints, `finalize_variable_values`, the averages at build) goes through
//! those copies, so it works unchanged when the state lives on a device.
//!
//! The CPU engine ([`cpu`]) runs the element functions of `kernels` with SIMD, its tasks on
//! `parallel::Workers`; the device engine ([`device`]) runs the same arithmetic as kernels on a
//! GPU.

pub(crate) mod cpu;
#[cfg(any(feature = "cuda", feature = "host-kernels"))]
pub(crate) mod device;

use std::any::Any;
use std::sync::Arc;

use crate::config::Clipping;
use crate::dtype::{DType, TensorMut, TensorRef, with_float};
use crate::error::Result;
use crate::float::{Ftz, Real};
use crate::kernels::{Clip, GradientOp, StepScalars, VariableOps};
use crate::parallel::ParallelFor;
use crate::reduction;
use crate::tensor::{CallEntries, DeviceTensor};

/// Where one model variable's state sits, fixed at build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VariableLayout {
    /// The dtype of the variable's state (its slots, and its master copy if any).
    pub dtype: DType,
    /// The variable's own dtype, which the caller's values have: the state's, or 16 bits with a
    /// float32 master copy.
    pub values_dtype: DType,
    /// Elements held: the whole variable, or its shard.
    pub len: usize,
    /// Elements per row (the product of the trailing dimensions), for sparse gradients.
    pub row_len: usize,
    /// The flat index in the whole variable of the first element held (a shard's offset, else 0).
    pub offset: usize,
    /// Elements of the whole variable (`len` unless sharded).
    pub full_len: usize,
    /// Whether only a shard is held (sparse rows then count only their elements in the shard).
    pub sharded: bool,
}

impl VariableLayout {
    /// Whether the variable has a float32 master copy (its state's dtype is not its own).
    pub fn has_master(&self) -> bool {
        self.dtype != self.values_dtype
    }

    /// The dtype of the variable's clip-norm terms: the gradient's, or a master's float32.
    pub fn terms_dtype(&self) -> DType {
        if self.has_master() { DType::F32 } else { self.values_dtype }
    }

    /// The dtype of the tree the variable's clip-norm sum runs in: its terms', or float32 for
    /// bfloat16's `tf.reduce_sum` (`reduction::sums_in_f32`).
    pub fn tree_dtype(&self, halve: bool) -> DType {
        let terms = self.terms_dtype();
        with_float!(terms, G => if reduction::sums_in_f32::<G>(halve) { DType::F32 } else { terms }, _ => terms)
    }

    /// The clip-norm sum, as float64, from the total of its tree ([`VariableLayout::tree_dtype`]):
    /// the same, or for bfloat16's `reduce_sum` the float32 total rounded once.
    pub fn norm_sum(&self, halve: bool, tree_total: f64) -> f64 {
        let terms = self.terms_dtype();
        if self.tree_dtype(halve) == terms {
            return tree_total;
        }
        with_float!(terms, G => G::from_f32(tree_total as f32).to_f64(), _ => tree_total)
    }
}

/// One of the state tensors an engine holds per variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The first moment.
    M,
    /// The second moment.
    V,
    /// The running maximum of v (amsgrad only).
    Vhat,
    /// The EMA of the variable (use_ema only).
    Average,
    /// The float32 master copy of a 16-bit variable (master_weights only).
    Master,
}

/// Which optional slots every variable has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slots {
    pub amsgrad: bool,
    pub ema: bool,
}

/// The first non-finite gradient value of a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NonFinite {
    /// The entry's position in the call.
    pub entry: usize,
    /// The element's position in the entry's gradient values.
    pub element: usize,
    pub value: f64,
}

/// The scalars of one step in one dtype.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DTypePlan<F> {
    pub scalars: StepScalars<F>,
    /// The clip of every gradient under global_clipnorm (`Clip::None` otherwise).
    pub global_clip: Clip<F>,
    /// With loss scaling, the factor that unscales the gradients (`kernels::unscale_factor`).
    pub unscale: Option<Ftz<F>>,
    /// Under global_clipnorm: Keras' `global_norm` in this dtype, for the step report.
    pub global_norm: Option<Ftz<F>>,
}

/// Everything an engine needs to run one step besides the entries, all computed on the host by
/// the optimizer, so that no two engines can disagree about a scalar.
#[derive(Debug)]
pub(crate) struct StepPlan<'a> {
    /// Per dtype the call's state uses (and only those, so that a call pays for its dtypes).
    pub f32: Option<DTypePlan<f32>>,
    pub f64: Option<DTypePlan<f64>>,
    pub bf16: Option<DTypePlan<half::bf16>>,
    pub f16: Option<DTypePlan<half::f16>>,
    pub clipping: Clipping,
    /// Per entry with a gradient, in list order: its sum of squares (all-reduced when sharded),
    /// which clipnorm divides by.
    pub norm_partials: &'a [f64],
    /// Per built variable: whether weight decay applies.
    pub decay: &'a [bool],
    /// Per built variable: its own scalars when its multipliers are not 1
    /// (`optimizer::Multipliers`), else `Shared`.
    pub variable_scalars: &'a [VariableScalars],
    /// The EMA overwrite falls on this step.
    pub overwrite_with_average: bool,
}

/// A variable's own step scalars, in the dtype its step computes in (a master's float32).
#[derive(Debug, Clone, Copy)]
pub(crate) enum VariableScalars {
    /// The dtype's scalars, shared by every variable without multipliers.
    Shared,
    F32(StepScalars<f32>),
    F64(StepScalars<f64>),
    Bf16(StepScalars<half::bf16>),
    F16(StepScalars<half::f16>),
}

impl VariableScalars {
    /// The scalars of `hyper` in `dtype`.
    pub fn new(dtype: DType, hyper: &crate::kernels::StepHyper) -> Self {
        match dtype {
            DType::F64 => VariableScalars::F64(StepScalars::new(hyper)),
            DType::BF16 => VariableScalars::Bf16(StepScalars::new(hyper)),
            DType::F16 => VariableScalars::F16(StepScalars::new(hyper)),
            _ => VariableScalars::F32(StepScalars::new(hyper)),
        }
    }

    fn get<F: Real>(&self) -> Option<&StepScalars<F>> {
        let scalars: &dyn Any = match self {
            VariableScalars::Shared => return None,
            VariableScalars::F32(s) => s,
            VariableScalars::F64(s) => s,
            VariableScalars::Bf16(s) => s,
            VariableScalars::F16(s) => s,
        };
        scalars.downcast_ref()
    }
}

impl StepPlan<'_> {
    /// Under global_clipnorm: Keras' global norm and the factor it clipped by, as float64 (from
    /// the call's one dtype of clip-norm terms).
    pub fn global_clip(&self) -> Option<(f64, f64)> {
        fn of<F: Real>(plan: &Option<DTypePlan<F>>) -> Option<(f64, f64)> {
            let plan = plan.as_ref()?;
            match (plan.global_norm, plan.global_clip) {
                (Some(norm), Clip::ByGlobalNorm { scale }) => Some((norm.get().to_f64(), scale.get().to_f64())),
                _ => None,
            }
        }
        of(&self.f32).or_else(|| of(&self.f64)).or_else(|| of(&self.bf16)).or_else(|| of(&self.f16))
    }

    /// The step's scalars for built variable `variable`, which computes in dtype `F`: its own
    /// with multipliers, else the dtype's.
    pub fn scalars<F: Real>(&self, variable: usize) -> &StepScalars<F> {
        match self.variable_scalars.get(variable).and_then(VariableScalars::get::<F>) {
            Some(own) => own,
            None => &self.dtype_plan::<F>().scalars,
        }
    }

    fn dtype_plan<F: Real>(&self) -> &DTypePlan<F> {
        let plan: &dyn Any = match F::DTYPE {
            DType::F64 => &self.f64,
            DType::BF16 => &self.bf16,
            DType::F16 => &self.f16,
            _ => &self.f32,
        };
        let plan: Option<&Option<DTypePlan<F>>> = plan.downcast_ref();
        plan.and_then(Option::as_ref).expect("a step plan for every dtype of the call's state")
    }

    /// What the `k`-th entry with a gradient does to its gradient: unscale, then clip.
    pub fn gradient_op<F: Real>(&self, k: usize) -> GradientOp<F> {
        GradientOp { unscale: self.dtype_plan::<F>().unscale, clip: self.clip(k) }
    }

    /// The clip of the `k`-th entry with a gradient.
    fn clip<F: Real>(&self, k: usize) -> Clip<F> {
        match self.clipping {
            Clipping::None => Clip::None,
            Clipping::Norm(clipnorm) => {
                let partial = self.norm_partials.get(k).copied().unwrap_or(0.0);
                Clip::by_norm(Ftz::new(F::from_f64(partial)), clipnorm)
            }
            Clipping::GlobalNorm(_) => self.dtype_plan::<F>().global_clip,
            Clipping::Value(clipvalue) => Clip::by_value(clipvalue),
        }
    }

    /// What happens to built variable `variable` besides the Adam update.
    pub fn ops(&self, variable: usize) -> VariableOps {
        VariableOps { decay: self.decay[variable], overwrite_with_average: self.overwrite_with_average }
    }
}

/// Holds the optimizer state and runs the passes over it. Entries are host memory, or device
/// memory for an engine on a device (the optimizer passes device memory to no other engine).
/// Every method receives entries the
/// optimizer has validated against the layouts given to `build` (indices known, dtypes equal,
/// lengths matching, sparse indices in range), and none of them allocates unless it says so.
pub(crate) trait Engine: Send {
    /// Allocates the state of every variable: m and v zeroed, vhat zeroed with amsgrad, and
    /// from `initial` (the variables' values, one per variable, when EMA or a master copy needs
    /// them) the averages with EMA and the master copies, widened to the state's dtype. All or
    /// nothing: on error the engine is as it was.
    fn build(&mut self, layouts: &[VariableLayout], slots: Slots, initial: &[TensorRef<'_>]) -> Result<()>;

    /// Allocates the state of more variables after build, numbered after the built ones, as
    /// [`Engine::build`] would have (all or nothing). Only an engine on the host can.
    fn add_variables(&mut self, _layouts: &[VariableLayout], _slots: Slots, _initial: &[TensorRef<'_>]) -> Result<()> {
        Err(crate::error::Error::InvalidArgument("this engine cannot add variables after build".into()))
    }

    /// How many threads a step may use: 0 a pool shared by the process, 1 the calling thread
    /// only, N a pool of N threads of this engine's own.
    fn set_threads(&mut self, threads: usize) -> Result<()>;

    /// Runs the step's tasks through the caller's parallel-for (`None`: the threads of
    /// `set_threads`). An engine on a device has no host tasks and keeps it for nothing.
    fn set_parallel_for(&mut self, hook: Option<Arc<dyn ParallelFor>>);

    /// Reserves what a sparse gradient of up to `indices` indices needs, so that no step allocates.
    fn reserve_sparse(&mut self, indices: usize) -> Result<()>;

    /// The first NaN or infinity in the gradients of the call, in entry order; with
    /// `loss_scale`, in the gradients unscaled by it (`kernels::unscale_factor`).
    fn find_non_finite(&mut self, entries: &mut CallEntries<'_>, loss_scale: Option<f32>) -> Result<Option<NonFinite>>;

    /// Appends, for every sharded variable in order, this rank's census of the leaves of its
    /// clip-norm sum (`reduction::leaf_census`; `halve`: of `l2_loss` terms), for the all-reduce
    /// that tells which leaves the ranks' shard boundaries split.
    fn leaf_census(&self, halve: bool, out: &mut Vec<f64>);

    /// Takes the all-reduced census of [`Engine::leaf_census`]; an error (and no change) if the
    /// ranks' shards do not hold every element of a variable exactly once. Returns how many
    /// slots the largest call's [`Engine::norm_partials`] may append to `shared`.
    fn set_split_leaves(&mut self, halve: bool, census: &[f64]) -> Result<usize>;

    /// Pushes onto `sums`, per entry with a gradient in list order, the sum of its squares
    /// (`halve`: of `(g * g) * 0.5`, Keras' `l2_loss`) in Eigen's order and in the state's dtype
    /// (a widened gradient for a master copy), as float64; with `loss_scale`, of the gradients
    /// unscaled by it. For a sharded variable with a dense gradient it pushes 0 instead and
    /// appends this rank's part of the sum to `shared` (`reduction::contribute`, after
    /// `set_split_leaves`), which [`Engine::finish_norms`] completes after the all-reduce. A
    /// sparse gradient is whole on every rank, and its sum is taken whole. `sums` has room for
    /// every built variable.
    fn norm_partials(
        &mut self,
        entries: &mut CallEntries<'_>,
        halve: bool,
        loss_scale: Option<f32>,
        sums: &mut Vec<f64>,
        shared: &mut Vec<f64>,
    ) -> Result<()>;

    /// After the all-reduce of `shared`: the sum of every sharded entry's `norm_partials` left
    /// to it, in `sums` (`reduction::combine`), the bits one process gets.
    fn finish_norms(&self, entries: &mut CallEntries<'_>, halve: bool, shared: &[f64], sums: &mut [f64]);

    /// Runs the step of `plan` over every entry with a gradient: decay, clip, moments, update
    /// and EMA, element by element, writing the caller's values and the state. A variable with a
    /// master copy is stepped in float32 on the master (its gradient widened exactly) and the
    /// caller's values receive the master rounded to nearest even.
    /// With `squares` (room for every entry with a gradient), also writes there, per entry in
    /// list order, the step report's sum of squares of its gradient as passed
    /// (`crate::squares`), taken in the update pass; an engine that cannot writes NaN.
    /// Fails only when a device does (the CPU engine never fails here).
    fn step(&mut self, plan: &StepPlan<'_>, entries: &mut CallEntries<'_>, squares: Option<&mut [f64]>) -> Result<()>;

    /// Keras 3's gradient accumulation (docs/numerics.md §25) over every entry with a gradient:
    /// its accumulator (in `accumulators`, by built variable: the variable's dtype and length)
    /// becomes `acc + g` on a call that only accumulates (`average_over` `None`), or the update
    /// call's gradient `(g + acc) / steps` (`Some(steps)`). A sparse gradient counts as the
    /// dense tensor TF makes of it (zeros, each row the in-order sum of its occurrences). Only
    /// an engine on the host has one.
    fn accumulate(
        &mut self,
        _entries: &mut CallEntries<'_>,
        _accumulators: &mut [crate::dtype::TensorBuf],
        _average_over: Option<i64>,
    ) -> Result<()> {
        Err(crate::error::Error::Internal("gradient accumulation on an engine without it".into()))
    }

    /// Keras 3's moving-average update outside a step (docs/numerics.md §25): every listed
    /// entry (with `without_gradient_only`, those without a gradient) takes
    /// `average = (momentum * average) + ((1 - momentum) * values)` with the scalars of `hyper`,
    /// and with `overwrite` its values take the new average.
    fn update_averages(
        &mut self,
        _entries: &mut CallEntries<'_>,
        _hyper: &crate::kernels::StepHyper,
        _without_gradient_only: bool,
        _overwrite: bool,
    ) -> Result<()> {
        Err(crate::error::Error::Internal("moving averages outside a step on an engine without them".into()))
    }

    /// Whether the state lives on a device (what `get_config` reports as `jit_compile`).
    fn on_device(&self) -> bool {
        false
    }

    /// Where a device engine enqueues its work: a `CUstream` (0: the default stream).
    fn set_stream(&mut self, _stream: u64) -> Result<()> {
        Err(crate::error::Error::InvalidArgument(
            "only an optimizer on a device has a stream: call set_device first".into(),
        ))
    }

    /// Copies sparse indices from the device's memory to the host (to be checked there).
    fn download_indices(&self, _address: u64, _out: &mut [i64]) -> Result<()> {
        Err(crate::error::Error::Internal("device memory given to an engine on the host".into()))
    }

    /// `finalize_variable_values` for a variable in the device's memory: its values take its
    /// average (a master copy takes it, and the values its rounding).
    fn finalize_on_device(&mut self, _variable: usize, _values: DeviceTensor) -> Result<()> {
        Err(crate::error::Error::Internal("device memory given to an engine on the host".into()))
    }

    /// Copies a slot of built variable `variable` into `out` (its dtype and length).
    fn read_slot(&self, variable: usize, slot: Slot, out: TensorMut<'_>) -> Result<()>;

    /// Replaces a slot of built variable `variable` with `values` (its dtype and length).
    fn write_slot(&mut self, variable: usize, slot: Slot, values: TensorRef<'_>) -> Result<()>;
}
