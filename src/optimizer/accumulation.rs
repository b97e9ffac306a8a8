//! Keras 3's gradient accumulation (docs/numerics.md §25): with `gradient_accumulation_steps`
//! n, a call whose count (Keras 3's `_iterations`, before the increment) is not n - 1 modulo n
//! only adds its gradients to the accumulators; the n-th call forms `(g + acc) / n` and runs
//! the step of [`super::step`] on it (clipping, decay, moments, update), then zeroes every
//! accumulator. `iterations` is Keras 3's: calls // n. With EMA, every call updates every
//! variable's average, as Keras 3 does.

use crate::config::{Config, LearningRate};
use crate::dtype::TensorBuf;
use crate::engine::StepPlan;
use crate::error::{Result, invalid};
use crate::kernels::StepHyper;
use crate::tensor::{CallEntries, Gradient, GradientEntries, GradientEntry};

use super::report::StepReport;
use super::state::State;
use super::step::{dtype_plan, hyper_at, non_finite_rejection, own_scalars, report};
use super::validate::{check_entries, not_built};

/// One `apply_gradients` call under gradient accumulation of `steps` calls.
pub(crate) fn apply_gradients(state: &mut State, entries: &mut CallEntries<'_>, steps: i64) -> Result<i64> {
    let calls = state.iterations;
    if entries.len() == 0 {
        // Keras 3 returns at once: nothing counts.
        return Ok(calls.div_euclid(steps));
    }
    let config = &state.config;
    let built = state.built.as_mut().ok_or_else(|| not_built("apply_gradients"))?;
    let clipping = config.clipping();
    let dtypes = check_entries(built, entries, clipping)?;
    if config.use_ema && entries.len() != built.variables.len() {
        // Duplicates were rejected: a shorter list leaves a variable out.
        let missing = (0..built.variables.len()).find(|&v| built.last_listed[v] != built.call_number).unwrap_or(0);
        return Err(invalid!(
            "with use_ema and gradient_accumulation_steps every call lists every built variable, as Keras 3 updates every variable's average on every call: variable {missing} (`{}`) is missing (list it without a gradient)",
            built.variables[missing].spec.name
        ));
    }
    let CallEntries::Host(host) = entries else {
        return Err(invalid!("gradient accumulation runs on the host: an optimizer on a device has none"));
    };
    let next_calls = calls.checked_add(1).ok_or_else(|| invalid!("the call counter is at its largest value"))?;
    // The guard checks each call's own gradients, before they reach an accumulator.
    if config.reject_non_finite_gradients {
        let mut call = CallEntries::Host(&mut **host);
        if let Some(bad) = state.engine.find_non_finite(&mut call, None)? {
            return Err(non_finite_rejection(built, &mut call, Some(bad)));
        }
    }
    let updates = calls.div_euclid(steps);
    let update_call = next_calls.rem_euclid(steps) == 0;
    // Keras 3 checks the overwrite on every call, against the update count.
    let overwrite =
        config.use_ema && config.ema_overwrite_frequency.is_some_and(|f| f > 0 && updates.wrapping_add(1) % f == 0);
    // Callbacks run only for a call that passed every check, and only for an update.
    let hyper = if update_call { Some(hyper_at(config, calls)?) } else { None };
    let step_hyper = StepHyper {
        learning_rate: hyper.map_or(state.current.learning_rate, |h| h.learning_rate),
        weight_decay: config.weight_decay,
        beta_1: hyper.map_or(0.0, |h| h.beta_1),
        beta_2: hyper.map_or(0.0, |h| h.beta_2),
        epsilon: config.epsilon,
        ema_momentum: config.ema_momentum,
        iterations: updates,
        keras3_average: true,
    };
    let live_rate = live_learning_rate(config, next_calls, step_hyper.learning_rate);
    if !update_call {
        state.engine.accumulate(&mut CallEntries::Host(&mut **host), &mut built.accumulators, None)?;
        if config.use_ema {
            state.engine.update_averages(&mut CallEntries::Host(&mut **host), &step_hyper, false, overwrite)?;
        }
        built.gradient_norms.fill(f64::NAN);
        state.iterations = next_calls;
        state.report = StepReport { iterations: state.iterations.div_euclid(steps), ..StepReport::default() };
        state.current.learning_rate = live_rate;
        return Ok(state.iterations.div_euclid(steps));
    }
    state.engine.accumulate(&mut CallEntries::Host(&mut **host), &mut built.accumulators, Some(steps))?;
    // The update call's gradients are the averages, read from the accumulators.
    let accumulators = std::mem::take(&mut built.accumulators);
    let mut averaged = Averaged { entries: &mut **host, accumulators: &accumulators };
    let mut call = CallEntries::Host(&mut averaged);
    let norm_clipping = matches!(clipping, crate::config::Clipping::Norm(_) | crate::config::Clipping::GlobalNorm(_));
    built.norm_partials.clear();
    let stepped = (|| {
        if norm_clipping {
            // Keras 3's global norm sums squares (`ops.sum(ops.square(g))`), as clipnorm does.
            state.engine.norm_partials(&mut call, false, None, &mut built.norm_partials, &mut built.norm_shared)?;
        }
        own_scalars(built, &step_hyper);
        let partials = &built.norm_partials;
        let plan = StepPlan {
            f32: dtypes.f32.then(|| dtype_plan(&step_hyper, clipping, partials, None, true)),
            f64: dtypes.f64.then(|| dtype_plan(&step_hyper, clipping, partials, None, true)),
            bf16: dtypes.bf16.then(|| dtype_plan(&step_hyper, clipping, partials, None, true)),
            f16: dtypes.f16.then(|| dtype_plan(&step_hyper, clipping, partials, None, true)),
            clipping,
            norm_partials: partials,
            decay: &built.decay,
            variable_scalars: &built.variable_scalars,
            overwrite_with_average: overwrite,
        };
        let update_pass_norms = state.report_norms && !norm_clipping;
        let squares = update_pass_norms.then(|| {
            built.report_squares.clear();
            built.report_squares.resize(partials.len().max(call.len()), 0.0); // within build's room
            &mut built.report_squares[..]
        });
        state.engine.step(&plan, &mut call, squares)?;
        if state.config.use_ema {
            // Keras 3 also moves the averages of the variables without a gradient.
            state.engine.update_averages(&mut call, &step_hyper, true, overwrite)?;
        }
        let global_clip = plan.global_clip();
        Ok::<_, crate::error::Error>((update_pass_norms, global_clip))
    })();
    let built = state.built.as_mut().ok_or_else(|| not_built("apply_gradients"))?;
    built.accumulators = accumulators;
    // Keras 3 zeroes every accumulator, those of variables without a gradient too.
    for accumulator in &mut built.accumulators {
        accumulator.fill_zero();
    }
    // (The CPU engine's passes cannot fail, and accumulation runs on no other engine.)
    let (update_pass_norms, global_clip) = stepped?;
    state.iterations = next_calls;
    let iterations = state.iterations.div_euclid(steps);
    let mut call = CallEntries::Host(&mut **host);
    state.report = report(built, &mut call, clipping, false, update_pass_norms, None, global_clip, iterations);
    state.current =
        hyper.map(|h| crate::config::CurrentValues { learning_rate: live_rate, ..h }).unwrap_or(state.current);
    Ok(iterations)
}

/// Keras 3's `optimizer.learning_rate` after a call: the schedule at the new call count (a
/// callback is not called again: the rate of the last update stays).
fn live_learning_rate(config: &Config, calls: i64, last: f32) -> f32 {
    match &config.learning_rate {
        LearningRate::Constant(x) => *x as f32,
        LearningRate::Schedule(s) => s.evaluate(calls),
        LearningRate::Callback(_) => last,
    }
}

/// The entries of the update call: the caller's variables, each with its accumulator (now the
/// averaged gradient) as a dense gradient where the call gave one.
struct Averaged<'a> {
    entries: &'a mut dyn GradientEntries,
    accumulators: &'a [TensorBuf],
}

impl GradientEntries for Averaged<'_> {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&mut self, i: usize) -> GradientEntry<'_> {
        averaged(self.accumulators, self.entries.get(i))
    }

    fn visit_all<'s>(&'s mut self, visit: &mut dyn FnMut(GradientEntry<'s>)) -> bool {
        let accumulators = self.accumulators;
        self.entries.visit_all(&mut |entry| visit(averaged(accumulators, entry)))
    }
}

/// `entry` with its accumulator as its gradient, where it has one.
fn averaged<'e>(accumulators: &'e [TensorBuf], entry: GradientEntry<'e>) -> GradientEntry<'e> {
    let variable = entry.variable;
    let gradient = entry.gradient.map(|_| Gradient::Dense(accumulators[variable].as_ref()));
    GradientEntry { variable, values: entry.values, gradient }
}
