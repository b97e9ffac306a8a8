//! Per-variable multipliers and `weight_decay_min_ndim` (docs/numerics.md §22): a variable with
//! multipliers steps exactly as Keras' AdamW with its scaled hyper-parameters, a weight-decay
//! multiplier of 0 is exclusion, multipliers of 1 are Keras' bits, and every bad input is
//! refused with nothing changed.

mod common;
use adamw::{
    Config, DType, Error, Gradient, GradientEntry, Multipliers, Optimizer, TensorMut, TensorRef, VariableSpec,
};
use common::{noise, noise_step};
use half::{bf16, f16};

trait Value: Copy + 'static {
    const DTYPE: DType;
    fn from_f32(x: f32) -> Self;
    fn bits(self) -> u64;
    fn tensor_mut(values: &mut [Self]) -> TensorMut<'_>;
    fn tensor_ref(values: &[Self]) -> TensorRef<'_>;
}

macro_rules! value {
    ($t:ty, $dtype:ident, $variant:ident, $from:expr, $bits:expr) => {
        impl Value for $t {
            const DTYPE: DType = DType::$dtype;
            fn from_f32(x: f32) -> Self {
                $from(x)
            }
            fn bits(self) -> u64 {
                $bits(self) as u64
            }
            fn tensor_mut(values: &mut [Self]) -> TensorMut<'_> {
                TensorMut::$variant(values)
            }
            fn tensor_ref(values: &[Self]) -> TensorRef<'_> {
                TensorRef::$variant(values)
            }
        }
    };
}
value!(f32, F32, F32, |x| x, f32::to_bits);
value!(f64, F64, F64, f64::from, f64::to_bits);
value!(bf16, BF16, BF16, bf16::from_f32, bf16::to_bits);
value!(f16, F16, F16, f16::from_f32, f16::to_bits);

/// The model: a kernel, its bias, a scalar and a vector large enough for parallel tasks.
const SHAPES: [&[usize]; 4] = [&[64, 40], &[40], &[], &[50_000]];
const NAMES: [&str; 4] = ["dense/kernel", "dense/bias", "temperature", "embedding/vector"];

/// The bits of every variable after `steps` steps (and of the optimizer variables), with `setup`
/// applied to the optimizer before build and `after_build` after.
fn run<T: Value>(
    config: Config,
    steps: u64,
    setup: impl Fn(&mut Optimizer),
    after_build: impl Fn(&mut Optimizer),
) -> (Vec<Vec<u64>>, Vec<u8>) {
    let mut opt = Optimizer::new(config).unwrap();
    setup(&mut opt);
    let lens: Vec<usize> = SHAPES.iter().map(|s| s.iter().product()).collect();
    let mut values: Vec<Vec<T>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut v: Vec<T> = noise(100 + i as u64, n).into_iter().map(T::from_f32).collect();
            v[0] = T::from_f32(-0.0); // a negative zero: decay must leave its sign as Keras does
            v
        })
        .collect();
    let specs: Vec<VariableSpec> = (0..4).map(|i| VariableSpec::new(NAMES[i], T::DTYPE, SHAPES[i])).collect();
    let initial: Vec<TensorRef> = values.iter().map(|v| T::tensor_ref(v)).collect();
    opt.build(&specs, &initial).unwrap();
    after_build(&mut opt);
    for step in 0..steps {
        let grads: Vec<Vec<T>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| noise(1000 * step + i as u64, n).into_iter().map(T::from_f32).collect())
            .collect();
        let mut entries: Vec<GradientEntry> = values
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .map(|(i, (v, g))| GradientEntry {
                variable: i,
                values: T::tensor_mut(v),
                gradient: Some(Gradient::Dense(T::tensor_ref(g))),
            })
            .collect();
        opt.apply_gradients(&mut entries[..]).unwrap();
    }
    let bits = values.iter().map(|v| v.iter().map(|x| x.bits()).collect()).collect();
    // Every optimizer variable's bytes (a checkpoint would also hold the multipliers).
    let state = (0..opt.num_variables()).flat_map(|i| opt.variable(i).unwrap().values.as_ref().to_le_bytes()).collect();
    (bits, state)
}

fn configs() -> Vec<(&'static str, Config)> {
    // beta_2 0.99: Keras' bfloat16 arithmetic rounds the default 0.999 to 1, and then no step
    // moves a bfloat16 variable but its decay.
    let base = Config {
        learning_rate: adamw::LearningRate::Constant(0.01),
        weight_decay: 0.05,
        beta_2: adamw::Beta::Value(0.99),
        ..Config::default()
    };
    vec![
        ("plain", base.clone()),
        ("amsgrad + EMA", Config { amsgrad: true, use_ema: true, ema_overwrite_frequency: Some(3), ..base.clone() }),
        ("global_clipnorm", Config { global_clipnorm: Some(0.5), ..base.clone() }),
        ("clipnorm, 3 threads", Config { clipnorm: Some(0.1), threads: 3, ..base.clone() }),
    ]
}

/// The learning rate and weight decay Keras would be given for a variable with multipliers
/// (`r`, `d`): fl32(lr · r) from the float32 rate, and wd · d in float64.
fn scaled(config: &Config, r: f64, d: f64) -> Config {
    let adamw::LearningRate::Constant(lr) = config.learning_rate else { unreachable!() };
    let lr32 = lr as f32;
    Config {
        learning_rate: adamw::LearningRate::Constant((lr32 as f64 * r) as f32 as f64),
        weight_decay: config.weight_decay * d,
        ..config.clone()
    }
}

fn multipliers_are_kerass_step_with_scaled_hyper_parameters<T: Value>(master: bool) {
    let (r, d) = (0.37, 2.5);
    for (what, config) in configs() {
        let masters = |opt: &mut Optimizer| {
            if master {
                opt.set_master_weights(true).unwrap();
            }
        };
        let set = |opt: &mut Optimizer| {
            opt.set_multipliers(0, Multipliers { learning_rate: 1.0, weight_decay: 1.0 }).unwrap();
            opt.set_multipliers(1, Multipliers { learning_rate: r, weight_decay: d }).unwrap();
        };
        let (with, _) = run::<T>(config.clone(), 4, masters, set);
        let (plain, _) = run::<T>(config.clone(), 4, masters, |_| {});
        let (keras_scaled, _) = run::<T>(scaled(&config, r, d), 4, masters, |_| {});
        let name = format!("{} {what}{}", T::DTYPE.name(), if master { " with master" } else { "" });
        // Variable 1 steps as Keras with the scaled hyper-parameters; the others as Keras.
        assert_eq!(with[1], keras_scaled[1], "{name}: the variable with multipliers");
        for i in [0, 2, 3] {
            assert_eq!(with[i], plain[i], "{name}: variable {i}, multipliers 1");
        }
        assert_ne!(with[1], plain[1], "{name}: the multipliers changed nothing");
    }
}

#[test]
fn multipliers_are_kerass_step_with_scaled_hyper_parameters_in_every_dtype() {
    multipliers_are_kerass_step_with_scaled_hyper_parameters::<f32>(false);
    multipliers_are_kerass_step_with_scaled_hyper_parameters::<f64>(false);
    multipliers_are_kerass_step_with_scaled_hyper_parameters::<bf16>(false);
    multipliers_are_kerass_step_with_scaled_hyper_parameters::<f16>(false);
    multipliers_are_kerass_step_with_scaled_hyper_parameters::<bf16>(true);
    multipliers_are_kerass_step_with_scaled_hyper_parameters::<f16>(true);
}

#[test]
fn a_weight_decay_multiplier_of_zero_is_exclusion() {
    for (what, config) in configs() {
        let (zero, zero_state) = run::<f32>(
            config.clone(),
            3,
            |_| {},
            |o| o.set_multipliers(0, Multipliers { learning_rate: 1.0, weight_decay: 0.0 }).unwrap(),
        );
        let (excluded, excluded_state) =
            run::<f32>(config.clone(), 3, |o| o.exclude_from_weight_decay(&[0], &[]).unwrap(), |_| {});
        assert_eq!(zero, excluded, "{what}");
        assert_eq!(zero_state, excluded_state, "{what}");
    }
}

#[test]
fn weight_decay_min_ndim_excludes_what_has_fewer_dimensions() {
    let config = Config { weight_decay: 0.05, ..Config::default() };
    let (rule, _) = run::<f32>(config.clone(), 3, |o| o.set_weight_decay_min_ndim(2).unwrap(), |_| {});
    // Dimensions 2, 1, 0, 1: the bias, the scalar and the vector are not decayed.
    let (named, _) = run::<f32>(
        config.clone(),
        3,
        |o| o.exclude_from_weight_decay(&[], &["bias", "temperature", "vector"]).unwrap(),
        |_| {},
    );
    assert_eq!(rule, named);
    let mut opt = Optimizer::new(Config { weight_decay_min_ndim: 2, ..config.clone() }).unwrap();
    let specs: Vec<VariableSpec> = (0..4).map(|i| VariableSpec::new(NAMES[i], DType::F32, SHAPES[i])).collect();
    opt.build(&specs, &[]).unwrap();
    let decayed: Vec<bool> = (0..4).map(|i| opt.variable_properties(i).unwrap().decayed).collect();
    assert_eq!(decayed, [true, false, false, false]);
    let p = opt.variable_properties(1).unwrap();
    assert_eq!((p.dtype, p.ndim, p.excluded, p.has_master), (DType::F32, 1, true, false));
    assert_eq!(p.multipliers, Multipliers::default());
    assert!(opt.variable_properties(4).is_none());
    // get_config carries the key only when set, and from_config reads it back.
    let json = opt.get_config();
    assert_eq!(json["weight_decay_min_ndim"], 2);
    assert_eq!(Optimizer::from_config_json(&json.to_string()).unwrap().config().weight_decay_min_ndim, 2);
    assert!(Optimizer::new(config.clone()).unwrap().get_config().get("weight_decay_min_ndim").is_none());
    for bad in ["-1", "33", "1.5", "\"2\"", "true"] {
        let json = format!(r#"{{"name": "AdamW", "weight_decay_min_ndim": {bad}}}"#);
        assert!(Optimizer::from_config_json(&json).is_err(), "{bad} accepted");
    }
    assert!(matches!(opt.set_weight_decay_min_ndim(1), Err(Error::AlreadyBuilt(_))));
    let mut fresh = Optimizer::new(config).unwrap();
    assert!(matches!(fresh.set_weight_decay_min_ndim(33), Err(Error::InvalidArgument(_))));
}

#[test]
fn properties_follow_the_multipliers() {
    let mut opt = Optimizer::new(Config::default()).unwrap();
    opt.exclude_from_weight_decay(&[2], &[]).unwrap();
    let specs: Vec<VariableSpec> = (0..4).map(|i| VariableSpec::new(NAMES[i], DType::F32, SHAPES[i])).collect();
    opt.build(&specs, &[]).unwrap();
    opt.set_multipliers(0, Multipliers { learning_rate: 0.5, weight_decay: 0.0 }).unwrap();
    opt.set_multipliers(2, Multipliers { learning_rate: 2.0, weight_decay: 3.0 }).unwrap();
    let p: Vec<_> = (0..4).map(|i| opt.variable_properties(i).unwrap()).collect();
    assert_eq!((p[0].decayed, p[0].excluded, p[0].multipliers.learning_rate), (false, false, 0.5));
    assert_eq!((p[2].decayed, p[2].excluded, p[2].multipliers.weight_decay), (false, true, 3.0));
    assert_eq!((p[1].decayed, p[3].decayed), (true, true));
    // Back to a weight-decay multiplier of 1: decayed again.
    opt.set_multipliers(0, Multipliers::default()).unwrap();
    assert!(opt.variable_properties(0).unwrap().decayed);
}

#[test]
fn bad_multipliers_are_refused_and_change_nothing() {
    let config = Config { weight_decay: 0.05, ..Config::default() };
    let mut unbuilt = Optimizer::new(config.clone()).unwrap();
    assert!(matches!(unbuilt.set_multipliers(0, Multipliers::default()), Err(Error::NotBuilt(_))));
    let refused = |o: &mut Optimizer| {
        o.set_multipliers(1, Multipliers { learning_rate: 0.5, weight_decay: 2.0 }).unwrap();
        for (r, d) in [(-1.0, 1.0), (1.0, -0.5), (f64::NAN, 1.0), (1.0, f64::INFINITY), (f64::NEG_INFINITY, 1.0)] {
            let e = o.set_multipliers(1, Multipliers { learning_rate: r, weight_decay: d });
            assert!(matches!(e, Err(Error::InvalidArgument(_))), "({r}, {d}): {e:?}");
        }
        let e = o.set_multipliers(4, Multipliers::default());
        assert!(matches!(e, Err(Error::UnknownVariable(_))), "{e:?}");
        assert_eq!(
            o.variable_properties(1).unwrap().multipliers,
            Multipliers { learning_rate: 0.5, weight_decay: 2.0 }
        );
    };
    let accepted =
        |o: &mut Optimizer| o.set_multipliers(1, Multipliers { learning_rate: 0.5, weight_decay: 2.0 }).unwrap();
    assert_eq!(run::<f32>(config.clone(), 3, |_| {}, refused), run::<f32>(config, 3, |_| {}, accepted));
}

/// On a device (the kernels run on the host, `host-kernels`), a variable with multipliers steps
/// with scalars of its own and gives the CPU engine's bits, in every dtype and mode.
#[cfg(feature = "host-kernels")]
#[test]
fn a_device_steps_with_multipliers_as_the_cpu_engine_does() {
    fn compare<T: Value>(master: bool) {
        for (what, config) in configs() {
            let setup = |device: bool| {
                move |opt: &mut Optimizer| {
                    if master {
                        opt.set_master_weights(true).unwrap();
                    }
                    if device {
                        opt.set_device(adamw::Device::HostKernels).unwrap();
                    }
                }
            };
            let set = |opt: &mut Optimizer| {
                opt.set_multipliers(1, Multipliers { learning_rate: 0.37, weight_decay: 2.5 }).unwrap();
                opt.set_multipliers(3, Multipliers { learning_rate: 1.5, weight_decay: 0.0 }).unwrap();
            };
            let on_cpu = run::<T>(config.clone(), 4, setup(false), set);
            let on_device = run::<T>(config.clone(), 4, setup(true), set);
            assert!(on_cpu == on_device, "{:?} (master {master}), {what}", T::DTYPE);
            // And the multipliers did something.
            let plain = run::<T>(config.clone(), 4, setup(true), |_| {});
            assert!(plain.0[1] != on_device.0[1] && plain.0[0] == on_device.0[0], "{:?}, {what}", T::DTYPE);
        }
    }
    compare::<f32>(false);
    compare::<f64>(false);
    compare::<bf16>(false);
    compare::<f16>(false);
    compare::<bf16>(true);
    compare::<f16>(true);
}

#[test]
fn checkpoints_carry_the_multipliers() {
    let specs: Vec<VariableSpec> = (0..4).map(|i| VariableSpec::new(NAMES[i], DType::F32, SHAPES[i])).collect();
    let fresh = || {
        let mut opt = Optimizer::new(Config { weight_decay: 0.05, ..Config::default() }).unwrap();
        opt.build(&specs, &[]).unwrap();
        opt
    };
    let mut values: Vec<Vec<f32>> =
        SHAPES.iter().enumerate().map(|(i, s)| noise(i as u64, s.iter().product())).collect();
    let mut opt = fresh();
    // Without multipliers other than 1 the checkpoint holds none, and a load keeps the loader's.
    let plain = opt.save_own_variables().unwrap();
    let mut keeps = fresh();
    keeps.set_multipliers(3, Multipliers { learning_rate: 3.0, weight_decay: 1.0 }).unwrap();
    keeps.load_own_variables(&plain).unwrap();
    assert_eq!(keeps.variable_properties(3).unwrap().multipliers.learning_rate, 3.0);
    opt.set_multipliers(0, Multipliers { learning_rate: 0.25, weight_decay: 0.0 }).unwrap();
    opt.set_multipliers(2, Multipliers { learning_rate: 1.5, weight_decay: 4.0 }).unwrap();
    noise_step(&mut opt, &mut values, 1, None).unwrap();
    let saved = opt.save_own_variables().unwrap();
    let mut loaded = fresh();
    loaded.load_own_variables(&saved).unwrap();
    for i in 0..4 {
        assert_eq!(loaded.variable_properties(i), opt.variable_properties(i), "variable {i}");
    }
    let mut values_loaded = values.clone();
    for seed in 2..4 {
        noise_step(&mut opt, &mut values, seed, None).unwrap();
        noise_step(&mut loaded, &mut values_loaded, seed, None).unwrap();
    }
    assert_eq!(values, values_loaded);
    assert_eq!(opt.save_own_variables().unwrap(), loaded.save_own_variables().unwrap());
}
