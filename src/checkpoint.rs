//! The checkpoint format of `save_own_variables` / `load_own_variables`: a safetensors file
//! holding Keras' store layout, one tensor per optimizer variable under the keys "0".."N-1" in
//! `optimizer.variables` order ("0" is the int64 iteration counter, shape `[]`). Little-endian,
//! as safetensors requires.
//!
//! The metadata holds one key, `"libadamw"`, whose value names the format version, the library
//! version that wrote it and a CRC-32 of every tensor's bytes in key order, e.g.
//! `"v2 version=0.1.0 crc32=1c291ca3"`. (One key, because safetensors keeps metadata in a hash
//! map whose order would make two saves of the same state differ.) A load recomputes the CRC, so
//! a flipped byte anywhere is caught; safetensors' own parser catches truncation.
//!
//! Files are written atomically: a temporary file in the same directory, flushed to disk, then
//! renamed over the target, so a crash or a write error leaves the previous checkpoint intact.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::dtype::{DType, TensorBuf, TensorRef};
use crate::error::{Error, Result};

const METADATA_KEY: &str = "libadamw";
const FORMAT_VERSION: &str = "v2";

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Entry {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The safetensors dtype of a dtype, and back: the one place the two are matched.
fn safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I64 => Dtype::I64,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
    }
}

fn dtype_of(dtype: Dtype) -> Option<DType> {
    DType::all().into_iter().find(|&d| safetensors_dtype(d) == dtype)
}

/// Serializes the optimizer variables, each a shape and its values, in Keras' order, under the
/// keys "0".."N-1", and `named` tensors under their names (state that is not an optimizer
/// variable, such as the loss scale). The CRC covers the numbered tensors in order, then the
/// named ones in the order of their names.
pub fn encode(tensors: &[(&[usize], TensorRef<'_>)], named: &[(&str, TensorRef<'_>)]) -> Result<Vec<u8>> {
    let entry = |shape: &[usize], values: TensorRef<'_>| Entry {
        dtype: safetensors_dtype(values.dtype()),
        shape: shape.to_vec(),
        bytes: values.to_le_bytes(),
    };
    let mut entries: Vec<(String, Entry)> =
        tensors.iter().enumerate().map(|(i, &(shape, values))| (i.to_string(), entry(shape, values))).collect();
    let mut named: Vec<&(&str, TensorRef<'_>)> = named.iter().collect();
    named.sort_by_key(|(name, _)| *name);
    entries.extend(named.iter().map(|&&(name, values)| (name.to_string(), entry(&[], values))));
    let mut crc = crc32fast::Hasher::new();
    for (_, e) in &entries {
        crc.update(&e.bytes);
    }
    let stamp = format!("{FORMAT_VERSION} version={} crc32={:08x}", env!("CARGO_PKG_VERSION"), crc.finalize());
    let metadata = HashMap::from([(METADATA_KEY.to_string(), stamp)]);
    safetensors::serialize(entries.iter().map(|(k, e)| (k.as_str(), e)), Some(metadata))
        .map_err(|e| Error::OutOfMemory(format!("cannot serialize the optimizer variables: {e}")))
}

/// A decoded checkpoint.
pub struct Checkpoint {
    /// The optimizer variables in key order: each one's shape and values.
    pub tensors: Vec<(Vec<usize>, TensorBuf)>,
    /// The named scalars, in the order of their names.
    pub named: Vec<(String, TensorBuf)>,
}

/// The fields of the metadata stamp: (library version, CRC-32).
fn parse_stamp(stamp: &str) -> Option<(&str, u32)> {
    let mut fields = stamp.split_whitespace();
    if fields.next()? != FORMAT_VERSION {
        return None;
    }
    let version = fields.next()?.strip_prefix("version=")?;
    let crc = u32::from_str_radix(fields.next()?.strip_prefix("crc32=")?, 16).ok()?;
    Some((version, crc))
}

/// Parses checkpoint bytes; anything that is not a well-formed, intact checkpoint of this format
/// is `InvalidCheckpoint`.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint> {
    let bad = |msg: String| Error::InvalidCheckpoint(msg);
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors checkpoint: {e}")))?;
    let stamp = metadata.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)).cloned();
    let Some((writer, expected_crc)) = stamp.as_deref().and_then(parse_stamp) else {
        return Err(bad(format!(
            "not a libadamw checkpoint of format {FORMAT_VERSION}: the metadata \"{METADATA_KEY}\" is {stamp:?}"
        )));
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors checkpoint: {e}")))?;
    let mut names: Vec<String> =
        st.names().into_iter().filter(|k| k.parse::<usize>().is_err()).map(str::to_string).collect();
    names.sort();
    let n = st.len() - names.len();
    let mut crc = crc32fast::Hasher::new();
    let mut read = |key: &str| -> Result<(Vec<usize>, TensorBuf)> {
        let view =
            st.tensor(key).map_err(|_| bad(format!("checkpoint of {n} optimizer variables has no key \"{key}\"")))?;
        let data = view.data();
        crc.update(data);
        let Some(dtype) = dtype_of(view.dtype()) else {
            return Err(bad(format!(
                "tensor \"{key}\" has dtype {:?}; expected I64, F32, F64, BF16 or F16",
                view.dtype()
            )));
        };
        Ok((view.shape().to_vec(), TensorBuf::from_le_bytes(dtype, data)))
    };
    let mut tensors = Vec::with_capacity(n);
    for i in 0..n {
        tensors.push(read(&i.to_string())?);
    }
    let mut named = Vec::with_capacity(names.len());
    for name in names {
        let (shape, values) = read(&name)?;
        if !shape.is_empty() {
            return Err(bad(format!("tensor \"{name}\" must be a scalar")));
        }
        named.push((name, values));
    }
    let actual_crc = crc.finalize();
    if actual_crc != expected_crc {
        return Err(bad(format!(
            "the checkpoint is corrupted: its data has CRC-32 {actual_crc:08x}, but libadamw {writer} recorded {expected_crc:08x}"
        )));
    }
    if tensors.first().is_some_and(|(shape, v)| !shape.is_empty() || v.dtype() != DType::I64) {
        return Err(bad("tensor \"0\" must be the int64 scalar iteration counter".into()));
    }
    Ok(Checkpoint { tensors, named })
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed to disk, renamed over
/// `path`, then the directory flushed. On any error the temporary file is removed and whatever
/// was at `path` is untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |what: &str, e: std::io::Error| {
        Error::Io(format!("cannot save the checkpoint to {}: {what}: {e}", path.display()))
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Io(format!("cannot save the checkpoint to {}: not a file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file =
            File::options().write(true).create_new(true).open(&tmp).map_err(|e| io("create a temporary file", e))?;
        file.write_all(bytes).map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("flush to disk", e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| io("rename into place", e))?;
        // The rename itself becomes durable when the directory is flushed.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole checkpoint file.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::Io(format!("cannot read the checkpoint {}: {e}", path.display())))
}
