//! The AdamW math, written once, one line per line of Keras (docs/numerics.md §2–§5); the sums
//! the clips need are in [`crate::reduction`].
//!
//! Everything here is a pure function of its arguments: the step scalars and clips, computed once
//! per call on the host, and the element functions an engine runs over every element (the CPU
//! engine in `engine::cpu`). Every element is independent, so neither the engine nor the thread
//! count changes a bit. Numbers are [`Ftz`]: TF's flush-to-zero environment, no fused operations.

use crate::float::{Arith, Ftz, Real};

/// The scalars of one step for one dtype, computed once per `apply_gradients` call.
#[derive(Debug, Clone, Copy)]
pub struct StepScalars<F> {
    /// `tf.cast(learning_rate, dtype)`: the float32 rate, widened for float64.
    pub lr: Ftz<F>,
    /// `tf.cast(weight_decay, dtype)`.
    pub wd: Ftz<F>,
    /// `1 - beta_1`, `1 - beta_2`: Python subtractions, then rounded to the dtype.
    pub one_minus_beta_1: Ftz<F>,
    pub one_minus_beta_2: Ftz<F>,
    /// `lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`: both bias corrections folded into the step size.
    pub alpha: Ftz<F>,
    pub epsilon: Ftz<F>,
    pub ema_momentum: Ftz<F>,
    pub one_minus_ema_momentum: Ftz<F>,
}

/// The float64 hyper-parameters of one step, before rounding to a dtype.
#[derive(Debug, Clone, Copy)]
pub struct StepHyper {
    /// The float32 learning rate of this step (Keras keeps it in a float32 variable).
    pub learning_rate: f32,
    pub weight_decay: f64,
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
    pub ema_momentum: f64,
    /// Iterations before this step's increment.
    pub iterations: i64,
    /// Keras 3's moving average (with gradient accumulation, docs/numerics.md §25): the momentum
    /// is `cast(iterations != 0) * ema_momentum` in the dtype and its complement `1 - momentum`
    /// is taken in the dtype too; Keras 2 has no first-step case and takes `1 - ema_momentum`
    /// in Python's float64.
    pub keras3_average: bool,
}

/// A value as the type the loops compute with (exact).
fn load<F: Real>(x: Ftz<F>) -> Ftz<F::Math> {
    Ftz::new(x.get().load())
}

impl<F: Arith> StepScalars<F> {
    /// The same scalars with `f` applied to each (a change of type, e.g. into vector lanes).
    #[inline(always)]
    pub fn map<G: Arith>(&self, f: impl Fn(Ftz<F>) -> Ftz<G>) -> StepScalars<G> {
        StepScalars {
            lr: f(self.lr),
            wd: f(self.wd),
            one_minus_beta_1: f(self.one_minus_beta_1),
            one_minus_beta_2: f(self.one_minus_beta_2),
            alpha: f(self.alpha),
            epsilon: f(self.epsilon),
            ema_momentum: f(self.ema_momentum),
            one_minus_ema_momentum: f(self.one_minus_ema_momentum),
        }
    }
}

impl<F: Real> StepScalars<F> {
    /// The same scalars in the type the loops compute with (exact).
    pub fn to_math(self) -> StepScalars<F::Math> {
        self.map(load)
    }

    pub fn new(h: &StepHyper) -> Self {
        let one = Ftz::<F>::ONE;
        let lr = Ftz::new(F::from_f64(h.learning_rate as f64));
        // local_step = tf.cast(iterations + 1, dtype)
        let local_step = Ftz::new(F::from_i64(h.iterations.wrapping_add(1)));
        let beta_1_power = Ftz::new(F::cast(h.beta_1)).pow(local_step);
        let beta_2_power = Ftz::new(F::cast(h.beta_2)).pow(local_step);
        let (ema_momentum, one_minus_ema_momentum) = if h.keras3_average {
            // momentum = cast(not_first_step, dtype) * ema_momentum; 1 - momentum
            let not_first = if h.iterations != 0 { one } else { Ftz::ZERO };
            let momentum = not_first * Ftz::new(F::convert(h.ema_momentum));
            (momentum, one - momentum)
        } else {
            (Ftz::new(F::convert(h.ema_momentum)), Ftz::new(F::convert(1.0 - h.ema_momentum)))
        };
        StepScalars {
            lr,
            wd: Ftz::new(F::cast(h.weight_decay)),
            one_minus_beta_1: Ftz::new(F::convert(1.0 - h.beta_1)),
            one_minus_beta_2: Ftz::new(F::convert(1.0 - h.beta_2)),
            alpha: (lr * (one - beta_2_power).sqrt()) / (one - beta_1_power),
            epsilon: Ftz::new(F::convert(h.epsilon)),
            ema_momentum,
            one_minus_ema_momentum,
        }
    }
}

/// What happens to a variable this step besides the Adam update.
#[derive(Debug, Clone, Copy)]
pub struct VariableOps {
    /// Decoupled weight decay (false for excluded variables).
    pub decay: bool,
    /// The EMA overwrite falls on this step: the variable takes its average's value.
    pub overwrite_with_average: bool,
}

/// How this step's gradient is clipped, element by element, once its norm is known (docs/numerics.md §3).
#[derive(Debug, Clone, Copy)]
pub enum Clip<F> {
    None,
    /// `clip_by_norm`: `(g * clipnorm) / max(norm, clipnorm)`.
    ByNorm {
        clipnorm: Ftz<F>,
        divisor: Ftz<F>,
    },
    /// `clip_by_global_norm`: `g * scale`.
    ByGlobalNorm {
        scale: Ftz<F>,
    },
    /// `clip_by_value`: `max(min(g, clipvalue), -clipvalue)`.
    ByValue {
        high: Ftz<F>,
        low: Ftz<F>,
    },
}

impl<F: Arith> Clip<F> {
    /// The clip of one element; the loops run it as [`GradientOp::fused`].
    #[cfg(test)]
    pub fn apply<const HW: bool>(self, g: Ftz<F, HW>) -> Ftz<F, HW> {
        match self {
            Clip::None => g,
            Clip::ByNorm { clipnorm, divisor } => (g * clipnorm.mode()) / divisor.mode(),
            Clip::ByGlobalNorm { scale } => g * scale.mode(),
            Clip::ByValue { high, low } => g.min_nan(high.mode()).max_nan(low.mode()),
        }
    }
}

impl<F: Real> Clip<F> {
    /// The same clip in the type the loops compute with (exact).
    pub fn to_math(self) -> Clip<F::Math> {
        match self {
            Clip::None => Clip::None,
            Clip::ByNorm { clipnorm, divisor } => Clip::ByNorm { clipnorm: load(clipnorm), divisor: load(divisor) },
            Clip::ByGlobalNorm { scale } => Clip::ByGlobalNorm { scale: load(scale) },
            Clip::ByValue { high, low } => Clip::ByValue { high: load(high), low: load(low) },
        }
    }

    /// `tf.clip_by_norm(t, clipnorm)` for a tensor whose sum of squares is `l2sum`.
    pub fn by_norm(l2sum: Ftz<F>, clipnorm: f64) -> Self {
        // sqrt only of a positive sum: 0 stays 0 and NaN stays NaN.
        let l2norm = if l2sum > Ftz::ZERO { l2sum.sqrt() } else { l2sum };
        let clipnorm = Ftz::new(F::convert(clipnorm));
        Clip::ByNorm { clipnorm, divisor: l2norm.max_nan(clipnorm) }
    }

    /// `tf.clip_by_global_norm(grads, global_clipnorm)` given the sum of every tensor's `l2_loss`.
    pub fn by_global_norm(sum_of_half_squares: Ftz<F>, global_clipnorm: f64) -> Self {
        let use_norm = global_norm(sum_of_half_squares);
        let clip_norm = Ftz::new(F::convert(global_clipnorm));
        let scale = clip_norm * (Ftz::ONE / use_norm).min_nan(Ftz::ONE / clip_norm);
        // An infinite or NaN norm makes every gradient NaN (TF adds `use_norm - use_norm`).
        #[allow(clippy::eq_op)]
        let nan_if_not_finite = use_norm - use_norm;
        Clip::ByGlobalNorm { scale: scale + nan_if_not_finite }
    }

    /// Keras 3's `clip_by_global_norm` given the sum of every tensor's sum of squares: the norm
    /// is its square root, and `1.0 / clip_norm` is Python's float64 quotient rounded to the
    /// dtype (TF's divides in the dtype).
    pub fn by_global_norm_keras3(sum_of_squares: Ftz<F>, global_clipnorm: f64) -> Self {
        let use_norm = sum_of_squares.sqrt();
        let clip_norm = Ftz::new(F::convert(global_clipnorm));
        let inverse_clip = Ftz::new(F::convert(1.0 / global_clipnorm));
        let scale = clip_norm * (Ftz::ONE / use_norm).min_nan(inverse_clip);
        #[allow(clippy::eq_op)]
        let nan_if_not_finite = use_norm - use_norm;
        Clip::ByGlobalNorm { scale: scale + nan_if_not_finite }
    }

    pub fn by_value(clipvalue: f64) -> Self {
        Clip::ByValue { high: Ftz::new(F::convert(clipvalue)), low: Ftz::new(F::convert(-clipvalue)) }
    }
}

/// `clip_by_global_norm`'s `use_norm`: `sqrt(sum_of_half_squares * 2)`.
pub fn global_norm<F: Real>(sum_of_half_squares: Ftz<F>) -> Ftz<F> {
    (sum_of_half_squares * Ftz::new(F::from_f64(2.0))).sqrt()
}

/// What happens to a gradient element before the Adam step: the loss scaler's unscaling
/// (`g * cast(1 / loss_scale, dtype)`, Keras' `get_unscaled_gradients`), then the clip.
#[derive(Debug, Clone, Copy)]
pub struct GradientOp<F> {
    /// The reciprocal of the loss scale in the gradient's dtype, with loss scaling.
    pub unscale: Option<Ftz<F>>,
    pub clip: Clip<F>,
}

impl<F: Real> GradientOp<F> {
    /// The same op in the type the loops compute with (exact).
    pub fn to_math(self) -> GradientOp<F::Math> {
        GradientOp { unscale: self.unscale.map(load), clip: self.clip.to_math() }
    }
}

impl<F: Arith> GradientOp<F> {
    /// The op on one element; the loops run it as [`GradientOp::fused`].
    #[cfg(test)]
    pub fn apply<const HW: bool>(self, g: Ftz<F, HW>) -> Ftz<F, HW> {
        let g = match self.unscale {
            Some(reciprocal) => g * reciprocal.mode(),
            None => g,
        };
        self.clip.apply(g)
    }
}

impl<F: Arith> GradientOp<F> {
    /// The same op in one branch-free form, for loops that run it on every element.
    pub fn fused(self) -> FusedGradientOp<F> {
        let (one, inf) = (Ftz::ONE, Ftz::INFINITY);
        let r = self.unscale.unwrap_or(one);
        let (a, d, hi, lo) = match self.clip {
            Clip::None => (one, one, inf, -inf),
            Clip::ByNorm { clipnorm, divisor } => (clipnorm, divisor, inf, -inf),
            Clip::ByGlobalNorm { scale } => (scale, one, inf, -inf),
            Clip::ByValue { high, low } => (one, one, high, low),
        };
        FusedGradientOp { r, a, d, hi, lo }
    }
}

impl<F: Arith> GradientOp<F> {
    /// The op in the cheapest form that gives its bits, for loops compiled per form: a loss
    /// scale's unscaling and a global clip are multiplications only, a value clip has no
    /// division; only a per-tensor norm clip divides.
    pub fn form(self) -> GradientForm<F> {
        let one = Ftz::ONE;
        let r = self.unscale.unwrap_or(one);
        match self.clip {
            Clip::None if self.unscale.is_none() => GradientForm::Identity,
            Clip::None => GradientForm::Scale { r, a: one },
            Clip::ByGlobalNorm { scale } => GradientForm::Scale { r, a: scale },
            // `clamp` needs bounds that are numbers (a NaN bound makes every gradient NaN).
            Clip::ByValue { high, low } if !high.get().is_nan() && !low.get().is_nan() => {
                GradientForm::Clamp { r, hi: high, lo: low }
            }
            Clip::ByValue { .. } => GradientForm::Full(self.fused()),
            Clip::ByNorm { .. } => GradientForm::Full(self.fused()),
        }
    }
}

/// A [`GradientOp`] in one of the forms a loop is compiled for ([`GradientOp::form`]). Each is
/// [`FusedGradientOp`] with the parts it leaves out at their neutral values (one, ±infinity), so
/// the same bits: multiplying by one and taking the minimum with +infinity or the maximum with
/// -infinity give their operand.
#[derive(Debug, Clone, Copy)]
pub enum GradientForm<F> {
    Identity,
    /// `(g * r) * a`.
    Scale {
        r: Ftz<F>,
        a: Ftz<F>,
    },
    /// `max(min(g * r, hi), lo)`.
    Clamp {
        r: Ftz<F>,
        hi: Ftz<F>,
        lo: Ftz<F>,
    },
    Full(FusedGradientOp<F>),
}

impl<F: Arith> GradientForm<F> {
    /// The same op as a [`FusedGradientOp`], the parts the form leaves out at their neutral
    /// values: for loops compiled for that form only.
    pub fn fused(self) -> FusedGradientOp<F> {
        let (one, inf) = (Ftz::ONE, Ftz::INFINITY);
        match self {
            GradientForm::Identity => FusedGradientOp { r: one, a: one, d: one, hi: inf, lo: -inf },
            GradientForm::Scale { r, a } => FusedGradientOp { r, a, d: one, hi: inf, lo: -inf },
            GradientForm::Clamp { r, hi, lo } => FusedGradientOp { r, a: one, d: one, hi, lo },
            GradientForm::Full(fused) => fused,
        }
    }

    /// The op on one element (the loops inline each form's line of this).
    #[cfg(test)]
    pub fn apply<const HW: bool>(self, g: Ftz<F, HW>) -> Ftz<F, HW> {
        match self {
            GradientForm::Identity => g,
            GradientForm::Scale { r, a } => (g * r.mode()) * a.mode(),
            GradientForm::Clamp { r, hi, lo } => clamp(g * r.mode(), hi.mode(), lo.mode()),
            GradientForm::Full(fused) => fused.apply(g),
        }
    }
}

/// `tf.maximum(tf.minimum(x, hi), lo)` for bounds that are not NaN: `x` unless it lies beyond a
/// bound (a NaN `x` compares false and stays), in one comparison and selection per bound.
#[inline(always)]
pub fn clamp<F: Arith, const HW: bool>(x: Ftz<F, HW>, hi: Ftz<F, HW>, lo: Ftz<F, HW>) -> Ftz<F, HW> {
    x.clip_to(hi, lo)
}

/// A [`GradientOp`] as `max(min(((g * r) * a) / d, hi), lo)`, with the factors and bounds that
/// do nothing set to 1 and to ±infinity. Multiplying or dividing by 1 and taking the minimum
/// with +infinity or the maximum with -infinity give their operand exactly (a NaN stays NaN; a
/// subnormal operand is read as zero by the step's next operation either way), so these are the
/// bits of [`GradientOp::apply`], without a branch per element (tested against it).
#[derive(Debug, Clone, Copy)]
pub struct FusedGradientOp<F> {
    r: Ftz<F>,
    a: Ftz<F>,
    d: Ftz<F>,
    hi: Ftz<F>,
    lo: Ftz<F>,
}

impl<F: Arith> FusedGradientOp<F> {
    /// `[r, a, d, hi, lo]`, for loops that run the op in parts (the device kernels, the vector
    /// lanes).
    pub fn parts(&self) -> [Ftz<F>; 5] {
        [self.r, self.a, self.d, self.hi, self.lo]
    }

    #[inline(always)]
    pub fn apply<const HW: bool>(self, g: Ftz<F, HW>) -> Ftz<F, HW> {
        (((g * self.r.mode()) * self.a.mode()) / self.d.mode()).min_nan(self.hi.mode()).max_nan(self.lo.mode())
    }
}

/// `tf.cast(1.0 / loss_scale, dtype)`: the reciprocal in float32, then rounded to the dtype.
pub fn unscale_factor<F: Real>(loss_scale: f32) -> Ftz<F> {
    let reciprocal = Ftz::<f32>::ONE / Ftz::new(loss_scale);
    Ftz::new(F::from_f64(reciprocal.get() as f64))
}

/// The slots of one element that a step writes, after the moments are updated.
/// `vhat` and `average` are read only when amsgrad / EMA are on. `HW`: see [`Ftz`].
#[inline(always)]
pub fn finish_element<F: Arith, const AMSGRAD: bool, const EMA: bool, const HW: bool>(
    s: &StepScalars<F>,
    ops: VariableOps,
    mut var: Ftz<F, HW>,
    m: Ftz<F, HW>,
    v: Ftz<F, HW>,
    vhat: &mut F,
    average: &mut F,
) -> Ftz<F, HW> {
    let denominator_source = if AMSGRAD {
        let vh = Ftz::new(*vhat).max_nan(v); // vhat = maximum(vhat, v): raw v, NaN propagates
        *vhat = vh.get();
        vh
    } else {
        v
    };
    var = var - (m * s.alpha.mode()) / (denominator_source.sqrt() + s.epsilon.mode()); // epsilon-hat
    if EMA {
        let avg = moving_average(s, Ftz::new(*average), var);
        *average = avg.get();
        if ops.overwrite_with_average {
            var = avg;
        }
    }
    var
}

/// The EMA of one element: `(momentum * average) + ((1 - momentum) * var)`, `var` the value after
/// the step (and, outside a step, Keras 3's update of a variable the call did not step).
#[inline(always)]
pub fn moving_average<F: Arith, const HW: bool>(
    s: &StepScalars<F>,
    average: Ftz<F, HW>,
    var: Ftz<F, HW>,
) -> Ftz<F, HW> {
    s.ema_momentum.mode() * average + s.one_minus_ema_momentum.mode() * var
}

/// Keras 3's gradient accumulator after a call that only accumulates: `acc + g`.
#[inline(always)]
pub fn accumulated<F: Arith>(accumulator: Ftz<F>, gradient: Ftz<F>) -> Ftz<F> {
    accumulator + gradient
}

/// The gradient of Keras 3's update call: `(g + acc) / steps`, `steps` the number of calls
/// converted to the dtype (exact up to 2^24 in float32, 256 in bfloat16, 2048 in float16).
#[inline(always)]
pub fn averaged<F: Arith>(gradient: Ftz<F>, accumulator: Ftz<F>, steps: Ftz<F>) -> Ftz<F> {
    (gradient + accumulator) / steps
}

/// `v - ((v * wd) * lr)`: Keras' `_apply_weight_decay`, three roundings left to right.
#[inline(always)]
pub fn decay<F: Arith, const HW: bool>(s: &StepScalars<F>, ops: VariableOps, var: Ftz<F, HW>) -> Ftz<F, HW> {
    if ops.decay { var - var * s.wd.mode() * s.lr.mode() } else { var }
}

/// One element of the dense step.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn dense_element<F: Arith, const AMSGRAD: bool, const EMA: bool, const HW: bool>(
    s: &StepScalars<F>,
    ops: VariableOps,
    g: Ftz<F, HW>,
    var: &mut F,
    m: &mut F,
    v: &mut F,
    vhat: &mut F,
    average: &mut F,
) {
    let x = decay(s, ops, Ftz::new(*var));
    let mut mt = Ftz::new(*m);
    let mut vt = Ftz::new(*v);
    mt = mt + (g - mt) * s.one_minus_beta_1.mode(); // m.assign_add((g - m) * (1 - beta_1))
    vt = vt + (g * g - vt) * s.one_minus_beta_2.mode(); // v.assign_add((square(g) - v) * (1 - beta_2))
    *m = mt.get();
    *v = vt.get();
    *var = finish_element::<F, AMSGRAD, EMA, HW>(s, ops, x, mt, vt, vhat, average).get();
}

/// One element of the sparse step. `summed` is the deduplicated, clipped gradient of this
/// element's row, or `None` for a row without a gradient (which still decays and moves).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn sparse_element<F: Arith, const AMSGRAD: bool, const EMA: bool, const HW: bool>(
    s: &StepScalars<F>,
    ops: VariableOps,
    summed: Option<Ftz<F, HW>>,
    var: &mut F,
    m: &mut F,
    v: &mut F,
    vhat: &mut F,
    average: &mut F,
) {
    let x = decay(s, ops, Ftz::new(*var));
    let mut mt = Ftz::new(*m);
    let mut vt = Ftz::new(*v);
    let (c1, c2) = (s.one_minus_beta_1.mode(), s.one_minus_beta_2.mode());
    mt = mt + -mt * c1; // m.assign_add(-m * (1 - beta_1))
    vt = vt + -vt * c2; // v.assign_add(-v * (1 - beta_2))
    if let Some(g) = summed {
        mt = mt + g * c1; // m.scatter_add(values * (1 - beta_1))
        vt = vt + (g * g) * c2; // v.scatter_add(square(values) * (1 - beta_2))
    }
    *m = mt.get();
    *v = vt.get();
    *var = finish_element::<F, AMSGRAD, EMA, HW>(s, ops, x, mt, vt, vhat, average).get();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduction::{squares_sum, sum_eigen_in};

    /// The fused form gives `apply`'s bits for every op, on ordinary values, zeros of both
    /// signs, infinities, NaN and values that clip (in the explicit-flush form).
    #[test]
    fn fused_gradient_ops_are_the_ops() {
        let clips = [
            Clip::None,
            Clip::<f32>::by_norm(Ftz::new(9.0), 0.5),
            Clip::<f32>::by_norm(Ftz::new(0.01), 0.5),
            Clip::<f32>::by_global_norm(Ftz::new(3.0), 1.0),
            Clip::<f32>::by_value(0.25),
        ];
        let values = [0.1f32, -0.3, 0.0, -0.0, 7.5, -7.5, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-39, 3.0e38];
        for clip in clips {
            for unscale in [None, Some(unscale_factor::<f32>(1024.0)), Some(unscale_factor::<f32>(3.0))] {
                let op = GradientOp { unscale, clip };
                for &g in &values {
                    let (want, got) = (op.apply(Ftz::<f32>::new(g)).get(), op.fused().apply(Ftz::<f32>::new(g)).get());
                    assert!(
                        want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
                        "{op:?} on {g}: {want} vs {got}"
                    );
                }
            }
        }
    }

    /// Every compiled form gives the op's bits, and so does its fused op.
    #[test]
    fn gradient_forms_are_the_ops() {
        let clips = [
            Clip::None,
            Clip::<f32>::by_norm(Ftz::new(9.0), 0.5),
            Clip::<f32>::by_global_norm(Ftz::new(3.0), 1.0),
            Clip::<f32>::by_value(0.25),
            Clip::<f32>::by_value(0.0),
            Clip::<f32>::by_value(f64::NAN),
        ];
        let values = [0.1f32, -0.3, 0.0, -0.0, 7.5, -7.5, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-39, 3.0e38];
        for clip in clips {
            for unscale in [None, Some(unscale_factor::<f32>(1024.0)), Some(unscale_factor::<f32>(3.0))] {
                let op = GradientOp { unscale, clip };
                for &g in &values {
                    let g = Ftz::<f32>::new(g);
                    let want = op.apply(g);
                    // Each form as compiled for it, and as the one fused form the fallback loops run.
                    for got in [op.form().apply(g), op.form().fused().apply(g)] {
                        assert!(
                            want.get().to_bits() == got.get().to_bits() || (want.get().is_nan() && got.get().is_nan()),
                            "{op:?} on {g:?}: {want:?} vs {got:?}"
                        );
                    }
                }
            }
        }
    }

    /// With bounds that are numbers, the fused op's `tf.minimum` and `tf.maximum` are the value
    /// clip's comparisons (what the vector lanes run for the full fused op).
    #[test]
    fn nan_propagating_bounds_that_are_numbers_are_the_clip() {
        let values = [0.25f32, -0.25, 0.0, -0.0, 3.0, -3.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN];
        let bounds = [(0.25f32, -0.25f32), (0.0, -0.0), (-0.0, 0.0), (f32::INFINITY, f32::NEG_INFINITY), (-1.0, -2.0)];
        for &x in &values {
            for (hi, lo) in bounds {
                let x = Ftz::<f32>::new(x);
                let (hi, lo) = (Ftz::new(hi), Ftz::new(lo));
                let (fused, clip) = (x.min_nan(hi).max_nan(lo).get(), x.clip_to(hi, lo).get());
                assert_eq!(fused.to_bits(), clip.to_bits(), "{x:?} to ({hi:?}, {lo:?})");
            }
        }
    }

    #[test]
    fn global_norm_of_zero_gradients_keeps_them() {
        let clip = Clip::<f32>::by_global_norm(Ftz::ZERO, 1.0);
        assert_eq!(clip.apply(Ftz::<_>::new(0.25)).get(), 0.25);
    }

    #[test]
    fn clip_by_value_propagates_nan() {
        let clip = Clip::<f32>::by_value(0.5);
        assert!(clip.apply(Ftz::<_>::new(f32::NAN)).get().is_nan());
        assert_eq!(clip.apply(Ftz::<_>::new(3.0)).get(), 0.5);
        assert_eq!(clip.apply(Ftz::<_>::new(-3.0)).get(), -0.5);
    }

    /// Keras' own goldens (tf-keras `optimizer_test.py`: testClipNorm, testClipValue,
    /// testClipGlobalNorm).
    #[test]
    fn keras_clip_goldens() {
        let g = [100.0f32, 100.0];
        // clipnorm=1: [2**0.5 / 2] * 2
        let clip = Clip::<f32>::by_norm(squares_sum(&g, false), 1.0);
        let clipped: Vec<u32> = g.iter().map(|&x| clip.apply(Ftz::<_>::new(x)).get().to_bits()).collect();
        assert_eq!(clipped, [0x3f3504f3, 0x3f3504f3]);
        // clipvalue=1: [1.0, 1.0]
        let clip = Clip::<f32>::by_value(1.0);
        assert!(g.iter().all(|&x| clip.apply(Ftz::<_>::new(x)).get() == 1.0));
        // global_clipnorm=1 over two [100, 100] tensors: [0.5, 0.5] each
        let halves = [squares_sum(&g, true).get(), squares_sum(&g, true).get()];
        let clip = Clip::<f32>::by_global_norm(sum_eigen_in(&|i| Ftz::<_>::new(halves[i]), 0, 2), 1.0);
        assert!(g.iter().all(|&x| clip.apply(Ftz::<_>::new(x)).get() == 0.5));
    }
}
