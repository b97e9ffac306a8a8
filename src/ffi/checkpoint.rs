//! Checkpoints from C: `save_own_variables` / `load_own_variables` to a buffer, and atomic files.

use std::ffi::c_char;

use super::handle::{adamw_optimizer, with_optimizer};
use super::slice::{slice, write_out};
use super::status::{FfiError, adamw_status};

/// Keras' `save_own_variables`: writes every optimizer variable into `buf` as a safetensors file
/// (keys "0".."N-1" in `variables` order; see README), with the size-query convention:
/// `buf` NULL and `cap` 0 give the size in `*out_len`.
/// NULL: `optimizer`, `out_len`. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, BUFFER_TOO_SMALL (`*out_len` holds the size), OUT_OF_MEMORY, BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_save_own_variables(
    optimizer: *const adamw_optimizer,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a buffer of `cap` bytes.
    unsafe { with_optimizer(optimizer, |s| write_out(&s.optimizer.save_own_variables()?, buf, cap, out_len, false)) }
}

/// Keras' `load_own_variables`: replaces every optimizer variable (the counter included) from
/// bytes written by `adamw_optimizer_save_own_variables` for an optimizer built the same way
/// (before build: a checkpoint of an unbuilt optimizer, which holds only the counter).
/// The loss scale follows Keras: a dynamic scale takes a dynamic scale's value and count from the
/// checkpoint; a fixed scale, or a dynamic one given a checkpoint without a scale (a bare AdamW's,
/// a fixed scale's), keeps its own (adamw_optimizer_loss_scale and get_config report what the
/// load left; docs/numerics.md §19). A checkpoint records each variable's dtype and master copy:
/// another one is CHECKPOINT_MISMATCH naming the variable (format v2 files, which do not record
/// them, still load).
/// Ownership: `buf` is read during the call. NULL: `optimizer` must not be NULL; `buf` may be NULL only when `len` is 0.
/// Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not a handle), INVALID_CHECKPOINT (not a libadamw
/// checkpoint: truncated, corrupted, foreign; a loss scale no dynamic scale reaches),
/// CHECKPOINT_MISMATCH (another variable count, dtype, master copy, shape or slot),
/// OUT_OF_MEMORY (no memory for the checkpoint's copy), BUSY. On error nothing changes, and the
/// message says that the load was refused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_load_own_variables(
    optimizer: *mut adamw_optimizer,
    buf: *const u8,
    len: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `len` readable bytes.
    unsafe {
        with_optimizer(optimizer, |s| {
            let bytes = slice(buf, len, "buf")?;
            Ok(s.optimizer.load_own_variables(bytes)?)
        })
    }
}

/// Loads the checkpoints that every rank of another sharding saved (`count` of them, in any
/// order; a single unsharded checkpoint counts as one rank) into this optimizer's own shards:
/// afterwards it holds exactly what a run with its sharding holds (docs/numerics.md §13). Each
/// rank of the new sharding calls it with all the checkpoints; an unsharded optimizer takes the
/// whole state. `checkpoints[i]` points at `lens[i]` bytes of
/// `adamw_optimizer_save_own_variables`.
/// Ownership: every buffer is read during the call. NULL: `optimizer`; `checkpoints` and `lens`
/// may be NULL only when `count` is 0 (which is CHECKPOINT_MISMATCH: no shard).
/// Threads: serialized.
/// The loss scale and the variables' dtypes are checked and loaded as by
/// `adamw_optimizer_load_own_variables`.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not a handle), NOT_BUILT, INVALID_CHECKPOINT (a
/// checkpoint that is not intact), CHECKPOINT_MISMATCH (a missing, duplicated or overlapping
/// shard, checkpoints of different optimizers or steps, other dtypes, master copies or shapes than
/// this optimizer's, a checkpoint written before libadamw recorded layouts), OUT_OF_MEMORY, BUSY.
/// On error nothing changes, and the message says that the load was refused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_load_shards(
    optimizer: *mut adamw_optimizer,
    checkpoints: *const *const u8,
    lens: *const usize,
    count: usize,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and `count` buffers of the stated lengths.
    unsafe {
        with_optimizer(optimizer, |s| {
            let pointers = slice(checkpoints, count, "checkpoints")?;
            let lens = slice(lens, count, "lens")?;
            let mut buffers = Vec::new();
            buffers
                .try_reserve_exact(count)
                .map_err(|_| FfiError::from(crate::error::Error::OutOfMemory("the shard list".into())))?;
            for (i, (&p, &n)) in pointers.iter().zip(lens).enumerate() {
                buffers.push(slice(p, n, &format!("checkpoints[{i}]"))?);
            }
            Ok(s.optimizer.load_shards(&buffers)?)
        })
    }
}

/// Saves every optimizer variable to the file `path` (the format of
/// `adamw_optimizer_save_own_variables`), atomically: a temporary file in the same directory is
/// written, flushed to disk and renamed over `path`, so a crash or a write error (a full or
/// read-only disk) leaves the previous file intact.
/// Ownership: `path` (a NUL-terminated file name) is read during the call.
/// NULL: `optimizer`, `path` must not be NULL. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, IO (the system's reason in the message), BUSY.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_save_file(
    optimizer: *const adamw_optimizer,
    path: *const c_char,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a NUL-terminated path.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.save_own_variables_to_file(&file_path(path)?)?)) }
}

/// Loads every optimizer variable from a file written by `adamw_optimizer_save_file`, as
/// `adamw_optimizer_load_own_variables` does from a buffer (the loss scale and the variables'
/// dtypes included).
/// NULL: `optimizer`, `path` must not be NULL. Threads: serialized.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not a handle, a path that is not UTF-8), IO (missing
/// or unreadable file), INVALID_CHECKPOINT (truncated, corrupted: the CRC-32 does not match, or
/// foreign), CHECKPOINT_MISMATCH, OUT_OF_MEMORY, BUSY. On error nothing changes, and the message
/// says that the load was refused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_optimizer_load_file(
    optimizer: *mut adamw_optimizer,
    path: *const c_char,
) -> adamw_status {
    // SAFETY: the caller passes a live handle and a NUL-terminated path.
    unsafe { with_optimizer(optimizer, |s| Ok(s.optimizer.load_own_variables_from_file(&file_path(path)?)?)) }
}

/// A file name from C: any bytes but NUL (not necessarily UTF-8, as on Unix).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
pub(super) unsafe fn file_path(path: *const c_char) -> Result<std::path::PathBuf, FfiError> {
    // SAFETY: the caller's contract, passed on.
    unsafe { named_file_path(path, "path") }
}

/// [`file_path`] for a parameter called `name`, which the errors name.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
pub(super) unsafe fn named_file_path(path: *const c_char, name: &str) -> Result<std::path::PathBuf, FfiError> {
    if path.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let bytes = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Err(FfiError::invalid(format!("`{name}` is empty")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(std::path::PathBuf::from)
            .map_err(|_| FfiError::invalid(format!("`{name}` is not valid UTF-8")))
    }
}
