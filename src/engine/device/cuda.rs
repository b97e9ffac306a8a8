//! A CUDA GPU as a [`Backend`], through cudarc: the driver and NVRTC are loaded at run time, the
//! kernels compiled by NVRTC when an optimizer is created, for the GPU's own architecture.
//!
//! Nothing here panics for a missing driver or NVRTC: both are looked for first, and a missing
//! one is an [`Error::Device`] saying so. Every copy and launch goes to one stream (the caller's,
//! or the default one), so each is ordered after the ones before it.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, result, sys};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::{Backend, KERNEL_SOURCE, Kernel};
use crate::error::{Error, Result};

/// NVRTC's options for the kernels, besides the architecture: nothing contracted into a fused
/// multiply-add, IEEE division and square root, float32 flushed to zero as TF's CPU kernels do
/// (`kernels.cu` says why each matters).
pub(crate) const NVRTC_OPTIONS: [&str; 5] =
    ["--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=true", "--std=c++17"];

fn device_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("CUDA: {what} failed: {e:?}"))
}

/// Whether NVRTC (libnvrtc.so.12) can be loaded.
pub(crate) fn nvrtc_present() -> bool {
    // SAFETY: only tries to load the library by its names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver (libcuda.so.1) can be loaded.
pub(crate) fn driver_present() -> bool {
    // SAFETY: only tries to load the library by its names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The kernels as PTX for virtual architecture `arch` (such as "compute_90"), with the
/// production options.
pub(crate) fn compile_ptx(arch: &str) -> Result<String> {
    if !nvrtc_present() {
        return Err(Error::Device(
            "NVRTC (libnvrtc.so.12) was not found: install the CUDA toolkit's NVRTC or the nvidia-cuda-nvrtc-cu12 wheel and put its lib folder on LD_LIBRARY_PATH".into(),
        ));
    }
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    let opts = CompileOptions { options, name: Some("kernels.cu".into()), ..Default::default() };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts).map_err(|e| device_error("NVRTC", e))?;
    Ok(ptx.to_src())
}

/// A CUDA GPU: its primary context, the kernels loaded into it.
pub(crate) struct CudaBackend {
    ctx: Arc<CudaContext>,
    /// The caller's `CUstream` (0: the legacy default stream), as an integer: the backend only
    /// passes it to the driver.
    stream: u64,
    _module: Arc<CudaModule>,
    functions: Vec<CudaFunction>,
}

/// An allocation in the GPU's memory, freed on drop.
pub(crate) struct CudaBuffer {
    ptr: sys::CUdeviceptr,
    ctx: Arc<CudaContext>,
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        // A failure to free leaves nothing to do: the context reports it on its next call.
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `ptr` came from malloc_sync in this context and is freed once, here.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

impl CudaBackend {
    /// The GPU of `ordinal`, with the kernels compiled for it.
    pub fn new(ordinal: u32) -> Result<Self> {
        if !driver_present() {
            return Err(Error::Device(
                "the CUDA driver (libcuda.so.1) was not found: this machine has no usable NVIDIA GPU driver".into(),
            ));
        }
        // cudarc panics on a few failures of its own; none may reach the caller.
        std::panic::catch_unwind(|| Self::open(ordinal))
            .unwrap_or_else(|_| Err(Error::Device(format!("CUDA: opening GPU {ordinal} failed"))))
    }

    fn open(ordinal: u32) -> Result<Self> {
        let count = CudaContext::device_count().map_err(|e| device_error("cuDeviceGetCount", e))?;
        if ordinal as i64 >= count as i64 {
            return Err(Error::Device(format!("CUDA: no GPU {ordinal}: this machine has {count}")));
        }
        let ctx = CudaContext::new(ordinal as usize).map_err(|e| device_error("creating the context", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| device_error("cuDeviceGetAttribute", e))?;
        let ptx = compile_ptx(&format!("compute_{major}{minor}"))?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| device_error("loading the kernels", e))?;
        let functions = Kernel::ALL
            .iter()
            .map(|k| module.load_function(k.name()).map_err(|e| device_error(k.name(), e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(CudaBackend { ctx, stream: 0, _module: module, functions })
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| device_error("cuCtxSetCurrent", e))
    }

    fn cu_stream(&self) -> sys::CUstream {
        self.stream as sys::CUstream
    }
}

impl Backend for CudaBackend {
    type Buffer = CudaBuffer;

    fn alloc(&self, bytes: usize) -> Result<CudaBuffer> {
        self.bind()?;
        let bytes = bytes.max(1);
        // SAFETY: the context is current on this thread.
        let ptr = unsafe { result::malloc_sync(bytes) }.map_err(|e| device_error("cuMemAlloc", e))?;
        let buffer = CudaBuffer { ptr, ctx: self.ctx.clone() };
        // SAFETY: `ptr` holds `bytes` bytes.
        unsafe { result::memset_d8_sync(ptr, 0, bytes) }.map_err(|e| device_error("cuMemsetD8", e))?;
        Ok(buffer)
    }

    fn address(&self, buffer: &CudaBuffer) -> u64 {
        buffer.ptr
    }

    unsafe fn upload(&self, address: u64, data: &[u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees the range is this context's memory. From pageable
        // memory the copy waits for the stream's earlier work and returns once `data` is read.
        unsafe { result::memcpy_htod_async(address, data, self.cu_stream()) }
            .map_err(|e| device_error("cuMemcpyHtoDAsync", e))
    }

    unsafe fn download(&self, address: u64, out: &mut [u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: as in `upload`; to pageable memory the copy returns once it is done.
        unsafe { result::memcpy_dtoh_async(out, address, self.cu_stream()) }
            .map_err(|e| device_error("cuMemcpyDtoHAsync", e))?;
        // SAFETY: the stream is the caller's live stream (or the default one).
        unsafe { result::stream::synchronize(self.cu_stream()) }.map_err(|e| device_error("cuStreamSynchronize", e))
    }

    unsafe fn copy(&self, to: u64, from: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees both ranges.
        unsafe { result::memcpy_dtod_async(to, from, bytes, self.cu_stream()) }
            .map_err(|e| device_error("cuMemcpyDtoDAsync", e))
    }

    fn set_stream(&mut self, stream: u64) {
        self.stream = stream;
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: the stream is the caller's live stream (or the default one).
        unsafe { result::stream::synchronize(self.cu_stream()) }.map_err(|e| device_error("cuStreamSynchronize", e))
    }

    unsafe fn launch(&self, kernel: Kernel, grid: u32, block: u32, params: &[u8]) -> Result<()> {
        self.bind()?;
        let function = &self.functions[Kernel::ALL.iter().position(|k| *k == kernel).unwrap_or(0)];
        let mut args = [params.as_ptr() as *mut std::ffi::c_void];
        // SAFETY: the function takes one parameter, the struct whose bytes `params` holds, which
        // the driver copies at the launch; the caller guarantees the memory it points at.
        unsafe {
            result::launch_kernel(
                function.cu_function(),
                (grid.max(1), 1, 1),
                (block, 1, 1),
                0,
                self.cu_stream(),
                &mut args,
            )
        }
        .map_err(|e| device_error(kernel.name(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles with NVRTC and the production options, and ptxas assembles it for
    /// sm_80 and sm_90. The test command installs NVRTC and ptxas and sets ADAMW_REQUIRE_NVRTC=1,
    /// so there a missing one fails; a plain `cargo test` where NVRTC cannot be loaded skips this
    /// test and says so.
    #[test]
    fn kernels_compile_with_nvrtc_and_assemble_for_sm80_and_sm90() {
        if !nvrtc_present() && std::env::var("ADAMW_REQUIRE_NVRTC").as_deref() != Ok("1") {
            eprintln!(
                "SKIPPED: NVRTC (libnvrtc.so.12) cannot be loaded: the kernels were not compiled (tools/test-all.sh installs it)"
            );
            return;
        }
        let ptxas = std::env::var("ADAMW_PTXAS").unwrap_or_else(|_| "ptxas".into());
        let dir = std::env::temp_dir().join(format!("adamw-ptx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for sm in ["80", "90"] {
            let ptx = compile_ptx(&format!("compute_{sm}"))
                .unwrap_or_else(|e| panic!("{e} (tools/ensure-cuda-tools.sh installs NVRTC and ptxas)"));
            for name in Kernel::ALL.map(Kernel::name) {
                assert!(ptx.contains(&format!(".entry {name}")), "no kernel {name} in the PTX");
            }
            // Nothing fused, nothing approximate: the arithmetic the CPU engine does.
            assert!(!ptx.contains("fma.rn"), "the PTX contracts operations into fused multiply-adds");
            assert!(!ptx.contains(".approx"), "the PTX has an approximate operation");
            let path = dir.join(format!("kernels_{sm}.ptx"));
            std::fs::write(&path, &ptx).unwrap();
            let out = std::process::Command::new(&ptxas)
                .args([&format!("-arch=sm_{sm}"), "-o"])
                .arg(dir.join(format!("kernels_{sm}.cubin")))
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("cannot run ptxas ({ptxas}): {e}; set ADAMW_PTXAS to its path"));
            assert!(out.status.success(), "ptxas -arch=sm_{sm} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Without a driver, opening a GPU is an error that says so, not a panic.
    #[test]
    fn a_missing_driver_is_an_error() {
        if driver_present() {
            eprintln!("SKIPPED: this machine has a CUDA driver");
            return;
        }
        match CudaBackend::new(0) {
            Err(Error::Device(message)) => assert!(message.contains("driver"), "{message}"),
            Err(e) => panic!("expected Error::Device, got {e:?}"),
            Ok(_) => panic!("a GPU opened without a driver"),
        }
    }
}
