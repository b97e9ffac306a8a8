//! A stress test: several threads call one optimizer handle at once for a bounded time (apply,
//! get_config, save, set_weights, iterations). The calls are serialized, so nothing crashes or
//! tears, and with the same gradient every call the result equals the same number of calls
//! made one after another.

use std::ffi::c_void;
use std::sync::Mutex;

use adamw::ffi::*;

struct Handle(*mut adamw_optimizer);
// SAFETY: the C ABI documents that an optimizer may be used from several threads at once.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

fn new_optimizer(len: usize) -> Handle {
    let config = adamw_config_default();
    let mut opt = std::ptr::null_mut();
    let shape = [len];
    let name = c"w";
    // SAFETY: valid config, out-pointer, and variable descriptor.
    unsafe {
        assert_eq!(adamw_optimizer_new(&config, &mut opt), adamw_status::Ok);
        let var = adamw_variable {
            name: name.as_ptr(),
            dtype: adamw_dtype::Float32 as u32,
            ndim: 1,
            shape: shape.as_ptr(),
            data: std::ptr::null(),
            sharded: 0,
            shard_offset: 0,
            shard_len: 0,
        };
        assert_eq!(adamw_optimizer_build(opt, &var, 1), adamw_status::Ok);
    }
    Handle(opt)
}

fn step(h: &Handle, values: &mut [f32], grad: &[f32]) -> adamw_status {
    let entry = adamw_gradient {
        variable: 0,
        dtype: adamw_dtype::Float32 as u32,
        data: values.as_mut_ptr().cast::<c_void>(),
        len: values.len(),
        dense: grad.as_ptr().cast(),
        indices: std::ptr::null(),
        num_indices: 0,
        values: std::ptr::null(),
        num_values: 0,
    };
    // SAFETY: the entry points at live, distinct buffers of the stated length.
    unsafe { adamw_optimizer_apply_gradients(h.0, &entry, 1, std::ptr::null_mut()) }
}

#[test]
fn concurrent_calls_on_one_handle_are_serialized() {
    const LEN: usize = 100_000; // large enough to be cut into tasks for the pool's threads too
    const THREADS: usize = 4;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let applied = std::sync::atomic::AtomicUsize::new(0);
    let grad: Vec<f32> = (0..LEN).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();

    let shared = new_optimizer(LEN);
    let values = Mutex::new(vec![1.0f32; LEN]); // the caller's variable, one writer at a time
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while std::time::Instant::now() < deadline {
                    let mut v = values.lock().unwrap();
                    assert_eq!(step(&shared, &mut v, &grad), adamw_status::Ok);
                    applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(v);
                    // in between: iterations, a full save, config, and Keras' set_weights with an
                    // empty list (it zips, so it sets nothing, but it takes the lock)
                    let mut it = 0i64;
                    let mut len = 0usize;
                    // SAFETY: live handle, valid out-pointers.
                    unsafe {
                        assert_eq!(adamw_optimizer_iterations(shared.0, &mut it), adamw_status::Ok);
                        assert_eq!(
                            adamw_optimizer_save_own_variables(shared.0, std::ptr::null_mut(), 0, &mut len),
                            adamw_status::Ok
                        );
                        let mut bytes = vec![0u8; len];
                        assert_eq!(
                            adamw_optimizer_save_own_variables(shared.0, bytes.as_mut_ptr(), len, &mut len),
                            adamw_status::Ok
                        );
                        assert_eq!(
                            adamw_optimizer_get_config(shared.0, std::ptr::null_mut(), 0, &mut len),
                            adamw_status::Ok
                        );
                        assert_eq!(adamw_optimizer_set_weights(shared.0, std::ptr::null(), 0), adamw_status::Ok);
                    }
                }
            });
        }
    });

    let calls = applied.load(std::sync::atomic::Ordering::Relaxed);
    assert!(calls >= THREADS, "only {calls} steps in the time allowed");
    let sequential = new_optimizer(LEN);
    let mut expected = vec![1.0f32; LEN];
    for _ in 0..calls {
        assert_eq!(step(&sequential, &mut expected, &grad), adamw_status::Ok);
    }
    let got = values.into_inner().unwrap();
    assert!(got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()));
    let mut it = 0i64;
    // SAFETY: live handles, valid out-pointer; each freed once.
    unsafe {
        assert_eq!(adamw_optimizer_iterations(shared.0, &mut it), adamw_status::Ok);
        adamw_optimizer_free(shared.0);
        adamw_optimizer_free(sequential.0);
    }
    assert_eq!(it, calls as i64);
    eprintln!(
        "stress: {THREADS} threads for 1.5 s, {calls} steps interleaved with saves, configs, set_weights: equal to sequential"
    );
}

/// The Rust API's parallel-for: a closure running the tasks on scoped threads of the caller's
/// gives the bits of one thread, with a bfloat16 variable's master copy, a dynamic loss scale
/// that skips a step, and a global clip norm.
#[test]
fn a_closure_runs_the_tasks_with_one_threads_bits() {
    use adamw::{
        Config, DType, Gradient, GradientEntry, LossScale, Optimizer, ParallelFor, TensorMut, TensorRef, VariableSpec,
    };
    use half::bf16;
    const N: usize = 150_000;
    let run = |threads: usize, hook: Option<std::sync::Arc<dyn ParallelFor>>| {
        let config = Config { global_clipnorm: Some(1.0), threads, ..Config::default() };
        let mut opt = Optimizer::new(config).unwrap();
        opt.set_master_weights(true).unwrap();
        opt.set_loss_scale(Some(LossScale { dynamic: true, initial_scale: 256.0, dynamic_growth_steps: 2 })).unwrap();
        opt.set_parallel_for(hook);
        let mut w: Vec<f32> = (0..N).map(|i| (i % 1000) as f32 * 1e-3).collect();
        let mut b: Vec<bf16> = (0..N).map(|i| bf16::from_f32((i % 64) as f32 / 32.0 - 1.0)).collect();
        opt.build(
            &[VariableSpec::new("w", DType::F32, &[N]), VariableSpec::new("b", DType::BF16, &[N])],
            &[TensorRef::F32(&w), TensorRef::BF16(&b)],
        )
        .unwrap();
        for step in 0..4 {
            let mut gw: Vec<f32> = (0..N).map(|i| ((i * 613 + step) % 977) as f32 - 488.0).collect();
            let gb: Vec<bf16> = (0..N).map(|i| bf16::from_f32(((i * 37 + step) % 64) as f32 - 32.0)).collect();
            if step == 2 {
                gw[N - 3] = f32::NAN;
            }
            let mut entries = [
                GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(Gradient::Dense(TensorRef::F32(&gw))),
                },
                GradientEntry {
                    variable: 1,
                    values: TensorMut::BF16(&mut b),
                    gradient: Some(Gradient::Dense(TensorRef::BF16(&gb))),
                },
            ];
            opt.apply_gradients(&mut entries[..]).unwrap();
        }
        (w.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b, opt.save_own_variables().unwrap())
    };
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    let scoped = move |n: usize, task: &(dyn Fn(usize) + Sync)| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::scope(|s| {
            for t in 0..3 {
                s.spawn(move || (t..n).step_by(3).for_each(task));
            }
        });
    };
    let one = run(1, None);
    assert!(run(1, Some(std::sync::Arc::new(scoped))) == one, "the closure's tasks differ from one thread");
    assert!(calls.load(std::sync::atomic::Ordering::Relaxed) > 0, "the closure was never called");
    assert!(run(3, None) == one, "a pool of 3 differs from one thread");
}

/// A variable's values or gradient in one of the four float dtypes.
#[derive(Clone, PartialEq, Debug)]
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<half::bf16>),
    F16(Vec<half::f16>),
}

impl Values {
    fn new(dtype: usize, n: usize, f: impl Fn(usize) -> f64) -> Values {
        let xs = (0..n).map(f);
        match dtype % 4 {
            0 => Values::F32(xs.map(|x| x as f32).collect()),
            1 => Values::F64(xs.collect()),
            2 => Values::BF16(xs.map(half::bf16::from_f64).collect()),
            _ => Values::F16(xs.map(half::f16::from_f64).collect()),
        }
    }

    fn dtype(&self) -> adamw::DType {
        match self {
            Values::F32(_) => adamw::DType::F32,
            Values::F64(_) => adamw::DType::F64,
            Values::BF16(_) => adamw::DType::BF16,
            Values::F16(_) => adamw::DType::F16,
        }
    }

    fn as_ref(&self) -> adamw::TensorRef<'_> {
        match self {
            Values::F32(x) => adamw::TensorRef::F32(x),
            Values::F64(x) => adamw::TensorRef::F64(x),
            Values::BF16(x) => adamw::TensorRef::BF16(x),
            Values::F16(x) => adamw::TensorRef::F16(x),
        }
    }

    fn as_mut(&mut self) -> adamw::TensorMut<'_> {
        match self {
            Values::F32(x) => adamw::TensorMut::F32(x),
            Values::F64(x) => adamw::TensorMut::F64(x),
            Values::BF16(x) => adamw::TensorMut::BF16(x),
            Values::F16(x) => adamw::TensorMut::F16(x),
        }
    }
}

/// Entries read one at a time: what a `GradientEntries` without `visit_all` gives the step.
struct OneAtATime<'e, 'a>(&'e mut [adamw::GradientEntry<'a>]);

impl adamw::GradientEntries for OneAtATime<'_, '_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&mut self, i: usize) -> adamw::GradientEntry<'_> {
        self.0[i].reborrow()
    }
}

/// The dense steps of a call's variables run as one list of tasks (the variables laid end to
/// end, a task taking the end of one and the start of the next): every variable gets the bits
/// it gets stepped alone in an optimizer of its own, for every dtype, at sizes around the task
/// length, with amsgrad, EMA and a per-variable clip, whoever runs the tasks, and when the
/// entries are read one at a time.
#[test]
fn variables_stepped_together_get_the_bits_of_each_alone() {
    use adamw::{Config, Gradient, GradientEntry, Optimizer, ParallelFor, VariableSpec};
    use std::sync::Arc;
    const SIZES: [usize; 12] = [1, 31, 1024, 40_000, 3, 100_003, 65_536, 7, 32_768, 32_769, 5_000, 70_001];
    const STEPS: usize = 3;
    let initial: Vec<Values> = SIZES
        .iter()
        .enumerate()
        .map(|(k, &n)| Values::new(k, n, |i| ((i * 7919 + k) % 1000) as f64 * 1e-3 - 0.5))
        .collect();
    let gradient =
        |k: usize, step: usize| Values::new(k, SIZES[k], |i| ((i * 613 + k * 31 + step) % 977) as f64 * 1e-3 - 0.488);
    let configs = [
        Config::default(),
        Config {
            amsgrad: true,
            use_ema: true,
            ema_overwrite_frequency: Some(2),
            clipvalue: Some(0.3),
            ..Config::default()
        },
        Config { clipnorm: Some(0.5), ..Config::default() },
    ];
    // Steps `variables` (indices into SIZES) in one optimizer, `STEPS` calls.
    let run = |config: &Config, variables: &[usize], hook: Option<Arc<dyn ParallelFor>>, one_at_a_time: bool| {
        let mut opt = Optimizer::new(config.clone()).unwrap();
        opt.set_parallel_for(hook);
        let specs: Vec<VariableSpec> =
            variables.iter().map(|&k| VariableSpec::new(format!("v{k}"), initial[k].dtype(), &[SIZES[k]])).collect();
        let mut values: Vec<Values> = variables.iter().map(|&k| initial[k].clone()).collect();
        opt.build(&specs, &values.iter().map(Values::as_ref).collect::<Vec<_>>()).unwrap();
        for step in 0..STEPS {
            let grads: Vec<Values> = variables.iter().map(|&k| gradient(k, step)).collect();
            let mut entries: Vec<GradientEntry> = values
                .iter_mut()
                .zip(&grads)
                .enumerate()
                .map(|(i, (v, g))| GradientEntry {
                    variable: i,
                    values: v.as_mut(),
                    gradient: Some(Gradient::Dense(g.as_ref())),
                })
                .collect();
            if one_at_a_time {
                opt.apply_gradients(&mut OneAtATime(&mut entries)).unwrap();
            } else {
                opt.apply_gradients(&mut entries[..]).unwrap();
            }
        }
        values
    };
    let reversed: Arc<dyn ParallelFor> =
        Arc::new(|n: usize, task: &(dyn Fn(usize) + Sync)| (0..n).rev().for_each(task));
    let all: Vec<usize> = (0..SIZES.len()).collect();
    for (c, config) in configs.iter().enumerate() {
        let alone: Vec<Values> = all.iter().map(|&k| run(config, &[k], None, false).remove(0)).collect();
        for threads in [1, 2, 3] {
            let config = Config { threads, ..config.clone() };
            assert!(run(&config, &all, None, false) == alone, "config {c}, {threads} threads: differs from each alone");
            assert!(run(&config, &all, None, true) == alone, "config {c}, {threads} threads, one at a time: differs");
        }
        assert!(run(config, &all, Some(reversed.clone()), false) == alone, "config {c}, reversed hook: differs");
    }
}
