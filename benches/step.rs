//! Criterion benchmarks of one optimizer step (measure only; nothing here asserts a time).
//!
//! `cargo bench --bench step` runs them all (long: the 64M sizes need several GB and minutes);
//! `cargo bench --bench step -- 'plain/1M'` picks some. Groups:
//! - `<mode>/<size>/<threads>t`: one float32 variable of 1K, 64K, 1M, 16M, 64M parameters, modes
//!   plain, amsgrad, ema, sparse (1% of rows of a [n/64, 64] variable), on 1 and 2 threads;
//! - `multi/100x1K/<threads>t`: 100 variables of 1K parameters in one call.
use std::hint::black_box;

use adamw::{Config, DType, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [(&str, usize); 5] =
    [("1K", 1 << 10), ("64K", 1 << 16), ("1M", 1 << 20), ("16M", 1 << 24), ("64M", 1 << 26)];

fn config(mode: &str, threads: usize) -> Config {
    let base = Config { threads, ..Config::default() };
    match mode {
        "amsgrad" => Config { amsgrad: true, ..base },
        "ema" => Config { use_ema: true, ..base },
        _ => base,
    }
}

fn steps(c: &mut Criterion) {
    for mode in ["plain", "amsgrad", "ema", "sparse"] {
        let mut group = c.benchmark_group(mode);
        group.sample_size(10);
        for (label, n) in SIZES {
            for threads in [1, 2] {
                let cols = 64;
                let shape = if mode == "sparse" { vec![n / cols, cols] } else { vec![n] };
                let mut opt = Optimizer::new(config(mode, threads)).unwrap();
                let init = vec![0.5f32; n];
                opt.build(&[VariableSpec::new("w", DType::F32, &shape)], &[TensorRef::F32(&init)]).unwrap();
                let mut w = init.clone();
                let grad: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
                let rows = (n / cols / 100).max(1);
                let indices: Vec<i64> = (0..rows).map(|r| ((r * 97) % (n / cols)) as i64).collect();
                let values = vec![0.1f32; rows * cols];
                opt.reserve_sparse(rows).unwrap();
                group.throughput(Throughput::Elements(n as u64));
                group.bench_function(format!("{label}/{threads}t"), |b| {
                    b.iter(|| {
                        let gradient = if mode == "sparse" {
                            Gradient::Sparse { indices: &indices, values: TensorRef::F32(&values) }
                        } else {
                            Gradient::Dense(TensorRef::F32(&grad))
                        };
                        let mut u =
                            [GradientEntry { variable: 0, values: TensorMut::F32(&mut w), gradient: Some(gradient) }];
                        black_box(opt.apply_gradients(&mut u[..]).unwrap());
                    })
                });
            }
        }
        group.finish();
    }
}

fn many_variables(c: &mut Criterion) {
    let mut group = c.benchmark_group("multi");
    let (count, n) = (100, 1 << 10);
    for threads in [1, 2] {
        let mut opt = Optimizer::new(config("plain", threads)).unwrap();
        let specs: Vec<VariableSpec> =
            (0..count).map(|i| VariableSpec::new(format!("w{i}"), DType::F32, &[n])).collect();
        opt.build(&specs, &[]).unwrap();
        let mut ws = vec![vec![0.5f32; n]; count];
        let grad = vec![0.01f32; n];
        group.throughput(Throughput::Elements((count * n) as u64));
        group.bench_function(format!("100x1K/{threads}t"), |b| {
            b.iter(|| {
                let mut updates: Vec<GradientEntry<'_>> = ws
                    .iter_mut()
                    .enumerate()
                    .map(|(i, w)| GradientEntry {
                        variable: i,
                        values: TensorMut::F32(w),
                        gradient: Some(Gradient::Dense(TensorRef::F32(&grad))),
                    })
                    .collect();
                black_box(opt.apply_gradients(&mut updates[..]).unwrap());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, steps, many_variables);
criterion_main!(benches);
