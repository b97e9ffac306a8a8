//! A quick, dependency-free timing of the dense step (the criterion suite is benches/step.rs):
//! `cargo bench --bench quick`. Prints parameters per second for a few sizes, 1 and 2 threads,
//! next to a memory probe (read 4 arrays, write 3, no division or square root) on the same arrays;
//! then the 16-bit modes (Keras' bfloat16 and float16, and bfloat16 with float32 master weights)
//! at 1M parameters, in parameters and bytes moved per second against float32.
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
    sixteen_bit();
}

/// One mode's step over `n` parameters: (G params/s, GB/s moved given `bytes` per parameter).
fn time_mode<F: adamw::Element>(
    config: Config,
    dtype: DType,
    n: usize,
    values: Vec<F>,
    grad: Vec<F>,
    bytes: usize,
) -> (f64, f64) {
    let mut opt = Optimizer::new(Config { threads: 1, ..config }).unwrap();
    opt.build(&[VariableSpec::new("w", dtype, &[n])], &[F::wrap::<adamw::Shared<'_>>(&values)]).unwrap();
    let mut w = values.clone();
    let reps = 40;
    let mut step = || {
        let mut u = [GradientEntry {
            variable: 0,
            values: F::wrap::<adamw::Exclusive<'_>>(&mut w),
            gradient: Some(Gradient::Dense(F::wrap::<adamw::Shared<'_>>(&grad))),
        }];
        opt.apply_gradients(&mut u[..]).unwrap();
    };
    step();
    let t = Instant::now();
    for _ in 0..reps {
        step();
    }
    let per_second = (n * reps) as f64 / t.elapsed().as_secs_f64();
    black_box(&w);
    (per_second / 1e9, per_second * bytes as f64 / 1e9)
}

/// The 16-bit modes against float32, one thread, 1M parameters. Bytes per parameter moved:
/// float32 reads value, gradient, m, v (16) and writes value, m, v (12); Keras' 16-bit modes
/// half of that; bfloat16 with a float32 master reads 2 + 2 + 12 and writes 2 + 12.
fn sixteen_bit() {
    use half::{bf16, f16};
    let n = 1 << 20;
    let noise: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
    let values = vec![0.5f32; n];
    let keras = Config { beta_2: adamw::Beta::Value(0.99), ..Config::default() };
    let bf = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let hf = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
    let f32_mode = time_mode(keras.clone(), DType::F32, n, values.clone(), noise.clone(), 28);
    let rows = [
        ("float32", f32_mode),
        ("bfloat16 (Keras)", time_mode(keras.clone(), DType::BF16, n, bf(&values), bf(&noise), 14)),
        ("float16 (Keras)", time_mode(keras.clone(), DType::F16, n, hf(&values), hf(&noise), 14)),
        (
            "bfloat16 + master",
            time_mode(Config { master_weights: true, ..keras }, DType::BF16, n, bf(&values), bf(&noise), 30),
        ),
    ];
    for (name, (params, bytes)) in rows {
        println!(
            "16-bit, 1 thread, n {n}: {name:>18} {params:6.3} Gparam/s {bytes:6.2} GB/s moved, {:.2}x float32's params/s",
            params / f32_mode.0
        );
    }
}
