//! What an optimizer owns: its config, the counter, what build fixed about each variable, and
//! the engine that holds the slots; and the list of optimizer variables in Keras' order.

use regex::Regex;

use crate::config::{Config, CurrentValues};
use crate::dtype::{DType, TensorBuf};
use crate::engine::{Engine, Slot, VariableLayout, VariableScalars};
use crate::error::{Error, Result};

use super::multipliers::Multipliers;
use super::report::StepReport;

/// A model variable to build the optimizer over. Variables are identified afterwards by their
/// index in the list given to `build`; the name serves exclusion patterns and slot names.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableSpec {
    /// The variable's name (Keras' name without the `:0`), e.g. `dense/kernel`.
    pub name: String,
    /// Its dtype, which its slots share.
    pub dtype: DType,
    /// The whole variable's shape (also for a shard).
    pub shape: Vec<usize>,
    /// With a mesh: the part of the variable this optimizer holds state for.
    pub shard: Option<Shard>,
}

/// A contiguous range of a variable's flat (row-major) elements: `offset..offset + len`.
/// The values, gradients and slots of a sharded variable are that range only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// The first element held.
    pub offset: usize,
    /// How many elements are held.
    pub len: usize,
}

impl VariableSpec {
    /// A whole variable.
    pub fn new(name: impl Into<String>, dtype: DType, shape: &[usize]) -> Self {
        VariableSpec { name: name.into(), dtype, shape: shape.to_vec(), shard: None }
    }

    /// The same variable, of which only elements `offset..offset + len` are held here.
    pub fn sharded(mut self, offset: usize, len: usize) -> Self {
        self.shard = Some(Shard { offset, len });
        self
    }

    /// The element count, or an error when the shape's product does not fit in memory sizes.
    pub fn element_count(&self) -> Result<usize> {
        let fits = |n: usize| n.checked_mul(self.dtype.size()).is_some_and(|b| b <= isize::MAX as usize);
        let product = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| fits(n));
        // The row length is checked on its own: with a first dimension of 0 the product is 0
        // whatever the other dimensions are.
        match (product(&self.shape), product(self.shape.get(1..).unwrap_or(&[]))) {
            (Some(n), Some(_)) => Ok(n),
            _ => Err(Error::OutOfMemory(format!(
                "variable `{}` of shape {:?} has too many elements",
                self.name, self.shape
            ))),
        }
    }

    /// The Keras name (`name:0`), which exclusion patterns are searched in.
    pub(crate) fn keras_name(&self) -> String {
        format!("{}:0", self.name)
    }
}

/// What build fixed about one model variable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariableState {
    pub spec: VariableSpec,
    /// Where its state sits in the engine.
    pub layout: VariableLayout,
    /// The shape of its slots: the variable's, or `[len]` for a shard.
    pub slot_shape: Vec<usize>,
}

/// The optimizer's state once built.
pub(crate) struct Built {
    pub variables: Vec<VariableState>,
    /// Per variable: whether it is excluded from weight decay (by index, name pattern or
    /// `weight_decay_min_ndim`), fixed at build.
    pub excluded: Vec<bool>,
    /// Per variable: whether weight decay applies (not excluded, weight-decay multiplier not 0).
    pub decay: Vec<bool>,
    /// Per variable: its learning-rate and weight-decay multipliers.
    pub multipliers: Vec<Multipliers>,
    /// Per variable: its own step scalars when its multipliers are not 1, recomputed each step
    /// (room kept from build, so that a step allocates nothing).
    pub variable_scalars: Vec<VariableScalars>,
    /// Per variable: its gradient's norm in the last step (NaN when not listed or not computed).
    pub gradient_norms: Vec<f64>,
    /// Per gradient of a step, in list order: the report's sums of squares from the update pass
    /// (room for every variable).
    pub report_squares: Vec<f64>,
    /// Per variable, the number of the last call that listed it (duplicate detection).
    pub last_listed: Vec<u64>,
    pub call_number: u64,
    /// Per gradient of a step, in list order: its sum of squares (clipnorm) or `l2_loss`
    /// (global_clipnorm), combined across ranks when sharded. Room for every variable.
    pub norm_partials: Vec<f64>,
    /// With a mesh: this rank's part of the sharded clip norms, all-reduced each step (room for
    /// the largest call once `leaves_known`).
    pub norm_shared: Vec<f64>,
    /// With a mesh: whether the engine knows which leaves of the sharded norms the ranks'
    /// shard boundaries split (learnt from one all-reduced census at the first step that clips).
    pub leaves_known: bool,
    /// With `gradient_accumulation_steps`: per variable, Keras 3's gradient accumulator (the
    /// variable's dtype and length, zeroed at build and after every update call); else empty.
    pub accumulators: Vec<TensorBuf>,
}

/// Everything an optimizer owns.
pub(crate) struct State {
    pub config: Config,
    pub iterations: i64,
    /// The learning rate and betas of the last step (at creation: of step 0).
    pub current: CurrentValues,
    pub exclude_patterns: Vec<Regex>,
    pub exclude_variables: Vec<usize>,
    pub built: Option<Built>,
    /// Holds m, v, vhat and the averages, and runs the passes over them.
    pub engine: Box<dyn Engine>,
    /// With a loss scale: its current value (Keras' float32 `current_loss_scale`) and the count
    /// of finite steps since it last changed (Keras' int64 `good_steps`).
    pub loss_scale: f32,
    pub loss_scale_counter: i64,
    /// What the last step saw.
    pub report: StepReport,
    /// Whether steps without a clip by norm take the gradient norms in the update pass.
    pub report_norms: bool,
    /// The caller's parallel-for, given to every engine the optimizer makes.
    pub parallel_for: Option<std::sync::Arc<dyn crate::parallel::ParallelFor>>,
}

/// What one entry of Keras' `optimizer.variables` is: the counter, or a slot of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateKind {
    Iterations,
    Slot(Slot, usize),
    /// A variable's gradient accumulator (held by the optimizer, not the engine).
    Accumulator(usize),
}

impl StateKind {
    /// The model variable whose state this is (none for the counter).
    pub fn variable(self) -> Option<usize> {
        match self {
            StateKind::Iterations => None,
            StateKind::Slot(_, i) | StateKind::Accumulator(i) => Some(i),
        }
    }
}

fn slot_name(slot: Slot) -> &'static str {
    match slot {
        Slot::Average => "average",
        Slot::M => "m",
        Slot::V => "v",
        Slot::Vhat => "vhat",
        Slot::Master => "master",
    }
}

/// The name, dtype and shape of one optimizer variable.
#[derive(Debug, Clone, PartialEq)]
pub struct StateInfo {
    /// `iteration`, or `<optimizer name>/<slot>/<variable name>` (e.g. `AdamW/m/dense/kernel`).
    pub name: String,
    /// int64 for the counter, else the dtype of the variable's state (float32 for the slots and
    /// master of a 16-bit variable with a master copy).
    pub dtype: DType,
    /// `[]` for the counter, else the slot's shape (a shard's slots are `[len]`).
    pub shape: Vec<usize>,
    /// The number of elements.
    pub len: usize,
}

/// A copy of one optimizer variable: what it is, and its values.
#[derive(Debug)]
pub struct StateTensor {
    /// Its name, dtype and shape.
    pub info: StateInfo,
    /// Its values (`info.len` elements of `info.dtype`).
    pub values: TensorBuf,
}

impl State {
    /// Keras' order of the optimizer variables: `iteration`, then (EMA) one average per variable,
    /// then m and v interleaved per variable, then (amsgrad) one vhat per variable; then (an
    /// extension) one float32 master per variable that has one; then (Keras 3's gradient
    /// accumulation) one accumulator per variable.
    pub fn layout(&self) -> impl Iterator<Item = StateKind> + '_ {
        let variables = self.built.as_ref().map_or(&[][..], |b| b.variables.as_slice());
        let n = variables.len();
        let ema = if self.config.use_ema { n } else { 0 };
        let amsgrad = if self.config.amsgrad { n } else { 0 };
        let masters = variables.iter().enumerate().filter(|(_, v)| v.layout.has_master());
        std::iter::once(StateKind::Iterations)
            .chain((0..ema).map(|i| StateKind::Slot(Slot::Average, i)))
            .chain((0..2 * n).map(|k| StateKind::Slot(if k % 2 == 0 { Slot::M } else { Slot::V }, k / 2)))
            .chain((0..amsgrad).map(|i| StateKind::Slot(Slot::Vhat, i)))
            .chain(masters.map(|(i, _)| StateKind::Slot(Slot::Master, i)))
            .chain((0..self.built.as_ref().map_or(0, |b| b.accumulators.len())).map(StateKind::Accumulator))
    }

    pub fn num_state_tensors(&self) -> usize {
        self.layout().count()
    }

    pub fn kind(&self, index: usize) -> Option<StateKind> {
        self.layout().nth(index)
    }

    /// What optimizer variable `index` is.
    pub fn info(&self, index: usize) -> Option<StateInfo> {
        let (slot, i) = match self.kind(index)? {
            StateKind::Iterations => {
                return Some(StateInfo { name: "iteration".into(), dtype: DType::I64, shape: Vec::new(), len: 1 });
            }
            StateKind::Slot(slot, i) => (slot_name(slot), i),
            StateKind::Accumulator(i) => ("gradient_accumulator", i),
        };
        let var = &self.built.as_ref()?.variables[i];
        Some(StateInfo {
            name: format!("{}/{}/{}", self.config.name, slot, var.spec.name),
            dtype: var.layout.dtype,
            shape: var.slot_shape.clone(),
            len: var.layout.len,
        })
    }
}
