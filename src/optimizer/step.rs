//! The order of one `apply_gradients` call (docs/numerics.md §2.1): checks, the step's
//! hyper-parameters, the clip norms (all-reduced across ranks when sharded), the plan of
//! per-step scalars, then the engine's pass and the counter.

use crate::config::{Beta, Clipping, Config, CurrentValues, LearningRate};
use crate::dtype::DType;
use crate::engine::{DTypePlan, NonFinite, StepPlan, VariableScalars};
use crate::error::{Error, Result};
use crate::float::{Ftz, Real};
use crate::kernels::{self, Clip, StepHyper, StepScalars};
use crate::reduction;
use crate::tensor::CallEntries;

use super::report::{NormSource, StepReport};
use super::state::{Built, State};
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

/// The step's scalars, global clip and unscale factor in dtype `F`. `keras3`: Keras 3's global
/// clip, over sums of squares (docs/numerics.md §25); else TF's, over `l2_loss` values.
pub(super) fn dtype_plan<F: Real>(
    hyper: &StepHyper,
    clipping: Clipping,
    partials: &[f64],
    loss_scale: Option<f32>,
    keras3: bool,
) -> DTypePlan<F> {
    let (global_clip, global_norm) = match clipping {
        // The sum over the gradients' sums, in Eigen's order like the stacked sum.
        Clipping::GlobalNorm(clip) => {
            let sum = reduction::reduce_sum_in(&|i| Ftz::new(F::from_f64(partials[i])), 0, partials.len());
            if keras3 {
                (Clip::by_global_norm_keras3(sum, clip), Some(sum.sqrt()))
            } else {
                (Clip::by_global_norm(sum, clip), Some(kernels::global_norm(sum)))
            }
        }
        _ => (Clip::None, None),
    };
    DTypePlan {
        scalars: StepScalars::new(hyper),
        global_clip,
        unscale: loss_scale.map(kernels::unscale_factor),
        global_norm,
    }
}

/// The report of a step that ran (docs/numerics.md §23), and each listed variable's gradient norm
/// in `built.gradient_norms` (NaN for the others). `halved`: global_clipnorm's sums are
/// `l2_loss` values (Keras 2), not sums of squares (Keras 3).
#[allow(clippy::too_many_arguments)]
pub(super) fn report(
    built: &mut Built,
    entries: &mut CallEntries<'_>,
    clipping: Clipping,
    halved: bool,
    update_pass_norms: bool,
    loss_scale: Option<f32>,
    global_clip: Option<(f64, f64)>,
    iterations: i64,
) -> StepReport {
    built.gradient_norms.fill(f64::NAN);
    let (sums, norms): (&[f64], NormSource) = match clipping {
        Clipping::Norm(_) => (&built.norm_partials, NormSource::Clipnorm),
        Clipping::GlobalNorm(_) => (&built.norm_partials, NormSource::GlobalClipnorm),
        _ if update_pass_norms => (&built.report_squares, NormSource::UpdatePass),
        _ => (&[], NormSource::None),
    };
    // The update pass summed the gradients as passed: the unscaled norm is theirs over the scale.
    let unscale = match norms {
        NormSource::UpdatePass => loss_scale.map_or(1.0, |s| 1.0 / s as f64),
        _ => 1.0,
    };
    // global_clipnorm's sums are l2_loss values, halves of the sums of squares.
    let doubled = if norms == NormSource::GlobalClipnorm && halved { 2.0 } else { 1.0 };
    let mut total = 0.0;
    let mut k = 0;
    for i in 0..entries.len() {
        let (variable, has_gradient) = entries.with_shape(i, |e| (e.variable, e.gradient.is_some()));
        if !has_gradient {
            continue;
        }
        if let Some(&sum) = sums.get(k) {
            built.gradient_norms[variable] = (sum * doubled).sqrt() * unscale;
            total += sum * doubled;
        }
        k += 1;
    }
    let (global_norm, clip_factor) = match (clipping, global_clip) {
        (Clipping::GlobalNorm(_), Some((norm, factor))) => (norm, factor),
        (Clipping::None, _) => (if norms == NormSource::None { f64::NAN } else { total.sqrt() * unscale }, 1.0),
        _ => (if norms == NormSource::None { f64::NAN } else { total.sqrt() * unscale }, f64::NAN),
    };
    StepReport { iterations, applied: true, loss_scale, global_norm, clip_factor, norms }
}

/// The guard's refusal of a call with a non-finite gradient: this process's first one, or (under
/// a mesh) another rank's.
pub(super) fn non_finite_rejection(
    built: &Built,
    entries: &mut CallEntries<'_>,
    local_bad: Option<NonFinite>,
) -> Error {
    Error::NonFiniteGradient(match local_bad {
        Some(bad) => {
            let variable = entries.with_shape(bad.entry, |e| e.variable);
            format!(
                "the gradient of variable {variable} (`{}`) holds {} at element {}; the call was rejected and nothing changed (reject_non_finite_gradients is on)",
                built.variables[variable].spec.name, bad.value, bad.element
            )
        }
        None => "a gradient on another rank of the mesh holds NaN or infinity; the call was rejected on every rank and nothing changed (reject_non_finite_gradients is on)".into(),
    })
}

/// The scalars of every variable with multipliers, in the dtype it computes in.
pub(super) fn own_scalars(built: &mut Built, step_hyper: &StepHyper) {
    for (i, multipliers) in built.multipliers.iter().enumerate() {
        if !multipliers.is_identity() {
            let layout = &built.variables[i].layout;
            let math = if layout.has_master() { DType::F32 } else { layout.dtype };
            built.variable_scalars[i] = VariableScalars::new(math, &multipliers.apply(step_hyper));
        }
    }
}

/// What every rank of a mesh must agree on for a call, hashed to 32 bits (so that the sum over
/// up to 2^20 ranks is exact in a double): every built variable's dtype, size and shard flag,
/// and each entry's variable and kind of gradient.
fn call_signature(built: &Built, entries: &mut CallEntries<'_>) -> u32 {
    const FNV_PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut mix = |x: u64| hash = (hash ^ x).wrapping_mul(FNV_PRIME);
    for v in &built.variables {
        mix(v.layout.values_dtype as u64);
        mix(v.layout.full_len as u64);
        mix(v.layout.sharded as u64);
    }
    for i in 0..entries.len() {
        let (variable, kind) = entries.with_shape(i, |entry| {
            let kind = match entry.gradient.map(|g| g.indices) {
                None => 0,
                Some(None) => 1,
                Some(Some(indices)) => 2 + indices.len() as u64,
            };
            (entry.variable, kind)
        });
        mix(variable as u64);
        mix(kind);
    }
    (hash ^ (hash >> 32)) as u32
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
pub(crate) fn apply_gradients(state: &mut State, entries: &mut CallEntries<'_>) -> Result<i64> {
    let step = state.iterations;
    if entries.len() == 0 {
        // Keras re-reads the learning rate even for an empty list, and does nothing else.
        state.current = hyper_at(&state.config, step)?;
        return Ok(step);
    }
    let config = &state.config;
    let built = state.built.as_mut().ok_or_else(|| not_built("apply_gradients"))?;
    let clipping = config.clipping();
    let dtypes = check_entries(built, entries, clipping)?;
    let loss_scale = config.loss_scale.map(|_| state.loss_scale);
    let dynamic_scale = config.loss_scale.filter(|l| l.dynamic);
    let checks_finite = config.reject_non_finite_gradients || dynamic_scale.is_some();
    let norm_clipping = matches!(clipping, Clipping::Norm(_) | Clipping::GlobalNorm(_));
    let halve = matches!(clipping, Clipping::GlobalNorm(_));
    // In one process the finite check rides along the norm pass: the norms are sums of squares
    // of the (unscaled) gradients, so finite sums prove every gradient finite, and only a
    // non-finite sum needs the search for the element (an overflowing sum of finite ones
    // finds none). The norms change nothing, so they may come before the checks.
    built.norm_partials.clear();
    built.norm_shared.clear();
    let norms_first = norm_clipping && config.mesh.is_none();
    if norms_first {
        state.engine.norm_partials(entries, halve, loss_scale, &mut built.norm_partials, &mut built.norm_shared)?;
    }
    let proven_finite = norms_first && built.norm_partials.iter().all(|s| s.is_finite());
    let local_bad =
        if checks_finite && !proven_finite { state.engine.find_non_finite(entries, loss_scale)? } else { None };
    let mut any_bad = local_bad.is_some();
    // Under a mesh the ranks first agree, in one all-reduce of three numbers: that they make the
    // same call, and whether any rank has a non-finite gradient (then every rank rejects or
    // skips, together).
    if let Some(mesh) = config.mesh.as_ref().filter(|_| checks_finite || norm_clipping) {
        let own = call_signature(built, entries) as f64;
        let mut header = [1.0, own, if any_bad { 1.0 } else { 0.0 }];
        mesh.all_reduce(&mut header)?;
        if header[1] != header[0] * own {
            return Err(Error::InvalidArgument(format!(
                "the {} ranks of the mesh made different calls: under a mesh apply_gradients is collective, and every rank must build the same variables (sharded alike) and list the same ones with the same kind of gradient",
                header[0]
            )));
        }
        any_bad = header[2] > 0.0;
    }
    if config.reject_non_finite_gradients && any_bad {
        return Err(non_finite_rejection(built, entries, local_bad));
    }
    // Keras updates a dynamic scale before the step; the new scale only unscales later steps, so
    // it is kept here and stored once the step has succeeded (a failed call changes nothing).
    let mut next_scale = None;
    if let Some(ls) = dynamic_scale {
        let finite = !any_bad;
        let next = next_loss_scale(state.loss_scale, state.loss_scale_counter, finite, ls.dynamic_growth_steps);
        if !finite {
            // Keras skips the inner step and only advances the counter (the learning rate it
            // reports is not re-read).
            let used_scale = state.loss_scale;
            (state.loss_scale, state.loss_scale_counter) = next;
            state.iterations += 1;
            built.gradient_norms.fill(f64::NAN);
            state.report =
                StepReport { iterations: state.iterations, loss_scale: Some(used_scale), ..StepReport::default() };
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
    if norm_clipping && !norms_first {
        if let Some(mesh) = &config.mesh
            && !built.leaves_known
        {
            // Once: which leaves of the sharded sums the ranks' shard boundaries split.
            let mut census = Vec::new();
            state.engine.leaf_census(halve, &mut census);
            mesh.all_reduce(&mut census)?;
            let room = state.engine.set_split_leaves(halve, &census)?;
            built
                .norm_shared
                .try_reserve_exact(room)
                .map_err(|_| Error::OutOfMemory("the sharded clip norms".into()))?;
            built.leaves_known = true;
        }
        state.engine.norm_partials(entries, halve, loss_scale, &mut built.norm_partials, &mut built.norm_shared)?;
        if let Some(mesh) = &config.mesh {
            mesh.all_reduce(&mut built.norm_shared)?;
            state.engine.finish_norms(entries, halve, &built.norm_shared, &mut built.norm_partials);
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
        keras3_average: false,
    };
    own_scalars(built, &step_hyper);
    let partials = &built.norm_partials;
    let plan = StepPlan {
        f32: dtypes.f32.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale, false)),
        f64: dtypes.f64.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale, false)),
        bf16: dtypes.bf16.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale, false)),
        f16: dtypes.f16.then(|| dtype_plan(&step_hyper, clipping, partials, loss_scale, false)),
        clipping,
        norm_partials: partials,
        decay: &built.decay,
        variable_scalars: &built.variable_scalars,
        overwrite_with_average: config.use_ema
            && config.ema_overwrite_frequency.is_some_and(|f| f > 0 && step.wrapping_add(1) % f == 0),
    };
    let update_pass_norms = state.report_norms && !norm_clipping;
    let squares = update_pass_norms.then(|| {
        built.report_squares.clear();
        built.report_squares.resize(partials.len().max(entries.len()), 0.0); // within build's room
        &mut built.report_squares[..]
    });
    state.engine.step(&plan, entries, squares)?;
    let global_clip = plan.global_clip();
    state.iterations += 1;
    state.report = report(built, entries, clipping, true, update_pass_norms, loss_scale, global_clip, state.iterations);
    state.current = hyper;
    if let Some(next) = next_scale {
        (state.loss_scale, state.loss_scale_counter) = next;
    }
    Ok(state.iterations)
}
