//! Checkpoints that survive a change of rank count: the checkpoints of N ranks resharded for M
//! are byte for byte the checkpoints that a run with M ranks saves, N → M → N gives back the
//! original bytes, `load_shards` puts the same state into an optimizer of any sharding, and bad
//! sets of shards are refused without changing anything.

mod common;
use common::{noise, on_ranks};

use adamw::{Config, DType, Error, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};

const SHAPES: [&[usize]; 2] = [&[7, 5], &[5000]];
const STEPS: u64 = 3;

fn config() -> Config {
    Config {
        clipnorm: Some(0.5),
        amsgrad: true,
        use_ema: true,
        learning_rate: adamw::LearningRate::Constant(0.01),
        ..Config::default()
    }
}

/// Rank `rank` of `ranks` (even splits, as `reshard_checkpoints` makes; `ranks` 0: unsharded).
fn range(v: usize, rank: usize, ranks: usize) -> (usize, usize) {
    let n: usize = SHAPES[v].iter().product();
    match (n * rank).checked_div(ranks) {
        None => (0, n),
        Some(start) => (start, n * (rank + 1) / ranks - start),
    }
}

/// A built optimizer for rank `rank` of `ranks` (0: unsharded), with the mesh given.
fn optimizer(config: Config, rank: usize, ranks: usize) -> (Optimizer, Vec<Vec<f32>>) {
    let mut opt = Optimizer::new(config).unwrap();
    let held: Vec<Vec<f32>> = (0..2)
        .map(|v| {
            let (o, l) = range(v, rank, ranks);
            noise(v as u64, SHAPES[v].iter().product())[o..o + l].to_vec()
        })
        .collect();
    let specs: Vec<VariableSpec> = (0..2)
        .map(|v| {
            let spec = VariableSpec::new(format!("v{v}"), DType::F32, SHAPES[v]);
            let (o, l) = range(v, rank, ranks);
            if ranks == 0 { spec } else { spec.sharded(o, l) }
        })
        .collect();
    let initial: Vec<TensorRef<'_>> = held.iter().map(|h| TensorRef::F32(h)).collect();
    opt.build(&specs, &initial).unwrap();
    (opt, held)
}

/// `steps` steps from `first` on rank `rank` of `ranks`: a sparse gradient for v0 (the whole
/// IndexedSlices), a dense one for v1 (the rank's part).
fn train(opt: &mut Optimizer, held: &mut [Vec<f32>], rank: usize, ranks: usize, first: u64, steps: u64) {
    for step in first..first + steps {
        let idx: Vec<i64> = vec![1, 4, 1, (step % 7) as i64];
        let rows = noise(100 + step, idx.len() * 5);
        let dense_full = noise(200 + step, SHAPES[1][0]);
        let (o, l) = range(1, rank, ranks);
        let [h0, h1] = held else { unreachable!() };
        let mut entries = [
            GradientEntry {
                variable: 0,
                values: TensorMut::F32(h0),
                gradient: Some(Gradient::Sparse { indices: &idx, values: TensorRef::F32(&rows) }),
            },
            GradientEntry {
                variable: 1,
                values: TensorMut::F32(h1),
                gradient: Some(Gradient::Dense(TensorRef::F32(&dense_full[o..o + l]))),
            },
        ];
        opt.apply_gradients(&mut entries[..]).unwrap();
    }
}

/// Every rank's checkpoint after `STEPS` steps of a run with `ranks` ranks (0: one unsharded).
fn checkpoints(ranks: usize) -> Vec<Vec<u8>> {
    if ranks == 0 {
        let (mut opt, mut held) = optimizer(config(), 0, 0);
        train(&mut opt, &mut held, 0, 0, 0, STEPS);
        return vec![opt.save_own_variables().unwrap()];
    }
    on_ranks(ranks, |rank, mesh| {
        let (mut opt, mut held) = optimizer(Config { mesh: Some(mesh), ..config() }, rank, ranks);
        train(&mut opt, &mut held, rank, ranks, 0, STEPS);
        opt.save_own_variables().unwrap()
    })
}

fn views(bytes: &[Vec<u8>]) -> Vec<&[u8]> {
    bytes.iter().map(Vec::as_slice).collect()
}

#[test]
fn resharded_checkpoints_are_the_checkpoints_of_that_many_ranks() {
    let (one, two, three) = (checkpoints(0), checkpoints(2), checkpoints(3));
    // Sharded runs are exact, so every sharding's checkpoints hold the same state.
    assert_eq!(adamw::reshard_checkpoints(&views(&three), 2).unwrap(), two, "3 → 2");
    assert_eq!(adamw::reshard_checkpoints(&views(&two), 3).unwrap(), three, "2 → 3");
    assert_eq!(adamw::reshard_checkpoints(&views(&three), 1).unwrap(), one, "3 → 1 (unsharded)");
    assert_eq!(adamw::reshard_checkpoints(&views(&one), 3).unwrap(), three, "1 → 3");
    let back = adamw::reshard_checkpoints(&views(&adamw::reshard_checkpoints(&views(&three), 2).unwrap()), 3).unwrap();
    assert_eq!(back, three, "3 → 2 → 3 gives back the original bytes");
    // Shards in any order.
    let shuffled = [three[2].clone(), three[0].clone(), three[1].clone()];
    assert_eq!(adamw::reshard_checkpoints(&views(&shuffled), 2).unwrap(), two);
}

#[test]
fn load_shards_gives_the_state_of_the_new_sharding_and_training_goes_on_exactly() {
    let three = checkpoints(3);
    // An unsharded optimizer takes the three shards, then trains on as the unsharded run would.
    let (mut whole, _) = optimizer(config(), 0, 0);
    whole.load_shards(&views(&three)).unwrap();
    assert_eq!(whole.save_own_variables().unwrap(), checkpoints(0)[0]);
    let (mut reference, mut reference_held) = optimizer(config(), 0, 0);
    train(&mut reference, &mut reference_held, 0, 0, 0, STEPS);
    let mut held = reference_held.clone(); // the caller's variables travel with the model, not the optimizer
    train(&mut whole, &mut held, 0, 0, STEPS, 2);
    train(&mut reference, &mut reference_held, 0, 0, STEPS, 2);
    assert_eq!(whole.save_own_variables().unwrap(), reference.save_own_variables().unwrap());
    assert_eq!(held, reference_held);
    // Two ranks take the three shards: each holds what a two-rank run's rank holds.
    let two = checkpoints(2);
    on_ranks(2, |rank, mesh| {
        let (mut opt, _) = optimizer(Config { mesh: Some(mesh), ..config() }, rank, 2);
        opt.load_shards(&views(&three)).unwrap();
        assert_eq!(opt.save_own_variables().unwrap(), two[rank], "rank {rank}");
    });
}

#[test]
fn bad_sets_of_shards_are_refused_and_change_nothing() {
    let three = checkpoints(3);
    let (mut opt, _) = optimizer(config(), 0, 0);
    let before = opt.save_own_variables().unwrap();
    let refused = |opt: &mut Optimizer, shards: Vec<&[u8]>, expect: &str| {
        let err = opt.load_shards(&shards).unwrap_err();
        assert!(matches!(err, Error::CheckpointMismatch(_)), "{err:?}");
        assert!(err.to_string().contains(expect), "{err} (expected {expect:?})");
        // The same reason from the tool's resharding, where there is nothing to refuse.
        let reason = adamw::reshard_checkpoints(&shards, 2).unwrap_err().to_string();
        assert_eq!(format!("the load was refused and nothing changed: {reason}"), err.to_string());
    };
    refused(&mut opt, vec![&three[0], &three[2]], "missing shard");
    refused(&mut opt, vec![&three[0], &three[1], &three[1], &three[2]], "duplicated or overlapping");
    refused(&mut opt, vec![], "no shard checkpoints");
    // A shard of an earlier step.
    let early = on_ranks(3, |rank, mesh| {
        let (mut o, mut held) = optimizer(Config { mesh: Some(mesh), ..config() }, rank, 3);
        train(&mut o, &mut held, rank, 3, 0, STEPS - 1);
        o.save_own_variables().unwrap()
    });
    refused(&mut opt, vec![&three[0], &early[1], &three[2]], "another step");
    // A shard of another optimizer (another learning rate).
    let other = {
        let mut o = Optimizer::new(Config {
            learning_rate: adamw::LearningRate::Constant(0.5),
            mesh: Some(adamw::Mesh::new(|_| Ok(()))),
            ..config()
        })
        .unwrap();
        let specs: Vec<VariableSpec> = (0..2)
            .map(|v| {
                let (off, l) = range(v, 1, 3);
                VariableSpec::new(format!("v{v}"), DType::F32, SHAPES[v]).sharded(off, l)
            })
            .collect();
        let init: Vec<Vec<f32>> = (0..2).map(|v| vec![0.0; range(v, 1, 3).1]).collect();
        o.build(&specs, &[TensorRef::F32(&init[0]), TensorRef::F32(&init[1])]).unwrap();
        o.save_own_variables().unwrap()
    };
    refused(&mut opt, vec![&three[0], &other, &three[2]], "another optimizer");
    // An optimizer of other shapes cannot take them.
    let mut small = Optimizer::new(config()).unwrap();
    small
        .build(
            &[VariableSpec::new("v0", DType::F32, &[7, 5]), VariableSpec::new("v1", DType::F32, &[4999])],
            &[TensorRef::F32(&[0.0; 35]), TensorRef::F32(&vec![0.0; 4999])],
        )
        .unwrap();
    assert!(matches!(small.load_shards(&views(&three)), Err(Error::CheckpointMismatch(_))));
    // A corrupted shard is not a checkpoint.
    let mut corrupted = three[1].clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 1;
    assert!(matches!(opt.load_shards(&[&three[0], &corrupted, &three[2]]), Err(Error::InvalidCheckpoint(_))));
    assert_eq!(opt.save_own_variables().unwrap(), before, "a refused load changed the optimizer");
}

/// The command-line tool: three shard files become two (the bytes of a two-rank run), and a
/// missing shard makes it refuse, write nothing and exit with 1.
#[test]
fn the_reshard_tool_converts_files() {
    let dir = std::env::temp_dir().join(format!("adamw-reshard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inputs: Vec<std::path::PathBuf> = checkpoints(3)
        .iter()
        .enumerate()
        .map(|(r, bytes)| {
            let path = dir.join(format!("in.{r}.safetensors"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let tool = env!("CARGO_BIN_EXE_adamw-reshard");
    let out = dir.join("out");
    let status =
        std::process::Command::new(tool).arg("--ranks").arg("2").arg("--out").arg(&out).args(&inputs).status().unwrap();
    assert!(status.success());
    let two = checkpoints(2);
    for (r, expected) in two.iter().enumerate() {
        assert_eq!(&std::fs::read(dir.join(format!("out.{r}-of-2.safetensors"))).unwrap(), expected, "rank {r}");
    }
    let missing = dir.join("missing");
    let run = std::process::Command::new(tool)
        .args(["--ranks", "1", "--out"])
        .arg(&missing)
        .args(&inputs[..2])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("missing shard"));
    assert!(!dir.join("missing.safetensors").exists());
    let usage = std::process::Command::new(tool).arg("--ranks").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
