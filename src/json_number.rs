//! Floats in JSON as Python's `json` module writes them: a number holding the exact value, or
//! `"NaN"`, `"Infinity"`, `"-Infinity"` (Keras configs and the trajectory files alike). The
//! binaries in `src/bin` include this file too.

use serde_json::{Number, Value};

/// A float as JSON.
#[allow(dead_code)] // a binary that includes this file may use one direction only
pub fn float_to_json(x: f64) -> Value {
    match Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None if x.is_nan() => Value::from("NaN"),
        None if x > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// A float written as a JSON number or as one of the non-finite strings.
pub fn float_from_json(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}
