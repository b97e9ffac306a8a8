//! libadamw: the AdamW optimizer of `tf.keras` (the Keras 2 optimizer, `tf-keras` 2.15),
//! reproduced bit for bit, with a stable C ABI.
//!
//! The safe Rust API is [`Optimizer`] with [`Config`]: build it over [`VariableSpec`]s, then
//! step it with [`GradientEntry`]s that borrow the caller's values and gradients as
//! [`TensorMut`] / [`TensorRef`]. The C ABI lives in [`ffi`] and is declared in
//! `include/adamw.h`. `docs/numerics.md` is the contract for every number.
//!
//! ```
//! use adamw::{Config, DType, GradientEntry, LearningRate, Optimizer, VariableSpec};
//! use ndarray::Array1;
//!
//! let mut opt = Optimizer::new(Config { learning_rate: LearningRate::Constant(0.01), ..Config::default() })?;
//! opt.build(&[VariableSpec::new("w", DType::F32, &[3])], &[])?;
//! let mut w = Array1::from(vec![0.5f32, -1.5, 2.0]);
//! let g = Array1::from(vec![0.1f32, -0.2, 0.3]);
//! let iterations = opt.apply_gradients(&mut [GradientEntry::dense(0, w.view_mut(), g.view())?][..])?;
//! assert_eq!(iterations, 1);
//! // tf.keras.optimizers.AdamW(learning_rate=0.01) gives exactly these bits after one step.
//! let keras = [0x3efadeb6u32, 0xbfbeb65d, 0x3ffeb5b4];
//! assert!(w.iter().zip(keras).all(|(x, k)| x.to_bits() == k));
//! // State is read through copies: Keras' optimizer.variables[1] is m of `w`.
//! let m = opt.variable(1).unwrap();
//! assert_eq!(m.info.name, "AdamW/m/w");
//! let bytes = opt.save_own_variables()?;
//! opt.load_own_variables(&bytes)?;
//! # Ok::<(), adamw::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod aligned;
mod checkpoint;
mod config;
mod dtype;
mod engine;
mod error;
pub mod ffi;
mod float;
mod json_number;
#[cfg(feature = "keras-files")]
pub mod keras_files;
mod kernels;
mod kwargs;
mod optimizer;
mod parallel;
mod reduction;
mod schedule;
mod simd;
mod squares;
mod tensor;

pub use checkpoint::reshard_checkpoints;
pub use config::{AllReduce, Beta, Callback, Clipping, Config, Device, LearningRate, LossScale, Mesh};
pub use dtype::{DType, Element, Exclusive, Owned, Shared, Storage, Tensor, TensorBuf, TensorMut, TensorRef};
pub use engine::cpu::loops::set_simd_enabled;
pub use error::{Error, Result};
pub use kwargs::Num;
pub use optimizer::{
    Multipliers, NormSource, Optimizer, Shard, StateInfo, StateTensor, StepReport, VariableProperties, VariableSpec,
    Weight,
};
pub use parallel::ParallelFor;
pub use schedule::Schedule;
pub use simd::{SimdLevel, set_simd_level, simd_level};
/// The README's Rust code blocks, compiled and run as doctests (the C, C++ and Go ones are
/// compiled by `tools/check_snippets.py`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use tensor::{
    DeviceEntries, DeviceEntry, DeviceGradient, DeviceIndices, DeviceTensor, Gradient, GradientEntries, GradientEntry,
};
