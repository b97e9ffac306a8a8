//! Every check of a pointer the caller passes, before it becomes a reference. The one thing we
//! cannot check is that memory the caller points at really holds `len` elements: that is the
//! caller's promise, stated in the header.

use std::ffi::{CStr, c_char, c_void};
use std::mem::{align_of, size_of};

use super::status::{FfiError, adamw_status};
use super::types::ADAMW_MAX_NDIM;
use crate::dtype::{DType, Element, Exclusive, Shared, TensorMut, TensorRef, with_element};

/// The checks every caller pointer passes before it becomes a slice: `len` elements of `size`
/// bytes (aligned to `align`) at `ptr`, non-NULL unless empty, within isize::MAX bytes. Returns
/// whether there is anything to read. `what` names the argument; it is built only for an error,
/// so that a step's checks allocate nothing.
pub fn check_parts<P>(
    ptr: *const P,
    len: usize,
    size: usize,
    align: usize,
    what: impl Fn() -> String,
) -> Result<bool, FfiError> {
    if len == 0 {
        return Ok(false);
    }
    if ptr.is_null() {
        return Err(FfiError::new(adamw_status::NullArgument, format!("`{}` is NULL but its length is {len}", what())));
    }
    if !(ptr as usize).is_multiple_of(align) {
        return Err(FfiError::invalid(format!("`{}` is not aligned to {align} bytes", what())));
    }
    if len.checked_mul(size).is_none_or(|bytes| bytes > isize::MAX as usize) {
        return Err(FfiError::new(adamw_status::OutOfMemory, format!("`{}` length {len} overflows", what())));
    }
    Ok(true)
}

fn check_raw<T>(ptr: *const T, len: usize, what: &str) -> Result<bool, FfiError> {
    check_parts(ptr, len, size_of::<T>(), align_of::<T>(), || what.to_string())
}

/// A read-only slice of `len` elements at `ptr`; `(NULL, 0)` and `(anything, 0)` are empty.
///
/// # Safety
/// Unless `len` is 0, `ptr` must point at `len` initialized elements that stay valid and
/// unmodified for `'a`.
pub unsafe fn slice<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], FfiError> {
    if !check_raw(ptr, len, what)? {
        return Ok(&[]);
    }
    // SAFETY: check_raw verified non-NULL, alignment and a byte size within isize::MAX; the
    // caller guarantees the memory holds `len` elements for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A mutable slice of `len` elements at `ptr`.
///
/// # Safety
/// As for [`slice`], and no other reference to that memory may exist for `'a`.
pub unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize, what: &str) -> Result<&'a mut [T], FfiError> {
    if !check_raw(ptr, len, what)? {
        return Ok(&mut []);
    }
    // SAFETY: as in `slice`; exclusivity is the caller's (and, for apply_gradients, checked by
    // `check_disjoint`).
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` must be NULL or point at a NUL-terminated string valid for `'a`.
pub unsafe fn utf8<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|_| FfiError::invalid(format!("`{what}` is not valid UTF-8")))
}

/// A byte range of caller memory, whether the call writes it, and where it came from (for the
/// message when two overlap): the index of its entry and the field, e.g. `data`.
#[derive(Debug, Clone, Copy)]
pub struct ByteRange {
    pub start: usize,
    pub end: usize,
    pub written: bool,
    pub entry: usize,
    pub field: &'static str,
}

impl ByteRange {
    pub fn of<T>(ptr: *const T, len: usize, written: bool, entry: usize, field: &'static str) -> Self {
        let start = ptr as usize;
        ByteRange { start, end: start.saturating_add(len.saturating_mul(size_of::<T>())), written, entry, field }
    }
}

/// Fails when a written range overlaps any other range (a `&mut` and a `&` over the same bytes
/// would be undefined behaviour), naming both with `describe` (e.g. `entries[1].data (variable
/// 0, `dense/kernel`)`). Sorts `ranges` in place; allocates nothing unless it fails.
pub fn check_disjoint(ranges: &mut [ByteRange], describe: impl Fn(&ByteRange) -> String) -> Result<(), FfiError> {
    ranges.sort_unstable_by_key(|r| r.start);
    // The ranges seen so far that reach furthest, of any kind and of the written ones.
    let (mut furthest_any, mut furthest_written): (Option<usize>, Option<usize>) = (None, None);
    let end = |i: Option<usize>| i.map_or(0, |i: usize| ranges[i].end);
    for (i, r) in ranges.iter().enumerate().filter(|(_, r)| r.end > r.start) {
        let clash = if r.written && r.start < end(furthest_any) {
            furthest_any
        } else if r.start < end(furthest_written) {
            furthest_written
        } else {
            None
        };
        if let Some(other) = clash {
            let (first, second) =
                if ranges[other].entry <= r.entry { (&ranges[other], r) } else { (r, &ranges[other]) };
            return Err(FfiError::invalid(format!(
                "{} overlaps {}: a buffer the call writes must share no byte with another buffer of the call (every variable needs its own memory)",
                describe(first),
                describe(second)
            )));
        }
        if r.end > end(furthest_any) {
            furthest_any = Some(i);
        }
        if r.written && r.end > end(furthest_written) {
            furthest_written = Some(i);
        }
    }
    Ok(())
}

/// Writes `bytes` to a caller buffer with the size-query convention: `*out_len` receives the
/// length; `buf` NULL with `cap` 0 only asks for it; a too-small buffer is BUFFER_TOO_SMALL and
/// receives nothing. With `nul`, a NUL is appended (not counted in the length).
///
/// # Safety
/// `buf` must be NULL or point at `cap` writable bytes; `out_len` NULL or a writable size_t.
pub unsafe fn write_out(
    bytes: &[u8],
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    nul: bool,
) -> Result<(), FfiError> {
    if out_len.is_null() {
        return Err(FfiError::null("out_len"));
    }
    if buf.is_null() && cap > 0 {
        return Err(FfiError::null("buf"));
    }
    let needed = bytes.len() + usize::from(nul);
    // SAFETY: non-NULL; the caller passes a writable size_t.
    unsafe { *out_len = bytes.len() };
    if buf.is_null() {
        return Ok(());
    }
    if cap < needed {
        return Err(FfiError::new(
            adamw_status::BufferTooSmall,
            format!("the buffer holds {cap} bytes; {needed} are needed"),
        ));
    }
    // SAFETY: `buf` is non-NULL with `cap >= needed` writable bytes (caller's contract), and
    // cannot overlap `bytes`, which we own.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
        if nul {
            *buf.add(bytes.len()) = 0;
        }
    }
    Ok(())
}

/// Writes one value to a required out-parameter.
///
/// # Safety
/// `out` must be NULL or point at a writable `T`.
pub unsafe fn write<T>(out: *mut T, value: T, what: &str) -> Result<(), FfiError> {
    if out.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// A shape of `ndim` dimensions.
///
/// # Safety
/// `shape` must be NULL or point at `ndim` elements.
pub unsafe fn shape_of<'a>(shape: *const usize, ndim: usize, what: &str) -> Result<&'a [usize], FfiError> {
    if ndim > ADAMW_MAX_NDIM {
        return Err(FfiError::invalid(format!(
            "`{what}` has {ndim} dimensions; at most {ADAMW_MAX_NDIM} are supported"
        )));
    }
    // SAFETY: forwarded contract.
    unsafe { slice(shape, ndim, what) }
}

/// `len` elements of `dtype` at `data`, read-only.
///
/// # Safety
/// `data` must be NULL or point at `len` elements of `dtype`, as for [`slice`].
pub unsafe fn tensor_ref<'a>(
    dtype: DType,
    data: *const c_void,
    len: usize,
    what: &str,
) -> Result<TensorRef<'a>, FfiError> {
    unsafe fn typed<'a, T: Element>(data: *const c_void, len: usize, what: &str) -> Result<TensorRef<'a>, FfiError> {
        // SAFETY: forwarded contract.
        Ok(T::wrap(unsafe { slice(data.cast::<T>(), len, what) }?))
    }
    // SAFETY: forwarded contract.
    with_element!(dtype, T => unsafe { typed::<T>(data, len, what) })
}

/// `len` elements of `dtype` at `data`, for writing.
///
/// # Safety
/// As for [`tensor_ref`], and the memory must not be referenced elsewhere for `'a`.
pub unsafe fn tensor_mut<'a>(
    dtype: DType,
    data: *mut c_void,
    len: usize,
    what: &str,
) -> Result<TensorMut<'a>, FfiError> {
    unsafe fn typed<'a, T: Element>(data: *mut c_void, len: usize, what: &str) -> Result<TensorMut<'a>, FfiError> {
        // SAFETY: forwarded contract.
        Ok(T::wrap(unsafe { slice_mut(data.cast::<T>(), len, what) }?))
    }
    // SAFETY: forwarded contract.
    with_element!(dtype, T => unsafe { typed::<T>(data, len, what) })
}

/// An empty tensor of `dtype` (what a slice of a checked entry falls back to; never used).
pub fn empty_mut<'a>(dtype: DType) -> TensorMut<'a> {
    with_element!(dtype, T => T::wrap::<Exclusive<'a>>(&mut []))
}

/// An empty read-only tensor of `dtype`.
pub fn empty_ref<'a>(dtype: DType) -> TensorRef<'a> {
    with_element!(dtype, T => T::wrap::<Shared<'a>>(&[]))
}
