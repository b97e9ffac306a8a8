//! The entries of one `apply_gradients` call: which variable, its values (updated in place) and
//! its gradient, borrowed from the caller for the call. The caller owns every byte here.

use ndarray::{ArrayView, ArrayViewMut, Dimension};

use crate::dtype::{DType, Element, TensorMut, TensorRef};
use crate::error::{Error, Result};

/// One variable's gradient for one step.
#[derive(Debug, Clone, Copy)]
pub enum Gradient<'a> {
    /// A gradient of the variable's shape.
    Dense(TensorRef<'a>),
    /// Rows of the variable (`tf.IndexedSlices`): `values` holds one row of the variable's
    /// trailing shape per index; an index may repeat (its rows are summed).
    Sparse {
        /// Row indices into the variable's first dimension.
        indices: &'a [i64],
        /// `indices.len()` rows, row-major.
        values: TensorRef<'a>,
    },
}

impl<'a> Gradient<'a> {
    /// The same gradient, borrowed for less long. (A tensor's lifetime does not shorten by
    /// itself: it sits inside its storage's container type.)
    pub fn shorten<'b>(self) -> Gradient<'b>
    where
        'a: 'b,
    {
        match self {
            Gradient::Dense(g) => Gradient::Dense(g.shorten()),
            Gradient::Sparse { indices, values } => Gradient::Sparse { indices, values: values.shorten() },
        }
    }

    /// The gradient's numbers: the dense tensor, or the sparse rows.
    pub fn values(&self) -> TensorRef<'a> {
        match *self {
            Gradient::Dense(g) => g,
            Gradient::Sparse { values, .. } => values,
        }
    }
}

/// One entry of an `apply_gradients` call, the C `adamw_gradient`: which built variable, its
/// current values (updated in place), and its gradient (`None`: no gradient this step, and the
/// variable is left alone, as Keras does for a `None` gradient).
#[derive(Debug)]
pub struct GradientEntry<'a> {
    /// The variable's index in the list given to `build`.
    pub variable: usize,
    /// The variable's values (a shard's part, for a sharded variable).
    pub values: TensorMut<'a>,
    /// The gradient, if any.
    pub gradient: Option<Gradient<'a>>,
}

impl<'a> GradientEntry<'a> {
    /// A shorter-lived view of the same entry.
    pub fn reborrow(&mut self) -> GradientEntry<'_> {
        GradientEntry {
            variable: self.variable,
            values: self.values.reborrow(),
            gradient: self.gradient.map(Gradient::shorten),
        }
    }

    /// A dense entry from ndarray views (both must be in standard, contiguous layout).
    pub fn dense<F: Element, D: Dimension>(
        variable: usize,
        values: ArrayViewMut<'a, F, D>,
        gradient: ArrayView<'a, F, D>,
    ) -> Result<Self> {
        if values.shape() != gradient.shape() {
            return Err(Error::ShapeMismatch(format!(
                "gradient shape {:?} does not match variable shape {:?}",
                gradient.shape(),
                values.shape()
            )));
        }
        Ok(GradientEntry {
            variable,
            values: F::wrap(contiguous_mut(values)?),
            gradient: Some(Gradient::Dense(F::wrap(contiguous(gradient)?))),
        })
    }

    /// A sparse entry: `values` has one row per index (shape `[indices.len(), ...row shape]`).
    pub fn sparse<F: Element, D: Dimension, E: Dimension>(
        variable: usize,
        values: ArrayViewMut<'a, F, D>,
        indices: &'a [i64],
        rows: ArrayView<'a, F, E>,
    ) -> Result<Self> {
        Ok(GradientEntry {
            variable,
            values: F::wrap(contiguous_mut(values)?),
            gradient: Some(Gradient::Sparse { indices, values: F::wrap(contiguous(rows)?) }),
        })
    }

    /// A variable listed without a gradient (Keras' `(None, variable)`).
    pub fn no_gradient<F: Element, D: Dimension>(variable: usize, values: ArrayViewMut<'a, F, D>) -> Result<Self> {
        Ok(GradientEntry { variable, values: F::wrap(contiguous_mut(values)?), gradient: None })
    }
}

fn contiguous_mut<F, D: Dimension>(view: ArrayViewMut<'_, F, D>) -> Result<&mut [F]> {
    view.into_slice()
        .ok_or_else(|| Error::InvalidArgument("arrays must be contiguous in standard (row-major) layout".into()))
}

fn contiguous<F, D: Dimension>(view: ArrayView<'_, F, D>) -> Result<&[F]> {
    view.to_slice()
        .ok_or_else(|| Error::InvalidArgument("arrays must be contiguous in standard (row-major) layout".into()))
}

/// The entries of one `apply_gradients` call, read one at a time. The optimizer reads each
/// entry more than once (to validate, to measure norms, to update), and an implementation must
/// return the same entry each time. A plain `[GradientEntry]` is one; the C ABI has its own,
/// which makes slices from the caller's pointers on demand so that a step allocates nothing.
pub trait GradientEntries {
    /// The number of entries.
    fn len(&self) -> usize;
    /// Whether there are no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Entry `i` (< `len()`).
    fn get(&mut self, i: usize) -> GradientEntry<'_>;
    /// Gives `visit` every entry in list order, all borrowed at once for as long as `self` is
    /// (entries never share memory), and returns true; or returns false without calling it,
    /// as the default does. A step whose entries are all borrowed at once runs the dense
    /// updates of every variable as one list of tasks (multi-tensor); otherwise it runs them
    /// one variable at a time, with the same bits.
    fn visit_all<'s>(&'s mut self, visit: &mut dyn FnMut(GradientEntry<'s>)) -> bool {
        let _ = visit;
        false
    }
}

impl GradientEntries for [GradientEntry<'_>] {
    fn len(&self) -> usize {
        <[GradientEntry<'_>]>::len(self)
    }
    fn get(&mut self, i: usize) -> GradientEntry<'_> {
        self[i].reborrow()
    }
    fn visit_all<'s>(&'s mut self, visit: &mut dyn FnMut(GradientEntry<'s>)) -> bool {
        self.iter_mut().for_each(|entry| visit(entry.reborrow()));
        true
    }
}

/// Elements in a device's memory (the optimizer's device, `Config::device`): an address and a
/// count, never read on the host by the optimizer itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTensor {
    /// The elements' dtype.
    pub dtype: DType,
    /// The device address of the first element (for the host-kernels device, a host address).
    pub address: u64,
    /// The number of elements.
    pub len: usize,
}

/// One variable's gradient in device memory.
#[derive(Debug, Clone, Copy)]
pub enum DeviceGradient<'a> {
    /// A gradient of the variable's shape.
    Dense(DeviceTensor),
    /// Rows of the variable (`tf.IndexedSlices`).
    Sparse {
        /// Row indices into the variable's first dimension.
        indices: DeviceIndices<'a>,
        /// `indices.len()` rows, row-major (device memory).
        values: DeviceTensor,
    },
}

/// A sparse gradient's row indices (int64): in host memory, or in the device's (then copied to
/// the host to be checked before anything is enqueued).
#[derive(Debug, Clone, Copy)]
pub enum DeviceIndices<'a> {
    /// Indices in host memory.
    Host(&'a [i64]),
    /// Indices in the device's memory.
    Device {
        /// The device address of the first index.
        address: u64,
        /// The number of indices.
        len: usize,
    },
}

/// The host copies of a call's sparse indices that were given in device memory, one run per
/// such entry, so that validation and staging read them as host indices. The optimizer keeps one
/// and reuses it, so that a step with device indices allocates nothing once it has grown.
#[derive(Debug, Default)]
pub(crate) struct IndexCopies {
    indices: Vec<i64>,
    /// Per entry of the call: where its run starts in `indices` (unused for host indices).
    starts: Vec<usize>,
}

impl IndexCopies {
    /// Room for calls of up to `entries` entries and `indices` device indices in all, so that
    /// no later call allocates (`Optimizer::build`, `Optimizer::reserve_sparse`).
    pub fn reserve(&mut self, entries: usize, indices: usize) -> Result<()> {
        let oom = |_| Error::OutOfMemory(format!("cannot reserve room for {indices} sparse indices"));
        self.starts.try_reserve(entries.saturating_sub(self.starts.len())).map_err(oom)?;
        self.indices.try_reserve(indices.saturating_sub(self.indices.len())).map_err(oom)
    }

    /// Empties the copies for a call of `entries` entries.
    pub fn clear(&mut self, entries: usize) {
        self.indices.clear();
        self.starts.clear();
        self.starts.resize(entries, 0);
    }

    /// Room for entry `entry`'s `len` indices, to be filled from the device.
    pub fn add(&mut self, entry: usize, len: usize) -> Result<&mut [i64]> {
        let start = self.indices.len();
        self.indices.try_reserve(len).map_err(|_| Error::OutOfMemory(format!("{len} sparse indices")))?;
        self.indices.resize(start + len, 0);
        self.starts[entry] = start;
        Ok(&mut self.indices[start..])
    }

    /// Entry `entry`'s indices in host memory: the caller's, or the copy of the device's.
    pub fn host<'s>(&'s self, entry: usize, indices: &DeviceIndices<'s>) -> &'s [i64] {
        match *indices {
            DeviceIndices::Host(indices) => indices,
            DeviceIndices::Device { len, .. } => {
                let start = self.starts.get(entry).copied().unwrap_or(0);
                self.indices.get(start..start + len).unwrap_or(&[])
            }
        }
    }
}

impl DeviceGradient<'_> {
    /// The gradient's numbers: the dense tensor, or the sparse rows.
    pub fn values(&self) -> DeviceTensor {
        match *self {
            DeviceGradient::Dense(g) => g,
            DeviceGradient::Sparse { values, .. } => values,
        }
    }
}

/// One entry of an `apply_gradients` call whose values and gradient are device memory.
#[derive(Debug, Clone, Copy)]
pub struct DeviceEntry<'a> {
    /// The variable's index in the list given to `build`.
    pub variable: usize,
    /// The variable's values, updated in place by the step.
    pub values: DeviceTensor,
    /// The gradient, if any.
    pub gradient: Option<DeviceGradient<'a>>,
}

/// The entries of one call over device memory, read one at a time, as [`GradientEntries`] are
/// for host slices: a plain slice, array or `Vec` of [`DeviceEntry`] is one; the C ABI has its
/// own, which makes each entry from the caller's table on demand so that a step allocates nothing.
/// The optimizer reads the length and each entry more than once (to check, to place, to step): an
/// implementation must give the same length and the same entries each time.
pub trait DeviceEntries {
    /// The number of entries.
    fn len(&self) -> usize;
    /// Whether there are no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Entry `i` (< `len()`); the same entry each time.
    fn get(&self, i: usize) -> DeviceEntry<'_>;
}

impl<T: DeviceEntries + ?Sized> DeviceEntries for &T {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, i: usize) -> DeviceEntry<'_> {
        (**self).get(i)
    }
}

impl DeviceEntries for [DeviceEntry<'_>] {
    fn len(&self) -> usize {
        <[DeviceEntry<'_>]>::len(self)
    }
    fn get(&self, i: usize) -> DeviceEntry<'_> {
        self[i]
    }
}

impl<const N: usize> DeviceEntries for [DeviceEntry<'_>; N] {
    fn len(&self) -> usize {
        N
    }
    fn get(&self, i: usize) -> DeviceEntry<'_> {
        self[i]
    }
}

impl DeviceEntries for Vec<DeviceEntry<'_>> {
    fn len(&self) -> usize {
        <[DeviceEntry<'_>]>::len(self)
    }
    fn get(&self, i: usize) -> DeviceEntry<'_> {
        self[i]
    }
}

/// What validation reads of an entry: its variable, dtypes and sizes, and sparse indices (host
/// memory for both kinds of entries).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryShape<'a> {
    pub variable: usize,
    pub values_dtype: DType,
    pub values_len: usize,
    pub gradient: Option<GradientShape<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct GradientShape<'a> {
    pub dtype: DType,
    pub len: usize,
    /// `None` for a dense gradient.
    pub indices: Option<&'a [i64]>,
}

impl<'a> EntryShape<'a> {
    pub fn of(e: &'a GradientEntry<'_>) -> Self {
        EntryShape {
            variable: e.variable,
            values_dtype: e.values.dtype(),
            values_len: e.values.len(),
            gradient: e.gradient.map(|g| GradientShape {
                dtype: g.values().dtype(),
                len: g.values().len(),
                indices: match g {
                    Gradient::Dense(_) => None,
                    Gradient::Sparse { indices, .. } => Some(indices),
                },
            }),
        }
    }

    /// `indices`: the host copy of a sparse gradient's indices ([`IndexCopies::host`]).
    pub fn of_device(e: &DeviceEntry<'_>, indices: &'a [i64]) -> Self {
        EntryShape {
            variable: e.variable,
            values_dtype: e.values.dtype,
            values_len: e.values.len,
            gradient: e.gradient.map(|g| GradientShape {
                dtype: g.values().dtype,
                len: g.values().len,
                indices: match g {
                    DeviceGradient::Dense(_) => None,
                    DeviceGradient::Sparse { .. } => Some(indices),
                },
            }),
        }
    }
}

/// The entries of one call: host slices, or device memory (with the host copies of any indices
/// given in device memory).
pub(crate) enum CallEntries<'s> {
    Host(&'s mut dyn GradientEntries),
    Device(&'s dyn DeviceEntries, &'s IndexCopies),
}

impl CallEntries<'_> {
    pub fn len(&self) -> usize {
        match self {
            CallEntries::Host(e) => e.len(),
            CallEntries::Device(e, _) => e.len(),
        }
    }

    /// `f` of entry `i`'s shape.
    pub fn with_shape<R>(&mut self, i: usize, f: impl FnOnce(EntryShape<'_>) -> R) -> R {
        match self {
            CallEntries::Host(e) => f(EntryShape::of(&e.get(i))),
            CallEntries::Device(e, copies) => {
                let e = e.get(i);
                f(EntryShape::of_device(&e, device_indices(copies, i, &e)))
            }
        }
    }
}

/// Entry `i`'s sparse indices in host memory (empty for a dense gradient or none).
pub(crate) fn device_indices<'s>(copies: &'s IndexCopies, i: usize, e: &DeviceEntry<'s>) -> &'s [i64] {
    match &e.gradient {
        Some(DeviceGradient::Sparse { indices, .. }) => copies.host(i, indices),
        _ => &[],
    }
}
