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

use super::{KerasStore, check_keys};
use crate::dtype::{DType, TensorBuf};
use crate::error::{Error, Result};

/// Where Keras keeps a compiled model's optimizer state in the file.
const OPTIMIZER: &str = "optimizer";
const VARS: &str = "vars";
/// A LossScaleOptimizer's inner AdamW, a child of `optimizer`.
const INNER: &str = "inner_optimizer";

/// How deep a template's groups may nest: Keras nests a few levels, and a file whose groups
/// link in a cycle would otherwise be walked without end.
const MAX_DEPTH: usize = 32;

/// IEEE binary16 as HDF5 describes it (h5py's `<f2`).
const IEEE754_BINARY16: FloatingPointLayout = FloatingPointLayout {
    bit_offset: 0,
    bit_precision: 16,
    exponent_location: 10,
    exponent_size: 5,
    mantissa_location: 0,
    mantissa_size: 10,
    exponent_bias: 15,
};

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::InvalidCheckpoint(format!("not a readable Keras weights file: {msg}"))
}

/// The optimizer's store in an HDF5 file of Keras' layout.
/// With it, whether the file has a LossScaleOptimizer's layout (`optimizer/inner_optimizer/vars`).
pub(super) fn read_store(bytes: Vec<u8>) -> Result<(KerasStore, bool)> {
    let len = bytes.len();
    store_of(&open(bytes)?, len)
}

/// The optimizer's store in an opened file of `len` bytes. Around a LossScaleOptimizer Keras
/// writes the inner AdamW's variables twice, under `optimizer/vars` and
/// `optimizer/inner_optimizer/vars`, and loads the inner group last: its values are the ones
/// Keras ends with, so they are read, and the outer group must hold the same. The flag says
/// whether the file has the inner group.
fn store_of(file: &hdf5_pure::File, len: usize) -> Result<(KerasStore, bool)> {
    let outer = file.group(&format!("{OPTIMIZER}/{VARS}")).map_err(|_| {
        Error::InvalidCheckpoint(
            "the Keras file holds no optimizer state (no group optimizer/vars: a model saved without a compiled optimizer, or not a Keras file)".into(),
        )
    })?;
    let store = group_store(&outer, &format!("{OPTIMIZER}/{VARS}"), len)?;
    let Ok(inner) = file.group(&format!("{OPTIMIZER}/{INNER}/{VARS}")) else {
        return Ok((store, false));
    };
    let inner_store = group_store(&inner, &format!("{OPTIMIZER}/{INNER}/{VARS}"), len)?;
    let same = |(a, b): (&Stored, &Stored)| {
        a.0 == b.0 && a.1.dtype() == b.1.dtype() && a.1.as_ref().to_le_bytes() == b.1.as_ref().to_le_bytes()
    };
    let agree =
        store.tensors.len() == inner_store.tensors.len() && store.tensors.iter().zip(&inner_store.tensors).all(same);
    if !agree {
        return Err(bad(format!(
            "{OPTIMIZER}/{VARS} and {OPTIMIZER}/{INNER}/{VARS} differ (Keras writes a LossScaleOptimizer's inner AdamW into both)"
        )));
    }
    Ok((inner_store, true))
}

/// One dataset of a store: its shape and values.
type Stored = (Vec<usize>, TensorBuf);

/// The numbered datasets of a `vars` group at `path`.
fn group_store(group: &Group, path: &str, len: usize) -> Result<KerasStore> {
    let mut datasets: Vec<(String, Dataset)> = group.iter_datasets().map_err(bad)?.collect();
    check_keys(datasets.iter().map(|(name, _)| name.as_str()), datasets.len(), path)?;
    datasets.sort_by_key(|(name, _)| name.parse::<usize>().unwrap_or(usize::MAX));
    let tensors = datasets
        .iter()
        .map(|(name, dataset)| read_dataset(dataset, &format!("{path}/{name}"), len))
        .collect::<Result<_>>()?;
    let store = KerasStore { tensors };
    store.check_counter(&format!("the Keras file's {path}"))?;
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

/// A dataset's shape and raw bytes, read only when its shape and element size fit in the file
/// (Keras stores its datasets uncompressed), so a damaged or hostile header cannot ask for a
/// huge read.
fn read_bounded(dataset: &Dataset, what: &str, file_len: usize) -> Result<(Vec<u64>, Vec<u8>)> {
    let shape = dataset.shape().map_err(bad)?;
    let size = dataset.element_size().map_err(bad)?;
    let bytes = shape.iter().try_fold(size, |n, &d| n.checked_mul(d));
    if bytes.is_none_or(|bytes| bytes > file_len as u64) {
        return Err(bad(format!(
            "{what} claims more data than the file holds (shape {shape:?}, {size}-byte elements)"
        )));
    }
    let raw = dataset.read_raw().map_err(bad)?;
    if Some(raw.len() as u64) != bytes {
        return Err(bad(format!(
            "{what} holds {} bytes, not the {} of its shape {shape:?}",
            raw.len(),
            bytes.unwrap_or(0)
        )));
    }
    Ok((shape, raw))
}

/// One optimizer dataset's shape and values, in a dtype libadamw has.
fn read_dataset(dataset: &Dataset, what: &str, file_len: usize) -> Result<(Vec<usize>, TensorBuf)> {
    let datatype = dataset.datatype().map_err(bad)?;
    let dtype = dtype_of(&datatype).ok_or_else(|| {
        Error::InvalidCheckpoint(format!(
            "{what} has the HDF5 datatype {datatype:?}; libadamw reads little-endian int64, float32, float64 and float16"
        ))
    })?;
    let (shape, raw) = read_bounded(dataset, what, file_len)?;
    let shape = shape.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<_, _>>().map_err(bad)?;
    Ok((shape, TensorBuf::from_le_bytes(dtype, &raw)))
}

/// The dtype of an HDF5 datatype Keras writes, if it is one.
fn dtype_of(datatype: &Datatype) -> Option<DType> {
    match datatype {
        Datatype::FixedPoint { size: 8, byte_order: DatatypeByteOrder::LittleEndian, layout }
            if layout.signed && layout.bit_offset == 0 && layout.bit_precision == 64 =>
        {
            Some(DType::I64)
        }
        Datatype::FloatingPoint { size, byte_order: DatatypeByteOrder::LittleEndian, layout } => match size {
            2 if *layout == IEEE754_BINARY16 => Some(DType::F16),
            4 if *layout == FloatingPointLayout::IEEE754_BINARY32 => Some(DType::F32),
            8 if *layout == FloatingPointLayout::IEEE754_BINARY64 => Some(DType::F64),
            _ => None,
        },
        _ => None,
    }
}

/// The HDF5 datatype h5py writes for a dtype (bfloat16 is refused before: `KerasStore::of`).
fn datatype_of(dtype: DType) -> Result<Datatype> {
    let float = |size, layout| Datatype::FloatingPoint { size, byte_order: DatatypeByteOrder::LittleEndian, layout };
    match dtype {
        DType::F16 => Ok(float(2, IEEE754_BINARY16)),
        DType::F32 => Ok(float(4, FloatingPointLayout::IEEE754_BINARY32)),
        DType::F64 => Ok(float(8, FloatingPointLayout::IEEE754_BINARY64)),
        DType::I64 => Ok(hdf5_pure::make_i64_type()),
        DType::BF16 => {
            Err(Error::InvalidArgument("Keras files hold no bfloat16 datasets (h5py has no bfloat16 type)".into()))
        }
    }
}

/// The template file rebuilt with `store` as its optimizer state: every other group, dataset
/// and attribute copied as it is.
pub(super) fn write_store(template: Vec<u8>, store: &KerasStore) -> Result<Vec<u8>> {
    let len = template.len();
    let file = open(template)?;
    check_same_layout(&store_of(&file, len)?.0, store)?;
    let mut builder = FileBuilder::new();
    copy_group(&file.root(), &mut builder, "", store, len)?;
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

/// The two builders have the same methods under the same names, without a trait of their own.
macro_rules! container {
    ($builder:ty) => {
        impl Container for $builder {
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
    };
}
container!(FileBuilder);
container!(GroupBuilder);

/// Copies `src` (at `path`) into `dst`, member by member in name order, with the optimizer's
/// datasets taken from `store`. Only numeric datasets are copied (all Keras writes): another
/// datatype may refer into the old file (variable-length data) and is refused.
fn copy_group(src: &Group, dst: &mut impl Container, path: &str, store: &KerasStore, file_len: usize) -> Result<()> {
    if path.split('/').count() > MAX_DEPTH {
        return Err(bad(format!("its groups nest deeper than {MAX_DEPTH} levels ({path})")));
    }
    for (name, value) in sorted(src.attrs().map_err(bad)?) {
        dst.attr(&name, value);
    }
    let here = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}/{name}") };
    if path == format!("{OPTIMIZER}/{VARS}") || path == format!("{OPTIMIZER}/{INNER}/{VARS}") {
        for (i, (shape, values)) in store.tensors.iter().enumerate() {
            let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            dst.dataset(&i.to_string())
                .with_raw_data(datatype_of(values.dtype())?, values.as_ref().to_le_bytes(), values.len() as u64)
                .with_shape(&dims);
        }
        return Ok(());
    }
    let mut datasets: Vec<(String, Dataset)> = src.iter_datasets().map_err(bad)?.collect();
    datasets.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, dataset) in datasets {
        let datatype = dataset.datatype().map_err(bad)?;
        if !matches!(datatype, Datatype::FixedPoint { .. } | Datatype::FloatingPoint { .. }) {
            return Err(bad(format!("{} has the datatype {datatype:?}, which libadamw does not copy", here(&name))));
        }
        let (shape, raw) = read_bounded(&dataset, &here(&name), file_len)?;
        let count = shape.iter().product::<u64>(); // within the file's length: read_bounded
        let attrs = sorted(dataset.attrs().map_err(bad)?);
        let builder = dst.dataset(&name);
        builder.with_raw_data(datatype, raw, count).with_shape(&shape);
        for (attr, value) in attrs {
            builder.set_attr(&attr, value);
        }
    }
    let mut groups: Vec<(String, Group)> = src.iter_groups().map_err(bad)?.collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, child) in groups {
        let mut builder = dst.group(&name);
        copy_group(&child, &mut builder, &here(&name), store, file_len)?;
        dst.add(builder.finish());
    }
    Ok(())
}

fn sorted(attrs: std::collections::HashMap<String, AttrValue>) -> Vec<(String, AttrValue)> {
    let mut attrs: Vec<_> = attrs.into_iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    attrs
}
