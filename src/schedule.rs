//! The six Keras learning-rate schedules, evaluated in float32 exactly as
//! `tf_keras/optimizers/schedules/learning_rate_schedule.py` does eagerly (docs/numerics.md §10.2),
//! and their Keras serialization (docs/numerics.md §10.3).

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::float::{Ftz, libm_cosf, libm_logf};
use crate::kwargs::{Kwargs, Num};

/// A learning-rate schedule: a pure function of the pre-increment iteration count.
/// Numbers keep the form they were given in (`decay_steps: 10` stays an int) so that
/// `get_config` reproduces Keras' JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `initial_learning_rate * decay_rate ^ (step / decay_steps)`.
    ExponentialDecay {
        /// The learning rate at step 0.
        initial_learning_rate: Num,
        /// The number of steps over which the rate is multiplied by `decay_rate` once.
        decay_steps: Num,
        /// The factor applied to the rate every `decay_steps` steps.
        decay_rate: Num,
        /// Floors `step / decay_steps`, so the rate drops in discrete steps (Keras' default `false`).
        staircase: bool,
        /// The schedule's optional name, reported by `get_config` (it changes no value).
        name: Option<String>,
    },
    /// A constant rate on each interval between step boundaries.
    PiecewiseConstantDecay {
        /// Increasing step boundaries, compared with the step as int64 (floats truncate toward zero).
        boundaries: Vec<Num>,
        /// One rate per interval, one more than `boundaries`: `values[0]` for steps <= `boundaries[0]`.
        values: Vec<Num>,
        /// The schedule's optional name, reported by `get_config` (it changes no value).
        name: Option<String>,
    },
    /// A polynomial decay from `initial_learning_rate` to `end_learning_rate` over `decay_steps`.
    PolynomialDecay {
        /// The learning rate at step 0.
        initial_learning_rate: Num,
        /// The number of steps to reach `end_learning_rate` (one period with `cycle`).
        decay_steps: Num,
        /// The rate at the end of the decay (Keras' default 0.0001).
        end_learning_rate: Num,
        /// The exponent of the polynomial (Keras' default 1.0, a linear decay).
        power: Num,
        /// Restarts the decay after `decay_steps`, stretched to the next multiple of it (default `false`).
        cycle: bool,
        /// The schedule's optional name, reported by `get_config` (it changes no value).
        name: Option<String>,
    },
    /// `initial_learning_rate / (1 + decay_rate * step / decay_steps)`.
    InverseTimeDecay {
        /// The learning rate at step 0.
        initial_learning_rate: Num,
        /// The number of steps over which the denominator grows by `decay_rate`.
        decay_steps: Num,
        /// How much the denominator grows every `decay_steps` steps.
        decay_rate: Num,
        /// Floors `step / decay_steps`, so the rate drops in discrete steps (Keras' default `false`).
        staircase: bool,
        /// The schedule's optional name, reported by `get_config` (it changes no value).
        name: Option<String>,
    },
    /// A cosine decay over `decay_steps`, with an optional linear warmup before it.
    CosineDecay {
        /// The learning rate at step 0 (where the warmup starts, if there is one).
        initial_learning_rate: Num,
        /// The number of steps the cosine decay lasts (after the warmup).
        decay_steps: Num,
        /// The final rate as a fraction of the rate the decay starts from (Keras' default 0.0).
        alpha: Num,
        /// The schedule's optional name, reported by `get_config` (it changes no value).
        name: Option<String>,
        /// The rate a linear warmup reaches, where the decay starts; `None` (Keras' default): no warmup.
        warmup_target: Option<Num>,
        /// The number of warmup steps (Keras' default 0).
        warmup_steps: Num,
    },
    /// A cosine decay with warm restarts (SGDR).
    CosineDecayRestarts {
        /// The learning rate at step 0.
        initial_learning_rate: Num,
        /// The number of steps in the first decay period.
        first_decay_steps: Num,
        /// Each period is `t_mul` times as long as the one before (Keras' default 2.0).
        t_mul: Num,
        /// Each period starts at `m_mul` times the previous one's initial rate (Keras' default 1.0).
        m_mul: Num,
        /// The minimum rate as a fraction of `initial_learning_rate` (Keras' default 0.0).
        alpha: Num,
        /// The schedule's optional name, reported by `get_config` (it changes no value).
        name: Option<String>,
    },
}

type F = Ftz<f32>;

/// `tf.cast(python_number, float32)` of a schedule argument.
fn f(x: Num) -> F {
    Ftz::new(x.value() as f32)
}

fn floor(x: F) -> F {
    Ftz::new(x.get().floor())
}

impl Schedule {
    /// The Keras class name, such as `"ExponentialDecay"`.
    pub fn class_name(&self) -> &'static str {
        match self {
            Schedule::ExponentialDecay { .. } => "ExponentialDecay",
            Schedule::PiecewiseConstantDecay { .. } => "PiecewiseConstantDecay",
            Schedule::PolynomialDecay { .. } => "PolynomialDecay",
            Schedule::InverseTimeDecay { .. } => "InverseTimeDecay",
            Schedule::CosineDecay { .. } => "CosineDecay",
            Schedule::CosineDecayRestarts { .. } => "CosineDecayRestarts",
        }
    }

    /// Keras' constructor checks (the only one Keras makes is on PiecewiseConstantDecay's lengths).
    pub fn validate(&self) -> Result<()> {
        if let Schedule::PiecewiseConstantDecay { boundaries, values, .. } = self {
            if boundaries.len() + 1 != values.len() {
                return Err(Error::InvalidArgument(format!(
                    "The length of boundaries should be 1 less than the length of values. Received: boundaries={} of length {}, and values={} of length {}.",
                    py_list(boundaries),
                    boundaries.len(),
                    py_list(values),
                    values.len()
                )));
            }
            if values.is_empty() {
                return Err(Error::InvalidArgument("PiecewiseConstantDecay needs at least one value".into()));
            }
        }
        Ok(())
    }

    /// The learning rate at `step` (the optimizer's pre-increment iteration count), in float32.
    pub fn evaluate(&self, step: i64) -> f32 {
        let step_f = Ftz::new(step as f32);
        let pi = Ftz::new(std::f64::consts::PI as f32);
        let one = F::ONE;
        let half = Ftz::new(0.5f32);
        let lr = match *self {
            Schedule::ExponentialDecay { initial_learning_rate, decay_steps, decay_rate, staircase, .. } => {
                let mut p = step_f / f(decay_steps);
                if staircase {
                    p = floor(p);
                }
                f(initial_learning_rate) * f(decay_rate).pow(p)
            }
            Schedule::PiecewiseConstantDecay { ref boundaries, ref values, .. } => {
                // Boundaries are cast to the step's dtype (int64): floats truncate toward zero.
                let b = |i: usize| boundaries[i].value() as i64;
                let last = boundaries.len().wrapping_sub(1);
                let value = if boundaries.is_empty() || step <= b(0) {
                    values[0]
                } else if step > b(last) {
                    values[values.len() - 1]
                } else {
                    (1..boundaries.len()).find(|&i| b(i - 1) < step && step <= b(i)).map_or(values[0], |i| values[i])
                };
                f(value)
            }
            Schedule::PolynomialDecay {
                initial_learning_rate, decay_steps, end_learning_rate, power, cycle, ..
            } => {
                let mut s = step_f;
                let mut ds = f(decay_steps);
                if cycle {
                    let multiplier = if s.get() == 0.0 { one } else { Ftz::new((s / f(decay_steps)).get().ceil()) };
                    ds = ds * multiplier;
                } else {
                    s = s.min_nan(ds);
                }
                let p = s / ds;
                (f(initial_learning_rate) - f(end_learning_rate)) * (one - p).pow(f(power)) + f(end_learning_rate)
            }
            Schedule::InverseTimeDecay { initial_learning_rate, decay_steps, decay_rate, staircase, .. } => {
                let mut p = step_f / f(decay_steps);
                if staircase {
                    p = floor(p);
                }
                f(initial_learning_rate) / (one + f(decay_rate) * p)
            }
            Schedule::CosineDecay {
                initial_learning_rate, decay_steps, alpha, warmup_target, warmup_steps, ..
            } => {
                let ds = f(decay_steps);
                let init = f(initial_learning_rate);
                // (1 - alpha) is Python arithmetic: formed in float64, then rounded.
                let decay = |s: F, from: F| {
                    let completed_fraction = s / ds;
                    let cosine_decayed = half * (one + Ftz::new(libm_cosf((pi * completed_fraction).get())));
                    from * (Ftz::new((1.0 - alpha.value()) as f32) * cosine_decayed + f(alpha))
                };
                match warmup_target {
                    None => decay(step_f.min_nan(ds), init),
                    Some(target) => {
                        let wt = f(target);
                        let ws = f(warmup_steps);
                        let s = step_f.min_nan(ds + ws);
                        if s < ws { (wt - init) * (s / ws) + init } else { decay(s - ws, wt) }
                    }
                }
            }
            Schedule::CosineDecayRestarts { initial_learning_rate, first_decay_steps, t_mul, m_mul, alpha, .. } => {
                let a = f(alpha);
                let tm = f(t_mul);
                let mut completed_fraction = step_f / f(first_decay_steps);
                let i_restart;
                if tm.get() == 1.0 {
                    i_restart = floor(completed_fraction);
                    completed_fraction = completed_fraction - i_restart;
                } else {
                    let log = |x: F| Ftz::new(libm_logf(x.get()));
                    i_restart = floor(log(one - completed_fraction * (one - tm)) / log(tm));
                    let sum_r = (one - tm.pow(i_restart)) / (one - tm);
                    completed_fraction = (completed_fraction - sum_r) / tm.pow(i_restart);
                }
                let m_fac = f(m_mul).pow(i_restart);
                let cosine_decayed = (half * m_fac) * (one + Ftz::new(libm_cosf((pi * completed_fraction).get())));
                // alpha is a float32 tensor here, so 1 - alpha is a float32 subtraction.
                f(initial_learning_rate) * ((one - a) * cosine_decayed + a)
            }
        };
        lr.get()
    }

    /// The schedule's `get_config()`, keys in Keras' order.
    pub fn config(&self) -> Value {
        let name = |n: &Option<String>| n.clone().map_or(Value::Null, Value::String);
        let list = |v: &[Num]| Value::Array(v.iter().map(|x| x.to_json()).collect());
        match self {
            Schedule::ExponentialDecay { initial_learning_rate, decay_steps, decay_rate, staircase, name: n }
            | Schedule::InverseTimeDecay { initial_learning_rate, decay_steps, decay_rate, staircase, name: n } => {
                json!({
                "initial_learning_rate": initial_learning_rate.to_json(), "decay_steps": decay_steps.to_json(),
                "decay_rate": decay_rate.to_json(), "staircase": staircase, "name": name(n)})
            }
            Schedule::PiecewiseConstantDecay { boundaries, values, name: n } => json!({
                "boundaries": list(boundaries), "values": list(values), "name": name(n)}),
            Schedule::PolynomialDecay {
                initial_learning_rate,
                decay_steps,
                end_learning_rate,
                power,
                cycle,
                name: n,
            } => json!({
                "initial_learning_rate": initial_learning_rate.to_json(), "decay_steps": decay_steps.to_json(),
                "end_learning_rate": end_learning_rate.to_json(), "power": power.to_json(), "cycle": cycle, "name": name(n)}),
            Schedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                name: n,
                warmup_target,
                warmup_steps,
            } => json!({
                "initial_learning_rate": initial_learning_rate.to_json(), "decay_steps": decay_steps.to_json(),
                "alpha": alpha.to_json(), "name": name(n),
                "warmup_target": warmup_target.map_or(Value::Null, Num::to_json), "warmup_steps": warmup_steps.to_json()}),
            Schedule::CosineDecayRestarts {
                initial_learning_rate,
                first_decay_steps,
                t_mul,
                m_mul,
                alpha,
                name: n,
            } => json!({
                "initial_learning_rate": initial_learning_rate.to_json(), "first_decay_steps": first_decay_steps.to_json(),
                "t_mul": t_mul.to_json(), "m_mul": m_mul.to_json(), "alpha": alpha.to_json(), "name": name(n)}),
        }
    }

    /// `keras.optimizers.schedules.serialize(schedule)`: the dict nested in the optimizer config.
    pub fn serialize(&self) -> Value {
        json!({"module": "keras.optimizers.schedules", "class_name": self.class_name(),
               "config": self.config(), "registered_name": null})
    }

    /// Reads a serialized schedule: the Keras 2.13+ form `{module, class_name, config, registered_name}`
    /// or the older `{class_name, config}`.
    pub fn deserialize(value: &Value) -> Result<Self> {
        let Value::Object(outer) = value else {
            return Err(Error::InvalidConfig(format!("a learning-rate schedule must be a JSON object, got {value}")));
        };
        let class_name = outer.get("class_name").and_then(Value::as_str).ok_or_else(|| {
            Error::InvalidConfig("a serialized learning-rate schedule needs a string `class_name`".into())
        })?;
        if let Some(module) = outer.get("module").filter(|m| !m.is_null()) {
            let known = [
                "keras.optimizers.schedules",
                "tf_keras.optimizers.schedules",
                "keras.optimizers.schedules.learning_rate_schedule",
            ];
            if !module.as_str().is_some_and(|m| known.contains(&m)) {
                return Err(Error::InvalidConfig(format!(
                    "unknown schedule module {module}: only the built-in Keras schedules are supported"
                )));
            }
        }
        for key in outer.keys() {
            if !["module", "class_name", "config", "registered_name"].contains(&key.as_str()) {
                return Err(Error::InvalidConfig(format!("unexpected key `{key}` in a serialized schedule")));
            }
        }
        let config = outer.get("config").cloned().unwrap_or_else(|| Value::Object(Map::new()));
        Self::from_config(class_name, config)
    }

    /// `cls.from_config(config)`, i.e. `cls(**config)` with Keras' defaults.
    pub fn from_config(class_name: &str, config: Value) -> Result<Self> {
        let owner: &'static str = match class_name {
            "ExponentialDecay" => "ExponentialDecay",
            "PiecewiseConstantDecay" => "PiecewiseConstantDecay",
            "PolynomialDecay" => "PolynomialDecay",
            "InverseTimeDecay" => "InverseTimeDecay",
            "CosineDecay" => "CosineDecay",
            "CosineDecayRestarts" => "CosineDecayRestarts",
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown learning-rate schedule `{other}`: expected one of ExponentialDecay, PiecewiseConstantDecay, PolynomialDecay, InverseTimeDecay, CosineDecay, CosineDecayRestarts"
                )));
            }
        };
        let mut k = Kwargs::new(owner, config)?;
        let name = k.string("name")?;
        let schedule = match owner {
            "ExponentialDecay" | "InverseTimeDecay" => {
                let initial_learning_rate = k.required_num("initial_learning_rate")?;
                let decay_steps = k.required_num("decay_steps")?;
                let decay_rate = k.required_num("decay_rate")?;
                let staircase = k.bool("staircase")?.unwrap_or(false);
                if owner == "ExponentialDecay" {
                    Schedule::ExponentialDecay { initial_learning_rate, decay_steps, decay_rate, staircase, name }
                } else {
                    Schedule::InverseTimeDecay { initial_learning_rate, decay_steps, decay_rate, staircase, name }
                }
            }
            "PiecewiseConstantDecay" => {
                let boundaries = k.num_list("boundaries")?.ok_or_else(|| k.missing("boundaries"))?;
                let values = k.num_list("values")?.ok_or_else(|| k.missing("values"))?;
                Schedule::PiecewiseConstantDecay { boundaries, values, name }
            }
            "PolynomialDecay" => Schedule::PolynomialDecay {
                initial_learning_rate: k.required_num("initial_learning_rate")?,
                decay_steps: k.required_num("decay_steps")?,
                end_learning_rate: k.num("end_learning_rate")?.unwrap_or(Num::Float(0.0001)),
                power: k.num("power")?.unwrap_or(Num::Float(1.0)),
                cycle: k.bool("cycle")?.unwrap_or(false),
                name,
            },
            "CosineDecay" => Schedule::CosineDecay {
                initial_learning_rate: k.required_num("initial_learning_rate")?,
                decay_steps: k.required_num("decay_steps")?,
                alpha: k.num("alpha")?.unwrap_or(Num::Float(0.0)),
                name,
                warmup_target: k.num("warmup_target")?,
                warmup_steps: k.num("warmup_steps")?.unwrap_or(Num::Int(0)),
            },
            _ => Schedule::CosineDecayRestarts {
                initial_learning_rate: k.required_num("initial_learning_rate")?,
                first_decay_steps: k.required_num("first_decay_steps")?,
                t_mul: k.num("t_mul")?.unwrap_or(Num::Float(2.0)),
                m_mul: k.num("m_mul")?.unwrap_or(Num::Float(1.0)),
                alpha: k.num("alpha")?.unwrap_or(Num::Float(0.0)),
                name,
            },
        };
        k.finish()?;
        schedule.validate()?;
        Ok(schedule)
    }
}

/// A list as Python prints it in Keras' messages: `[1, 2.5]`.
fn py_list(v: &[Num]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|x| match x {
            Num::Int(i) => i.to_string(),
            Num::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
            Num::Float(f) => f.to_string(),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(staircase: bool) -> Schedule {
        Schedule::ExponentialDecay {
            initial_learning_rate: Num::Float(0.1),
            decay_steps: Num::Int(3),
            decay_rate: Num::Float(0.5),
            staircase,
            name: None,
        }
    }

    #[test]
    fn staircase_exponential_decay_halves_every_three_steps() {
        let s = exp(true);
        assert_eq!(s.evaluate(0), 0.1f32);
        assert_eq!(s.evaluate(2), 0.1f32);
        assert_eq!(s.evaluate(3), 0.05f32);
        assert_eq!(s.evaluate(6), 0.025f32);
    }

    #[test]
    fn serialization_round_trips_and_keeps_ints() {
        let s = exp(false);
        let v = s.serialize();
        assert_eq!(v["config"]["decay_steps"], json!(3));
        assert_eq!(v["module"], json!("keras.optimizers.schedules"));
        assert_eq!(Schedule::deserialize(&v).unwrap(), s);
    }

    #[test]
    fn piecewise_boundaries_are_inclusive_on_the_left_piece() {
        let s = Schedule::PiecewiseConstantDecay {
            boundaries: vec![Num::Int(2), Num::Float(4.9)],
            values: vec![Num::Float(1.0), Num::Float(0.5), Num::Float(0.1)],
            name: None,
        };
        let got: Vec<f32> = (0..7).map(|t| s.evaluate(t)).collect();
        assert_eq!(got, [1.0, 1.0, 1.0, 0.5, 0.5, 0.1, 0.1]);
    }

    #[test]
    fn piecewise_with_wrong_lengths_is_kerass_value_error() {
        let err = Schedule::from_config("PiecewiseConstantDecay", json!({"boundaries": [1, 2], "values": [1.0, 2.0]}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "The length of boundaries should be 1 less than the length of values. Received: boundaries=[1, 2] of length 2, and values=[1.0, 2.0] of length 2."
        );
    }

    #[test]
    fn unknown_schedule_argument_is_rejected() {
        let err =
            Schedule::from_config("CosineDecay", json!({"initial_learning_rate": 0.1, "decay_steps": 10, "bogus": 1}))
                .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)));
        assert!(err.to_string().contains("bogus"));
    }
}
