//! The opaque `adamw_optimizer` handle: an optimizer behind a mutex, so that calls on one handle
//! from several threads are serialized, never interleaved.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::guard::guard;
use super::slice::ByteRange;
use super::status::{FfiError, adamw_status};
use super::types::adamw_gradient;
use crate::optimizer::Optimizer;

/// An optimizer. Opaque: create it with `adamw_optimizer_new` or
/// `adamw_optimizer_from_config_json`, free it with `adamw_optimizer_free`.
/// (Not `repr(C)`: the header declares it as an incomplete struct.)
pub struct adamw_optimizer {
    _private: [u8; 0],
}

/// Tells a live handle from a pointer that is not one (or was freed, most of the time).
const MAGIC: u64 = 0x6164_616d_772d_6f70; // "adamw-op"

// `repr(C)` puts `magic` first, so that telling a handle from a foreign pointer reads only the
// pointer's first eight bytes.
#[repr(C)]
pub(crate) struct Handle {
    magic: u64,
    state: Mutex<State>,
    /// The thread holding `state`, so that a callback calling back into its own optimizer gets
    /// BUSY instead of a deadlock.
    holder: AtomicUsize,
}

pub(crate) struct State {
    pub optimizer: Optimizer,
    /// Scratch for `apply_gradients`, reserved at build: a copy of the caller's entries and
    /// the byte ranges of the overlap check.
    pub entries: Vec<adamw_gradient>,
    pub ranges: Vec<ByteRange>,
}

impl State {
    /// Reserves the step's scratch for `variables` entries, so that a step allocates nothing: a
    /// copy of the entries, and up to four byte ranges per entry (data, dense or values,
    /// indices).
    pub fn reserve_step_scratch(&mut self, variables: usize) -> Result<(), FfiError> {
        let oom = |_| FfiError::new(adamw_status::OutOfMemory, "too many variables");
        self.entries.try_reserve_exact(variables.saturating_sub(self.entries.len())).map_err(oom)?;
        let ranges = variables.saturating_mul(4);
        self.ranges.try_reserve_exact(ranges.saturating_sub(self.ranges.len())).map_err(oom)
    }
}

fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

/// The locked state of a handle; releasing it clears the holder.
pub(crate) struct Locked<'a> {
    guard: MutexGuard<'a, State>,
    holder: &'a AtomicUsize,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.holder.store(0, Ordering::Release);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Handle {
    pub fn into_raw(optimizer: Optimizer) -> *mut adamw_optimizer {
        let handle = Box::new(Handle {
            magic: MAGIC,
            state: Mutex::new(State { optimizer, entries: Vec::new(), ranges: Vec::new() }),
            holder: AtomicUsize::new(0),
        });
        Box::into_raw(handle).cast()
    }

    /// Takes the lock, waiting for another thread's call to finish.
    pub fn lock(&self) -> Result<Locked<'_>, FfiError> {
        let me = thread_token();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(FfiError::new(
                adamw_status::Busy,
                "this optimizer was called from inside one of its own callbacks; that call cannot run",
            ));
        }
        let guard = self.state.lock().map_err(|_| {
            FfiError::new(
                adamw_status::Internal,
                "the optimizer is unusable after an internal error in an earlier call",
            )
        })?;
        self.holder.store(me, Ordering::Release);
        Ok(Locked { guard, holder: &self.holder })
    }
}

/// The handle behind a caller's pointer.
///
/// # Safety
/// `ptr` must be NULL or a pointer returned by this library's create functions and not yet freed.
pub(crate) unsafe fn get<'a>(ptr: *const adamw_optimizer) -> Result<&'a Handle, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null("optimizer"));
    }
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<Handle>()) {
        return Err(FfiError::invalid("`optimizer` is not a libadamw optimizer handle"));
    }
    // SAFETY: non-NULL and aligned; by the caller's contract it points at a live Handle.
    let handle = unsafe { &*ptr.cast::<Handle>() };
    if handle.magic != MAGIC {
        return Err(FfiError::invalid("`optimizer` is not a libadamw optimizer handle (or was freed)"));
    }
    Ok(handle)
}

/// Frees a handle.
///
/// # Safety
/// As for [`get`]; no other call on the handle may be running or follow.
pub(crate) unsafe fn free(ptr: *mut adamw_optimizer) -> Result<(), FfiError> {
    // SAFETY: forwarded contract.
    let handle = unsafe { get(ptr) }?;
    // Freeing from inside one of its callbacks, or while another thread's call runs, would free
    // memory still in use: refuse, and leak rather than corrupt.
    let in_use = || {
        FfiError::new(
            adamw_status::Busy,
            "adamw_optimizer_free: the optimizer is in use (called from its own callback, or during another thread's call); it was not freed",
        )
    };
    if handle.holder.load(Ordering::Acquire) == thread_token() {
        return Err(in_use());
    }
    match handle.state.try_lock() {
        Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => {}
        Err(std::sync::TryLockError::WouldBlock) => return Err(in_use()),
    }
    // SAFETY: `get` verified a live handle made by Box::into_raw in `into_raw`.
    let mut handle = unsafe { Box::from_raw(ptr.cast::<Handle>()) };
    // Volatile so the store survives the free: a later call with this pointer most likely sees 0.
    // SAFETY: `handle.magic` is a valid, aligned u64 we own.
    unsafe { std::ptr::write_volatile(&mut handle.magic, 0) };
    drop(handle);
    Ok(())
}

/// Runs `body` on the locked optimizer of a handle.
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
pub(crate) unsafe fn with_optimizer(
    optimizer: *const adamw_optimizer,
    body: impl FnOnce(&mut State) -> Result<(), FfiError>,
) -> adamw_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let handle = unsafe { get(optimizer) }?;
        let mut state = handle.lock()?;
        body(&mut state)
    })
}
