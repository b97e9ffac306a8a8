//! Status codes and the per-thread last-error message. Only this file maps core errors to
//! statuses. The numbers are frozen: a removed status keeps its number as a reserving comment.
//! The enum is the one definition: the names `adamw_status_name` returns are derived from it.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::sync::OnceLock;

use strum::{FromRepr, IntoStaticStr};

use crate::error::Error;

/// The result of every fallible call. `ADAMW_STATUS_OK` is 0; any other value is a failure whose
/// message `adamw_last_error` returns on the same thread. A failed call changes nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum adamw_status {
    /// Success.
    Ok = 0,
    /// A pointer that must not be NULL was NULL.
    NullArgument = 1,
    /// A value outside its domain: a hyper-parameter Keras rejects, an unknown enum value, a
    /// misaligned pointer, overlapping buffers, a variable listed twice.
    InvalidArgument = 2,
    /// Config JSON that does not parse, or has an unknown key or a wrong type.
    InvalidConfig = 3,
    /// An element count or shape that does not match the built variable.
    ShapeMismatch = 4,
    /// A dtype that does not match the built variable.
    DtypeMismatch = 5,
    /// A variable index the optimizer was not built with.
    UnknownVariable = 6,
    /// A sparse row index outside the variable's first dimension.
    IndexOutOfRange = 7,
    /// The call needs `adamw_optimizer_build` first.
    NotBuilt = 8,
    /// The call is allowed only before `adamw_optimizer_build`.
    AlreadyBuilt = 9,
    /// Every gradient of an `apply_gradients` call was NULL.
    NoGradients = 10,
    /// A callback returned non-zero or a non-finite value.
    CallbackFailed = 11,
    /// The output buffer is too small; `*out_len` holds the size needed.
    BufferTooSmall = 12,
    /// The bytes are not a libadamw checkpoint (truncated, corrupted or foreign).
    InvalidCheckpoint = 13,
    /// A well-formed checkpoint of a differently built optimizer.
    CheckpointMismatch = 14,
    /// A call made from inside one of this optimizer's callbacks, on the same optimizer.
    Busy = 15,
    /// Memory could not be allocated, or a size overflows.
    OutOfMemory = 16,
    /// A bug in libadamw (a caught panic). The optimizer may no longer be used.
    Internal = 17,
    /// A gradient held NaN or an infinity and `reject_non_finite_gradients` is on: the whole
    /// call was rejected and nothing changed.
    NonFiniteGradient = 18,
    /// A file could not be read or written (the message has the system's reason).
    Io = 19,
    /// The device engine is unavailable (no CUDA driver, no NVRTC, no such GPU, a library built
    /// without it) or a device operation failed; the message says which.
    Device = 20,
}

/// A failure on its way to the caller: a status and its message.
#[derive(Debug)]
pub struct FfiError {
    pub status: adamw_status,
    pub message: String,
}

impl FfiError {
    pub fn new(status: adamw_status, message: impl Into<String>) -> Self {
        FfiError { status, message: message.into() }
    }

    pub fn null(what: &str) -> Self {
        FfiError::new(adamw_status::NullArgument, format!("`{what}` must not be NULL"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        FfiError::new(adamw_status::InvalidArgument, message)
    }

    /// Stores the message for `adamw_last_error` and returns the status. During thread teardown,
    /// when the thread-local is gone, the message is dropped and the status still returned.
    pub fn record(self) -> adamw_status {
        let _ = LAST_ERROR.try_with(|e| {
            if let Ok(mut slot) = e.try_borrow_mut() {
                *slot = self.message;
            }
        });
        self.status
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidArgument(_) => adamw_status::InvalidArgument,
            Error::InvalidConfig(_) => adamw_status::InvalidConfig,
            Error::ShapeMismatch(_) => adamw_status::ShapeMismatch,
            Error::DtypeMismatch(_) => adamw_status::DtypeMismatch,
            Error::UnknownVariable(_) => adamw_status::UnknownVariable,
            Error::IndexOutOfRange(_) => adamw_status::IndexOutOfRange,
            Error::NotBuilt(_) => adamw_status::NotBuilt,
            Error::AlreadyBuilt(_) => adamw_status::AlreadyBuilt,
            Error::NoGradients(_) => adamw_status::NoGradients,
            Error::CallbackFailed(_) => adamw_status::CallbackFailed,
            Error::InvalidCheckpoint(_) => adamw_status::InvalidCheckpoint,
            Error::CheckpointMismatch(_) => adamw_status::CheckpointMismatch,
            Error::OutOfMemory(_) => adamw_status::OutOfMemory,
            Error::NonFiniteGradient(_) => adamw_status::NonFiniteGradient,
            Error::Io(_) => adamw_status::Io,
            Error::Device(_) => adamw_status::Device,
            Error::Internal(_) => adamw_status::Internal,
        };
        FfiError::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Copies the message of the last failed call on this thread into `buf` as a NUL-terminated
/// UTF-8 string, and its length (without the NUL) into `*out_len`.
///
/// Ownership: `buf` is the caller's; the message stays stored until the next failure on this thread.
/// NULL: `buf` may be NULL when `cap` is 0 (a size query); `out_len` may be NULL.
/// Threads: each thread has its own message.
/// Errors: BUFFER_TOO_SMALL when `cap` < length + 1 (`*out_len` still receives the length; with
/// `cap` > 0 the truncated message is written, NUL-terminated), NULL_ARGUMENT for a NULL `buf`
/// with `cap` > 0. Returns OK with an empty string when no call has failed on this thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adamw_last_error(buf: *mut c_char, cap: usize, out_len: *mut usize) -> adamw_status {
    // Not through `guard`: a failure here must not overwrite the message being read. Nothing here
    // can panic: `try_with` and `try_borrow` fail softly (during thread teardown, say).
    let message = LAST_ERROR.try_with(|e| e.try_borrow().map(|m| m.clone()).unwrap_or_default()).unwrap_or_default();
    let len = message.len();
    if buf.is_null() && cap > 0 {
        return adamw_status::NullArgument;
    }
    if !out_len.is_null() {
        // SAFETY: non-NULL, and the caller passes a pointer to a writable size_t.
        unsafe { *out_len = len };
    }
    if cap == 0 {
        // (NULL, 0) is a size query; a real buffer of 0 bytes cannot hold the NUL.
        return if buf.is_null() || len == 0 { adamw_status::Ok } else { adamw_status::BufferTooSmall };
    }
    // Truncate on a character boundary, so that the copy stays valid UTF-8.
    let mut n = len.min(cap - 1);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buf` is non-NULL and the caller guarantees `cap` writable bytes; n + 1 <= cap.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    if n < len { adamw_status::BufferTooSmall } else { adamw_status::Ok }
}

/// The name of a status as a static NUL-terminated string, e.g. "ADAMW_STATUS_SHAPE_MISMATCH";
/// "ADAMW_STATUS_UNKNOWN" for a value that is not a status.
/// Ownership: static storage; never free it. Threads: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn adamw_status_name(status: u32) -> *const c_char {
    /// Statuses are numbered below this (checked by a test).
    const LIMIT: u32 = 256;
    static NAMES: OnceLock<Vec<Option<CString>>> = OnceLock::new();
    static UNKNOWN: &std::ffi::CStr = c"ADAMW_STATUS_UNKNOWN";
    let names = NAMES.get_or_init(|| {
        // `ADAMW_STATUS_` and the variant in SCREAMING_SNAKE_CASE, as cbindgen names the constants.
        (0..LIMIT)
            .map(|n| {
                let status = adamw_status::from_repr(n as usize)?;
                CString::new(format!("ADAMW_STATUS_{}", <&'static str>::from(status))).ok()
            })
            .collect()
    });
    match names.get(status as usize) {
        Some(Some(name)) => name.as_ptr(),
        _ => UNKNOWN.as_ptr(),
    }
}
