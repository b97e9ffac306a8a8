//! Every step mode against a memory probe that moves the same bytes (measures; asserts nothing).
//!
//! `cargo bench --bench modes -- [--sizes 64K,1M,16M] [--threads 2] [--rounds 7] [--modes a,b]
//! [--json FILE]`. For each mode and size, libadamw's step and the probe run in turns in this
//! process, on `--threads` threads each; a round times several steps, then as many probe passes.
//! Reported: libadamw's G parameters per second (median round), and its **fraction of memory
//! speed**: the probe's time over the step's in the same round (median over rounds), which is the
//! step's time if it ran at the probe's bandwidth for the bytes it must move, over its time.
//!
//! With `--report-cost`, each mode's step instead runs in turns with and without the update
//! pass's gradient norms (`set_report_norms`) on one optimizer, and the median over rounds of
//! the time with over the time without is reported (docs/numerics.md §23).
//!
//! The probe moves what the mode must move, pass by pass: each array is read (`R`), read and
//! written in place (`M`) or written only (`W`), with its element size. A mode that must read the
//! gradients before anything changes (a clip norm, a loss scale's finite check) has that pass too.
use std::hint::black_box;
use std::time::Instant;

use adamw::{Config, DType, Element, Exclusive, Gradient, GradientEntry, LossScale, Optimizer, Shared, VariableSpec};
use half::{bf16, f16};
use rayon::prelude::*;

/// How the probe touches one array in a pass.
#[derive(Clone, Copy)]
enum Access {
    Read,
    Modify,
    Write,
}
use Access::{Modify as M, Read as R, Write as W};

/// One step mode: its configuration, dtype, and the passes of the probe that moves its bytes.
struct ModeSpec {
    name: &'static str,
    dtype: DType,
    config: fn() -> Config,
    sparse_rows_percent: usize,
    /// Whether the step takes the gradient norms in the update pass (`set_report_norms`): the
    /// same bytes moved as without.
    report_norms: bool,
    /// Per pass, each array's element size in bytes and access.
    passes: &'static [&'static [(usize, Access)]],
}

const PLAIN32: &[(usize, Access)] = &[(4, R), (4, M), (4, M), (4, M)];
const PLAIN16: &[(usize, Access)] = &[(2, R), (2, M), (2, M), (2, M)];
const MASTER: &[(usize, Access)] = &[(2, R), (4, M), (4, M), (4, M), (2, W)];

fn base() -> Config {
    Config { weight_decay: 0.004, ..Config::default() }
}

const MODES: &[ModeSpec] = &[
    ModeSpec {
        name: "f32",
        dtype: DType::F32,
        config: base,
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[PLAIN32],
    },
    ModeSpec {
        name: "f32_report_norms",
        dtype: DType::F32,
        config: base,
        sparse_rows_percent: 0,
        report_norms: true,
        passes: &[PLAIN32],
    },
    ModeSpec {
        name: "f32_clipnorm",
        dtype: DType::F32,
        config: || Config { clipnorm: Some(1e-3), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(4, R)], PLAIN32],
    },
    ModeSpec {
        name: "f32_global_clipnorm",
        dtype: DType::F32,
        config: || Config { global_clipnorm: Some(1e-3), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(4, R)], PLAIN32],
    },
    ModeSpec {
        name: "f32_clipvalue",
        dtype: DType::F32,
        config: || Config { clipvalue: Some(0.05), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[PLAIN32],
    },
    ModeSpec {
        name: "f32_amsgrad",
        dtype: DType::F32,
        config: || Config { amsgrad: true, ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(4, R), (4, M), (4, M), (4, M), (4, M)]],
    },
    ModeSpec {
        name: "f32_ema",
        dtype: DType::F32,
        config: || Config { use_ema: true, ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(4, R), (4, M), (4, M), (4, M), (4, M)]],
    },
    ModeSpec {
        name: "f32_loss_scale",
        dtype: DType::F32,
        config: || Config { loss_scale: Some(LossScale::default()), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(4, R)], PLAIN32],
    },
    ModeSpec {
        name: "f64",
        dtype: DType::F64,
        config: base,
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(8, R), (8, M), (8, M), (8, M)]],
    },
    ModeSpec {
        name: "f64_clipvalue",
        dtype: DType::F64,
        config: || Config { clipvalue: Some(0.05), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(8, R), (8, M), (8, M), (8, M)]],
    },
    ModeSpec {
        name: "bf16",
        dtype: DType::BF16,
        config: base,
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[PLAIN16],
    },
    ModeSpec {
        name: "bf16_clipvalue",
        dtype: DType::BF16,
        config: || Config { clipvalue: Some(0.05), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[PLAIN16],
    },
    ModeSpec {
        name: "bf16_clipnorm",
        dtype: DType::BF16,
        config: || Config { clipnorm: Some(1e-3), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(2, R)], PLAIN16],
    },
    ModeSpec {
        name: "bf16_amsgrad",
        dtype: DType::BF16,
        config: || Config { amsgrad: true, ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(2, R), (2, M), (2, M), (2, M), (2, M)]],
    },
    ModeSpec {
        name: "f16",
        dtype: DType::F16,
        config: base,
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[PLAIN16],
    },
    ModeSpec {
        name: "bf16_master",
        dtype: DType::BF16,
        config: || Config { master_weights: true, ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[MASTER],
    },
    ModeSpec {
        name: "bf16_master_report_norms",
        dtype: DType::BF16,
        config: || Config { master_weights: true, ..base() },
        sparse_rows_percent: 0,
        report_norms: true,
        passes: &[MASTER],
    },
    ModeSpec {
        name: "f16_master_loss_scale",
        dtype: DType::F16,
        config: || Config { master_weights: true, loss_scale: Some(LossScale::default()), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(2, R)], MASTER],
    },
    ModeSpec {
        name: "bf16_master_global_clipnorm",
        dtype: DType::BF16,
        config: || Config { master_weights: true, global_clipnorm: Some(1e-3), ..base() },
        sparse_rows_percent: 0,
        report_norms: false,
        passes: &[&[(2, R)], MASTER],
    },
    ModeSpec {
        name: "f32_sparse_10pct",
        dtype: DType::F32,
        config: base,
        sparse_rows_percent: 10,
        report_norms: false,
        // Every element decays (var, m, v); a tenth of the rows read a gradient.
        passes: &[&[(4, M), (4, M), (4, M)]],
    },
];

const ROW: usize = 64;

/// A mode's optimizer and buffers for one size, ready to step.
struct Bench<T: Element> {
    opt: Optimizer,
    w: Vec<T>,
    grad: Vec<T>,
    indices: Vec<i64>,
}

impl<T: Element> Bench<T> {
    fn new(spec: &ModeSpec, n: usize, threads: usize, of: impl Fn(f32) -> T) -> Self {
        let config = Config { threads, ..(spec.config)() };
        let scale = config.loss_scale.map_or(1.0, |l| l.initial_scale as f32);
        let mut opt = Optimizer::new(config).unwrap();
        opt.set_report_norms(spec.report_norms);
        let shape = if spec.sparse_rows_percent > 0 { vec![n / ROW, ROW] } else { vec![n] };
        let w: Vec<T> = (0..n).map(|i| of(0.5 - (i % 7) as f32 * 0.01)).collect();
        opt.build(&[VariableSpec::new("w", spec.dtype, &shape)], &[T::wrap::<Shared<'_>>(&w)]).unwrap();
        let rows = n / ROW * spec.sparse_rows_percent / 100;
        let indices: Vec<i64> = (0..rows).map(|r| (r * 10 % (n / ROW).max(1)) as i64).collect();
        let len = if spec.sparse_rows_percent > 0 { rows * ROW } else { n };
        let grad: Vec<T> = (0..len).map(|i| of(((i % 13) as f32 * 0.01 - 0.06) * scale)).collect();
        opt.reserve_sparse(indices.len()).unwrap();
        let mut bench = Bench { opt, w, grad, indices };
        bench.step();
        bench
    }

    fn step(&mut self) {
        let values = T::wrap::<Shared<'_>>(&self.grad);
        let gradient = if self.indices.is_empty() {
            Gradient::Dense(values)
        } else {
            Gradient::Sparse { indices: &self.indices, values }
        };
        let mut u =
            [GradientEntry { variable: 0, values: T::wrap::<Exclusive<'_>>(&mut self.w), gradient: Some(gradient) }];
        black_box(self.opt.apply_gradients(&mut u[..]).unwrap());
    }
}

/// A mode's step at one size, whatever its dtype.
trait Steps {
    fn step(&mut self);
    fn set_report_norms(&mut self, on: bool);
}

impl<T: Element> Steps for Bench<T> {
    fn step(&mut self) {
        Bench::step(self)
    }
    fn set_report_norms(&mut self, on: bool) {
        self.opt.set_report_norms(on);
    }
}

fn bench_for(spec: &ModeSpec, n: usize, threads: usize) -> Box<dyn Steps> {
    match spec.dtype {
        DType::F32 => Box::new(Bench::new(spec, n, threads, |x| x)),
        DType::F64 => Box::new(Bench::new(spec, n, threads, |x| x as f64)),
        DType::BF16 => Box::new(Bench::new(spec, n, threads, bf16::from_f32)),
        DType::F16 => Box::new(Bench::new(spec, n, threads, f16::from_f32)),
        other => panic!("no mode for {other:?}"),
    }
}

/// One array of the probe: its element size and access, and a buffer of 32-bit words in which
/// it starts at word `start`.
struct ProbeArray {
    bytes: usize,
    access: Access,
    words: Vec<u32>,
    start: usize,
}

/// The probe's arrays for a mode, pass by pass.
struct Probe {
    passes: Vec<Vec<ProbeArray>>,
    n: usize,
}

/// Where the probe's `k`-th array of a pass starts, in words past its buffer's start: the arrays
/// lie 640 bytes apart within a page (the buffers' own starts share one page offset, malloc's),
/// as the optimizer's state lies 512 bytes or more from the caller's buffers and from each other
/// (`src/aligned.rs`). Arrays at one page offset would make the probe wait on 4K aliasing that
/// the step does not have, and flatter the step.
fn probe_offset(k: usize) -> usize {
    (k * 640 % 4096) / 4
}

/// Elements per block: every array of a pass advances one block at a time, like a step's streams.
const BLOCK: usize = 2048;

impl Probe {
    fn new(spec: &ModeSpec, n: usize) -> Self {
        let passes = spec
            .passes
            .iter()
            .map(|pass| {
                pass.iter()
                    .enumerate()
                    .map(|(k, &(bytes, access))| {
                        let start = probe_offset(k);
                        ProbeArray { bytes, access, words: vec![1u32; start + n * bytes / 4], start }
                    })
                    .collect()
            })
            .collect();
        Probe { passes, n }
    }

    fn run(&mut self, pool: &rayon::ThreadPool) {
        let n = self.n;
        for pass in &mut self.passes {
            let arrays: Vec<(usize, Access, usize)> =
                pass.iter_mut().map(|a| (a.bytes, a.access, a.words[a.start..].as_mut_ptr() as usize)).collect();
            pool.install(|| {
                (0..n.div_ceil(BLOCK)).into_par_iter().with_min_len(4).for_each(|block| {
                    let (lo, hi) = (block * BLOCK, ((block + 1) * BLOCK).min(n));
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU has AVX2; the block lies in every array (see probe_block).
                        return unsafe { probe_block_avx2(&arrays, lo, hi) };
                    }
                    // SAFETY: as above.
                    unsafe { probe_block(&arrays, lo, hi) }
                });
            });
        }
    }
}

/// The probe's `lo..hi` elements of every array, a group of elements at a time across all
/// arrays (the arrays advance together, like a step's streams), vectorized.
///
/// # Safety
/// Each `(bytes, _, ptr)` must point to an array of at least `hi * bytes / 4` words that no other
/// thread touches in `lo..hi`.
#[inline(always)]
unsafe fn probe_block(arrays: &[(usize, Access, usize)], lo: usize, hi: usize) {
    const GROUP: usize = 256;
    let mut acc = 0u32;
    for start in (lo..hi).step_by(GROUP) {
        let end = (start + GROUP).min(hi);
        for &(bytes, access, ptr) in arrays {
            let (a, b) = (start * bytes / 4, end * bytes / 4);
            // SAFETY: the caller's contract.
            let words = unsafe { std::slice::from_raw_parts_mut((ptr as *mut u32).add(a), b - a) };
            match access {
                Access::Read => acc = words.iter().fold(acc, |s, &w| s.wrapping_add(w)),
                Access::Modify => words.iter_mut().for_each(|w| *w = w.wrapping_add(acc | 1)),
                Access::Write => words.iter_mut().enumerate().for_each(|(i, w)| *w = i as u32 ^ acc),
            }
        }
    }
    black_box(acc);
}

/// [`probe_block`] compiled for AVX2.
///
/// # Safety
/// As [`probe_block`], on a CPU with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn probe_block_avx2(arrays: &[(usize, Access, usize)], lo: usize, hi: usize) {
    // SAFETY: the caller's contract.
    unsafe { probe_block(arrays, lo, hi) }
}

fn parse_size(s: &str) -> usize {
    let (digits, unit) = s.split_at(s.trim_end_matches(['K', 'M']).len());
    let base: usize = digits.parse().expect("a size like 64K or 16M");
    base * match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => 1,
    }
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<(String, usize)> = opt("--sizes")
        .unwrap_or_else(|| "64K,1M,16M".into())
        .split(',')
        .map(|s| (s.to_string(), parse_size(s)))
        .collect();
    let threads: usize = opt("--threads").map_or(2, |t| t.parse().unwrap());
    let rounds: usize = opt("--rounds").map_or(7, |t| t.parse().unwrap());
    let only: Option<Vec<String>> = opt("--modes").map(|m| m.split(',').map(String::from).collect());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "# cpu \"{cpu}\", nproc {}, threads {threads}, simd {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        adamw::simd_level().name()
    );
    if args.iter().any(|a| a == "--report-cost") {
        return report_cost(&sizes, threads, rounds, only.as_deref());
    }
    println!("{:<30} {:>6} {:>10} {:>10} {:>9}", "mode", "size", "G param/s", "probe G/s", "of memory");
    let mut json = Vec::new();
    for spec in MODES.iter().filter(|m| only.as_ref().is_none_or(|o| o.iter().any(|x| x == m.name))) {
        for (label, n) in &sizes {
            let n = *n;
            let mut bench = bench_for(spec, n, threads);
            let mut probe = Probe::new(spec, n);
            probe.run(&pool);
            let reps = ((1usize << 25) / n).clamp(4, 4096);
            let (mut rates, mut fractions, mut probe_rates) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let t = Instant::now();
                for _ in 0..reps {
                    bench.step();
                }
                let step_time = t.elapsed().as_secs_f64();
                let t = Instant::now();
                for _ in 0..reps {
                    probe.run(&pool);
                }
                let probe_time = t.elapsed().as_secs_f64();
                rates.push((n * reps) as f64 / step_time / 1e9);
                probe_rates.push((n * reps) as f64 / probe_time / 1e9);
                fractions.push(probe_time / step_time);
            }
            let (rate, probe_rate, fraction) = (median(rates), median(probe_rates), median(fractions));
            println!("{:<30} {:>6} {rate:>10.3} {probe_rate:>10.3} {fraction:>9.2}", spec.name, label);
            json.push(format!(
                "{{\"mode\": \"{}\", \"n\": {n}, \"threads\": {threads}, \"gparams_s\": {rate:.4}, \"probe_gparams_s\": {probe_rate:.4}, \"of_memory_speed\": {fraction:.3}}}",
                spec.name
            ));
        }
    }
    if let Some(path) = opt("--json") {
        let body = format!(
            "{{\"cpu\": \"{cpu}\", \"nproc\": {}, \"simd\": \"{}\", \"results\": [\n  {}\n]}}\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            adamw::simd_level().name(),
            json.join(",\n  ")
        );
        std::fs::write(path, body).unwrap();
    }
}

/// `--report-cost`: each mode's step with the update pass's norms over its step without, the
/// two alternating on one optimizer (which of them goes first alternates too).
fn report_cost(sizes: &[(String, usize)], threads: usize, rounds: usize, only: Option<&[String]>) {
    println!("{:<30} {:>6} {:>12} {:>12} {:>8}", "mode", "size", "plain G/s", "report G/s", "cost");
    let modes = MODES.iter().filter(|m| !m.report_norms && m.sparse_rows_percent == 0);
    for spec in modes.filter(|m| only.is_none_or(|o| o.iter().any(|x| x == m.name))) {
        for (label, n) in sizes {
            let n = *n;
            let mut bench = bench_for(spec, n, threads);
            let reps = ((1usize << 25) / n).clamp(4, 4096);
            let time = |bench: &mut Box<dyn Steps>, report: bool| {
                bench.set_report_norms(report);
                bench.step(); // the first step after a switch is not timed
                let t = Instant::now();
                for _ in 0..reps {
                    bench.step();
                }
                t.elapsed().as_secs_f64()
            };
            let (mut plain, mut report, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                let (p, r) = if round % 2 == 0 {
                    let p = time(&mut bench, false);
                    (p, time(&mut bench, true))
                } else {
                    let r = time(&mut bench, true);
                    (time(&mut bench, false), r)
                };
                plain.push((n * reps) as f64 / p / 1e9);
                report.push((n * reps) as f64 / r / 1e9);
                ratios.push(r / p);
            }
            let cost = (median(ratios) - 1.0) * 100.0;
            println!("{:<30} {:>6} {:>12.3} {:>12.3} {cost:>+7.1}%", spec.name, label, median(plain), median(report));
        }
    }
}
