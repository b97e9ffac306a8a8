//! Variables added after build: their state starts as build makes it, so an optimizer that adds
//! a variable after k steps steps it, bit for bit, as one built over it from the start that
//! listed it without a gradient for those k steps (Keras leaves such a variable alone, and its
//! bias correction, like the added one's, uses the optimizer's iterations).

mod common;
use adamw::{Config, DType, Error, Optimizer, TensorRef, VariableSpec};
use common::{noise, noise_step};

fn config() -> Config {
    Config { amsgrad: true, use_ema: true, weight_decay: 0.05, ..Config::default() }
}

/// One call: gradients from `seed` for the variables marked in `with`, the others listed
/// without one.
fn step(opt: &mut Optimizer, values: &mut [Vec<f32>], seed: u64, with: &[bool]) {
    noise_step(opt, values, seed, Some(with)).unwrap();
}

fn specs() -> Vec<VariableSpec> {
    vec![VariableSpec::new("dense/kernel", DType::F32, &[300, 70]), VariableSpec::new("dense/bias", DType::F32, &[70])]
}

#[test]
fn an_added_variable_steps_as_one_built_from_the_start_without_gradients() {
    let initial = vec![noise(1, 21_000), noise(2, 70)];
    let mut from_start = Optimizer::new(config()).unwrap();
    from_start.build(&specs(), &[TensorRef::F32(&initial[0]), TensorRef::F32(&initial[1])]).unwrap();
    let mut late = Optimizer::new(config()).unwrap();
    late.build(&specs()[..1], &[TensorRef::F32(&initial[0])]).unwrap();
    let (mut a, mut b) = (initial.clone(), vec![initial[0].clone()]);
    for k in 0..3 {
        step(&mut from_start, &mut a, k, &[true, false]);
        step(&mut late, &mut b, k, &[true]);
    }
    late.add_variables(&specs()[1..], &[TensorRef::F32(&initial[1])]).unwrap();
    b.push(initial[1].clone());
    assert_eq!(late.num_built_variables(), 2);
    assert_eq!(late.built_variable_name(1), Some("dense/bias"));
    for k in 3..7 {
        step(&mut from_start, &mut a, k, &[true, true]);
        step(&mut late, &mut b, k, &[true, true]);
    }
    assert_eq!(a, b);
    assert_eq!(from_start.save_own_variables().unwrap(), late.save_own_variables().unwrap());
}

#[test]
fn exclusion_rules_apply_to_added_variables() {
    let mut opt = Optimizer::new(Config { weight_decay_min_ndim: 2, ..Config::default() }).unwrap();
    opt.exclude_from_weight_decay(&[], &["norm"]).unwrap();
    opt.build(&[VariableSpec::new("w", DType::F32, &[2, 2])], &[]).unwrap();
    opt.add_variables(
        &[
            VariableSpec::new("head/kernel", DType::F32, &[2, 3]),
            VariableSpec::new("head/bias", DType::F32, &[3]),
            VariableSpec::new("head/norm_scale", DType::F32, &[3, 3]),
        ],
        &[],
    )
    .unwrap();
    let decayed: Vec<bool> = (0..4).map(|i| opt.variable_properties(i).unwrap().decayed).collect();
    assert_eq!(decayed, [true, true, false, false]);
}

#[test]
fn checkpoints_load_only_into_the_same_variables() {
    let mut opt = Optimizer::new(Config::default()).unwrap();
    opt.build(&specs()[..1], &[]).unwrap();
    let mut values = vec![noise(1, 21_000)];
    step(&mut opt, &mut values, 1, &[true]);
    let before = opt.save_own_variables().unwrap();
    opt.add_variables(&specs()[1..], &[]).unwrap();
    values.push(noise(2, 70));
    step(&mut opt, &mut values, 2, &[true, true]);
    let after = opt.save_own_variables().unwrap();
    assert!(matches!(opt.load_own_variables(&before), Err(Error::CheckpointMismatch(_))));
    assert_eq!(opt.save_own_variables().unwrap(), after, "a refused load changed nothing");
    let mut same = Optimizer::new(Config::default()).unwrap();
    same.build(&specs(), &[]).unwrap();
    same.load_own_variables(&after).unwrap();
    assert_eq!(same.save_own_variables().unwrap(), after);
    assert_eq!(same.iterations(), 2);
}

#[test]
fn bad_additions_change_nothing() {
    let mut unbuilt = Optimizer::new(Config::default()).unwrap();
    assert!(matches!(unbuilt.add_variables(&specs(), &[]), Err(Error::NotBuilt(_))));
    let mut opt = Optimizer::new(Config { use_ema: true, ..Config::default() }).unwrap();
    let w = noise(1, 21_000);
    opt.build(&specs()[..1], &[TensorRef::F32(&w)]).unwrap();
    let checkpoint = opt.save_own_variables().unwrap();
    let bias = noise(2, 70);
    let cases: Vec<(Vec<VariableSpec>, Vec<TensorRef>, &str)> = vec![
        (specs()[..1].to_vec(), vec![TensorRef::F32(&w)], "exists"),
        (
            vec![VariableSpec::new("a", DType::F32, &[70]), VariableSpec::new("a", DType::F32, &[70])],
            vec![TensorRef::F32(&bias), TensorRef::F32(&bias)],
            "exists",
        ),
        (specs()[1..].to_vec(), vec![], "initial value"),
        (vec![VariableSpec::new("b", DType::F32, &[71])], vec![TensorRef::F32(&bias)], "elements"),
        (vec![VariableSpec::new("b", DType::I64, &[70])], vec![TensorRef::F32(&bias)], "dtype"),
        (vec![VariableSpec::new("b", DType::F32, &[usize::MAX / 2, 4])], vec![TensorRef::F32(&bias)], "too many"),
        (vec![VariableSpec::new("b", DType::F32, &[70]).sharded(0, 10)], vec![TensorRef::F32(&bias)], "mesh"),
    ];
    for (specs, initial, why) in cases {
        let err = opt.add_variables(&specs, &initial).unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
        assert_eq!(opt.num_built_variables(), 1);
        assert_eq!(opt.save_own_variables().unwrap(), checkpoint);
    }
}

#[cfg(feature = "host-kernels")]
#[test]
fn a_device_optimizer_adds_none() {
    let mut opt = Optimizer::new(Config::default()).unwrap();
    opt.set_device(adamw::Device::HostKernels).unwrap();
    opt.build(&specs()[..1], &[]).unwrap();
    assert!(matches!(opt.add_variables(&specs()[1..], &[]), Err(Error::InvalidArgument(_))));
    assert_eq!(opt.num_built_variables(), 1);
}

#[test]
fn added_variables_get_accumulators() {
    let mut opt = Optimizer::new(Config { gradient_accumulation_steps: Some(2), ..Config::default() }).unwrap();
    opt.build(&specs()[..1], &[]).unwrap();
    opt.add_variables(&specs()[1..], &[]).unwrap();
    let last = opt.variable_info(opt.num_variables() - 1).unwrap();
    assert_eq!(last.name, "AdamW/gradient_accumulator/dense/bias");
    let mut values = vec![noise(1, 21_000), noise(2, 70)];
    step(&mut opt, &mut values, 1, &[true, true]);
    step(&mut opt, &mut values, 2, &[true, true]);
    assert_eq!(opt.iterations(), 1);
}
