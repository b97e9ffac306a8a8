//! Keras' own files (tests/data/keras_files, made by tools/keras_files.py with tf-keras 2.15): a
//! `.keras` archive, a `.weights.h5` file and a plain safetensors store of an optimizer Keras
//! trained, Keras' continuation from them, the files libadamw wrote its state back into, and
//! Keras' continuation from those. Every comparison is bit for bit.
#![cfg(feature = "keras-files")]

use std::path::{Path, PathBuf};

use adamw::keras_files::{self, KerasFileKind, KerasStore};
use adamw::{DType, Error, Gradient, GradientEntry, LossScale, Optimizer, Tensor, TensorBuf, TensorRef, VariableSpec};
use half::f16;
use serde_json::Value;

const CASES: [&str; 6] = [
    "dense_amsgrad",
    "embedding_ema",
    "float64_clipnorm",
    "float16_global_clipnorm",
    "loss_scale_dense",
    "mixed_float16_policy",
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keras_files").join(name)
}

fn case(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data(&format!("{name}.json"))).unwrap()).unwrap()
}

fn dtype(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "float64" => DType::F64,
        "float16" => DType::F16,
        other => panic!("a dtype the cases do not use: {other}"),
    }
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// A tensor of `dtype` from the bits the case stores.
fn tensor(dtype: DType, bits: &[u64]) -> TensorBuf {
    match dtype {
        DType::F32 => Tensor::F32(bits.iter().map(|&b| f32::from_bits(b as u32)).collect()),
        DType::F64 => Tensor::F64(bits.iter().map(|&b| f64::from_bits(b)).collect()),
        DType::F16 => Tensor::F16(bits.iter().map(|&b| f16::from_bits(b as u16)).collect()),
        DType::I64 => Tensor::I64(bits.iter().map(|&b| b as i64).collect()),
        DType::BF16 => unreachable!(),
    }
}

fn le_bytes(t: TensorRef<'_>) -> Vec<u8> {
    t.to_le_bytes()
}

struct Model {
    specs: Vec<VariableSpec>,
    values: Vec<TensorBuf>,
}

/// The model's trainable variables as Keras saved them.
fn saved_model(case: &Value) -> Model {
    model_at(case, "saved")
}

/// The model's trainable variables after `part` of the case.
fn model_at(case: &Value, part: &str) -> Model {
    let mut specs = Vec::new();
    let mut values = Vec::new();
    for (v, bits) in case["variables"].as_array().unwrap().iter().zip(case[part]["variables"].as_array().unwrap()) {
        let shape: Vec<usize> = u64s(&v["shape"]).into_iter().map(|d| d as usize).collect();
        let dtype = dtype(v["dtype"].as_str().unwrap());
        specs.push(VariableSpec::new(v["name"].as_str().unwrap(), dtype, &shape));
        values.push(tensor(dtype, &u64s(bits)));
    }
    Model { specs, values }
}

fn built(config: &str, model: &Model) -> Optimizer {
    built_as_keras(&Value::Null, config, model)
}

/// The config of the optimizer Keras had for the case: under the `mixed_float16` policy Keras
/// compiles an AdamW inside a LossScaleOptimizer with Keras' defaults, which the saved config
/// does not show (the archive's config as libadamw reads it does).
fn keras_config(case: &Value) -> Value {
    if case["policy"] != "mixed_float16" {
        return case["config"].clone();
    }
    serde_json::json!({
        "inner_optimizer": {"module": "keras.optimizers", "class_name": "AdamW", "config": case["config"], "registered_name": null},
        "dynamic": true,
        "initial_scale": 32768.0,
        "dynamic_growth_steps": 2000,
    })
}

/// The optimizer Keras had for the case (see `keras_config`), from the config Keras saved.
fn built_as_keras(case: &Value, config: &str, model: &Model) -> Optimizer {
    let mut optimizer = Optimizer::from_config_json(config).unwrap();
    if case["policy"] == "mixed_float16" && optimizer.loss_scale().is_none() {
        optimizer.set_loss_scale(Some(LossScale::default())).unwrap();
    }
    let initial: Vec<TensorRef<'_>> = model.values.iter().map(TensorBuf::as_ref).collect();
    optimizer.build(&model.specs, &initial).unwrap();
    optimizer
}

/// Applies the case's steps (`continuation` or `round_trip`) to the model's values.
fn steps(optimizer: &mut Optimizer, model: &mut Model, case: &Value, part: &str) {
    for step in case[part]["gradients"].as_array().unwrap() {
        let grads: Vec<(Vec<i64>, TensorBuf)> = step
            .as_array()
            .unwrap()
            .iter()
            .zip(&model.values)
            .map(|(g, v)| match g.get("dense") {
                Some(bits) => (Vec::new(), tensor(v.dtype(), &u64s(bits))),
                None => (
                    g["indices"].as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect(),
                    tensor(v.dtype(), &u64s(&g["rows"])),
                ),
            })
            .collect();
        let mut entries: Vec<GradientEntry<'_>> = model
            .values
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .map(|(variable, (values, (indices, g)))| GradientEntry {
                variable,
                values: values.as_mut(),
                gradient: Some(if step[variable].get("dense").is_some() {
                    Gradient::Dense(g.as_ref())
                } else {
                    Gradient::Sparse { indices, values: g.as_ref() }
                }),
            })
            .collect();
        optimizer.apply_gradients(&mut entries[..]).unwrap();
    }
}

/// The model's values and every optimizer variable are what Keras had after `part`.
fn assert_state(optimizer: &Optimizer, model: &Model, case: &Value, part: &str, what: &str) {
    for (i, (values, bits)) in model.values.iter().zip(case[part]["variables"].as_array().unwrap()).enumerate() {
        assert_eq!(
            le_bytes(values.as_ref()),
            le_bytes(tensor(values.dtype(), &u64s(bits)).as_ref()),
            "{what}: variable {i}"
        );
    }
    // Keras' LossScaleOptimizer: the scale and its count (which Keras' files do not hold).
    if let Some(loss_scale) = case[part].get("loss_scale") {
        let (scale, counter) = optimizer.loss_scale().expect("a loss scale");
        assert_eq!(scale.to_bits() as u64, loss_scale["scale"].as_u64().unwrap(), "{what}: the loss scale");
        assert_eq!(counter, loss_scale["counter"].as_i64().unwrap(), "{what}: the loss scale's count");
    }
    let expected = case[part]["optimizer"].as_array().unwrap();
    assert_eq!(optimizer.num_variables(), expected.len(), "{what}");
    for (i, bits) in expected.iter().enumerate() {
        let ours = optimizer.variable(i).unwrap();
        assert_eq!(
            le_bytes(ours.values.as_ref()),
            le_bytes(tensor(ours.info.dtype, &u64s(bits)).as_ref()),
            "{what}: optimizer variable {i} ({})",
            ours.info.name
        );
    }
}

fn assert_same_store(a: &KerasStore, b: &KerasStore, what: &str) {
    assert_eq!(a.tensors.len(), b.tensors.len(), "{what}");
    for (i, ((sa, va), (sb, vb))) in a.tensors.iter().zip(&b.tensors).enumerate() {
        assert_eq!(sa, sb, "{what}: shape of {i}");
        assert_eq!(va.dtype(), vb.dtype(), "{what}: dtype of {i}");
        assert_eq!(le_bytes(va.as_ref()), le_bytes(vb.as_ref()), "{what}: values of {i}");
    }
}

/// Keras' files continue in libadamw bit for bit, from the archive (with its config), from the
/// weights file (with the config Keras got) and from the plain store.
#[test]
fn keras_files_continue_in_libadamw() {
    for name in CASES {
        let case = case(name);
        let archive = keras_files::read(&data(&format!("{name}.keras"))).unwrap();
        assert_eq!(archive.kind, KerasFileKind::Archive);
        let config = archive.optimizer_config.clone().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&config).unwrap(),
            keras_config(&case),
            "{name}: the archive's config"
        );
        let weights = keras_files::read(&data(&format!("{name}.weights.h5"))).unwrap();
        assert_eq!(weights.kind, KerasFileKind::Weights);
        assert!(weights.optimizer_config.is_none());
        let loss_scaled = keras_config(&case).get("inner_optimizer").is_some();
        assert_eq!((archive.loss_scale_optimizer, weights.loss_scale_optimizer), (loss_scaled, loss_scaled), "{name}");
        let plain =
            keras_files::read_plain_store(&std::fs::read(data(&format!("{name}.store.safetensors"))).unwrap()).unwrap();
        for (route, store) in [("archive", &archive.store), ("weights file", &weights.store), ("plain store", &plain)] {
            let what = format!("{name}, from the {route}");
            let mut model = saved_model(&case);
            let mut optimizer = built_as_keras(&case, &config, &model);
            store.load_into(&mut optimizer).unwrap();
            assert_state(&optimizer, &model, &case, "saved", &what);
            steps(&mut optimizer, &mut model, &case, "continuation");
            assert_state(&optimizer, &model, &case, "continuation", &what);
        }
    }
}

/// libadamw's state written into Keras' files is what Keras loaded and continued from (the
/// committed files the generator wrote with libadamw), and libadamw continuing from those files
/// takes Keras' steps bit for bit (and, without a loss scale, which the files do not hold, so
/// does libadamw continuing from its own state in memory).
#[test]
fn libadamw_state_written_back_continues_in_keras() {
    let dir = std::env::temp_dir().join(format!("adamw-keras-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in CASES {
        let case = case(name);
        let config = serde_json::to_string(&case["config"]).unwrap();
        let mut model = saved_model(&case);
        let mut optimizer = built_as_keras(&case, &config, &model);
        keras_files::read(&data(&format!("{name}.keras"))).unwrap().store.load_into(&mut optimizer).unwrap();
        steps(&mut optimizer, &mut model, &case, "continuation");
        let ours = KerasStore::of(&optimizer).unwrap();
        // A load leaves the loss scale as it is (Keras' files do not hold it): here the one the
        // continuation reached, not the initial one.
        if let Some(scale) = optimizer.loss_scale() {
            ours.load_into(&mut optimizer).unwrap();
            assert_eq!(optimizer.loss_scale(), Some(scale), "{name}: the scale after a load");
        }
        for suffix in [".keras", ".weights.h5"] {
            let out = dir.join(format!("{name}{suffix}"));
            keras_files::write(&data(&format!("{name}{suffix}")), &ours, &out).unwrap();
            let written = keras_files::read(&out).unwrap();
            assert_same_store(&written.store, &ours, &format!("{name}{suffix}: read back"));
            if optimizer.loss_scale().is_some() && suffix == ".weights.h5" {
                // Both of Keras' copies of the state are the new one (m of the first variable).
                let m = le_bytes(ours.tensors[1].1.as_ref());
                assert_eq!(copies_of(&std::fs::read(&out).unwrap(), &m).len(), 2, "{name}: the two groups");
            }
            let loaded_by_keras = keras_files::read(&data(&format!("{name}.libadamw{suffix}"))).unwrap();
            assert_same_store(
                &written.store,
                &loaded_by_keras.store,
                &format!("{name}{suffix}: the file Keras loaded"),
            );
            if suffix == ".keras" {
                assert_eq!(
                    written.optimizer_config,
                    keras_files::read(&data(&format!("{name}.keras"))).unwrap().optimizer_config
                );
            }
        }
        for suffix in [".keras", ".weights.h5"] {
            let mut from_file = built_as_keras(&case, &config, &model);
            keras_files::read(&dir.join(format!("{name}{suffix}"))).unwrap().store.load_into(&mut from_file).unwrap();
            let mut values = model_at(&case, "continuation");
            steps(&mut from_file, &mut values, &case, "round_trip");
            assert_state(&from_file, &values, &case, "round_trip", &format!("{name}: libadamw from its {suffix} file"));
        }
        if optimizer.loss_scale().is_none() {
            steps(&mut optimizer, &mut model, &case, "round_trip");
            assert_state(&optimizer, &model, &case, "round_trip", &format!("{name}: libadamw after its own state"));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn archive_bytes(name: &str) -> Vec<u8> {
    std::fs::read(data(&format!("{name}.keras"))).unwrap()
}

/// Truncated, damaged and foreign files are refused with a clear error, a store of another model
/// is a mismatch, and a refused load changes nothing.
#[test]
fn bad_keras_files_are_refused() {
    let invalid = |bytes: Vec<u8>, what: &str| match keras_files::read_bytes(bytes) {
        Err(Error::InvalidCheckpoint(msg)) => msg,
        other => panic!("{what}: {other:?}, want InvalidCheckpoint"),
    };
    let archive = archive_bytes("dense_amsgrad");
    let weights = std::fs::read(data("dense_amsgrad.weights.h5")).unwrap();
    invalid(archive[..archive.len() / 2].to_vec(), "a truncated archive");
    invalid(weights[..weights.len() / 2].to_vec(), "a truncated weights file");
    invalid(weights[..weights.len() - 64].to_vec(), "a weights file missing its last bytes");
    let mut damaged = archive.clone();
    let at = damaged.windows(8).position(|w| w == b"\x89HDF\r\n\x1a\n").unwrap() + 4096;
    damaged[at] ^= 0x40; // inside the stored model.weights.h5: its CRC-32 no longer matches
    invalid(damaged, "a damaged archive");
    let msg = invalid(std::fs::read(data("dense_amsgrad.store.safetensors")).unwrap(), "a safetensors file");
    assert!(msg.contains("not a Keras file"), "{msg}");
    invalid(b"GIF89a, not a model".to_vec(), "a foreign file");
    let mut no_optimizer = hdf5_without_optimizer(&weights);
    invalid(std::mem::take(&mut no_optimizer), "a weights file without an optimizer");

    // A store of another model: nothing changes.
    let case = case("embedding_ema");
    let model = saved_model(&case);
    let mut optimizer = built(&serde_json::to_string(&case["config"]).unwrap(), &model);
    keras_files::read(&data("embedding_ema.keras")).unwrap().store.load_into(&mut optimizer).unwrap();
    let before = optimizer.save_own_variables().unwrap();
    let other = keras_files::read(&data("dense_amsgrad.keras")).unwrap().store;
    assert!(matches!(other.load_into(&mut optimizer), Err(Error::CheckpointMismatch(_))));
    assert_eq!(optimizer.save_own_variables().unwrap(), before, "a refused load changed the state");
    // libadamw's own load keeps refusing a store without its checksum.
    let plain = std::fs::read(data("embedding_ema.store.safetensors")).unwrap();
    assert!(matches!(optimizer.load_own_variables(&plain), Err(Error::InvalidCheckpoint(_))));
    // Writing into another model's file is refused, and writes nothing.
    let out = std::env::temp_dir().join(format!("adamw-keras-refused-{}.keras", std::process::id()));
    let store = KerasStore::of(&optimizer).unwrap();
    assert!(matches!(
        keras_files::write(&data("dense_amsgrad.keras"), &store, &out),
        Err(Error::CheckpointMismatch(_))
    ));
    assert!(!out.exists());
    // An archive whose optimizer is not AdamW.
    let adam = rewrite_config(&archive, "\"class_name\": \"AdamW\"", "\"class_name\": \"Adam\"");
    assert!(matches!(keras_files::read_bytes(adam), Err(Error::InvalidConfig(_))));
    // Around a LossScaleOptimizer the two copies of its AdamW's state must agree, and the inner
    // optimizer must be an AdamW.
    let scaled = std::fs::read(data("loss_scale_dense.weights.h5")).unwrap();
    let m = le_bytes(keras_files::read_bytes(scaled.clone()).unwrap().store.tensors[1].1.as_ref());
    let copies = copies_of(&scaled, &m);
    assert_eq!(copies.len(), 2, "optimizer/vars/1 and optimizer/inner_optimizer/vars/1");
    let mut differ = scaled.clone();
    differ[copies[1]] ^= 1;
    let msg = invalid(differ, "a LossScaleOptimizer's two copies differ");
    assert!(msg.contains("inner_optimizer/vars differ"), "{msg}");
    let around_adam =
        rewrite_config(&archive_bytes("loss_scale_dense"), "\"class_name\": \"AdamW\"", "\"class_name\": \"Adam\"");
    match keras_files::read_bytes(around_adam) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("LossScaleOptimizer around \"Adam\""), "{msg}"),
        other => panic!("a LossScaleOptimizer around Adam: {other:?}"),
    }
}

/// Where `bytes` hold `tensor`'s bytes.
fn copies_of(bytes: &[u8], tensor: &[u8]) -> Vec<usize> {
    bytes.windows(tensor.len()).enumerate().filter(|(_, w)| *w == tensor).map(|(i, _)| i).collect()
}

/// The weights file with its optimizer group renamed (the bytes of "optimizer" in its name).
fn hdf5_without_optimizer(weights: &[u8]) -> Vec<u8> {
    let mut bytes = weights.to_vec();
    let at = bytes.windows(9).position(|w| w == b"optimizer").unwrap();
    bytes[at..at + 9].copy_from_slice(b"optimisex");
    bytes
}

/// The archive with `from` replaced by `to` in its config.json (stored, so it is plain text;
/// the entry's CRC-32 is recomputed by rewriting the archive).
fn rewrite_config(archive: &[u8], from: &str, to: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut input = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..input.len() {
        let mut entry = input.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).unwrap();
        if name == "config.json" {
            let text = String::from_utf8(contents).unwrap();
            assert!(text.contains(from), "config.json has no {from}");
            contents = text.replace(from, to).into_bytes();
        }
        out.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
        out.write_all(&contents).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// The command-line tool: a Keras archive becomes a libadamw checkpoint (and its config is
/// printed), the checkpoint goes back into a Keras file, and both hold Keras' state.
#[test]
fn adamw_keras_tool_converts_both_ways() {
    let tool = env!("CARGO_BIN_EXE_adamw-keras");
    let dir = std::env::temp_dir().join(format!("adamw-keras-tool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("state.safetensors");
    let run = |args: &[&std::ffi::OsStr]| std::process::Command::new(tool).args(args).output().unwrap();
    let archive = data("embedding_ema.keras");
    let output = run(&[std::ffi::OsStr::new("import"), archive.as_os_str(), checkpoint.as_os_str()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["use_ema"], Value::Bool(true));
    let case = case("embedding_ema");
    let model = saved_model(&case);
    let mut optimizer = built(&serde_json::to_string(&case["config"]).unwrap(), &model);
    optimizer.load_own_variables_from_file(&checkpoint).unwrap();
    assert_state(&optimizer, &model, &case, "saved", "the tool's checkpoint");
    let out = dir.join("back.weights.h5");
    let template = data("embedding_ema.weights.h5");
    let output = run(&[std::ffi::OsStr::new("export"), checkpoint.as_os_str(), template.as_os_str(), out.as_os_str()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_same_store(
        &keras_files::read(&out).unwrap().store,
        &keras_files::read(&template).unwrap().store,
        "exported",
    );
    let output = run(&[std::ffi::OsStr::new("import"), template.as_os_str(), checkpoint.as_os_str()]);
    assert_eq!(output.status.code(), Some(1), "a weights file without --config");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
    // A LossScaleOptimizer's archive: the checkpoint holds the scale, the Keras file written back not.
    let scaled = data("loss_scale_dense.keras");
    let output = run(&[std::ffi::OsStr::new("import"), scaled.as_os_str(), checkpoint.as_os_str()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((printed["dynamic"].clone(), printed["initial_scale"].as_f64()), (Value::Bool(true), Some(64.0)));
    let out = dir.join("back.keras");
    let output = run(&[std::ffi::OsStr::new("export"), checkpoint.as_os_str(), scaled.as_os_str(), out.as_os_str()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_same_store(&keras_files::read(&out).unwrap().store, &keras_files::read(&scaled).unwrap().store, "exported");
    // A mixed_float16 model's archive: the LossScaleOptimizer model.compile put around its AdamW.
    let policy = data("mixed_float16_policy.keras");
    let output = run(&[std::ffi::OsStr::new("import"), policy.as_os_str(), checkpoint.as_os_str()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let scale = (
        &printed["initial_scale"],
        &printed["dynamic_growth_steps"],
        &printed["inner_optimizer"]["config"]["clipnorm"],
    );
    assert_eq!(scale, (&serde_json::json!(32768.0), &serde_json::json!(2000), &serde_json::json!(1.0)), "{printed}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Damage anywhere in a weights file or an archive is an error or a readable file (which can be
/// written back into itself), never a panic: every byte of the HDF5 metadata and a sample of the rest, flipped in turn.
#[test]
fn damaged_bytes_never_panic() {
    for bytes in [std::fs::read(data("embedding_ema.weights.h5")).unwrap(), archive_bytes("float64_clipnorm")] {
        let positions: Vec<usize> = (0..bytes.len()).filter(|i| *i < 4096 || i % 7 == 0).collect();
        for at in positions {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                let result = std::panic::catch_unwind(|| match keras_files::read_bytes(damaged.clone()) {
                    Ok(file) => keras_files::write_bytes(damaged, &file.store).map(|b| b.len()),
                    Err(e) => Err(e),
                });
                assert!(result.is_ok(), "flipping byte {at} by {flip:#x} panicked");
            }
        }
    }
}

/// A store of the same count but another shape or dtype is a mismatch; a plain store with a key
/// Keras does not write is refused; a save that is refused leaves an existing file as it was;
/// state Keras' AdamW cannot hold is refused on saving.
#[test]
fn mismatches_and_refusals_change_nothing() {
    let f64_case = case("float64_clipnorm");
    let config = serde_json::to_string(&f64_case["config"]).unwrap();
    let store = keras_files::read(&data("float64_clipnorm.keras")).unwrap().store;
    let mut model = saved_model(&f64_case);
    model.specs[0] = VariableSpec::new("wide/kernel", DType::F64, &[3, 5]); // transposed
    let mut transposed = built(&config, &model);
    let before = transposed.save_own_variables().unwrap();
    assert!(matches!(store.load_into(&mut transposed), Err(Error::CheckpointMismatch(m)) if m.contains("shape")));
    assert_eq!(transposed.save_own_variables().unwrap(), before);
    let narrow = Model {
        specs: vec![
            VariableSpec::new("wide/kernel", DType::F32, &[5, 3]),
            VariableSpec::new("wide/bias", DType::F64, &[3]),
        ],
        values: Vec::new(),
    };
    let mut narrow = built(&config, &narrow);
    assert!(matches!(store.load_into(&mut narrow), Err(Error::CheckpointMismatch(_))));

    let plain = std::fs::read(data("float64_clipnorm.store.safetensors")).unwrap();
    let mut renamed = plain.clone();
    let at = plain.windows(3).position(|w| w == b"\"2\"").unwrap(); // in the JSON header
    renamed[at + 1] = b'x';
    assert!(matches!(keras_files::read_plain_store(&renamed), Err(Error::InvalidCheckpoint(m)) if m.contains("\"x\"")));

    // A refused save leaves what was at the output path.
    let out = std::env::temp_dir().join(format!("adamw-keras-kept-{}.keras", std::process::id()));
    std::fs::write(&out, b"the previous file").unwrap();
    let mut other = saved_model(&case("dense_amsgrad"));
    let mut dense = built(&serde_json::to_string(&case("dense_amsgrad")["config"]).unwrap(), &other);
    steps(&mut dense, &mut other, &case("dense_amsgrad"), "continuation");
    let dense_store = KerasStore::of(&dense).unwrap();
    assert!(keras_files::write(&data("float64_clipnorm.keras"), &dense_store, &out).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous file");
    std::fs::remove_file(&out).unwrap();

    // Master weights and bfloat16 have no place in Keras' files.
    let bf16 = Model { specs: vec![VariableSpec::new("w", DType::BF16, &[2])], values: Vec::new() };
    let plain_bf16 = built(r#"{"learning_rate": 0.01}"#, &bf16);
    assert!(matches!(KerasStore::of(&plain_bf16), Err(Error::InvalidArgument(m)) if m.contains("bfloat16")));
    let mut masters = Optimizer::from_config_json(r#"{"learning_rate": 0.01}"#).unwrap();
    masters.set_master_weights(true).unwrap();
    masters.build(&bf16.specs, &[TensorRef::BF16(&[half::bf16::ONE; 2])]).unwrap();
    assert!(matches!(KerasStore::of(&masters), Err(Error::InvalidArgument(m)) if m.contains("master")));
}

/// The tool's config subcommand, import with --config, and usage errors.
#[test]
fn adamw_keras_tool_config_and_usage() {
    let tool = env!("CARGO_BIN_EXE_adamw-keras");
    let run = |args: &[&std::ffi::OsStr]| std::process::Command::new(tool).args(args).output().unwrap();
    let archive = data("dense_amsgrad.keras");
    let output = run(&[std::ffi::OsStr::new("config"), archive.as_os_str()]);
    assert!(output.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&output.stdout).unwrap(), case("dense_amsgrad")["config"]);
    let dir = std::env::temp_dir().join(format!("adamw-keras-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, serde_json::to_string(&case("dense_amsgrad")["config"]).unwrap()).unwrap();
    let checkpoint = dir.join("state.safetensors");
    let weights = data("dense_amsgrad.weights.h5");
    let output = run(&[
        std::ffi::OsStr::new("import"),
        weights.as_os_str(),
        checkpoint.as_os_str(),
        std::ffi::OsStr::new("--config"),
        config.as_os_str(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let case = case("dense_amsgrad");
    let model = saved_model(&case);
    let mut optimizer = built(&serde_json::to_string(&case["config"]).unwrap(), &model);
    optimizer.load_own_variables_from_file(&checkpoint).unwrap();
    assert_state(&optimizer, &model, &case, "saved", "imported from the weights file");
    assert_eq!(run(&[std::ffi::OsStr::new("export")]).status.code(), Some(2));
    assert_eq!(run(&[std::ffi::OsStr::new("unknown"), archive.as_os_str()]).status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
