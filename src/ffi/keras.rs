//! Keras' own files from C: the optimizer state of `.keras` archives and `.weights.h5` files,
//! the config an archive holds, and plain safetensors stores (`keras_files` in the core). In a
//! library built without the `keras-files` feature each function fails with INVALID_ARGUMENT,
//! saying so.

use std::ffi::c_char;

use super::checkpoint::{file_path, named_file_path};
use super::guard::guard;
use super::handle::{adamw_optimizer, with_optimizer};
use super::slice::{slice, write_out};
use super::status::{FfiError, adamw_status};

/// The work of each entry point, in the core's terms.
#[cfg(feature = "keras-files")]
mod files {
    use std::path::Path;

    use crate::error::{Error, Result};
    use crate::keras_files::{self, KerasStore};
    use crate::optimizer::Optimizer;

    pub fn load(optimizer: &mut Optimizer, path: &Path) -> Result<()> {
        keras_files::read(path).map_err(Error::load_refused)?.store.load_into(optimizer)
    }

    pub fn save(optimizer: &Optimizer, template: &Path, out: &Path) -> Result<()> {
        keras_files::write(template, &KerasStore::of(optimizer)?, out)
    }

    pub fn config(path: &Path) -> Result<String> {
        keras_files::read_optimizer_config(path)
    }

    pub fn load_store(optimizer: &mut Optimizer, bytes: &[u8]) -> Result<()> {
        keras_files::read_plain_store(bytes).map_err(Error::load_refused)?.load_into(optimizer)
    }
}

/// Without the feature, every entry point says so.
#[cfg(not(feature = "keras-files"))]
mod files {
    use std::path::Path;

    use crate::error::{Error, Result};
    use crate::optimizer::Optimizer;

    fn unavailable<T>() -> Result<T> {
        Err(Error::InvalidArgument(
            "this libadamw was built without Keras files (the `keras-files` cargo feature)".into(),
        ))
    }

    pub fn load(_: &mut Optimizer, _: &Path) -> Result<()> {
        unavailable()
    }

    pub fn save(_: &Optimizer, _: &Path, _: &Path) -> Result<()> {
        unavailable()
    }

    pub fn config(_: &Path) -> Result<String> {
        unavailable()
    }

    pub fn load_store(_: &mut Optimizer, _: &[u8]) -> Result<()> {
        unavailable()
    }
}

/// Loads the optimizer state of a Keras file into a built optimizer (Keras'
/// `load_own_variables`): a `.keras` archive (`model.save`) or a `.weights.h5` file
/// (`model.save_weights`) written by tf-keras 2.15, told apart by their contents. Its datasets
/// `optimizer/vars/0..N-1` are matched to this optimizer's variables in Keras' order
/// (`adamw_optimizer_variable_info`): the count, every shape and every dtype must agree. Around a
/// LossScaleOptimizer Keras writes its AdamW's variables twice (also under
/// `optimizer/inner_optimizer/vars`, which must agree); the loss scale is not in Keras' files, so
/// an optimizer with one keeps its scale (a new one starts from `initial_scale`, as Keras does
/// when it loads the file). Build the
/// optimizer over the model's trainable variables in Keras' order, from the archive's config
/// (`adamw_keras_file_optimizer_config`, `adamw_optimizer_from_config_json`) or the same
/// arguments. The model's own weights stay in the file (`layers/...`) for the caller to read.
/// Ownership: `path` is read during the call. NULL: `optimizer`, `path` must not be NULL.
/// Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NOT_BUILT, IO (missing or unreadable file),
/// INVALID_CHECKPOINT (not a Keras file, truncated or damaged, no optimizer state, a dataset of
/// a type libadamw does not read, the two copies of a LossScaleOptimizer's state differ),
/// INVALID_CONFIG (an archive whose optimizer is not AdamW or a LossScaleOptimizer around one,
/// or a LossScaleOptimizer around another), CHECKPOINT_MISMATCH (another count, shape or dtype),
/// OUT_OF_MEMORY, BUSY. On error nothing changes, and the message says that the load was refused. An HDF5 file as h5py writes it carries no checksums: damage to its
/// structure is caught, a flipped bit inside a value cannot be (an archive's CRC-32s catch it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_load_keras_file(
    optimizer: *mut adamw_optimizer,
    path: *const c_char,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a NUL-terminated path.
    unsafe { with_optimizer(optimizer, |s| Ok(files::load(&mut s.optimizer, &file_path(path)?)?)) }
}

/// Writes this optimizer's state into a copy of a Keras file (Keras' `save_own_variables`):
/// `out_path` becomes `template_path` (a `.keras` archive or a `.weights.h5` file of the same
/// model and optimizer) with its datasets `optimizer/vars/0..N-1` replaced (and, around a
/// LossScaleOptimizer, their copies under `optimizer/inner_optimizer/vars`; the loss scale is not
/// written, as Keras writes none); the model's weights,
/// the archive's config and metadata are copied as they are. tf-keras then loads it
/// (`load_model`, `model.load_weights`) and continues from this optimizer's state. Written
/// atomically (a temporary file beside `out_path`, renamed over it); `out_path` may be
/// `template_path`.
/// Ownership: both paths are read during the call. NULL: none may be NULL. Threads: serialized.
/// The model's weights in `out_path` are the template's: a caller whose weights moved on writes
/// them too (with Keras, or into the datasets `layers/<name>/vars/<i>`).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (master weights, which Keras' AdamW does not hold;
/// bfloat16 state, which h5py cannot store), IO, INVALID_CHECKPOINT (the template is not a
/// readable Keras file, or holds no optimizer state), INVALID_CONFIG (an archive whose optimizer
/// is not AdamW or a LossScaleOptimizer around one), CHECKPOINT_MISMATCH (the template's
/// optimizer has another count, shape or dtype), BUSY. On error `out_path` is as it was.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_save_keras_file(
    optimizer: *const adamw_optimizer,
    template_path: *const c_char,
    out_path: *const c_char,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and NUL-terminated paths.
    unsafe {
        with_optimizer(optimizer, |s| {
            let template = named_file_path(template_path, "template_path")?;
            Ok(files::save(&s.optimizer, &template, &named_file_path(out_path, "out_path")?)?)
        })
    }
}

/// The compiled optimizer's config in a `.keras` archive (the `config` of
/// `compile_config.optimizer` in its `config.json`, Keras' `get_config()`: AdamW's, or a
/// LossScaleOptimizer's with its AdamW under `inner_optimizer`), as JSON for
/// `adamw_optimizer_from_config_json`. A model compiled under Keras' `mixed_float16` policy saves
/// its AdamW's config although `model.compile` put it inside a LossScaleOptimizer with Keras'
/// defaults; its weights tell (the state under `optimizer/inner_optimizer/vars` too), and the
/// config given is then that LossScaleOptimizer's. With the size-query convention: `buf` NULL and `cap` 0
/// give the size in `*out_len`; otherwise `cap` must hold the JSON and a NUL.
/// The config is one `adamw_optimizer_from_config_json` accepts: one it would refuse is refused
/// here with the same status and message.
/// Ownership: `path` is read during the call. NULL: `path`, `out_len`.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a value from_config refuses, such as a hostile loss
/// scale; a library without Keras files), IO, INVALID_CHECKPOINT (not an archive, damaged, no
/// compiled optimizer; a `.weights.h5` file, which holds no config), INVALID_CONFIG (the
/// optimizer is not AdamW or a LossScaleOptimizer around one, a LossScaleOptimizer around
/// another, a config from_config cannot read), OUT_OF_MEMORY, BUFFER_TOO_SMALL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_keras_file_optimizer_config(
    path: *const c_char,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> adamw_status {
    guard(|| {
        if out_len.is_null() {
            return Err(FfiError::null("out_len"));
        }
        // SAFETY: a NUL-terminated path by the caller's contract.
        let config = files::config(&unsafe { file_path(path)? })?;
        // SAFETY: `cap` writable bytes at `buf` and a writable `out_len` (caller's contract).
        unsafe { write_out(config.as_bytes(), buf.cast(), cap, out_len, true) }
    })
}

/// Loads a plain safetensors store into a built optimizer: Keras' `save_own_variables` layout
/// (keys "0".."N-1" in Keras' order, "0" the int64 counter) with no libadamw metadata, as a
/// Python user writes it with `safetensors.numpy.save_file`; checked as
/// `adamw_optimizer_load_keras_file` checks a Keras file. (`adamw_optimizer_load_own_variables`
/// keeps refusing files without libadamw's checksum.)
/// Ownership: `buf` is read during the call. NULL: `optimizer`; `buf` only when `len` is 0.
/// Threads: serialized.
/// Keras' stores hold no loss scale: the optimizer's stays as it is.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NOT_BUILT, INVALID_CHECKPOINT (not safetensors,
/// another key), CHECKPOINT_MISMATCH, OUT_OF_MEMORY, BUSY. On error nothing changes, and the
/// message says that the load was refused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_load_keras_store(
    optimizer: *mut adamw_optimizer,
    buf: *const u8,
    len: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `len` readable bytes.
    unsafe { with_optimizer(optimizer, |s| Ok(files::load_store(&mut s.optimizer, slice(buf, len, "buf")?)?)) }
}
