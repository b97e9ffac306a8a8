//! The C view of a config: `adamw_config` and `adamw_schedule`, their Keras defaults, and their
//! conversion to the core `Config` (every field checked, every pointer copied).

use std::ffi::{c_char, c_void};

use super::guard::guard;
use super::slice::{slice, utf8};
use super::status::FfiError;
use super::status::adamw_status;
use crate::config::{Beta, Callback, Config, LearningRate, Mesh};
use crate::kwargs::Num;
use crate::schedule::Schedule;

/// A hyper-parameter computed by the caller: write the value for `step` (the optimizer's
/// iteration count before the step) to `*out_value` and return 0; return anything else to fail
/// the call (it then changes nothing and returns ADAMW_STATUS_CALLBACK_FAILED). A NaN or
/// infinite value also fails the call. It must not unwind (no C++ exception may escape it).
pub type adamw_scalar_fn = Option<unsafe extern "C" fn(step: i64, user_data: *mut c_void, out_value: *mut f64) -> i32>;

/// Sharded state's collective (Keras' `mesh`): sum each of the `count` doubles at `values`
/// across all ranks, in place, with the same result on every rank (an all-reduce with SUM, as
/// MPI_Allreduce, ncclAllReduce or Gloo provide), and return 0; anything else fails the call
/// (nothing changes, ADAMW_STATUS_CALLBACK_FAILED). Called on the calling thread, with the
/// optimizer locked, from `apply_gradients`/`minimize` only, which are then collective: every
/// rank makes the same calls. A step that clips by norm, rejects non-finite gradients or has a
/// dynamic loss scale calls it with 3 doubles (the ranks check that they make the same call and
/// agree on a non-finite gradient); one that clips by norm then calls it again with the sharded
/// norms' parts: per sharded variable with a dense gradient, one double per leaf of Eigen's sum
/// (8,192 float32 elements; docs/numerics.md §14) plus one per element of the leaves that a
/// shard boundary cuts (shards cut at multiples of 8,192 elements cut none).
/// Any sum order gives the same result: every slot is non-zero on one rank at most. The first
/// step that clips also sends a census (two doubles per leaf) once. It must not unwind.
pub type adamw_all_reduce_fn =
    Option<unsafe extern "C" fn(values: *mut f64, count: usize, user_data: *mut c_void) -> i32>;

/// The six Keras learning-rate schedules. Values start at 1 so that zeroed memory is invalid.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adamw_schedule_kind {
    /// `initial_learning_rate * decay_rate ^ (step / decay_steps)` (floored exponent with staircase).
    ExponentialDecay = 1,
    /// `values[i]` on the i-th interval of `boundaries`.
    PiecewiseConstantDecay = 2,
    /// `(initial - end) * (1 - step / decay_steps) ^ power + end`, optionally cycling.
    PolynomialDecay = 3,
    /// `initial_learning_rate / (1 + decay_rate * step / decay_steps)`.
    InverseTimeDecay = 4,
    /// Cosine decay to `alpha * initial`, with an optional linear warmup.
    CosineDecay = 5,
    /// Cosine decay with warm restarts (SGDR).
    CosineDecayRestarts = 6,
}

/// A learning-rate schedule. Fill it with `adamw_schedule_init`, which sets Keras' defaults,
/// then set the fields the kind uses (the others are ignored). Copied by `adamw_optimizer_new`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_schedule {
    /// An `adamw_schedule_kind`.
    pub kind: u32,
    /// All kinds but PIECEWISE_CONSTANT_DECAY.
    pub initial_learning_rate: f64,
    /// EXPONENTIAL, POLYNOMIAL, INVERSE_TIME, COSINE: `decay_steps`; COSINE_RESTARTS: `first_decay_steps`.
    pub decay_steps: f64,
    /// EXPONENTIAL, INVERSE_TIME.
    pub decay_rate: f64,
    /// EXPONENTIAL, INVERSE_TIME: 0 or 1.
    pub staircase: u8,
    /// POLYNOMIAL (default 0.0001).
    pub end_learning_rate: f64,
    /// POLYNOMIAL (default 1.0).
    pub power: f64,
    /// POLYNOMIAL: 0 or 1.
    pub cycle: u8,
    /// COSINE, COSINE_RESTARTS (default 0.0).
    pub alpha: f64,
    /// COSINE: 1 to warm up linearly from `initial_learning_rate` to `warmup_target` over `warmup_steps`.
    pub has_warmup: u8,
    /// COSINE with has_warmup: the rate the warmup ends at, where the cosine decay starts.
    pub warmup_target: f64,
    /// COSINE with has_warmup: the number of warmup steps (default 0).
    pub warmup_steps: f64,
    /// COSINE_RESTARTS (defaults 2.0 and 1.0).
    pub t_mul: f64,
    /// COSINE_RESTARTS: each period starts at `m_mul` times the previous one's initial rate.
    pub m_mul: f64,
    /// PIECEWISE_CONSTANT: `num_boundaries` step boundaries and `num_boundaries + 1` values
    /// (read during `adamw_optimizer_new` only).
    pub boundaries: *const i64,
    /// The number of int64s at `boundaries` (`boundaries` may be NULL when it is 0).
    pub num_boundaries: usize,
    /// The `num_boundaries + 1` rates, one per interval; must not be NULL.
    pub values: *const f64,
    /// Optional name (NUL-terminated UTF-8, copied), reported by get_config; may be NULL.
    pub name: *const c_char,
}

/// The AdamW constructor arguments. Start from `adamw_config_default()`, which holds Keras'
/// defaults, and change what you need. Every pointer is read during `adamw_optimizer_new` only,
/// except callbacks and their `user_data`, which are kept and called on the thread of each
/// `apply_gradients`/`minimize` call (and once at creation, with step 0).
/// Float literals: the hyperparameters are doubles, as Keras' Python floats are. Write `0.9`,
/// not `0.9f`: `0.9f` is the float32 nearest 0.9, which widens to the double
/// 0.89999997615814209, a different `beta_1` from Keras' default, and different bits from the
/// first step on. The same holds for every field (`1e-7`, not `1e-7f`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_config {
    /// A constant learning rate (default 0.001), used when no schedule or callback is given.
    pub learning_rate: f64,
    /// A schedule for the learning rate, or NULL.
    pub learning_rate_schedule: *const adamw_schedule,
    /// A learning rate computed by the caller each step, or NULL. Takes precedence over both.
    pub learning_rate_fn: adamw_scalar_fn,
    /// Passed to `learning_rate_fn` as `user_data`; never dereferenced by the library.
    pub learning_rate_user_data: *mut c_void,
    /// Decoupled weight decay (default 0.004).
    pub weight_decay: f64,
    /// First-moment decay (default 0.9, the double: `0.9f` is another value), or a callback
    /// evaluated each step.
    pub beta_1: f64,
    /// A `beta_1` computed by the caller each step, or NULL to use `beta_1`.
    pub beta_1_fn: adamw_scalar_fn,
    /// Passed to `beta_1_fn` as `user_data`; never dereferenced by the library.
    pub beta_1_user_data: *mut c_void,
    /// Second-moment decay (default 0.999), or a callback evaluated each step.
    pub beta_2: f64,
    /// A `beta_2` computed by the caller each step, or NULL to use `beta_2`.
    pub beta_2_fn: adamw_scalar_fn,
    /// Passed to `beta_2_fn` as `user_data`; never dereferenced by the library.
    pub beta_2_user_data: *mut c_void,
    /// Keras' epsilon-hat, added to sqrt(v) (default 1e-7).
    pub epsilon: f64,
    /// 0 or 1 (default 0).
    pub amsgrad: u8,
    /// Per-tensor norm clipping; 0 for none (default). At most one of clipnorm and global_clipnorm.
    pub clipnorm: f64,
    /// Global norm clipping over all gradients of a step; 0 for none (default).
    pub global_clipnorm: f64,
    /// Value clipping; 0 for none (default). Ignored when a norm clip is set, as in Keras.
    pub clipvalue: f64,
    /// 0 or 1 (default 0): keep an exponential moving average of each variable.
    pub use_ema: u8,
    /// EMA momentum in [0, 1] (default 0.99).
    pub ema_momentum: f64,
    /// Every this many steps the variables take their averages' values; 0 for never (default).
    pub ema_overwrite_frequency: i64,
    /// 0 or 1 (default 1): requests the device backend; reported as false while none runs the step.
    pub jit_compile: u8,
    /// The optimizer's name (NUL-terminated UTF-8, copied), or NULL for "AdamW".
    pub name: *const c_char,
    /// Sharded state (Keras' `mesh`), or NULL (default): with it, variables may be built as
    /// shards (see `adamw_variable`), and clip norms and non-finite checks are combined across
    /// ranks by this callback, so that the shards take exactly the steps of one process.
    /// Kept with `mesh_user_data`, called as documented on `adamw_all_reduce_fn`.
    pub mesh_all_reduce: adamw_all_reduce_fn,
    /// Passed to `mesh_all_reduce` as `user_data`; never dereferenced by the library.
    pub mesh_user_data: *mut c_void,
    /// 1 to turn on the non-finite guard (an extension, default 0 for Keras parity):
    /// apply_gradients first checks every gradient value, and a NaN or an infinity rejects the
    /// whole call with ADAMW_STATUS_NON_FINITE_GRADIENT, nothing changed. get_config then
    /// includes "reject_non_finite_gradients": true, which from_config reads back.
    pub reject_non_finite_gradients: u8,
    /// Threads for a step (not a Keras argument): 0 (default) uses a pool shared by the process
    /// (one thread per core, the caller one of them); 1 runs on the calling thread and never
    /// starts or uses another thread; N > 1 gives this optimizer a pool of N threads of its own
    /// (the caller and N - 1 started at the first step that needs them). Only passes over more
    /// than 32K elements (the dense updates of a call's variables count together) are cut into
    /// tasks for other threads. Results are the same bits for every value. An engine with a
    /// thread pool of its own gives it instead with `adamw_optimizer_set_parallel_for`.
    pub threads: u32,
}

/// Keras' defaults: learning_rate 0.001, weight_decay 0.004, beta_1 0.9, beta_2 0.999,
/// epsilon 1e-7, no amsgrad, no clipping, no EMA (momentum 0.99), name "AdamW".
/// Threads: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn adamw_config_default() -> adamw_config {
    adamw_config {
        learning_rate: 0.001,
        learning_rate_schedule: std::ptr::null(),
        learning_rate_fn: None,
        learning_rate_user_data: std::ptr::null_mut(),
        weight_decay: 0.004,
        beta_1: 0.9,
        beta_1_fn: None,
        beta_1_user_data: std::ptr::null_mut(),
        beta_2: 0.999,
        beta_2_fn: None,
        beta_2_user_data: std::ptr::null_mut(),
        epsilon: 1e-7,
        amsgrad: 0,
        clipnorm: 0.0,
        global_clipnorm: 0.0,
        clipvalue: 0.0,
        use_ema: 0,
        ema_momentum: 0.99,
        ema_overwrite_frequency: 0,
        jit_compile: 1,
        name: std::ptr::null(),
        mesh_all_reduce: None,
        mesh_user_data: std::ptr::null_mut(),
        reject_non_finite_gradients: 0,
        threads: 0,
    }
}

/// Fills `*out` with Keras' defaults for a schedule of `kind` (an `adamw_schedule_kind`):
/// end_learning_rate 0.0001, power 1, alpha 0, t_mul 2, m_mul 1, everything else 0 / NULL.
/// NULL: `out` must not be NULL. Threads: safe from any thread.
/// Errors: NULL_ARGUMENT; INVALID_ARGUMENT for an unknown kind (`*out` is then not written).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_schedule_init(kind: u32, out: *mut adamw_schedule) -> adamw_status {
    guard(|| {
        schedule_kind(kind)?;
        let s = adamw_schedule {
            kind,
            initial_learning_rate: 0.0,
            decay_steps: 0.0,
            decay_rate: 0.0,
            staircase: 0,
            end_learning_rate: 0.0001,
            power: 1.0,
            cycle: 0,
            alpha: 0.0,
            has_warmup: 0,
            warmup_target: 0.0,
            warmup_steps: 0.0,
            t_mul: 2.0,
            m_mul: 1.0,
            boundaries: std::ptr::null(),
            num_boundaries: 0,
            values: std::ptr::null(),
            name: std::ptr::null(),
        };
        // SAFETY: the caller passes NULL or a writable adamw_schedule.
        unsafe { super::slice::write(out, s, "out") }
    })
}

fn schedule_kind(kind: u32) -> Result<adamw_schedule_kind, FfiError> {
    Ok(match kind {
        1 => adamw_schedule_kind::ExponentialDecay,
        2 => adamw_schedule_kind::PiecewiseConstantDecay,
        3 => adamw_schedule_kind::PolynomialDecay,
        4 => adamw_schedule_kind::InverseTimeDecay,
        5 => adamw_schedule_kind::CosineDecay,
        6 => adamw_schedule_kind::CosineDecayRestarts,
        other => {
            return Err(FfiError::invalid(format!(
                "unknown schedule kind {other}: expected 1..6 (adamw_schedule_kind)"
            )));
        }
    })
}

fn flag(value: u8, what: &str) -> Result<bool, FfiError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(FfiError::invalid(format!("`{what}` must be 0 or 1, got {other}"))),
    }
}

/// A step count as Keras users write it: an int when integral.
fn steps(x: f64) -> Num {
    if x.fract() == 0.0 && x.abs() < 9.0e15 { Num::Int(x as i64) } else { Num::Float(x) }
}

/// A user_data pointer moved into a callback.
struct UserData(*mut c_void);
// SAFETY: the header makes the caller responsible for `user_data` being usable from whichever
// thread calls into the optimizer; the library never dereferences it.
unsafe impl Send for UserData {}
// SAFETY: as above; calls on one optimizer are serialized by its mutex.
unsafe impl Sync for UserData {}

impl UserData {
    /// Taking `&self` makes a closure capture the whole (Send) wrapper, not its raw field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

fn callback(f: adamw_scalar_fn, user_data: *mut c_void) -> Option<Callback> {
    let f = f?;
    let user_data = UserData(user_data);
    Some(Callback::new(move |step| {
        let mut out = f64::NAN;
        // SAFETY: `f` is the caller's function with the documented signature; `out` is a valid
        // f64 on our stack.
        let rc = unsafe { f(step, user_data.get(), &mut out) };
        if rc == 0 { Ok(out) } else { Err(format!("it returned {rc}")) }
    }))
}

fn mesh(f: adamw_all_reduce_fn, user_data: *mut c_void) -> Option<Mesh> {
    let f = f?;
    let user_data = UserData(user_data);
    Some(Mesh::new(move |values: &mut [f64]| {
        // SAFETY: `f` is the caller's function with the documented signature; `values` is a
        // valid, exclusive buffer of `values.len()` doubles for the call.
        let rc = unsafe { f(values.as_mut_ptr(), values.len(), user_data.get()) };
        if rc == 0 { Ok(()) } else { Err(format!("it returned {rc}")) }
    }))
}

/// # Safety
/// The schedule's pointers must be NULL or valid as documented on `adamw_schedule`.
unsafe fn to_schedule(s: &adamw_schedule) -> Result<Schedule, FfiError> {
    // SAFETY: NULL or a NUL-terminated string, per the struct's contract.
    let name = if s.name.is_null() { None } else { Some(unsafe { utf8(s.name, "schedule name") }?.to_string()) };
    let init = Num::Float(s.initial_learning_rate);
    let schedule = match schedule_kind(s.kind)? {
        adamw_schedule_kind::ExponentialDecay => Schedule::ExponentialDecay {
            initial_learning_rate: init,
            decay_steps: steps(s.decay_steps),
            decay_rate: Num::Float(s.decay_rate),
            staircase: flag(s.staircase, "staircase")?,
            name,
        },
        adamw_schedule_kind::InverseTimeDecay => Schedule::InverseTimeDecay {
            initial_learning_rate: init,
            decay_steps: steps(s.decay_steps),
            decay_rate: Num::Float(s.decay_rate),
            staircase: flag(s.staircase, "staircase")?,
            name,
        },
        adamw_schedule_kind::PiecewiseConstantDecay => {
            let n = s.num_boundaries;
            // SAFETY: the caller promises `num_boundaries` int64s at `boundaries`.
            let boundaries = unsafe { slice(s.boundaries, n, "boundaries") }?;
            // SAFETY: and `num_boundaries + 1` doubles at `values`.
            let values = unsafe { slice(s.values, n.saturating_add(1), "values") }?;
            Schedule::PiecewiseConstantDecay {
                boundaries: boundaries.iter().map(|&b| Num::Int(b)).collect(),
                values: values.iter().map(|&v| Num::Float(v)).collect(),
                name,
            }
        }
        adamw_schedule_kind::PolynomialDecay => Schedule::PolynomialDecay {
            initial_learning_rate: init,
            decay_steps: steps(s.decay_steps),
            end_learning_rate: Num::Float(s.end_learning_rate),
            power: Num::Float(s.power),
            cycle: flag(s.cycle, "cycle")?,
            name,
        },
        adamw_schedule_kind::CosineDecay => Schedule::CosineDecay {
            initial_learning_rate: init,
            decay_steps: steps(s.decay_steps),
            alpha: Num::Float(s.alpha),
            name,
            warmup_target: flag(s.has_warmup, "has_warmup")?.then_some(Num::Float(s.warmup_target)),
            warmup_steps: steps(s.warmup_steps),
        },
        adamw_schedule_kind::CosineDecayRestarts => Schedule::CosineDecayRestarts {
            initial_learning_rate: init,
            first_decay_steps: steps(s.decay_steps),
            t_mul: Num::Float(s.t_mul),
            m_mul: Num::Float(s.m_mul),
            alpha: Num::Float(s.alpha),
            name,
        },
    };
    schedule.validate()?;
    Ok(schedule)
}

/// Converts and checks a C config.
///
/// # Safety
/// The config's pointers must be NULL or valid as documented on `adamw_config`.
pub(crate) unsafe fn to_config(c: &adamw_config) -> Result<Config, FfiError> {
    let none_if_zero = |x: f64| (x != 0.0).then_some(x);
    let learning_rate = if let Some(cb) = callback(c.learning_rate_fn, c.learning_rate_user_data) {
        LearningRate::Callback(cb)
    } else if !c.learning_rate_schedule.is_null() {
        // SAFETY: non-NULL; the caller passes a valid adamw_schedule.
        LearningRate::Schedule(unsafe { to_schedule(&*c.learning_rate_schedule) }?)
    } else {
        LearningRate::Constant(c.learning_rate)
    };
    let beta = |value: f64, f, data| callback(f, data).map_or(Beta::Value(value), Beta::Callback);
    let name = if c.name.is_null() {
        "AdamW".to_string()
    } else {
        // SAFETY: non-NULL, NUL-terminated per the struct's contract.
        unsafe { utf8(c.name, "name") }?.to_string()
    };
    let config = Config {
        name,
        learning_rate,
        weight_decay: c.weight_decay,
        beta_1: beta(c.beta_1, c.beta_1_fn, c.beta_1_user_data),
        beta_2: beta(c.beta_2, c.beta_2_fn, c.beta_2_user_data),
        epsilon: c.epsilon,
        amsgrad: flag(c.amsgrad, "amsgrad")?,
        clipnorm: none_if_zero(c.clipnorm),
        global_clipnorm: none_if_zero(c.global_clipnorm),
        clipvalue: none_if_zero(c.clipvalue),
        use_ema: flag(c.use_ema, "use_ema")?,
        ema_momentum: c.ema_momentum,
        ema_overwrite_frequency: (c.ema_overwrite_frequency != 0).then_some(c.ema_overwrite_frequency),
        jit_compile: flag(c.jit_compile, "jit_compile")?,
        // Not in this struct, whose layout is frozen: see adamw_optimizer_set_device.
        device: crate::config::Device::Cpu,
        mesh: mesh(c.mesh_all_reduce, c.mesh_user_data),
        threads: c.threads as usize,
        reject_non_finite_gradients: flag(c.reject_non_finite_gradients, "reject_non_finite_gradients")?,
        // Not in this struct, whose layout is frozen: see adamw_optimizer_set_master_weights.
        master_weights: false,
        // Not in this struct either: adamw_optimizer_set_weight_decay_min_ndim.
        weight_decay_min_ndim: 0,
        // Nor this: adamw_optimizer_set_gradient_accumulation_steps.
        gradient_accumulation_steps: None,
        loss_scale: None,
    };
    config.validate()?;
    Ok(config)
}
