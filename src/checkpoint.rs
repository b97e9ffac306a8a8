//! The checkpoint format of `save_own_variables` / `load_own_variables`: a safetensors file
//! holding Keras' store layout, one tensor per optimizer variable under the keys "0".."N-1" in
//! `optimizer.variables` order ("0" is the int64 iteration counter, shape `[]`). Little-endian,
//! as safetensors requires.
//!
//! The metadata holds one key, `"libadamw"`, whose value names the format version, the library
//! version that wrote it, a CRC-32 of every tensor's bytes in key order, a CRC-32 of the layout,
//! and the layout: `"v3 version=0.1.0 crc32=1c291ca3 layout_crc32=0badf00d layout={...}"`. (One
//! key, because safetensors keeps metadata in a hash map whose order would make two saves of the
//! same state differ.) A load recomputes both CRCs, so a flipped byte anywhere is caught;
//! safetensors' own parser catches truncation. The layout ([`Layout`]: the writer's config
//! fingerprint, every variable's dtype, whether it has a float32 master copy, its full shape and
//! the range its shard holds, and which variable each tensor belongs to) lets a load refuse a
//! checkpoint of variables of other dtypes whose state has the same shapes and dtypes (bfloat16
//! and float16 variables with float32 masters), and lets the checkpoints of N ranks be resharded
//! for M ([`reshard`]).
//!
//! Format v2 (libadamw 0.1.0) is still read: its layout has no dtypes and no master flags (a
//! load then checks the tensors alone), and one written before the layout has none at all (it
//! loads, but does not reshard). v3 writes the loss scale only for a dynamic one, the only kind
//! whose state a load restores (docs/numerics.md §19); v2 wrote it for a fixed one too.
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
use serde::{Deserialize, Serialize};

use crate::dtype::{DType, TensorBuf, TensorRef};
use crate::error::{Error, Result};

const METADATA_KEY: &str = "libadamw";
/// The format written, and the older one still read.
const FORMAT_VERSION: &str = "v3";
const FORMAT_V2: &str = "v2";

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

pub(crate) fn dtype_of(dtype: Dtype) -> Option<DType> {
    DType::all().into_iter().find(|&d| safetensors_dtype(d) == dtype)
}

/// The dtype a layout names (`DType::name`).
fn dtype_named(name: &str) -> Option<DType> {
    DType::all().into_iter().find(|d| d.name() == name)
}

impl Held {
    /// What the variable is, for messages: `bfloat16 with a float32 master copy`, `float32`, or
    /// for format v2 `of an unrecorded dtype`.
    pub fn describe(&self) -> String {
        match (&self.dtype, self.master) {
            (Some(dtype), Some(true)) => format!("{dtype} with a float32 master copy"),
            (Some(dtype), _) => dtype.clone(),
            (None, _) => "of an unrecorded dtype".into(),
        }
    }
}

/// Serializes the optimizer variables, each a shape and its values, in Keras' order, under the
/// keys "0".."N-1", and `named` tensors under their names (state that is not an optimizer
/// variable, such as the loss scale). The CRC covers the numbered tensors in order, then the
/// named ones in the order of their names.
pub fn encode(
    tensors: &[(&[usize], TensorRef<'_>)],
    named: &[(&str, TensorRef<'_>)],
    layout: &Layout,
) -> Result<Vec<u8>> {
    let entry = |shape: &[usize], values: TensorRef<'_>| Entry {
        dtype: safetensors_dtype(values.dtype()),
        shape: shape.to_vec(),
        bytes: values.to_le_bytes(),
    };
    let mut entries: Vec<(String, Entry)> =
        tensors.iter().enumerate().map(|(i, &(shape, values))| (i.to_string(), entry(shape, values))).collect();
    let mut named: Vec<&(&str, TensorRef<'_>)> = named.iter().collect();
    named.sort_by_key(|(name, _)| *name);
    // A named scalar has shape []; a list (one number per variable) its length.
    entries.extend(named.iter().map(|&&(name, values)| {
        let shape = if values.len() == 1 { vec![] } else { vec![values.len()] };
        (name.to_string(), entry(&shape, values))
    }));
    let layout = serde_json::to_string(layout).map_err(|e| Error::Internal(format!("the checkpoint layout: {e}")))?;
    let mut crc = crc32fast::Hasher::new();
    for (_, e) in &entries {
        crc.update(&e.bytes);
    }
    let stamp = format!(
        "{FORMAT_VERSION} version={} crc32={:08x} layout_crc32={:08x} layout={layout}",
        env!("CARGO_PKG_VERSION"),
        crc.finalize(),
        crc32fast::hash(layout.as_bytes())
    );
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
    /// The writer's layout (absent from checkpoints written before it was recorded).
    pub layout: Option<Layout>,
}

/// What a checkpoint records about the optimizer that wrote it, for resharding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// A fingerprint of the writer's `get_config()`: the shards of one optimizer share it.
    pub optimizer: String,
    /// Per built variable: its full shape and the flat range held.
    pub variables: Vec<Held>,
    /// Per numbered tensor: the variable it is a slot of (none: the iteration counter).
    pub keys: Vec<Option<usize>>,
}

/// The part of a variable a checkpoint holds, and (from format v3 on) what the variable is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The variable's dtype, by name (`"bfloat16"`); `None` in format v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Whether the variable has a float32 master copy; `None` in format v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<bool>,
    pub shape: Vec<usize>,
    pub sharded: bool,
    pub offset: usize,
    pub len: usize,
}

/// The fields of the metadata stamp.
struct Stamp<'a> {
    /// The library version that wrote it.
    writer: &'a str,
    /// The tensors' CRC-32.
    crc: u32,
    /// The layout's JSON and its CRC-32, if it has one.
    layout: Option<(&'a str, u32)>,
    /// Written in format v3: the layout is there and records every variable's dtype.
    v3: bool,
}

fn parse_stamp(stamp: &str) -> Option<Stamp<'_>> {
    let (head, layout) = match stamp.split_once(" layout=") {
        Some((head, layout)) => (head, Some(layout)),
        None => (stamp, None),
    };
    let mut fields = head.split_whitespace();
    let v3 = match fields.next()? {
        FORMAT_VERSION => true,
        FORMAT_V2 => false,
        _ => return None,
    };
    let hex = |field: Option<&str>, name: &str| u32::from_str_radix(field?.strip_prefix(name)?, 16).ok();
    let version = fields.next()?.strip_prefix("version=")?;
    let crc = hex(fields.next(), "crc32=")?;
    let layout = match layout {
        Some(json) => Some((json, hex(fields.next(), "layout_crc32=")?)),
        None => None,
    };
    Some(Stamp { writer: version, crc, layout, v3 })
}

/// Parses checkpoint bytes; anything that is not a well-formed, intact checkpoint of this format
/// is `InvalidCheckpoint`.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint> {
    let bad = |msg: String| Error::InvalidCheckpoint(msg);
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors checkpoint: {e}")))?;
    let stamp = metadata.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)).cloned();
    let Some(Stamp { writer, crc: expected_crc, layout, v3 }) = stamp.as_deref().and_then(parse_stamp) else {
        return Err(bad(format!(
            "not a libadamw checkpoint of format {FORMAT_VERSION} or {FORMAT_V2}: the metadata \"{METADATA_KEY}\" is {stamp:?}"
        )));
    };
    if v3 && layout.is_none() {
        return Err(bad(format!("a checkpoint of format {FORMAT_VERSION} must record its layout")));
    }
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
        if shape.len() > 1 {
            return Err(bad(format!("tensor \"{name}\" must be a scalar or a list")));
        }
        named.push((name, values));
    }
    let actual_crc = crc.finalize();
    if actual_crc != expected_crc {
        return Err(bad(format!(
            "the checkpoint is corrupted: its data has CRC-32 {actual_crc:08x}, but libadamw {writer} recorded {expected_crc:08x}"
        )));
    }
    if let Some((json, expected)) = layout {
        let actual = crc32fast::hash(json.as_bytes());
        if actual != expected {
            return Err(bad(format!(
                "the checkpoint is corrupted: its layout has CRC-32 {actual:08x}, but libadamw {writer} recorded {expected:08x}"
            )));
        }
    }
    if tensors.first().is_some_and(|(shape, v)| !shape.is_empty() || v.dtype() != DType::I64) {
        return Err(bad("tensor \"0\" must be the int64 scalar iteration counter".into()));
    }
    let layout = match layout {
        None => None,
        Some((json, _)) => {
            let layout: Layout =
                serde_json::from_str(json).map_err(|e| bad(format!("the checkpoint's layout is not readable: {e}")))?;
            let fits = layout.keys.len() == tensors.len()
                && layout.keys.iter().zip(&tensors).all(|(key, (shape, _))| match key {
                    None => shape.is_empty(),
                    Some(v) => layout.variables.get(*v).is_some_and(|h| shape.iter().product::<usize>() == h.len),
                });
            if !fits {
                return Err(bad("the checkpoint's layout does not describe its tensors".into()));
            }
            let described =
                |h: &Held| h.dtype.as_deref().is_some_and(|d| dtype_named(d).is_some()) && h.master.is_some();
            if v3 && !layout.variables.iter().all(described) {
                return Err(bad(format!(
                    "the checkpoint's layout does not give every variable's dtype and master flag (format {FORMAT_VERSION})"
                )));
            }
            Some(layout)
        }
    };
    Ok(Checkpoint { tensors, named, layout })
}

/// One rank's checkpoint under another sharding, from the checkpoints of every rank of the old
/// one: `target[v]` is the flat range of variable v the new rank holds (`None`: the whole
/// variable, unsharded). The inputs must come from one optimizer (the same config fingerprint,
/// variables and tensors) at one step (the same counter and loss scale), and hold every element
/// of each sharded variable exactly once; a variable unsharded everywhere is taken from the
/// first. Returns the tensors, the named scalars and the new layout; nothing is half-done.
#[allow(clippy::type_complexity)]
pub fn reshard(
    inputs: &[Checkpoint],
    target: &[Option<(usize, usize)>],
) -> Result<(Vec<(Vec<usize>, TensorBuf)>, Vec<(String, TensorBuf)>, Layout)> {
    let mismatch = |msg: String| Error::CheckpointMismatch(msg);
    let first = inputs.first().ok_or_else(|| mismatch("no shard checkpoints were given".into()))?;
    let layouts: Vec<&Layout> = inputs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.layout.as_ref().ok_or_else(|| {
                mismatch(format!(
                    "checkpoint {i} records no layout (written by an older libadamw): it cannot be resharded"
                ))
            })
        })
        .collect::<Result<_>>()?;
    let base = layouts[0];
    for (i, (c, l)) in inputs.iter().zip(&layouts).enumerate().skip(1) {
        let same_vars = l.variables.len() == base.variables.len()
            && l.variables.iter().zip(&base.variables).all(|(a, b)| {
                a.shape == b.shape && a.sharded == b.sharded && a.dtype == b.dtype && a.master == b.master
            });
        if l.optimizer != base.optimizer || l.keys != base.keys || !same_vars {
            return Err(mismatch(format!(
                "checkpoint {i} comes from another optimizer than checkpoint 0 (its config, variables or slots differ)"
            )));
        }
        let same_dtypes = c.tensors.iter().zip(&first.tensors).all(|((_, a), (_, b))| a.dtype() == b.dtype());
        if !same_dtypes {
            return Err(mismatch(format!("checkpoint {i} holds other dtypes than checkpoint 0")));
        }
        let counter = |c: &Checkpoint| c.tensors.first().map(|(_, t)| t.as_ref().to_le_bytes());
        if counter(c) != counter(first)
            || c.named
                .iter()
                .map(|(n, t)| (n, t.as_ref().to_le_bytes()))
                .ne(first.named.iter().map(|(n, t)| (n, t.as_ref().to_le_bytes())))
        {
            return Err(mismatch(format!(
                "checkpoint {i} was saved at another step than checkpoint 0 (its iteration counter or loss scale differs)"
            )));
        }
    }
    if target.len() != base.variables.len() {
        return Err(mismatch(format!(
            "the checkpoints hold {} variables, the optimizer {}",
            base.variables.len(),
            target.len()
        )));
    }
    // Per sharded variable: the inputs' ranges must partition it.
    for (v, held) in base.variables.iter().enumerate() {
        let full: usize = held.shape.iter().product();
        if let Some((offset, len)) = target[v]
            && offset.checked_add(len).is_none_or(|end| end > full)
        {
            return Err(mismatch(format!(
                "the range {offset}..{} lies outside variable {v}'s {full} elements",
                offset + len
            )));
        }
        if !held.sharded {
            continue;
        }
        let mut ranges: Vec<(usize, usize, usize)> = layouts
            .iter()
            .enumerate()
            .map(|(i, l)| (l.variables[v].offset, l.variables[v].len, i))
            .filter(|r| r.1 > 0)
            .collect();
        ranges.sort_unstable();
        let mut at = 0;
        for &(offset, len, i) in &ranges {
            if offset < at {
                return Err(mismatch(format!(
                    "checkpoint {i} holds elements {offset}..{} of variable {v}, which another shard holds too (a duplicated or overlapping shard)",
                    offset + len
                )));
            }
            if offset > at {
                return Err(mismatch(format!(
                    "no checkpoint holds elements {at}..{offset} of variable {v} (a missing shard)"
                )));
            }
            at = offset + len;
        }
        if at != full {
            return Err(mismatch(format!(
                "no checkpoint holds elements {at}..{full} of variable {v} (a missing shard)"
            )));
        }
    }
    let mut tensors = Vec::with_capacity(first.tensors.len());
    for (k, key) in base.keys.iter().enumerate() {
        let Some(v) = *key else {
            let (shape, counter) = &first.tensors[k];
            tensors.push((shape.clone(), TensorBuf::copy_of(counter.as_ref())?));
            continue;
        };
        let held = &base.variables[v];
        let full: usize = held.shape.iter().product();
        let (offset, len) = target[v].unwrap_or((0, full));
        let dtype = first.tensors[k].1.dtype();
        let size = dtype.size();
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len * size).map_err(|_| Error::OutOfMemory("a resharded slot".into()))?;
        if held.sharded {
            // The pieces of offset..offset + len, from the inputs in element order.
            let mut pieces: Vec<(usize, usize)> =
                (0..inputs.len()).map(|i| (layouts[i].variables[v].offset, i)).collect();
            pieces.sort_unstable();
            for (start, i) in pieces {
                let have = layouts[i].variables[v].len;
                let (lo, hi) = (offset.max(start), (offset + len).min(start + have));
                if lo < hi {
                    let source = inputs[i].tensors[k].1.as_ref().to_le_bytes();
                    bytes.extend_from_slice(&source[(lo - start) * size..(hi - start) * size]);
                }
            }
        } else {
            let source = first.tensors[k].1.as_ref().to_le_bytes();
            bytes.extend_from_slice(&source[offset * size..(offset + len) * size]);
        }
        let shape = if target[v].is_some() { vec![len] } else { held.shape.clone() };
        tensors.push((shape, TensorBuf::from_le_bytes(dtype, &bytes)));
    }
    let variables = base
        .variables
        .iter()
        .zip(target)
        .map(|(h, t)| {
            let full = h.shape.iter().product();
            let (offset, len) = t.unwrap_or((0, full));
            Held { dtype: h.dtype.clone(), master: h.master, shape: h.shape.clone(), sharded: t.is_some(), offset, len }
        })
        .collect();
    let layout = Layout { optimizer: base.optimizer.clone(), variables, keys: base.keys.clone() };
    let named = first
        .named
        .iter()
        .map(|(n, t)| Ok((n.clone(), TensorBuf::copy_of(t.as_ref())?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((tensors, named, layout))
}

/// The checkpoints of every rank of one sharding (any order; one unsharded checkpoint is one
/// rank) as the checkpoints of `ranks` ranks that split each sharded variable evenly (rank r
/// holds elements `n * r / ranks .. n * (r + 1) / ranks`), or with `ranks` 1 as one unsharded
/// checkpoint; variables unsharded in the inputs stay whole. `CheckpointMismatch` for a set of
/// checkpoints that is not every shard of one optimizer at one step (docs/numerics.md §13),
/// `InvalidCheckpoint` for one that is not intact.
pub fn reshard_checkpoints(inputs: &[&[u8]], ranks: usize) -> Result<Vec<Vec<u8>>> {
    if ranks == 0 {
        return Err(Error::InvalidArgument("resharding needs at least one rank".into()));
    }
    let inputs = inputs.iter().map(|b| decode(b)).collect::<Result<Vec<_>>>()?;
    let Some(layout) = inputs.first().and_then(|c| c.layout.clone()) else {
        return reshard(&inputs, &[]).map(|_| Vec::new()); // the error for no input or no layout
    };
    let sharded: Vec<bool> = layout.variables.iter().map(|h| h.sharded).collect();
    let mut outputs = Vec::with_capacity(ranks);
    for r in 0..ranks {
        let target: Vec<Option<(usize, usize)>> = layout
            .variables
            .iter()
            .zip(&sharded)
            .map(|(h, &was_sharded)| {
                let n: usize = h.shape.iter().product();
                (ranks > 1 && (was_sharded || inputs.len() == 1))
                    .then(|| (n * r / ranks, n * (r + 1) / ranks - n * r / ranks))
            })
            .collect();
        let (tensors, named, layout) = reshard(&inputs, &target)?;
        let views: Vec<(&[usize], TensorRef<'_>)> = tensors.iter().map(|(s, t)| (s.as_slice(), t.as_ref())).collect();
        let names: Vec<(&str, TensorRef<'_>)> = named.iter().map(|(n, t)| (n.as_str(), t.as_ref())).collect();
        outputs.push(encode(&views, &names, &layout)?);
    }
    Ok(outputs)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The stamp's `crc32` covers the tensors alone, as it did before the layout was recorded;
    /// the layout's own CRC catches a changed layout.
    #[test]
    fn the_stamp_keeps_the_tensors_crc_of_readers_before_the_layout() {
        let counter = [7i64];
        let m = [0.5f32, -1.0, 2.0];
        let layout = Layout {
            optimizer: "0123456789abcdef".into(),
            variables: vec![Held {
                dtype: Some("float32".into()),
                master: Some(false),
                shape: vec![3],
                sharded: false,
                offset: 0,
                len: 3,
            }],
            keys: vec![None, Some(0)],
        };
        let bytes = encode(&[(&[], TensorRef::I64(&counter)), (&[3], TensorRef::F32(&m))], &[], &layout).unwrap();
        let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
        let stamp = metadata.metadata().as_ref().unwrap()[METADATA_KEY].clone();
        let mut fields = stamp.split_whitespace();
        assert_eq!(fields.next(), Some(FORMAT_VERSION));
        assert!(fields.next().unwrap().starts_with("version="));
        let old_crc = u32::from_str_radix(fields.next().unwrap().strip_prefix("crc32=").unwrap(), 16).unwrap();
        let mut tensors_only = crc32fast::Hasher::new();
        tensors_only.update(&TensorRef::I64(&counter).to_le_bytes());
        tensors_only.update(&TensorRef::F32(&m).to_le_bytes());
        assert_eq!(old_crc, tensors_only.finalize());
        assert_eq!(decode(&bytes).unwrap().layout, Some(layout.clone()));
        // The same tensors with a changed layout under the first layout's CRC are refused.
        let changed = stamp.replace("\"shape\":[3]", "\"shape\":[4]");
        assert_ne!(changed, stamp);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
        let forged =
            safetensors::serialize(tensors, Some(HashMap::from([(METADATA_KEY.to_string(), changed)]))).unwrap();
        let err = decode(&forged).err().unwrap();
        assert!(
            matches!(err, Error::InvalidCheckpoint(_)) && err.to_string().contains("its layout has CRC-32"),
            "{err}"
        );
    }
}
