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
}

/// Host memory standing in for a device's.
pub(crate) struct HostBackend;

/// A host allocation, 16-byte aligned like a device allocation's start (and more: every kernel
/// access is at most 8 bytes wide).
pub(crate) struct HostBuffer(Vec<u128>);

impl HostBuffer {
    fn len(&self) -> usize {
        self.0.len() * 16
    }
}

fn range(buffer: &HostBuffer, offset: usize, len: usize) -> Result<std::ops::Range<usize>> {
    let end = offset.checked_add(len).filter(|&end| end <= buffer.len());
    end.map(|end| offset..end)
        .ok_or_else(|| Error::Internal(format!("{len} bytes at {offset} of a {}-byte device buffer", buffer.len())))
}

impl Backend for HostBackend {
    type Buffer = HostBuffer;

    fn alloc(&self, bytes: usize) -> Result<HostBuffer> {
        let words = bytes.max(1).div_ceil(16);
        let mut v = Vec::new();
        v.try_reserve_exact(words).map_err(|_| Error::OutOfMemory(format!("{bytes} bytes of device memory")))?;
        v.resize(words, 0);
        Ok(HostBuffer(v))
    }

    fn address(&self, buffer: &HostBuffer) -> u64 {
        buffer.0.as_ptr() as u64
    }

    fn upload(&self, buffer: &mut HostBuffer, offset: usize, data: &[u8]) -> Result<()> {
        let r = range(buffer, offset, data.len())?;
        // SAFETY: `r` lies within the buffer's bytes (checked), which are initialized u128s.
        let dst = unsafe { std::slice::from_raw_parts_mut(buffer.0.as_mut_ptr().cast::<u8>(), buffer.len()) };
        dst[r].copy_from_slice(data);
        Ok(())
    }

    fn download(&self, buffer: &HostBuffer, offset: usize, out: &mut [u8]) -> Result<()> {
        let r = range(buffer, offset, out.len())?;
        // SAFETY: as in `upload`.
        let src = unsafe { std::slice::from_raw_parts(buffer.0.as_ptr().cast::<u8>(), buffer.len()) };
        out.copy_from_slice(&src[r]);
        Ok(())
    }

    fn launch(&self, kernel: Kernel, grid: u32, block: u32, params: &[u8]) -> Result<()> {
        let launch = match kernel {
            Kernel::Step => adamw_host_step,
            Kernel::LeafSums => adamw_host_leaf_sums,
            Kernel::FirstNonFinite => adamw_host_first_non_finite,
        };
        // SAFETY: `params` holds the bytes of the kernel's parameter struct (the engine passes
        // the matching abi struct), whose addresses point into buffers of this device that the
        // engine keeps alive for the call; the launcher copies the struct before using it.
        unsafe { launch(params.as_ptr(), grid, block) };
        Ok(())
    }
}
