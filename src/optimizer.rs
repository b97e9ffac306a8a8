//! The optimizer: its configuration, its state (iterations, m, v, vhat, EMA averages) and the
//! methods of Keras' AdamW. The caller owns the variables and passes them to each call; the
//! optimizer owns its state, allocated at build and never during a step.

use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::config::{Beta, Clipping, Config, CurrentValues, LearningRate};
use crate::error::{Error, Result, invalid};
use crate::float::{DType, Ftz, Real};
use crate::kernels::cpu::{self, Lanes, SparseRows};
use crate::kernels::{self, Clip, StepHyper, StepScalars, VariableOps};
use crate::tensor::{Element, Gradient, TensorMut, TensorRef, Update, UpdateSource};

/// A variable to build the optimizer over. Variables are identified afterwards by their index
/// in the list given to [`Optimizer::build`]; the name serves exclusion patterns and slot names.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableSpec {
    pub name: String,
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
    pub offset: usize,
    pub len: usize,
}

impl VariableSpec {
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
    fn keras_name(&self) -> String {
        format!("{}:0", self.name)
    }
}

/// A slot's storage, in the variable's dtype.
#[derive(Debug, Clone, PartialEq)]
enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Buffer {
    fn empty(dtype: DType) -> Self {
        match dtype {
            DType::F64 => Buffer::F64(Vec::new()),
            _ => Buffer::F32(Vec::new()),
        }
    }

    fn zeros(dtype: DType, len: usize) -> Result<Self> {
        fn alloc<T: Clone + Default>(len: usize) -> Result<Vec<T>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len)
                .map_err(|_| Error::OutOfMemory(format!("cannot allocate optimizer state of {len} elements")))?;
            v.resize(len, T::default());
            Ok(v)
        }
        Ok(match dtype {
            DType::F64 => Buffer::F64(alloc(len)?),
            _ => Buffer::F32(alloc(len)?),
        })
    }

    fn copy_from(&mut self, src: TensorRef<'_>) {
        match (self, src) {
            (Buffer::F32(d), TensorRef::F32(s)) => d.copy_from_slice(s),
            (Buffer::F64(d), TensorRef::F64(s)) => d.copy_from_slice(s),
            _ => unreachable!("dtypes are checked before copying"),
        }
    }

    fn as_ref(&self) -> TensorRef<'_> {
        match self {
            Buffer::F32(v) => TensorRef::F32(v),
            Buffer::F64(v) => TensorRef::F64(v),
        }
    }
}

/// Typed access to a slot whose dtype was fixed at build, and to a gradient whose dtype was
/// checked against it (a mismatch gives an empty slice, which the checks rule out).
trait Slot: Element {
    fn slot(buffer: &mut Buffer) -> &mut [Self];
    fn from_tensor(t: TensorRef<'_>) -> &[Self];
}

impl Slot for f32 {
    fn slot(buffer: &mut Buffer) -> &mut [Self] {
        match buffer {
            Buffer::F32(v) => v,
            Buffer::F64(_) => &mut [],
        }
    }
    fn from_tensor(t: TensorRef<'_>) -> &[Self] {
        match t {
            TensorRef::F32(x) => x,
            TensorRef::F64(_) => &[],
        }
    }
}

impl Slot for f64 {
    fn slot(buffer: &mut Buffer) -> &mut [Self] {
        match buffer {
            Buffer::F64(v) => v,
            Buffer::F32(_) => &mut [],
        }
    }
    fn from_tensor(t: TensorRef<'_>) -> &[Self] {
        match t {
            TensorRef::F64(x) => x,
            TensorRef::F32(_) => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct BuiltVariable {
    spec: VariableSpec,
    /// Elements held here: the whole variable, or its shard.
    len: usize,
    /// The flat index of the first element held (the shard's offset, else 0).
    offset: usize,
    /// The shape of the slots: the variable's, or `[len]` for a shard.
    slot_shape: Vec<usize>,
    /// Elements per row (the product of the trailing dimensions), for sparse gradients.
    row_len: usize,
    decay: bool,
    m: Buffer,
    v: Buffer,
    vhat: Buffer,
    average: Buffer,
}

/// What one entry of [`Optimizer::variables`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Iterations,
    Average,
    M,
    V,
    Vhat,
}

impl SlotKind {
    fn name(self) -> &'static str {
        match self {
            SlotKind::Iterations => "iteration",
            SlotKind::Average => "average",
            SlotKind::M => "m",
            SlotKind::V => "v",
            SlotKind::Vhat => "vhat",
        }
    }
}

/// A borrowed optimizer variable (the counter, an average, m, v or vhat) as `variables` lists it.
#[derive(Debug, Clone)]
pub struct OptimizerVariable<'a> {
    pub name: String,
    pub shape: &'a [usize],
    pub data: WeightData<'a>,
}

/// The values of one optimizer variable: the counter is int64, the slots have their variable's dtype.
#[derive(Debug, Clone, Copy)]
pub enum WeightData<'a> {
    I64(&'a [i64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl WeightData<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            WeightData::I64(_) => DType::I64,
            WeightData::F32(_) => DType::F32,
            WeightData::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            WeightData::I64(x) => x.len(),
            WeightData::F32(x) => x.len(),
            WeightData::F64(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<TensorRef<'a>> for WeightData<'a> {
    fn from(t: TensorRef<'a>) -> Self {
        match t {
            TensorRef::F32(x) => WeightData::F32(x),
            TensorRef::F64(x) => WeightData::F64(x),
        }
    }
}

/// A value for `set_weights` / `load_own_variables`: a shape and that many elements.
#[derive(Debug, Clone, Copy)]
pub struct Weight<'a> {
    pub shape: &'a [usize],
    pub data: WeightData<'a>,
}

/// `tf.keras.optimizers.AdamW`.
#[derive(Debug, Clone)]
pub struct Optimizer {
    config: Config,
    iterations: i64,
    current: CurrentValues,
    exclude_patterns: Vec<Regex>,
    exclude_variables: Vec<usize>,
    built: Option<Vec<BuiltVariable>>,
    /// Per built variable, the number of the last call that listed it (duplicate detection).
    last_listed: Vec<u64>,
    call_number: u64,
    /// Per gradient of a step, in list order: its sum of squares (clipnorm) or `l2_loss`
    /// (global_clipnorm), summed across ranks when sharded.
    norm_partials: Vec<f64>,
    /// `(row, position)` of a sparse gradient's indices, sorted to sum duplicates in order.
    sparse_rows: Vec<(usize, usize)>,
    /// The optimizer's own thread pool, when `config.threads` > 1.
    pool: Option<Arc<rayon::ThreadPool>>,
}

/// Carries a closure into a rayon pool's `install`, which blocks the calling thread until the
/// closure has run: what it borrows is used by one thread at a time, never concurrently.
struct OnePoolThread<T>(T);
// SAFETY: see the type's documentation; `install` returns only after the closure finished.
unsafe impl<T> Send for OnePoolThread<T> {}

/// Runs `work` in `pool` (blocking until it is done), or on the calling thread without one.
fn in_pool<R: Send>(pool: &Option<Arc<rayon::ThreadPool>>, work: impl FnOnce() -> R) -> R {
    match pool {
        None => work(),
        Some(pool) => {
            let work = OnePoolThread(work);
            pool.install(move || work.run())
        }
    }
}

impl<R, T: FnOnce() -> R> OnePoolThread<T> {
    /// Taking `self` makes the `install` closure capture the whole (Send) wrapper.
    fn run(self) -> R {
        (self.0)()
    }
}

/// The pool behind `threads = 0`: one per process, shared by every optimizer with that setting,
/// one thread per core. (Entering a pool once per step through `install` measured faster and
/// steadier than letting each split reach rayon's global pool from outside it.)
fn shared_pool() -> Result<Arc<rayon::ThreadPool>> {
    static SHARED: std::sync::OnceLock<std::result::Result<Arc<rayon::ThreadPool>, String>> =
        std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("adamw-shared-{i}"))
                .build()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| Error::OutOfMemory(format!("cannot start the shared threads: {e}")))
}

fn thread_pool(threads: usize) -> Result<Option<Arc<rayon::ThreadPool>>> {
    if threads == 0 {
        return shared_pool().map(Some);
    }
    if threads == 1 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("adamw-{i}"))
        .build()
        .map(|pool| Some(Arc::new(pool)))
        .map_err(|e| Error::OutOfMemory(format!("cannot start {threads} threads: {e}")))
}

fn not_built(what: &str) -> Error {
    Error::NotBuilt(format!(
        "{what} needs a built optimizer: call build with the full list of trainable variables first"
    ))
}

/// A Python shape tuple, as Keras prints it: `()`, `(3,)`, `(4, 3)`.
fn py_shape(shape: &[usize]) -> String {
    match shape {
        [] => "()".into(),
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

impl Optimizer {
    /// Creates an optimizer. Callbacks are evaluated once here, at step 0, as Keras evaluates a
    /// schedule at construction (this is the rate `current_learning_rate` reports before a step).
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let mut opt = Optimizer {
            config,
            iterations: 0,
            current: CurrentValues { learning_rate: 0.0, beta_1: 0.0, beta_2: 0.0 },
            exclude_patterns: Vec::new(),
            exclude_variables: Vec::new(),
            built: None,
            last_listed: Vec::new(),
            call_number: 0,
            norm_partials: Vec::new(),
            sparse_rows: Vec::new(),
            pool: None,
        };
        opt.pool = thread_pool(opt.config.threads)?;
        opt.current = opt.hyper_at(0)?;
        Ok(opt)
    }

    /// `AdamW.from_config(json)`.
    pub fn from_config_json(json: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| Error::InvalidConfig(format!("config is not valid JSON: {e}")))?;
        Optimizer::new(Config::from_json(value)?)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `get_config()`, as Keras writes it.
    pub fn get_config(&self) -> Value {
        self.config.to_json(self.current)
    }

    /// How many variables the optimizer was built with (0 before build).
    pub fn num_built_variables(&self) -> usize {
        self.built.as_ref().map_or(0, Vec::len)
    }

    /// Changes the number of threads a step uses (see [`Config::threads`]).
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        self.pool = thread_pool(threads)?;
        self.config.threads = threads;
        Ok(())
    }

    pub fn is_built(&self) -> bool {
        self.built.is_some()
    }

    pub fn iterations(&self) -> i64 {
        self.iterations
    }

    /// Presets the iteration counter (Keras: `opt.iterations = tf.Variable(n)`), before build only.
    /// Unlike Keras, the one counter is also what `variables()[0]` and checkpoints hold
    /// (docs/numerics.md §2.6, §15).
    pub fn set_iterations(&mut self, iterations: i64) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt(format!(
                "Cannot set `iterations` to a new Variable after the Optimizer weights have been created. Here it is attempting to set `iterations` to {iterations}.Usually this means you are trying to set `iterations` after calling `apply_gradients()`. Please set `iterations` before calling `apply_gradients()`."
            )));
        }
        self.iterations = iterations;
        Ok(())
    }

    /// The float32 learning rate of the last step (for a schedule: its value at the last step's
    /// pre-increment count; before any step, at 0), as Keras' `optimizer.learning_rate` reads.
    pub fn current_learning_rate(&self) -> f32 {
        self.current.learning_rate
    }

    /// `optimizer.learning_rate = x`: allowed for a float learning rate only (Keras' rule).
    pub fn set_learning_rate(&mut self, learning_rate: f64) -> Result<()> {
        match self.config.learning_rate {
            LearningRate::Constant(_) => {
                self.config.learning_rate = LearningRate::Constant(learning_rate);
                self.current.learning_rate = learning_rate as f32;
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
            .map(|p| Regex::new(p).map_err(|e| invalid!("invalid exclude_from_weight_decay pattern {p:?}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        self.exclude_patterns = compiled;
        self.exclude_variables = variables.to_vec();
        Ok(())
    }

    /// `build(var_list)`: creates m and v (and vhat, and the EMA averages as copies of
    /// `initial_values`) for each variable. `initial_values` may be empty unless `use_ema`.
    pub fn build(&mut self, specs: &[VariableSpec], initial_values: &[TensorRef<'_>]) -> Result<()> {
        if self.is_built() {
            return Err(Error::AlreadyBuilt("the optimizer is already built; build can be called once".into()));
        }
        if let Some(&bad) = self.exclude_variables.iter().find(|&&i| i >= specs.len()) {
            return Err(Error::UnknownVariable(format!(
                "exclude_from_weight_decay names variable {bad}, but build received {} variables",
                specs.len()
            )));
        }
        let use_ema = self.config.use_ema;
        if use_ema && initial_values.len() != specs.len() {
            return Err(invalid!(
                "use_ema needs every variable's initial value at build (the averages start as copies): got {} values for {} variables",
                initial_values.len(),
                specs.len()
            ));
        }
        let mut built = Vec::new();
        built.try_reserve_exact(specs.len()).map_err(|_| Error::OutOfMemory("too many variables".into()))?;
        for (i, spec) in specs.iter().enumerate() {
            if !matches!(spec.dtype, DType::F32 | DType::F64) {
                return Err(Error::DtypeMismatch(format!(
                    "variable {i} (`{}`): dtype must be float32 or float64, got {}",
                    spec.name,
                    spec.dtype.name()
                )));
            }
            if spec.name.contains('\0') {
                return Err(invalid!("variable {i}: the name must not contain a NUL character"));
            }
            let full_len = spec.element_count()?;
            let (offset, len) = match spec.shard {
                None => (0, full_len),
                Some(Shard { offset, len }) => {
                    if self.config.mesh.is_none() {
                        return Err(invalid!(
                            "variable {i} (`{}`) is a shard: sharded state needs a mesh (an all-reduce) in the config",
                            spec.name
                        ));
                    }
                    if offset.checked_add(len).is_none_or(|end| end > full_len) {
                        return Err(invalid!(
                            "variable {i} (`{}`): shard {offset}..{} lies outside its {full_len} elements",
                            spec.name,
                            offset.saturating_add(len)
                        ));
                    }
                    (offset, len)
                }
            };
            if use_ema {
                let init = initial_values[i];
                if init.dtype() != spec.dtype {
                    return Err(Error::DtypeMismatch(format!(
                        "variable {i} (`{}`) is {} but its initial value is {}",
                        spec.name,
                        spec.dtype.name(),
                        init.dtype().name()
                    )));
                }
                if init.len() != len {
                    return Err(Error::ShapeMismatch(format!(
                        "variable {i} (`{}`) of shape {:?} has {len} elements but its initial value has {}",
                        spec.name,
                        spec.shape,
                        init.len()
                    )));
                }
            }
            let keras_name = spec.keras_name();
            let excluded =
                self.exclude_variables.contains(&i) || self.exclude_patterns.iter().any(|p| p.is_match(&keras_name));
            let average = if use_ema {
                let mut a = Buffer::zeros(spec.dtype, len)?;
                a.copy_from(initial_values[i]);
                a
            } else {
                Buffer::empty(spec.dtype)
            };
            built.push(BuiltVariable {
                spec: spec.clone(),
                len,
                offset,
                slot_shape: if spec.shard.is_some() { vec![len] } else { spec.shape.clone() },
                row_len: spec.shape.iter().skip(1).product(),
                decay: !excluded,
                m: Buffer::zeros(spec.dtype, len)?,
                v: Buffer::zeros(spec.dtype, len)?,
                vhat: if self.config.amsgrad { Buffer::zeros(spec.dtype, len)? } else { Buffer::empty(spec.dtype) },
                average,
            });
        }
        let mut last_listed = Vec::new();
        let mut norm_partials = Vec::new();
        last_listed.try_reserve_exact(specs.len()).map_err(|_| Error::OutOfMemory("too many variables".into()))?;
        norm_partials.try_reserve_exact(specs.len()).map_err(|_| Error::OutOfMemory("too many variables".into()))?;
        last_listed.resize(specs.len(), 0);
        self.built = Some(built);
        self.last_listed = last_listed;
        self.norm_partials = norm_partials;
        Ok(())
    }

    /// Reserves room for sparse gradients of up to `indices` indices, so that no later sparse
    /// step allocates (without it, the first step with more indices than any before grows a buffer).
    pub fn reserve_sparse(&mut self, indices: usize) -> Result<()> {
        let extra = indices.saturating_sub(self.sparse_rows.len());
        self.sparse_rows
            .try_reserve(extra)
            .map_err(|_| Error::OutOfMemory(format!("cannot reserve room for {indices} sparse indices")))
    }

    /// The learning rate and betas of the step at `step` (pre-increment iterations).
    fn hyper_at(&self, step: i64) -> Result<CurrentValues> {
        let learning_rate = match &self.config.learning_rate {
            LearningRate::Constant(x) => *x as f32,
            LearningRate::Schedule(s) => s.evaluate(step),
            LearningRate::Callback(cb) => cb.eval("learning_rate", step)? as f32,
        };
        let beta = |b: &Beta, what: &str| match b {
            Beta::Value(x) => Ok(*x),
            Beta::Callback(cb) => cb.eval(what, step),
        };
        Ok(CurrentValues {
            learning_rate,
            beta_1: beta(&self.config.beta_1, "beta_1")?,
            beta_2: beta(&self.config.beta_2, "beta_2")?,
        })
    }

    /// Checks one entry against the built variable it names. Changes nothing.
    fn check_update(built: &[BuiltVariable], u: &Update<'_>) -> Result<()> {
        let Some(var) = built.get(u.variable) else {
            return Err(Error::UnknownVariable(format!(
                "The optimizer cannot recognize variable {} (it was built with {} variables). This usually means you are trying to call the optimizer to update different parts of the model separately. Please call `optimizer.build(variables)` with the full list of trainable variables before the training loop.",
                u.variable,
                built.len()
            )));
        };
        let name = &var.spec.name;
        let dtype = var.spec.dtype;
        if u.value.dtype() != dtype {
            return Err(Error::DtypeMismatch(format!(
                "variable {} (`{name}`) is {} but its values were given as {}",
                u.variable,
                dtype.name(),
                u.value.dtype().name()
            )));
        }
        if u.value.len() != var.len {
            return Err(Error::ShapeMismatch(format!(
                "variable {} (`{name}`) of shape {:?} has {} elements, got {}",
                u.variable,
                var.spec.shape,
                var.len,
                u.value.len()
            )));
        }
        match u.gradient {
            None => {}
            Some(Gradient::Dense(g)) => {
                if g.dtype() != dtype {
                    return Err(Error::DtypeMismatch(format!(
                        "variable {} (`{name}`) is {} but its gradient is {}",
                        u.variable,
                        dtype.name(),
                        g.dtype().name()
                    )));
                }
                if g.len() != var.len {
                    return Err(Error::ShapeMismatch(format!(
                        "the gradient of variable {} (`{name}`, {} elements) has {} elements",
                        u.variable,
                        var.len,
                        g.len()
                    )));
                }
            }
            Some(Gradient::Sparse { indices, values }) => {
                if var.spec.shape.is_empty() {
                    return Err(invalid!(
                        "variable {} (`{name}`) is a scalar and cannot take a sparse gradient",
                        u.variable
                    ));
                }
                if values.dtype() != dtype {
                    return Err(Error::DtypeMismatch(format!(
                        "variable {} (`{name}`) is {} but its sparse gradient values are {}",
                        u.variable,
                        dtype.name(),
                        values.dtype().name()
                    )));
                }
                if indices.len().checked_mul(var.row_len) != Some(values.len()) {
                    return Err(Error::ShapeMismatch(format!(
                        "the sparse gradient of variable {} (`{name}`) has {} indices and {} values; rows of {} elements need {}",
                        u.variable,
                        indices.len(),
                        values.len(),
                        var.row_len,
                        indices.len().saturating_mul(var.row_len)
                    )));
                }
                let rows = var.spec.shape[0];
                if let Some((k, &bad)) = indices.iter().enumerate().find(|&(_, &r)| r < 0 || r as u64 >= rows as u64) {
                    return Err(Error::IndexOutOfRange(format!(
                        "indices[{k}] = {bad} is not in [0, {rows}) for variable {} (`{name}`)",
                        u.variable
                    )));
                }
            }
        }
        Ok(())
    }

    /// `apply_gradients(zip(grads, vars))`: one step over the listed variables (docs/numerics.md §2.1).
    /// Validates everything first: on error nothing has changed. Returns the new iteration count.
    /// An empty list is a no-op that only re-reads the learning rate, as in Keras.
    pub fn apply_gradients<S: UpdateSource + ?Sized>(&mut self, updates: &mut S) -> Result<i64> {
        let step = self.iterations;
        if updates.is_empty() {
            self.current = self.hyper_at(step)?;
            return Ok(self.iterations);
        }
        let built = self.built.as_ref().ok_or_else(|| not_built("apply_gradients"))?;
        self.call_number += 1;
        let (mut any_gradient, mut has_f32, mut has_f64) = (false, false, false);
        let mut largest = 0usize;
        for i in 0..updates.len() {
            let u = updates.get(i);
            Self::check_update(built, &u)?;
            if self.last_listed[u.variable] == self.call_number {
                return Err(invalid!("variable {} is listed twice in one apply_gradients call", u.variable));
            }
            self.last_listed[u.variable] = self.call_number;
            if u.gradient.is_some() {
                largest = largest.max(u.value.len());
                any_gradient = true;
                has_f32 |= u.value.dtype() == DType::F32;
                has_f64 |= u.value.dtype() == DType::F64;
            }
        }
        if !any_gradient {
            let names: Vec<String> =
                (0..updates.len()).map(|i| format!("'{}'", built[updates.get(i).variable].spec.keras_name())).collect();
            return Err(Error::NoGradients(format!(
                "No gradients provided for any variable: ([{}],).",
                names.join(", ")
            )));
        }
        if self.config.reject_non_finite_gradients {
            Self::check_finite(built, updates)?;
        }
        let clipping = self.config.clipping();
        if matches!(clipping, Clipping::GlobalNorm(_)) && has_f32 && has_f64 {
            return Err(invalid!(
                "global_clipnorm needs gradients of one dtype: Keras cannot combine float32 and float64 norms"
            ));
        }
        // Callbacks run only for a call that passed every check.
        let hyper = self.hyper_at(step)?;
        // Only variables above 2 * CHUNK elements are split across threads; a call without one
        // stays on the calling thread, where a handoff to the pool would only add its cost.
        let pool = self.pool.clone().filter(|_| largest > 2 * cpu::CHUNK);
        let parallel = self.config.threads != 1;
        // Norms for clipping come before anything changes: the mesh's all-reduce may fail. The
        // partial norms are computed in the pool; the all-reduce, which blocks until every rank
        // arrives, runs on the calling thread: blocking a pool thread could starve other ranks
        // that share the pool (ranks as threads of one process).
        if matches!(clipping, Clipping::Norm(_) | Clipping::GlobalNorm(_)) {
            in_pool(&pool, || self.measure_norms(updates, clipping, parallel))?;
            if let Some(mesh) = &self.config.mesh {
                mesh.all_reduce(&mut self.norm_partials)?;
            }
        }
        in_pool(&pool, || self.step(updates, step, hyper, clipping, parallel))
    }

    /// The work of a validated step: clip norms, then every variable's update, then the counter.
    fn step<S: UpdateSource + ?Sized>(
        &mut self,
        updates: &mut S,
        step: i64,
        hyper: CurrentValues,
        clipping: Clipping,
        parallel: bool,
    ) -> Result<i64> {
        let partials = &self.norm_partials;
        let (global_f32, global_f64) = match clipping {
            Clipping::GlobalNorm(clip) => (
                Clip::by_global_norm(
                    kernels::sum_eigen_in(parallel, &|i| Ftz::new(partials[i] as f32), 0, partials.len()),
                    clip,
                ),
                Clip::by_global_norm(
                    kernels::sum_eigen_in(parallel, &|i| Ftz::new(partials[i]), 0, partials.len()),
                    clip,
                ),
            ),
            _ => (Clip::None, Clip::None),
        };
        let h = StepHyper {
            learning_rate: hyper.learning_rate,
            weight_decay: self.config.weight_decay,
            beta_1: hyper.beta_1,
            beta_2: hyper.beta_2,
            epsilon: self.config.epsilon,
            ema_momentum: self.config.ema_momentum,
            iterations: step,
        };
        let (s32, s64) = (StepScalars::<f32>::new(&h), StepScalars::<f64>::new(&h));
        let overwrite_with_average = self.config.use_ema
            && self.config.ema_overwrite_frequency.is_some_and(|f| f > 0 && (step.wrapping_add(1)) % f == 0);
        let built = self.built.as_mut().ok_or_else(|| not_built("apply_gradients"))?;
        let mut with_gradient = 0;
        for i in 0..updates.len() {
            let u = updates.get(i);
            let Some(gradient) = u.gradient else { continue };
            let partial = partials.get(with_gradient).copied().unwrap_or(0.0);
            with_gradient += 1;
            let var = &mut built[u.variable];
            let ops = VariableOps { decay: var.decay, overwrite_with_average };
            match u.value {
                TensorMut::F32(value) => {
                    let clip = clip_for(clipping, partial, global_f32);
                    step_variable(var, value, typed::<f32>(gradient), &s32, ops, clip, &mut self.sparse_rows, parallel)
                }
                TensorMut::F64(value) => {
                    let clip = clip_for(clipping, partial, global_f64);
                    step_variable(var, value, typed::<f64>(gradient), &s64, ops, clip, &mut self.sparse_rows, parallel)
                }
            }
        }
        self.iterations += 1;
        self.current = hyper;
        Ok(self.iterations)
    }

    /// Fills `norm_partials`, one per gradient in list order: its sum of squares (clipnorm) or its
    /// `l2_loss` (global_clipnorm), in Eigen's order over the elements held here (a shard's part;
    /// the caller sums them across ranks). Changes nothing else.
    fn measure_norms<S: UpdateSource + ?Sized>(
        &mut self,
        updates: &mut S,
        clipping: Clipping,
        parallel: bool,
    ) -> Result<()> {
        let built = self.built.as_ref().ok_or_else(|| not_built("apply_gradients"))?;
        let halve = matches!(clipping, Clipping::GlobalNorm(_));
        // Capacity for every built variable was reserved at build: no allocation here.
        self.norm_partials.clear();
        for i in 0..updates.len() {
            let u = updates.get(i);
            let var = &built[u.variable];
            let partial = match u.gradient {
                None => continue,
                Some(Gradient::Dense(TensorRef::F32(g))) => {
                    kernels::squares_sum(parallel, g, halve, &|_| true).get() as f64
                }
                Some(Gradient::Dense(TensorRef::F64(g))) => kernels::squares_sum(parallel, g, halve, &|_| true).get(),
                Some(Gradient::Sparse { indices, values }) => {
                    // Rows are whole rows of the variable; a shard counts only its own elements.
                    let row_len = var.row_len.max(1);
                    let (first, end) = (var.offset, var.offset + var.len);
                    let held = |j: usize| {
                        let element = indices[j / row_len] as usize * row_len + j % row_len;
                        first <= element && element < end
                    };
                    match (values, var.spec.shard.is_some()) {
                        (TensorRef::F32(g), false) => kernels::squares_sum(parallel, g, halve, &|_| true).get() as f64,
                        (TensorRef::F64(g), false) => kernels::squares_sum(parallel, g, halve, &|_| true).get(),
                        (TensorRef::F32(g), true) => kernels::squares_sum(parallel, g, halve, &held).get() as f64,
                        (TensorRef::F64(g), true) => kernels::squares_sum(parallel, g, halve, &held).get(),
                    }
                }
            };
            self.norm_partials.push(partial);
        }
        Ok(())
    }

    /// The non-finite guard: the first NaN or infinity in any gradient of the call.
    fn check_finite<S: UpdateSource + ?Sized>(built: &[BuiltVariable], updates: &mut S) -> Result<()> {
        #[allow(clippy::eq_op)] // `v - v` is the point: NaN exactly when v is NaN or infinite
        fn first_bad<F: Real>(x: &[F]) -> Option<(usize, f64)> {
            // Summing x - x is NaN exactly when some x is NaN or infinite, and vectorizes.
            let all_finite = x.chunks(1024).all(|c| c.iter().fold(F::ZERO, |acc, &v| acc + (v - v)) == F::ZERO);
            if all_finite {
                return None;
            }
            x.iter().position(|v| !(*v - *v == F::ZERO)).map(|k| (k, x[k].to_f64()))
        }
        for i in 0..updates.len() {
            let u = updates.get(i);
            let values = match u.gradient {
                None => continue,
                Some(Gradient::Dense(g)) => g,
                Some(Gradient::Sparse { values, .. }) => values,
            };
            let bad = match values {
                TensorRef::F32(x) => first_bad(x),
                TensorRef::F64(x) => first_bad(x),
            };
            if let Some((k, value)) = bad {
                return Err(Error::NonFiniteGradient(format!(
                    "the gradient of variable {} (`{}`) holds {value} at element {k}; the call was rejected and nothing changed (reject_non_finite_gradients is on)",
                    u.variable, built[u.variable].spec.name
                )));
            }
        }
        Ok(())
    }

    /// `finalize_variable_values(var_list)`: with EMA, each listed variable takes its average's
    /// value; without EMA nothing changes. Gradients in `updates` are ignored.
    pub fn finalize_variable_values<S: UpdateSource + ?Sized>(&mut self, updates: &mut S) -> Result<()> {
        let built = self.built.as_ref().ok_or_else(|| not_built("finalize_variable_values"))?;
        for i in 0..updates.len() {
            let mut u = updates.get(i);
            u.gradient = None;
            Self::check_update(built, &u)?;
        }
        if !self.config.use_ema {
            return Ok(());
        }
        for i in 0..updates.len() {
            let u = updates.get(i);
            let average = &built[u.variable].average;
            match (u.value, average) {
                (TensorMut::F32(d), Buffer::F32(a)) => d.copy_from_slice(a),
                (TensorMut::F64(d), Buffer::F64(a)) => d.copy_from_slice(a),
                _ => unreachable!("dtypes were checked above"),
            }
        }
        Ok(())
    }

    /// The optimizer variables in Keras' order: `iteration`, then (EMA) one average per variable,
    /// then m and v interleaved per variable, then (amsgrad) one vhat per variable.
    fn layout(&self) -> impl Iterator<Item = (SlotKind, usize)> + '_ {
        let n = self.built.as_ref().map_or(0, Vec::len);
        let ema = if self.config.use_ema { n } else { 0 };
        let amsgrad = if self.config.amsgrad { n } else { 0 };
        std::iter::once((SlotKind::Iterations, 0))
            .chain((0..ema).map(|i| (SlotKind::Average, i)))
            .chain((0..2 * n).map(|k| (if k % 2 == 0 { SlotKind::M } else { SlotKind::V }, k / 2)))
            .chain((0..amsgrad).map(|i| (SlotKind::Vhat, i)))
    }

    /// How many optimizer variables there are (1 before build: the counter).
    pub fn num_variables(&self) -> usize {
        self.layout().count()
    }

    fn slot_kind(&self, index: usize) -> Option<(SlotKind, usize)> {
        self.layout().nth(index)
    }

    /// The optimizer variable at `index` of Keras' `optimizer.variables`.
    pub fn variable(&self, index: usize) -> Option<OptimizerVariable<'_>> {
        let (kind, i) = self.slot_kind(index)?;
        if kind == SlotKind::Iterations {
            return Some(OptimizerVariable {
                name: "iteration".into(),
                shape: &[],
                data: WeightData::I64(std::slice::from_ref(&self.iterations)),
            });
        }
        let var = &self.built.as_ref()?[i];
        let buffer = match kind {
            SlotKind::Average => &var.average,
            SlotKind::M => &var.m,
            SlotKind::V => &var.v,
            _ => &var.vhat,
        };
        Some(OptimizerVariable {
            name: format!("{}/{}/{}", self.config.name, kind.name(), var.spec.name),
            shape: &var.slot_shape,
            data: buffer.as_ref().into(),
        })
    }

    /// `set_weights(weights)`: Keras zips the optimizer variables with `weights`, so a shorter
    /// list sets a prefix and extra weights are ignored. Every weight is checked before any is set.
    pub fn set_weights(&mut self, weights: &[Weight<'_>]) -> Result<()> {
        if !self.is_built() {
            return Err(Error::NotBuilt(
                "You are calling `set_weights()` on an optimizer that has not yet been built. Please call `optimizer.build(trainable_variables)` to create the optimizer weights before calling `set_weights()`.".into(),
            ));
        }
        self.check_weights(weights, false)?;
        self.assign_weights(weights);
        Ok(())
    }

    /// Checks weights against the variables they would replace (`exact_count`: one per variable).
    fn check_weights(&self, weights: &[Weight<'_>], exact_count: bool) -> Result<()> {
        let n = self.num_variables();
        if exact_count && weights.len() != n {
            return Err(Error::CheckpointMismatch(format!(
                "Skipping variable loading for optimizer '{}', because it has {n} variables whereas the saved optimizer has {} variables. {}",
                self.config.name,
                weights.len(),
                if n == 1 { "This is likely because the optimizer has not been called/built yet." } else { "" }
            ).trim_end().to_string()));
        }
        for (index, w) in weights.iter().enumerate().take(n) {
            let Some(var) = self.variable(index) else { break };
            let mismatch =
                |msg: String| if exact_count { Error::CheckpointMismatch(msg) } else { Error::ShapeMismatch(msg) };
            if w.shape != var.shape {
                return Err(mismatch(format!(
                    "Optimizer variable {} has shape {} not compatible with provided weight shape {}.",
                    var.name,
                    py_shape(var.shape),
                    py_shape(w.shape)
                )));
            }
            if w.data.dtype() != var.data.dtype() {
                let msg = format!(
                    "Optimizer variable {} is {} but the provided weight is {}.",
                    var.name,
                    var.data.dtype().name(),
                    w.data.dtype().name()
                );
                return Err(if exact_count { Error::CheckpointMismatch(msg) } else { Error::DtypeMismatch(msg) });
            }
            if w.data.len() != var.data.len() {
                return Err(mismatch(format!(
                    "Optimizer variable {} has {} elements; the provided weight has {}.",
                    var.name,
                    var.data.len(),
                    w.data.len()
                )));
            }
        }
        Ok(())
    }

    fn assign_weights(&mut self, weights: &[Weight<'_>]) {
        let n = self.num_variables();
        for (index, w) in weights.iter().enumerate().take(n) {
            let Some((kind, i)) = self.slot_kind(index) else { break };
            if let (SlotKind::Iterations, WeightData::I64(x)) = (kind, w.data) {
                self.iterations = x[0];
                continue;
            }
            let Some(built) = self.built.as_mut() else { break };
            let var = &mut built[i];
            let buffer = match kind {
                SlotKind::Average => &mut var.average,
                SlotKind::M => &mut var.m,
                SlotKind::V => &mut var.v,
                _ => &mut var.vhat,
            };
            match (buffer, w.data) {
                (Buffer::F32(d), WeightData::F32(s)) => d.copy_from_slice(s),
                (Buffer::F64(d), WeightData::F64(s)) => d.copy_from_slice(s),
                _ => unreachable!("weights were checked before assignment"),
            }
        }
    }

    /// `save_own_variables(store)`: the optimizer variables as a safetensors file with keys
    /// "0".."N-1" in Keras' order (see [`crate::checkpoint`]).
    pub fn save_own_variables(&self) -> Result<Vec<u8>> {
        let vars: Vec<OptimizerVariable<'_>> = (0..self.num_variables()).filter_map(|i| self.variable(i)).collect();
        crate::checkpoint::encode(&vars)
    }

    /// `load_own_variables(store)`: replaces every optimizer variable from a checkpoint made by
    /// `save_own_variables` of an optimizer built the same way. Unlike Keras, which only warns,
    /// a checkpoint that does not match is an error; either way nothing changes.
    pub fn load_own_variables(&mut self, bytes: &[u8]) -> Result<()> {
        let checkpoint = crate::checkpoint::decode(bytes)?;
        let weights = checkpoint.weights();
        self.check_weights(&weights, true)?;
        self.assign_weights(&weights);
        Ok(())
    }

    /// `save_own_variables` to a file, written atomically (see [`crate::checkpoint`]): a crash or
    /// a write error leaves whatever was at `path` intact.
    pub fn save_own_variables_to_file(&self, path: &std::path::Path) -> Result<()> {
        crate::checkpoint::write_atomically(path, &self.save_own_variables()?)
    }

    /// `load_own_variables` from a file written by [`Optimizer::save_own_variables_to_file`].
    pub fn load_own_variables_from_file(&mut self, path: &std::path::Path) -> Result<()> {
        self.load_own_variables(&crate::checkpoint::read_file(path)?)
    }

    /// `minimize(loss, var_list)`: `compute` fills the gradients of `updates` from the current
    /// variable values, then the step is applied. A failing `compute` changes nothing.
    pub fn minimize<S: UpdateSource + ?Sized>(
        &mut self,
        updates: &mut S,
        compute: impl FnOnce(&mut S) -> std::result::Result<(), String>,
    ) -> Result<i64> {
        compute(updates).map_err(|reason| Error::CallbackFailed(format!("the gradient callback failed: {reason}")))?;
        self.apply_gradients(updates)
    }
}

/// A gradient of a known element type.
enum TypedGradient<'a, F> {
    Dense(&'a [F]),
    Sparse { indices: &'a [i64], values: &'a [F] },
}

fn typed<F: Slot>(g: Gradient<'_>) -> TypedGradient<'_, F> {
    match g {
        Gradient::Dense(t) => TypedGradient::Dense(F::from_tensor(t)),
        Gradient::Sparse { indices, values } => TypedGradient::Sparse { indices, values: F::from_tensor(values) },
    }
}

/// The clip of one gradient: `partial` is its (all-reduced) sum of squares for clipnorm.
fn clip_for<F: Real>(clipping: Clipping, partial: f64, global: Clip<F>) -> Clip<F> {
    match clipping {
        Clipping::None => Clip::None,
        Clipping::Norm(c) => Clip::by_norm(Ftz::new(F::from_f64(partial)), c),
        Clipping::GlobalNorm(_) => global,
        Clipping::Value(v) => Clip::by_value(v),
    }
}

/// Decay and update one variable (its checks have passed) with its gradient, clipped by `clip`.
#[allow(clippy::too_many_arguments)]
fn step_variable<F: Slot>(
    var: &mut BuiltVariable,
    value: &mut [F],
    gradient: TypedGradient<'_, F>,
    s: &StepScalars<F>,
    ops: VariableOps,
    clip: Clip<F>,
    sparse_rows: &mut Vec<(usize, usize)>,
    parallel: bool,
) {
    let (row_len, offset) = (var.row_len, var.offset);
    let lanes = Lanes {
        var: value,
        m: F::slot(&mut var.m),
        v: F::slot(&mut var.v),
        vhat: F::slot(&mut var.vhat),
        average: F::slot(&mut var.average),
    };
    match gradient {
        TypedGradient::Dense(g) => cpu::dense_step(s, ops, clip, g, lanes, parallel),
        TypedGradient::Sparse { indices, values } => {
            sparse_rows.clear();
            sparse_rows.extend(indices.iter().enumerate().map(|(pos, &row)| (row as usize, pos)));
            sparse_rows.sort_unstable();
            let rows = SparseRows { entries: sparse_rows, values, row_len };
            cpu::sparse_step(s, ops, clip, rows, offset, lanes, parallel);
        }
    }
}
