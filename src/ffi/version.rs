//! The versions of the library actually linked.

use std::ffi::c_char;

use super::types::ADAMW_ABI_VERSION;

/// ADAMW_ABI_VERSION of the library actually linked; compare with the header's macro.
/// Threads: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn adamw_abi_version() -> u32 {
    ADAMW_ABI_VERSION
}

/// The library version ("MAJOR.MINOR.PATCH"), a static NUL-terminated string; never free it.
/// Threads: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn adamw_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
