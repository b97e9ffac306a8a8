//! Property tests over random configs, shapes and gradient sequences (proptest):
//! - a call that returns an error changes nothing (compared through save_own_variables and
//!   get_config);
//! - save, load into a fresh optimizer, continue: the same bits as never stopping;
//! - get_config -> from_config -> get_config is the identity;
//! - dense and sparse gradients covering every row once agree bit for bit on the first step
//!   (both of Keras' formulas reduce to `g * (1 - beta)` from zero moments; later steps round
//!   differently by design, spec §1.6).

use adamw::{
    Config, DType, Gradient, GradientEntry, LearningRate, Num, Optimizer, Schedule, TensorMut, TensorRef, VariableSpec,
};
use proptest::prelude::*;

fn config_strategy() -> impl Strategy<Value = Config> {
    (
        (1e-4f64..0.5, -0.1f64..0.5, 0.0f64..0.99, 0.5f64..0.9999, 0.0f64..1e-3),
        (any::<bool>(), any::<bool>(), 0u8..4, 0.1f64..3.0),
        (0.0f64..1.0, 0i64..4, 0u8..3),
    )
        .prop_map(|((lr, wd, b1, b2, eps), (amsgrad, use_ema, clip, clip_value), (ema_m, freq, schedule))| {
            let learning_rate = match schedule {
                0 => LearningRate::Constant(lr),
                1 => LearningRate::Schedule(Schedule::ExponentialDecay {
                    initial_learning_rate: Num::Float(lr),
                    decay_steps: Num::Int(3),
                    decay_rate: Num::Float(0.7),
                    staircase: false,
                    name: None,
                }),
                _ => LearningRate::Schedule(Schedule::CosineDecay {
                    initial_learning_rate: Num::Float(lr),
                    decay_steps: Num::Int(5),
                    alpha: Num::Float(0.1),
                    name: None,
                    warmup_target: None,
                    warmup_steps: Num::Int(0),
                }),
            };
            let mut c = Config {
                learning_rate,
                weight_decay: wd,
                beta_1: adamw::Beta::Value(b1),
                beta_2: adamw::Beta::Value(b2),
                epsilon: eps,
                amsgrad,
                use_ema,
                ema_momentum: ema_m,
                ema_overwrite_frequency: (freq > 0).then_some(freq),
                ..Config::default()
            };
            match clip {
                1 => c.clipnorm = Some(clip_value),
                2 => c.global_clipnorm = Some(clip_value),
                3 => c.clipvalue = Some(clip_value),
                _ => {}
            }
            c
        })
}

/// Shapes of 1 to 3 float32 variables, each of rank 1 to 3 with small dimensions.
fn shapes_strategy() -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(prop::collection::vec(1usize..5, 1..4), 1..4)
}

/// One step's gradients: per variable None, dense, or sparse rows (indices may repeat).
#[derive(Debug, Clone)]
enum Grad {
    None,
    Dense(Vec<f32>),
    Sparse(Vec<i64>, Vec<f32>),
}

fn step_strategy(shapes: Vec<Vec<usize>>) -> impl Strategy<Value = Vec<Grad>> {
    shapes
        .into_iter()
        .map(|shape| {
            let n: usize = shape.iter().product();
            let rows = shape[0];
            let row_len = n / rows;
            prop_oneof![
                1 => Just(Grad::None),
                3 => prop::collection::vec(-2.0f32..2.0, n).prop_map(Grad::Dense),
                2 => prop::collection::vec(0..rows as i64, 1..6).prop_flat_map(move |idx| {
                    let k = idx.len();
                    prop::collection::vec(-2.0f32..2.0, k * row_len).prop_map(move |v| Grad::Sparse(idx.clone(), v))
                }),
            ]
            .boxed()
        })
        .collect::<Vec<_>>()
}

fn build(config: &Config, shapes: &[Vec<usize>], values: &[Vec<f32>]) -> Optimizer {
    let mut opt = Optimizer::new(config.clone()).unwrap();
    let specs: Vec<VariableSpec> =
        shapes.iter().enumerate().map(|(i, s)| VariableSpec::new(format!("v{i}"), DType::F32, s)).collect();
    let init: Vec<TensorRef<'_>> = values.iter().map(|v| TensorRef::F32(v)).collect();
    opt.build(&specs, &init).unwrap();
    opt
}

fn apply(opt: &mut Optimizer, values: &mut [Vec<f32>], grads: &[Grad]) -> adamw::Result<i64> {
    let mut updates: Vec<GradientEntry<'_>> = values
        .iter_mut()
        .zip(grads)
        .enumerate()
        .map(|(i, (v, g))| GradientEntry {
            variable: i,
            values: TensorMut::F32(v),
            gradient: match g {
                Grad::None => None,
                Grad::Dense(d) => Some(Gradient::Dense(TensorRef::F32(d))),
                Grad::Sparse(idx, rows) => Some(Gradient::Sparse { indices: idx, values: TensorRef::F32(rows) }),
            },
        })
        .collect();
    opt.apply_gradients(&mut updates[..])
}

fn bits(values: &[Vec<f32>]) -> Vec<u32> {
    values.iter().flatten().map(|x| x.to_bits()).collect()
}

fn case() -> impl Strategy<Value = (Config, Vec<Vec<usize>>, Vec<Vec<Grad>>)> {
    (config_strategy(), shapes_strategy()).prop_flat_map(|(config, shapes)| {
        let steps = prop::collection::vec(step_strategy(shapes.clone()), 1..6);
        (Just(config), Just(shapes), steps)
    })
}

fn initial(shapes: &[Vec<usize>]) -> Vec<Vec<f32>> {
    shapes.iter().map(|s| (0..s.iter().product::<usize>()).map(|i| (i as f32 * 0.37).sin()).collect()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn failed_calls_change_nothing((config, shapes, steps) in case(), which in 0usize..5) {
        let mut values = initial(&shapes);
        let mut opt = build(&config, &shapes, &values);
        for grads in &steps {
            let _ = apply(&mut opt, &mut values, grads);
        }
        let before = (opt.save_own_variables().unwrap(), opt.get_config(), bits(&values));
        let n0 = values[0].len();
        let bad: Vec<Grad> = match which {
            0 => vec![Grad::Dense(vec![1.0; n0 + 1])],                  // wrong length
            1 => vec![Grad::Sparse(vec![shapes[0][0] as i64], vec![1.0; n0 / shapes[0][0]])], // row out of range
            2 => vec![Grad::Sparse(vec![-1], vec![1.0; n0 / shapes[0][0]])],
            3 => vec![Grad::None],                                        // no gradients at all
            _ => vec![Grad::Sparse(vec![0, 0], vec![1.0; 1])],            // values of the wrong size
        };
        let mut just_first = vec![values[0].clone()];
        prop_assert!(apply(&mut opt, &mut just_first, &bad).is_err());
        prop_assert_eq!(&just_first[0], &values[0]);
        prop_assert!(before == (opt.save_own_variables().unwrap(), opt.get_config(), bits(&values)));
    }

    #[test]
    fn save_load_continue_equals_never_stopping((config, shapes, steps) in case(), cut in 0usize..6) {
        let cut = cut.min(steps.len());
        let mut straight = initial(&shapes);
        let mut a = build(&config, &shapes, &straight);
        for grads in &steps {
            let _ = apply(&mut a, &mut straight, grads);
        }
        let mut resumed = initial(&shapes);
        let mut b = build(&config, &shapes, &resumed);
        for grads in &steps[..cut] {
            let _ = apply(&mut b, &mut resumed, grads);
        }
        let checkpoint = b.save_own_variables().unwrap();
        let mut c = build(&config, &shapes, &initial(&shapes));
        c.load_own_variables(&checkpoint).unwrap();
        for grads in &steps[cut..] {
            let _ = apply(&mut c, &mut resumed, grads);
        }
        prop_assert_eq!(bits(&straight), bits(&resumed));
        prop_assert_eq!(a.save_own_variables().unwrap(), c.save_own_variables().unwrap());
    }

    #[test]
    fn get_config_from_config_round_trips(config in config_strategy()) {
        let first = Optimizer::new(config).unwrap().get_config();
        let second = Optimizer::from_config_json(&first.to_string()).unwrap().get_config();
        prop_assert_eq!(first, second);
    }

    #[test]
    fn dense_and_sparse_covering_every_row_agree_on_the_first_step(
        config in config_strategy(),
        shape in prop::collection::vec(1usize..5, 1..4),
        seed in any::<u64>(),
    ) {
        // A norm over the rows in another order sums in another order, so norm clipping is left out
        // (clipvalue stays: it is element-wise).
        let config = Config { clipnorm: None, global_clipnorm: None, ..config };
        let n: usize = shape.iter().product();
        let rows = shape[0];
        let g: Vec<f32> = (0..n).map(|i| (((i as u64).wrapping_mul(seed | 1) >> 7) % 1000) as f32 / 250.0 - 2.0).collect();
        let order: Vec<i64> = (0..rows as i64).rev().collect(); // every row once, in another order
        let row_len = n / rows;
        let sparse_rows: Vec<f32> = order.iter().flat_map(|&r| g[r as usize * row_len..][..row_len].to_vec()).collect();
        let shapes = vec![shape];
        let mut dense_values = initial(&shapes);
        let mut sparse_values = initial(&shapes);
        let mut dense = build(&config, &shapes, &dense_values);
        let mut sparse = build(&config, &shapes, &sparse_values);
        apply(&mut dense, &mut dense_values, &[Grad::Dense(g)]).unwrap();
        apply(&mut sparse, &mut sparse_values, &[Grad::Sparse(order, sparse_rows)]).unwrap();
        prop_assert_eq!(bits(&dense_values), bits(&sparse_values));
        prop_assert_eq!(dense.save_own_variables().unwrap(), sparse.save_own_variables().unwrap());
    }
}
