//! The sparse step over long rows (longer than the step's pieces of 256 elements), with rows
//! repeated in a gradient and rows cut by the thread tasks' boundaries: against the dense step
//! where the two must agree, and against the caller's own sum of a row's duplicates.
mod common;

use adamw::{Config, DType, Element, Exclusive, Gradient, GradientEntry, Optimizer, Shared, TensorRef, VariableSpec};
use common::noise;
use half::bf16;

const ROWS: usize = 600;
const ROW_LEN: usize = 700;

fn optimizer(config: &Config, values: &[f32]) -> Optimizer {
    let mut opt = Optimizer::new(config.clone()).unwrap();
    let spec = VariableSpec::new("table", DType::F32, &[ROWS, ROW_LEN]);
    opt.build(&[spec], &[TensorRef::F32(values)]).unwrap();
    opt
}

fn step<'a, T: Element>(opt: &mut Optimizer, values: &'a mut [T], gradient: Gradient<'a>) {
    let mut entries =
        [GradientEntry { variable: 0, values: T::wrap::<Exclusive<'_>>(values), gradient: Some(gradient) }];
    opt.apply_gradients(&mut entries[..]).unwrap();
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

fn configs() -> Vec<Config> {
    let base = Config { weight_decay: 0.004, learning_rate: adamw::LearningRate::Constant(0.01), ..Config::default() };
    vec![base.clone(), Config { amsgrad: true, use_ema: true, ..base.clone() }, Config { clipvalue: Some(0.5), ..base }]
}

/// On the first step (m and v zero), a sparse gradient naming every row once, in another
/// order, steps every element as the dense gradient does; with 1 and 3 threads (whose tasks
/// cut rows in the middle), in float32 and in Keras' bfloat16 arithmetic.
#[test]
fn long_rows_every_row_once_are_the_dense_step() {
    first_step_as_dense(DType::F32, |x| x, |x| x.to_bits() as u64);
    first_step_as_dense(DType::BF16, bf16::from_f32, |x| x.to_bits() as u64);
}

fn first_step_as_dense<T: Element>(dtype: DType, of: impl Fn(f32) -> T, bits: impl Fn(T) -> u64) {
    let init: Vec<T> = noise(1, ROWS * ROW_LEN).into_iter().map(&of).collect();
    let dense: Vec<T> = noise(2, ROWS * ROW_LEN).into_iter().map(&of).collect();
    let order: Vec<i64> = (0..ROWS as i64).map(|r| (r * 7) % ROWS as i64).collect();
    let rows: Vec<T> = order.iter().flat_map(|&r| dense[r as usize * ROW_LEN..][..ROW_LEN].to_vec()).collect();
    let spec = VariableSpec::new("table", dtype, &[ROWS, ROW_LEN]);
    let build = |config: &Config, values: &[T]| {
        let mut opt = Optimizer::new(config.clone()).unwrap();
        opt.build(std::slice::from_ref(&spec), &[T::wrap::<Shared<'_>>(values)]).unwrap();
        opt
    };
    for config in configs() {
        for threads in [1, 3] {
            // bfloat16 with a beta_2 it tells from 1 (docs/numerics.md §17).
            let config = Config { threads, beta_2: adamw::Beta::Value(0.99), ..config.clone() };
            let (mut a, mut b) = (init.clone(), init.clone());
            let (mut dense_opt, mut sparse_opt) = (build(&config, &a), build(&config, &b));
            step(&mut dense_opt, &mut a, Gradient::Dense(T::wrap::<Shared<'_>>(&dense)));
            step(&mut sparse_opt, &mut b, Gradient::Sparse { indices: &order, values: T::wrap::<Shared<'_>>(&rows) });
            let (a, b): (Vec<u64>, Vec<u64>) = (a.into_iter().map(&bits).collect(), b.into_iter().map(&bits).collect());
            assert_eq!(a, b, "{dtype:?}, {config:?}");
            assert_eq!(dense_opt.save_own_variables().unwrap(), sparse_opt.save_own_variables().unwrap());
        }
    }
}

/// A row given three times gets the sum of its three rows, added in the caller's order from
/// +0.0 (what the caller computes here in float32), over several steps and for 1 and 3 threads;
/// rows without a gradient decay and move in both.
#[test]
fn long_rows_given_twice_or_more_get_their_sum() {
    let init = noise(3, ROWS * ROW_LEN);
    let config =
        Config { weight_decay: 0.004, learning_rate: adamw::LearningRate::Constant(0.01), ..Config::default() };
    let touched: Vec<i64> = vec![5, 599, 0, 5, 300, 5, 299];
    for threads in [1, 3] {
        let config = Config { threads, ..config.clone() };
        let (mut a, mut b) = (init.clone(), init.clone());
        let (mut repeated, mut summed) = (optimizer(&config, &a), optimizer(&config, &b));
        for s in 0..3u64 {
            let given = noise(10 + s, touched.len() * ROW_LEN);
            step(&mut repeated, &mut a, Gradient::Sparse { indices: &touched, values: TensorRef::F32(&given) });
            // Each distinct row once, its values the float32 sum of its duplicates in order.
            let mut distinct: Vec<i64> = Vec::new();
            let mut sums: Vec<Vec<f32>> = Vec::new();
            for (k, &row) in touched.iter().enumerate() {
                let values = &given[k * ROW_LEN..][..ROW_LEN];
                match distinct.iter().position(|&r| r == row) {
                    Some(j) => sums[j].iter_mut().zip(values).for_each(|(s, v)| *s += v),
                    None => {
                        distinct.push(row);
                        sums.push(values.iter().map(|v| 0.0 + v).collect());
                    }
                }
            }
            let flat: Vec<f32> = sums.concat();
            step(&mut summed, &mut b, Gradient::Sparse { indices: &distinct, values: TensorRef::F32(&flat) });
            assert_eq!(bits(&a), bits(&b), "step {s}, {threads} threads");
        }
        assert_eq!(repeated.save_own_variables().unwrap(), summed.save_own_variables().unwrap());
    }
}
