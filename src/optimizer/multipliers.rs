//! Per-variable learning-rate and weight-decay multipliers, an extension beyond Keras 2
//! (docs/numerics.md §22). A multiplier changes the hyper-parameters a variable's step starts
//! from, never the formula: the variable steps exactly as Keras' AdamW would with
//! `learning_rate = fl32(lr · r)` and `weight_decay = fl64(wd · d)` for it alone.

use crate::error::{Error, Result};
use crate::kernels::StepHyper;

/// A model variable's multipliers. Both 1 (the default) is Keras: the shared scalars are used
/// and nothing is multiplied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Multipliers {
    /// Scales the learning rate: the step's float32 rate (after the schedule or callback) times
    /// this, in float64, rounded once to float32.
    pub learning_rate: f64,
    /// Scales `weight_decay`: times this in float64, then cast to the variable's dtype as Keras
    /// casts `weight_decay`. 0 turns weight decay off for the variable, the same bits as
    /// `exclude_from_weight_decay`.
    pub weight_decay: f64,
}

impl Default for Multipliers {
    fn default() -> Self {
        Multipliers { learning_rate: 1.0, weight_decay: 1.0 }
    }
}

impl Multipliers {
    /// Whether these are Keras' own hyper-parameters (both 1).
    pub fn is_identity(&self) -> bool {
        self.learning_rate == 1.0 && self.weight_decay == 1.0
    }

    /// Both finite and not negative.
    pub(crate) fn check(&self) -> Result<()> {
        for (value, what) in [(self.learning_rate, "learning-rate"), (self.weight_decay, "weight-decay")] {
            if !value.is_finite() || value < 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "a {what} multiplier must be finite and not negative, got {value}"
                )));
            }
        }
        Ok(())
    }

    /// The hyper-parameters of a step of this variable, from the shared ones.
    pub(crate) fn apply(&self, shared: &StepHyper) -> StepHyper {
        let learning_rate = if self.learning_rate == 1.0 {
            shared.learning_rate
        } else {
            (shared.learning_rate as f64 * self.learning_rate) as f32
        };
        let weight_decay =
            if self.weight_decay == 1.0 { shared.weight_decay } else { shared.weight_decay * self.weight_decay };
        StepHyper { learning_rate, weight_decay, ..*shared }
    }
}
