//! The AdamW constructor arguments, Keras' defaults and checks (docs/numerics.md §16), and the
//! Keras-compatible `get_config` / `from_config` JSON (docs/numerics.md §11).

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json_number::{float_from_json, float_to_json};
use crate::kwargs::{Kwargs, Num};
use crate::schedule::Schedule;

/// The largest `weight_decay_min_ndim`: the most dimensions a variable of the C ABI has
/// (`ADAMW_MAX_NDIM`).
pub(crate) const WEIGHT_DECAY_MIN_NDIM_LIMIT: i64 = 32;

/// A hyper-parameter computed by the caller at each step: `step` is the pre-increment iteration
/// count (the value Keras passes to a schedule). An `Err` carries the caller's reason.
#[derive(Clone)]
pub struct Callback(pub Arc<dyn Fn(i64) -> std::result::Result<f64, String> + Send + Sync>);

impl Callback {
    /// Wraps a function of the step.
    pub fn new(f: impl Fn(i64) -> std::result::Result<f64, String> + Send + Sync + 'static) -> Self {
        Callback(Arc::new(f))
    }

    /// Calls the function; a failure or a non-finite value is a `CallbackFailed` error naming `what`.
    pub fn eval(&self, what: &str, step: i64) -> Result<f64> {
        match (self.0)(step) {
            Ok(x) if x.is_finite() => Ok(x),
            Ok(x) => Err(Error::CallbackFailed(format!("the {what} callback returned {x} at step {step}"))),
            Err(reason) => Err(Error::CallbackFailed(format!("the {what} callback failed at step {step}: {reason}"))),
        }
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback(..)")
    }
}

impl PartialEq for Callback {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Sums values across the ranks that share sharded variables, in place, identically on every
/// rank (an all-reduce with SUM, as MPI, NCCL or Gloo provide). An `Err` carries the reason.
#[derive(Clone)]
pub struct Mesh(pub Arc<AllReduce>);

/// The all-reduce of a [`Mesh`]: sums a buffer across ranks in place.
pub type AllReduce = dyn Fn(&mut [f64]) -> std::result::Result<(), String> + Send + Sync;

impl Mesh {
    /// Wraps an all-reduce function.
    pub fn new(all_reduce: impl Fn(&mut [f64]) -> std::result::Result<(), String> + Send + Sync + 'static) -> Self {
        Mesh(Arc::new(all_reduce))
    }

    /// Sums `values` across ranks in place; a failure is a `CallbackFailed` error.
    pub fn all_reduce(&self, values: &mut [f64]) -> Result<()> {
        (self.0)(values).map_err(|reason| Error::CallbackFailed(format!("the mesh all-reduce failed: {reason}")))
    }
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mesh(..)")
    }
}

impl PartialEq for Mesh {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// `learning_rate`: a float, one of the six Keras schedules, or a callback evaluated every step.
#[derive(Debug, Clone, PartialEq)]
pub enum LearningRate {
    /// A fixed rate, used as float32 each step (Keras keeps it in a float32 variable).
    Constant(f64),
    /// A Keras schedule, evaluated in float32 at the pre-increment iteration count each step.
    Schedule(Schedule),
    /// A rate computed by the caller every step, rounded to float32 (Keras calls a callable once).
    Callback(Callback),
}

/// `beta_1` / `beta_2`: a float, or a callback evaluated every step (an extension: Keras documents
/// callables here but fails on them).
#[derive(Debug, Clone, PartialEq)]
pub enum Beta {
    /// A fixed value.
    Value(f64),
    /// A value computed by the caller every step.
    Callback(Callback),
}

/// Where an optimizer's state lives and its step runs ([`Config::device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// Host memory, the CPU engine.
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal (the `cuda` feature): the state in its memory, each pass one
    /// kernel launch. Needs the CUDA driver and NVRTC at run time; without them the optimizer is
    /// not created (`Error::Device`). The caller's values and gradients stay host memory here.
    Cuda(u32),
    /// The device kernels compiled for the host, run one simulated thread at a time (the
    /// `host-kernels` feature): for testing the kernels without a GPU.
    HostKernels,
}

/// Every `tf.keras.optimizers.AdamW` constructor argument. Floats are binary64, like Python's;
/// the optimizer rounds them where Keras does.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The optimizer's name (default `"AdamW"`); must not contain a NUL character.
    pub name: String,
    /// The learning rate (default 0.001); see docs/numerics.md §9.
    pub learning_rate: LearningRate,
    /// The decoupled weight decay (default 0.004): `x -= (x * weight_decay) * lr` before the Adam step.
    pub weight_decay: f64,
    /// The decay rate of the first-moment (mean) estimates (default 0.9).
    pub beta_1: Beta,
    /// The decay rate of the second-moment (uncentered variance) estimates (default 0.999).
    pub beta_2: Beta,
    /// Keras' "epsilon hat", added to `sqrt(v)` in the denominator (default 1e-7).
    pub epsilon: f64,
    /// Use AMSGrad: divide by the running maximum of `v` instead of `v` (default `false`).
    pub amsgrad: bool,
    /// `None`, zero or a negative value means no clipping (Keras' rule).
    pub clipnorm: Option<f64>,
    /// Clips all gradients of a call together by their global norm; `None`, zero or a negative
    /// value means none. At most one of `clipnorm` and `global_clipnorm` may be set.
    pub global_clipnorm: Option<f64>,
    /// Clips each gradient element to `[-clipvalue, clipvalue]`; `None`, zero or a negative value
    /// means none. Ignored when a norm clip is in force, as in Keras.
    pub clipvalue: Option<f64>,
    /// Keep an exponential moving average of each variable (default `false`).
    pub use_ema: bool,
    /// The EMA's momentum, `avg = m * avg + (1 - m) * x` (default 0.99); in [0, 1] when `use_ema`.
    pub ema_momentum: f64,
    /// `None` or 0: never overwrite the variables with their averages.
    pub ema_overwrite_frequency: Option<i64>,
    /// Requests the device backend (default `true`, as in Keras): the step runs on `device` when
    /// that is one. `get_config` reports the effective value, `false` on the CPU, as Keras does
    /// without a GPU.
    pub jit_compile: bool,
    /// Where the optimizer state lives and the step runs (not a Keras argument, not in
    /// `get_config`): the CPU (default), or with `jit_compile` a device (docs/numerics.md §20).
    pub device: Device,
    /// Sharded state (Keras' `mesh`): with a mesh, variables may be built over a shard of their
    /// elements, and norms for clipping are summed across ranks by its all-reduce. Not part of
    /// `get_config`, as in Keras.
    pub mesh: Option<Mesh>,
    /// The non-finite guard (an extension, off by default for Keras parity): `apply_gradients`
    /// first checks every gradient value, and a NaN or an infinity rejects the whole call
    /// (`Error::NonFiniteGradient`) with nothing changed. In `get_config` as
    /// `"reject_non_finite_gradients": true` only when on, so Keras can read configs without it.
    pub reject_non_finite_gradients: bool,
    /// Float32 master weights for bfloat16 and float16 variables (an extension, off by default:
    /// docs/numerics.md §18). `get_config` includes `"master_weights": true` only when on.
    pub master_weights: bool,
    /// Variables with fewer dimensions than this are not decayed (an extension, 0 by default:
    /// every variable is; 2 is the rule of llm.c and nanoGPT, which leaves biases, norm scales
    /// and scalars undecayed). Applied at build, with `exclude_from_weight_decay`. In
    /// `get_config` as `"weight_decay_min_ndim"` only when not 0.
    pub weight_decay_min_ndim: usize,
    /// Keras 3's `gradient_accumulation_steps` (docs/numerics.md §25): `Some(n)`, n >= 2, makes
    /// every n-th `apply_gradients` call update the variables with the average of the n
    /// gradients, the calls between only accumulating them (Keras 3's arithmetic, counter and
    /// moving averages). In `get_config` as `"gradient_accumulation_steps"` only when set.
    pub gradient_accumulation_steps: Option<i64>,
    /// Keras' `LossScaleOptimizer` around this AdamW, if any (docs/numerics.md §19). With it,
    /// `get_config` / `from_config` read and write the LossScaleOptimizer's config.
    pub loss_scale: Option<LossScale>,
    /// Threads for a step (not a Keras argument, not in `get_config`): 0 uses a pool shared by
    /// the process (one thread per core, the caller one of them, started by the first optimizer
    /// that needs it); 1 runs on the caller's thread and never starts or uses a worker thread;
    /// N > 1 gives the optimizer a pool of its own: the caller and N - 1 threads. Results are
    /// the same bits for every value. [`Optimizer::set_parallel_for`](crate::Optimizer::set_parallel_for)
    /// runs the tasks on the caller's threads instead.
    pub threads: usize,
}

impl Default for Config {
    /// Keras' defaults.
    fn default() -> Self {
        Config {
            name: "AdamW".into(),
            learning_rate: LearningRate::Constant(0.001),
            weight_decay: 0.004,
            beta_1: Beta::Value(0.9),
            beta_2: Beta::Value(0.999),
            epsilon: 1e-7,
            amsgrad: false,
            clipnorm: None,
            global_clipnorm: None,
            clipvalue: None,
            use_ema: false,
            ema_momentum: 0.99,
            ema_overwrite_frequency: None,
            jit_compile: true,
            device: Device::Cpu,
            mesh: None,
            threads: 0,
            reject_non_finite_gradients: false,
            master_weights: false,
            weight_decay_min_ndim: 0,
            gradient_accumulation_steps: None,
            loss_scale: None,
        }
    }
}

/// The arguments of `tf_keras.mixed_precision.LossScaleOptimizer` (Keras' defaults: dynamic,
/// 2**15, 2000).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    /// Whether the scale grows and backs off (a fixed scale otherwise, and no step is skipped).
    pub dynamic: bool,
    /// The scale to start from.
    pub initial_scale: f64,
    /// Finite steps in a row after which a dynamic scale doubles.
    pub dynamic_growth_steps: i64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale { dynamic: true, initial_scale: 32768.0, dynamic_growth_steps: 2000 }
    }
}

/// Keras' words for a LossScaleOptimizer around another (its constructor's `TypeError`).
pub(crate) fn nested_loss_scale_error(inner: &str) -> Error {
    Error::InvalidConfig(format!("LossScaleOptimizer cannot wrap another LossScaleOptimizer, but got: {inner}."))
}

impl LossScale {
    /// A deliberate difference from Keras (docs/numerics.md §15), which accepts these and then
    /// trains on zeros or NaN, or never applies a step: the scale, as the float32 Keras keeps it
    /// in, must be a positive normal number (so that its reciprocal, the unscale factor, is
    /// finite too), and a dynamic scale must grow after at least one finite step.
    pub fn validate(&self) -> Result<()> {
        let scale = self.initial_scale as f32;
        if !(scale.is_normal() && scale > 0.0) {
            let why = if self.initial_scale.is_nan() {
                "it is NaN"
            } else if self.initial_scale.is_infinite() || scale.is_infinite() {
                "it is beyond the largest finite float32 (3.4028235e+38)"
            } else if self.initial_scale <= 0.0 {
                "it is not positive"
            } else {
                "float32 cannot hold it as a normal number"
            };
            return Err(Error::InvalidArgument(format!(
                "the loss scale's initial_scale must be a finite positive float32, got {}: {why}",
                py_float(self.initial_scale)
            )));
        }
        if self.dynamic && self.dynamic_growth_steps < 1 {
            return Err(Error::InvalidArgument(format!(
                "a dynamic loss scale's dynamic_growth_steps must be at least 1, got {}",
                self.dynamic_growth_steps
            )));
        }
        Ok(())
    }
}

/// The values of a config's hyper-parameters as of the last step (or creation), which is what
/// Keras reports for a learning rate (its float32 variable) and what we report for callbacks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurrentValues {
    pub learning_rate: f32,
    pub beta_1: f64,
    pub beta_2: f64,
}

impl Config {
    /// The checks of Keras' constructor, with its messages.
    pub fn validate(&self) -> Result<()> {
        if let Some(loss_scale) = &self.loss_scale {
            loss_scale.validate()?;
        }
        if self.reject_non_finite_gradients && self.loss_scale.is_some_and(|l| l.dynamic) {
            return Err(Error::InvalidArgument(
                "reject_non_finite_gradients and a dynamic loss scale both handle non-finite gradients (one rejects the call, the other skips the step): use one".into(),
            ));
        }
        if let (Some(c), Some(g)) = (self.clipnorm, self.global_clipnorm) {
            return Err(Error::InvalidArgument(format!(
                "At most one of `clipnorm` and `global_clipnorm` can be set. Received: clipnorm={}, global_clipnorm={}.",
                py_float(c),
                py_float(g)
            )));
        }
        if self.use_ema {
            if self.ema_momentum > 1.0 || self.ema_momentum < 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "`ema_momentum` must be in the range [0, 1]. Received: ema_momentum={}",
                    py_float(self.ema_momentum)
                )));
            }
            if let Some(freq) = self.ema_overwrite_frequency.filter(|&f| f != 0)
                && freq < 1
            {
                return Err(Error::InvalidArgument(format!(
                    "`ema_overwrite_frequency` must be an integer > 1 or None. Received: ema_overwrite_frequency={freq}"
                )));
            }
        }
        if let LearningRate::Schedule(s) = &self.learning_rate {
            s.validate()?;
        }
        if let Some(steps) = self.gradient_accumulation_steps {
            check_accumulation_steps(Num::Int(steps))?;
            let refused = if self.loss_scale.is_some() {
                Some(
                    "a loss scale (Keras 3 scales inside the inner optimizer's accumulation, which Keras 2's LossScaleOptimizer does not)",
                )
            } else if self.master_weights {
                Some("master_weights")
            } else if self.mesh.is_some() {
                Some("a mesh (sharded state)")
            } else if self.jit_compile && self.device != Device::Cpu {
                Some("a device (the accumulation runs on the host)")
            } else {
                None
            };
            if let Some(what) = refused {
                return Err(Error::InvalidArgument(format!(
                    "gradient_accumulation_steps cannot be combined with {what}"
                )));
            }
        }
        if self.name.contains('\0') {
            return Err(Error::InvalidArgument("`name` must not contain a NUL character".into()));
        }
        Ok(())
    }

    /// The clipping Keras applies: at most one mode, clipnorm before global_clipnorm before
    /// clipvalue, and only a positive value enables a mode.
    pub fn clipping(&self) -> Clipping {
        let positive = |x: Option<f64>| x.filter(|&v| v > 0.0);
        if let Some(c) = positive(self.clipnorm) {
            Clipping::Norm(c)
        } else if let Some(g) = positive(self.global_clipnorm) {
            Clipping::GlobalNorm(g)
        } else if let Some(v) = positive(self.clipvalue) {
            Clipping::Value(v)
        } else {
            Clipping::None
        }
    }

    /// `get_config()`: Keras' keys in Keras' order.
    fn adamw_json(&self, current: CurrentValues, on_device: bool) -> Value {
        let opt_float = |x: Option<f64>| x.map_or(Value::Null, float_to_json);
        let beta = |b: &Beta, value: f64| match b {
            Beta::Value(x) => float_to_json(*x),
            Beta::Callback(_) => float_to_json(value),
        };
        let learning_rate = match &self.learning_rate {
            LearningRate::Schedule(s) => s.serialize(),
            LearningRate::Constant(_) | LearningRate::Callback(_) => float_to_json(current.learning_rate as f64),
        };
        let mut m = Map::new();
        m.insert("name".into(), Value::String(self.name.clone()));
        m.insert("weight_decay".into(), float_to_json(self.weight_decay));
        m.insert("clipnorm".into(), opt_float(self.clipnorm));
        m.insert("global_clipnorm".into(), opt_float(self.global_clipnorm));
        m.insert("clipvalue".into(), opt_float(self.clipvalue));
        m.insert("use_ema".into(), Value::Bool(self.use_ema));
        m.insert("ema_momentum".into(), float_to_json(self.ema_momentum));
        m.insert("ema_overwrite_frequency".into(), self.ema_overwrite_frequency.map_or(Value::Null, Value::from));
        // The effective value: whether a device runs the step, as in Keras.
        m.insert("jit_compile".into(), Value::Bool(self.jit_compile && on_device));
        m.insert("is_legacy_optimizer".into(), Value::Bool(false));
        m.insert("learning_rate".into(), learning_rate);
        m.insert("beta_1".into(), beta(&self.beta_1, current.beta_1));
        m.insert("beta_2".into(), beta(&self.beta_2, current.beta_2));
        m.insert("epsilon".into(), float_to_json(self.epsilon));
        m.insert("amsgrad".into(), Value::Bool(self.amsgrad));
        if self.reject_non_finite_gradients {
            m.insert("reject_non_finite_gradients".into(), Value::Bool(true));
        }
        if self.master_weights {
            m.insert("master_weights".into(), Value::Bool(true));
        }
        if self.weight_decay_min_ndim != 0 {
            m.insert("weight_decay_min_ndim".into(), Value::from(self.weight_decay_min_ndim));
        }
        if let Some(steps) = self.gradient_accumulation_steps {
            m.insert("gradient_accumulation_steps".into(), Value::from(steps));
        }
        Value::Object(m)
    }

    /// `get_config()` as Keras writes it: AdamW's, or with a loss scale the LossScaleOptimizer's,
    /// which holds AdamW's serialized under `inner_optimizer`.
    pub fn to_json(&self, current: CurrentValues, on_device: bool) -> Value {
        let adamw = self.adamw_json(current, on_device);
        let Some(ls) = self.loss_scale else { return adamw };
        let mut inner = Map::new();
        inner.insert("module".into(), Value::from("keras.optimizers"));
        inner.insert("class_name".into(), Value::from("AdamW"));
        inner.insert("config".into(), adamw);
        inner.insert("registered_name".into(), Value::Null);
        let mut m = Map::new();
        m.insert("inner_optimizer".into(), Value::Object(inner));
        m.insert("dynamic".into(), Value::Bool(ls.dynamic));
        m.insert("initial_scale".into(), float_to_json(ls.initial_scale));
        m.insert(
            "dynamic_growth_steps".into(),
            if ls.dynamic { Value::from(ls.dynamic_growth_steps) } else { Value::Null },
        );
        Value::Object(m)
    }

    /// `AdamW.from_config(config)`: accepts what Keras' `get_config()` writes; missing keys take
    /// Keras' defaults; unknown keys are Keras' `TypeError`.
    pub fn from_json(value: Value) -> Result<Self> {
        if value.get("inner_optimizer").is_some() {
            return Config::from_loss_scale_json(value);
        }
        let mut k = Kwargs::new("AdamW", value)?;
        let mut c = Config::default();
        for deprecated in ["decay", "gradient_aggregator", "gradient_transformers"] {
            if k.take(deprecated).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{deprecated} is deprecated in the new TF-Keras optimizer, please check the docstring for valid arguments, or use the legacy optimizer, e.g., tf.keras.optimizers.legacy.AdamW."
                )));
            }
        }
        // Popped silently by Keras: `lr` is ignored (with a warning there), the legacy flag is informational.
        k.take("lr");
        k.take("is_legacy_optimizer");
        if let Some(mesh) = k.take("mesh")
            && !mesh.is_null()
        {
            return Err(Error::InvalidConfig(
                "`mesh` cannot be given in JSON; sharded state is configured through the API".into(),
            ));
        }
        if let Some(name) = k.string("name")? {
            c.name = name;
        }
        match k.take("weight_decay") {
            None => {}
            Some(Value::Null) => {
                return Err(Error::InvalidArgument(
                    "Missing value of `weight_decay` which is required and must be a float value.".into(),
                ));
            }
            Some(v) => {
                c.weight_decay = float_from_json(&v)
                    .ok_or_else(|| Error::InvalidConfig(format!("AdamW: `weight_decay` must be a number, got {v}")))?;
            }
        }
        match k.take("learning_rate") {
            None => {}
            Some(v @ Value::Object(_)) => c.learning_rate = LearningRate::Schedule(Schedule::deserialize(&v)?),
            Some(Value::String(s)) if !["NaN", "Infinity", "-Infinity"].contains(&s.as_str()) => {
                return Err(Error::InvalidConfig(format!("Cannot convert '{s}' to EagerTensor of dtype float")));
            }
            Some(v) => {
                let lr = float_from_json(&v).ok_or_else(|| {
                    Error::InvalidConfig(format!("AdamW: `learning_rate` must be a number or a schedule, got {v}"))
                })?;
                c.learning_rate = LearningRate::Constant(lr);
            }
        }
        if let Some(b) = k.float("beta_1")? {
            c.beta_1 = Beta::Value(b);
        }
        if let Some(b) = k.float("beta_2")? {
            c.beta_2 = Beta::Value(b);
        }
        if let Some(e) = k.float("epsilon")? {
            c.epsilon = e;
        }
        c.amsgrad = k.bool("amsgrad")?.unwrap_or(c.amsgrad);
        c.clipnorm = k.float("clipnorm")?;
        c.global_clipnorm = k.float("global_clipnorm")?;
        c.clipvalue = k.float("clipvalue")?;
        c.use_ema = k.bool("use_ema")?.unwrap_or(c.use_ema);
        c.ema_momentum = k.float("ema_momentum")?.unwrap_or(c.ema_momentum);
        c.ema_overwrite_frequency = match k.num("ema_overwrite_frequency")? {
            None => None,
            Some(Num::Int(i)) => Some(i),
            Some(Num::Float(x)) => {
                return Err(Error::InvalidArgument(format!(
                    "`ema_overwrite_frequency` must be an integer > 1 or None. Received: ema_overwrite_frequency={}",
                    py_float(x)
                )));
            }
        };
        c.jit_compile = k.bool("jit_compile")?.unwrap_or(c.jit_compile);
        c.reject_non_finite_gradients = k.bool("reject_non_finite_gradients")?.unwrap_or(false);
        c.master_weights = k.bool("master_weights")?.unwrap_or(false);
        c.weight_decay_min_ndim = match k.num("weight_decay_min_ndim")? {
            None => 0,
            Some(Num::Int(n)) if (0..=WEIGHT_DECAY_MIN_NDIM_LIMIT).contains(&n) => n as usize,
            Some(n) => {
                return Err(Error::InvalidArgument(format!(
                    "`weight_decay_min_ndim` must be an integer from 0 to {WEIGHT_DECAY_MIN_NDIM_LIMIT}. Received: weight_decay_min_ndim={}",
                    match n {
                        Num::Int(i) => i.to_string(),
                        Num::Float(x) => py_float(x),
                    }
                )));
            }
        };
        c.gradient_accumulation_steps = match k.num("gradient_accumulation_steps")? {
            None => None,
            Some(n) => Some(check_accumulation_steps(n)?),
        };
        // Keras 3 writes its own scaling factor; only its default (none) is understood here.
        if let Some(factor) = k.take("loss_scale_factor")
            && !factor.is_null()
        {
            return Err(Error::InvalidConfig(format!(
                "Keras 3's `loss_scale_factor` is not supported (got {factor}); scale the loss through the loss-scale optimizer (docs/numerics.md §19)"
            )));
        }
        k.finish()?;
        c.validate()?;
        Ok(c)
    }
}

/// The largest `gradient_accumulation_steps`: 2^31 - 1 calls a window (beyond it the average's
/// divisor stops being an exact float32 well before).
pub(crate) const ACCUMULATION_STEPS_LIMIT: i64 = i32::MAX as i64;

/// Keras 3's check of `gradient_accumulation_steps` (an integer >= 2), with an upper bound.
fn check_accumulation_steps(steps: Num) -> Result<i64> {
    match steps {
        Num::Int(n) if (2..=ACCUMULATION_STEPS_LIMIT).contains(&n) => Ok(n),
        n => Err(Error::InvalidArgument(format!(
            "`gradient_accumulation_steps` must be an integer >= 2 (and at most {ACCUMULATION_STEPS_LIMIT}). Received: gradient_accumulation_steps={}",
            match n {
                Num::Int(i) => i.to_string(),
                Num::Float(x) => py_float(x),
            }
        ))),
    }
}

impl Config {
    /// `LossScaleOptimizer.from_config(config)` with an AdamW inside: `inner_optimizer` is a
    /// serialized AdamW (or its bare config); missing keys take Keras' defaults.
    fn from_loss_scale_json(value: Value) -> Result<Self> {
        let mut k = Kwargs::new("LossScaleOptimizerV3", value)?;
        let inner = k.take("inner_optimizer").unwrap_or(Value::Null);
        let inner = match inner {
            Value::Object(mut m) if m.contains_key("class_name") => {
                let class = m.get("class_name").and_then(Value::as_str).unwrap_or("").to_string();
                if class.starts_with("LossScaleOptimizer") {
                    return Err(nested_loss_scale_error(&class));
                }
                if class != "AdamW" {
                    return Err(Error::InvalidConfig(format!(
                        "\"inner_optimizer\" must be an AdamW optimizer, but got: {class}."
                    )));
                }
                m.remove("config").unwrap_or(Value::Object(Map::new()))
            }
            // A bare config with an inner optimizer of its own is a LossScaleOptimizer's.
            Value::Object(m) if m.contains_key("inner_optimizer") => {
                return Err(nested_loss_scale_error("a LossScaleOptimizer's config"));
            }
            other @ Value::Object(_) => other,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "\"inner_optimizer\" must be a serialized AdamW optimizer, but got: {other}."
                )));
            }
        };
        let mut c = Config::from_json(inner)?;
        let defaults = LossScale::default();
        let dynamic = match k.take("dynamic") {
            None => defaults.dynamic,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(Error::InvalidConfig(format!(
                    "\"dynamic\" argument to LossScaleOptimizer.__init__ must be a bool, but got: {other}"
                )));
            }
        };
        let initial_scale = k.float("initial_scale")?;
        let growth = k.num("dynamic_growth_steps")?;
        if !dynamic && initial_scale.is_none() {
            return Err(Error::InvalidArgument("\"initial_scale\" must be specified if \"dynamic\" is False".into()));
        }
        if !dynamic && let Some(g) = growth {
            return Err(Error::InvalidArgument(format!(
                "\"dynamic_growth_steps\" must be None if \"dynamic\" is False, but got: {}",
                g.to_json()
            )));
        }
        k.finish()?;
        c.loss_scale = Some(LossScale {
            dynamic,
            initial_scale: initial_scale.unwrap_or(defaults.initial_scale),
            // Keras truncates: int(dynamic_growth_steps).
            dynamic_growth_steps: growth.map_or(defaults.dynamic_growth_steps, |g| g.value().trunc() as i64),
        });
        c.validate()?;
        Ok(c)
    }
}

/// The one clipping mode in force (docs/numerics.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clipping {
    /// No clipping.
    None,
    /// `clipnorm`: each gradient is clipped to this L2 norm on its own.
    Norm(f64),
    /// `global_clipnorm`: all gradients of a call are scaled together to this global L2 norm.
    GlobalNorm(f64),
    /// `clipvalue`: each element is clipped to `[-value, value]`.
    Value(f64),
}

/// A float as Python's `repr` writes it, for messages that quote Keras: `1.0`, `1e-07`, `0.004`.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..16).contains(&exponent) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_float_repr() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(1e-7), "1e-07");
        assert_eq!(py_float(0.004), "0.004");
        assert_eq!(py_float(1.5), "1.5");
        assert_eq!(py_float(-0.1), "-0.1");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(2.5e-5), "2.5e-05");
    }

    #[test]
    fn default_config_is_kerass() {
        let current = CurrentValues { learning_rate: 0.001, beta_1: 0.9, beta_2: 0.999 };
        let v = Config::default().to_json(current, false);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "name",
                "weight_decay",
                "clipnorm",
                "global_clipnorm",
                "clipvalue",
                "use_ema",
                "ema_momentum",
                "ema_overwrite_frequency",
                "jit_compile",
                "is_legacy_optimizer",
                "learning_rate",
                "beta_1",
                "beta_2",
                "epsilon",
                "amsgrad"
            ]
        );
        assert_eq!(v["learning_rate"], json!(0.0010000000474974513));
        assert_eq!(v["epsilon"], json!(1e-7));
    }

    #[test]
    fn clipnorm_with_global_clipnorm_is_rejected_with_kerass_message() {
        let err = Config::from_json(json!({"clipnorm": 1.0, "global_clipnorm": 1.0})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "At most one of `clipnorm` and `global_clipnorm` can be set. Received: clipnorm=1.0, global_clipnorm=1.0."
        );
    }

    #[test]
    fn ema_momentum_is_checked_only_with_use_ema() {
        assert!(Config::from_json(json!({"ema_momentum": 1.5})).is_ok());
        let err = Config::from_json(json!({"use_ema": true, "ema_momentum": 1.5})).unwrap_err();
        assert_eq!(err.to_string(), "`ema_momentum` must be in the range [0, 1]. Received: ema_momentum=1.5");
    }

    #[test]
    fn unknown_key_is_kerass_type_error() {
        let err = Config::from_json(json!({"foo": 1})).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)));
        assert_eq!(
            err.to_string(),
            "foo is not a valid argument, kwargs should be empty  for `optimizer_experimental.Optimizer`."
        );
    }

    #[test]
    fn clipping_precedence() {
        let c = Config { clipnorm: Some(1.0), clipvalue: Some(0.5), ..Config::default() };
        assert_eq!(c.clipping(), Clipping::Norm(1.0));
        let c = Config { global_clipnorm: Some(0.0), clipvalue: Some(0.5), ..Config::default() };
        assert_eq!(c.clipping(), Clipping::Value(0.5));
        let c = Config { clipvalue: Some(-1.0), ..Config::default() };
        assert_eq!(c.clipping(), Clipping::None);
    }
}
