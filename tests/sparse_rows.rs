//! The sparse step over long rows (longer than the step's pieces of 256 elements), with rows
//! repeated in a gradient and rows cut by the thread tasks' boundaries: against the dense step
//! where the two must agree, and against the caller's own sum of a row's duplicates.
mod common;

use adamw::{Config, DType, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};
use common::noise;

const ROWS: usize = 600;
const ROW_LEN: usize = 700;

fn optimizer(config: &Config, values: &[f32]) -> Optimizer {
    let mut opt = Optimizer::new(config.clone()).unwrap();
    let spec = VariableSpec::new("table", DType::F32, &[ROWS, ROW_LEN]);
    opt.build(&[spec], &[TensorRef::F32(values)]).unwrap();
    opt
}

fn step<'a>(opt: &mut Optimizer, values: &'a mut [f32], gradient: Gradient<'a>) {
    let mut entries = [GradientEntry { variable: 0, values: TensorMut::F32(values), gradient: Some(gradient) }];
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
/// cut rows in the middle).
#[test]
fn long_rows_every_row_once_are_the_dense_step() {
    let init = noise(1, ROWS * ROW_LEN);
    let dense = noise(2, ROWS * ROW_LEN);
    let order: Vec<i64> = (0..ROWS as i64).map(|r| (r * 7) % ROWS as i64).collect();
    let rows: Vec<f32> = order.iter().flat_map(|&r| dense[r as usize * ROW_LEN..][..ROW_LEN].to_vec()).collect();
    for config in configs() {
        for threads in [1, 3] {
            let config = Config { threads, ..config.clone() };
            let (mut a, mut b) = (init.clone(), init.clone());
            let (mut dense_opt, mut sparse_opt) = (optimizer(&config, &a), optimizer(&config, &b));
            step(&mut dense_opt, &mut a, Gradient::Dense(TensorRef::F32(&dense)));
            step(&mut sparse_opt, &mut b, Gradient::Sparse { indices: &order, values: TensorRef::F32(&rows) });
            assert_eq!(bits(&a), bits(&b), "{config:?}");
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
