//! The checkpoint format of `save_own_variables` / `load_own_variables`: a safetensors file
//! holding Keras' store layout, one tensor per optimizer variable under the keys "0".."N-1" in
//! `optimizer.variables` order ("0" is the int64 iteration counter, shape `[]`). The metadata
//! records the format. Little-endian, as safetensors requires.

use std::borrow::Cow;
use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::error::{Error, Result};
use crate::optimizer::{OptimizerVariable, Weight, WeightData};

const FORMAT: &str = "libadamw.optimizer_variables.v1";

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

fn le_bytes(data: WeightData<'_>) -> (Dtype, Vec<u8>) {
    match data {
        WeightData::I64(x) => (Dtype::I64, x.iter().flat_map(|v| v.to_le_bytes()).collect()),
        WeightData::F32(x) => (Dtype::F32, x.iter().flat_map(|v| v.to_le_bytes()).collect()),
        WeightData::F64(x) => (Dtype::F64, x.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

/// Serializes the optimizer variables.
pub fn encode(vars: &[OptimizerVariable<'_>]) -> Result<Vec<u8>> {
    let entries: Vec<(String, Entry)> = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (dtype, bytes) = le_bytes(v.data);
            (i.to_string(), Entry { dtype, shape: v.shape.to_vec(), bytes })
        })
        .collect();
    // One key: safetensors keeps metadata in a HashMap, whose order would make the bytes of
    // two saves of the same state differ.
    let metadata = HashMap::from([("format".to_string(), FORMAT.to_string())]);
    safetensors::serialize(entries.iter().map(|(k, e)| (k.as_str(), e)), Some(metadata))
        .map_err(|e| Error::OutOfMemory(format!("cannot serialize the optimizer variables: {e}")))
}

/// A decoded checkpoint: owned values, ready to be checked against an optimizer.
pub struct Checkpoint {
    tensors: Vec<(Vec<usize>, Values)>,
}

enum Values {
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Checkpoint {
    pub fn weights(&self) -> Vec<Weight<'_>> {
        self.tensors
            .iter()
            .map(|(shape, values)| Weight {
                shape,
                data: match values {
                    Values::I64(x) => WeightData::I64(x),
                    Values::F32(x) => WeightData::F32(x),
                    Values::F64(x) => WeightData::F64(x),
                },
            })
            .collect()
    }
}

/// Parses checkpoint bytes; anything that is not a well-formed checkpoint of this format is
/// `InvalidCheckpoint`.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint> {
    let bad = |msg: String| Error::InvalidCheckpoint(msg);
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors checkpoint: {e}")))?;
    let format = metadata.metadata().as_ref().and_then(|m| m.get("format"));
    if format.map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!("not a libadamw checkpoint: the metadata format is {format:?}, expected {FORMAT:?}")));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors checkpoint: {e}")))?;
    let n = st.len();
    let mut tensors = Vec::with_capacity(n);
    for i in 0..n {
        let key = i.to_string();
        let view = st.tensor(&key).map_err(|_| bad(format!("checkpoint of {n} tensors has no key \"{key}\"")))?;
        let data = view.data();
        let values = match view.dtype() {
            Dtype::I64 => Values::I64(
                data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect(),
            ),
            Dtype::F32 => Values::F32(
                data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default())).collect(),
            ),
            Dtype::F64 => Values::F64(
                data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect(),
            ),
            other => return Err(bad(format!("tensor \"{key}\" has dtype {other:?}; expected I64, F32 or F64"))),
        };
        tensors.push((view.shape().to_vec(), values));
    }
    if tensors.first().is_some_and(|(shape, v)| !shape.is_empty() || !matches!(v, Values::I64(_))) {
        return Err(bad("tensor \"0\" must be the int64 scalar iteration counter".into()));
    }
    Ok(Checkpoint { tensors })
}
