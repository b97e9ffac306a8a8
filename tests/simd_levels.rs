//! Every SIMD level this processor has gives the same bits, in every mode with a loop of its
//! own: float32 and float64, Keras' bfloat16 and float16 arithmetic (vector lanes and portable),
//! master copies, clip norms, value clips, loss scales, amsgrad and EMA, on values that reach
//! float16's subnormals and overflow, with thread counts 1 and 3. (Keras' own numbers are checked
//! through every level by tests/conformance.rs.)
mod common;

use adamw::{Config, DType, Element, Exclusive, Gradient, GradientEntry, LossScale, Optimizer, Shared, SimdLevel};
use common::noise;
use half::{bf16, f16};

/// Every variable's values and every slot after five steps, as bits.
fn run<T: Element>(
    config: &Config,
    dtype: DType,
    n: usize,
    of: impl Fn(f32) -> T,
    bits: impl Fn(T) -> u64,
) -> Vec<u64> {
    let mut opt = Optimizer::new(config.clone()).unwrap();
    // Values across float16's range: ordinary, tiny (subnormal in float16) and large.
    let spread = |seed: u64| -> Vec<T> {
        noise(seed, n).iter().enumerate().map(|(i, &x)| of(x * [1.0, 1e-5, 3e-7, 2.0e3][i % 4])).collect()
    };
    let init = spread(1);
    opt.build(&[adamw::VariableSpec::new("w", dtype, &[n])], &[T::wrap::<Shared<'_>>(&init)]).unwrap();
    let mut w = init;
    for step in 0..5 {
        let g = spread(10 + step);
        let mut u = [GradientEntry {
            variable: 0,
            values: T::wrap::<Exclusive<'_>>(&mut w),
            gradient: Some(Gradient::Dense(T::wrap::<Shared<'_>>(&g))),
        }];
        opt.apply_gradients(&mut u[..]).unwrap();
    }
    let mut out: Vec<u64> = w.into_iter().map(bits).collect();
    out.extend(opt.save_own_variables().unwrap().iter().map(|&x| x as u64));
    out
}

fn configs() -> Vec<Config> {
    let base = Config { weight_decay: 0.004, ..Config::default() };
    vec![
        base.clone(),
        Config { use_ema: true, ema_overwrite_frequency: Some(2), ..base.clone() },
        Config { amsgrad: true, ..base.clone() },
        Config { global_clipnorm: Some(0.5), ..base.clone() },
        Config { clipnorm: Some(0.1), ..base.clone() },
        Config { clipvalue: Some(0.3), ..base.clone() },
        Config { loss_scale: Some(LossScale { initial_scale: 4.0, ..LossScale::default() }), ..base.clone() },
        Config { loss_scale: Some(LossScale::default()), global_clipnorm: Some(1.0), use_ema: true, ..base.clone() },
        Config { master_weights: true, ..base.clone() },
        Config { master_weights: true, global_clipnorm: Some(0.5), loss_scale: Some(LossScale::default()), ..base },
    ]
}

#[test]
fn every_level_gives_the_same_bits() {
    let levels = SimdLevel::supported();
    eprintln!("levels on this processor: {levels:?}");
    // Lengths: whole vectors only, a tail, and large enough to split across threads.
    for n in [64, 1000 + 7, 150_001] {
        for config in configs() {
            let mut runs = Vec::new();
            for &level in &levels {
                adamw::set_simd_level(Some(level));
                for threads in [1, 3] {
                    let config = Config { threads, ..config.clone() };
                    let mut bits = Vec::new();
                    if !config.master_weights {
                        bits.extend(run(&config, DType::F32, n, |x| x, |x| x.to_bits() as u64));
                        bits.extend(run(&config, DType::F64, n, |x| x as f64 * 1.0000001, f64::to_bits));
                    }
                    bits.extend(run(&config, DType::BF16, n, bf16::from_f32, |x| x.to_bits() as u64));
                    bits.extend(run(&config, DType::F16, n, f16::from_f32, |x| x.to_bits() as u64));
                    runs.push((level, threads, bits));
                }
            }
            adamw::set_simd_level(None);
            let (first_level, first_threads, first) = &runs[0];
            for (level, threads, bits) in &runs[1..] {
                let differ = first.iter().zip(bits).position(|(a, b)| a != b);
                assert!(
                    differ.is_none() && first.len() == bits.len(),
                    "n {n}, {config:?}: {level:?} with {threads} threads differs from {first_level:?} with {first_threads} at {differ:?}"
                );
            }
        }
    }
}

#[test]
fn float64_special_values_give_the_same_bits_at_every_level() {
    // float64 runs in AVX-512 lanes (`Doubles`) at the AVX-512 levels and in the compiler's
    // AVX2 loop or the portable loop below: NaNs with payloads (one signaling), infinities,
    // subnormals (flushed), zeros of both signs and the extremes, under amsgrad + EMA and a
    // value clip, with and without the report's sums, at every level.
    let n = 1000 + 7;
    let specials = [
        f64::from_bits(0x7ff8_0000_dead_beef),
        f64::from_bits(0x7ff0_0000_0000_0021),
        f64::INFINITY,
        f64::NEG_INFINITY,
        5e-324,
        -1e-310,
        0.0,
        -0.0,
        f64::MAX,
        f64::MIN_POSITIVE,
    ];
    let gradient: Vec<f64> = noise(3, n)
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % 97 == 5 { specials[i % specials.len()] } else { x as f64 })
        .collect();
    let init: Vec<f64> = noise(4, n)
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % 89 == 3 { specials[i % specials.len()] } else { x as f64 })
        .collect();
    let mut runs = Vec::new();
    for level in SimdLevel::supported() {
        adamw::set_simd_level(Some(level));
        for (clipvalue, report) in [(None, false), (Some(0.3), true)] {
            let config = Config { amsgrad: true, use_ema: true, clipvalue, weight_decay: 0.004, ..Config::default() };
            let mut opt = Optimizer::new(config).unwrap();
            opt.set_report_norms(report);
            opt.build(&[adamw::VariableSpec::new("w", DType::F64, &[n])], &[f64::wrap::<Shared<'_>>(&init)]).unwrap();
            let mut w = init.clone();
            for _ in 0..3 {
                let mut u = [GradientEntry {
                    variable: 0,
                    values: f64::wrap::<Exclusive<'_>>(&mut w),
                    gradient: Some(Gradient::Dense(f64::wrap::<Shared<'_>>(&gradient))),
                }];
                opt.apply_gradients(&mut u[..]).unwrap();
            }
            let mut bits: Vec<u64> = w.iter().map(|x| x.to_bits()).collect();
            bits.extend(opt.save_own_variables().unwrap().iter().map(|&x| x as u64));
            bits.push(opt.gradient_norms()[0].to_bits());
            runs.push(((level, clipvalue), bits));
        }
    }
    adamw::set_simd_level(None);
    for clip in [None, Some(0.3)] {
        let same: Vec<_> = runs.iter().filter(|((_, c), _)| *c == clip).collect();
        for ((level, _), bits) in &same[1..] {
            assert!(*bits == same[0].1, "{level:?}, clipvalue {clip:?}: differs from {:?}", same[0].0.0);
        }
    }
}
