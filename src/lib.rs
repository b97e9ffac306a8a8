//! libadamw: the AdamW optimizer of `tf.keras` (the Keras 2 optimizer, `tf-keras` 2.15),
//! reproduced bit for bit, with a stable C ABI.
//!
//! The safe Rust API is [`Optimizer`] with [`Config`]; the C ABI lives in [`ffi`] and is declared
//! in `include/adamw.h`. `docs/numerics.md` is the contract for every number.
//!
//! ```
//! use adamw::{Config, DType, LearningRate, Optimizer, Update, VariableSpec};
//! use ndarray::Array1;
//!
//! let mut opt = Optimizer::new(Config { learning_rate: LearningRate::Constant(0.01), ..Config::default() })?;
//! opt.build(&[VariableSpec::new("w", DType::F32, &[3])], &[])?;
//! let mut w = Array1::from(vec![0.5f32, -1.5, 2.0]);
//! let g = Array1::from(vec![0.1f32, -0.2, 0.3]);
//! let iterations = opt.apply_gradients(&mut [Update::dense(0, w.view_mut(), g.view())?][..])?;
//! assert_eq!(iterations, 1);
//! // tf.keras.optimizers.AdamW(learning_rate=0.01) gives exactly these bits after one step.
//! let keras = [0x3efadeb6u32, 0xbfbeb65d, 0x3ffeb5b4];
//! assert!(w.iter().zip(keras).all(|(x, k)| x.to_bits() == k));
//! # Ok::<(), adamw::Error>(())
//! ```

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
