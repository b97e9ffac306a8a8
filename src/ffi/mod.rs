// C names (`adamw_status`), and C contracts: each entry point documents for C callers the
// ownership, NULL and thread rules that a `# Safety` section would repeat.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]
//! The C ABI, a thin layer over the safe core, declared in `include/adamw.h` (generated from
//! these files by cbindgen). Every `extern "C"` body runs inside `guard`: no panic crosses the
//! boundary, and every failure becomes a status plus a message for `adamw_last_error`. Pointer
//! checks live only in `slice` and `handle`. One file per C object or concept: `config`
//! (`adamw_config`, schedules), `optimizer` (the handle's life and settings), `step`
//! (`apply_gradients`, `minimize`, `finalize_variable_values`), `variables` (Keras'
//! `optimizer.variables`, `set_weights`), `checkpoint` (save and load), `keras` (Keras' own files), `multipliers` (per-variable
//! controls beyond Keras), `accumulation` (Keras 3's gradient accumulation), `report` (what the last step saw), `version`, `status`;
//! `types` holds the C structs. `#[unsafe(no_mangle)]` appears only under this module.
//!
//! Rust programs can call these functions too (the conformance tool does); they are re-exported
//! here as one flat list, as the header declares them.

// The order of the modules is the order of the declarations in the header.
mod accumulation;
mod checkpoint;
mod config;
mod guard;
mod handle;
mod keras;
mod multipliers;
mod optimizer;
mod parallel;
mod report;
mod slice;
mod status;
mod step;
mod types;
mod variables;
mod version;

pub use accumulation::*;
pub use checkpoint::*;
pub use config::*;
pub use handle::adamw_optimizer;
pub use keras::*;
pub use multipliers::*;
pub use optimizer::*;
pub use parallel::*;
pub use report::*;
pub use status::{adamw_last_error, adamw_status, adamw_status_name};
pub use step::*;
pub use types::*;
pub use variables::*;
pub use version::*;
