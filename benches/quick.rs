//! A quick, dependency-free timing of the dense step (the criterion suite is benches/step.rs):
//! `cargo bench --bench quick`. Prints parameters per second for a few sizes, 1 and 2 threads,
//! next to a memory probe (read 4 arrays, write 3, no division or square root) on the same arrays.
use std::hint::black_box;
use std::time::Instant;

use adamw::{Config, DType, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};

fn probe(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    use rayon::prelude::*;
    p.par_chunks_mut(1 << 16)
        .zip(g.par_chunks(1 << 16))
        .zip(m.par_chunks_mut(1 << 16).zip(v.par_chunks_mut(1 << 16)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let gi = g[i];
                m[i] = m[i] * 0.9 + gi * 0.1;
                v[i] = v[i] * 0.999 + gi * gi * 0.001;
                p[i] -= m[i] * 0.001 + v[i] * 0.0001;
            }
        });
}

fn main() {
    let sizes = [1usize << 10, 1 << 16, 1 << 20, 1 << 25];
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for &n in &sizes {
                let mut opt = Optimizer::new(Config::default()).unwrap();
                opt.build(&[VariableSpec::new("w", DType::F32, &[n])], &[]).unwrap();
                let mut w = vec![0.5f32; n];
                let g: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
                let reps = (1usize << 26) / n + 3;
                let mut step = || {
                    let mut u = [GradientEntry {
                        variable: 0,
                        values: TensorMut::F32(&mut w),
                        gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
                    }];
                    opt.apply_gradients(&mut u[..]).unwrap();
                };
                step();
                let t = Instant::now();
                for _ in 0..reps {
                    step();
                }
                let ours = (n * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
                let (mut p, mut m, mut v) = (vec![0.5f32; n], vec![0f32; n], vec![0f32; n]);
                probe(&mut p, &g, &mut m, &mut v);
                let t = Instant::now();
                for _ in 0..reps {
                    probe(&mut p, &g, &mut m, &mut v);
                }
                let mem = (n * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
                black_box((&p, &w));
                println!(
                    "threads {threads} n {n:>9}: libadamw {ours:6.3} Gparam/s, probe {mem:6.3}, ratio {:.2}",
                    ours / mem
                );
            }
        });
    }
}
