//! Resetting one variable's optimizer state (a re-initialized layer): its slots as build made
//! them, the others untouched, and its steps from then on those of an optimizer built fresh
//! with the new values at the same iteration count.

mod common;
use adamw::{Config, DType, Error, Optimizer, TensorRef, VariableSpec};
use common::{noise, noise_step};
use half::bf16;

fn config() -> Config {
    Config { amsgrad: true, use_ema: true, weight_decay: 0.05, ..Config::default() }
}

/// Every optimizer variable by name, as bits.
fn slots(opt: &Optimizer) -> Vec<(String, Vec<u8>)> {
    (0..opt.num_variables())
        .map(|i| {
            let t = opt.variable(i).unwrap();
            (t.info.name.clone(), t.values.as_ref().to_le_bytes())
        })
        .collect()
}

fn step(opt: &mut Optimizer, values: &mut [&mut Vec<f32>], seed: u64) {
    noise_step(opt, values, seed, None).unwrap();
}

#[test]
fn a_reset_variable_steps_as_if_built_fresh_and_the_others_are_untouched() {
    let (n0, n1) = (40_000, 300);
    let mut opt = Optimizer::new(config()).unwrap();
    let (mut a, mut b) = (noise(1, n0), noise(2, n1));
    opt.build(
        &[VariableSpec::new("a", DType::F32, &[n0]), VariableSpec::new("b", DType::F32, &[n1])],
        &[TensorRef::F32(&a), TensorRef::F32(&b)],
    )
    .unwrap();
    for s in 0..3 {
        step(&mut opt, &mut [&mut a, &mut b], s);
    }
    let before = slots(&opt);
    let mut fresh_a = noise(3, n0);
    opt.reset_variable(0, Some(TensorRef::F32(&fresh_a))).unwrap();
    let after = slots(&opt);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        if name.ends_with("/a") {
            let want =
                if name.contains("/average/") { TensorRef::F32(&fresh_a).to_le_bytes() } else { vec![0u8; n0 * 4] };
            assert_eq!(new, &want, "{name} after the reset");
        } else {
            assert_eq!(new, old, "{name} must not change");
        }
    }
    assert_eq!(opt.iterations(), 3);
    // Two more steps: variable a's bits are those of an optimizer built with the new values at
    // iteration 3 (no clip couples the variables).
    a.copy_from_slice(&fresh_a);
    let mut fresh = Optimizer::new(config()).unwrap();
    fresh.set_iterations(3).unwrap();
    fresh.build(&[VariableSpec::new("a", DType::F32, &[n0])], &[TensorRef::F32(&fresh_a)]).unwrap();
    for s in 3..5 {
        step(&mut opt, &mut [&mut a, &mut b], s);
        step(&mut fresh, &mut [&mut fresh_a], s);
    }
    assert_eq!(a, fresh_a);
    let (mine, theirs) = (slots(&opt), slots(&fresh));
    for (name, bits) in theirs.iter().filter(|(n, _)| n.ends_with("/a")) {
        assert_eq!(&mine.iter().find(|(m, _)| m == name).unwrap().1, bits, "{name}");
    }
}

#[test]
fn a_master_restarts_from_the_new_values() {
    let mut opt = Optimizer::new(Config { master_weights: true, ..Config::default() }).unwrap();
    let w: Vec<bf16> = noise(4, 64).iter().map(|&x| bf16::from_f32(x)).collect();
    opt.build(&[VariableSpec::new("w", DType::BF16, &[64])], &[TensorRef::BF16(&w)]).unwrap();
    let new: Vec<bf16> = noise(5, 64).iter().map(|&x| bf16::from_f32(x)).collect();
    opt.reset_variable(0, Some(TensorRef::BF16(&new))).unwrap();
    let master = slots(&opt).into_iter().find(|(n, _)| n.contains("/master/")).unwrap().1;
    let widened: Vec<f32> = new.iter().map(|x| x.to_f32()).collect();
    assert_eq!(master, TensorRef::F32(&widened).to_le_bytes());
}

#[test]
fn bad_resets_are_refused_and_change_nothing() {
    let mut unbuilt = Optimizer::new(config()).unwrap();
    assert!(matches!(unbuilt.reset_variable(0, None), Err(Error::NotBuilt(_))));
    let mut opt = Optimizer::new(config()).unwrap();
    let mut w = noise(6, 10);
    opt.build(&[VariableSpec::new("w", DType::F32, &[10])], &[TensorRef::F32(&w)]).unwrap();
    step(&mut opt, &mut [&mut w], 1);
    let before = opt.save_own_variables().unwrap();
    let wide = vec![0.0f64; 10];
    let e = [
        opt.reset_variable(0, None),                          // EMA needs the values
        opt.reset_variable(0, Some(TensorRef::F64(&wide))),   // another dtype
        opt.reset_variable(0, Some(TensorRef::F32(&w[..9]))), // another length
        opt.reset_variable(1, Some(TensorRef::F32(&w))),      // no such variable
    ];
    assert!(matches!(e[0], Err(Error::InvalidArgument(_))), "{:?}", e[0]);
    assert!(matches!(e[1], Err(Error::DtypeMismatch(_))), "{:?}", e[1]);
    assert!(matches!(e[2], Err(Error::ShapeMismatch(_))), "{:?}", e[2]);
    assert!(matches!(e[3], Err(Error::UnknownVariable(_))), "{:?}", e[3]);
    assert_eq!(opt.save_own_variables().unwrap(), before);
    // Without EMA or a master no values are needed.
    let mut plain = Optimizer::new(Config::default()).unwrap();
    plain.build(&[VariableSpec::new("w", DType::F32, &[10])], &[]).unwrap();
    plain.reset_variable(0, None).unwrap();
}
