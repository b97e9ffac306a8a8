//! libadamw: the AdamW optimizer of `tf.keras` (the Keras 2 optimizer, `tf-keras` 2.15),
//! reproduced bit for bit, with a stable C ABI.
//!
//! The safe Rust API is [`Optimizer`] with [`Config`]; the C ABI lives in [`ffi`] and is declared
//! in `include/adamw.h`. `../shared/spec/keras_adamw.md` (the project's spec) is the contract
//! for every number.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod ffi;
pub mod float;
pub mod kernels;
pub mod kwargs;
pub mod optimizer;
pub mod schedule;
pub mod tensor;

pub use config::{Beta, Callback, Clipping, Config, LearningRate};
pub use error::{Error, Result};
pub use float::DType;
pub use kwargs::Num;
pub use optimizer::{Optimizer, OptimizerVariable, VariableSpec, Weight, WeightData};
pub use schedule::Schedule;
pub use tensor::{Element, Gradient, TensorMut, TensorRef, Update, UpdateSource};
