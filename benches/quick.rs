//! A quick, dependency-free timing of the dense step (the criterion suite is benches/step.rs):
//! `cargo bench --bench quick`. Prints parameters per second for a few sizes, 1 and 2 threads,
//! next to a memory probe (read 4 arrays, write 3, no division or square root) on the same arrays;
//! then the 16-bit modes (Keras' bfloat16 and float16, and bfloat16 with float32 master weights)
//! at 1M parameters, in parameters and bytes moved per second against float32 (alone with
//! `cargo bench --bench quick -- --16-bit-only`).
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
    if std::env::args().any(|a| a == "--16-bit-only") {
        return sixteen_bit();
    }
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

/// One mode's optimizer over `n` parameters, ready to step.
struct Mode<F: adamw::Element> {
    opt: Optimizer,
    w: Vec<F>,
    grad: Vec<F>,
}

impl<F: adamw::Element> Mode<F> {
    fn new(config: Config, dtype: DType, values: Vec<F>, grad: Vec<F>) -> Self {
        let mut opt = Optimizer::new(Config { threads: 1, ..config }).unwrap();
        opt.build(&[VariableSpec::new("w", dtype, &[values.len()])], &[F::wrap::<adamw::Shared<'_>>(&values)]).unwrap();
        let mut mode = Mode { opt, w: values, grad };
        mode.step();
        mode
    }

    fn step(&mut self) {
        let mut u = [GradientEntry {
            variable: 0,
            values: F::wrap::<adamw::Exclusive<'_>>(&mut self.w),
            gradient: Some(Gradient::Dense(F::wrap::<adamw::Shared<'_>>(&self.grad))),
        }];
        self.opt.apply_gradients(&mut u[..]).unwrap();
    }

    /// Seconds per step over `reps` steps.
    fn time(&mut self, reps: usize) -> f64 {
        let t = Instant::now();
        for _ in 0..reps {
            self.step();
        }
        black_box(&self.w);
        t.elapsed().as_secs_f64() / reps as f64
    }
}

/// The 16-bit modes against float32, one thread, at 1M parameters (partly in cache) and 16M
/// (memory-bound), timed in turns: 7 rounds, the best round counts (the machine's noise only
/// ever slows a round down). Bytes per parameter moved: float32 reads value, gradient, m, v (16)
/// and writes value, m, v (12); Keras' 16-bit modes half of that; a 16-bit variable with a
/// float32 master reads 2 + 2 + 12 and writes 2 + 12.
fn sixteen_bit() {
    use half::{bf16, f16};
    for n in [1usize << 20, 1 << 24] {
        let steps = (1 << 24) / n;
        let noise: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        let values = vec![0.5f32; n];
        let keras = Config { beta_2: adamw::Beta::Value(0.99), ..Config::default() };
        let master = Config { master_weights: true, ..keras.clone() };
        let bf = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
        let hf = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        let mut float32 = Mode::new(keras.clone(), DType::F32, values.clone(), noise.clone());
        let mut bf_keras = Mode::new(keras.clone(), DType::BF16, bf(&values), bf(&noise));
        let mut hf_keras = Mode::new(keras.clone(), DType::F16, hf(&values), hf(&noise));
        let mut bf_master = Mode::new(master.clone(), DType::BF16, bf(&values), bf(&noise));
        let mut hf_master = Mode::new(master, DType::F16, hf(&values), hf(&noise));
        let mut best = [f64::INFINITY; 5];
        for _ in 0..7 {
            let times = [
                float32.time(steps),
                bf_keras.time(steps),
                hf_keras.time(steps),
                bf_master.time(steps),
                hf_master.time(steps),
            ];
            for (b, t) in best.iter_mut().zip(times) {
                *b = b.min(t);
            }
        }
        let rows = [
            ("float32", 28, best[0]),
            ("bfloat16 (Keras)", 14, best[1]),
            ("float16 (Keras)", 14, best[2]),
            ("bfloat16 + master", 30, best[3]),
            ("float16 + master", 30, best[4]),
        ];
        for (name, bytes, seconds) in rows {
            let params = n as f64 / seconds / 1e9;
            println!(
                "16-bit, 1 thread, n {n:>8}: {name:>18} {params:6.3} Gparam/s {:6.2} GB/s moved, {:.2}x float32's params/s, {:.2}x its bytes/s",
                params * bytes as f64,
                best[0] / seconds,
                best[0] / seconds * bytes as f64 / 28.0,
            );
        }
    }
}
