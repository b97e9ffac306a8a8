//! Behaviour of the safe Rust API beyond single numbers: configs written by Keras load and
//! round-trip, results do not depend on the thread count, rejected calls change nothing.

mod common;
use adamw::{Config, DType, Error, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};
use common::noise;
use serde_json::Value;

/// Numeric JSON equality (Keras writes `1` where we write `1.0` for a float learning rate).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q)),
        (Value::Object(x), Value::Object(y)) => x.keys().eq(y.keys()) && x.iter().all(|(k, v)| same_json(v, &y[k])),
        _ => a == b,
    }
}

#[test]
fn every_config_written_by_keras_loads_and_round_trips() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/expected.json");
    let expected: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for case in &expected {
        let Some(config) = case.get("final").and_then(|f| f.get("config")) else { continue };
        let opt = Optimizer::from_config_json(&config.to_string()).unwrap_or_else(|e| panic!("{}: {e}", case["id"]));
        let again = opt.get_config();
        assert!(same_json(config, &again), "{}: get_config differs:\n{config}\n{again}", case["id"]);
        let twice = Optimizer::from_config_json(&again.to_string()).unwrap().get_config();
        assert_eq!(again, twice, "{}: from_config(get_config()) is not the identity", case["id"]);
        checked += 1;
    }
    assert!(checked > 100, "only {checked} configs checked");
}

/// Runs a few steps of every mode on variables large enough for the parallel paths
/// (dense and sparse) and returns all bits: variables and optimizer state.
fn run_large(config: Config) -> Vec<u32> {
    const ROWS: usize = 50_000;
    const COLS: usize = 4; // 200k elements: split across threads
    let mut opt = Optimizer::new(config).unwrap();
    let init_a = noise(1, ROWS * COLS);
    let init_b = noise(2, 300_000);
    opt.build(
        &[
            VariableSpec::new("embedding", DType::F32, &[ROWS, COLS]),
            VariableSpec::new("dense", DType::F32, &[300_000]),
        ],
        &[TensorRef::F32(&init_a), TensorRef::F32(&init_b)],
    )
    .unwrap();
    let (mut a, mut b) = (init_a.clone(), init_b.clone());
    for step in 0..4u64 {
        let indices: Vec<i64> =
            noise(10 + step, 3000).iter().map(|x| ((x + 1.0) * 0.5 * ROWS as f32) as i64 % ROWS as i64).collect();
        let values = noise(20 + step, 3000 * COLS);
        let grad = noise(30 + step, 300_000);
        let mut updates = [
            GradientEntry {
                variable: 0,
                values: TensorMut::F32(&mut a),
                gradient: Some(adamw::Gradient::Sparse { indices: &indices, values: TensorRef::F32(&values) }),
            },
            GradientEntry {
                variable: 1,
                values: TensorMut::F32(&mut b),
                gradient: Some(adamw::Gradient::Dense(TensorRef::F32(&grad))),
            },
        ];
        opt.apply_gradients(&mut updates[..]).unwrap();
    }
    let mut bits: Vec<u32> = a.iter().chain(&b).map(|x| x.to_bits()).collect();
    bits.extend(opt.save_own_variables().unwrap().iter().map(|&x| x as u32));
    bits
}

#[test]
fn results_are_the_same_bits_for_any_thread_count() {
    let configs = [
        Config::default(),
        Config { amsgrad: true, use_ema: true, ema_overwrite_frequency: Some(3), ..Config::default() },
        Config { clipnorm: Some(0.5), ..Config::default() },
        Config { global_clipnorm: Some(1.0), ..Config::default() },
        Config { clipvalue: Some(0.2), ..Config::default() },
    ];
    for config in configs {
        // Called from inside a rayon pool of the caller's (1, 2 and 3 threads); the optimizer's
        // own setting (1: the caller's thread only, 2 and 3: pools of its own); and the SIMD
        // paths off.
        let mut runs: Vec<Vec<u32>> = [1, 2, 3]
            .iter()
            .map(|&threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| run_large(config.clone()))
            })
            .collect();
        for threads in [1, 2, 3] {
            runs.push(run_large(Config { threads, ..config.clone() }));
        }
        adamw::set_simd_enabled(false);
        runs.push(run_large(Config { threads: 2, ..config.clone() }));
        adamw::set_simd_enabled(true);
        assert!(runs.iter().all(|r| *r == runs[0]), "threads or SIMD changed the bits for {config:?}");
    }
}

#[test]
fn rejected_calls_change_nothing() {
    let mut opt = Optimizer::new(Config { amsgrad: true, use_ema: true, ..Config::default() }).unwrap();
    let init = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    opt.build(&[VariableSpec::new("w", DType::F32, &[3, 2])], &[TensorRef::F32(&init)]).unwrap();
    let mut w = init;
    let g = [0.5f32; 6];
    opt.apply_gradients(
        &mut [GradientEntry {
            variable: 0,
            values: TensorMut::F32(&mut w),
            gradient: Some(adamw::Gradient::Dense(TensorRef::F32(&g))),
        }][..],
    )
    .unwrap();
    let before = (opt.save_own_variables().unwrap(), opt.get_config(), w);

    let short = [0.5f32; 5];
    let bad_rows = [0.5f32; 4];
    let attempts: Vec<(Error, &str)> = vec![
        (
            opt.apply_gradients(
                &mut [GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(adamw::Gradient::Dense(TensorRef::F32(&short))),
                }][..],
            )
            .unwrap_err(),
            "short gradient",
        ),
        (
            opt.apply_gradients(
                &mut [GradientEntry {
                    variable: 1,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(adamw::Gradient::Dense(TensorRef::F32(&g))),
                }][..],
            )
            .unwrap_err(),
            "unknown variable",
        ),
        (
            opt.apply_gradients(
                &mut [GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(adamw::Gradient::Sparse { indices: &[0, 3], values: TensorRef::F32(&bad_rows) }),
                }][..],
            )
            .unwrap_err(),
            "row 3 of 3",
        ),
        (
            opt.apply_gradients(
                &mut [GradientEntry { variable: 0, values: TensorMut::F32(&mut w), gradient: None }][..],
            )
            .unwrap_err(),
            "no gradients",
        ),
        (opt.load_own_variables(b"garbage").unwrap_err(), "garbage checkpoint"),
        (
            opt.set_weights(&[adamw::Weight { shape: &[], values: TensorRef::F32(&[1.0]) }]).unwrap_err(),
            "float counter",
        ),
    ];
    let kinds: Vec<String> = attempts.iter().map(|(e, what)| format!("{what}: {e:?}")).collect();
    assert!(matches!(attempts[0].0, Error::ShapeMismatch(_)), "{kinds:?}");
    assert!(matches!(attempts[1].0, Error::UnknownVariable(_)), "{kinds:?}");
    assert!(matches!(attempts[2].0, Error::IndexOutOfRange(_)), "{kinds:?}");
    assert!(matches!(attempts[3].0, Error::NoGradients(_)), "{kinds:?}");
    assert!(matches!(attempts[4].0, Error::InvalidCheckpoint(_)), "{kinds:?}");
    assert!(matches!(attempts[5].0, Error::DtypeMismatch(_)), "{kinds:?}");
    let after = (opt.save_own_variables().unwrap(), opt.get_config(), w);
    assert!(before == after, "a rejected call changed the optimizer or the variable");
}

#[test]
fn checkpoint_of_an_unbuilt_optimizer_holds_the_counter() {
    let mut a = Optimizer::new(Config::default()).unwrap();
    a.set_iterations(41).unwrap();
    let bytes = a.save_own_variables().unwrap();
    let mut b = Optimizer::new(Config::default()).unwrap();
    b.load_own_variables(&bytes).unwrap();
    assert_eq!(b.iterations(), 41);
    // and a built optimizer refuses it: 1 variable against 3
    b.build(&[VariableSpec::new("w", DType::F32, &[2])], &[]).unwrap();
    let err = b.load_own_variables(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the load was refused and nothing changed: the checkpoint holds the state of 0 variables, but the optimizer was built with 1"
    );
}

#[test]
fn the_non_finite_guard_rejects_a_bad_batch_and_changes_nothing() {
    let guarded = Config { reject_non_finite_gradients: true, ..Config::default() };
    let mut opt = Optimizer::new(guarded.clone()).unwrap();
    opt.build(&[VariableSpec::new("w", DType::F32, &[4, 2])], &[]).unwrap();
    let mut w = [1.0f32; 8];
    let good = [0.5f32; 8];
    opt.apply_gradients(
        &mut [GradientEntry {
            variable: 0,
            values: TensorMut::F32(&mut w),
            gradient: Some(adamw::Gradient::Dense(TensorRef::F32(&good))),
        }][..],
    )
    .unwrap();
    let before = (opt.save_own_variables().unwrap(), w);
    for bad_value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut dense = good;
        dense[5] = bad_value;
        let err = opt
            .apply_gradients(
                &mut [GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(adamw::Gradient::Dense(TensorRef::F32(&dense))),
                }][..],
            )
            .unwrap_err();
        assert!(matches!(err, Error::NonFiniteGradient(_)), "{err:?}");
        assert!(err.to_string().contains("element 5"), "{err}");
        let rows = [0.5f32, bad_value];
        let err = opt
            .apply_gradients(
                &mut [GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(adamw::Gradient::Sparse { indices: &[3], values: TensorRef::F32(&rows) }),
                }][..],
            )
            .unwrap_err();
        assert!(matches!(err, Error::NonFiniteGradient(_)), "{err:?}");
        assert!(before == (opt.save_own_variables().unwrap(), w), "a rejected batch changed something");
    }
    assert_eq!(opt.iterations(), 1);
    // The key is in get_config only when on, and from_config reads it back.
    let config = opt.get_config();
    assert_eq!(config["reject_non_finite_gradients"], serde_json::json!(true));
    assert!(Optimizer::from_config_json(&config.to_string()).unwrap().config().reject_non_finite_gradients);
    assert!(Optimizer::new(Config::default()).unwrap().get_config().get("reject_non_finite_gradients").is_none());
    // Off (Keras' behaviour): NaN is accepted and propagates.
    let mut keras = Optimizer::new(Config::default()).unwrap();
    keras.build(&[VariableSpec::new("w", DType::F32, &[2])], &[]).unwrap();
    let mut x = [1.0f32, 1.0];
    keras
        .apply_gradients(
            &mut [GradientEntry {
                variable: 0,
                values: TensorMut::F32(&mut x),
                gradient: Some(adamw::Gradient::Dense(TensorRef::F32(&[f32::NAN, 0.0]))),
            }][..],
        )
        .unwrap();
    assert!(x[0].is_nan() && x[1].is_finite());
}

#[test]
fn resource_limits_are_errors_not_aborts() {
    let mut opt = Optimizer::new(Config::default()).unwrap();
    let before = opt.save_own_variables().unwrap();
    // A name with a NUL cannot cross the C ABI: rejected in Rust too.
    let err = opt.build(&[VariableSpec::new("a\0b", DType::F32, &[2])], &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // An element count that overflows, and one that fits but cannot be allocated (4 TiB).
    let err = opt.build(&[VariableSpec::new("w", DType::F32, &[usize::MAX / 2, 3])], &[]).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err:?}");
    let err = opt.build(&[VariableSpec::new("w", DType::F32, &[1 << 20, 1 << 20])], &[]).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err:?}");
    assert!(!opt.is_built());
    assert_eq!(before, opt.save_own_variables().unwrap());
    opt.build(&[VariableSpec::new("w", DType::F32, &[2])], &[]).unwrap();
}

/// With master weights, a float32 gradient (accumulated in float32) is taken as it is: the
/// widened 16-bit gradient gives the same bits as the 16-bit gradient itself.
#[test]
fn master_weights_take_float32_gradients() {
    use half::bf16;
    let run = |float32_gradient: bool| {
        let mut opt =
            Optimizer::new(Config { master_weights: true, clipnorm: Some(0.5), ..Config::default() }).unwrap();
        let init: Vec<bf16> = noise(3, 64).iter().map(|&x| bf16::from_f32(x)).collect();
        opt.build(&[VariableSpec::new("w", DType::BF16, &[64])], &[TensorRef::BF16(&init)]).unwrap();
        let mut w = init.clone();
        for step in 0..3 {
            let g16: Vec<bf16> = noise(40 + step, 64).iter().map(|&x| bf16::from_f32(x)).collect();
            let g32: Vec<f32> = g16.iter().map(|x| x.to_f32()).collect();
            let gradient = if float32_gradient { TensorRef::F32(&g32) } else { TensorRef::BF16(&g16) };
            let mut entries = [GradientEntry {
                variable: 0,
                values: TensorMut::BF16(&mut w),
                gradient: Some(Gradient::Dense(gradient)),
            }];
            opt.apply_gradients(&mut entries[..]).unwrap();
        }
        (w, opt.save_own_variables().unwrap())
    };
    assert_eq!(run(true), run(false));
    // Without master weights a float32 gradient for a bfloat16 variable is a dtype mismatch.
    let mut opt = Optimizer::new(Config::default()).unwrap();
    opt.build(&[VariableSpec::new("w", DType::BF16, &[2])], &[]).unwrap();
    let (mut w, g) = ([bf16::ONE; 2], [0.5f32; 2]);
    let mut entries = [GradientEntry {
        variable: 0,
        values: TensorMut::BF16(&mut w),
        gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
    }];
    assert!(matches!(opt.apply_gradients(&mut entries[..]), Err(Error::DtypeMismatch(_))));
}

/// With a dynamic loss scale, a call that fails after the finite check (here: the learning-rate
/// callback) leaves the scale and its counter as they were.
#[test]
fn a_failed_call_leaves_the_loss_scale_alone() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let config = Config {
        learning_rate: adamw::LearningRate::Callback(adamw::Callback::new(move |_| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 { Ok(0.01) } else { Err("no rate".into()) }
        })),
        loss_scale: Some(adamw::LossScale { dynamic: true, initial_scale: 64.0, dynamic_growth_steps: 1 }),
        ..Config::default()
    };
    let mut opt = Optimizer::new(config).unwrap();
    opt.build(&[VariableSpec::new("w", DType::F32, &[3])], &[]).unwrap();
    let (mut w, g) = ([1.0f32; 3], [8.0f32; 3]);
    let mut entries = [GradientEntry {
        variable: 0,
        values: TensorMut::F32(&mut w),
        gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
    }];
    assert!(matches!(opt.apply_gradients(&mut entries[..]), Err(Error::CallbackFailed(_))));
    assert_eq!((opt.loss_scale(), opt.iterations()), (Some((64.0, 0)), 0));
}

/// With a clip norm the finite check rides along the norm pass: a non-finite gradient is still
/// found at its element (in a variable large enough to be checked in parallel chunks), and
/// finite gradients whose sum of squares overflows are not taken for non-finite ones.
#[test]
fn the_finite_check_fused_with_the_norms_finds_the_element() {
    for config in [
        Config { reject_non_finite_gradients: true, global_clipnorm: Some(1.0), ..Config::default() },
        Config { reject_non_finite_gradients: true, clipnorm: Some(1.0), ..Config::default() },
        Config { reject_non_finite_gradients: true, ..Config::default() },
    ] {
        let n = 300_001;
        let mut opt = Optimizer::new(config.clone()).unwrap();
        opt.build(&[VariableSpec::new("w", DType::F32, &[n])], &[]).unwrap();
        let mut w = vec![0.5f32; n];
        for (bad, at) in [(f32::NAN, 200_003), (f32::INFINITY, 7), (f32::NEG_INFINITY, n - 1)] {
            let mut g = vec![0.25f32; n];
            g[at] = bad;
            let err = opt
                .apply_gradients(
                    &mut [GradientEntry {
                        variable: 0,
                        values: TensorMut::F32(&mut w),
                        gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
                    }][..],
                )
                .unwrap_err();
            assert!(err.to_string().contains(&format!("at element {at}")), "{config:?}: {err}");
        }
        // 1e30 squared overflows float32: the norm is infinite, the gradients are finite.
        let g = vec![1e30f32; n];
        let steps = opt
            .apply_gradients(
                &mut [GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
                }][..],
            )
            .unwrap();
        assert_eq!(steps, 1, "{config:?}");
    }
}

/// Exclusion patterns read as Python's `re` reads them where the two agree: `\w` and `(?i)` are
/// Unicode-aware; a Unicode property class, which Python lacks, is an invalid pattern.
#[test]
fn exclusion_patterns_read_unicode_as_python_does() {
    let names = ["schicht_ü/kernel", "Ärger/bias", "plain/w"];
    let specs: Vec<VariableSpec> = names.iter().map(|&n| VariableSpec::new(n, DType::F32, &[2])).collect();
    let mut opt = Optimizer::new(Config::default()).unwrap();
    opt.exclude_from_weight_decay(&[], &[r"_\w/", "(?i)^ärger"]).unwrap();
    opt.build(&specs, &[]).unwrap();
    let decayed: Vec<bool> = (0..3).map(|i| opt.variable_properties(i).unwrap().decayed).collect();
    assert_eq!(decayed, [false, false, true]);

    let mut opt = Optimizer::new(Config::default()).unwrap();
    for pattern in [r"\p{L}", r"[\PL]", r"a\\\pL"] {
        let refused = opt.exclude_from_weight_decay(&[], &["bias", pattern]);
        assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("property")), "{refused:?}");
    }
    opt.exclude_from_weight_decay(&[], &[r"\\p"]).unwrap(); // a backslash, then p
}
