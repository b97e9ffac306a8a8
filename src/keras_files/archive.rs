//! The zip side of a `.keras` archive (the zip crate): its `model.weights.h5` and the compiled
//! optimizer's config in `config.json`, and a copy of an archive with a new weights file.
//!
//! Keras 2.15 writes the archive with Python's zipfile (stored, not compressed): `metadata.json`,
//! `config.json` and `model.weights.h5`. Every entry's CRC-32 is checked as it is read, so a
//! damaged archive is refused.

use std::io::{Cursor, Read, Write};

use serde_json::Value;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{Error, Result};

const WEIGHTS: &str = "model.weights.h5";
const CONFIG: &str = "config.json";

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::InvalidCheckpoint(format!("not a readable .keras archive: {msg}"))
}

/// How much larger than its compressed bytes an entry may be: Keras stores its entries (a ratio
/// of 1); deflate at its best reaches about 1032, so anything more is a zip bomb.
const MAX_EXPANSION: u64 = 1032;

/// An entry's bytes, read only if its declared size is plausible (the zip crate then checks
/// that size and the entry's CRC-32 as it reads).
fn entry_at(archive: &mut ZipArchive<Cursor<&[u8]>>, index: usize) -> Result<(String, Vec<u8>)> {
    let mut file = archive.by_index(index).map_err(bad)?;
    let name = file.name().map_err(bad)?.to_string();
    if file.size() > file.compressed_size().saturating_mul(MAX_EXPANSION).saturating_add(1 << 16) {
        return Err(bad(format!("{name} claims {} bytes from {} compressed", file.size(), file.compressed_size())));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| bad(format!("{name}: {e}")))?;
    Ok((name, bytes))
}

fn entry(archive: &mut ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>> {
    let index = archive.index_for_name(name).ok_or_else(|| bad(format!("it has no {name}")))?;
    Ok(entry_at(archive, index)?.1)
}

/// Keras' class name for `tf_keras.mixed_precision.LossScaleOptimizer` around a new optimizer.
const LOSS_SCALE_OPTIMIZER: &str = "LossScaleOptimizerV3";

/// The archive's weights file and its optimizer's config (the `config` of
/// `compile_config.optimizer`, as JSON), which must be an AdamW's or a LossScaleOptimizer's.
pub(super) fn read(bytes: &[u8]) -> Result<(Vec<u8>, Value)> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    let config = optimizer_config(&mut archive)?;
    Ok((entry(&mut archive, WEIGHTS)?, config))
}

fn optimizer_config(archive: &mut ZipArchive<Cursor<&[u8]>>) -> Result<Value> {
    let config: Value = serde_json::from_slice(&entry(archive, CONFIG)?).map_err(|e| bad(format!("{CONFIG}: {e}")))?;
    let optimizer = config.pointer("/compile_config/optimizer").filter(|o| !o.is_null()).ok_or_else(|| {
        Error::InvalidCheckpoint(
            "the .keras archive holds no compiled optimizer (config.json has no compile_config.optimizer)".into(),
        )
    })?;
    let Some(class) = optimizer.get("class_name").and_then(Value::as_str) else {
        return Err(Error::InvalidConfig(format!(
            "the .keras archive's optimizer is {optimizer}, not a serialized AdamW (compile with an AdamW object, not a name)"
        )));
    };
    // A LossScaleOptimizer's config holds its optimizer's under inner_optimizer.
    let inner = (class == LOSS_SCALE_OPTIMIZER)
        .then(|| optimizer.pointer("/config/inner_optimizer/class_name").and_then(Value::as_str).unwrap_or("nothing"));
    if let Some(inner) = inner.filter(|inner| inner.starts_with("LossScaleOptimizer")) {
        return Err(crate::config::nested_loss_scale_error(inner));
    }
    if let Some(inner) = inner.filter(|inner| *inner != "AdamW") {
        return Err(Error::InvalidConfig(format!(
            "the .keras archive's optimizer is a LossScaleOptimizer around {inner:?}, not around AdamW (compile_config.optimizer.config.inner_optimizer.class_name)"
        )));
    }
    if class != "AdamW" && inner.is_none() {
        return Err(Error::InvalidConfig(format!(
            "the .keras archive's optimizer is {class:?}, not AdamW or a LossScaleOptimizer around one (compile_config.optimizer.class_name)"
        )));
    }
    let optimizer_config = optimizer
        .get("config")
        .filter(|c| c.is_object())
        .ok_or_else(|| bad("compile_config.optimizer has no config"))?;
    Ok(optimizer_config.clone())
}

/// A copy of the archive, entry by entry in its order, with `weights` as its
/// `model.weights.h5`; stored, as Keras writes it.
pub(super) fn replace_weights(bytes: &[u8], weights: &[u8]) -> Result<Vec<u8>> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    let mut out = ZipWriter::new(Cursor::new(Vec::new()));
    let write_error = |e: &dyn std::fmt::Display| Error::Internal(format!("writing the .keras archive: {e}"));
    for index in 0..archive.len() {
        let name = archive.name_for_index(index).ok_or_else(|| bad(format!("no entry {index}")))?.map_err(bad)?;
        // The old weights file is not read again: `weights` replaces it.
        let (name, old) =
            if name == WEIGHTS { (name.into_owned(), Vec::new()) } else { entry_at(&mut archive, index)? };
        let contents = if name == WEIGHTS { weights } else { &old[..] };
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(contents.len() as u64 >= u32::MAX as u64);
        out.start_file(name.as_str(), options).map_err(|e| write_error(&e))?;
        out.write_all(contents).map_err(|e| write_error(&e))?;
    }
    Ok(out.finish().map_err(|e| write_error(&e))?.into_inner())
}
