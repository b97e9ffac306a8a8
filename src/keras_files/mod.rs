//! Keras' own files: the optimizer state that tf-keras 2.15 writes into a `.keras` archive
//! (`model.save`) or a `.weights.h5` file (`model.save_weights`), and the plain safetensors
//! store a Python user writes with `safetensors.numpy.save_file`, read into an optimizer and
//! written back.
//!
//! All three hold Keras' `save_own_variables` store: the optimizer variables under the keys
//! "0".."N-1" in `optimizer.variables` order ("0" is the int64 iteration counter), with nothing
//! of libadamw's. In the HDF5 file (the archive's `model.weights.h5`, or the `.weights.h5` file
//! itself) they are the datasets `optimizer/vars/0..N-1`, beside the model's own weights
//! (`layers/<name>/vars/<i>`); the archive's `config.json` holds the compiled optimizer's config
//! under `compile_config.optimizer`. A LossScaleOptimizer around AdamW is read and written too:
//! its store is its AdamW's, which Keras also writes under `optimizer/inner_optimizer/vars`, and
//! Keras' files hold no loss scale. docs/numerics.md §21 describes the layout and what is
//! checked.
//!
//! Reading checks the structure (a foreign, truncated or damaged file is `InvalidCheckpoint`);
//! loading into an optimizer checks the count, every shape and every dtype against Keras' order
//! of its variables (`CheckpointMismatch`) before anything is assigned. Writing takes a Keras
//! file as its template and replaces only the optimizer's datasets: the model's weights, the
//! archive's config and metadata are copied as they are.

mod archive;
mod hdf5;

use std::path::Path;

use crate::config::Config;
use crate::dtype::TensorBuf;
use crate::error::{Error, Result};
use crate::optimizer::{Optimizer, VariableSpec};

/// Keras' `save_own_variables` store of an optimizer: each variable's shape and values, in
/// Keras' order (the key of `tensors[i]` is `"i"`).
#[derive(Debug)]
pub struct KerasStore {
    /// The optimizer variables: "0" is the int64 counter (shape `[]`), then the slots.
    pub tensors: Vec<(Vec<usize>, TensorBuf)>,
}

/// Which of Keras' files a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KerasFileKind {
    /// A `.keras` archive (`model.save`): a zip of `metadata.json`, `config.json` and
    /// `model.weights.h5`.
    Archive,
    /// A `.weights.h5` file (`model.save_weights`): HDF5.
    Weights,
}

/// What a Keras file holds for an optimizer.
#[derive(Debug)]
pub struct KerasFile {
    /// An archive or a weights file.
    pub kind: KerasFileKind,
    /// The optimizer's state.
    pub store: KerasStore,
    /// The compiled optimizer's config (Keras' `get_config()`, the `config` of
    /// `compile_config.optimizer` in the archive's `config.json`) as JSON, for
    /// `Optimizer::from_config_json`; `None` for a weights file, which holds no config. For a
    /// model compiled under Keras' `mixed_float16` policy, whose saved config is the bare AdamW
    /// although Keras compiled it inside a LossScaleOptimizer with the defaults, it is that
    /// LossScaleOptimizer's (see `loss_scale_optimizer`).
    pub optimizer_config: Option<String>,
    /// Whether the file has a LossScaleOptimizer's layout: Keras writes the AdamW's variables
    /// under `optimizer/inner_optimizer/vars` as well as under `optimizer/vars` only when a
    /// LossScaleOptimizer was around it.
    pub loss_scale_optimizer: bool,
}

const HDF5_SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";
const ZIP_SIGNATURE: &[u8] = b"PK\x03\x04";

/// Reads a Keras file's optimizer state (and, from an archive, its config).
pub fn read(path: &Path) -> Result<KerasFile> {
    read_bytes(crate::checkpoint::read_file(path)?)
}

/// [`read()`] from the file's bytes.
pub fn read_bytes(bytes: Vec<u8>) -> Result<KerasFile> {
    if bytes.starts_with(ZIP_SIGNATURE) {
        let (weights, config) = archive::read(&bytes)?;
        let (store, loss_scale_optimizer) = hdf5::read_store(weights)?;
        let config = if loss_scale_optimizer { with_policy_loss_scale(config) } else { config };
        Ok(KerasFile {
            kind: KerasFileKind::Archive,
            store,
            optimizer_config: Some(config.to_string()),
            loss_scale_optimizer,
        })
    } else if bytes.starts_with(HDF5_SIGNATURE) {
        let (store, loss_scale_optimizer) = hdf5::read_store(bytes)?;
        Ok(KerasFile { kind: KerasFileKind::Weights, store, optimizer_config: None, loss_scale_optimizer })
    } else {
        Err(Error::InvalidCheckpoint(
            "not a Keras file: neither a .keras archive (zip) nor a .weights.h5 file (HDF5)".into(),
        ))
    }
}

/// Writes `template` (a Keras file of the same model) to `out` with its optimizer state replaced
/// by `store`, which must have the template's count, shapes and dtypes: Keras loads the result
/// (`tf_keras.models.load_model`, `model.load_weights`) with the optimizer at `store`. Only the
/// optimizer's part changes: the model's weights in `out` are the template's, so a caller whose
/// weights moved on writes them too (with Keras, or h5py into `layers/<name>/vars/<i>`).
/// Written atomically; `out` may be `template`.
pub fn write(template: &Path, store: &KerasStore, out: &Path) -> Result<()> {
    let bytes = write_bytes(crate::checkpoint::read_file(template)?, store)?;
    crate::checkpoint::write_atomically(out, &bytes)
}

/// [`write()`] on bytes: the template's bytes in, the new file's out.
pub fn write_bytes(template: Vec<u8>, store: &KerasStore) -> Result<Vec<u8>> {
    if template.starts_with(ZIP_SIGNATURE) {
        let (weights, _) = archive::read(&template)?;
        let weights = hdf5::write_store(weights, store)?;
        archive::replace_weights(&template, &weights)
    } else if template.starts_with(HDF5_SIGNATURE) {
        hdf5::write_store(template, store)
    } else {
        Err(Error::InvalidCheckpoint(
            "the template is not a Keras file: neither a .keras archive (zip) nor a .weights.h5 file (HDF5)".into(),
        ))
    }
}

/// Reads a plain safetensors store: Keras' keys "0".."N-1" and nothing else required (metadata,
/// libadamw's included, is ignored), as `safetensors.numpy.save_file` writes it.
pub fn read_plain_store(bytes: &[u8]) -> Result<KerasStore> {
    use safetensors::tensor::SafeTensors;
    let bad = |msg: String| Error::InvalidCheckpoint(msg);
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    check_keys(st.names(), st.len(), "the store")?;
    let tensors = (0..st.len())
        .map(|i| {
            let view = st.tensor(&i.to_string()).map_err(|e| bad(format!("tensor \"{i}\": {e}")))?;
            let dtype = crate::checkpoint::dtype_of(view.dtype()).ok_or_else(|| {
                bad(format!("tensor \"{i}\" has dtype {:?}; expected I64, F32, F64, BF16 or F16", view.dtype()))
            })?;
            Ok((view.shape().to_vec(), TensorBuf::from_le_bytes(dtype, view.data())))
        })
        .collect::<Result<_>>()?;
    let store = KerasStore { tensors };
    store.check_counter("the store")?;
    Ok(store)
}

/// Keras' store keys: the `count` names are exactly "0".."count-1" (in any order).
fn check_keys<'a>(names: impl IntoIterator<Item = &'a str>, count: usize, what: &str) -> Result<()> {
    match names.into_iter().find(|n| n.parse::<usize>().map_or(true, |i| i >= count || *n != i.to_string())) {
        Some(name) => Err(Error::InvalidCheckpoint(format!(
            "{what} holds \"{name}\", which is not one of Keras' keys \"0\"..\"{}\"",
            count.saturating_sub(1)
        ))),
        None => Ok(()),
    }
}

/// The config of an archive whose weights have a LossScaleOptimizer's layout: a bare AdamW's is
/// a model compiled under the `mixed_float16` policy, where `model.compile` put the AdamW inside
/// `LossScaleOptimizer(adamw)` (Keras' defaults) and saved the AdamW's config; that
/// LossScaleOptimizer's config is returned, as its `get_config()` writes it. A LossScaleOptimizer's
/// own config is returned as it is.
fn with_policy_loss_scale(config: serde_json::Value) -> serde_json::Value {
    if config.get("inner_optimizer").is_some() {
        return config;
    }
    let defaults = crate::config::LossScale::default();
    serde_json::json!({
        "inner_optimizer": {"module": "keras.optimizers", "class_name": "AdamW", "config": config, "registered_name": null},
        "dynamic": defaults.dynamic,
        "initial_scale": defaults.initial_scale,
        "dynamic_growth_steps": defaults.dynamic_growth_steps,
    })
}

/// The optimizer config of a `.keras` archive ([`KerasFile::optimizer_config`]).
pub fn read_optimizer_config(path: &Path) -> Result<String> {
    let bytes = crate::checkpoint::read_file(path)?;
    if bytes.starts_with(HDF5_SIGNATURE) {
        return Err(Error::InvalidCheckpoint(
            "a .weights.h5 file holds no optimizer config (a .keras archive does)".into(),
        ));
    }
    if !bytes.starts_with(ZIP_SIGNATURE) {
        return Err(Error::InvalidCheckpoint("not a .keras archive (zip)".into()));
    }
    let config =
        read_bytes(bytes)?.optimizer_config.ok_or_else(|| Error::Internal("an archive without a config".into()))?;
    // What is returned is a config from_config accepts: a LossScaleOptimizer around another or
    // a hostile loss scale is refused here with the message from_config would give.
    let value = serde_json::from_str(&config).map_err(|e| Error::Internal(format!("the archive's config: {e}")))?;
    crate::config::Config::from_json(value)?;
    Ok(config)
}

/// The store of a libadamw checkpoint (`save_own_variables`): its optimizer variables in Keras'
/// order. The named scalars a checkpoint holds beside them (the loss scale and its count, the only
/// ones libadamw writes) are left out: Keras' files have no place for them (a new
/// LossScaleOptimizer loaded from one starts from its initial scale).
pub fn store_of_checkpoint(bytes: &[u8]) -> Result<KerasStore> {
    Ok(KerasStore { tensors: crate::checkpoint::decode(bytes)?.tensors })
}

/// The variables an AdamW with `config` was built over, as a store of its state shows them:
/// Keras' order is the counter, then (EMA) one average per variable, then m and v interleaved
/// per variable, then (amsgrad) one vhat per variable, so the store of V variables holds
/// 1 + V (2 + use_ema + amsgrad) tensors, and each m has its variable's shape and dtype. The
/// names are `variable_<i>` (a store does not hold them; they do not change the state).
pub fn variables_of(store: &KerasStore, config: &Config) -> Result<Vec<VariableSpec>> {
    store.check_counter("the store")?;
    let per_variable = 2 + usize::from(config.use_ema) + usize::from(config.amsgrad);
    let slots = store.tensors.len() - 1;
    if !slots.is_multiple_of(per_variable) {
        return Err(Error::CheckpointMismatch(format!(
            "the store holds {slots} slots, which is not {per_variable} per variable (use_ema {}, amsgrad {})",
            config.use_ema, config.amsgrad
        )));
    }
    let count = slots / per_variable;
    let first_m = 1 + if config.use_ema { count } else { 0 };
    (0..count)
        .map(|i| {
            let (shape, m) = &store.tensors[first_m + 2 * i];
            let others = (config.use_ema.then_some(1 + i).into_iter())
                .chain([first_m + 2 * i + 1])
                .chain(config.amsgrad.then_some(first_m + 2 * count + i));
            for k in others {
                let (other_shape, other) = &store.tensors[k];
                if other_shape != shape || other.dtype() != m.dtype() {
                    return Err(Error::CheckpointMismatch(format!(
                        "tensor {k} is {} {other_shape:?}, but variable {i}'s m is {} {shape:?}",
                        other.dtype().name(),
                        m.dtype().name()
                    )));
                }
            }
            Ok(VariableSpec::new(format!("variable_{i}"), m.dtype(), shape))
        })
        .collect()
}

impl KerasStore {
    /// The store of an optimizer's state, as Keras' `save_own_variables` writes it. bfloat16
    /// state is refused (`InvalidArgument`): h5py, and so Keras' files, have no bfloat16.
    pub fn of(optimizer: &Optimizer) -> Result<Self> {
        let tensors = optimizer.keras_variables()?;
        if let Some(t) = tensors.iter().find(|t| t.values.dtype() == crate::dtype::DType::BF16) {
            return Err(Error::InvalidArgument(format!(
                "{} is bfloat16, which Keras' files cannot hold (h5py has no bfloat16 type)",
                t.info.name
            )));
        }
        Ok(KerasStore { tensors: tensors.into_iter().map(|t| (t.info.shape, t.values)).collect() })
    }

    /// Keras' `load_own_variables`: assigns the store to a built optimizer, after checking its
    /// count, shapes and dtypes against the optimizer's variables; nothing changes on error.
    pub fn load_into(&self, optimizer: &mut Optimizer) -> Result<()> {
        optimizer.load_keras_variables(&self.tensors)
    }

    /// Checks that the store is the iteration counter and then slots: `"0"` an int64 scalar.
    fn check_counter(&self, what: &str) -> Result<()> {
        match self.tensors.first() {
            Some((shape, values)) if shape.is_empty() && values.dtype() == crate::dtype::DType::I64 => Ok(()),
            Some(_) => Err(Error::InvalidCheckpoint(format!(
                "{what}: variable \"0\" is not the int64 scalar iteration counter of an optimizer"
            ))),
            None => Err(Error::InvalidCheckpoint(format!("{what} holds no optimizer variable"))),
        }
    }
}
