//! Sharded state (Keras' `mesh`): optimizers that each hold a shard of every variable, with a
//! caller-supplied all-reduce, ranks simulated as threads (the C test under mpirun has real
//! ones). Element-wise work is identical to the unsharded optimizer, and the clip norms are
//! combined from the shards in Eigen's order over the whole tensor (docs/numerics.md §14), so
//! the shards together are the unsharded bits in every mode, for any shard boundaries.

mod common;
use common::{Collective, noise, on_ranks};

use adamw::Mesh;
use adamw::{Config, DType, Error, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};

/// The model: a small embedding (sparse), a large dense vector and a large embedding (sparse),
/// big enough for the parallel paths. `cuts[v]` is where rank 0's shard of variable v ends.
const SHAPES: [&[usize]; 3] = [&[7, 5], &[300_000], &[50_000, 4]];
const CUTS: [usize; 3] = [13, 150_001, 100_001]; // mid-row cuts
const STEPS: u64 = 4;

/// Runs the steps on the elements `ranges[v]` of each variable; returns those elements' final
/// values followed by every slot's values.
fn run(config: Config, ranges: [(usize, usize); 3]) -> Vec<f32> {
    let sharded = config.mesh.is_some();
    let mut opt = Optimizer::new(config).unwrap();
    let full: Vec<Vec<f32>> = SHAPES.iter().enumerate().map(|(v, s)| noise(v as u64, s.iter().product())).collect();
    let mut held: Vec<Vec<f32>> = (0..3).map(|v| full[v][ranges[v].0..ranges[v].1].to_vec()).collect();
    let specs: Vec<VariableSpec> = (0..3)
        .map(|v| {
            let spec = VariableSpec::new(format!("v{v}"), DType::F32, SHAPES[v]);
            if sharded { spec.sharded(ranges[v].0, ranges[v].1 - ranges[v].0) } else { spec }
        })
        .collect();
    let initial: Vec<TensorRef<'_>> = held.iter().map(|h| TensorRef::F32(h)).collect();
    opt.build(&specs, &initial).unwrap();
    for step in 0..STEPS {
        let rows = [7usize, 0, 50_000];
        let idx: Vec<Vec<i64>> = (0..3)
            .map(|v| {
                if v == 1 {
                    vec![]
                } else {
                    (0..40).map(|k| ((k * 31 + step as usize * 7) % rows[v]) as i64).chain([3, 3]).collect()
                }
            })
            .collect();
        let vals: Vec<Vec<f32>> =
            (0..3).map(|v| noise(100 + step * 3 + v as u64, idx[v].len() * SHAPES[v].get(1).unwrap_or(&1))).collect();
        let dense_full = noise(200 + step, SHAPES[1][0]);
        let dense = &dense_full[ranges[1].0..ranges[1].1];
        let [h0, h1, h2] = &mut held[..] else { unreachable!() };
        let mut updates = [
            GradientEntry {
                variable: 0,
                values: TensorMut::F32(h0),
                gradient: Some(Gradient::Sparse { indices: &idx[0], values: TensorRef::F32(&vals[0]) }),
            },
            GradientEntry {
                variable: 1,
                values: TensorMut::F32(h1),
                gradient: Some(Gradient::Dense(TensorRef::F32(dense))),
            },
            GradientEntry {
                variable: 2,
                values: TensorMut::F32(h2),
                gradient: Some(Gradient::Sparse { indices: &idx[2], values: TensorRef::F32(&vals[2]) }),
            },
        ];
        opt.apply_gradients(&mut updates[..]).unwrap();
    }
    let mut out: Vec<f32> = held.concat();
    for i in 1..opt.num_variables() {
        if let adamw::Tensor::F32(x) = opt.variable(i).unwrap().values {
            out.extend_from_slice(&x);
        }
    }
    out
}

fn whole() -> [(usize, usize); 3] {
    std::array::from_fn(|v| (0, SHAPES[v].iter().product()))
}

/// Ranks on threads, rank r holding elements `cuts[r][v]..cuts[r + 1][v]` of variable v;
/// returns each rank's output.
fn ranks(config: &Config, cuts: &[[usize; 3]]) -> Vec<Vec<f32>> {
    on_ranks(cuts.len() - 1, |rank, mesh| {
        let r: [(usize, usize); 3] = std::array::from_fn(|v| (cuts[rank][v], cuts[rank + 1][v]));
        run(Config { mesh: Some(mesh), ..config.clone() }, r)
    })
}

/// Two ranks, cut mid-row and inside Eigen's leaves.
fn two_ranks(config: &Config) -> (Vec<f32>, Vec<f32>) {
    let sizes: [usize; 3] = std::array::from_fn(|v| SHAPES[v].iter().product());
    let mut out = ranks(config, &[[0; 3], CUTS, sizes]).into_iter();
    (out.next().unwrap(), out.next().unwrap())
}

/// Splits an unsharded run's output (values, then the slots in Keras' order: averages, m and v
/// interleaved per variable, vhat) into what each rank holds under `cuts`.
fn split_reference_at(reference: &[f32], config: &Config, cuts: &[[usize; 3]]) -> Vec<Vec<f32>> {
    let sizes: Vec<usize> = SHAPES.iter().map(|s| s.iter().product()).collect();
    let mut order: Vec<usize> = vec![0, 1, 2];
    if config.use_ema {
        order.extend([0, 1, 2]);
    }
    order.extend([0, 0, 1, 1, 2, 2]);
    if config.amsgrad {
        order.extend([0, 1, 2]);
    }
    let mut out = vec![Vec::new(); cuts.len() - 1];
    let mut at = 0;
    for v in order {
        let part = &reference[at..at + sizes[v]];
        for (rank, held) in out.iter_mut().enumerate() {
            held.extend_from_slice(&part[cuts[rank][v]..cuts[rank + 1][v]]);
        }
        at += sizes[v];
    }
    assert_eq!(at, reference.len());
    out
}

fn split_reference(reference: &[f32], config: &Config) -> (Vec<f32>, Vec<f32>) {
    let sizes: [usize; 3] = std::array::from_fn(|v| SHAPES[v].iter().product());
    let mut out = split_reference_at(reference, config, &[[0; 3], CUTS, sizes]).into_iter();
    (out.next().unwrap(), out.next().unwrap())
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn one_rank_holding_whole_variables_is_exactly_unsharded() {
    for config in [
        Config::default(),
        Config { clipnorm: Some(0.5), amsgrad: true, ..Config::default() },
        Config { global_clipnorm: Some(1.0), use_ema: true, ..Config::default() },
    ] {
        let reference = run(config.clone(), whole());
        let sharded = run(Config { mesh: Some(Mesh::new(|_| Ok(()))), ..config.clone() }, whole());
        assert!(bits(&reference) == bits(&sharded), "{config:?}");
    }
}

#[test]
fn shards_without_norm_clipping_together_give_the_unsharded_bits() {
    let config = Config {
        amsgrad: true,
        use_ema: true,
        ema_overwrite_frequency: Some(3),
        clipvalue: Some(0.3),
        ..Config::default()
    };
    let reference = run(config.clone(), whole());
    let (r0, r1) = two_ranks(&config);
    let (e0, e1) = split_reference(&reference, &config);
    assert!(bits(&r0) == bits(&e0), "rank 0 differs from the unsharded run");
    assert!(bits(&r1) == bits(&e1), "rank 1 differs from the unsharded run");
}

/// Every mode, two ranks and three (uneven shards: one empty, one of a single element, a
/// boundary on a leaf and others inside leaves and rows): after the steps each rank holds
/// exactly its part of one unsharded optimizer's bits.
#[test]
fn shards_in_every_mode_together_give_the_unsharded_bits() {
    let sizes: [usize; 3] = std::array::from_fn(|v| SHAPES[v].iter().product());
    let three = [[0, 0, 0], [1, 8192 * 5, 77_777], [1, 200_003, 77_778], sizes];
    let scale = adamw::LossScale { dynamic: true, initial_scale: 256.0, dynamic_growth_steps: 2 };
    for config in [
        Config { clipnorm: Some(0.5), ..Config::default() },
        Config { global_clipnorm: Some(2.0), ..Config::default() },
        Config {
            clipnorm: Some(0.05),
            amsgrad: true,
            use_ema: true,
            ema_overwrite_frequency: Some(2),
            ..Config::default()
        },
        Config { global_clipnorm: Some(0.5), loss_scale: Some(scale), ..Config::default() },
        Config { clipnorm: Some(0.2), clipvalue: Some(0.1), reject_non_finite_gradients: true, ..Config::default() },
    ] {
        let reference = run(config.clone(), whole());
        for cuts in [&[[0; 3], CUTS, sizes][..], &three[..]] {
            let got = ranks(&config, cuts);
            let want = split_reference_at(&reference, &config, cuts);
            for (rank, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    bits(g) == bits(w),
                    "rank {rank} of {} differs from the unsharded run: {config:?}",
                    cuts.len() - 1
                );
            }
        }
    }
}

/// Shards that leave an element to nobody, or give one to two ranks, are an error on every
/// rank at the first step that clips, and nothing changes.
#[test]
fn shards_that_do_not_partition_a_variable_are_rejected() {
    let errors: Vec<String> = on_ranks(2, |rank, mesh| {
        let mut opt = Optimizer::new(Config { clipnorm: Some(1.0), mesh: Some(mesh), ..Config::default() }).unwrap();
        let (offset, len) = if rank == 0 { (0, 6) } else { (5, 5) }; // element 5 twice, 10 and 11 never
        opt.build(&[VariableSpec::new("w", DType::F32, &[12]).sharded(offset, len)], &[]).unwrap();
        let mut w = vec![1.0f32; len];
        let g = vec![0.5f32; len];
        let before = opt.save_own_variables().unwrap();
        let err = opt
            .apply_gradients(
                &mut [GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
                }][..],
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(w.iter().all(|&x| x == 1.0) && before == opt.save_own_variables().unwrap());
        err.to_string()
    });
    assert!(errors.iter().all(|e| e.contains("do not partition")), "{errors:?}");
}

/// Ranks that list different variables are told so, together, before anything changes.
#[test]
fn ranks_making_different_calls_fail_together() {
    on_ranks(2, |rank, mesh| {
        let mut opt =
            Optimizer::new(Config { global_clipnorm: Some(1.0), mesh: Some(mesh), ..Config::default() }).unwrap();
        let specs =
            [VariableSpec::new("a", DType::F32, &[4]).sharded(2 * rank, 2), VariableSpec::new("b", DType::F32, &[3])];
        opt.build(&specs, &[]).unwrap();
        let (mut a, mut b) = (vec![1.0f32; 2], vec![1.0f32; 3]);
        let (ga, gb) = (vec![0.5f32; 2], vec![0.5f32; 3]);
        let mut entries = vec![GradientEntry {
            variable: 0,
            values: TensorMut::F32(&mut a),
            gradient: Some(Gradient::Dense(TensorRef::F32(&ga))),
        }];
        if rank == 1 {
            entries.push(GradientEntry {
                variable: 1,
                values: TensorMut::F32(&mut b),
                gradient: Some(Gradient::Dense(TensorRef::F32(&gb))),
            });
        }
        let err = opt.apply_gradients(&mut entries[..]).unwrap_err();
        assert!(err.to_string().contains("made different calls"), "{err}");
        drop(entries);
        assert_eq!((a, b, opt.iterations()), (vec![1.0; 2], vec![1.0; 3], 0));
    });
}

/// reject_non_finite_gradients: a NaN on one rank rejects the call on every rank.
#[test]
fn a_non_finite_gradient_on_one_rank_is_rejected_by_every_rank() {
    let errors: Vec<String> = on_ranks(2, |rank, mesh| {
        let config = Config { reject_non_finite_gradients: true, mesh: Some(mesh), ..Config::default() };
        let mut opt = Optimizer::new(config).unwrap();
        opt.build(&[VariableSpec::new("w", DType::F32, &[8]).sharded(4 * rank, 4)], &[]).unwrap();
        let mut w = vec![1.0f32; 4];
        let mut g = vec![0.5f32; 4];
        if rank == 0 {
            g[1] = f32::NAN;
        }
        let err = opt
            .apply_gradients(
                &mut [GradientEntry {
                    variable: 0,
                    values: TensorMut::F32(&mut w),
                    gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
                }][..],
            )
            .unwrap_err();
        assert!(matches!(err, Error::NonFiniteGradient(_)) && w == [1.0; 4] && opt.iterations() == 0);
        err.to_string()
    });
    assert!(errors[0].contains("element 1") && errors[1].contains("another rank"), "{errors:?}");
}

#[test]
fn shard_errors_change_nothing() {
    let spec = VariableSpec::new("w", DType::F32, &[4, 3]);
    let mut no_mesh = Optimizer::new(Config::default()).unwrap();
    assert!(matches!(no_mesh.build(&[spec.clone().sharded(0, 6)], &[]), Err(Error::InvalidArgument(_))));
    let mut opt = Optimizer::new(Config {
        clipnorm: Some(1.0),
        mesh: Some(Mesh::new(|_| Err("rank 3 is gone".into()))),
        ..Config::default()
    })
    .unwrap();
    assert!(matches!(opt.build(&[spec.clone().sharded(8, 6)], &[]), Err(Error::InvalidArgument(_))));
    opt.build(&[spec.sharded(6, 6)], &[]).unwrap();
    let before = opt.save_own_variables().unwrap();
    let mut w = [1.0f32; 6];
    let g = [0.5f32; 6];
    let err = opt
        .apply_gradients(
            &mut [GradientEntry {
                variable: 0,
                values: TensorMut::F32(&mut w),
                gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
            }][..],
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "the mesh all-reduce failed: rank 3 is gone");
    assert_eq!(w, [1.0; 6]);
    assert_eq!(before, opt.save_own_variables().unwrap());
    assert_eq!(opt.variable(1).unwrap().info.shape, &[6]);
}

/// With a dynamic loss scale, a non-finite gradient on one rank skips the step on every rank:
/// the decision is all-reduced, so the shards never drift apart.
#[test]
fn a_loss_scale_skip_is_taken_by_every_rank() {
    const N: usize = 10;
    let collective = Collective::new(2);
    let results: Vec<(Vec<f32>, i64, f32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let collective = collective.clone();
                scope.spawn(move || {
                    let mesh = Mesh::new(move |values: &mut [f64]| {
                        collective.all_reduce(rank, values);
                        Ok(())
                    });
                    let config = Config {
                        mesh: Some(mesh),
                        loss_scale: Some(adamw::LossScale {
                            dynamic: true,
                            initial_scale: 64.0,
                            dynamic_growth_steps: 10,
                        }),
                        ..Config::default()
                    };
                    let mut opt = Optimizer::new(config).unwrap();
                    let (offset, len) = if rank == 0 { (0, 4) } else { (4, 6) };
                    opt.build(&[VariableSpec::new("w", DType::F32, &[N]).sharded(offset, len)], &[]).unwrap();
                    let mut w = vec![1.0f32; len];
                    for step in 0..3 {
                        let mut g = vec![32.0f32; len];
                        if step == 1 && rank == 1 {
                            g[2] = f32::INFINITY; // only rank 1 overflows
                        }
                        let mut entries = [GradientEntry {
                            variable: 0,
                            values: TensorMut::F32(&mut w),
                            gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
                        }];
                        opt.apply_gradients(&mut entries[..]).unwrap();
                    }
                    (w, opt.iterations(), opt.loss_scale().unwrap().0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One optimizer over the whole variable, with the same gradients, gives the same bits.
    let mut whole = Optimizer::new(Config {
        loss_scale: Some(adamw::LossScale { dynamic: true, initial_scale: 64.0, dynamic_growth_steps: 10 }),
        ..Config::default()
    })
    .unwrap();
    whole.build(&[VariableSpec::new("w", DType::F32, &[N])], &[]).unwrap();
    let mut w = vec![1.0f32; N];
    for step in 0..3 {
        let mut g = vec![32.0f32; N];
        if step == 1 {
            g[6] = f32::INFINITY;
        }
        let mut entries = [GradientEntry {
            variable: 0,
            values: TensorMut::F32(&mut w),
            gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
        }];
        whole.apply_gradients(&mut entries[..]).unwrap();
    }
    let gathered: Vec<f32> = results.iter().flat_map(|(w, _, _)| w.clone()).collect();
    assert_eq!(
        gathered.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        w.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    for (_, iterations, scale) in &results {
        assert_eq!((*iterations, *scale), (3, 32.0)); // one skip: 64 -> 32, the counter still at 3
    }
    assert_eq!(whole.loss_scale(), Some((32.0, 1)));
}
