//! Keras 3's gradient accumulation (docs/numerics.md §25): the Keras 3 suite at 0 ulp at every
//! thread setting and SIMD level, its config key, its counters, its accumulators in the
//! checkpoint, and what it refuses.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use adamw::{Config, DType, Error, Gradient, GradientEntry, LossScale, Optimizer, TensorMut, TensorRef, VariableSpec};
use common::{dense_entries, noise, noise_step};
use serde_json::Value;

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance").join(file)
}

/// Replays the Keras 3 suite with `flags` and compares it with Keras 3's results at 0 ulp.
/// Keras 3's `get_config` has other keys than the Keras 2 config libadamw writes, so the
/// expected results have no `final.config`: libadamw's is checked here instead (the key is
/// there, with the case's value) and then dropped.
fn check_suite(flags: &[&str]) {
    let cases = data("accumulation_cases.json");
    let replay = Command::new(env!("CARGO_BIN_EXE_adamw-replay")).args(flags).arg(&cases).output().unwrap();
    assert!(replay.status.success(), "adamw-replay failed: {}", String::from_utf8_lossy(&replay.stderr));
    let mut results: Value = serde_json::from_slice(&replay.stdout).unwrap();
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(&cases).unwrap()).unwrap();
    let mut with_config = 0;
    for (result, case) in results.as_array_mut().unwrap().iter_mut().zip(cases.as_array().unwrap()) {
        let Some(final_) = result.get_mut("final").and_then(Value::as_object_mut) else { continue };
        let config = final_.remove("config").expect("a final config");
        assert_eq!(
            config["gradient_accumulation_steps"], case["config"]["gradient_accumulation_steps"],
            "{}: get_config's gradient_accumulation_steps",
            case["id"]
        );
        with_config += 1;
    }
    assert!(with_config >= 20, "only {with_config} cases ran to the end");
    let actual = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("accumulation.results{}.json", flags.join("")));
    std::fs::write(&actual, results.to_string()).unwrap();
    let compare = Command::new(env!("CARGO_BIN_EXE_adamw-compare"))
        .arg("--quiet")
        .arg(data("accumulation_expected.json"))
        .arg(&actual)
        .output()
        .unwrap();
    assert!(
        compare.status.success(),
        "results differ from Keras 3 (adamw-replay {flags:?}):\n{}{}",
        String::from_utf8_lossy(&compare.stdout),
        String::from_utf8_lossy(&compare.stderr)
    );
}

#[test]
fn the_keras3_suite_is_exact_at_every_setting() {
    for flags in [&[][..], &["--threads", "1"][..], &["--threads", "3", "--no-simd"][..]] {
        check_suite(flags);
    }
    for level in adamw::SimdLevel::supported() {
        check_suite(&["--simd", level.name()]);
    }
}

fn accumulating(steps: i64) -> Config {
    Config {
        gradient_accumulation_steps: Some(steps),
        learning_rate: adamw::LearningRate::Constant(0.01),
        ..Config::default()
    }
}

fn built(config: Config, sizes: &[usize]) -> (Optimizer, Vec<Vec<f32>>) {
    let mut opt = Optimizer::new(config).unwrap();
    let values: Vec<Vec<f32>> = sizes.iter().enumerate().map(|(i, &n)| noise(100 + i as u64, n)).collect();
    let specs: Vec<_> =
        sizes.iter().enumerate().map(|(i, &n)| VariableSpec::new(format!("v{i}"), DType::F32, &[n])).collect();
    let initial: Vec<_> = values.iter().map(|v| TensorRef::F32(v)).collect();
    opt.build(&specs, &initial).unwrap();
    (opt, values)
}

/// One call with gradients from `seed` for the variables whose entry in `with` is true (the
/// others listed without one).
fn call(opt: &mut Optimizer, values: &mut [Vec<f32>], seed: u64, with: &[bool]) -> adamw::Result<i64> {
    noise_step(opt, values, seed, Some(with))
}

#[test]
fn counters_are_keras3s() {
    let (mut opt, mut values) = built(accumulating(3), &[50]);
    let before = values.clone();
    for (k, (updates, moved)) in
        [(0, false), (0, false), (1, true), (1, false), (1, false), (2, true)].into_iter().enumerate()
    {
        let snapshot = values.clone();
        assert_eq!(call(&mut opt, &mut values, k as u64, &[true]).unwrap(), updates, "call {k}");
        assert_eq!(opt.iterations(), updates);
        assert_eq!(opt.calls(), k as i64 + 1);
        assert_eq!(values != snapshot, moved, "call {k}: variables moved");
        assert_eq!(opt.step_report().applied, moved, "call {k}: the report");
        // The counter optimizer variable is Keras 3's `_iterations`: the calls.
        assert_eq!(opt.variable(0).unwrap().values.as_ref().typed::<i64>().unwrap(), &[k as i64 + 1]);
    }
    assert_ne!(values, before);
    // A preset counts updates: the calls start at iterations * steps.
    let mut preset = Optimizer::new(accumulating(3)).unwrap();
    preset.set_iterations(4).unwrap();
    assert_eq!((preset.iterations(), preset.calls()), (4, 12));
    let overflow = Optimizer::new(accumulating(3)).unwrap().set_iterations(i64::MAX / 2);
    assert!(matches!(overflow, Err(Error::InvalidArgument(_))), "{overflow:?}");
}

#[test]
fn the_checkpoint_holds_the_accumulators_and_a_restored_run_continues_exactly() {
    let config = Config { use_ema: true, amsgrad: true, ..accumulating(4) };
    let (mut opt, mut values) = built(config.clone(), &[3000, 17]);
    for k in 0..6 {
        call(&mut opt, &mut values, k, &[true, k % 3 != 1]).unwrap();
    }
    let names: Vec<String> = (0..opt.num_variables()).map(|i| opt.variable_info(i).unwrap().name).collect();
    assert_eq!(&names[names.len() - 2..], ["AdamW/gradient_accumulator/v0", "AdamW/gradient_accumulator/v1"]);
    // Mid-window (6 calls of 4): the accumulators hold two calls' gradients.
    let last = opt.variable(opt.num_variables() - 2).unwrap();
    assert!(last.values.as_ref().typed::<f32>().unwrap().iter().any(|&x| x != 0.0));
    let bytes = opt.save_own_variables().unwrap();
    let (mut restored, _) = built(config.clone(), &[3000, 17]);
    restored.load_own_variables(&bytes).unwrap();
    assert_eq!((restored.iterations(), restored.calls()), (1, 6));
    let mut values_restored = values.clone();
    for k in 6..11 {
        call(&mut opt, &mut values, k, &[true, true]).unwrap();
        call(&mut restored, &mut values_restored, k, &[true, true]).unwrap();
    }
    assert_eq!(values, values_restored);
    assert_eq!(opt.save_own_variables().unwrap(), restored.save_own_variables().unwrap());
    // Another window length holds the same variables: it loads (as in Keras 3) and counts the
    // calls by its own window.
    let (mut other, _) = built(Config { use_ema: true, amsgrad: true, ..accumulating(2) }, &[3000, 17]);
    other.load_own_variables(&bytes).unwrap();
    assert_eq!((other.iterations(), other.calls()), (3, 6));
    // Without accumulation there are fewer optimizer variables.
    let (mut plain, _) = built(Config { use_ema: true, amsgrad: true, ..Config::default() }, &[3000, 17]);
    assert!(matches!(plain.load_own_variables(&bytes), Err(Error::CheckpointMismatch(_))));
    // Keras 2's files have no place for them.
    assert!(matches!(opt.keras_variables(), Err(Error::InvalidArgument(_))));
}

#[test]
fn the_config_key_round_trips_and_appears_only_when_set() {
    let opt = Optimizer::new(accumulating(5)).unwrap();
    let json = opt.get_config();
    assert_eq!(json["gradient_accumulation_steps"], 5);
    let again = Optimizer::from_config_json(&json.to_string()).unwrap();
    assert_eq!(again.get_config(), json);
    assert!(Optimizer::new(Config::default()).unwrap().get_config().get("gradient_accumulation_steps").is_none());
    // Keras 3's own config, with its `loss_scale_factor` (only null is understood).
    let keras3 = r#"{"name":"adam_w","learning_rate":0.0010000000474974513,"weight_decay":0.004,"clipnorm":null,"global_clipnorm":null,"clipvalue":null,"use_ema":false,"ema_momentum":0.99,"ema_overwrite_frequency":null,"loss_scale_factor":null,"gradient_accumulation_steps":2,"beta_1":0.9,"beta_2":0.999,"epsilon":1e-07,"amsgrad":false}"#;
    assert_eq!(Optimizer::from_config_json(keras3).unwrap().config().gradient_accumulation_steps, Some(2));
    let scaled = keras3.replace(r#""loss_scale_factor":null"#, r#""loss_scale_factor":128.0"#);
    assert!(matches!(Optimizer::from_config_json(&scaled), Err(Error::InvalidConfig(_))));
}

#[test]
fn bad_settings_are_refused_with_nothing_changed() {
    for bad in ["0", "1", "-2", "2.0", "2147483648", "true", "\"2\""] {
        let json = format!(r#"{{"gradient_accumulation_steps": {bad}}}"#);
        let err = Optimizer::from_config_json(&json).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_) | Error::InvalidConfig(_)), "{bad}: {err:?}");
    }
    assert!(Optimizer::from_config_json(r#"{"gradient_accumulation_steps": null}"#).is_ok());
    let mut opt = Optimizer::new(Config::default()).unwrap();
    for bad in [1, 0, -3, 1 << 40] {
        assert!(matches!(opt.set_gradient_accumulation_steps(Some(bad)), Err(Error::InvalidArgument(_))), "{bad}");
    }
    assert_eq!(opt.config().gradient_accumulation_steps, None);
    // Combinations Keras 3 has no counterpart for, either way round.
    let scaled = Config { loss_scale: Some(LossScale::default()), ..Config::default() };
    let mut opt = Optimizer::new(scaled).unwrap();
    assert!(matches!(opt.set_gradient_accumulation_steps(Some(2)), Err(Error::InvalidArgument(_))));
    assert!(Optimizer::new(Config { loss_scale: Some(LossScale::default()), ..accumulating(2) }).is_err());
    let mut opt = Optimizer::new(accumulating(2)).unwrap();
    assert!(matches!(opt.set_master_weights(true), Err(Error::InvalidArgument(_))));
    assert!(matches!(opt.set_loss_scale(Some(LossScale::default())), Err(Error::InvalidArgument(_))));
    #[cfg(feature = "host-kernels")]
    assert!(matches!(opt.set_device(adamw::Device::HostKernels), Err(Error::InvalidArgument(_))));
    assert!(!opt.config().master_weights && opt.config().loss_scale.is_none() && !opt.on_device());
    // After build, the accumulators exist or not: no change.
    let (mut opt, _) = built(accumulating(2), &[4]);
    assert!(matches!(opt.set_gradient_accumulation_steps(None), Err(Error::AlreadyBuilt(_))));
}

#[test]
fn with_ema_every_call_lists_every_variable() {
    let (mut opt, mut values) = built(Config { use_ema: true, ..accumulating(2) }, &[8, 3]);
    call(&mut opt, &mut values, 1, &[true, true]).unwrap();
    let before = opt.save_own_variables().unwrap();
    let snapshot = values.clone();
    let grads = noise(7, 8);
    let mut only_first = [GradientEntry {
        variable: 0,
        values: TensorMut::F32(&mut values[0]),
        gradient: Some(Gradient::Dense(TensorRef::F32(&grads))),
    }];
    let err = opt.apply_gradients(&mut only_first[..]).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("`v1`")), "{err:?}");
    assert_eq!(opt.save_own_variables().unwrap(), before);
    assert_eq!(values, snapshot);
    assert_eq!(opt.calls(), 1);
    // Listed without a gradient, it is fine.
    call(&mut opt, &mut values, 2, &[true, false]).unwrap();
    assert_eq!(opt.calls(), 2);
}

#[test]
fn a_reset_variable_drops_its_accumulated_gradients() {
    let (mut opt, mut values) = built(accumulating(2), &[6, 6]);
    call(&mut opt, &mut values, 1, &[true, true]).unwrap();
    opt.reset_variable(0, None).unwrap();
    let index = opt.num_variables() - 2;
    assert_eq!(opt.variable(index).unwrap().values.as_ref().typed::<f32>().unwrap(), &[0.0; 6]);
    assert!(opt.variable(index + 1).unwrap().values.as_ref().typed::<f32>().unwrap().iter().any(|&x| x != 0.0));
}

#[test]
fn the_guard_checks_every_call_before_it_accumulates() {
    let config = Config { reject_non_finite_gradients: true, ..accumulating(2) };
    let (mut opt, mut values) = built(config, &[40_000, 5]);
    for (k, bad_call) in [(0u64, false), (1, true), (2, false), (3, true)] {
        // The first call of a window accumulates; the second updates: a NaN is refused at both.
        let before = (opt.save_own_variables().unwrap(), values.clone(), opt.calls());
        let mut grads: Vec<Vec<f32>> =
            values.iter().enumerate().map(|(i, v)| noise(k * 10 + i as u64, v.len())).collect();
        grads[0][12_345] = f32::NAN;
        let mut entries = dense_entries(&mut values, &grads);
        let err = opt.apply_gradients(&mut entries[..]).unwrap_err();
        assert!(matches!(&err, Error::NonFiniteGradient(m) if m.contains("element 12345")), "{err:?}");
        assert_eq!((opt.save_own_variables().unwrap(), values.clone(), opt.calls()), before, "call {k}");
        call(&mut opt, &mut values, k, &[true, true]).unwrap();
        assert_eq!(opt.step_report().applied, bad_call, "call {k} after the refusal");
    }
}
