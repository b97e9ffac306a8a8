//! Converts an optimizer's state between Keras' own files and libadamw checkpoints
//! (docs/numerics.md §21).
//!
//! - `adamw-keras import KERAS_FILE CHECKPOINT [--config CONFIG_JSON]` reads the optimizer state
//!   of a `.keras` archive or a `.weights.h5` file written by tf-keras 2.15 and writes it as a
//!   libadamw checkpoint (`adamw_optimizer_load_file` reads it into an optimizer built over the
//!   same variables). The optimizer's config comes from the archive, or from `--config` (Keras'
//!   `get_config()` as JSON) for a weights file, which holds none; it is printed on stdout, for
//!   `adamw_optimizer_from_config_json` (for a model compiled under Keras' `mixed_float16`
//!   policy, the LossScaleOptimizer Keras put around its AdamW; see `KerasFile::optimizer_config`).
//! - `adamw-keras export CHECKPOINT TEMPLATE OUT` writes OUT: the Keras file TEMPLATE (of the same
//!   model and optimizer) with its optimizer state replaced by the checkpoint's, for tf-keras to
//!   load and continue from.
//! - `adamw-keras config KERAS_FILE` prints an archive's optimizer config.
//!
//! Exit status: 0 on success, 1 when a file is refused, 2 on a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use adamw::keras_files::{self, KerasStore};
use adamw::{Optimizer, Result, TensorBuf};

const USAGE: &str = "usage: adamw-keras import KERAS_FILE CHECKPOINT [--config CONFIG_JSON]
       adamw-keras export CHECKPOINT TEMPLATE_KERAS_FILE OUT
       adamw-keras config KERAS_FILE";

fn usage(message: &str) -> ExitCode {
    eprintln!("adamw-keras: {message}\n{USAGE}");
    ExitCode::from(2)
}

/// The Keras file's state as a libadamw checkpoint; returns the optimizer's config JSON.
fn import(keras_file: &Path, checkpoint: &Path, config: Option<&Path>) -> Result<String> {
    let file = keras_files::read(keras_file)?;
    let config = match (config, file.optimizer_config) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| adamw::Error::Io(format!("cannot read the config {}: {e}", path.display())))?,
        (None, Some(config)) => config,
        (None, None) => {
            return Err(adamw::Error::InvalidConfig(
                "a .weights.h5 file holds no optimizer config: pass --config with the optimizer's get_config() JSON"
                    .into(),
            ));
        }
    };
    let mut optimizer = Optimizer::from_config_json(&config)?;
    let variables = keras_files::variables_of(&file.store, optimizer.config())?;
    // With EMA, build needs the variables' values; the store's averages replace them at once.
    let zeros = if optimizer.config().use_ema {
        variables.iter().map(|v| TensorBuf::zeros(v.dtype, v.element_count()?)).collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let initial: Vec<_> = zeros.iter().map(TensorBuf::as_ref).collect();
    optimizer.build(&variables, &initial)?;
    file.store.load_into(&mut optimizer)?;
    optimizer.save_own_variables_to_file(checkpoint)?;
    Ok(optimizer.get_config().to_string())
}

fn export(checkpoint: &Path, template: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(checkpoint)
        .map_err(|e| adamw::Error::Io(format!("cannot read {}: {e}", checkpoint.display())))?;
    let store: KerasStore = keras_files::store_of_checkpoint(&bytes)?;
    keras_files::write(template, &store, out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut config = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--config" => match rest.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return usage("--config needs a file"),
            },
            "-h" | "--help" => return usage("converts optimizer state between Keras files and libadamw checkpoints"),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let result = match (args.first().map(String::as_str), positional.as_slice()) {
        (Some("import"), [keras_file, checkpoint]) => import(keras_file, checkpoint, config.as_deref()),
        (Some("export"), [checkpoint, template, out]) if config.is_none() => {
            export(checkpoint, template, out).map(|()| String::new())
        }
        (Some("config"), [keras_file]) if config.is_none() => keras_files::read_optimizer_config(keras_file),
        (Some("-h" | "--help"), _) | (None, _) => {
            return usage("converts optimizer state between Keras files and libadamw checkpoints");
        }
        _ => return usage("wrong arguments"),
    };
    match result {
        Ok(config) => {
            if !config.is_empty() {
                println!("{config}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("adamw-keras: {e}");
            ExitCode::from(1)
        }
    }
}
