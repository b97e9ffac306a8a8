//! The order of one `apply_gradients` call (docs/numerics.md §2.1): checks, the step's
//! hyper-parameters, the clip norms (all-reduced across ranks when sharded), the plan of
//! per-step scalars, then the engine's pass and the counter.

use crate::config::{Beta, Clipping, Config, CurrentValues, LearningRate};
use crate::engine::{DTypePlan, StepPlan};
use crate::error::{Error, Result};
use crate::float::{Ftz, Real};
use crate::kernels::{self, Clip, StepHyper, StepScalars};
use crate::tensor::GradientEntries;

use super::state::State;
use super::validate::{check_entries, not_built};

/// The learning rate and betas of the step at `step` (pre-increment iterations).
pub(crate) fn hyper_at(config: &Config, step: i64) -> Result<CurrentValues> {
    let learning_rate = match &config.learning_rate {
        LearningRate::Constant(x) => *x as f32,
        LearningRate::Schedule(s) => s.evaluate(step),
        LearningRate::Callback(cb) => cb.eval("learning_rate", step)? as f32,
    };
    let beta = |b: &Beta, what: &str| match b {
        Beta::Value(x) => Ok(*x),
        Beta::Callback(cb) => cb.eval(what, step),
    };
    Ok(CurrentValues {
        learning_rate,
        beta_1: beta(&config.beta_1, "beta_1")?,
        beta_2: beta(&config.beta_2, "beta_2")?,
    })
}

/// The step's scalars, global clip and unscale factor in dtype `F`.
fn dtype_plan<F: Real>(
    hyper: &StepHyper,
    clipping: Clipping,
    partials: &[f64],
    loss_scale: Option<f32>,
) -> DTypePlan<F> {
    let global_clip = match clipping {
        // The sum over the gradients' l2_loss values, in Eigen's order like TF's stacked sum.
        Clipping::GlobalNorm(clip) => Clip::by_global_norm(
            kernels::reduce_sum_in(false, &|i| Ftz::new(F::from_f64(partials[i])), 0, partials.len()),
            clip,
        ),
        _ => Clip::None,
    };
    DTypePlan { scalars: StepScalars::new(hyper), global_clip, unscale: loss_scale.map(kernels::unscale_factor) }
}

/// The loss scaler's update (Keras' `_DynamicLossScaleState.update`): the scale and counter
/// after a step. A non-finite step halves the scale (never below 1); the `growth_steps`-th
/// finite step in a row doubles it, if the double is finite. Either change restarts the count.
fn next_loss_scale(scale: f32, counter: i64, finite: bool, growth_steps: i64) -> (f32, i64) {
    let scale_ftz = Ftz::<f32>::new(scale);
    if !finite {
        ((scale_ftz / Ftz::new(2.0)).max_nan(Ftz::ONE).get(), 0)
    } else if counter.saturating_add(1) >= growth_steps {
        let doubled = (scale_ftz * Ftz::new(2.0)).get();
        (if doubled.is_finite() { doubled } else { scale }, 0)
    } else {
        (scale, counter + 1)
    }
}

/// `apply_gradients(zip(grads, vars))`. Validates everything first: on error nothing has
/// changed. Returns the new iteration count. With a loss scale the gradients are the scaled
/// ones: they are unscaled on the way (Keras' `get_unscaled_gradients`), and a dynamic scale
/// skips a step with a non-finite gradient (the counter still advances) and adapts itself.
pub(crate) fn apply_gradients(state: &mut State, entries: &mut dyn GradientEntries) -> Result<i64> {
    let step = state.iterations;
    if entries.is_empty() {
        // Keras re-reads the learning rate even for an empty list, and does nothing else.
        state.current = hyper_at(&state.config, step)?;
        return Ok(step);
    }
    let config = &state.config;
    let built = state.built.as_mut().ok_or_else(|| not_built("apply_gradients"))?;
    let clipping = config.clipping();
    let dtypes = check_entries(built, entries, clipping)?;
    let loss_scale = config.loss_scale.map(|_| state.loss_scale);
    if config.reject_non_finite_gradients {
        if let Some(bad) = state.engine.find_non_finite(entries, loss_scale) {
            let variable = entries.get(bad.entry).variable;
            return Err(Error::NonFiniteGradient(format!(
                "the gradient of variable {variable} (`{}`) holds {} at element {}; the call was rejected and nothing changed (reject_non_finite_gradients is on)",
                built.variables[variable].spec.name, bad.value, bad.element
            )));
        }
    }
    // Keras updates a dynamic scale before the step; the new scale only unscales later steps, so
    // it is kept here and stored once the step has succeeded (a failed call changes nothing).
    let mut next_scale = None;
    if let Some(ls) = config.loss_scale.filter(|l| l.dynamic) {
        let mut non_finite = [if state.engine.find_non_finite(entries, loss_scale).is_some() { 1.0 } else { 0.0 }];
        // Every rank takes the same decision: a non-finite gradient anywhere skips everywhere.
        if let Some(mesh) = &config.mesh {
            mesh.all_reduce(&mut non_finite)?;
        }
        let finite = non_finite[0] == 0.0;
        let next = next_loss_scale(state.loss_scale, state.loss_scale_counter, finite, ls.dynamic_growth_steps);
        if !finite {
            // Keras skips the inner step and only advances the counter (the learning rate it
            // reports is not re-read).
            (state.loss_scale, state.loss_scale_counter) = next;
            state.iterations += 1;
            return Ok(state.iterations);
        }
        next_scale = Some(next);
    }
    let config = &state.config;
    let built = state.built.as_mut().ok_or_else(|| not_built("apply_gradients"))?;
    // Callbacks run only for a call that passed every check.
    let hyper = hyper_at(config, step)?;
    // Norms come before anything changes: the mesh's all-reduce may fail. The all-reduce blocks
    // until every rank arrives, so it runs here, on the calling thread, never on a pool thread
    // (ranks as threads of one process sharing a pool could starve each other).
    built.norm_partials.clear();
    if let Clipping::Norm(_) | Clipping::GlobalNorm(_) = clipping {
        let halve = matches!(clipping, Clipping::GlobalNorm(_));
        state.engine.norm_partials(entries, halve, loss_scale, &mut built.norm_partials);
        if let Some(mesh) = &config.mesh {
            mesh.all_reduce(&mut built.norm_partials)?;
        }
    }
    let step_hyper = StepHyper {
        learning_rate: hyper.learning_rate,
        weight_decay: config.weight_decay,
        beta_1: hyper.beta_1,
        beta_2: hyper.beta_2,
        epsilon: config.epsilon,
        ema_momentum: config.ema_momentum,
        iterations: step,
    };
    let partials = &built.norm_partials;
    let plan = StepPlan {
        f32: dtypes.f32.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale)),
        f64: dtypes.f64.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale)),
        bf16: dtypes.bf16.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale)),
        f16: dtypes.f16.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale)),
        clipping,
        norm_partials: partials,
        decay: &built.decay,
        overwrite_with_average: config.use_ema
            && config.ema_overwrite_frequency.is_some_and(|f| f > 0 && step.wrapping_add(1) % f == 0),
    };
    state.engine.step(&plan, entries);
    state.iterations += 1;
    state.current = hyper;
    if let Some(next) = next_scale {
        (state.loss_scale, state.loss_scale_counter) = next;
    }
    Ok(state.iterations)
}
