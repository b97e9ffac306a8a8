//! The CUDA engine on a GPU: `cargo bench --bench device` (tools/gpu-check.sh runs it). Without a
//! CUDA GPU it says so and measures nothing.
//!
//! - Bandwidth: for 1M to 256M parameters and each mode (float32 plain, amsgrad, EMA; bfloat16
//!   with Keras' semantics and with a float32 master), the bytes a step must move per second
//!   (each array read or written once), against a device-to-device copy measured in the same run
//!   (read + write), as a ratio. Steps take device memory (`apply_gradients_on_device`).
//! - Host time: the time `apply_gradients_on_device` takes on the host for 100 variables of 1K
//!   (the step is enqueued; the device is synchronized only outside the timed loop).
use std::time::Instant;

use adamw::{Config, DType, Device, DeviceEntry, DeviceGradient, DeviceTensor, Optimizer, TensorRef, VariableSpec};
use cudarc::driver::{CudaContext, result};

/// A device allocation of `bytes`, filled from `host`.
struct Buffer {
    address: u64,
}

impl Buffer {
    fn new(host: &[u8]) -> Buffer {
        // SAFETY: a fresh allocation of `host.len()` bytes, filled from `host`.
        unsafe {
            let address = result::malloc_sync(host.len().max(1)).expect("cuMemAlloc");
            result::memcpy_htod_sync(address, host).expect("cuMemcpyHtoD");
            Buffer { address }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated by `new`, freed once.
        unsafe { result::free_sync(self.address) }.ok();
    }
}

fn as_bytes<T>(x: &[T]) -> &[u8] {
    // SAFETY: plain numbers, no padding.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), std::mem::size_of_val(x)) }
}

struct Mode {
    name: &'static str,
    dtype: DType,
    master: bool,
    config: Config,
    /// Bytes a step reads and writes per parameter.
    bytes_per_param: f64,
    /// Whether the step takes the report's gradient norms (`set_report_norms`): the same bytes
    /// moved, so the GB/s against the same mode without tells the report's cost.
    report: bool,
}

fn modes() -> Vec<Mode> {
    let base = Config::default();
    vec![
        Mode {
            name: "float32",
            dtype: DType::F32,
            master: false,
            config: base.clone(),
            bytes_per_param: 28.0,
            report: false,
        },
        Mode {
            name: "float32 amsgrad",
            dtype: DType::F32,
            master: false,
            config: Config { amsgrad: true, ..base.clone() },
            bytes_per_param: 36.0,
            report: false,
        },
        Mode {
            name: "float32 EMA",
            dtype: DType::F32,
            master: false,
            config: Config { use_ema: true, ..base.clone() },
            bytes_per_param: 36.0,
            report: false,
        },
        Mode {
            name: "bfloat16 (Keras)",
            dtype: DType::BF16,
            master: false,
            config: base.clone(),
            bytes_per_param: 14.0,
            report: false,
        },
        // gradient 2, master 4 + 4, m 4 + 4, v 4 + 4, values 2
        Mode {
            name: "bfloat16 + float32 master",
            dtype: DType::BF16,
            master: true,
            config: base,
            bytes_per_param: 28.0,
            report: false,
        },
        Mode {
            name: "float32 + report norms",
            dtype: DType::F32,
            master: false,
            config: Config::default(),
            bytes_per_param: 28.0,
            report: true,
        },
        Mode {
            name: "bfloat16 (Keras) + report norms",
            dtype: DType::BF16,
            master: false,
            config: Config::default(),
            bytes_per_param: 14.0,
            report: true,
        },
    ]
}

/// Seconds per call of `f`, the device synchronized after the calls.
fn time(ctx: &CudaContext, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    ctx.synchronize().expect("synchronize");
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    ctx.synchronize().expect("synchronize");
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    // SAFETY: only tries to load the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } || CudaContext::device_count().unwrap_or(0) == 0 {
        println!("SKIPPED: no CUDA driver or GPU on this machine; nothing measured");
        return;
    }
    let ctx = CudaContext::new(0).expect("GPU 0");
    println!("GPU: {}", ctx.name().unwrap_or_default());
    for log2 in [20u32, 24, 26, 28] {
        let n = 1usize << log2;
        // The copy: 1 GiB, or the size of one float32 tensor when larger.
        let copy_bytes = (n * 4).max(1 << 30);
        let (src, dst) = (Buffer::new(&vec![0u8; copy_bytes]), Buffer::new(&vec![0u8; copy_bytes]));
        let copy_s = time(&ctx, 10, || {
            // SAFETY: both buffers hold `copy_bytes`.
            unsafe { result::memcpy_dtod_sync(dst.address, src.address, copy_bytes) }.expect("copy");
        });
        let copy_gbs = 2.0 * copy_bytes as f64 / copy_s / 1e9;
        for mode in modes() {
            let host: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 - 500.0) * 1e-3).collect();
            let (values, gradient, size) = match mode.dtype {
                DType::BF16 => {
                    let b: Vec<half::bf16> = host.iter().map(|&x| half::bf16::from_f32(x)).collect();
                    (Buffer::new(as_bytes(&b)), Buffer::new(as_bytes(&b)), 2)
                }
                _ => (Buffer::new(as_bytes(&host)), Buffer::new(as_bytes(&host)), 4),
            };
            let _ = size;
            let mut opt = Optimizer::new(mode.config.clone()).expect("optimizer");
            opt.set_master_weights(mode.master).expect("master weights");
            opt.set_report_norms(mode.report);
            opt.set_device(Device::Cuda(0)).expect("the CUDA engine");
            let bf: Vec<half::bf16> = host.iter().map(|&x| half::bf16::from_f32(x)).collect();
            let initial = match mode.dtype {
                DType::BF16 => TensorRef::BF16(&bf),
                _ => TensorRef::F32(&host),
            };
            opt.build(&[VariableSpec::new("w", mode.dtype, &[n])], &[initial]).expect("build");
            let entry = DeviceEntry {
                variable: 0,
                values: DeviceTensor { dtype: mode.dtype, address: values.address, len: n },
                gradient: Some(DeviceGradient::Dense(DeviceTensor {
                    dtype: mode.dtype,
                    address: gradient.address,
                    len: n,
                })),
            };
            let step_s = time(&ctx, 20, || {
                // SAFETY: both buffers hold `n` elements of the dtype, on this optimizer's GPU.
                unsafe { opt.apply_gradients_on_device(&[entry]) }.expect("step");
            });
            let step_gbs = mode.bytes_per_param * n as f64 / step_s / 1e9;
            println!(
                "{:>5}M params  {:<26} {:>8.3} ms  {:>7.1} GB/s  copy {:>7.1} GB/s  ratio {:.2}",
                n >> 20,
                mode.name,
                step_s * 1e3,
                step_gbs,
                copy_gbs,
                step_gbs / copy_gbs
            );
        }
    }
    // Host time of a step over 100 variables of 1K.
    let mut opt = Optimizer::new(Config::default()).expect("optimizer");
    opt.set_device(Device::Cuda(0)).expect("the CUDA engine");
    let specs: Vec<VariableSpec> = (0..100).map(|i| VariableSpec::new(format!("v{i}"), DType::F32, &[1024])).collect();
    opt.build(&specs, &[]).expect("build");
    let host = vec![0.01f32; 1024];
    let buffers: Vec<(Buffer, Buffer)> =
        (0..100).map(|_| (Buffer::new(as_bytes(&host)), Buffer::new(as_bytes(&host)))).collect();
    let entries: Vec<DeviceEntry<'_>> = buffers
        .iter()
        .enumerate()
        .map(|(i, (v, g))| DeviceEntry {
            variable: i,
            values: DeviceTensor { dtype: DType::F32, address: v.address, len: 1024 },
            gradient: Some(DeviceGradient::Dense(DeviceTensor { dtype: DType::F32, address: g.address, len: 1024 })),
        })
        .collect();
    // SAFETY: as above.
    unsafe { opt.apply_gradients_on_device(&entries) }.expect("step");
    ctx.synchronize().expect("synchronize");
    let reps = 1000;
    let start = Instant::now();
    for _ in 0..reps {
        // SAFETY: as above.
        unsafe { opt.apply_gradients_on_device(&entries) }.expect("step");
    }
    let host_us = start.elapsed().as_secs_f64() / reps as f64 * 1e6;
    ctx.synchronize().expect("synchronize");
    println!("host time of a step over 100 variables of 1K: {host_us:.2} us");
}
