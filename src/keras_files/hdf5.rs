//! The HDF5 side of Keras' files (hdf5-pure): the optimizer's datasets `optimizer/vars/<i>` read
//! into a store, and a copy of a template file with those datasets replaced.
//!
//! Keras (through h5py) writes every variable as a contiguous little-endian dataset of its
//! shape (a scalar dataspace for the counter): int64, float32, float64 or float16. A dataset of
//! another type or byte order is refused rather than converted, since a converted value would
//! not be the state Keras saved.

use hdf5_pure::{
    AttrValue, Dataset, DatatypeByteOrder, FileBuilder, FinishedGroup, FloatingPointLayout, Group, GroupBuilder,
};
use hdf5_pure::{DatasetBuilder, Datatype};

use super::KerasStore;
use crate::dtype::{DType, TensorBuf};
use crate::error::{Error, Result};

/// Where Keras keeps a compiled model's optimizer state in the file.
const OPTIMIZER: &str = "optimizer";
const VARS: &str = "vars";

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::InvalidCheckpoint(format!("not a readable Keras weights file: {msg}"))
}

/// The optimizer's store in an HDF5 file of Keras' layout.
pub(super) fn read_store(bytes: Vec<u8>) -> Result<KerasStore> {
    let len = bytes.len();
    let file = open(bytes)?;
    let group = file.group(&format!("{OPTIMIZER}/{VARS}")).map_err(|_| {
        Error::InvalidCheckpoint(
            "the Keras file holds no optimizer state (no group optimizer/vars: a model saved without a compiled optimizer, or not a Keras file)".into(),
        )
    })?;
    let names = group.datasets().map_err(bad)?;
    let count = names.len();
    if let Some(name) = names.iter().find(|n| n.parse::<usize>().map_or(true, |i| i >= count || **n != i.to_string())) {
        return Err(bad(format!("optimizer/vars holds \"{name}\", not one of \"0\"..\"{}\"", count.saturating_sub(1))));
    }
    let mut tensors = Vec::with_capacity(count);
    for i in 0..count {
        let dataset = group.dataset(&i.to_string()).map_err(bad)?;
        tensors.push(read_dataset(&dataset, i, len)?);
    }
    let store = KerasStore { tensors };
    store.check_counter("the Keras file's optimizer/vars")?;
    Ok(store)
}

/// Opens an HDF5 file that is all there: the superblock records where the file ends, as the
/// HDF5 library checks (a truncated file may otherwise still parse, short of data it no longer
/// reads).
fn open(bytes: Vec<u8>) -> Result<hdf5_pure::File> {
    let len = bytes.len() as u64;
    let file = hdf5_pure::File::from_bytes(bytes).map_err(bad)?;
    let end = file.superblock().eof_address;
    if end > len {
        return Err(bad(format!("the file is truncated: it has {len} bytes, its superblock says {end}")));
    }
    Ok(file)
}

/// One dataset's shape and values, in a dtype libadamw has; `file_len` bounds what it may hold
/// (Keras' datasets are stored uncompressed), so a damaged shape cannot ask for a huge read.
fn read_dataset(dataset: &Dataset, index: usize, file_len: usize) -> Result<(Vec<usize>, TensorBuf)> {
    let what = format!("optimizer/vars/{index}");
    let datatype = dataset.datatype().map_err(bad)?;
    let dtype = dtype_of(&datatype).ok_or_else(|| {
        Error::InvalidCheckpoint(format!(
            "{what} has the HDF5 datatype {datatype:?}; libadamw reads little-endian int64, float32, float64 and float16"
        ))
    })?;
    let shape = dataset.shape().map_err(bad)?;
    let shape: Vec<usize> =
        shape.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<_, _>>().map_err(bad)?;
    let count =
        shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| bad(format!("{what} is too large")))?;
    if count.checked_mul(dtype.size()).is_none_or(|bytes| bytes > file_len) {
        return Err(bad(format!("{what} claims {count} elements of {}, more than the file holds", dtype.name())));
    }
    let raw = dataset.read_raw().map_err(bad)?;
    if count.checked_mul(dtype.size()) != Some(raw.len()) {
        return Err(bad(format!("{what} holds {} bytes for {count} elements of {}", raw.len(), dtype.name())));
    }
    Ok((shape, TensorBuf::from_le_bytes(dtype, &raw)))
}

/// The dtype of an HDF5 datatype Keras writes, if it is one.
fn dtype_of(datatype: &Datatype) -> Option<DType> {
    match datatype {
        Datatype::FixedPoint { size: 8, byte_order: DatatypeByteOrder::LittleEndian, layout } if layout.signed => {
            Some(DType::I64)
        }
        Datatype::FloatingPoint { size, byte_order: DatatypeByteOrder::LittleEndian, layout } => {
            let ieee = |bits: u16, exponent: u8, mantissa: u8, bias: u32| {
                layout.bit_offset == 0
                    && layout.bit_precision == bits
                    && layout.exponent_location == mantissa
                    && layout.exponent_size == exponent
                    && layout.mantissa_location == 0
                    && layout.mantissa_size == mantissa
                    && layout.exponent_bias == bias
            };
            match size {
                2 if ieee(16, 5, 10, 15) => Some(DType::F16),
                4 if ieee(32, 8, 23, 127) => Some(DType::F32),
                8 if ieee(64, 11, 52, 1023) => Some(DType::F64),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The HDF5 datatype h5py writes for a dtype.
fn datatype_of(dtype: DType) -> Result<Datatype> {
    match dtype {
        DType::F32 => Ok(hdf5_pure::make_f32_type()),
        DType::F64 => Ok(hdf5_pure::make_f64_type()),
        DType::I64 => Ok(hdf5_pure::make_i64_type()),
        DType::F16 => Ok(Datatype::FloatingPoint {
            size: 2,
            byte_order: DatatypeByteOrder::LittleEndian,
            layout: FloatingPointLayout {
                bit_offset: 0,
                bit_precision: 16,
                exponent_location: 10,
                exponent_size: 5,
                mantissa_location: 0,
                mantissa_size: 10,
                exponent_bias: 15,
            },
        }),
        DType::BF16 => {
            Err(Error::InvalidArgument("Keras files hold no bfloat16 datasets (h5py has no bfloat16 type)".into()))
        }
    }
}

/// The template file rebuilt with `store` as its optimizer state: every other group, dataset
/// and attribute copied as it is.
pub(super) fn write_store(template: Vec<u8>, store: &KerasStore) -> Result<Vec<u8>> {
    let old = read_store(template.clone())
        .map_err(|e| Error::CheckpointMismatch(format!("the template cannot take an optimizer's state: {e}")))?;
    check_same_layout(&old, store)?;
    let file = open(template)?;
    let mut builder = FileBuilder::new();
    copy_group(&file.root(), &mut builder, "", store)?;
    builder.finish().map_err(|e| Error::Internal(format!("writing the Keras weights file: {e}")))
}

/// The store must be what the template's model holds: the same count, shapes and dtypes.
fn check_same_layout(template: &KerasStore, store: &KerasStore) -> Result<()> {
    if template.tensors.len() != store.tensors.len() {
        return Err(Error::CheckpointMismatch(format!(
            "the template's optimizer has {} variables, the state to write {}: they are not the same model and optimizer",
            template.tensors.len(),
            store.tensors.len()
        )));
    }
    for (i, ((shape, values), (new_shape, new_values))) in template.tensors.iter().zip(&store.tensors).enumerate() {
        if shape != new_shape || values.dtype() != new_values.dtype() {
            return Err(Error::CheckpointMismatch(format!(
                "optimizer variable {i} is {} {shape:?} in the template but {} {new_shape:?} in the state to write",
                values.dtype().name(),
                new_values.dtype().name()
            )));
        }
    }
    Ok(())
}

/// What a group is written into: the file's root or a group under construction.
trait Container {
    fn dataset(&mut self, name: &str) -> &mut DatasetBuilder;
    fn group(&mut self, name: &str) -> GroupBuilder;
    fn add(&mut self, group: FinishedGroup);
    fn attr(&mut self, name: &str, value: AttrValue);
}

impl Container for FileBuilder {
    fn dataset(&mut self, name: &str) -> &mut DatasetBuilder {
        self.create_dataset(name)
    }
    fn group(&mut self, name: &str) -> GroupBuilder {
        self.create_group(name)
    }
    fn add(&mut self, group: FinishedGroup) {
        self.add_group(group)
    }
    fn attr(&mut self, name: &str, value: AttrValue) {
        self.set_attr(name, value);
    }
}

impl Container for GroupBuilder {
    fn dataset(&mut self, name: &str) -> &mut DatasetBuilder {
        self.create_dataset(name)
    }
    fn group(&mut self, name: &str) -> GroupBuilder {
        self.create_group(name)
    }
    fn add(&mut self, group: FinishedGroup) {
        self.add_group(group)
    }
    fn attr(&mut self, name: &str, value: AttrValue) {
        self.set_attr(name, value)
    }
}

/// Copies `src` (at `path`) into `dst`, member by member in name order, with the optimizer's
/// datasets taken from `store`.
fn copy_group(src: &Group, dst: &mut impl Container, path: &str, store: &KerasStore) -> Result<()> {
    for (name, value) in sorted(src.attrs().map_err(bad)?) {
        dst.attr(&name, value);
    }
    let here = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}/{name}") };
    if path == format!("{OPTIMIZER}/{VARS}") {
        for (i, (shape, values)) in store.tensors.iter().enumerate() {
            let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let datatype = datatype_of(values.dtype())?;
            dst.dataset(&i.to_string())
                .with_raw_data(datatype, values.as_ref().to_le_bytes(), values.len() as u64)
                .with_shape(&dims);
        }
        return Ok(());
    }
    let mut datasets = src.datasets().map_err(bad)?;
    datasets.sort();
    for name in datasets {
        let dataset = src.dataset(&name).map_err(bad)?;
        let shape = dataset.shape().map_err(bad)?;
        let count = shape.iter().product::<u64>();
        let builder = dst.dataset(&name);
        builder
            .with_raw_data(dataset.datatype().map_err(bad)?, dataset.read_raw().map_err(bad)?, count)
            .with_shape(&shape);
        for (attr, value) in sorted(dataset.attrs().map_err(bad)?) {
            builder.set_attr(&attr, value);
        }
    }
    let mut groups = src.groups().map_err(bad)?;
    groups.sort();
    for name in groups {
        let child = src.group(&name).map_err(bad)?;
        let mut builder = dst.group(&name);
        copy_group(&child, &mut builder, &here(&name), store)?;
        dst.add(builder.finish());
    }
    Ok(())
}

fn sorted(attrs: std::collections::HashMap<String, AttrValue>) -> Vec<(String, AttrValue)> {
    let mut attrs: Vec<_> = attrs.into_iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    attrs
}
