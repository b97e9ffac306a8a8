//! Once built, a step allocates nothing: a counting global allocator watches apply_gradients in
//! each mode (dense, sparse after reserve_sparse, every clipping mode, EMA, amsgrad), on small
//! variables (always updated on the caller's thread) and on large ones, whose tasks run on the
//! pool's threads too (their allocations are counted process-wide, with the tests of this file
//! run one after another on the main thread: this test has no harness, so no other thread of
//! the process allocates while a check counts) or on the calling thread alone with
//! `threads = 1`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use adamw::ffi::*;
use adamw::{Config, DType, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};

struct Counting;

// Counted per thread: every step measured here runs on the calling thread (small variables, or
// threads = 1), while threads of a pool started elsewhere may allocate in the background.
thread_local!(static ALLOCATIONS: Cell<usize> = const { Cell::new(0) });

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    EVERY_THREAD.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn allocations_so_far() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = allocations_so_far();
    f();
    allocations_so_far() - before
}

/// Every thread's allocations: while a check runs, the only other threads are the pools'.
static EVERY_THREAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn allocations_on_any_thread_during(f: impl FnOnce()) -> usize {
    use std::sync::atomic::Ordering::SeqCst;
    let before = EVERY_THREAD.load(SeqCst);
    f();
    EVERY_THREAD.load(SeqCst) - before
}

fn check_mode(name: &str, config: Config, rows: usize) {
    let cols = 4;
    let n = rows * cols;
    let mut opt = Optimizer::new(config).unwrap();
    let init = vec![0.5f32; n];
    opt.build(
        &[VariableSpec::new("a", DType::F32, &[rows, cols]), VariableSpec::new("b", DType::F64, &[n])],
        &[TensorRef::F32(&init), TensorRef::F64(&vec![0.25f64; n])],
    )
    .unwrap();
    opt.reserve_sparse(64).unwrap();
    let (mut a, mut b) = (init.clone(), vec![0.25f64; n]);
    let grad_a = vec![0.1f32; n];
    let grad_b = vec![-0.2f64; n];
    let indices: Vec<i64> = (0..64).map(|i| (i * 7 % rows) as i64).collect();
    let values = vec![0.3f32; 64 * cols];
    let mut step = |sparse: bool| {
        let gradient = if sparse {
            Gradient::Sparse { indices: &indices, values: TensorRef::F32(&values) }
        } else {
            Gradient::Dense(TensorRef::F32(&grad_a))
        };
        let mut updates = [
            GradientEntry { variable: 0, values: TensorMut::F32(&mut a), gradient: Some(gradient) },
            GradientEntry {
                variable: 1,
                values: TensorMut::F64(&mut b),
                gradient: Some(Gradient::Dense(TensorRef::F64(&grad_b))),
            },
        ];
        opt.apply_gradients(&mut updates[..]).unwrap();
    };
    let mut measure = || {
        step(false); // warm-up
        step(true);
        for sparse in [false, true] {
            let count = allocations_on_any_thread_during(|| {
                for _ in 0..100 {
                    step(sparse);
                }
            });
            assert_eq!(
                count,
                0,
                "{name} ({}, {rows} rows): 100 steps allocated {count} times",
                if sparse { "sparse" } else { "dense" }
            );
        }
    };
    measure();
}

fn steps_allocate_nothing() {
    let modes = [
        ("plain", Config::default()),
        ("amsgrad", Config { amsgrad: true, ..Config::default() }),
        ("ema", Config { use_ema: true, ema_overwrite_frequency: Some(2), ..Config::default() }),
        ("clipnorm", Config { clipnorm: Some(0.5), ..Config::default() }),
        ("clipvalue", Config { clipvalue: Some(0.05), ..Config::default() }),
    ];
    for (name, config) in modes {
        check_mode(name, config.clone(), 16);
        check_mode(name, config.clone(), 100_000); // the process's shared pool
        check_mode(name, Config { threads: 3, ..config }, 100_000); // a pool of its own
    }
    // global_clipnorm needs one dtype across the step: float32 only.
    let mut opt = Optimizer::new(Config { global_clipnorm: Some(1.0), ..Config::default() }).unwrap();
    opt.build(&[VariableSpec::new("a", DType::F32, &[1000]), VariableSpec::new("b", DType::F32, &[10])], &[]).unwrap();
    let (mut a, mut b) = (vec![1.0f32; 1000], vec![1.0f32; 10]);
    let (ga, gb) = (vec![0.5f32; 1000], vec![0.5f32; 10]);
    let mut step = || {
        let mut updates = [
            GradientEntry {
                variable: 0,
                values: TensorMut::F32(&mut a),
                gradient: Some(Gradient::Dense(TensorRef::F32(&ga))),
            },
            GradientEntry {
                variable: 1,
                values: TensorMut::F32(&mut b),
                gradient: Some(Gradient::Dense(TensorRef::F32(&gb))),
            },
        ];
        opt.apply_gradients(&mut updates[..]).unwrap();
    };
    step();
    assert_eq!(allocations_during(step), 0, "global_clipnorm: a step allocated");
    c_abi_steps_allocate_nothing(false);
    // With threads = 1, large variables too are updated on the caller's thread, called from
    // any thread.
    for (name, config) in
        [("plain", Config::default()), ("ema+amsgrad", Config { use_ema: true, amsgrad: true, ..Config::default() })]
    {
        check_mode_outside_pool(name, Config { threads: 1, ..config });
    }
}

fn check_mode_outside_pool(name: &str, config: Config) {
    let n = 300_000;
    let mut opt = Optimizer::new(config).unwrap();
    opt.build(&[VariableSpec::new("a", DType::F32, &[n])], &[TensorRef::F32(&vec![0.5f32; n])]).unwrap();
    let mut a = vec![0.5f32; n];
    let g = vec![0.1f32; n];
    let mut step = || {
        let mut u = [GradientEntry {
            variable: 0,
            values: TensorMut::F32(&mut a),
            gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
        }];
        opt.apply_gradients(&mut u[..]).unwrap();
    };
    step();
    let count = allocations_during(|| (0..50).for_each(|_| step()));
    assert_eq!(count, 0, "{name}, threads = 1, {n} elements: 50 steps allocated {count} times");
}

/// Called from `steps_allocate_nothing` and, `on_device`, from `device_steps_allocate_nothing`:
/// a step through the C ABI, on the host or on the host-kernels device (whose memory is host
/// memory; the C ABI then makes its device entries on demand, and the sparse indices are given as
/// device memory).
fn c_abi_steps_allocate_nothing(on_device: bool) {
    let mut config = adamw_config_default();
    config.clipnorm = 1.0;
    config.amsgrad = 1;
    let mut opt = std::ptr::null_mut();
    let (shape_a, shape_b) = ([8usize, 4], [16usize]);
    let vars = [
        adamw_variable {
            name: c"a".as_ptr(),
            dtype: adamw_dtype::Float32 as u32,
            ndim: 2,
            shape: shape_a.as_ptr(),
            data: std::ptr::null(),
            sharded: 0,
            shard_offset: 0,
            shard_len: 0,
        },
        adamw_variable {
            name: c"b".as_ptr(),
            dtype: adamw_dtype::Float64 as u32,
            ndim: 1,
            shape: shape_b.as_ptr(),
            data: std::ptr::null(),
            sharded: 0,
            shard_offset: 0,
            shard_len: 0,
        },
    ];
    let (mut a, mut b) = (vec![0.5f32; 32], vec![0.25f64; 16]);
    let (indices, values) = ([1i64, 5, 1], [0.3f32; 12]);
    let grad_b = [0.1f64; 16];
    // SAFETY: valid config, descriptors and out-pointers; the entries point at live, distinct buffers.
    unsafe {
        assert_eq!(adamw_optimizer_new(&config, &mut opt), adamw_status::Ok);
        if on_device {
            let kind = adamw_device_kind::HostKernels as u32;
            assert_eq!(adamw_optimizer_set_device(opt, kind, 0), adamw_status::Ok);
        }
        assert_eq!(adamw_optimizer_build(opt, vars.as_ptr(), 2), adamw_status::Ok);
        assert_eq!(adamw_optimizer_reserve_sparse(opt, 3), adamw_status::Ok);
        let entries = [
            adamw_gradient {
                variable: 0,
                dtype: if on_device { 1 | ADAMW_INDICES_ON_DEVICE } else { 1 },
                data: a.as_mut_ptr().cast(),
                len: 32,
                dense: std::ptr::null(),
                indices: indices.as_ptr(),
                num_indices: 3,
                values: values.as_ptr().cast(),
                num_values: 12,
            },
            adamw_gradient {
                variable: 1,
                dtype: 2,
                data: b.as_mut_ptr().cast(),
                len: 16,
                dense: grad_b.as_ptr().cast(),
                indices: std::ptr::null(),
                num_indices: 0,
                values: std::ptr::null(),
                num_values: 0,
            },
        ];
        let step = || {
            assert_eq!(
                adamw_optimizer_apply_gradients(opt, entries.as_ptr(), 2, std::ptr::null_mut()),
                adamw_status::Ok
            )
        };
        step();
        let count = allocations_during(|| (0..100).for_each(|_| step()));
        assert_eq!(count, 0, "a C ABI step allocated (on the device: {on_device})");
        adamw_optimizer_free(opt);
    }
}

/// Under Keras 3's gradient accumulation (with clipnorm and a sparse gradient) a C ABI call
/// allocates nothing, and neither does the first call after `adamw_optimizer_add_variables`
/// that lists more variables than any call before.
fn accumulation_and_added_variables_allocate_nothing() {
    let mut config = adamw_config_default();
    config.clipnorm = 1.0;
    let mut opt = std::ptr::null_mut();
    let (shape_a, shape_b) = ([8usize, 4], [16usize]);
    let (mut a, mut b, mut c) = (vec![0.5f32; 32], vec![0.25f32; 16], vec![0.75f32; 16]);
    let describe = |name: &'static std::ffi::CStr, shape: &[usize]| adamw_variable {
        name: name.as_ptr(),
        dtype: adamw_dtype::Float32 as u32,
        ndim: shape.len(),
        shape: shape.as_ptr(),
        data: std::ptr::null(),
        sharded: 0,
        shard_offset: 0,
        shard_len: 0,
    };
    let built = [describe(c"a", &shape_a), describe(c"b", &shape_b)];
    let added = describe(c"c", &shape_b);
    let (indices, values) = ([1i64, 5, 1], [0.3f32; 12]);
    let grad = [0.1f32; 16];
    let dense = |variable: usize, data: &mut [f32]| adamw_gradient {
        variable,
        dtype: 1,
        data: data.as_mut_ptr().cast(),
        len: 16,
        dense: grad.as_ptr().cast(),
        indices: std::ptr::null(),
        num_indices: 0,
        values: std::ptr::null(),
        num_values: 0,
    };
    // SAFETY: valid config, descriptors and out-pointers; the entries point at live, distinct buffers.
    unsafe {
        assert_eq!(adamw_optimizer_new(&config, &mut opt), adamw_status::Ok);
        assert_eq!(adamw_optimizer_set_gradient_accumulation_steps(opt, 2), adamw_status::Ok);
        assert_eq!(adamw_optimizer_build(opt, built.as_ptr(), 2), adamw_status::Ok);
        assert_eq!(adamw_optimizer_reserve_sparse(opt, 3), adamw_status::Ok);
        let entries = [
            adamw_gradient {
                variable: 0,
                dtype: 1,
                data: a.as_mut_ptr().cast(),
                len: 32,
                dense: std::ptr::null(),
                indices: indices.as_ptr(),
                num_indices: 3,
                values: values.as_ptr().cast(),
                num_values: 12,
            },
            dense(1, &mut b),
            dense(2, &mut c),
        ];
        let step = |n: usize| {
            assert_eq!(
                adamw_optimizer_apply_gradients(opt, entries.as_ptr(), n, std::ptr::null_mut()),
                adamw_status::Ok
            )
        };
        // Calls that list fewer variables than were built, then one more variable.
        step(1);
        step(1);
        assert_eq!(adamw_optimizer_add_variables(opt, &added, 1), adamw_status::Ok);
        let count = allocations_during(|| (0..100).for_each(|_| step(3)));
        assert_eq!(count, 0, "a call under gradient accumulation, after add_variables, allocated");
        adamw_optimizer_free(opt);
    }
}

/// The mixed-precision modes allocate nothing in a step either: Keras' bfloat16, float16 with
/// float32 master weights (dense and sparse, after reserve_sparse) and the loss scaler, skipped
/// steps included.
fn mixed_precision_steps_allocate_nothing() {
    use half::{bf16, f16};
    let loss_scale = Some(adamw::LossScale { dynamic: true, initial_scale: 64.0, dynamic_growth_steps: 3 });
    let configs = [
        ("keras bfloat16", DType::BF16, Config { threads: 1, ..Config::default() }),
        (
            "float16 + master",
            DType::F16,
            Config { threads: 1, master_weights: true, clipnorm: Some(1.0), ..Config::default() },
        ),
        ("bfloat16 + loss scale", DType::BF16, Config { threads: 1, loss_scale, ..Config::default() }),
    ];
    for (name, dtype, config) in configs {
        let mut opt = Optimizer::new(config).unwrap();
        let n = 100_000;
        let (init_b, init_h) = (vec![bf16::from_f32(0.5); n], vec![f16::from_f32(0.5); n]);
        let initial = if dtype == DType::BF16 { TensorRef::BF16(&init_b) } else { TensorRef::F16(&init_h) };
        opt.build(&[VariableSpec::new("w", dtype, &[n / 4, 4])], &[initial]).unwrap();
        opt.reserve_sparse(8).unwrap();
        let (mut wb, mut wh) = (init_b.clone(), init_h.clone());
        let (gb, gh) = (vec![bf16::from_f32(0.25); n], vec![f16::from_f32(0.25); n]);
        let (rows_b, rows_h) = (vec![bf16::INFINITY; 8], vec![f16::from_f32(0.5); 8]);
        let indices = [3i64, 1];
        let mut step = |k: usize| {
            let values = if dtype == DType::BF16 { TensorMut::BF16(&mut wb) } else { TensorMut::F16(&mut wh) };
            let gradient = match (k % 3, dtype) {
                (0, DType::BF16) => Gradient::Sparse { indices: &indices, values: TensorRef::BF16(&rows_b) },
                (0, _) => Gradient::Sparse { indices: &indices, values: TensorRef::F16(&rows_h) },
                (_, DType::BF16) => Gradient::Dense(TensorRef::BF16(&gb)),
                _ => Gradient::Dense(TensorRef::F16(&gh)),
            };
            let mut entries = [GradientEntry { variable: 0, values, gradient: Some(gradient) }];
            opt.apply_gradients(&mut entries[..]).unwrap();
        };
        step(1);
        step(0);
        let count = allocations_during(|| (0..30).for_each(&mut step));
        assert_eq!(count, 0, "{name}: 30 steps allocated {count} times");
    }
}

/// Sharded steps with every clip norm allocate nothing either: two ranks on two threads with an
/// all-reduce into buffers made beforehand, shards cut inside Eigen's leaves (so the split
/// leaves' terms travel too); each rank counts its own thread's allocations.
fn sharded_steps_allocate_nothing() {
    use std::sync::{Arc, Barrier, Mutex};

    struct Collective {
        barrier: Barrier,
        slots: Mutex<[Vec<f64>; 2]>,
    }
    impl Collective {
        fn all_reduce(&self, rank: usize, values: &mut [f64]) {
            {
                let mut slots = self.slots.lock().unwrap();
                slots[rank].clear();
                slots[rank].extend_from_slice(values); // within the capacity made below
            }
            self.barrier.wait();
            {
                let slots = self.slots.lock().unwrap();
                for (i, v) in values.iter_mut().enumerate() {
                    *v = slots[0][i] + slots[1][i];
                }
            }
            self.barrier.wait();
        }
    }
    for clipping in [
        Config { clipnorm: Some(0.5), ..Config::default() },
        Config { global_clipnorm: Some(1.0), ..Config::default() },
    ] {
        let collective = Arc::new(Collective {
            barrier: Barrier::new(2),
            slots: Mutex::new([Vec::with_capacity(1 << 16), Vec::with_capacity(1 << 16)]),
        });
        std::thread::scope(|scope| {
            for rank in 0..2 {
                let (collective, clipping) = (collective.clone(), clipping.clone());
                scope.spawn(move || {
                    let mesh = adamw::Mesh::new(move |v: &mut [f64]| {
                        collective.all_reduce(rank, v);
                        Ok(())
                    });
                    let mut opt = Optimizer::new(Config { mesh: Some(mesh), threads: 1, ..clipping }).unwrap();
                    let (n, cut) = (50_000usize, 20_001usize);
                    let (offset, len) = if rank == 0 { (0, cut) } else { (cut, n - cut) };
                    opt.build(&[VariableSpec::new("w", DType::F32, &[n]).sharded(offset, len)], &[]).unwrap();
                    let mut w = vec![1.0f32; len];
                    let g = vec![0.25f32; len];
                    let mut step = || {
                        let mut updates = [GradientEntry {
                            variable: 0,
                            values: TensorMut::F32(&mut w),
                            gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
                        }];
                        opt.apply_gradients(&mut updates[..]).unwrap();
                    };
                    step(); // warm-up: the ranks' census of the leaves
                    let count = allocations_during(|| (0..50).for_each(|_| step()));
                    assert_eq!(count, 0, "rank {rank}: 50 sharded steps allocated {count} times");
                });
            }
        });
    }
}

/// On a device (here the CUDA kernels compiled for the host, whose memory is host memory) a step
/// allocates nothing either: over device memory in every mode that brings numbers back to the host
/// (clip norms, the non-finite check, the loss scale and its skipped steps), with sparse indices
/// in host or in device memory, and over host slices, which the engine stages.
#[cfg(feature = "host-kernels")]
fn device_steps_allocate_nothing() {
    use adamw::{Device, DeviceEntry, DeviceGradient, DeviceIndices, DeviceTensor, LossScale};
    let loss_scale = Some(LossScale { dynamic: true, initial_scale: 64.0, dynamic_growth_steps: 3 });
    let modes = [
        ("plain", Config::default()),
        (
            "amsgrad + ema",
            Config { amsgrad: true, use_ema: true, ema_overwrite_frequency: Some(2), ..Config::default() },
        ),
        ("clipnorm", Config { clipnorm: Some(0.5), ..Config::default() }),
        ("global_clipnorm", Config { global_clipnorm: Some(0.5), ..Config::default() }),
        ("reject non-finite", Config { reject_non_finite_gradients: true, ..Config::default() }),
        ("loss scale", Config { loss_scale, clipnorm: Some(1.0), ..Config::default() }),
    ];
    let (rows, cols) = (300, 33);
    let n = rows * cols;
    let tensor = |x: *const f32, len: usize| DeviceTensor { dtype: DType::F32, address: x as u64, len };
    for (name, config) in modes {
        let skips = config.loss_scale.is_some();
        let mut opt = Optimizer::new(config).unwrap();
        opt.set_device(Device::HostKernels).unwrap();
        let specs = [VariableSpec::new("a", DType::F32, &[rows, cols]), VariableSpec::new("b", DType::F32, &[n])];
        let (mut a, mut b) = (vec![0.5f32; n], vec![0.25f32; n]);
        opt.build(&specs, &[TensorRef::F32(&a), TensorRef::F32(&b)]).unwrap();
        opt.reserve_sparse(64).unwrap();
        let (finite, mut non_finite) = (vec![0.1f32; n], vec![0.1f32; n]);
        non_finite[n / 2] = f32::INFINITY;
        let indices: Vec<i64> = (0..64).map(|i| (i * 7 % rows) as i64).collect();
        let sparse_rows = vec![0.3f32; 64 * cols];
        let mut on_device = |k: usize| {
            let indices = if k.is_multiple_of(2) {
                DeviceIndices::Host(&indices)
            } else {
                DeviceIndices::Device { address: indices.as_ptr() as u64, len: indices.len() }
            };
            let dense = if skips && k % 3 == 2 { &non_finite } else { &finite };
            let entries = [
                DeviceEntry {
                    variable: 0,
                    values: tensor(a.as_mut_ptr(), n),
                    gradient: Some(DeviceGradient::Sparse { indices, values: tensor(sparse_rows.as_ptr(), 64 * cols) }),
                },
                DeviceEntry {
                    variable: 1,
                    values: tensor(b.as_mut_ptr(), n),
                    gradient: Some(DeviceGradient::Dense(tensor(dense.as_ptr(), n))),
                },
            ];
            // SAFETY: the host-kernels device's memory is host memory: every address is a live
            // vector of its stated length, and the values overlap nothing else of the call.
            unsafe { opt.apply_gradients_on_device(&entries) }.unwrap();
        };
        (0..3).for_each(&mut on_device); // warm-up: the device's buffers reach their sizes
        let count = allocations_during(|| (0..30).for_each(&mut on_device));
        assert_eq!(count, 0, "{name}, device memory: 30 steps allocated {count} times");
        let mut from_host = |_| {
            let mut entries = [
                GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut a),
                    gradient: Some(Gradient::Sparse { indices: &indices, values: TensorRef::F32(&sparse_rows) }),
                },
                GradientEntry {
                    variable: 1,
                    values: TensorMut::F32(&mut b),
                    gradient: Some(Gradient::Dense(TensorRef::F32(&finite))),
                },
            ];
            opt.apply_gradients(&mut entries[..]).unwrap();
        };
        from_host(0);
        let count = allocations_during(|| (0..10).for_each(&mut from_host));
        assert_eq!(count, 0, "{name}, host slices on the device: 10 steps allocated {count} times");
    }
    c_abi_steps_allocate_nothing(true);
}

/// Runs every check on the main thread, one after another (`harness = false` in Cargo.toml).
fn main() {
    let checks: &[(&str, fn())] = &[
        ("steps_allocate_nothing", steps_allocate_nothing),
        ("mixed_precision_steps_allocate_nothing", mixed_precision_steps_allocate_nothing),
        ("sharded_steps_allocate_nothing", sharded_steps_allocate_nothing),
        ("accumulation_and_added_variables_allocate_nothing", accumulation_and_added_variables_allocate_nothing),
        #[cfg(feature = "host-kernels")]
        ("device_steps_allocate_nothing", device_steps_allocate_nothing),
    ];
    for (name, check) in checks {
        check();
        println!("test {name} ... ok");
    }
}
