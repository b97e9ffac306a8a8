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

fn entry(archive: &mut ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>> {
    let mut file = archive.by_name(name).map_err(|e| bad(format!("{name}: {e}")))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| bad(format!("{name}: {e}")))?;
    Ok(bytes)
}

/// The archive's weights file and its optimizer's config (the `config` of
/// `compile_config.optimizer`, as JSON), which must be an AdamW's.
pub(super) fn read(bytes: &[u8]) -> Result<(Vec<u8>, String)> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    let weights = entry(&mut archive, WEIGHTS)?;
    let config: Value =
        serde_json::from_slice(&entry(&mut archive, CONFIG)?).map_err(|e| bad(format!("{CONFIG}: {e}")))?;
    let optimizer = config.pointer("/compile_config/optimizer").filter(|o| !o.is_null()).ok_or_else(|| {
        Error::InvalidCheckpoint(
            "the .keras archive holds no compiled optimizer (config.json has no compile_config.optimizer)".into(),
        )
    })?;
    let class = optimizer.get("class_name").and_then(Value::as_str).unwrap_or("");
    if class != "AdamW" {
        return Err(Error::InvalidConfig(format!(
            "the .keras archive's optimizer is {class:?}, not AdamW (compile_config.optimizer.class_name)"
        )));
    }
    let optimizer_config = optimizer
        .get("config")
        .filter(|c| c.is_object())
        .ok_or_else(|| bad("compile_config.optimizer has no config"))?;
    Ok((weights, optimizer_config.to_string()))
}

/// A copy of the archive, entry by entry in its order, with `weights` as its
/// `model.weights.h5`; stored, as Keras writes it.
pub(super) fn replace_weights(bytes: &[u8], weights: &[u8]) -> Result<Vec<u8>> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    let mut out = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let write_error = |e: &dyn std::fmt::Display| Error::Internal(format!("writing the .keras archive: {e}"));
    for index in 0..archive.len() {
        let name = archive.by_index(index).map_err(bad)?.name().map_err(bad)?.to_string();
        let contents = if name == WEIGHTS { weights.to_vec() } else { entry(&mut archive, &name)? };
        out.start_file(name.as_str(), options).map_err(|e| write_error(&e))?;
        out.write_all(&contents).map_err(|e| write_error(&e))?;
    }
    Ok(out.finish().map_err(|e| write_error(&e))?.into_inner())
}
