//! The one error type of the safe core. Each variant is one kind of failure a caller can act on;
//! `ffi::status` maps them one-to-one onto the frozen C status codes.

use thiserror::Error;

/// Everything that can go wrong in a call. The message is written for the person reading a log:
/// it names the argument, the value received and, where Keras raises the same error, Keras' text.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Error {
    /// A value outside its domain (Keras raises `ValueError` for the same input).
    #[error("{0}")]
    InvalidArgument(String),
    /// Config JSON that does not parse, has an unknown key or a value of the wrong type
    /// (Keras raises `TypeError` for unknown keys).
    #[error("{0}")]
    InvalidConfig(String),
    /// A tensor whose element count or shape does not match the built variable.
    #[error("{0}")]
    ShapeMismatch(String),
    /// A tensor whose dtype is not the built variable's dtype.
    #[error("{0}")]
    DtypeMismatch(String),
    /// A variable index that the optimizer was not built with (Keras raises `KeyError`).
    #[error("{0}")]
    UnknownVariable(String),
    /// A sparse row index outside the variable's first dimension.
    #[error("{0}")]
    IndexOutOfRange(String),
    /// The call needs a built optimizer.
    #[error("{0}")]
    NotBuilt(String),
    /// The call is allowed only before build.
    #[error("{0}")]
    AlreadyBuilt(String),
    /// Every gradient of an `apply_gradients` call was missing.
    #[error("{0}")]
    NoGradients(String),
    /// A caller-supplied callback reported failure or returned a non-finite value.
    #[error("{0}")]
    CallbackFailed(String),
    /// Checkpoint bytes that are not a well-formed checkpoint.
    #[error("{0}")]
    InvalidCheckpoint(String),
    /// A well-formed checkpoint that does not fit the built optimizer.
    #[error("{0}")]
    CheckpointMismatch(String),
    /// A request for memory that could not be satisfied.
    #[error("{0}")]
    OutOfMemory(String),
    /// A gradient held NaN or an infinity while the non-finite guard is on.
    #[error("{0}")]
    NonFiniteGradient(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The device engine is unavailable (no driver, no NVRTC, no such GPU, a build without the
    /// feature) or a device operation failed; the message says which.
    #[error("{0}")]
    Device(String),
    /// A bug in libadamw: an invariant the code relies on did not hold.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl Error {
    /// A load's error, saying that nothing was loaded: the optimizer is as it was. The errors of
    /// a load's arguments (NULL, not built) are left as they are.
    pub fn load_refused(self) -> Error {
        let note = |message: String| format!("the load was refused and nothing changed: {message}");
        match self {
            Error::CheckpointMismatch(m) => Error::CheckpointMismatch(note(m)),
            Error::InvalidCheckpoint(m) => Error::InvalidCheckpoint(note(m)),
            Error::InvalidConfig(m) => Error::InvalidConfig(note(m)),
            Error::Io(m) => Error::Io(note(m)),
            Error::OutOfMemory(m) => Error::OutOfMemory(note(m)),
            other => other,
        }
    }
}

/// The result of a fallible call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand used by validation code: `invalid!("...", args)` builds an `Error::InvalidArgument`.
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::InvalidArgument(format!($($arg)*)) };
}
pub(crate) use invalid;
