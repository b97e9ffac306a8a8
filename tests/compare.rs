//! `adamw-compare`, the comparator users run on their own result files: it must find a
//! difference of one ulp anywhere, report where, and honour `--max-ulp`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn smoke_expected() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/smoke_expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write(name: &str, results: &[Value]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, serde_json::to_string(results).unwrap()).unwrap();
    path
}

/// Runs the comparator; returns its exit code and standard output.
fn compare(expected: &Path, actual: &Path, flags: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_adamw-compare")).arg(expected).arg(actual).args(flags).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap())
}

/// The first case without an error, and a float32 number of its first step moved by one ulp.
fn nudged() -> (Vec<Value>, String) {
    let mut results = smoke_expected();
    let case = results.iter_mut().find(|c| c.get("error").is_none()).unwrap();
    let id = case["id"].as_str().unwrap().to_string();
    let x = &mut case["steps"][0]["variables"][0][0];
    let value = x.as_f64().unwrap() as f32;
    assert_eq!(value as f64, x.as_f64().unwrap(), "a float32 variable");
    *x = json!(f32::from_bits(value.to_bits() + 1) as f64);
    (results, id)
}

#[test]
fn identical_results_pass() {
    let expected = smoke_expected();
    let path = write("identical.json", &expected);
    let (code, out) = compare(&path, &path, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with(&format!("{} passed, 0 failed\n", expected.len())), "{out}");
}

#[test]
fn one_ulp_is_found_and_located() {
    let expected = write("expected.json", &smoke_expected());
    let (results, id) = nudged();
    let actual = write("nudged.json", &results);
    let (code, out) = compare(&expected, &actual, &["--quiet"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("FAIL {id}: worst 1 ulp at steps[0].variables[0][0]")), "{out}");
    assert!(out.ends_with(&format!("{} passed, 1 failed\n", results.len() - 1)), "{out}");
    let (code, out) = compare(&expected, &actual, &["--max-ulp", "1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ok   {id}: worst 1 ulp")), "{out}");
}

#[test]
fn structure_errors_and_missing_cases_fail() {
    let expected_results = smoke_expected();
    let expected = write("expected_structure.json", &expected_results);
    let mut results = expected_results.clone();
    let first = results[0]["id"].as_str().unwrap().to_string();
    results.remove(0);
    let with_error = results.iter_mut().find(|c| c.get("error").is_none()).unwrap();
    let errored = with_error["id"].as_str().unwrap().to_string();
    with_error["error"] = json!({"at": 0, "type": "INVALID_ARGUMENT", "message": "made up"});
    let iterated = results.iter_mut().rev().find(|c| c.get("error").is_none()).unwrap();
    let counted = iterated["id"].as_str().unwrap().to_string();
    iterated["final"]["iterations"] = json!(iterated["final"]["iterations"].as_i64().unwrap() + 1);
    let (code, out) = compare(&expected, &write("broken.json", &results), &["--max-ulp", "1000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("FAIL {first}: missing from the actual results")), "{out}");
    assert!(out.contains(&format!("FAIL {errored}: error expected at nowhere, got at 0 (made up)")), "{out}");
    assert!(out.contains(&format!("FAIL {counted}: worst inf ulp at final.iterations")), "{out}");
}

#[test]
fn bad_arguments_exit_2() {
    let expected = write("expected_args.json", &smoke_expected());
    let (code, _) = compare(&expected, Path::new("/nonexistent/results.json"), &[]);
    assert_eq!(code, 2);
    let (code, _) = compare(&expected, &expected, &["--max-ulp", "many"]);
    assert_eq!(code, 2);
}
