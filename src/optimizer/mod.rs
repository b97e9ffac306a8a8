//! The optimizer: the methods of Keras' AdamW over a config, a counter and an engine's state.
//! The caller owns the variables and passes them to each call; the optimizer owns its state,
//! allocated at build and never during a step. [`state`] is what it owns, [`validate`] what a
//! call rejects, [`step`] the order of one `apply_gradients` call.

mod accumulation;
mod multipliers;
mod report;
mod state;
mod step;
mod validate;

use regex::Regex;
use serde_json::Value;

use crate::config::{Config, Device, LearningRate};
use crate::dtype::{DType, Element, TensorBuf, TensorMut, TensorRef, each_float};
use crate::engine::cpu::CpuEngine;
use crate::engine::{Engine, Slot, Slots, VariableScalars};
use crate::error::{Error, Result, invalid};
use crate::tensor::{
    CallEntries, DeviceEntries, DeviceEntry, DeviceGradient, DeviceIndices, EntryShape, GradientEntries, GradientEntry,
    IndexCopies,
};

pub use multipliers::Multipliers;
pub use report::{NormSource, StepReport};
pub use state::{Shard, StateInfo, StateTensor, VariableSpec};
pub use validate::Weight;

use state::{Built, State, StateKind};

/// The checkpoint keys of the loss scale and its counter (not optimizer variables in Keras).
const LOSS_SCALE: &str = "loss_scale";
const LOSS_SCALE_COUNTER: &str = "loss_scale_counter";
/// The checkpoint keys of the per-variable multipliers (float64, one per built variable), written
/// only when one is not 1.
const LEARNING_RATE_MULTIPLIERS: &str = "learning_rate_multipliers";
const WEIGHT_DECAY_MULTIPLIERS: &str = "weight_decay_multipliers";

/// What an optimizer does with one model variable ([`Optimizer::variable_properties`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariableProperties {
    /// The variable's own dtype.
    pub dtype: DType,
    /// Its number of dimensions (of the whole variable when sharded).
    pub ndim: usize,
    /// Whether its step decays it: not excluded, and a weight-decay multiplier other than 0.
    pub decayed: bool,
    /// Whether it is excluded from weight decay (`exclude_from_weight_decay`, or
    /// `weight_decay_min_ndim`).
    pub excluded: bool,
    /// Its learning-rate and weight-decay multipliers ([`Optimizer::set_multipliers`]).
    pub multipliers: Multipliers,
    /// Whether it has a float32 master copy.
    pub has_master: bool,
}

/// `tf.keras.optimizers.AdamW`.
pub struct Optimizer {
    state: State,
    /// Sparse indices a device call gave in device memory, copied to the host; reused by every
    /// call so that such a step allocates nothing once it has grown.
    index_copies: IndexCopies,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("config", &self.state.config)
            .field("iterations", &self.state.iterations)
            .field("built", &self.state.built.as_ref().map(|b| b.variables.len()))
            .finish_non_exhaustive()
    }
}

impl Optimizer {
    /// Creates an optimizer. Callbacks are evaluated once here, at step 0, as Keras evaluates a
    /// schedule at construction (this is the rate `current_learning_rate` reports before a step).
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let current = step::hyper_at(&config, 0)?;
        let engine = engine_for(&config)?;
        let loss_scale = initial_loss_scale(config.loss_scale);
        let state = State {
            config,
            iterations: 0,
            current,
            exclude_patterns: Vec::new(),
            exclude_variables: Vec::new(),
            built: None,
            engine,
            loss_scale,
            loss_scale_counter: 0,
            report: StepReport::default(),
            report_norms: false,
            parallel_for: None,
        };
        Ok(Optimizer { state, index_copies: IndexCopies::default() })
    }

    /// `AdamW.from_config(json)`.
    pub fn from_config_json(json: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| Error::InvalidConfig(format!("config is not valid JSON: {e}")))?;
        Optimizer::new(Config::from_json(value)?)
    }

    /// The config the optimizer was made with (and `set_learning_rate` / `set_threads` changed).
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// `get_config()`, as Keras writes it.
    pub fn get_config(&self) -> Value {
        self.state.config.to_json(self.state.current, self.state.engine.on_device())
    }

    /// How many variables the optimizer was built with (0 before build).
    pub fn num_built_variables(&self) -> usize {
        self.state.built.as_ref().map_or(0, |b| b.variables.len())
    }

    /// The name of built variable `variable`, if there is one.
    pub fn built_variable_name(&self, variable: usize) -> Option<&str> {
        Some(&self.state.built.as_ref()?.variables.get(variable)?.spec.name)
    }

    /// The dtype of built variable `variable`, if there is one.
    pub fn variable_dtype(&self, variable: usize) -> Option<DType> {
        Some(self.state.built.as_ref()?.variables.get(variable)?.spec.dtype)
    }

    /// Checks that built variable `variable` exists and has `dtype`, with the messages
    /// `apply_gradients` gives: what a caller sizing buffers by the dtype checks first.
    pub fn check_variable_dtype(&self, variable: usize, dtype: DType) -> Result<()> {
        let built = self.state.built.as_ref().ok_or_else(|| validate::not_built("apply_gradients"))?;
        validate::check_variable_dtype(built, variable, dtype).map(drop)
    }

    /// Checks that a weight for optimizer variable `index` with `dtype` has that variable's dtype
    /// (an index past the last is ignored, as `set_weights` ignores extra weights).
    pub fn check_weight_dtype(&self, index: usize, dtype: DType) -> Result<()> {
        validate::check_weight_dtype(&self.state, index, dtype)
    }

    /// Changes the number of threads a step uses (see [`Config::threads`]).
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        self.state.engine.set_threads(threads)?;
        self.state.config.threads = threads;
        Ok(())
    }

    /// Runs the tasks of every step on the caller's threads through `hook` (see
    /// [`ParallelFor`](crate::ParallelFor) for the contract); `None` restores the threads of
    /// [`Config::threads`]. With a hook set the optimizer starts no thread of its own, and the
    /// bits are those of any other setting. An optimizer on a device keeps the hook for nothing
    /// (its passes run on the device).
    pub fn set_parallel_for(&mut self, hook: Option<std::sync::Arc<dyn crate::ParallelFor>>) {
        self.state.engine.set_parallel_for(hook.clone());
        self.state.parallel_for = hook;
    }

    /// Whether `build` has run.
    pub fn is_built(&self) -> bool {
        self.state.built.is_some()
    }

    /// The iteration counter: Keras' `optimizer.iterations`. With gradient accumulation it
    /// is Keras 3's, the number of updates (calls // steps); [`Optimizer::calls`] counts calls.
    pub fn iterations(&self) -> i64 {
        match self.state.config.gradient_accumulation_steps {
            Some(steps) => self.state.iterations.div_euclid(steps),
            None => self.state.iterations,
        }
    }

    /// The number of `apply_gradients` calls that counted (Keras 3's `_iterations`, what
    /// `variables()[0]` and checkpoints hold); without gradient accumulation the same as
    /// [`Optimizer::iterations`].
    pub fn calls(&self) -> i64 {
        self.state.iterations
    }

    /// Presets the iteration counter (Keras: `opt.iterations = tf.Variable(n)`), before build only.
    /// Unlike Keras, the one counter is also what `variables()[0]` and checkpoints hold
    /// (docs/numerics.md §2.6, §15). With gradient accumulation, `iterations` updates: the
    /// calls are set to `iterations * steps`, the start of an accumulation window.
    pub fn set_iterations(&mut self, iterations: i64) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt(format!(
                "Cannot set `iterations` to a new Variable after the Optimizer weights have been created. Here it is attempting to set `iterations` to {iterations}.Usually this means you are trying to set `iterations` after calling `apply_gradients()`. Please set `iterations` before calling `apply_gradients()`."
            )));
        }
        let calls = match self.state.config.gradient_accumulation_steps {
            Some(steps) => iterations.checked_mul(steps).ok_or_else(|| {
                invalid!(
                    "iterations {iterations} times gradient_accumulation_steps {steps} overflows the int64 call counter"
                )
            })?,
            None => iterations,
        };
        self.state.iterations = calls;
        Ok(())
    }

    /// The float32 learning rate of the last step (for a schedule: its value at the last step's
    /// pre-increment count; before any step, at 0), as Keras' `optimizer.learning_rate` reads.
    pub fn current_learning_rate(&self) -> f32 {
        self.state.current.learning_rate
    }

    /// `optimizer.learning_rate = x`: allowed for a float learning rate only (Keras' rule).
    pub fn set_learning_rate(&mut self, learning_rate: f64) -> Result<()> {
        match self.state.config.learning_rate {
            LearningRate::Constant(_) => {
                self.state.config.learning_rate = LearningRate::Constant(learning_rate);
                self.state.current.learning_rate = learning_rate as f32;
                Ok(())
            }
            LearningRate::Schedule(_) => Err(invalid!(
                "This optimizer was created with a `LearningRateSchedule` object as its `learning_rate` constructor argument, hence its learning rate is not settable. If you need the learning rate to be settable, you should instantiate the optimizer with a float `learning_rate` argument."
            )),
            LearningRate::Callback(_) => Err(invalid!(
                "This optimizer was created with a learning-rate callback, hence its learning rate is not settable."
            )),
        }
    }

    /// `exclude_from_weight_decay(var_list, var_names)`: before build only; a second call replaces
    /// both lists. `variables` are indices into the list `build` will get; each pattern is a regex
    /// searched (not matched) in the variable's Keras name `name:0`.
    pub fn exclude_from_weight_decay(&mut self, variables: &[usize], patterns: &[&str]) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt(
                "`exclude_from_weight_decay()` can only be configued before the optimizer is built.".into(),
            ));
        }
        let compiled = patterns
            .iter()
            .map(|p| exclusion_pattern(p).map_err(|e| invalid!("invalid exclude_from_weight_decay pattern {p:?}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        self.state.exclude_patterns = compiled;
        self.state.exclude_variables = variables.to_vec();
        Ok(())
    }

    /// `build(var_list)`: creates m and v (and vhat, and the EMA averages as copies of
    /// `initial_values`) for each variable. `initial_values` may be empty unless `use_ema`.
    pub fn build(&mut self, specs: &[VariableSpec], initial_values: &[TensorRef<'_>]) -> Result<()> {
        let variables = validate::build_variables(&self.state, specs, initial_values)?;
        let s = &mut self.state;
        let excluded = exclusions(s, &variables, 0);
        let decay = excluded.iter().map(|&x| !x).collect();
        let oom = |_| Error::OutOfMemory("too many variables".into());
        let mut norm_partials = Vec::new();
        norm_partials.try_reserve_exact(specs.len()).map_err(oom)?;
        let mut last_listed = Vec::new();
        last_listed.try_reserve_exact(specs.len()).map_err(oom)?;
        last_listed.resize(specs.len(), 0);
        let layouts: Vec<_> = variables.iter().map(|v| v.layout).collect();
        let slots = Slots { amsgrad: s.config.amsgrad, ema: s.config.use_ema };
        if s.engine.on_device() {
            // A device call's index copies hold a start per entry, at most one per variable
            // (reserved first: room left over by a failed build is unobservable).
            self.index_copies.reserve(specs.len(), 0)?;
        }
        let accumulators = new_accumulators(&s.config, &layouts)?;
        s.engine.build(&layouts, slots, initial_values)?;
        let n = variables.len();
        s.built = Some(Built {
            variables,
            excluded,
            decay,
            multipliers: vec![Multipliers::default(); n],
            variable_scalars: vec![VariableScalars::Shared; n],
            gradient_norms: vec![f64::NAN; n],
            report_squares: vec![0.0; n],
            last_listed,
            call_number: 0,
            norm_partials,
            norm_shared: Vec::new(),
            leaves_known: false,
            accumulators,
        });
        Ok(())
    }

    /// Sets built variable `variable`'s learning-rate and weight-decay multipliers
    /// (docs/numerics.md §22), from the next step on; any time after build. Both 1 is Keras'
    /// step; a weight-decay multiplier of 0 is the same bits as excluding the variable. On a
    /// device too: a variable with multipliers hands the kernels scalars of its own.
    pub fn set_multipliers(&mut self, variable: usize, multipliers: Multipliers) -> Result<()> {
        multipliers.check()?;
        let built = self.state.built.as_mut().ok_or_else(|| validate::not_built("set_multipliers"))?;
        let count = built.variables.len();
        if variable >= count {
            return Err(Error::UnknownVariable(format!(
                "variable index {variable} is out of range: the optimizer was built with {count} variables"
            )));
        }
        built.multipliers[variable] = multipliers;
        built.decay[variable] = !built.excluded[variable] && multipliers.weight_decay != 0.0;
        if multipliers.is_identity() {
            built.variable_scalars[variable] = VariableScalars::Shared;
        }
        Ok(())
    }

    /// Adds variables after build (a new head, a layer unfrozen): their state starts as build
    /// would have made it (m and v zero, the EMA average and a float32 master from
    /// `initial_values`, needed as at build; a zeroed accumulator), and they are numbered after
    /// the built ones. Exclusion patterns and `weight_decay_min_ndim` apply to them. Their first
    /// step's bias correction uses the optimizer's iterations, as Keras does for a variable built
    /// late (torch counts steps per parameter). Names must be new. Not with a mesh or on a
    /// device. All or nothing: on error nothing changes. Checkpoints then hold
    /// the new variables' state too, and load only into an optimizer with the same variables.
    pub fn add_variables(&mut self, specs: &[VariableSpec], initial_values: &[TensorRef<'_>]) -> Result<()> {
        let variables = validate::added_variables(&self.state, specs, initial_values)?;
        let s = &mut self.state;
        let built = s.built.as_ref().ok_or_else(|| validate::not_built("add_variables"))?;
        let first = built.variables.len();
        let excluded = exclusions(s, &variables, first);
        let layouts: Vec<_> = variables.iter().map(|v| v.layout).collect();
        let accumulators = new_accumulators(&s.config, &layouts)?;
        // Room for everything first, so that nothing can fail after the engine has added them.
        let n = variables.len();
        let built = s.built.as_mut().ok_or_else(|| validate::not_built("add_variables"))?;
        let oom = |_| Error::OutOfMemory("too many variables".into());
        built.variables.try_reserve_exact(n).map_err(oom)?;
        built.excluded.try_reserve_exact(n).map_err(oom)?;
        built.decay.try_reserve_exact(n).map_err(oom)?;
        built.multipliers.try_reserve_exact(n).map_err(oom)?;
        built.variable_scalars.try_reserve_exact(n).map_err(oom)?;
        built.gradient_norms.try_reserve_exact(n).map_err(oom)?;
        built.report_squares.try_reserve_exact((first + n).saturating_sub(built.report_squares.len())).map_err(oom)?;
        built.last_listed.try_reserve_exact(n).map_err(oom)?;
        built.norm_partials.try_reserve_exact(first + n).map_err(oom)?;
        built.accumulators.try_reserve_exact(accumulators.len()).map_err(oom)?;
        let slots = Slots { amsgrad: s.config.amsgrad, ema: s.config.use_ema };
        s.engine.add_variables(&layouts, slots, initial_values)?;
        built.decay.extend(excluded.iter().map(|&x| !x));
        built.excluded.extend(excluded);
        built.variables.extend(variables);
        built.multipliers.resize(first + n, Multipliers::default());
        built.variable_scalars.resize(first + n, VariableScalars::Shared);
        built.gradient_norms.resize(first + n, f64::NAN);
        built.report_squares.resize(first + n, 0.0);
        built.last_listed.resize(first + n, 0);
        built.accumulators.extend(accumulators);
        Ok(())
    }

    /// Resets built variable `variable`'s optimizer state to what build made of it: m and v (and
    /// vhat with amsgrad, and a gradient accumulator) zeroed, the EMA average and a float32
    /// master copy from `values` (the variable's new values, in its own dtype and length, widened exactly for a master; needed
    /// with EMA or a master, ignored otherwise). For a re-initialized layer. The other variables,
    /// the counter and the multipliers are untouched. After build, between steps; refused with
    /// nothing changed when `values` is missing or of another dtype or length.
    pub fn reset_variable(&mut self, variable: usize, values: Option<TensorRef<'_>>) -> Result<()> {
        let s = &mut self.state;
        let built = s.built.as_ref().ok_or_else(|| validate::not_built("reset_variable"))?;
        let count = built.variables.len();
        let layout = built.variables.get(variable).map(|v| v.layout).ok_or_else(|| {
            Error::UnknownVariable(format!(
                "variable index {variable} is out of range: the optimizer was built with {count} variables"
            ))
        })?;
        // Values are checked whenever given, and needed with EMA or a master.
        if let Some(v) = values {
            if v.dtype() != layout.values_dtype {
                return Err(Error::DtypeMismatch(format!(
                    "the values for variable {variable} are {}, the variable is {}",
                    v.dtype().name(),
                    layout.values_dtype.name()
                )));
            }
            if v.len() != layout.len {
                return Err(Error::ShapeMismatch(format!(
                    "the values for variable {variable} have {} elements, the variable holds {}",
                    v.len(),
                    layout.len
                )));
            }
        }
        let needs_values = s.config.use_ema || layout.has_master();
        let initial = match values {
            _ if !needs_values => None,
            None => {
                return Err(invalid!(
                    "resetting variable {variable} needs its values: its EMA average and master copy start as copies"
                ));
            }
            // The state's dtype: the values themselves, or widened exactly for a master.
            Some(v) if layout.has_master() => {
                let mut wide = TensorBuf::zeros(DType::F32, v.len())?;
                if let TensorMut::F32(out) = wide.as_mut() {
                    each_float!(v, x => out.iter_mut().zip(x).for_each(|(o, &x)| *o = crate::float::Real::to_f32(x)), _ => {});
                }
                Some(wide)
            }
            Some(v) => Some(TensorBuf::copy_of(v)?),
        };
        let zeros = TensorBuf::zeros(layout.dtype, layout.len)?;
        let mut writes = vec![(Slot::M, zeros.as_ref()), (Slot::V, zeros.as_ref())];
        if s.config.amsgrad {
            writes.push((Slot::Vhat, zeros.as_ref()));
        }
        if let Some(initial) = &initial {
            if s.config.use_ema {
                writes.push((Slot::Average, initial.as_ref()));
            }
            if layout.has_master() {
                writes.push((Slot::Master, initial.as_ref()));
            }
        }
        for (slot, values) in writes {
            s.engine.write_slot(variable, slot, values)?;
        }
        // Keras 3's accumulator restarts too: the gradients it holds were of the old values.
        if let Some(accumulator) = s.built.as_mut().and_then(|b| b.accumulators.get_mut(variable)) {
            accumulator.fill_zero();
        }
        Ok(())
    }

    /// What the last step saw (docs/numerics.md §23): whether it was applied, the loss scale and
    /// clip factor, the global gradient norm. Reading it costs nothing.
    pub fn step_report(&self) -> StepReport {
        self.state.report
    }

    /// Per built variable, the norm of its gradient in the last step, unscaled and before
    /// clipping (NaN for a variable the step did not list, and when no norm was computed: see
    /// [`StepReport::norms`]). Empty before build.
    pub fn gradient_norms(&self) -> &[f64] {
        self.state.built.as_ref().map_or(&[], |b| &b.gradient_norms)
    }

    /// Whether steps without a clip by norm take the gradient norms in the update pass, each
    /// block of a gradient summed while it is in cache (no extra pass over memory; off by
    /// default). With `clipnorm` or `global_clipnorm` the report has Keras' own norms anyway.
    /// On a device the step's kernel takes them too, with the CPU engine's bits. Any time.
    pub fn set_report_norms(&mut self, enabled: bool) {
        self.state.report_norms = enabled;
    }

    /// What build and the multipliers made of built variable `variable` (None past the end).
    pub fn variable_properties(&self, variable: usize) -> Option<VariableProperties> {
        let built = self.state.built.as_ref()?;
        let state = built.variables.get(variable)?;
        Some(VariableProperties {
            dtype: state.spec.dtype,
            ndim: state.spec.shape.len(),
            decayed: built.decay[variable],
            excluded: built.excluded[variable],
            multipliers: built.multipliers[variable],
            has_master: state.layout.has_master(),
        })
    }

    /// `weight_decay_min_ndim` ([`Config::weight_decay_min_ndim`]): variables with fewer
    /// dimensions are not decayed; before build only.
    pub fn set_weight_decay_min_ndim(&mut self, min_ndim: usize) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt(
                "weight_decay_min_ndim can only be set before the optimizer is built".into(),
            ));
        }
        if min_ndim as i64 > crate::config::WEIGHT_DECAY_MIN_NDIM_LIMIT {
            return Err(invalid!(
                "weight_decay_min_ndim must be from 0 to {}, got {min_ndim}",
                crate::config::WEIGHT_DECAY_MIN_NDIM_LIMIT
            ));
        }
        self.state.config.weight_decay_min_ndim = min_ndim;
        Ok(())
    }

    /// Keras 3's `gradient_accumulation_steps` ([`Config::gradient_accumulation_steps`],
    /// docs/numerics.md §25): `Some(n)` updates the variables every n-th call with the average
    /// of the n calls' gradients; `None` turns it off. Before build only (the accumulators are
    /// made at build); a preset counter keeps its iterations (the calls become iterations * n).
    pub fn set_gradient_accumulation_steps(&mut self, steps: Option<i64>) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt(
                "gradient_accumulation_steps can only be set before the optimizer is built".into(),
            ));
        }
        let config = Config { gradient_accumulation_steps: steps, ..self.state.config.clone() };
        config.validate()?;
        let calls = match (self.state.config.gradient_accumulation_steps, steps) {
            (Some(old), Some(new)) => (self.state.iterations / old).checked_mul(new),
            (Some(old), None) => Some(self.state.iterations / old),
            (None, Some(new)) => self.state.iterations.checked_mul(new),
            (None, None) => Some(self.state.iterations),
        }
        .ok_or_else(|| {
            invalid!("the preset iterations times gradient_accumulation_steps overflows the int64 call counter")
        })?;
        self.state.iterations = calls;
        self.state.config = config;
        Ok(())
    }

    /// Reserves room for sparse gradients of up to `indices` indices, so that no later sparse
    /// step allocates (without it, the first step with more indices than any before grows a buffer).
    pub fn reserve_sparse(&mut self, indices: usize) -> Result<()> {
        // On a device, also the host copies of indices given in device memory.
        if self.state.engine.on_device() {
            self.index_copies.reserve(0, indices)?;
        }
        self.state.engine.reserve_sparse(indices)
    }

    /// `apply_gradients(zip(grads, vars))`: one step over the listed variables (docs/numerics.md
    /// §2.1). Validates everything first: on error nothing has changed. Returns the new iteration
    /// count. An empty list is a no-op that only re-reads the learning rate, as in Keras.
    pub fn apply_gradients<S: GradientEntries + ?Sized>(&mut self, entries: &mut S) -> Result<i64> {
        apply(&mut self.state, &mut CallEntries::Host(&mut DynEntries(entries)))
    }

    /// [`Optimizer::apply_gradients`] over values and gradients in the memory of the optimizer's
    /// device ([`Optimizer::set_device`]), which the step reads and writes there: nothing is
    /// copied through the host but the call's table, sparse indices given in device memory (to be
    /// checked on the host) and, when clipping by norm or checking for non-finite gradients, one
    /// number per leaf or per gradient back. Every check runs on the
    /// host before anything is enqueued, and a rejected call changes nothing. `entries` is a
    /// slice, array or `Vec` of [`DeviceEntry`], or any [`DeviceEntries`]; once a call as large
    /// has been made, a step allocates nothing.
    ///
    /// # Safety
    /// Every address must be memory of the optimizer's device holding the stated number of
    /// elements of the stated dtype, valid for the whole step, and the values written must not
    /// overlap any other buffer of the call. `entries` must give the same length and the same
    /// entries each time it is asked: the checks and the kernels read them separately.
    pub unsafe fn apply_gradients_on_device<S: DeviceEntries + ?Sized>(&mut self, entries: &S) -> Result<i64> {
        self.check_on_device(entries.len())?;
        // Sparse indices in device memory come to the host first: they are checked there.
        self.index_copies.clear(entries.len());
        for i in 0..entries.len() {
            if let Some(DeviceGradient::Sparse { indices: DeviceIndices::Device { address, len }, .. }) =
                entries.get(i).gradient
            {
                self.state.engine.download_indices(address, self.index_copies.add(i, len)?)?;
            }
        }
        // `&S` is a sized DeviceEntries whatever S is, so it can be the engine's trait object.
        apply(&mut self.state, &mut CallEntries::Device(&entries, &self.index_copies))
    }

    /// [`Optimizer::finalize_variable_values`] over variables in the device's memory.
    ///
    /// # Safety
    /// As for [`Optimizer::apply_gradients_on_device`].
    pub unsafe fn finalize_variable_values_on_device(&mut self, entries: &[DeviceEntry<'_>]) -> Result<()> {
        let built = self.state.built.as_ref().ok_or_else(|| validate::not_built("finalize_variable_values"))?;
        for entry in entries {
            let shape = EntryShape { gradient: None, ..EntryShape::of_device(entry, &[]) };
            validate::check_entry(built, &shape)?;
        }
        self.check_on_device(entries.len())?;
        if !self.state.config.use_ema {
            return Ok(());
        }
        for entry in entries {
            self.state.engine.finalize_on_device(entry.variable, entry.values)?;
        }
        Ok(())
    }

    /// `finalize_variable_values(var_list)`: with EMA, each listed variable takes its average's
    /// value; without EMA nothing changes. Gradients in `entries` are ignored.
    pub fn finalize_variable_values<S: GradientEntries + ?Sized>(&mut self, entries: &mut S) -> Result<()> {
        let built = self.state.built.as_ref().ok_or_else(|| validate::not_built("finalize_variable_values"))?;
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let shape = EntryShape { gradient: None, ..EntryShape::of(&entry) };
            validate::check_entry(built, &shape)?;
        }
        if !self.state.config.use_ema {
            return Ok(());
        }
        for i in 0..entries.len() {
            let entry = entries.get(i);
            let layout = built.variables[entry.variable].layout;
            if !layout.has_master() {
                self.state.engine.read_slot(entry.variable, Slot::Average, entry.values)?;
                continue;
            }
            // A master copy takes the average, the caller's variable its rounding.
            let mut average = TensorBuf::zeros(layout.dtype, layout.len)?;
            self.state.engine.read_slot(entry.variable, Slot::Average, average.as_mut())?;
            self.state.engine.write_slot(entry.variable, Slot::Master, average.as_ref())?;
            let widened = average.as_ref().typed::<f32>().ok_or_else(|| Error::Internal("a float32 master".into()))?;
            crate::float::round_into(entry.values, widened);
        }
        Ok(())
    }

    /// With a loss scale: its current value (multiply the loss by it) and the number of finite
    /// steps since it last changed; `None` without one. Readable before build (the initial scale).
    pub fn loss_scale(&self) -> Option<(f32, i64)> {
        self.state.config.loss_scale.map(|_| (self.state.loss_scale, self.state.loss_scale_counter))
    }

    /// Puts Keras' `LossScaleOptimizer` around this AdamW (docs/numerics.md §19); before build only.
    pub fn set_loss_scale(&mut self, loss_scale: Option<crate::config::LossScale>) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt("the loss scale can only be set before the optimizer is built".into()));
        }
        let mut config = self.state.config.clone();
        config.loss_scale = loss_scale;
        config.validate()?;
        self.state.loss_scale = initial_loss_scale(loss_scale);
        self.state.loss_scale_counter = 0;
        self.state.config = config;
        Ok(())
    }

    /// Whether `build` over `specs` needs their initial values (for the EMA averages, or for
    /// the float32 masters of 16-bit variables).
    pub(crate) fn needs_initial_values(&self, specs: &[VariableSpec]) -> bool {
        validate::needs_initial_values(&self.state, specs)
    }

    /// Gives bfloat16 and float16 variables float32 master copies and slots (the extension
    /// `master_weights`, docs/numerics.md §18); before build only.
    pub fn set_master_weights(&mut self, enabled: bool) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt("master_weights can only be set before the optimizer is built".into()));
        }
        let config = Config { master_weights: enabled, ..self.state.config.clone() };
        config.validate()?;
        self.state.config = config;
        Ok(())
    }

    /// Moves the optimizer to `device` ([`Config::device`]): its state will live there and its
    /// steps run there (with `jit_compile`; without it, on the CPU, as in Keras). Before build
    /// only. An unavailable device is an [`Error::Device`] and changes nothing.
    pub fn set_device(&mut self, device: Device) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt("the device can only be set before the optimizer is built".into()));
        }
        let config = Config { device, ..self.state.config.clone() };
        config.validate()?;
        let mut engine = engine_for(&config)?;
        engine.set_parallel_for(self.state.parallel_for.clone());
        self.state.config.device = device;
        self.state.engine = engine;
        Ok(())
    }

    /// For an optimizer on a CUDA device: the `CUstream` (as an integer; 0 the default stream)
    /// that steps, copies and `finalize_variable_values` are enqueued on from now on.
    pub fn set_stream(&mut self, stream: u64) -> Result<()> {
        self.state.engine.set_stream(stream)
    }

    /// Entries in device memory (`entries` of them) need an optimizer on a device.
    fn check_on_device(&self, entries: usize) -> Result<()> {
        if entries > 0 && !self.state.engine.on_device() {
            return Err(Error::InvalidArgument(
                "device memory needs an optimizer on a device: call set_device before build".into(),
            ));
        }
        Ok(())
    }

    /// Whether the state lives on a device and the steps run there ([`Optimizer::set_device`]):
    /// then `apply_gradients_on_device` takes device memory.
    pub fn on_device(&self) -> bool {
        self.state.engine.on_device()
    }

    /// How many optimizer variables there are (1 before build: the counter).
    pub fn num_variables(&self) -> usize {
        self.state.num_state_tensors()
    }

    /// What optimizer variable `index` of Keras' `optimizer.variables` is.
    pub fn variable_info(&self, index: usize) -> Option<StateInfo> {
        self.state.info(index)
    }

    /// Checks that a buffer of `len` elements of `dtype` is what optimizer variable `index`
    /// holds (what `read_variable` requires), and describes the variable.
    pub fn check_variable_buffer(&self, index: usize, dtype: DType, len: usize) -> Result<StateInfo> {
        validate::check_state_buffer(&self.state, index, dtype, len)
    }

    /// Copies optimizer variable `index` into `out`, which must have its dtype and length
    /// (`variable_info`); nothing is written on error.
    pub fn read_variable(&self, index: usize, mut out: TensorMut<'_>) -> Result<()> {
        self.check_variable_buffer(index, out.dtype(), out.len())?;
        match self.state.kind(index) {
            Some(StateKind::Slot(slot, i)) => self.state.engine.read_slot(i, slot, out),
            Some(StateKind::Accumulator(i)) => {
                let built = self.state.built.as_ref().ok_or_else(|| validate::not_built("read_variable"))?;
                out.copy_from(built.accumulators[i].as_ref())
            }
            _ => out.copy_from(TensorRef::I64(std::slice::from_ref(&self.state.iterations))),
        }
    }

    /// A copy of optimizer variable `index` (Keras' `optimizer.variables[index]`).
    pub fn variable(&self, index: usize) -> Option<StateTensor> {
        let info = self.variable_info(index)?;
        let mut values = TensorBuf::zeros(info.dtype, info.len).ok()?;
        self.read_variable(index, values.as_mut()).ok()?;
        Some(StateTensor { info, values })
    }

    /// `set_weights(weights)`: Keras zips the optimizer variables with `weights`, so a shorter
    /// list sets a prefix and extra weights are ignored. Every weight is checked before any is set.
    pub fn set_weights(&mut self, weights: &[Weight<'_>]) -> Result<()> {
        if !self.is_built() {
            return Err(Error::NotBuilt(
                "You are calling `set_weights()` on an optimizer that has not yet been built. Please call `optimizer.build(trainable_variables)` to create the optimizer weights before calling `set_weights()`.".into(),
            ));
        }
        validate::check_weights(&self.state, weights, false)?;
        self.assign_weights(weights)
    }

    /// Assigns checked weights.
    fn assign_weights(&mut self, weights: &[Weight<'_>]) -> Result<()> {
        for (index, w) in weights.iter().enumerate().take(self.num_variables()) {
            match self.state.kind(index) {
                Some(StateKind::Slot(slot, i)) => self.state.engine.write_slot(i, slot, w.values)?,
                Some(StateKind::Accumulator(i)) => {
                    let built = self.state.built.as_mut().ok_or_else(|| validate::not_built("set_weights"))?;
                    built.accumulators[i].as_mut().copy_from(w.values)?;
                }
                _ => {
                    let counter = i64::unwrap(w.values).and_then(|x| x.first().copied());
                    self.state.iterations = counter.ok_or_else(|| Error::Internal("a checked counter".into()))?;
                }
            }
        }
        Ok(())
    }

    /// `save_own_variables(store)`: the optimizer variables as a safetensors file with keys
    /// "0".."N-1" in Keras' order (see docs/numerics.md §13).
    pub fn save_own_variables(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::with_capacity(self.num_variables());
        for index in 0..self.num_variables() {
            let tensor = self.variable(index).ok_or_else(|| {
                Error::OutOfMemory(format!("cannot copy optimizer variable {index} for the checkpoint"))
            })?;
            tensors.push(tensor);
        }
        let views: Vec<_> = tensors.iter().map(|t| (t.info.shape.as_slice(), t.values.as_ref())).collect();
        // Only a dynamic scale has state to restore (Keras checkpoints a fixed one not at all).
        let (scale, counter) = ([self.state.loss_scale], [self.state.loss_scale_counter]);
        let mut named = match self.state.config.loss_scale {
            Some(l) if l.dynamic => {
                vec![(LOSS_SCALE, TensorRef::F32(&scale)), (LOSS_SCALE_COUNTER, TensorRef::I64(&counter))]
            }
            _ => Vec::new(),
        };
        // Per-variable multipliers, only when one is not 1 (the bytes are otherwise as before).
        let multipliers = self.state.built.as_ref().map_or(&[][..], |b| b.multipliers.as_slice());
        let (rates, decays): (Vec<f64>, Vec<f64>) =
            multipliers.iter().map(|m| (m.learning_rate, m.weight_decay)).unzip();
        if multipliers.iter().any(|m| !m.is_identity()) {
            named.push((LEARNING_RATE_MULTIPLIERS, TensorRef::F64(&rates)));
            named.push((WEIGHT_DECAY_MULTIPLIERS, TensorRef::F64(&decays)));
        }
        crate::checkpoint::encode(&views, &named, &self.checkpoint_layout())
    }

    /// What a checkpoint records for resharding: the config's fingerprint, every variable's full
    /// shape and the range held, and the variable of each optimizer variable.
    fn checkpoint_layout(&self) -> crate::checkpoint::Layout {
        // The config as the CPU engine reports it: where the state lived does not change a byte
        // of a checkpoint (get_config's jit_compile says whether a device ran the steps).
        let config = self.state.config.to_json(self.state.current, false).to_string();
        let mut fingerprint = 0xcbf2_9ce4_8422_2325u64; // FNV-1a over the config JSON
        for byte in config.bytes() {
            fingerprint = (fingerprint ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let variables = self.state.built.as_ref().map_or_else(Vec::new, |b| {
            b.variables
                .iter()
                .map(|v| crate::checkpoint::Held {
                    dtype: Some(v.spec.dtype.name().to_string()),
                    master: Some(v.layout.has_master()),
                    shape: v.spec.shape.clone(),
                    sharded: v.layout.sharded,
                    offset: v.layout.offset,
                    len: v.layout.len,
                })
                .collect()
        });
        let keys = (0..self.num_variables()).map(|i| self.state.kind(i).and_then(StateKind::variable)).collect();
        crate::checkpoint::Layout { optimizer: format!("{fingerprint:016x}"), variables, keys }
    }

    /// Loads the checkpoints that the ranks of another sharding saved (every rank's, in any
    /// order; one unsharded checkpoint counts as one rank) into this optimizer's own shards
    /// (docs/numerics.md §13): the state a run with this optimizer's sharding holds. They must
    /// come from one optimizer at one step and hold every element once; nothing changes on error.
    pub fn load_shards(&mut self, checkpoints: &[&[u8]]) -> Result<()> {
        let built = self.state.built.as_ref().ok_or_else(|| validate::not_built("load_shards"))?;
        let target: Vec<Option<(usize, usize)>> =
            built.variables.iter().map(|v| v.layout.sharded.then_some((v.layout.offset, v.layout.len))).collect();
        let load = || {
            let inputs = checkpoints.iter().map(|b| crate::checkpoint::decode(b)).collect::<Result<Vec<_>>>()?;
            let (tensors, named, layout) = crate::checkpoint::reshard(&inputs, &target)?;
            Ok((tensors, named, layout))
        };
        let (tensors, named, layout) = load().map_err(Error::load_refused)?;
        self.load_checkpoint_tensors(&tensors, Some(&named), Some(&layout)).map_err(Error::load_refused)
    }

    /// `load_own_variables(store)`: replaces every optimizer variable from a checkpoint made by
    /// `save_own_variables` of an optimizer built the same way. Unlike Keras, which only warns,
    /// a checkpoint that does not match is an error; either way nothing changes.
    pub fn load_own_variables(&mut self, bytes: &[u8]) -> Result<()> {
        let checkpoint = crate::checkpoint::decode(bytes).map_err(Error::load_refused)?;
        self.load_checkpoint_tensors(&checkpoint.tensors, Some(&checkpoint.named), checkpoint.layout.as_ref())
            .map_err(Error::load_refused)
    }

    /// Checks a checkpoint's optimizer variables, named scalars and (when it records them) its
    /// variables' dtypes against this optimizer, then assigns them; nothing changes on error.
    /// `named` is `None` for Keras' own store, which has no named scalars. The loss scale follows
    /// Keras (measured in tools/keras_loss_scale_loads.py, docs/numerics.md §19): only a dynamic
    /// scale takes a dynamic scale's state from a checkpoint; a fixed scale, or a dynamic one
    /// given a checkpoint without a scale, stays as it is.
    fn load_checkpoint_tensors(
        &mut self,
        tensors: &[(Vec<usize>, TensorBuf)],
        named: Option<&[(String, TensorBuf)]>,
        layout: Option<&crate::checkpoint::Layout>,
    ) -> Result<()> {
        if let Some(layout) = layout {
            self.check_checkpoint_variables(layout)?;
        }
        let weights: Vec<Weight<'_>> =
            tensors.iter().map(|(shape, values)| Weight { shape, values: values.as_ref() }).collect();
        validate::check_weights(&self.state, &weights, true)?;
        let loss_scale = match named {
            Some(named) => checkpoint_loss_scale(named)?,
            None => None,
        };
        let multipliers = match named {
            Some(named) => self.checkpoint_multipliers(named)?,
            None => None,
        };
        self.assign_weights(&weights)?;
        if let Some(multipliers) = multipliers {
            for (variable, m) in multipliers.into_iter().enumerate() {
                self.set_multipliers(variable, m)?; // checked above: cannot fail
            }
        }
        let dynamic = self.state.config.loss_scale.is_some_and(|l| l.dynamic);
        if let Some((scale, counter)) = loss_scale.filter(|_| dynamic) {
            self.state.loss_scale = scale;
            self.state.loss_scale_counter = counter;
        }
        Ok(())
    }

    /// The per-variable multipliers a checkpoint holds, if it holds them: both lists or neither,
    /// one pair per built variable, each pair one `set_multipliers` takes.
    fn checkpoint_multipliers(&self, named: &[(String, TensorBuf)]) -> Result<Option<Vec<Multipliers>>> {
        let find = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, v)| f64::unwrap(v.as_ref()));
        let (rates, decays) = match (find(LEARNING_RATE_MULTIPLIERS), find(WEIGHT_DECAY_MULTIPLIERS)) {
            (None, None) => return Ok(None),
            (Some(Some(r)), Some(Some(d))) => (r, d),
            _ => {
                return Err(Error::InvalidCheckpoint(format!(
                    "the checkpoint's multipliers must be float64 \"{LEARNING_RATE_MULTIPLIERS}\" together with float64 \"{WEIGHT_DECAY_MULTIPLIERS}\""
                )));
            }
        };
        let count = self.num_built_variables();
        if rates.len() != count || decays.len() != count {
            return Err(Error::CheckpointMismatch(format!(
                "the checkpoint holds multipliers for {} variables, but the optimizer was built with {count}",
                rates.len()
            )));
        }
        let multipliers: Vec<Multipliers> = rates
            .iter()
            .zip(decays)
            .map(|(&learning_rate, &weight_decay)| Multipliers { learning_rate, weight_decay })
            .collect();
        for m in &multipliers {
            m.check().map_err(|e| Error::InvalidCheckpoint(format!("the checkpoint's multipliers: {e}")))?;
        }
        Ok(Some(multipliers))
    }

    /// Checks the variables a checkpoint's layout records against the built ones: their count
    /// and, where the layout records them (format v3), their dtypes and master copies, which the
    /// state's own dtypes do not tell apart (a bfloat16 and a float16 variable with masters both
    /// have float32 state).
    fn check_checkpoint_variables(&self, layout: &crate::checkpoint::Layout) -> Result<()> {
        let built = self.state.built.as_ref().map_or(&[][..], |b| b.variables.as_slice());
        if layout.variables.len() != built.len() {
            return Err(Error::CheckpointMismatch(format!(
                "the checkpoint holds the state of {} variables, but the optimizer was built with {}",
                layout.variables.len(),
                built.len()
            )));
        }
        for (i, (held, var)) in layout.variables.iter().zip(built).enumerate() {
            let ours = crate::checkpoint::Held {
                dtype: Some(var.spec.dtype.name().to_string()),
                master: Some(var.layout.has_master()),
                ..held.clone()
            };
            let recorded = held.dtype.is_some() && held.master.is_some();
            if recorded && (held.dtype != ours.dtype || held.master != ours.master) {
                return Err(Error::CheckpointMismatch(format!(
                    "variable {i} (`{}`) is {} here, but the checkpoint's variable {i} was {}",
                    var.spec.name,
                    ours.describe(),
                    held.describe()
                )));
            }
        }
        Ok(())
    }

    /// Keras' `load_own_variables` from Keras' own store (the keys "0".."N-1" in Keras' order and
    /// nothing of libadamw's: what `keras_files` reads from `.keras`, `.weights.h5` and plain
    /// safetensors stores). The count, every shape and every dtype must be this optimizer's
    /// (`CheckpointMismatch`); nothing changes on error. A loss scale is left as it is: Keras'
    /// files do not hold it, and Keras' own load leaves a LossScaleOptimizer's scale alone (a
    /// new one starts from its initial scale).
    pub fn load_keras_variables(&mut self, tensors: &[(Vec<usize>, TensorBuf)]) -> Result<()> {
        if !self.is_built() {
            return Err(validate::not_built("loading Keras' optimizer variables"));
        }
        self.load_checkpoint_tensors(tensors, None, None).map_err(Error::load_refused)
    }

    /// The optimizer variables as Keras' store holds them ([`Optimizer::variable`] for each
    /// index). Keras' AdamW has no variable for libadamw's master weights, so an optimizer with
    /// them is refused (`InvalidArgument`). With a loss scale the store is the inner AdamW's, as
    /// Keras saves a LossScaleOptimizer: the scale and its count are not in it (Keras' files do not
    /// hold them; a LossScaleOptimizer loaded from one starts from its initial scale).
    pub fn keras_variables(&self) -> Result<Vec<StateTensor>> {
        if self.state.built.as_ref().is_some_and(|b| b.variables.iter().any(|v| v.layout.has_master())) {
            return Err(invalid!(
                "an optimizer with master weights has state Keras' AdamW does not hold; save it with save_own_variables"
            ));
        }
        if self.state.config.gradient_accumulation_steps.is_some() {
            return Err(invalid!(
                "an optimizer with gradient accumulation has state (Keras 3's accumulators) that Keras 2's AdamW does not hold; save it with save_own_variables"
            ));
        }
        (0..self.num_variables())
            .map(|index| {
                self.variable(index)
                    .ok_or_else(|| Error::OutOfMemory(format!("cannot copy optimizer variable {index}")))
            })
            .collect()
    }

    /// `save_own_variables` to a file, written atomically (docs/numerics.md §13): a crash or
    /// a write error leaves whatever was at `path` intact.
    pub fn save_own_variables_to_file(&self, path: &std::path::Path) -> Result<()> {
        crate::checkpoint::write_atomically(path, &self.save_own_variables()?)
    }

    /// `load_own_variables` from a file written by [`Optimizer::save_own_variables_to_file`].
    pub fn load_own_variables_from_file(&mut self, path: &std::path::Path) -> Result<()> {
        self.load_own_variables(&crate::checkpoint::read_file(path).map_err(Error::load_refused)?)
    }

    /// `minimize(loss, var_list)`: `compute` fills the gradients of `entries` from the current
    /// variable values, then the step is applied. A failing `compute` changes nothing.
    pub fn minimize<S: GradientEntries + ?Sized>(
        &mut self,
        entries: &mut S,
        compute: impl FnOnce(&mut S) -> std::result::Result<(), String>,
    ) -> Result<i64> {
        compute(entries).map_err(|reason| Error::CallbackFailed(format!("the gradient callback failed: {reason}")))?;
        self.apply_gradients(entries)
    }
}

/// The loss scale and counter a checkpoint holds (a dynamic scale's, written by `save_own_variables`),
/// if it holds one: both or neither, a scale a dynamic scale can reach (a normal positive finite
/// float32; halving stops at 1 and doubling at the largest finite float32) and a count that is
/// not negative. Nothing else may be named.
fn checkpoint_loss_scale(named: &[(String, TensorBuf)]) -> Result<Option<(f32, i64)>> {
    let find = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref());
    let known = [LOSS_SCALE, LOSS_SCALE_COUNTER, LEARNING_RATE_MULTIPLIERS, WEIGHT_DECAY_MULTIPLIERS];
    if let Some((name, _)) = named.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        return Err(Error::CheckpointMismatch(format!("the checkpoint holds an unknown tensor \"{name}\"")));
    }
    let scale = find(LOSS_SCALE).map(|t| f32::unwrap(t).and_then(|x| x.first().copied().filter(|_| x.len() == 1)));
    let counter =
        find(LOSS_SCALE_COUNTER).map(|t| i64::unwrap(t).and_then(|x| x.first().copied().filter(|_| x.len() == 1)));
    match (scale, counter) {
        (None, None) => Ok(None),
        (Some(Some(s)), Some(Some(c))) if s.is_normal() && s > 0.0 && c >= 0 => Ok(Some((s, c))),
        (Some(Some(s)), Some(Some(c))) => Err(Error::InvalidCheckpoint(format!(
            "the checkpoint's loss scale {s} with count {c} is not one a dynamic loss scale reaches (a positive finite float32 and a count of 0 or more)"
        ))),
        _ => Err(Error::InvalidCheckpoint(format!(
            "the checkpoint's loss scale must be a float32 \"{LOSS_SCALE}\" together with an int64 \"{LOSS_SCALE_COUNTER}\""
        ))),
    }
}

/// Keras' `current_loss_scale` at construction: the initial scale as float32 (0 without one).
fn initial_loss_scale(loss_scale: Option<crate::config::LossScale>) -> f32 {
    loss_scale.map_or(0.0, |l| l.initial_scale as f32)
}

/// The engine a config asks for: the CPU's, or with `jit_compile` its device's.
fn engine_for(config: &Config) -> Result<Box<dyn Engine>> {
    match config.device {
        Device::Cpu => Ok(Box::new(CpuEngine::new(config.threads)?)),
        device if !config.jit_compile => Err(Error::InvalidArgument(format!(
            "{device:?} needs jit_compile (Keras' device path); with jit_compile false the optimizer runs on the CPU"
        ))),
        #[cfg(feature = "cuda")]
        Device::Cuda(ordinal) => {
            let backend = crate::engine::device::cuda::CudaBackend::new(ordinal)?;
            Ok(Box::new(crate::engine::device::DeviceEngine::new(backend)))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::Device("this libadamw was built without the `cuda` feature".into())),
        #[cfg(feature = "host-kernels")]
        Device::HostKernels => {
            Ok(Box::new(crate::engine::device::DeviceEngine::new(crate::engine::device::host::HostBackend)))
        }
        #[cfg(not(feature = "host-kernels"))]
        Device::HostKernels => Err(Error::Device("this libadamw was built without the `host-kernels` feature".into())),
    }
}

/// One `apply_gradients` call: Keras 2's step, or under gradient accumulation Keras 3's call.
fn apply(state: &mut State, entries: &mut CallEntries<'_>) -> Result<i64> {
    match state.config.gradient_accumulation_steps {
        Some(steps) => accumulation::apply_gradients(state, entries, steps),
        None => step::apply_gradients(state, entries),
    }
}

/// Zeroed gradient accumulators for variables with `layouts`, when the config accumulates
/// (none otherwise).
fn new_accumulators(config: &Config, layouts: &[crate::engine::VariableLayout]) -> Result<Vec<TensorBuf>> {
    if config.gradient_accumulation_steps.is_none() {
        return Ok(Vec::new());
    }
    layouts.iter().map(|layout| TensorBuf::zeros(layout.dtype, layout.len)).collect()
}

/// Whether each of `variables` (numbered from `first`) is excluded from weight decay: by
/// index, by a name pattern, or by `weight_decay_min_ndim`.
/// An exclusion pattern as a regex. Unicode property classes (`\p{..}`, `\P{..}`) are refused
/// here rather than by the regex crate: Python's `re` has none ("bad escape"), and the crate
/// compiles them or not depending on its features (the library leaves out their tables).
fn exclusion_pattern(pattern: &str) -> std::result::Result<Regex, String> {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.next(), Some('p' | 'P')) {
            return Err("Unicode property classes (\\p, \\P) are not supported, as in Python's re".into());
        }
    }
    Regex::new(pattern).map_err(|e| e.to_string())
}

fn exclusions(s: &State, variables: &[state::VariableState], first: usize) -> Vec<bool> {
    let min_ndim = s.config.weight_decay_min_ndim;
    let excluded = |i: usize, var: &state::VariableState| {
        let keras_name = var.spec.keras_name();
        s.exclude_variables.contains(&(first + i))
            || s.exclude_patterns.iter().any(|p| p.is_match(&keras_name))
            || var.spec.shape.len() < min_ndim
    };
    variables.iter().enumerate().map(|(i, var)| excluded(i, var)).collect()
}

/// Lets the engine take any `GradientEntries`, sized or not, as a trait object.
struct DynEntries<'a, S: ?Sized>(&'a mut S);

impl<S: GradientEntries + ?Sized> GradientEntries for DynEntries<'_, S> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&mut self, i: usize) -> GradientEntry<'_> {
        self.0.get(i)
    }
    fn visit_all<'s>(&'s mut self, visit: &mut dyn FnMut(GradientEntry<'s>)) -> bool {
        self.0.visit_all(visit)
    }
}
