//! Element types, and tensors of any of them: the one place that lists the dtypes.
//!
//! A [`Tensor`] is one container of elements of one dtype. What the container is (a borrowed
//! slice, a mutable slice, an owned vector) is its [`Storage`], so the same enum serves caller
//! views ([`TensorRef`], [`TensorMut`]), the optimizer's own buffers ([`TensorBuf`]) and
//! checkpoints. Adding a dtype means a [`DType`] variant, a [`Tensor`] variant, an [`Element`]
//! impl, and an arm in each dispatch macro below (`each_dtype!`, `map_dtype!`, `with_element!`,
//! and `each_float!` for the dtypes variables may have, which also need a `float::Real` impl).

use std::fmt::Debug;
use std::marker::PhantomData;

use half::{bf16, f16};

use crate::error::{Error, Result};

/// The element types of variables and optimizer variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32 (`tf.float32`).
    F32,
    /// IEEE binary64 (`tf.float64`).
    F64,
    /// 64-bit signed integer: only the iteration counter has this dtype.
    I64,
    /// bfloat16 (`tf.bfloat16`): float32's exponent, 8 bits of significand.
    BF16,
    /// IEEE binary16 (`tf.float16`).
    F16,
}

impl DType {
    /// Every dtype.
    pub fn all() -> [DType; 5] {
        [DType::F32, DType::F64, DType::I64, DType::BF16, DType::F16]
    }

    /// The dtype's name as TensorFlow spells it (`"float32"`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether variables (and so gradients and slots) may have this dtype.
    pub fn is_float(self) -> bool {
        self != DType::I64
    }
}

/// A kind of container of elements: `Of<T>` is that container for elements of type `T`.
pub trait Storage {
    /// The container holding elements of type `T`.
    type Of<T: Element>: Debug;
}

/// Storage by shared borrow: `&'a [T]`.
#[derive(Debug)]
pub struct Shared<'a>(PhantomData<&'a ()>);
/// Storage by exclusive borrow: `&'a mut [T]`.
#[derive(Debug)]
pub struct Exclusive<'a>(PhantomData<&'a mut ()>);
/// Owned storage: `Vec<T>`.
#[derive(Debug)]
pub struct Owned;

impl<'a> Storage for Shared<'a> {
    type Of<T: Element> = &'a [T];
}
impl<'a> Storage for Exclusive<'a> {
    type Of<T: Element> = &'a mut [T];
}
impl Storage for Owned {
    type Of<T: Element> = Vec<T>;
}

/// Elements of one dtype in a container of kind `S`.
#[derive(Debug)]
pub enum Tensor<S: Storage> {
    /// float32 elements.
    F32(S::Of<f32>),
    /// float64 elements.
    F64(S::Of<f64>),
    /// int64 elements (the iteration counter).
    I64(S::Of<i64>),
    /// bfloat16 elements.
    BF16(S::Of<bf16>),
    /// float16 elements.
    F16(S::Of<f16>),
}

/// Read-only elements borrowed from their owner (the caller, or the optimizer).
pub type TensorRef<'a> = Tensor<Shared<'a>>;
/// Elements borrowed for writing.
pub type TensorMut<'a> = Tensor<Exclusive<'a>>;
/// Owned elements.
pub type TensorBuf = Tensor<Owned>;

/// Evaluates `$body` with `$x` bound to the container inside `$tensor`, whatever its dtype.
macro_rules! each_dtype {
    ($tensor:expr, $x:ident => $body:expr) => {
        match $tensor {
            $crate::dtype::Tensor::F32($x) => $body,
            $crate::dtype::Tensor::F64($x) => $body,
            $crate::dtype::Tensor::I64($x) => $body,
            $crate::dtype::Tensor::BF16($x) => $body,
            $crate::dtype::Tensor::F16($x) => $body,
        }
    };
}

#[cfg(any(feature = "cuda", feature = "host-kernels"))]
pub(crate) use each_dtype;

/// Builds a tensor of the same dtype as `$tensor` from `$body`, with `$x` bound to its container.
macro_rules! map_dtype {
    ($tensor:expr, $x:ident => $body:expr) => {
        match $tensor {
            $crate::dtype::Tensor::F32($x) => $crate::dtype::Tensor::F32($body),
            $crate::dtype::Tensor::F64($x) => $crate::dtype::Tensor::F64($body),
            $crate::dtype::Tensor::I64($x) => $crate::dtype::Tensor::I64($body),
            $crate::dtype::Tensor::BF16($x) => $crate::dtype::Tensor::BF16($body),
            $crate::dtype::Tensor::F16($x) => $crate::dtype::Tensor::F16($body),
        }
    };
}
pub(crate) use map_dtype;

/// Evaluates `$body` with `$x` bound to the container inside `$tensor` when its dtype is one a
/// variable may have (a float), and `$other` for the others.
macro_rules! each_float {
    ($tensor:expr, $x:ident => $body:expr, _ => $other:expr) => {
        match $tensor {
            $crate::dtype::Tensor::F32($x) => $body,
            $crate::dtype::Tensor::F64($x) => $body,
            $crate::dtype::Tensor::BF16($x) => $body,
            $crate::dtype::Tensor::F16($x) => $body,
            _ => $other,
        }
    };
}
pub(crate) use each_float;

/// Evaluates `$body` with the type `$t` standing for the element type of a float `$dtype`, or
/// `$other` for int64.
macro_rules! with_float {
    ($dtype:expr, $t:ident => $body:expr, _ => $other:expr) => {
        match $dtype {
            $crate::dtype::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::dtype::DType::F64 => {
                type $t = f64;
                $body
            }
            $crate::dtype::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            $crate::dtype::DType::F16 => {
                type $t = half::f16;
                $body
            }
            $crate::dtype::DType::I64 => $other,
        }
    };
}
pub(crate) use with_float;

/// Evaluates `$body` with the type `$t` standing for the element type of `$dtype`.
macro_rules! with_element {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::dtype::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::dtype::DType::F64 => {
                type $t = f64;
                $body
            }
            $crate::dtype::DType::I64 => {
                type $t = i64;
                $body
            }
            $crate::dtype::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            $crate::dtype::DType::F16 => {
                type $t = half::f16;
                $body
            }
        }
    };
}
pub(crate) use with_element;

/// An element type of a [`Tensor`].
pub trait Element: Copy + Default + PartialEq + Debug + Send + Sync + 'static {
    /// This type's dtype.
    const DTYPE: DType;
    /// Puts a container of this type into a tensor.
    fn wrap<S: Storage>(values: S::Of<Self>) -> Tensor<S>;
    /// The container, when the tensor has this dtype.
    fn unwrap<S: Storage>(tensor: Tensor<S>) -> Option<S::Of<Self>>;
    /// Appends the little-endian bytes of `self`.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads one element from `DTYPE.size()` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $variant:ident, $dtype:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn wrap<S: Storage>(values: S::Of<Self>) -> Tensor<S> {
                Tensor::$variant(values)
            }
            fn unwrap<S: Storage>(tensor: Tensor<S>) -> Option<S::Of<Self>> {
                match tensor {
                    Tensor::$variant(x) => Some(x),
                    _ => None,
                }
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut le = [0u8; std::mem::size_of::<$t>()];
                le.copy_from_slice(&bytes[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(le)
            }
        }
    };
}
element!(f32, F32, F32);
element!(f64, F64, F64);
element!(i64, I64, I64);
element!(bf16, BF16, BF16);
element!(f16, F16, F16);

impl<S: Storage> Tensor<S> {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F64(_) => DType::F64,
            Tensor::I64(_) => DType::I64,
            Tensor::BF16(_) => DType::BF16,
            Tensor::F16(_) => DType::F16,
        }
    }
}

impl Clone for TensorRef<'_> {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for TensorRef<'_> {}

impl<'a> TensorRef<'a> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        each_dtype!(self, x => x.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same elements, borrowed for less long (a tensor's lifetime sits inside its storage's
    /// container type, so it does not shorten by itself).
    pub fn shorten<'b>(self) -> TensorRef<'b>
    where
        'a: 'b,
    {
        map_dtype!(self, x => x)
    }

    /// The elements as `T`, when they have `T`'s dtype.
    pub fn typed<T: Element>(self) -> Option<&'a [T]> {
        T::unwrap(self)
    }

    /// The elements' little-endian bytes, in order.
    pub fn to_le_bytes(self) -> Vec<u8> {
        fn bytes<T: Element>(x: &[T]) -> Vec<u8> {
            let mut out = Vec::with_capacity(std::mem::size_of_val(x));
            x.iter().for_each(|v| v.write_le(&mut out));
            out
        }
        each_dtype!(self, x => bytes(x))
    }
}

impl TensorMut<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        each_dtype!(self, x => x.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A shorter-lived view of the same elements.
    pub fn reborrow(&mut self) -> TensorMut<'_> {
        map_dtype!(self, x => &mut **x)
    }

    /// The same elements, read-only.
    pub fn as_ref(&self) -> TensorRef<'_> {
        map_dtype!(self, x => &**x)
    }

    /// Copies `src` into these elements. Both must have the same dtype and length; the callers
    /// check that first, and a mismatch is reported as an internal error, copying nothing.
    pub(crate) fn copy_from(&mut self, src: TensorRef<'_>) -> Result<()> {
        fn copy<T: Element>(dst: &mut [T], src: TensorRef<'_>) -> Result<()> {
            match src.typed::<T>() {
                Some(s) if s.len() == dst.len() => {
                    dst.copy_from_slice(s);
                    Ok(())
                }
                _ => Err(Error::Internal(format!(
                    "copy of {} {} elements into {} {} elements",
                    src.len(),
                    src.dtype().name(),
                    dst.len(),
                    T::DTYPE.name()
                ))),
            }
        }
        each_dtype!(self, x => copy(x, src))
    }
}

impl TensorBuf {
    /// `len` zeros of `dtype`, or `OutOfMemory` when they cannot be allocated.
    pub fn zeros(dtype: DType, len: usize) -> Result<Self> {
        fn alloc<T: Element>(len: usize) -> Result<Tensor<Owned>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len)
                .map_err(|_| Error::OutOfMemory(format!("cannot allocate {len} {} elements", T::DTYPE.name())))?;
            v.resize(len, T::default());
            Ok(T::wrap(v))
        }
        with_element!(dtype, T => alloc::<T>(len))
    }

    /// A copy of `src`.
    pub(crate) fn copy_of(src: TensorRef<'_>) -> Result<Self> {
        let mut buf = TensorBuf::zeros(src.dtype(), src.len())?;
        buf.as_mut().copy_from(src)?;
        Ok(buf)
    }

    /// Elements of `dtype` read from little-endian bytes (a multiple of the element size).
    pub(crate) fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Self {
        fn read<T: Element>(bytes: &[u8]) -> Tensor<Owned> {
            T::wrap(bytes.chunks_exact(T::DTYPE.size()).map(T::read_le).collect())
        }
        with_element!(dtype, T => read::<T>(bytes))
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.as_ref().len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements, read-only.
    pub fn as_ref(&self) -> TensorRef<'_> {
        map_dtype!(self, x => x.as_slice())
    }

    /// The elements, for writing.
    pub fn as_mut(&mut self) -> TensorMut<'_> {
        map_dtype!(self, x => x.as_mut_slice())
    }

    /// Sets every element to +0.
    pub(crate) fn fill_zero(&mut self) {
        match self.as_mut() {
            TensorMut::F32(x) => x.fill(0.0),
            TensorMut::F64(x) => x.fill(0.0),
            TensorMut::I64(x) => x.fill(0),
            TensorMut::BF16(x) => x.fill(half::bf16::ZERO),
            TensorMut::F16(x) => x.fill(half::f16::ZERO),
        }
    }
}
