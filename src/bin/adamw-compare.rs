//! adamw-compare: compares two trajectory result files (docs/trajectory_format.md) in units in the
//! last place, case by case.
//!
//! usage: adamw-compare EXPECTED.json ACTUAL.json [--max-ulp N] [--quiet]
//!   prints `ok  ID: worst D ulp` or `FAIL ID: ...` per expected case (failures only with
//!   --quiet), then `N passed, N failed`. Exit status: 0 when every expected case passes, 1 when
//!   one fails, 2 when a file cannot be read or the arguments are wrong.
//!
//! A case passes when its error (if any) happens at the same place and every number of its steps
//! and final state is within `--max-ulp` (default 0: bit-exact) of the expected one, at the
//! expected value's precision: float32 when the expected value is exactly a float32, float64
//! otherwise. Integers must be equal, NaN equals NaN, and everything else (keys, list lengths,
//! strings, booleans) must match exactly.

use std::process::ExitCode;

use serde_json::Value;

#[path = "../json_number.rs"]
mod json_number;
use json_number::float_from_json;

/// The worst difference found so far: its distance in ulp and where it is.
#[derive(Default)]
struct Worst {
    ulp: f64,
    at: String,
}

impl Worst {
    fn note(&mut self, ulp: f64, at: impl FnOnce() -> String) {
        if ulp > self.ulp {
            self.ulp = ulp;
            self.at = at();
        }
    }
}

/// Maps a float's bits to an integer that counts representable values, so that the difference of
/// two of them is their distance in ulp (+0 and -0 both map to 0).
fn ordered_f32(x: f32) -> i64 {
    let bits = x.to_bits() as i64;
    if bits < 1 << 31 { bits } else { (1 << 31) - bits }
}

fn ordered_f64(x: f64) -> i128 {
    let bits = x.to_bits() as i128;
    if bits < 1 << 63 { bits } else { (1 << 63) - bits }
}

/// The distance from `expected` to `actual` in ulp at the expected value's precision. An actual
/// value between two float32s counts half an ulp more than the float32 it rounds to.
fn ulp(expected: f64, actual: f64) -> f64 {
    if expected.is_nan() || actual.is_nan() {
        return if expected.is_nan() && actual.is_nan() { 0.0 } else { f64::INFINITY };
    }
    if expected.is_infinite() || actual.is_infinite() {
        return if expected == actual { 0.0 } else { f64::INFINITY };
    }
    if expected as f32 as f64 == expected {
        let narrowed = actual as f32;
        if narrowed.is_infinite() {
            return f64::INFINITY;
        }
        let off_grid = if narrowed as f64 == actual { 0.0 } else { 0.5 };
        return (ordered_f32(expected as f32) - ordered_f32(narrowed)).abs() as f64 + off_grid;
    }
    (ordered_f64(expected) - ordered_f64(actual)).unsigned_abs() as f64
}

/// Walks `expected` and `actual` together, noting the worst numeric difference.
fn walk(expected: &Value, actual: &Value, path: &str, worst: &mut Worst) {
    let mismatch = |worst: &mut Worst, what: String| worst.note(f64::INFINITY, || format!("{path}: {what}"));
    match (expected, actual) {
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return mismatch(worst, format!("{} items expected, {} given", e.len(), a.len()));
            }
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                walk(x, y, &format!("{path}[{i}]"), worst);
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            if e.keys().ne(a.keys()) {
                let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>().join(", ");
                return mismatch(worst, format!("keys [{}] expected, [{}] given", keys(e), keys(a)));
            }
            for (key, x) in e {
                walk(x, &a[key], &format!("{path}.{key}"), worst);
            }
        }
        _ => match (float_from_json(expected), float_from_json(actual)) {
            (Some(_), Some(_)) if expected.is_i64() && actual.is_i64() && expected != actual => {
                mismatch(worst, format!("expected {expected}, got {actual}"));
            }
            (Some(e), Some(a)) => {
                worst.note(ulp(e, a), || format!("{path}: expected {expected}, got {actual}"));
            }
            _ if expected != actual => mismatch(worst, format!("expected {expected}, got {actual}")),
            _ => {}
        },
    }
}

/// Compares one case: `Err` when the error positions disagree, else the worst difference.
fn compare_case(expected: &Value, actual: &Value) -> Result<Worst, String> {
    let (e_error, a_error) = (expected.get("error"), actual.get("error"));
    if e_error.map(|e| &e["at"]) != a_error.map(|a| &a["at"]) {
        let at = |e: Option<&Value>| e.map_or("nowhere".to_string(), |e| e["at"].to_string());
        let message = a_error.and_then(|a| a["message"].as_str()).map(|m| format!(" ({m})")).unwrap_or_default();
        return Err(format!("error expected at {}, got at {}{message}", at(e_error), at(a_error)));
    }
    let mut worst = Worst::default();
    let missing = Value::Null;
    walk(&expected["steps"], actual.get("steps").unwrap_or(&missing), "steps", &mut worst);
    if let Some(final_state) = expected.get("final") {
        walk(final_state, actual.get("final").unwrap_or(&missing), "final", &mut worst);
    }
    Ok(worst)
}

struct Args {
    expected: String,
    actual: String,
    max_ulp: f64,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut files = Vec::new();
    let (mut max_ulp, mut quiet) = (0.0, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quiet" => quiet = true,
            "--max-ulp" => {
                let n = args.next().ok_or("--max-ulp needs a number")?;
                max_ulp = n.parse().map_err(|_| format!("--max-ulp: not a number: {n}"))?;
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => files.push(arg),
        }
    }
    match <[String; 2]>::try_from(files) {
        Ok([expected, actual]) => Ok(Args { expected, actual, max_ulp, quiet }),
        Err(_) => Err("two files are needed: EXPECTED.json ACTUAL.json".into()),
    }
}

fn read_cases(path: &str) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path} is not a JSON list of results: {e}"))
}

fn main() -> ExitCode {
    let usage = "usage: adamw-compare EXPECTED.json ACTUAL.json [--max-ulp N] [--quiet]";
    let read = parse_args().and_then(|args| Ok((read_cases(&args.expected)?, read_cases(&args.actual)?, args)));
    let (expected, actual, args) = match read {
        Ok(r) => r,
        Err(e) => {
            eprintln!("adamw-compare: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    for exp in &expected {
        let id = exp["id"].as_str().map_or_else(|| exp["id"].to_string(), str::to_string);
        let verdict = match actual.iter().find(|a| a["id"] == exp["id"]) {
            None => Err("missing from the actual results".to_string()),
            Some(act) => compare_case(exp, act).and_then(|w| {
                if w.ulp <= args.max_ulp {
                    Ok(format!("worst {} ulp", w.ulp))
                } else {
                    Err(format!("worst {} ulp at {}", w.ulp, w.at))
                }
            }),
        };
        match verdict {
            Ok(line) => {
                passed += 1;
                if !args.quiet {
                    println!("ok   {id}: {line}");
                }
            }
            Err(line) => {
                failed += 1;
                println!("FAIL {id}: {line}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
