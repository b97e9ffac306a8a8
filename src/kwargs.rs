//! Keras configs are Python keyword arguments written as JSON. This module reads them the way a
//! Python constructor would: every key must be known, each value must have an accepted type, and
//! numbers remember whether they were written as ints or floats so a config round-trips exactly.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json_number::{float_from_json, float_to_json};

/// A Python number as Keras keeps it in a config: `10` stays `10`, `10.0` stays `10.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A number written as an integer.
    Int(i64),
    /// A number written as a float.
    Float(f64),
}

impl Num {
    /// The number as a binary64, as Python's `float(x)` gives it.
    pub fn value(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(x) => x,
        }
    }

    /// The number as JSON, in the form it was given (`10` or `10.0`).
    pub fn to_json(self) -> Value {
        match self {
            Num::Int(i) => Value::from(i),
            Num::Float(x) => float_to_json(x),
        }
    }
}

impl From<f64> for Num {
    fn from(x: f64) -> Self {
        Num::Float(x)
    }
}

/// The keyword arguments of one constructor call, consumed key by key.
pub struct Kwargs {
    owner: &'static str,
    map: Map<String, Value>,
}

impl Kwargs {
    pub fn new(owner: &'static str, value: Value) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Kwargs { owner, map }),
            other => {
                Err(Error::InvalidConfig(format!("{owner} config must be a JSON object, got {}", type_name(&other))))
            }
        }
    }

    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// A key whose value is `null` counts as absent, as `None` does in Python.
    fn take_present(&mut self, key: &str) -> Option<Value> {
        self.take(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Value) -> Error {
        Error::InvalidConfig(format!("{}: `{key}` must be {want}, got {}", self.owner, compact(got)))
    }

    pub fn num(&mut self, key: &str) -> Result<Option<Num>> {
        let Some(v) = self.take_present(key) else { return Ok(None) };
        match &v {
            Value::Number(n) if n.is_i64() => Ok(Some(Num::Int(n.as_i64().unwrap_or_default()))),
            _ => match float_from_json(&v) {
                Some(x) => Ok(Some(Num::Float(x))),
                None => Err(self.wrong_type(key, "a number", &v)),
            },
        }
    }

    pub fn float(&mut self, key: &str) -> Result<Option<f64>> {
        Ok(self.num(key)?.map(Num::value))
    }

    pub fn required_num(&mut self, key: &str) -> Result<Num> {
        self.num(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        let Some(v) = self.take_present(key) else { return Ok(None) };
        v.as_bool().map(Some).ok_or_else(|| self.wrong_type(key, "true or false", &v))
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>> {
        let Some(v) = self.take_present(key) else { return Ok(None) };
        match v {
            Value::String(s) => Ok(Some(s)),
            other => Err(self.wrong_type(key, "a string", &other)),
        }
    }

    pub fn num_list(&mut self, key: &str) -> Result<Option<Vec<Num>>> {
        let Some(v) = self.take_present(key) else { return Ok(None) };
        let Value::Array(items) = &v else { return Err(self.wrong_type(key, "a list of numbers", &v)) };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::Number(n) if n.is_i64() => out.push(Num::Int(n.as_i64().unwrap_or_default())),
                _ => match float_from_json(item) {
                    Some(x) => out.push(Num::Float(x)),
                    None => return Err(self.wrong_type(key, "a list of numbers", &v)),
                },
            }
        }
        Ok(Some(out))
    }

    pub fn missing(&self, key: &str) -> Error {
        Error::InvalidConfig(format!("{}: missing required argument `{key}`", self.owner))
    }

    /// Fails on the first key nobody took, with the wording of the `TypeError` Keras raises
    /// (the optimizer's own text; Python's for a schedule's `cls(**config)`).
    pub fn finish(self) -> Result<()> {
        let Some(key) = self.map.keys().next() else { return Ok(()) };
        Err(Error::InvalidConfig(if self.owner == "AdamW" {
            format!("{key} is not a valid argument, kwargs should be empty  for `optimizer_experimental.Optimizer`.")
        } else {
            format!("{}.__init__() got an unexpected keyword argument '{key}'", self.owner)
        }))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message, cut short so a message never carries a whole document.
fn compact(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}
