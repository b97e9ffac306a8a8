//! Reshards libadamw checkpoints: the checkpoints of every rank of one sharding (or one
//! unsharded checkpoint) become those of M ranks that split each sharded variable evenly, or with
//! `--ranks 1` one unsharded checkpoint (docs/numerics.md §13).
//!
//! `adamw-reshard --ranks M --out PREFIX IN...` writes `PREFIX.safetensors` (M = 1) or
//! `PREFIX.R-of-M.safetensors` for R = 0..M-1. Nothing is written unless every input checks out:
//! the same optimizer at the same step, every element of each variable held exactly once.
//! Exit status: 0 on success, 1 when the inputs are refused, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

fn usage(message: &str) -> ExitCode {
    eprintln!("adamw-reshard: {message}\nusage: adamw-reshard --ranks M --out PREFIX CHECKPOINT...");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut ranks, mut out, mut inputs) = (None, None, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ranks" => ranks = args.next().and_then(|r| r.parse::<usize>().ok()),
            "--out" => out = args.next().map(PathBuf::from),
            "-h" | "--help" => return usage("reshards the checkpoints of N ranks into M"),
            _ => inputs.push(PathBuf::from(arg)),
        }
    }
    let (Some(ranks), Some(out)) = (ranks.filter(|&r| r > 0), out) else {
        return usage("--ranks (a positive number) and --out are required");
    };
    if inputs.is_empty() {
        return usage("no checkpoints given");
    }
    let mut bytes = Vec::new();
    for path in &inputs {
        match std::fs::read(path) {
            Ok(b) => bytes.push(b),
            Err(e) => {
                eprintln!("adamw-reshard: cannot read {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    let views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let outputs = match adamw::reshard_checkpoints(&views, ranks) {
        Ok(outputs) => outputs,
        Err(e) => {
            eprintln!("adamw-reshard: {e}");
            return ExitCode::from(1);
        }
    };
    for (r, data) in outputs.iter().enumerate() {
        let mut name = out.clone().into_os_string();
        name.push(if ranks == 1 { ".safetensors".to_string() } else { format!(".{r}-of-{ranks}.safetensors") });
        let path = PathBuf::from(name);
        if let Err(e) = std::fs::write(&path, data) {
            eprintln!("adamw-reshard: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("{}: {} bytes", path.display(), data.len());
    }
    ExitCode::SUCCESS
}
