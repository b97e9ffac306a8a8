//! Buffers for the optimizer state the step streams through, placed on cache lines and, when
//! large, at a chosen offset within a page.
//!
//! Where malloc puts a buffer decides how fast a loop over it runs. A 64-byte vector load of a
//! buffer at malloc's 16-byte offset straddles two cache lines. And a load whose address agrees
//! in its low 12 bits with a store still in flight waits for that store (4K aliasing): when the
//! state's buffers sit a little past or before the caller's within a page, loads of one wait on
//! stores to the other. `tools/bench/page_offsets.c` times a plain float32 loop over `w`, `g`,
//! `m`, `v` at chosen page offsets, against all four at offset 0 (AMD EPYC Zen 4, one thread,
//! 64K and 1M elements, two runs): `m`, `v` 64 bytes past `w`, `g` 1.11–1.19×; at 64 with `w`,
//! `g` at 16 1.24–1.37×; 64 bytes before 1.21–1.49×; `m` at 1024 and `v` at 2048 0.96–1.01×.
//! So a large slot starts at an offset within a page of its own ([`AlignedVec::zeros`]), chosen
//! by the engine far from the other slots and from the offsets callers' allocators give.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fmt;
use std::ptr::NonNull;

use crate::dtype::{DType, Element, Storage, Tensor, TensorMut, TensorRef, map_dtype, with_element};
use crate::error::{Error, Result};

/// The alignment of every buffer here: a cache line.
pub(crate) const ALIGN: usize = 64;
const PAGE: usize = 4096;
/// Buffers of at least this many bytes are placed at their page offset (smaller ones, where a
/// page of padding would be a large share, only on a cache line).
const PLACED_FROM: usize = 64 << 10;

/// `len` elements in a heap buffer that starts on a cache line (a large one at its chosen
/// offset within a page), zeroed when allocated.
pub(crate) struct AlignedVec<T> {
    ptr: NonNull<T>,
    len: usize,
    /// The allocation: its start and layout (none for `len` = 0).
    allocation: Option<(NonNull<u8>, Layout)>,
}

// SAFETY: an AlignedVec owns its elements as a Vec does; sending or sharing it sends or
// shares them.
unsafe impl<T: Send> Send for AlignedVec<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for AlignedVec<T> {}

impl<T: Element> AlignedVec<T> {
    /// `len` zeros, or `OutOfMemory`. A buffer of [`PLACED_FROM`] bytes or more starts
    /// `page_offset` bytes (rounded down to a cache line) into a page.
    pub fn zeros(len: usize, page_offset: usize) -> Result<Self> {
        if len == 0 {
            return Ok(AlignedVec { ptr: NonNull::dangling(), len: 0, allocation: None });
        }
        let oom = || Error::OutOfMemory(format!("cannot allocate {len} {} elements", T::DTYPE.name()));
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(oom)?;
        let (align, offset) =
            if bytes >= PLACED_FROM { (PAGE, page_offset % PAGE / ALIGN * ALIGN) } else { (ALIGN, 0) };
        let layout = Layout::from_size_align(bytes.checked_add(offset).ok_or_else(oom)?, align).map_err(|_| oom())?;
        // SAFETY: the layout's size is not zero (len > 0, and no Element is zero-sized).
        let start = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or_else(oom)?;
        // SAFETY: `offset + bytes` is the allocation's size, so the elements lie within it; the
        // offset is a multiple of 64, so they are aligned for every Element type.
        let ptr = unsafe { start.add(offset) }.cast::<T>();
        // All-zero bits are a valid value of every Element type (+0.0 for the floats, 0 for
        // int64), so the zeroed buffer holds `len` initialized elements.
        Ok(AlignedVec { ptr, len, allocation: Some((start, layout)) })
    }
}

impl<T> std::ops::Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialized elements (or is dangling and aligned for
        // `len` = 0), owned by self, borrowed shared for the reference's life.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed exclusively through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for AlignedVec<T> {
    fn drop(&mut self) {
        if let Some((start, layout)) = self.allocation {
            // SAFETY: allocated by `alloc_zeroed` with this layout, and not freed before (the
            // elements need no drop: Element types are Copy).
            unsafe { dealloc(start.as_ptr(), layout) }
        }
    }
}

impl<T> fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedVec({} elements)", self.len)
    }
}

/// Owned storage on cache-line boundaries: [`AlignedVec`].
#[derive(Debug)]
pub(crate) struct Aligned;

impl Storage for Aligned {
    type Of<T: Element> = AlignedVec<T>;
}

/// An optimizer slot's elements, on a cache-line boundary.
pub(crate) type SlotBuf = Tensor<Aligned>;

impl SlotBuf {
    /// `len` zeros of `dtype` (at `page_offset` when large: [`AlignedVec::zeros`]), or
    /// `OutOfMemory`.
    pub(crate) fn zeros(dtype: DType, len: usize, page_offset: usize) -> Result<Self> {
        with_element!(dtype, T => Ok(T::wrap::<Aligned>(AlignedVec::zeros(len, page_offset)?)))
    }

    /// The elements, read-only.
    pub(crate) fn as_ref(&self) -> TensorRef<'_> {
        map_dtype!(self, x => &**x)
    }

    /// The elements, for writing.
    pub(crate) fn as_mut(&mut self) -> TensorMut<'_> {
        map_dtype!(self, x => &mut **x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_on_a_cache_line_or_their_page_offset_and_hold_zeros() {
        for len in [0usize, 1, 3, 1000, 16 << 10, 1 << 20] {
            for dtype in [DType::F32, DType::F64, DType::I64, DType::BF16, DType::F16] {
                let mut buf = SlotBuf::zeros(dtype, len, 1000).unwrap();
                assert_eq!(buf.as_ref().len(), len);
                assert!(buf.as_ref().to_le_bytes().iter().all(|&b| b == 0));
                if let TensorMut::F32(x) = buf.as_mut() {
                    x.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
                    assert!(x.iter().enumerate().all(|(i, v)| *v == i as f32));
                }
                if len > 0 {
                    let address = with_element!(dtype, T => T::unwrap(buf.as_ref()).map(|x| x.as_ptr() as usize))
                        .expect("the slot has its dtype");
                    assert_eq!(address % ALIGN, 0, "{len} {dtype:?}");
                    if len * dtype.size() >= PLACED_FROM {
                        assert_eq!(address % PAGE, 960, "{len} {dtype:?}: 1000 rounded down to a cache line");
                    }
                }
            }
        }
    }
}
