//! Checkpoints that cannot lose data: files are written atomically, a CRC-32 catches any flipped
//! byte, and every bad checkpoint is rejected with its own error and changes nothing. One test
//! function, because the last part limits the process's file size (RLIMIT_FSIZE).

use std::path::Path;

use adamw::{Config, DType, Error, Gradient, GradientEntry, Optimizer, TensorMut, TensorRef, VariableSpec};

fn trained(shape: &[usize], dtype_f64: bool, amsgrad: bool) -> Optimizer {
    let mut opt = Optimizer::new(Config { amsgrad, ..Config::default() }).unwrap();
    let n: usize = shape.iter().product();
    let dtype = if dtype_f64 { DType::F64 } else { DType::F32 };
    opt.build(&[VariableSpec::new("w", dtype, shape)], &[]).unwrap();
    if !dtype_f64 {
        let mut w = vec![1.0f32; n];
        let g: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        for _ in 0..3 {
            let mut u = [GradientEntry {
                variable: 0,
                values: TensorMut::F32(&mut w),
                gradient: Some(Gradient::Dense(TensorRef::F32(&g))),
            }];
            opt.apply_gradients(&mut u[..]).unwrap();
        }
    }
    opt
}

fn rejected(opt: &mut Optimizer, bytes: &[u8]) -> Error {
    let before = opt.save_own_variables().unwrap();
    let err = opt.load_own_variables(bytes).unwrap_err();
    assert_eq!(before, opt.save_own_variables().unwrap(), "a rejected load changed the optimizer");
    err
}

#[test]
fn checkpoints_cannot_lose_data() {
    let dir = std::env::temp_dir().join(format!("adamw-checkpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.safetensors");

    // A file round trip restores the same state.
    let saved = trained(&[4, 8], false, false);
    saved.save_own_variables_to_file(&path).unwrap();
    let mut fresh = trained(&[4, 8], false, false);
    fresh.set_iterations(0).unwrap_err(); // built: the counter comes from the file
    let mut restored = Optimizer::new(Config::default()).unwrap();
    restored.build(&[VariableSpec::new("w", DType::F32, &[4, 8])], &[]).unwrap();
    restored.load_own_variables_from_file(&path).unwrap();
    assert_eq!(restored.save_own_variables().unwrap(), saved.save_own_variables().unwrap());
    assert_eq!(restored.iterations(), 3);

    // Every way a checkpoint can be bad, each with its error, each changing nothing.
    let good = std::fs::read(&path).unwrap();
    for at in [good.len() - 1, good.len() - 40, good.len() / 2] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        let err = rejected(&mut fresh, &flipped);
        assert!(matches!(err, Error::InvalidCheckpoint(_)), "flipped byte {at}: {err:?}");
    }
    let mut flipped_header = good.clone();
    flipped_header[20] ^= 0x01;
    assert!(matches!(rejected(&mut fresh, &flipped_header), Error::InvalidCheckpoint(_)));
    for cut in [0, 7, 100, good.len() - 1] {
        assert!(matches!(rejected(&mut fresh, &good[..cut]), Error::InvalidCheckpoint(_)), "truncated at {cut}");
    }
    assert!(matches!(rejected(&mut fresh, b"{\"not\": \"a checkpoint\"}"), Error::InvalidCheckpoint(_)));
    let err = rejected(&mut trained(&[8, 4], false, false), &good);
    assert!(matches!(err, Error::CheckpointMismatch(_)), "another shape: {err:?}");
    let err = rejected(&mut trained(&[4, 8], true, false), &good);
    assert!(matches!(err, Error::CheckpointMismatch(_)), "another dtype: {err:?}");
    let err = rejected(&mut trained(&[4, 8], false, true), &good);
    assert!(matches!(err, Error::CheckpointMismatch(_)), "another variable count: {err:?}");
    let err = fresh.load_own_variables_from_file(&dir.join("missing")).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    let err = saved.save_own_variables_to_file(&dir.join("no-such-dir").join("x")).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");

    // A save interrupted by a write error (the file size limit stands in for a full disk)
    // leaves the previous checkpoint intact and no temporary file behind.
    let bigger = trained(&[64, 64], false, false);
    interrupted_save(&bigger, &path, good.len());
    assert_eq!(std::fs::read(&path).unwrap(), good, "the previous checkpoint was damaged");
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("opt.safetensors")], "temporary files were left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Saves `opt` to `path` with the process's file size limited to `limit` bytes: the write of the
/// larger file must fail with an I/O error.
fn interrupted_save(opt: &Optimizer, path: &Path, limit: usize) {
    // SAFETY: SIGXFSZ is ignored so that exceeding the limit makes write() fail with EFBIG
    // instead of killing the process; the limits are read and restored around the save, and this
    // is the only test in this binary.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let limited = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: old.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limited), 0);
        let result = opt.save_own_variables_to_file(path);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &old), 0);
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
        assert!(err.to_string().contains("write"), "{err}");
    }
}
