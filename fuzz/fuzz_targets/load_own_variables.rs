//! Arbitrary bytes as a checkpoint, into a built optimizer: never a panic, and every rejection
//! leaves the optimizer byte-identical.
#![no_main]
use adamw::{Config, DType, Gradient, Optimizer, TensorMut, TensorRef, GradientEntry, VariableSpec};
use libfuzzer_sys::fuzz_target;

fn optimizer() -> Optimizer {
    let mut opt = Optimizer::new(Config { amsgrad: true, use_ema: true, ..Config::default() }).unwrap();
    let init = [0.5f32; 6];
    opt.build(&[VariableSpec::new("w", DType::F32, &[2, 3]), VariableSpec::new("b", DType::F64, &[3])], &[
        TensorRef::F32(&init),
        TensorRef::F64(&[0.25; 3]),
    ])
    .unwrap();
    let (mut w, mut b) = (init, [0.25f64; 3]);
    let mut u = [
        GradientEntry { variable: 0, values: TensorMut::F32(&mut w), gradient: Some(Gradient::Dense(TensorRef::F32(&[0.1; 6]))) },
        GradientEntry { variable: 1, values: TensorMut::F64(&mut b), gradient: Some(Gradient::Dense(TensorRef::F64(&[0.2; 3]))) },
    ];
    opt.apply_gradients(&mut u[..]).unwrap();
    opt
}

fuzz_target!(|data: &[u8]| {
    let mut opt = optimizer();
    let before = opt.save_own_variables().unwrap();
    if opt.load_own_variables(data).is_err() {
        assert_eq!(before, opt.save_own_variables().unwrap(), "a rejected load changed the optimizer");
    }
});
