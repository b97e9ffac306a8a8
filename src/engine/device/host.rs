//! The device kernels compiled for the host (`host_launch.cpp`, built by build.rs with the
//! `host-kernels` feature): a [`Backend`] whose memory is host memory and whose launches run
//! every block and thread of the grid in turn on the calling thread. Slow, and exactly the
//! kernels' arithmetic and indexing: the tests run the conformance cases on it.

use super::{Backend, Kernel};
use crate::error::{Error, Result};

unsafe extern "C" {
    fn adamw_host_step(params: *const u8, grid: u32, block: u32);
    fn adamw_host_leaf_sums(params: *const u8, grid: u32, block: u32);
    fn adamw_host_first_non_finite(params: *const u8, grid: u32, block: u32);
    fn adamw_host_group_lanes(params: *const u8, grid: u32, block: u32);
    fn adamw_host_task_sums(params: *const u8, grid: u32, block: u32);
}

/// Host memory standing in for a device's.
pub(crate) struct HostBackend;

/// A host allocation, 16-byte aligned (every kernel access is at most 8 bytes wide), reached
/// only through its raw pointer (as a device's memory is, through its address), freed on drop.
pub(crate) struct HostBuffer(*mut [u128]);

// SAFETY: the buffer owns its memory; nothing else holds a reference to it.
unsafe impl Send for HostBuffer {}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::into_raw in `alloc` and is freed once, here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

impl Backend for HostBackend {
    type Buffer = HostBuffer;

    fn alloc(&self, bytes: usize) -> Result<HostBuffer> {
        let words = bytes.max(1).div_ceil(16);
        let mut v = Vec::new();
        v.try_reserve_exact(words).map_err(|_| Error::OutOfMemory(format!("{bytes} bytes of device memory")))?;
        v.resize(words, 0);
        Ok(HostBuffer(Box::into_raw(v.into_boxed_slice())))
    }

    fn address(&self, buffer: &HostBuffer) -> u64 {
        buffer.0.cast::<u128>() as u64
    }

    unsafe fn upload(&self, address: u64, data: &[u8]) -> Result<()> {
        // SAFETY: the caller guarantees `address` starts `data.len()` bytes of this device's
        // memory, which is host memory; a buffer of ours or a caller's never overlaps `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), address as *mut u8, data.len()) };
        Ok(())
    }

    unsafe fn download(&self, address: u64, out: &mut [u8]) -> Result<()> {
        // SAFETY: as in `upload`.
        unsafe { std::ptr::copy_nonoverlapping(address as *const u8, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    unsafe fn copy(&self, to: u64, from: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller guarantees both ranges, which do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, bytes) };
        Ok(())
    }

    fn set_stream(&mut self, _stream: u64) {} // every call runs to its end before it returns

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    unsafe fn launch(&self, kernel: Kernel, grid: u32, block: u32, params: &[u8]) -> Result<()> {
        let launch = match kernel {
            Kernel::Step => adamw_host_step,
            Kernel::LeafSums => adamw_host_leaf_sums,
            Kernel::FirstNonFinite => adamw_host_first_non_finite,
            Kernel::GroupLanes => adamw_host_group_lanes,
            Kernel::TaskSums => adamw_host_task_sums,
        };
        // SAFETY: the caller guarantees `params` and the memory it points at; the launcher copies
        // the struct before using it, and runs the whole grid before it returns.
        unsafe { launch(params.as_ptr(), grid, block) };
        Ok(())
    }
}
