//! Borrowed views of caller memory, and the updates one `apply_gradients` call receives.
//! The caller owns every byte here; the optimizer only borrows it for the call.

use ndarray::{ArrayView, ArrayViewMut, Dimension};

use crate::error::{Error, Result};
use crate::float::{DType, Real};

/// A variable's values, updated in place.
#[derive(Debug)]
pub enum TensorMut<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
}

/// Read-only values: a dense gradient or the rows of a sparse one.
#[derive(Debug, Clone, Copy)]
pub enum TensorRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl TensorMut<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            TensorMut::F32(_) => DType::F32,
            TensorMut::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorMut::F32(x) => x.len(),
            TensorMut::F64(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reborrow(&mut self) -> TensorMut<'_> {
        match self {
            TensorMut::F32(x) => TensorMut::F32(x),
            TensorMut::F64(x) => TensorMut::F64(x),
        }
    }
}

impl TensorRef<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            TensorRef::F32(_) => DType::F32,
            TensorRef::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorRef::F32(x) => x.len(),
            TensorRef::F64(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One variable's gradient for one step.
#[derive(Debug, Clone, Copy)]
pub enum Gradient<'a> {
    /// A gradient of the variable's shape.
    Dense(TensorRef<'a>),
    /// Rows of the variable (`tf.IndexedSlices`): `values` holds one row of the variable's
    /// trailing shape per index; an index may repeat (its rows are summed).
    Sparse { indices: &'a [i64], values: TensorRef<'a> },
}

/// One entry of an `apply_gradients` call: which built variable, its current values (updated in
/// place), and its gradient (`None`: no gradient this step, the variable is left alone).
#[derive(Debug)]
pub struct Update<'a> {
    pub variable: usize,
    pub value: TensorMut<'a>,
    pub gradient: Option<Gradient<'a>>,
}

impl<'a> Update<'a> {
    pub fn reborrow(&mut self) -> Update<'_> {
        Update { variable: self.variable, value: self.value.reborrow(), gradient: self.gradient }
    }

    /// A dense update from ndarray views (both must be in standard, contiguous layout).
    pub fn dense<F: Element, D: Dimension>(
        variable: usize,
        value: ArrayViewMut<'a, F, D>,
        gradient: ArrayView<'a, F, D>,
    ) -> Result<Self> {
        if value.shape() != gradient.shape() {
            return Err(Error::ShapeMismatch(format!(
                "gradient shape {:?} does not match variable shape {:?}",
                gradient.shape(),
                value.shape()
            )));
        }
        Ok(Update {
            variable,
            value: F::tensor_mut(contiguous_mut(value)?),
            gradient: Some(Gradient::Dense(F::tensor_ref(contiguous(gradient)?))),
        })
    }

    /// A sparse update: `values` has one row per index (shape `[indices.len(), ...row shape]`).
    pub fn sparse<F: Element, D: Dimension, E: Dimension>(
        variable: usize,
        value: ArrayViewMut<'a, F, D>,
        indices: &'a [i64],
        values: ArrayView<'a, F, E>,
    ) -> Result<Self> {
        Ok(Update {
            variable,
            value: F::tensor_mut(contiguous_mut(value)?),
            gradient: Some(Gradient::Sparse { indices, values: F::tensor_ref(contiguous(values)?) }),
        })
    }

    /// A variable listed without a gradient (Keras' `(None, variable)`).
    pub fn no_gradient<F: Element, D: Dimension>(variable: usize, value: ArrayViewMut<'a, F, D>) -> Result<Self> {
        Ok(Update { variable, value: F::tensor_mut(contiguous_mut(value)?), gradient: None })
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

/// The element types of variables: `f32` and `f64`.
pub trait Element: Real {
    fn tensor_mut(x: &mut [Self]) -> TensorMut<'_>;
    fn tensor_ref(x: &[Self]) -> TensorRef<'_>;
}

impl Element for f32 {
    fn tensor_mut(x: &mut [Self]) -> TensorMut<'_> {
        TensorMut::F32(x)
    }
    fn tensor_ref(x: &[Self]) -> TensorRef<'_> {
        TensorRef::F32(x)
    }
}

impl Element for f64 {
    fn tensor_mut(x: &mut [Self]) -> TensorMut<'_> {
        TensorMut::F64(x)
    }
    fn tensor_ref(x: &[Self]) -> TensorRef<'_> {
        TensorRef::F64(x)
    }
}

/// The updates of one `apply_gradients` call, read one at a time. The optimizer reads each
/// entry more than once (to validate, to measure norms, to update), and an implementation must
/// return the same entry each time. A plain `[Update]` is one; the C ABI has its own, which
/// makes slices from the caller's pointers on demand so that a step allocates nothing.
pub trait UpdateSource {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get(&mut self, i: usize) -> Update<'_>;
}

impl UpdateSource for [Update<'_>] {
    fn len(&self) -> usize {
        <[Update<'_>]>::len(self)
    }
    fn get(&mut self, i: usize) -> Update<'_> {
        self[i].reborrow()
    }
}
