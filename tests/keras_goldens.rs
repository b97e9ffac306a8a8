//! The literal expected values of Keras' own optimizer tests (docs/numerics.md §1.4), through the safe Rust
//! API. tf-keras `optimizer_test.py` (testWeightDecay, testClipNorm, testClipValue,
//! testClipGlobalNorm, testMovingAverageOptimizer, testSparseGradientsWorkAsExpected,
//! testSetIterations) and Keras 3 `adamw_test.py` (test_single_step,
//! test_correctness_with_golden). Where a Keras test uses SGD or Adam, or asserts with a
//! tolerance, the exact float32 values tf-keras' AdamW produced for the same setup are used.

// The literals are the exact float64 renderings of the float32 values Keras printed.
#![allow(clippy::excessive_precision)]

use adamw::{Config, DType, Error, GradientEntry, LearningRate, Optimizer, VariableSpec};
use ndarray::{Array1, arr0, arr1};

fn adamw(learning_rate: f64, f: impl FnOnce(&mut Config)) -> Optimizer {
    let mut c = Config { learning_rate: LearningRate::Constant(learning_rate), ..Config::default() };
    f(&mut c);
    Optimizer::new(c).unwrap()
}

fn scalars(opt: &mut Optimizer, names: &[&str]) {
    let specs: Vec<VariableSpec> = names.iter().map(|n| VariableSpec::new(*n, DType::F32, &[])).collect();
    let values = vec![adamw::TensorRef::F32(&[2.0]); names.len()];
    opt.build(&specs, &values).unwrap();
}

#[test]
fn test_weight_decay() {
    // var1 goes through three fresh AdamW(learning_rate=1, weight_decay=0.004) with a zero gradient.
    let mut var1 = arr0(2.0f32);
    let mut var2 = arr0(2.0f32);
    let mut var3 = arr0(2.0f32);
    let zero = arr0(0.0f32);

    let mut opt1 = adamw(1.0, |_| {});
    scalars(&mut opt1, &["var1"]);
    opt1.apply_gradients(&mut [GradientEntry::dense(0, var1.view_mut(), zero.view()).unwrap()][..]).unwrap();
    assert_eq!(var1[()].to_bits(), 1.9919999837875366f32.to_bits());

    let mut opt2 = adamw(1.0, |_| {});
    opt2.exclude_from_weight_decay(&[], &["exclude"]).unwrap();
    scalars(&mut opt2, &["var1", "exclude"]);
    opt2.apply_gradients(
        &mut [
            GradientEntry::dense(0, var1.view_mut(), zero.view()).unwrap(),
            GradientEntry::dense(1, var2.view_mut(), zero.view()).unwrap(),
        ][..],
    )
    .unwrap();
    assert_eq!(var1[()].to_bits(), 1.9840320348739624f32.to_bits());

    let mut opt3 = adamw(1.0, |_| {});
    opt3.exclude_from_weight_decay(&[1], &[]).unwrap();
    scalars(&mut opt3, &["var1", "var3"]);
    opt3.apply_gradients(
        &mut [
            GradientEntry::dense(0, var1.view_mut(), zero.view()).unwrap(),
            GradientEntry::dense(1, var3.view_mut(), zero.view()).unwrap(),
        ][..],
    )
    .unwrap();
    assert_eq!(var1[()], 1.9760959f32); // Keras' literal
    assert_eq!(var1[()].to_bits(), 0x3ffcf0b6);
    assert_eq!(var2[()], 2.0);
    assert_eq!(var3[()], 2.0);
}

#[test]
fn test_moving_average_optimizer() {
    // AdamW(learning_rate=1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=3);
    // three scalars at 2.0, gradients [1, None, 1], three steps; the third overwrites.
    let mut opt = adamw(1.0, |c| {
        c.use_ema = true;
        c.ema_momentum = 0.5;
        c.ema_overwrite_frequency = Some(3);
    });
    scalars(&mut opt, &["var1", "var2", "var3"]);
    let (mut v1, mut v2, mut v3) = (arr0(2.0f32), arr0(2.0f32), arr0(2.0f32));
    let one = arr0(1.0f32);
    let expected_var: [u32; 3] = [0x3f7df45c, 0xbc43b880, 0xbe0a2b7c];
    let expected_avg: [u32; 3] = [0x3fbf7d17, 0x3f3df5a6, 0xbe0a2b7c];
    for step in 0..3 {
        opt.apply_gradients(
            &mut [
                GradientEntry::dense(0, v1.view_mut(), one.view()).unwrap(),
                GradientEntry::no_gradient(1, v2.view_mut()).unwrap(),
                GradientEntry::dense(2, v3.view_mut(), one.view()).unwrap(),
            ][..],
        )
        .unwrap();
        assert_eq!(v1[()].to_bits(), expected_var[step], "var1 after step {}", step + 1);
        assert_eq!(v3[()].to_bits(), expected_var[step]);
        assert_eq!(v2[()], 2.0);
        let adamw::Tensor::F32(avg) = opt.variable(1).unwrap().values else { panic!("float32 average") };
        assert_eq!(avg[0].to_bits(), expected_avg[step], "average after step {}", step + 1);
    }
}

#[test]
fn test_sparse_gradients_work_as_expected() {
    // AdamW(0.002, weight_decay=0.004) on float64 ones([5]): dense [0, 1, 1.5, 0, 0] and the
    // equivalent IndexedSlices give the same bits, and these values.
    let expected = [
        [0.99999199999924, 0.9979920195802179, 0.9979920174720578],
        [0.9999840000624801, 0.9959840533414651, 0.9959840497422525],
        [0.9999760001897197, 0.9939761023158995, 0.9939760974989574],
        [0.9999680003809582, 0.9919681668356032, 0.9919681609638258],
        [0.9999600006361953, 0.9899602470566322, 0.989960240241158],
    ];
    let make = || {
        let mut o = adamw(0.002, |c| c.weight_decay = 0.004);
        o.build(&[VariableSpec::new("x", DType::F64, &[5])], &[]).unwrap();
        o
    };
    let (mut dense_opt, mut sparse_opt) = (make(), make());
    let mut x1 = Array1::<f64>::ones(5);
    let mut x2 = Array1::<f64>::ones(5);
    let grad = arr1(&[0.0, 1.0, 1.5, 0.0, 0.0]);
    let values = arr1(&[1.0, 1.5]);
    let indices = [1i64, 2];
    for [a, b, c] in expected {
        dense_opt.apply_gradients(&mut [GradientEntry::dense(0, x1.view_mut(), grad.view()).unwrap()][..]).unwrap();
        sparse_opt
            .apply_gradients(&mut [GradientEntry::sparse(0, x2.view_mut(), &indices, values.view()).unwrap()][..])
            .unwrap();
        assert_eq!(x1.to_vec(), vec![a, b, c, a, a]);
        assert_eq!(x2.to_vec(), x1.to_vec());
    }
}

#[test]
fn test_set_iterations() {
    let mut opt = adamw(0.001, |_| {});
    opt.set_iterations(2).unwrap();
    assert_eq!(opt.iterations(), 2);
    scalars(&mut opt, &["a", "b"]);
    let (mut a, mut b) = (arr0(2.0f32), arr0(2.0f32));
    let g = arr0(1.0f32);
    let it = opt
        .apply_gradients(
            &mut [
                GradientEntry::dense(0, a.view_mut(), g.view()).unwrap(),
                GradientEntry::dense(1, b.view_mut(), g.view()).unwrap(),
            ][..],
        )
        .unwrap();
    assert_eq!(it, 3);
    assert_eq!(opt.iterations(), 3);
    assert_eq!(a[()].to_bits(), 0x3fffeace);
    assert_eq!(b[()].to_bits(), 0x3fffeace);
    let err = opt.set_iterations(2).unwrap_err();
    assert!(matches!(err, Error::AlreadyBuilt(_)));
    assert!(err.to_string().starts_with("Cannot set"));
}

#[test]
fn keras3_test_single_step() {
    let mut opt = adamw(0.5, |_| {});
    opt.build(&[VariableSpec::new("v", DType::F32, &[4])], &[]).unwrap();
    let mut vars = arr1(&[1.0f32, 2.0, 3.0, 4.0]);
    let grads = arr1(&[1.0f32, 6.0, 7.0, 2.0]);
    opt.apply_gradients(&mut [GradientEntry::dense(0, vars.view_mut(), grads.view()).unwrap()][..]).unwrap();
    let bits: Vec<u32> = vars.iter().map(|x| x.to_bits()).collect();
    assert_eq!(bits, [0x3efefa82, 0x3fbf7d0c, 0x401f9dc1, 0x405f7cff]);
    // Keras' own tolerance check: [0.4980, 1.4960, 2.494, 3.492]
    for (x, k) in vars.iter().zip([0.4980f32, 1.4960, 2.494, 3.492]) {
        assert!((x - k).abs() < 1e-4);
    }
}

#[test]
fn keras3_test_correctness_with_golden() {
    // AdamW(learning_rate=1.0, weight_decay=0.5, epsilon=2); x = ones([10]); one step with
    // full(0.01), then rows checked before each of five steps with arange(0.1, 1.1, 0.1).
    let mut opt = adamw(1.0, |c| {
        c.weight_decay = 0.5;
        c.epsilon = 2.0;
    });
    opt.build(&[VariableSpec::new("x", DType::F32, &[10])], &[]).unwrap();
    let mut x = Array1::<f32>::ones(10);
    let first = Array1::<f32>::from_elem(10, 0.01);
    // np.arange(0.1, 1.1, 0.1) as float32: start + k * step in double, then rounded.
    let grads = Array1::from_iter((0..10).map(|k| (0.1 + k as f64 * 0.1) as f32));
    let golden: [[f32; 10]; 5] = [
        [0.4998418986797333; 10],
        [
            0.2486405223608017,
            0.2474696785211563,
            0.2463025152683258,
            0.245139017701149,
            0.24397918581962585,
            0.24282297492027283,
            0.2416703850030899,
            0.2405213862657547,
            0.2393759787082672,
            0.23823413252830505,
        ],
        [
            0.12232382595539093,
            0.11983229964971542,
            0.11735107004642487,
            0.11488009244203568,
            0.11241929233074188,
            0.10996860265731812,
            0.1075279712677002,
            0.10509732365608215,
            0.10267660021781921,
            0.1002657487988472,
        ],
        [
            0.058611877262592316,
            0.05489656701683998,
            0.051199816167354584,
            0.04752149060368538,
            0.043861448764801025,
            0.04021954536437988,
            0.0365956574678421,
            0.032989632338285446,
            0.029401345178484917,
            0.025830663740634918,
        ],
        [
            0.026292793452739716,
            0.02149713598191738,
            0.016729149967432022,
            0.01198859978467226,
            0.007275245152413845,
            0.0025888383388519287,
            -0.0020708423107862473,
            -0.006704036146402359,
            -0.011310969479382038,
            -0.015891874209046364,
        ],
    ];
    opt.apply_gradients(&mut [GradientEntry::dense(0, x.view_mut(), first.view()).unwrap()][..]).unwrap();
    for row in golden {
        assert_eq!(x.to_vec(), row.to_vec());
        opt.apply_gradients(&mut [GradientEntry::dense(0, x.view_mut(), grads.view()).unwrap()][..]).unwrap();
    }
}
