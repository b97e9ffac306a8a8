//! What a call rejects, and with which message. Every check here runs before anything changes,
//! so a rejected call leaves the optimizer exactly as it was.

use crate::config::Clipping;
use crate::dtype::{DType, TensorRef};
use crate::engine::VariableLayout;
use crate::error::{Error, Result, invalid};
use crate::tensor::{CallEntries, EntryShape};

use super::state::{Built, Shard, State, StateInfo, VariableSpec, VariableState};

/// A value for `set_weights` / `load_own_variables`: a shape and that many elements.
#[derive(Debug, Clone, Copy)]
pub struct Weight<'a> {
    /// The weight's shape (`[]` for the counter).
    pub shape: &'a [usize],
    /// Its values.
    pub values: TensorRef<'a>,
}

pub(crate) fn not_built(what: &str) -> Error {
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

/// Checks `build`'s arguments and describes each variable; changes nothing.
pub(crate) fn build_variables(
    state: &State,
    specs: &[VariableSpec],
    initial_values: &[TensorRef<'_>],
) -> Result<Vec<VariableState>> {
    if state.built.is_some() {
        return Err(Error::AlreadyBuilt("the optimizer is already built; build can be called once".into()));
    }
    if let Some(&bad) = state.exclude_variables.iter().find(|&&i| i >= specs.len()) {
        return Err(Error::UnknownVariable(format!(
            "exclude_from_weight_decay names variable {bad}, but build received {} variables",
            specs.len()
        )));
    }
    new_variables(state, specs, initial_values, 0)
}

/// The variables of `add_variables`: checked as build checks them, numbered after the built
/// ones, with names that no variable has yet; never on a mesh (every rank's shards would have
/// to agree) or a device (whose kernels' tables are fixed at build).
pub(crate) fn added_variables(
    state: &State,
    specs: &[VariableSpec],
    initial_values: &[TensorRef<'_>],
) -> Result<Vec<VariableState>> {
    let built = state.built.as_ref().ok_or_else(|| not_built("add_variables"))?;
    if state.config.mesh.is_some() {
        return Err(invalid!(
            "variables cannot be added to sharded state: every rank would have to add the same shards at the same step; build over every variable"
        ));
    }
    if state.engine.on_device() {
        return Err(invalid!(
            "variables cannot be added to an optimizer on a device: its kernels' tables are fixed at build"
        ));
    }
    let first = built.variables.len();
    for (i, spec) in specs.iter().enumerate() {
        let mut taken = built.variables.iter().map(|v| &v.spec.name).chain(specs[..i].iter().map(|s| &s.name));
        if taken.any(|name| *name == spec.name) {
            return Err(invalid!(
                "variable {} (`{}`): a variable of that name exists; names identify slots and checkpoints",
                first + i,
                spec.name
            ));
        }
    }
    new_variables(state, specs, initial_values, first)
}

/// Checks `specs` (numbered from `first` in messages) and lays out their state.
fn new_variables(
    state: &State,
    specs: &[VariableSpec],
    initial_values: &[TensorRef<'_>],
    first: usize,
) -> Result<Vec<VariableState>> {
    let needs_initial = needs_initial_values(state, specs);
    if needs_initial && initial_values.len() != specs.len() {
        return Err(invalid!(
            "{} needs every variable's initial value at build ({}): got {} values for {} variables",
            if state.config.use_ema { "use_ema" } else { "master_weights" },
            if state.config.use_ema { "the averages start as copies" } else { "the float32 masters start as copies" },
            initial_values.len(),
            specs.len()
        ));
    }
    let mut variables = Vec::new();
    variables.try_reserve_exact(specs.len()).map_err(|_| Error::OutOfMemory("too many variables".into()))?;
    for (k, spec) in specs.iter().enumerate() {
        let i = first + k;
        if !spec.dtype.is_float() {
            return Err(Error::DtypeMismatch(format!(
                "variable {i} (`{}`): dtype must be float32, float64, bfloat16 or float16, got {}",
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
                if state.config.mesh.is_none() {
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
        if needs_initial {
            let init = initial_values[k];
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
        let master = state.config.master_weights && matches!(spec.dtype, DType::BF16 | DType::F16);
        variables.push(VariableState {
            spec: spec.clone(),
            layout: VariableLayout {
                dtype: if master { DType::F32 } else { spec.dtype },
                values_dtype: spec.dtype,
                len,
                row_len: spec.shape.iter().skip(1).product(),
                offset,
                full_len,
                sharded: spec.shard.is_some(),
            },
            slot_shape: if spec.shard.is_some() { vec![len] } else { spec.shape.clone() },
        });
    }
    Ok(variables)
}

/// Whether build needs the variables' values: for the EMA averages, or for float32 masters.
pub(crate) fn needs_initial_values(state: &State, specs: &[VariableSpec]) -> bool {
    state.config.use_ema
        || (state.config.master_weights && specs.iter().any(|s| matches!(s.dtype, DType::BF16 | DType::F16)))
}

/// Checks that entry `variable` names a built variable of `dtype`: the checks that come before
/// any other (the C ABI runs them before it sizes a buffer by the dtype).
pub(crate) fn check_variable_dtype(built: &Built, variable: usize, dtype: DType) -> Result<&VariableState> {
    let Some(var) = built.variables.get(variable) else {
        return Err(Error::UnknownVariable(format!(
            "The optimizer cannot recognize variable {variable} (it was built with {} variables). This usually means you are trying to call the optimizer to update different parts of the model separately. Please call `optimizer.build(variables)` with the full list of trainable variables before the training loop.",
            built.variables.len()
        )));
    };
    if dtype != var.spec.dtype {
        return Err(Error::DtypeMismatch(format!(
            "variable {variable} (`{}`) is {} but its values were given as {}",
            var.spec.name,
            var.spec.dtype.name(),
            dtype.name()
        )));
    }
    Ok(var)
}

/// Checks one entry against the built variable it names.
pub(crate) fn check_entry(built: &Built, u: &EntryShape<'_>) -> Result<()> {
    let var = check_variable_dtype(built, u.variable, u.values_dtype)?;
    let (name, dtype, len) = (&var.spec.name, var.spec.dtype, var.layout.len);
    if u.values_len != len {
        return Err(Error::ShapeMismatch(format!(
            "variable {} (`{name}`) of shape {:?} has {len} elements, got {}",
            u.variable, var.spec.shape, u.values_len
        )));
    }
    let Some(gradient) = u.gradient else { return Ok(()) };
    // A variable with a float32 master also takes float32 gradients (accumulated in float32).
    let gradient_dtype = gradient.dtype;
    if gradient_dtype != dtype && !(var.layout.dtype == DType::F32 && gradient_dtype == DType::F32) {
        let what = if gradient.indices.is_none() { "gradient" } else { "sparse gradient values" };
        return Err(Error::DtypeMismatch(format!(
            "variable {} (`{name}`) is {} but its {what} {} {}",
            u.variable,
            dtype.name(),
            if what == "gradient" { "is" } else { "are" },
            gradient_dtype.name()
        )));
    }
    match gradient.indices {
        None => {
            if gradient.len != len {
                return Err(Error::ShapeMismatch(format!(
                    "the gradient of variable {} (`{name}`, {len} elements) has {} elements",
                    u.variable, gradient.len
                )));
            }
        }
        Some(indices) => {
            if var.spec.shape.is_empty() {
                return Err(invalid!(
                    "variable {} (`{name}`) is a scalar and cannot take a sparse gradient",
                    u.variable
                ));
            }
            let row_len = var.layout.row_len;
            if indices.len().checked_mul(row_len) != Some(gradient.len) {
                return Err(Error::ShapeMismatch(format!(
                    "the sparse gradient of variable {} (`{name}`) has {} indices and {} values; rows of {row_len} elements need {}",
                    u.variable,
                    indices.len(),
                    gradient.len,
                    indices.len().saturating_mul(row_len)
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

/// The dtypes of the state that a call's gradients update (what its step plan needs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallDTypes {
    pub f32: bool,
    pub f64: bool,
    pub bf16: bool,
    pub f16: bool,
}

impl CallDTypes {
    /// How many dtypes the call uses.
    fn count(&self) -> usize {
        [self.f32, self.f64, self.bf16, self.f16].into_iter().filter(|&p| p).count()
    }

    fn add(&mut self, dtype: DType) {
        match dtype {
            DType::F32 => self.f32 = true,
            DType::F64 => self.f64 = true,
            DType::BF16 => self.bf16 = true,
            DType::F16 => self.f16 = true,
            DType::I64 => {}
        }
    }
}

/// Checks every entry of an `apply_gradients` call, and that no variable is listed twice;
/// returns the dtypes of the state the call updates.
pub(crate) fn check_entries(
    built: &mut Built,
    entries: &mut CallEntries<'_>,
    clipping: Clipping,
) -> Result<CallDTypes> {
    built.call_number += 1;
    let mut any_gradient = false;
    let mut present = CallDTypes::default();
    for i in 0..entries.len() {
        let (variable, has_gradient) =
            entries.with_shape(i, |u| check_entry(built, &u).map(|()| (u.variable, u.gradient.is_some())))?;
        if built.last_listed[variable] == built.call_number {
            return Err(invalid!("variable {variable} is listed twice in one apply_gradients call"));
        }
        built.last_listed[variable] = built.call_number;
        if has_gradient {
            any_gradient = true;
            // The dtype the gradient's norm is summed in: the state's.
            present.add(built.variables[variable].layout.dtype);
        }
    }
    if !any_gradient {
        let names: Vec<String> = (0..entries.len())
            .map(|i| entries.with_shape(i, |u| format!("'{}'", built.variables[u.variable].spec.keras_name())))
            .collect();
        return Err(Error::NoGradients(format!("No gradients provided for any variable: ([{}],).", names.join(", "))));
    }
    if matches!(clipping, Clipping::GlobalNorm(_)) && present.count() > 1 {
        return Err(invalid!(
            "global_clipnorm needs gradients of one dtype: Keras cannot combine the norms of gradients of different dtypes"
        ));
    }
    Ok(present)
}

/// Checks weights against the optimizer variables they would replace (`exact_count`: one per
/// variable, as a checkpoint must be).
pub(crate) fn check_weights(state: &State, weights: &[Weight<'_>], exact_count: bool) -> Result<()> {
    let n = state.num_state_tensors();
    if exact_count && weights.len() != n {
        return Err(Error::CheckpointMismatch(format!(
            "optimizer '{}' has {n} variables but the checkpoint holds {}{}",
            state.config.name,
            weights.len(),
            if n == 1 { " (the optimizer is not built yet: build it before loading)" } else { "" }
        )));
    }
    for (index, w) in weights.iter().enumerate().take(n) {
        let Some(var) = state.info(index) else { break };
        let mismatch =
            |msg: String| if exact_count { Error::CheckpointMismatch(msg) } else { Error::ShapeMismatch(msg) };
        if w.shape != var.shape.as_slice() {
            return Err(mismatch(format!(
                "Optimizer variable {} has shape {} not compatible with provided weight shape {}.",
                var.name,
                py_shape(&var.shape),
                py_shape(w.shape)
            )));
        }
        if w.values.dtype() != var.dtype {
            let msg = weight_dtype_message(&var, w.values.dtype());
            return Err(if exact_count { Error::CheckpointMismatch(msg) } else { Error::DtypeMismatch(msg) });
        }
        if w.values.len() != var.len {
            return Err(mismatch(format!(
                "Optimizer variable {} has {} elements; the provided weight has {}.",
                var.name,
                var.len,
                w.values.len()
            )));
        }
    }
    Ok(())
}

fn weight_dtype_message(var: &StateInfo, given: DType) -> String {
    format!("Optimizer variable {} is {} but the provided weight is {}.", var.name, var.dtype.name(), given.name())
}

/// Checks that a weight for optimizer variable `index` has its dtype (when there is one): what
/// a caller sizing the weight's buffer by the dtype checks first.
pub(crate) fn check_weight_dtype(state: &State, index: usize, dtype: DType) -> Result<()> {
    match state.info(index) {
        Some(var) if var.dtype != dtype => Err(Error::DtypeMismatch(weight_dtype_message(&var, dtype))),
        _ => Ok(()),
    }
}

/// Checks that a buffer of `len` elements of `dtype` fits optimizer variable `index`.
pub(crate) fn check_state_buffer(state: &State, index: usize, dtype: DType, len: usize) -> Result<StateInfo> {
    let info = state.info(index).ok_or_else(|| {
        Error::UnknownVariable(format!(
            "optimizer variable {index} does not exist; there are {}",
            state.num_state_tensors()
        ))
    })?;
    if dtype != info.dtype {
        return Err(Error::DtypeMismatch(format!(
            "optimizer variable {index} ({}) is {}; {} was asked for",
            info.name,
            info.dtype.name(),
            dtype.name()
        )));
    }
    if len != info.len {
        return Err(Error::ShapeMismatch(format!(
            "optimizer variable {index} ({}) has {} elements; the buffer holds {len}",
            info.name, info.len
        )));
    }
    Ok(info)
}
