//! The C types of the optimizer's entry points, and the one decoder of a C dtype.

use std::ffi::{c_char, c_void};

use super::status::FfiError;
use crate::dtype::DType;

/// The version of this C ABI. It changes only when a declaration in this header changes
/// incompatibly; compare with ADAMW_ABI_VERSION from the header you compiled against.
pub const ADAMW_ABI_VERSION: u32 = 1;

/// The most dimensions a variable may have.
pub const ADAMW_MAX_NDIM: usize = 32;

/// `adamw_gradient.dtype` holds the gradient's dtype from this bit up when it differs from the
/// variable's (the low 16 bits): `ADAMW_DTYPE_BFLOAT16 | (ADAMW_DTYPE_FLOAT32 <<
/// ADAMW_GRADIENT_DTYPE_SHIFT)` is a float32 gradient (accumulated in float32) for a bfloat16
/// variable. Only a float32 gradient for a bfloat16 or float16 variable with master weights
/// is accepted (else DTYPE_MISMATCH); 0 in the high bits means the variable's dtype.
pub const ADAMW_GRADIENT_DTYPE_SHIFT: u32 = 16;

/// Set in `adamw_gradient.dtype` (with the dtypes) when a sparse gradient's `indices` are device
/// memory, for an optimizer on a device: they are copied to the host and checked there before
/// anything is enqueued (INVALID_ARGUMENT for an optimizer on the CPU).
pub const ADAMW_INDICES_ON_DEVICE: u32 = 0x8000_0000;

/// Element types. Values start at 1 so that zeroed memory is invalid.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adamw_dtype {
    /// IEEE 754 binary32 (`float`).
    Float32 = 1,
    /// IEEE 754 binary64 (`double`).
    Float64 = 2,
    /// Only the iteration counter (optimizer variable 0) has this dtype.
    Int64 = 3,
    /// bfloat16, passed as its bits (`uint16_t`): the top half of a float32.
    Bfloat16 = 4,
    /// IEEE 754 binary16, passed as its bits (`uint16_t`).
    Float16 = 5,
}

/// Where an optimizer's state lives and its step runs (`adamw_optimizer_set_device`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adamw_device_kind {
    /// Host memory and the CPU (the default).
    Cpu = 0,
    /// A CUDA GPU, by ordinal: the state in its memory, the caller's variables and gradients
    /// device pointers, each step one kernel launch. Needs the CUDA driver and NVRTC
    /// (libnvrtc.so.12) at run time.
    Cuda = 1,
    /// The device kernels compiled for the host, run one simulated thread at a time, for testing
    /// them without a GPU (only in a library built with the `host-kernels` feature). Its
    /// "device memory" is host memory.
    HostKernels = 2,
}

/// A variable to build the optimizer over.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_variable {
    /// The variable's name, NUL-terminated UTF-8, copied. Exclusion patterns are searched in
    /// `name` + ":0", Keras' full name (so "bias", "^dense/" and "kernel:0$" work as in Keras).
    pub name: *const c_char,
    /// ADAMW_DTYPE_FLOAT32, ADAMW_DTYPE_FLOAT64, ADAMW_DTYPE_BFLOAT16 or ADAMW_DTYPE_FLOAT16.
    pub dtype: u32,
    /// Number of dimensions (0 for a scalar), at most ADAMW_MAX_NDIM.
    pub ndim: usize,
    /// `ndim` dimensions; may be NULL when `ndim` is 0.
    pub shape: *const usize,
    /// The variable's current values (the elements held: all of them, or the shard's):
    /// required with use_ema (the averages start as copies), otherwise ignored. Read during the
    /// call only.
    pub data: *const c_void,
    /// 1 to hold only a shard of the variable (needs `mesh_all_reduce` in the config): flat
    /// elements `shard_offset .. shard_offset + shard_len` of the row-major variable of `shape`.
    /// Its `data`, dense gradients and slots then have `shard_len` elements; sparse gradients
    /// are the whole IndexedSlices on every rank (whole rows of the variable), and each shard
    /// applies its part of them. The ranks' shards must hold every element exactly once (the
    /// first step that clips by norm checks it: INVALID_ARGUMENT). An unsharded variable under a
    /// mesh is replicated: every rank holds it whole, with the same gradient.
    pub sharded: u8,
    /// With `sharded`: the flat (row-major) element index where the shard starts; else ignored.
    pub shard_offset: usize,
    /// With `sharded`: the number of elements in the shard; else ignored.
    pub shard_len: usize,
}

/// One variable's entry in an `apply_gradients` call. Gradient forms:
/// - `dense` non-NULL: a dense gradient of `len` elements (`indices` and `values` must be NULL);
/// - `indices` or `values` non-NULL: a sparse gradient (Keras' IndexedSlices): `num_indices` row
///   indices, repeats summed, and `num_values` = `num_indices` rows of the variable's trailing
///   shape in `values`; zero indices is a gradient of zeros (every row still decays and moves);
/// - all three NULL: no gradient this step: the variable is left alone, as Keras does for None.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_gradient {
    /// Index of the variable in the list given to `adamw_optimizer_build`.
    pub variable: usize,
    /// The dtype of `data`, `dense` and `values`: the variable's dtype. A float32 gradient for a
    /// 16-bit variable with master weights names its dtype in the high bits (see
    /// ADAMW_GRADIENT_DTYPE_SHIFT).
    pub dtype: u32,
    /// The variable's values, updated in place: `len` elements, not overlapping any other buffer.
    pub data: *mut c_void,
    /// The number of elements at `data`: the variable's size, or `shard_len` for a shard.
    pub len: usize,
    /// Dense gradient of `len` elements, or NULL.
    pub dense: *const c_void,
    /// Sparse gradient: row indices in `[0, shape[0])`.
    pub indices: *const i64,
    /// The number of indices at `indices`.
    pub num_indices: usize,
    /// Sparse gradient rows: `num_values` = `num_indices` * (elements per row), or NULL.
    pub values: *const c_void,
    /// The number of elements at `values`.
    pub num_values: usize,
}

/// A variable's values, for `adamw_optimizer_finalize_variable_values`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_variable_data {
    /// Index of the variable in the list given to `adamw_optimizer_build`.
    pub variable: usize,
    /// The variable's dtype.
    pub dtype: u32,
    /// `len` elements, written.
    pub data: *mut c_void,
    /// The number of elements at `data`.
    pub len: usize,
}

/// A value for `adamw_optimizer_set_weights`: `dtype`, a shape, and the product of the shape
/// elements at `data` (read during the call only).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_weight {
    /// An ADAMW_DTYPE_* value: the optimizer variable's (ADAMW_DTYPE_INT64 for the counter at 0).
    pub dtype: u32,
    /// Number of dimensions (0 for a scalar), at most ADAMW_MAX_NDIM.
    pub ndim: usize,
    /// `ndim` dimensions; may be NULL when `ndim` is 0.
    pub shape: *const usize,
    /// The elements, row-major: the product of `shape` values of `dtype`.
    pub data: *const c_void,
}

/// Describes one optimizer variable (see `adamw_optimizer_variable_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_variable_info {
    /// ADAMW_DTYPE_INT64 for the counter, else the variable's dtype.
    pub dtype: u32,
    /// Number of dimensions (0 for a scalar).
    pub ndim: usize,
    /// The dimensions: the first `ndim` entries; the rest are 0.
    pub shape: [usize; ADAMW_MAX_NDIM],
    /// Number of elements (1 for a scalar).
    pub len: usize,
}

/// What an optimizer does with one model variable (`adamw_optimizer_variable_properties`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_variable_properties {
    /// The variable's own ADAMW_DTYPE_* value.
    pub dtype: u32,
    /// Its number of dimensions (of the whole variable when sharded).
    pub ndim: usize,
    /// 1 when its steps decay it: not excluded and a weight-decay multiplier other than 0.
    pub decayed: u8,
    /// 1 when it is excluded from weight decay (`adamw_optimizer_exclude_from_weight_decay` or
    /// `adamw_optimizer_set_weight_decay_min_ndim`).
    pub excluded: u8,
    /// 1 when it has a float32 master copy (`adamw_optimizer_set_master_weights`).
    pub has_master: u8,
    /// Its learning-rate multiplier (`adamw_optimizer_set_variable_multipliers`; 1 by default).
    pub learning_rate_multiplier: f64,
    /// Its weight-decay multiplier (1 by default).
    pub weight_decay_multiplier: f64,
}

/// Where a step's gradient norms came from (`adamw_step_report.norms`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adamw_norm_source {
    /// Not computed: no clip by norm and `adamw_optimizer_set_report_gradient_norms` off (or an
    /// optimizer on a device, or a skipped step, or no step yet).
    None = 0,
    /// Keras' `clipnorm` sums (Eigen's order), per variable.
    Clipnorm = 1,
    /// Keras' `global_clipnorm` sums (Eigen's order, of `l2_loss`).
    GlobalClipnorm = 2,
    /// Summed in the update pass, in libadamw's own order (docs/numerics.md §23).
    UpdatePass = 3,
}

/// What the last step saw (`adamw_optimizer_step_report`; docs/numerics.md §23).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct adamw_step_report {
    /// `iterations` after the step (0 before any).
    pub iterations: i64,
    /// 1 when the variables moved; 0 before any step and when a dynamic loss scale skipped the
    /// step (its gradients held NaN or an infinity).
    pub applied: u8,
    /// 1 with a loss scaler: `loss_scale` is then the scale that unscaled the step's gradients.
    pub has_loss_scale: u8,
    /// The loss scale used (0 without a loss scaler).
    pub loss_scale: f32,
    /// The norm of all the step's gradients, unscaled and before clipping; NaN when not
    /// computed. With global_clipnorm, Keras' own `global_norm` (a value of the gradients' dtype).
    pub global_norm: f64,
    /// With global_clipnorm the factor every gradient was multiplied by (Keras' value); 1 without
    /// a clip; NaN with clipnorm or clipvalue (per variable or per element).
    pub clip_factor: f64,
    /// An `adamw_norm_source`: where the norms came from.
    pub norms: u32,
}

/// Computes the gradients for `adamw_optimizer_minimize`: called once, with the entries given
/// to minimize, on the calling thread; it writes the gradients into the buffers the caller
/// supplied as `dense` (or `values`) of those entries, from the current values in `data`.
/// Return 0 on success; anything else fails the call (nothing changes, CALLBACK_FAILED).
/// It must not unwind, and must not call this optimizer (that call returns BUSY).
pub type adamw_gradient_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, entries: *const adamw_gradient, num_entries: usize) -> i32>;

/// The dtype a C caller names, checked: the one place a C dtype is decoded. `what` names the
/// field, and is only built for a message.
pub(crate) fn decode_dtype(value: u32, what: impl FnOnce() -> String) -> Result<DType, FfiError> {
    match value {
        v if v == adamw_dtype::Float32 as u32 => Ok(DType::F32),
        v if v == adamw_dtype::Float64 as u32 => Ok(DType::F64),
        v if v == adamw_dtype::Int64 as u32 => Ok(DType::I64),
        v if v == adamw_dtype::Bfloat16 as u32 => Ok(DType::BF16),
        v if v == adamw_dtype::Float16 as u32 => Ok(DType::F16),
        other => Err(FfiError::invalid(format!("`{}`: unknown dtype {other} (not an ADAMW_DTYPE_* value)", what()))),
    }
}

/// The dtype of a variable's values or gradient: a decoded dtype that variables may have.
pub(crate) fn variable_dtype(value: u32, what: impl Fn() -> String) -> Result<DType, FfiError> {
    match decode_dtype(value, &what)? {
        DType::I64 => Err(FfiError::new(
            super::status::adamw_status::DtypeMismatch,
            format!("`{}`: variables cannot be int64", what()),
        )),
        dtype => Ok(dtype),
    }
}

/// The dtypes of an `adamw_gradient`: its variable's (the low 16 bits) and its gradient's (the
/// bits from ADAMW_GRADIENT_DTYPE_SHIFT up, or the variable's when they are 0).
pub(crate) fn entry_dtypes(value: u32, what: impl Fn() -> String) -> Result<(DType, DType), FfiError> {
    let value = value & !ADAMW_INDICES_ON_DEVICE;
    let variable = variable_dtype(value & 0xffff, &what)?;
    let gradient = match value >> ADAMW_GRADIENT_DTYPE_SHIFT {
        0 => variable,
        code => variable_dtype(code, || format!("{} (the gradient's dtype, in its high bits)", what()))?,
    };
    Ok((variable, gradient))
}

/// The C code of a dtype.
pub(crate) fn dtype_code(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => adamw_dtype::Float32 as u32,
        DType::F64 => adamw_dtype::Float64 as u32,
        DType::I64 => adamw_dtype::Int64 as u32,
        DType::BF16 => adamw_dtype::Bfloat16 as u32,
        DType::F16 => adamw_dtype::Float16 as u32,
    }
}
