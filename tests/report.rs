//! The step report (docs/numerics.md §23): applied or skipped, the loss scale and clip factor,
//! and the gradient norms, Keras' own under a clip by norm, else summed in the update pass in
//! libadamw's documented order, the same bits for every thread count and SIMD level.

mod common;
use adamw::{
    Config, DType, Error, Gradient, GradientEntry, LossScale, NormSource, Optimizer, SimdLevel, TensorMut, TensorRef,
    VariableSpec,
};
use common::{dense_entries, documented_sum, documented_sum_wide, noise};
use half::{bf16, f16};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

const LENS: [usize; 3] = [1000, 40, 100_000];

fn specs(dtype: DType) -> Vec<VariableSpec> {
    LENS.iter().enumerate().map(|(i, &n)| VariableSpec::new(format!("v{i}"), dtype, &[n])).collect()
}

/// Builds over float32 variables of `LENS`, takes `steps` steps with gradients times `scale`
/// (the third variable's gradient left out of the last step), and returns the optimizer.
fn stepped(config: Config, report: bool, steps: u64, scale: f32) -> (Optimizer, Vec<Vec<f32>>) {
    let mut opt = Optimizer::new(config).unwrap();
    opt.set_report_norms(report);
    opt.build(&specs(DType::F32), &[]).unwrap();
    let mut values: Vec<Vec<f32>> = LENS.iter().map(|&n| vec![0.5; n]).collect();
    let mut grads: Vec<Vec<f32>> = Vec::new();
    for step in 0..steps {
        grads = LENS
            .iter()
            .enumerate()
            .map(|(i, &n)| noise(7 * step + i as u64, n).iter().map(|g| g * scale).collect::<Vec<f32>>())
            .collect();
        let listed = if step + 1 == steps { 2 } else { 3 };
        let mut entries = dense_entries(&mut values[..listed], &grads);
        opt.apply_gradients(&mut entries[..]).unwrap();
    }
    (opt, grads)
}

fn true_norm(g: &[f32]) -> f64 {
    g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

#[test]
fn without_a_clip_the_update_pass_gives_the_documented_norms() {
    for threads in [1, 3] {
        let config = Config { threads, ..Config::default() };
        let (opt, grads) = stepped(config.clone(), true, 3, 1.0);
        let report = opt.step_report();
        assert_eq!((report.iterations, report.applied, report.norms), (3, true, NormSource::UpdatePass));
        assert_eq!((report.loss_scale, report.clip_factor), (None, 1.0));
        let norms = opt.gradient_norms();
        let mut total = 0.0;
        for i in 0..2 {
            let sum = documented_sum(&grads[i]);
            assert_eq!(norms[i].to_bits(), sum.sqrt().to_bits(), "variable {i}, {threads} threads");
            total += sum;
        }
        assert!(norms[2].is_nan(), "a variable the last step did not list");
        assert_eq!(report.global_norm.to_bits(), f64::sqrt(total).to_bits());
        // The variables moved exactly as without the report.
        let (plain, _) = stepped(config, false, 3, 1.0);
        assert_eq!(opt.save_own_variables().unwrap(), plain.save_own_variables().unwrap());
        let off = plain.step_report();
        assert_eq!(off.norms, NormSource::None);
        assert!(off.global_norm.is_nan() && plain.gradient_norms().iter().all(|x| x.is_nan()));
    }
}

#[test]
fn tiny_squares_count_as_zero_as_the_step_flushes_them() {
    // Gradients below 2e-19: the squares of about half of them are float32 subnormals, which
    // the step's flush-to-zero arithmetic drops, on every SIMD level.
    for level in SimdLevel::supported() {
        adamw::set_simd_level(Some(level));
        let (opt, grads) = stepped(Config::default(), true, 2, 2e-19);
        adamw::set_simd_level(None);
        let norms = opt.gradient_norms();
        for i in 0..2 {
            let sum = documented_sum(&grads[i]);
            assert_eq!(norms[i].to_bits(), sum.sqrt().to_bits(), "variable {i} at {level:?}");
            assert!(sum > 0.0 && sum.sqrt() < 0.99 * true_norm(&grads[i]), "variable {i}: some squares dropped");
        }
    }
}

#[test]
fn a_variable_of_more_than_256_full_tasks_is_summed_in_tasks_of_whole_groups() {
    // Above 256 tasks of 32768 elements, a task is ceil(n / 256) rounded up to a multiple of 512
    // (33,280 here), so every group of 512 starts at a multiple of 512 of the variable.
    let n = 256 * 32768 + 1000;
    let g = noise(11, n);
    let mut opt = Optimizer::new(Config { threads: 2, ..Config::default() }).unwrap();
    opt.set_report_norms(true);
    opt.build(&[VariableSpec::new("w", DType::F32, &[n])], &[]).unwrap();
    let mut w = vec![0.5f32; n];
    let mut entries = [GradientEntry::dense(0, ArrayViewMut1::from(&mut w[..]), ArrayView1::from(&g[..])).unwrap()];
    opt.apply_gradients(&mut entries[..]).unwrap();
    assert_eq!(opt.gradient_norms()[0].to_bits(), documented_sum(&g).sqrt().to_bits());
}

#[test]
fn the_update_pass_norms_are_the_same_bits_on_every_simd_level() {
    let mut seen = Vec::new();
    for level in SimdLevel::supported() {
        adamw::set_simd_level(Some(level));
        let (opt, _) = stepped(Config::default(), true, 2, 1.0);
        seen.push(opt.gradient_norms().iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        adamw::set_simd_level(None);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

#[test]
fn under_a_clip_by_norm_the_norms_are_kerass() {
    let (opt, grads) = stepped(Config { clipnorm: Some(1.0), ..Config::default() }, false, 2, 1.0);
    let report = opt.step_report();
    assert_eq!((report.norms, report.applied), (NormSource::Clipnorm, true));
    assert!(report.clip_factor.is_nan(), "clipnorm clips per variable");
    for (i, (&got, grad)) in opt.gradient_norms().iter().zip(&grads).take(2).enumerate() {
        let want = true_norm(grad);
        assert!((got - want).abs() <= want * 1e-6, "variable {i}: {got} vs {want}");
    }
    let (opt, grads) = stepped(Config { global_clipnorm: Some(2.0), ..Config::default() }, true, 2, 1.0);
    let report = opt.step_report();
    assert_eq!(report.norms, NormSource::GlobalClipnorm);
    let want = (true_norm(&grads[0]).powi(2) + true_norm(&grads[1]).powi(2)).sqrt();
    assert!((report.global_norm - want).abs() <= want * 1e-6, "{} vs {want}", report.global_norm);
    // Keras' global norm is a float32, and the factor is clip_norm / max(norm, clip_norm) there.
    assert_eq!(report.global_norm, report.global_norm as f32 as f64);
    let factor = 2.0f32 * (1.0f32 / report.global_norm as f32).min(1.0 / 2.0f32);
    assert_eq!(report.clip_factor, factor as f64);
    assert!(report.clip_factor < 1.0, "the test's gradients are clipped");
}

#[test]
fn a_loss_scale_reports_unscaled_norms_and_skipped_steps() {
    let scale = LossScale { dynamic: true, initial_scale: 1024.0, dynamic_growth_steps: 2000 };
    let config = Config { loss_scale: Some(scale), ..Config::default() };
    let (opt, grads) = stepped(config.clone(), true, 2, 1024.0);
    let report = opt.step_report();
    assert_eq!((report.applied, report.loss_scale, report.norms), (true, Some(1024.0), NormSource::UpdatePass));
    let sum = documented_sum(&grads[0]);
    assert_eq!(opt.gradient_norms()[0], sum.sqrt() * (1.0 / 1024.0));
    // An overflowed gradient: the step is skipped, and the report says so.
    let mut opt = opt;
    let mut v = vec![0.5f32; LENS[0]];
    let mut g = vec![1.0f32; LENS[0]];
    g[3] = f32::INFINITY;
    let mut entries = [GradientEntry {
        variable: 0,
        values: TensorMut::F32(&mut v),
        gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
    }];
    opt.apply_gradients(&mut entries[..]).unwrap();
    let report = opt.step_report();
    assert_eq!(
        (report.iterations, report.applied, report.loss_scale, report.norms),
        (3, false, Some(1024.0), NormSource::None)
    );
    assert!(report.global_norm.is_nan() && opt.gradient_norms().iter().all(|x| x.is_nan()));
}

#[test]
fn a_rejected_call_leaves_the_report_as_it_was() {
    let (mut opt, _) = stepped(Config { reject_non_finite_gradients: true, ..Config::default() }, true, 2, 1.0);
    let (before, norms) = (opt.step_report(), opt.gradient_norms().to_vec());
    let mut v = vec![0.5f32; LENS[0]];
    let g = vec![f32::NAN; LENS[0]];
    let mut entries = [GradientEntry {
        variable: 0,
        values: TensorMut::F32(&mut v),
        gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
    }];
    assert!(matches!(opt.apply_gradients(&mut entries[..]), Err(Error::NonFiniteGradient(_))));
    assert_eq!(opt.step_report(), before);
    assert_eq!(
        opt.gradient_norms().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        norms.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn sixteen_bit_and_float64_variables_report_the_documented_norms() {
    // Lengths that end in a partial group and a partial row; each SIMD level (the 16-bit
    // vector loops run at AVX2 and above).
    let lens = [70_001, 1000, 5_003];
    let gb: Vec<bf16> = noise(4, lens[0]).iter().map(|&x| bf16::from_f32(x)).collect();
    let gh: Vec<f16> = noise(5, lens[1]).iter().map(|&x| f16::from_f32(x)).collect();
    let gd: Vec<f64> = noise(6, lens[2]).iter().map(|&x| x as f64 * 1.1).collect();
    let want = [
        documented_sum(&gb.iter().map(|x| x.to_f32()).collect::<Vec<_>>()).sqrt(),
        documented_sum(&gh.iter().map(|x| x.to_f32()).collect::<Vec<_>>()).sqrt(),
        documented_sum_wide(&gd).sqrt(),
    ];
    for level in SimdLevel::supported() {
        adamw::set_simd_level(Some(level));
        let mut opt = Optimizer::new(Config { threads: 2, ..Config::default() }).unwrap();
        opt.set_report_norms(true);
        opt.build(
            &[
                VariableSpec::new("b", DType::BF16, &[lens[0]]),
                VariableSpec::new("h", DType::F16, &[lens[1]]),
                VariableSpec::new("d", DType::F64, &[lens[2]]),
            ],
            &[],
        )
        .unwrap();
        let (mut b, mut h, mut d) = (vec![bf16::ONE; lens[0]], vec![f16::ONE; lens[1]], vec![1.0f64; lens[2]]);
        let mut entries = [
            GradientEntry::dense(0, ArrayViewMut1::from(&mut b[..]), ArrayView1::from(&gb[..])).unwrap(),
            GradientEntry::dense(1, ArrayViewMut1::from(&mut h[..]), ArrayView1::from(&gh[..])).unwrap(),
            GradientEntry::dense(2, ArrayViewMut1::from(&mut d[..]), ArrayView1::from(&gd[..])).unwrap(),
        ];
        opt.apply_gradients(&mut entries[..]).unwrap();
        adamw::set_simd_level(None);
        assert_eq!(opt.gradient_norms(), want, "{level:?}");
    }
}

#[test]
fn masters_and_sparse_gradients_report_their_norms() {
    // Variables with a master copy: the gradient widened exactly, then summed (the whole groups
    // as they are widened, in vector lanes at AVX2 and above), at every SIMD level. 70,000
    // elements on 3 threads: tasks of whole pieces and a last one that ends mid-group.
    for level in SimdLevel::supported() {
        adamw::set_simd_level(Some(level));
        let mut opt = Optimizer::new(Config { master_weights: true, threads: 3, ..Config::default() }).unwrap();
        opt.set_report_norms(true);
        let n = 70_000;
        let init: Vec<bf16> = noise(1, n).iter().map(|&x| bf16::from_f32(x)).collect();
        let init_h: Vec<f16> = noise(4, n).iter().map(|&x| f16::from_f32(x)).collect();
        opt.build(
            &[
                VariableSpec::new("b", DType::BF16, &[n]),
                VariableSpec::new("e", DType::F32, &[50, 4]),
                VariableSpec::new("h", DType::F16, &[n]),
            ],
            &[TensorRef::BF16(&init), TensorRef::F32(&[0.0; 200]), TensorRef::F16(&init_h)],
        )
        .unwrap();
        let (mut b, mut h) = (init.clone(), init_h.clone());
        let g: Vec<bf16> = noise(2, n).iter().map(|&x| bf16::from_f32(x)).collect();
        let gh: Vec<f16> = noise(5, n).iter().map(|&x| f16::from_f32(x)).collect();
        let mut e = vec![0.25f32; 200];
        let (indices, rows) = ([3i64, 7, 3], noise(3, 12));
        let mut entries = [
            GradientEntry::dense(0, ArrayViewMut1::from(&mut b[..]), ArrayView1::from(&g[..])).unwrap(),
            GradientEntry::sparse(
                1,
                ArrayViewMut2::from_shape((50, 4), &mut e[..]).unwrap(),
                &indices,
                ArrayView2::from_shape((3, 4), &rows[..]).unwrap(),
            )
            .unwrap(),
            GradientEntry::dense(2, ArrayViewMut1::from(&mut h[..]), ArrayView1::from(&gh[..])).unwrap(),
        ];
        opt.apply_gradients(&mut entries[..]).unwrap();
        adamw::set_simd_level(None);
        let want_b = documented_sum(&g.iter().map(|x| x.to_f32()).collect::<Vec<_>>()).sqrt();
        // A sparse gradient: its values as passed (a repeated row counted each time), in one task.
        let want_e = documented_sum(&rows).sqrt();
        let want_h = documented_sum(&gh.iter().map(|x| x.to_f32()).collect::<Vec<_>>()).sqrt();
        assert_eq!(opt.gradient_norms(), [want_b, want_e, want_h], "at {level:?}");
    }
}

#[test]
fn a_masters_signaling_nan_gradient_gives_the_same_bits_with_and_without_the_report() {
    // The report's widening loads a master's 16-bit gradient without quieting a signaling NaN
    // (only arithmetic sees it); the plain widening quiets it. The variables' bits must agree.
    let n = 2048;
    let mut g: Vec<bf16> = noise(2, n).iter().map(|&x| bf16::from_f32(x)).collect();
    for (i, bits) in [(5, 0x7f81u16), (700, 0xff93), (1500, 0x7fc1), (2047, 0x7f80)] {
        g[i] = bf16::from_bits(bits);
    }
    let init: Vec<bf16> = noise(1, n).iter().map(|&x| bf16::from_f32(x)).collect();
    for level in SimdLevel::supported() {
        adamw::set_simd_level(Some(level));
        let run = |report: bool| {
            let mut opt = Optimizer::new(Config { master_weights: true, ..Config::default() }).unwrap();
            opt.set_report_norms(report);
            opt.build(&[VariableSpec::new("b", DType::BF16, &[n])], &[TensorRef::BF16(&init)]).unwrap();
            let mut b = init.clone();
            for _ in 0..2 {
                let mut entries =
                    [GradientEntry::dense(0, ArrayViewMut1::from(&mut b[..]), ArrayView1::from(&g[..])).unwrap()];
                opt.apply_gradients(&mut entries[..]).unwrap();
            }
            (b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), opt.gradient_norms().to_vec())
        };
        let ((plain, _), (reported, norms)) = (run(false), run(true));
        adamw::set_simd_level(None);
        assert_eq!(plain, reported, "at {level:?}");
        assert!(plain[5] & 0x7fc0 == 0x7fc0 && plain[700] & 0x7fc0 == 0x7fc0, "NaN gradients make NaN variables");
        assert!(norms[0].is_nan(), "at {level:?}");
    }
}
