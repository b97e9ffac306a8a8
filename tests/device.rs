//! The device engine against the CPU engine, bit for bit: the CUDA kernels compiled for the host
//! (`Device::HostKernels`, the `host-kernels` feature) run the whole engine as a GPU would, with
//! tensors large enough for many blocks and many leaves of Eigen's tree. The conformance cases
//! run on it too (tests/conformance.rs). On a GPU, tools/gpu-check.sh runs the same on CUDA.
#![cfg(feature = "host-kernels")]

mod common;

use adamw::{
    Config, DType, Device, DeviceEntry, DeviceGradient, DeviceIndices, DeviceTensor, Error, Gradient, GradientEntry,
    LossScale, NormSource, Optimizer, TensorMut, TensorRef, VariableSpec,
};
use common::{documented_sum, documented_sum_wide, noise};

/// The device under test: the host kernels, or with ADAMW_TEST_DEVICE=cuda the first GPU
/// (tools/gpu-check.sh).
fn device() -> Device {
    match std::env::var("ADAMW_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::HostKernels,
    }
}
use half::{bf16, f16};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// The variables of the model: every dtype, large ones (many blocks, many leaves of the
/// clip-norm tree: 8192 float32 elements per leaf, 4096 float64, 1024 bfloat16, 1600 float16),
/// and one with rows for sparse gradients.
const SHAPES: [&[usize]; 5] = [&[70_001], &[3, 4_099], &[9_000], &[5_003], &[40, 33]];
/// Every dtype, one per variable.
const MIXED: [DType; 5] = [DType::F32, DType::F64, DType::BF16, DType::F16, DType::F32];
/// global_clipnorm needs the gradients' norms in one dtype, as in Keras.
const FLOAT32: [DType; 5] = [DType::F32; 5];
/// With master weights the 16-bit variables' norms are float32 ones.
const SIXTEEN: [DType; 5] = [DType::BF16, DType::F16, DType::BF16, DType::F16, DType::F32];

/// One variable's values in its dtype.
#[derive(Clone, Debug, PartialEq)]
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Values {
    fn new(dtype: DType, x: &[f32]) -> Self {
        match dtype {
            DType::F64 => Values::F64(x.iter().map(|&v| v as f64 * 1.000_000_1).collect()),
            DType::BF16 => Values::BF16(x.iter().map(|&v| bf16::from_f32(v)).collect()),
            DType::F16 => Values::F16(x.iter().map(|&v| f16::from_f32(v)).collect()),
            _ => Values::F32(x.to_vec()),
        }
    }

    fn as_ref(&self) -> TensorRef<'_> {
        match self {
            Values::F32(x) => TensorRef::F32(x),
            Values::F64(x) => TensorRef::F64(x),
            Values::BF16(x) => TensorRef::BF16(x),
            Values::F16(x) => TensorRef::F16(x),
        }
    }

    fn as_mut(&mut self) -> TensorMut<'_> {
        match self {
            Values::F32(x) => TensorMut::F32(x),
            Values::F64(x) => TensorMut::F64(x),
            Values::BF16(x) => TensorMut::BF16(x),
            Values::F16(x) => TensorMut::F16(x),
        }
    }

    /// The values as device memory for writing: for the host-kernels device, host memory is
    /// device memory.
    fn on_device_mut(&mut self) -> DeviceTensor {
        let len = self.bits().len();
        let (dtype, address) = match self {
            Values::F32(x) => (DType::F32, x.as_mut_ptr() as u64),
            Values::F64(x) => (DType::F64, x.as_mut_ptr() as u64),
            Values::BF16(x) => (DType::BF16, x.as_mut_ptr() as u64),
            Values::F16(x) => (DType::F16, x.as_mut_ptr() as u64),
        };
        DeviceTensor { dtype, address, len }
    }

    /// The values as device memory, for reading.
    fn on_device(&self) -> DeviceTensor {
        let (dtype, address) = match self {
            Values::F32(x) => (DType::F32, x.as_ptr() as u64),
            Values::F64(x) => (DType::F64, x.as_ptr() as u64),
            Values::BF16(x) => (DType::BF16, x.as_ptr() as u64),
            Values::F16(x) => (DType::F16, x.as_ptr() as u64),
        };
        DeviceTensor { dtype, address, len: self.bits().len() }
    }

    /// The bits of every element, for comparisons that see NaN payloads and signed zeros.
    fn bits(&self) -> Vec<u64> {
        match self {
            Values::F32(x) => x.iter().map(|v| v.to_bits() as u64).collect(),
            Values::F64(x) => x.iter().map(|v| v.to_bits()).collect(),
            Values::BF16(x) => x.iter().map(|v| v.to_bits() as u64).collect(),
            Values::F16(x) => x.iter().map(|v| v.to_bits() as u64).collect(),
        }
    }
}

fn len(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn specs(dtypes: &[DType; 5]) -> Vec<VariableSpec> {
    (0..SHAPES.len()).map(|i| VariableSpec::new(format!("layer/v{i}"), dtypes[i], SHAPES[i])).collect()
}

fn initial_values(dtypes: &[DType; 5]) -> Vec<Values> {
    (0..SHAPES.len()).map(|i| Values::new(dtypes[i], &noise(100 + i as u64, len(SHAPES[i])))).collect()
}

/// The gradients of step `t`: dense for the first four variables (scaled so that clipping
/// bites), sparse rows with duplicates for the last; variable 1 has none every third step.
fn gradients(dtypes: &[DType; 5], t: u64, scale: f32) -> (Vec<Option<Values>>, Vec<i64>, Values) {
    let dense = (0..4)
        .map(|i| {
            let g: Vec<f32> = noise(1000 * t + i as u64, len(SHAPES[i])).iter().map(|x| x * scale).collect();
            (i != 1 || !t.is_multiple_of(3)).then(|| Values::new(dtypes[i], &g))
        })
        .collect();
    let indices = vec![3, 17, 3, 39, 0, 17, 3];
    let rows: Vec<f32> = noise(7 + t, indices.len() * 33).iter().map(|x| x * scale).collect();
    let rows = Values::new(dtypes[4], &rows);
    (dense, indices, rows)
}

/// Runs `steps` steps of `config` on `device` and returns the optimizer and the variables.
fn train(
    config: &Config,
    dtypes: &[DType; 5],
    device: Device,
    master_weights: bool,
    steps: u64,
) -> (Optimizer, Vec<Values>) {
    train_with(config, dtypes, device, master_weights, steps, false)
}

/// [`train`], with `device_memory` passing the entries as device memory
/// (`apply_gradients_on_device`).
fn train_with(
    config: &Config,
    dtypes: &[DType; 5],
    device: Device,
    master_weights: bool,
    steps: u64,
    device_memory: bool,
) -> (Optimizer, Vec<Values>) {
    let mut opt = Optimizer::new(config.clone()).unwrap();
    opt.set_master_weights(master_weights).unwrap();
    // A parallel-for set before the device: the engines keep working with one (the bits are
    // compared with another engine's below).
    opt.set_parallel_for(Some(std::sync::Arc::new(|n: usize, task: &(dyn Fn(usize) + Sync)| {
        (0..n).rev().for_each(task)
    })));
    opt.set_device(device).unwrap();
    let mut values = initial_values(dtypes);
    let initial: Vec<TensorRef<'_>> = values.iter().map(Values::as_ref).collect();
    opt.build(&specs(dtypes), &initial).unwrap();
    let scale = config.loss_scale.map_or(1.0, |l| l.initial_scale as f32);
    for t in 0..steps {
        let (dense, indices, rows) = gradients(dtypes, t, 3.0 * scale);
        if device_memory {
            let mut entries: Vec<DeviceEntry<'_>> = (0..4)
                .map(|i| DeviceEntry {
                    variable: i,
                    values: values[i].on_device_mut(),
                    gradient: dense[i].as_ref().map(|g| DeviceGradient::Dense(g.on_device())),
                })
                .collect();
            entries.push(DeviceEntry {
                variable: 4,
                values: values[4].on_device_mut(),
                // Every other step the indices are device memory too (copied to the host first).
                gradient: Some(DeviceGradient::Sparse {
                    indices: if t % 2 == 0 {
                        DeviceIndices::Host(&indices)
                    } else {
                        DeviceIndices::Device { address: indices.as_ptr() as u64, len: indices.len() }
                    },
                    values: rows.on_device(),
                }),
            });
            // SAFETY: the host-kernels device's memory is host memory: every address is a live
            // vector of the stated dtype and length, and the values overlap nothing else.
            unsafe { opt.apply_gradients_on_device(&entries) }.unwrap();
            continue;
        }
        let (sparse_values, dense_values) = values.split_last_mut().unwrap();
        let mut entries: Vec<GradientEntry<'_>> = dense_values
            .iter_mut()
            .zip(&dense)
            .enumerate()
            .map(|(i, (v, g))| GradientEntry {
                variable: i,
                values: v.as_mut(),
                gradient: g.as_ref().map(|g| Gradient::Dense(g.as_ref())),
            })
            .collect();
        entries.push(GradientEntry {
            variable: 4,
            values: sparse_values.as_mut(),
            gradient: Some(Gradient::Sparse { indices: &indices, values: rows.as_ref() }),
        });
        opt.apply_gradients(&mut entries[..]).unwrap();
    }
    (opt, values)
}

/// Every optimizer variable's bytes, in Keras' order.
fn state_of(opt: &Optimizer) -> Vec<Vec<u8>> {
    (0..opt.num_variables()).map(|i| opt.variable(i).unwrap().values.as_ref().to_le_bytes()).collect()
}

fn assert_same(config: &Config, dtypes: &[DType; 5], master_weights: bool, what: &str) {
    let (cpu, cpu_values) = train(config, dtypes, Device::Cpu, master_weights, 5);
    let (dev, dev_values) = train(config, dtypes, device(), master_weights, 5);
    for (i, (c, d)) in cpu_values.iter().zip(&dev_values).enumerate() {
        assert!(c.bits() == d.bits(), "{what}: variable {i} differs from the CPU engine");
    }
    assert!(state_of(&cpu) == state_of(&dev), "{what}: the optimizer variables differ from the CPU engine");
    assert_eq!(cpu.save_own_variables().unwrap(), dev.save_own_variables().unwrap(), "{what}: checkpoints differ");
    assert_eq!(jit_compile(&dev.get_config()), Some(true), "{what}");
    assert_eq!(jit_compile(&cpu.get_config()), Some(false), "{what}");
}

/// The `jit_compile` that get_config reports (the inner optimizer's, under a loss scaler).
fn jit_compile(config: &serde_json::Value) -> Option<bool> {
    match config {
        serde_json::Value::Object(m) => {
            m.get("jit_compile").and_then(|v| v.as_bool()).or_else(|| m.values().find_map(jit_compile))
        }
        _ => None,
    }
}

#[test]
fn every_mode_matches_the_cpu_engine_bit_for_bit() {
    let base = Config { learning_rate: adamw::LearningRate::Constant(0.01), ..Config::default() };
    let modes: Vec<(&str, Config, [DType; 5], bool)> = vec![
        ("plain", base.clone(), MIXED, false),
        (
            "amsgrad + EMA overwrite",
            Config { amsgrad: true, use_ema: true, ema_overwrite_frequency: Some(2), ..base.clone() },
            MIXED,
            false,
        ),
        ("clipnorm", Config { clipnorm: Some(0.5), ..base.clone() }, MIXED, false),
        ("global_clipnorm", Config { global_clipnorm: Some(1.0), ..base.clone() }, FLOAT32, false),
        ("clipvalue", Config { clipvalue: Some(0.1), ..base.clone() }, MIXED, false),
        ("master weights + clipnorm", Config { clipnorm: Some(0.5), ..base.clone() }, MIXED, true),
        (
            "loss scale + global_clipnorm + master weights",
            Config { global_clipnorm: Some(1.0), loss_scale: Some(LossScale::default()), ..base.clone() },
            SIXTEEN,
            true,
        ),
        (
            "loss scale + clipnorm",
            Config { clipnorm: Some(2.0), loss_scale: Some(LossScale::default()), ..base.clone() },
            MIXED,
            false,
        ),
        (
            "global_clipnorm, bfloat16 and float16",
            Config { global_clipnorm: Some(1.0), ..base.clone() },
            [DType::BF16; 5],
            false,
        ),
    ];
    for (what, config, dtypes, master) in modes {
        assert_same(&config, &dtypes, master, what);
    }
}

/// Entries in device memory (the C ABI's path for an optimizer on a device) step exactly as host
/// slices do, and finalize the same way; an optimizer on the CPU refuses them.
#[test]
fn device_memory_entries_match_the_cpu_engine() {
    let config = Config { clipnorm: Some(0.5), use_ema: true, ..Config::default() };
    let (mut cpu, cpu_values) = train(&config, &MIXED, Device::Cpu, true, 4);
    if device() != Device::HostKernels {
        eprintln!("SKIPPED on {:?}: this test's device memory is host memory", device());
        return;
    }
    let (mut dev, dev_values) = train_with(&config, &MIXED, Device::HostKernels, true, 4, true);
    for (i, (c, d)) in cpu_values.iter().zip(&dev_values).enumerate() {
        assert!(c.bits() == d.bits(), "variable {i} differs from the CPU engine");
    }
    assert!(state_of(&cpu) == state_of(&dev));
    let mut on_device = initial_values(&MIXED);
    let entries: Vec<DeviceEntry<'_>> = on_device
        .iter_mut()
        .enumerate()
        .map(|(i, v)| DeviceEntry { variable: i, values: v.on_device_mut(), gradient: None })
        .collect();
    // SAFETY: as in `train_with`.
    unsafe { dev.finalize_variable_values_on_device(&entries) }.unwrap();
    let from_cpu = finalized(&mut cpu);
    for (i, (c, d)) in from_cpu.iter().zip(&mut on_device).enumerate() {
        assert!(c.bits() == d.bits(), "finalize: variable {i} differs");
    }
    let wrong = [DeviceEntry { variable: 0, values: on_device[1].on_device(), gradient: None }];
    // SAFETY: rejected before any memory is touched.
    let err = unsafe { cpu.apply_gradients_on_device(&wrong) }.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

/// An optimizer built over the model's initial values.
fn built(config: &Config, device: Device) -> Optimizer {
    let mut opt = Optimizer::new(config.clone()).unwrap();
    opt.set_device(device).unwrap();
    let values = initial_values(&MIXED);
    let initial: Vec<TensorRef<'_>> = values.iter().map(Values::as_ref).collect();
    opt.build(&specs(&MIXED), &initial).unwrap();
    opt
}

/// `finalize_variable_values` over the model's initial values: the averages, written back.
fn finalized(opt: &mut Optimizer) -> Vec<Values> {
    let mut values = initial_values(&MIXED);
    let mut entries: Vec<GradientEntry<'_>> = values
        .iter_mut()
        .enumerate()
        .map(|(i, v)| GradientEntry { variable: i, values: v.as_mut(), gradient: None })
        .collect();
    opt.finalize_variable_values(&mut entries[..]).unwrap();
    values
}

/// A checkpoint written on the CPU loads on the device with every byte, and the averages reach
/// the caller's variables the same way (finalize_variable_values).
#[test]
fn checkpoints_and_finalize_cross_between_engines() {
    let config = Config { use_ema: true, amsgrad: true, clipnorm: Some(1.0), ..Config::default() };
    let (mut cpu, _) = train(&config, &MIXED, Device::Cpu, false, 3);
    let checkpoint = cpu.save_own_variables().unwrap();
    let mut dev = built(&config, device());
    dev.load_own_variables(&checkpoint).unwrap();
    assert_eq!(state_of(&cpu), state_of(&dev));
    assert_eq!(dev.save_own_variables().unwrap(), checkpoint);
    let (from_cpu, from_dev) = (finalized(&mut cpu), finalized(&mut dev));
    for (i, (c, d)) in from_cpu.iter().zip(&from_dev).enumerate() {
        assert!(c.bits() == d.bits(), "finalize: variable {i} differs");
    }
    // The averages moved the variables (the test would pass vacuously otherwise).
    assert!(from_cpu[0] != initial_values(&MIXED)[0]);
}

#[test]
fn the_device_is_chosen_before_build_and_a_missing_one_changes_nothing() {
    let mut opt = Optimizer::new(Config::default()).unwrap();
    // This machine's CUDA driver decides whether CUDA opens; without one it is a clear error.
    if let Err(e) = opt.set_device(Device::Cuda(0)) {
        assert!(matches!(e, Error::Device(_)), "{e:?}");
        assert_eq!(opt.config().device, Device::Cpu);
        assert_eq!(opt.get_config()["jit_compile"], false);
    }
    let mut opt = built(&Config::default(), device());
    assert!(matches!(opt.set_device(Device::Cpu), Err(Error::AlreadyBuilt(_))));
    assert_eq!(opt.config().device, device());
    // Without jit_compile (Keras' device path) no device can be set: nothing changes.
    let mut off = Optimizer::new(Config { jit_compile: false, ..Config::default() }).unwrap();
    assert!(matches!(off.set_device(Device::HostKernels), Err(Error::InvalidArgument(_))));
    assert_eq!(off.config().device, Device::Cpu);
}

#[test]
fn the_device_engine_refuses_shards() {
    let config = Config { mesh: Some(adamw::Mesh::new(|_: &mut [f64]| Ok(()))), ..Config::default() };
    let mut opt = Optimizer::new(config).unwrap();
    opt.set_device(device()).unwrap();
    let spec = VariableSpec::new("v", DType::F32, &[10]).sharded(0, 5);
    let err = opt.build(&[spec], &[TensorRef::F32(&[0.0; 5])]).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("shard")), "{err:?}");
    assert!(!opt.is_built());
}

/// With the non-finite guard on, a bad gradient is reported against its own variable and element
/// even after an entry without a gradient, in device memory and in host slices, and the rejected
/// call changes nothing.
#[test]
fn a_non_finite_gradient_is_reported_against_its_variable() {
    if device() != Device::HostKernels {
        eprintln!("SKIPPED on {:?}: this test's device memory is host memory", device());
        return;
    }
    let config = Config { reject_non_finite_gradients: true, ..Config::default() };
    let mut opt = Optimizer::new(config).unwrap();
    opt.set_device(Device::HostKernels).unwrap();
    let specs = [VariableSpec::new("first", DType::F32, &[3]), VariableSpec::new("second", DType::F32, &[5_000])];
    let (mut a, mut b) = (vec![1.0f32; 3], vec![1.0f32; 5_000]);
    opt.build(&specs, &[TensorRef::F32(&a), TensorRef::F32(&b)]).unwrap();
    let mut bad = vec![0.5f32; 5_000];
    bad[4_321] = f32::NEG_INFINITY;
    let before = opt.save_own_variables().unwrap();
    let tensor = |x: *const f32, len: usize| DeviceTensor { dtype: DType::F32, address: x as u64, len };
    let entries = [
        DeviceEntry { variable: 0, values: tensor(a.as_mut_ptr(), 3), gradient: None },
        DeviceEntry {
            variable: 1,
            values: tensor(b.as_mut_ptr(), 5_000),
            gradient: Some(DeviceGradient::Dense(tensor(bad.as_ptr(), 5_000))),
        },
    ];
    // SAFETY: the host-kernels device's memory is host memory: live, distinct vectors.
    let err = unsafe { opt.apply_gradients_on_device(&entries) }.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::NonFiniteGradient(_)), "{err:?}");
    assert!(message.contains("variable 1 (`second`)") && message.contains("-inf at element 4321"), "{message}");
    let mut host = [
        GradientEntry { variable: 0, values: TensorMut::F32(&mut a), gradient: None },
        GradientEntry {
            variable: 1,
            values: TensorMut::F32(&mut b),
            gradient: Some(Gradient::Dense(TensorRef::F32(&bad))),
        },
    ];
    let err = opt.apply_gradients(&mut host[..]).unwrap_err();
    assert_eq!(err.to_string(), message);
    assert!(opt.save_own_variables().unwrap() == before && a == [1.0; 3] && b == vec![1.0; 5_000]);
    assert_eq!(opt.iterations(), 0);
}

#[test]
fn the_report_norms_are_the_documented_ones_as_on_the_cpu_engine() {
    // The device's sums (each step block's group lanes, a sparse gradient's in a launch of their
    // own, then each task's) give the CPU engine's bits: float32 over four tasks ending
    // mid-group, float64, bfloat16 and float16 ending mid-row, two sparse gradients (their values
    // as passed, one task each) among dense ones, NaNs with payloads (one signaling), a tiny
    // gradient, and an entry without a gradient listed first; with and without master copies,
    // without and with amsgrad and EMA.
    let n = 100_003;
    let g32: Vec<f32> = noise(1, n);
    let g64: Vec<f64> = noise(2, 5_003).iter().map(|&x| x as f64 * 1.1).collect();
    let gb: Vec<bf16> = noise(3, 1000).iter().map(|&x| bf16::from_f32(x)).collect();
    let gh: Vec<f16> = noise(4, 777).iter().map(|&x| f16::from_f32(x)).collect();
    let mut g_nan = noise(5, 600);
    g_nan[513] = f32::from_bits(0xffc0_1234); // negative, quiet, with a payload
    g_nan[7] = f32::from_bits(0x7f80_0021); // signaling
    let tiny = vec![1e-20f32; 40];
    let (indices, rows) = ([3i64, 7, 3], noise(6, 12));
    let (indices_b, rows_b) = ([1i64, 5, 1, 39], noise(7, 32).iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>());
    let widened = |x: &[bf16]| x.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
    // Per variable, as `gradient_norms` gives them: the first is listed without a gradient.
    let want = |master: bool| {
        let mut want = vec![
            f64::NAN,
            documented_sum(&g32).sqrt(),
            documented_sum(&widened(&gb)).sqrt(),
            documented_sum(&gh.iter().map(|x| x.to_f32()).collect::<Vec<_>>()).sqrt(),
            documented_sum(&rows).sqrt(),
            documented_sum(&g_nan).sqrt(),
            documented_sum(&tiny).sqrt(),
            documented_sum(&widened(&rows_b)).sqrt(),
        ];
        if !master {
            want.push(documented_sum_wide(&g64).sqrt());
        }
        want
    };
    let bits = |x: &[f64]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (master, amsgrad_ema) in [(false, false), (true, false), (false, true)] {
        let mut reports = Vec::new();
        for on_device in [false, true] {
            let config =
                Config { master_weights: master, amsgrad: amsgrad_ema, use_ema: amsgrad_ema, ..Config::default() };
            let mut opt = Optimizer::new(config).unwrap();
            if on_device {
                opt.set_device(device()).unwrap();
            }
            opt.set_report_norms(true);
            let mut specs = vec![
                VariableSpec::new("idle", DType::F32, &[10]),
                VariableSpec::new("a", DType::F32, &[n]),
                VariableSpec::new("b", DType::BF16, &[1000]),
                VariableSpec::new("h", DType::F16, &[777]),
                VariableSpec::new("e", DType::F32, &[50, 4]),
                VariableSpec::new("nan", DType::F32, &[600]),
                VariableSpec::new("tiny", DType::F32, &[40]),
                VariableSpec::new("sb", DType::BF16, &[40, 8]),
            ];
            if !master {
                specs.push(VariableSpec::new("d", DType::F64, &[5_003]));
            }
            let (mut idle, mut a, mut b, mut h) =
                (vec![0.5f32; 10], vec![0.5f32; n], vec![bf16::ONE; 1000], vec![f16::ONE; 777]);
            let (mut e, mut x, mut t, mut d) =
                (vec![0.25f32; 200], vec![0.5f32; 600], vec![0.5f32; 40], vec![1.0; 5_003]);
            let mut sb = vec![bf16::ONE; 320];
            let mut initial = vec![
                TensorRef::F32(&idle),
                TensorRef::F32(&a),
                TensorRef::BF16(&b),
                TensorRef::F16(&h),
                TensorRef::F32(&e),
                TensorRef::F32(&x),
                TensorRef::F32(&t),
                TensorRef::BF16(&sb),
            ];
            if !master {
                initial.push(TensorRef::F64(&d));
            }
            opt.build(&specs, &initial).unwrap();
            drop(initial);
            let mut entries = vec![
                GradientEntry { variable: 0, values: TensorMut::F32(&mut idle), gradient: None },
                GradientEntry::dense(1, ArrayViewMut1::from(&mut a[..]), ArrayView1::from(&g32[..])).unwrap(),
                GradientEntry::dense(2, ArrayViewMut1::from(&mut b[..]), ArrayView1::from(&gb[..])).unwrap(),
                GradientEntry::dense(3, ArrayViewMut1::from(&mut h[..]), ArrayView1::from(&gh[..])).unwrap(),
                GradientEntry::sparse(
                    4,
                    ArrayViewMut2::from_shape((50, 4), &mut e[..]).unwrap(),
                    &indices,
                    ArrayView2::from_shape((3, 4), &rows[..]).unwrap(),
                )
                .unwrap(),
                GradientEntry::dense(5, ArrayViewMut1::from(&mut x[..]), ArrayView1::from(&g_nan[..])).unwrap(),
                GradientEntry::dense(6, ArrayViewMut1::from(&mut t[..]), ArrayView1::from(&tiny[..])).unwrap(),
                GradientEntry::sparse(
                    7,
                    ArrayViewMut2::from_shape((40, 8), &mut sb[..]).unwrap(),
                    &indices_b,
                    ArrayView2::from_shape((4, 8), &rows_b[..]).unwrap(),
                )
                .unwrap(),
            ];
            if !master {
                entries.push(
                    GradientEntry::dense(8, ArrayViewMut1::from(&mut d[..]), ArrayView1::from(&g64[..])).unwrap(),
                );
            }
            opt.apply_gradients(&mut entries[..]).unwrap();
            let report = opt.step_report();
            let what = format!("device {on_device}, master {master}, amsgrad and EMA {amsgrad_ema}");
            assert_eq!((report.applied, report.norms), (true, NormSource::UpdatePass), "{what}");
            let norms = opt.gradient_norms();
            assert!(norms[0].is_nan() && norms[5].is_nan(), "{what}: no gradient, and a NaN gradient");
            assert_eq!(bits(&norms[1..5]), bits(&want(master)[1..5]), "{what}");
            assert_eq!(bits(&norms[6..]), bits(&want(master)[6..]), "{what}");
            reports.push((bits(norms), report.global_norm.to_bits()));
        }
        assert_eq!(reports[0], reports[1], "master {master}: the device's report is the CPU engine's, NaNs too");
    }
}
