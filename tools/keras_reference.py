#!/usr/bin/env python3
"""Keras reference replayer for libadamw's conformance trajectories.

Replays optimizer trajectories (see docs/trajectory_format.md) through the *reference*
implementation, ``tf_keras.optimizers.AdamW`` (the Keras 2 optimizer of tf-keras 2.15.1 on
tensorflow-cpu 2.15.1), eagerly on the CPU, and writes the results in the trajectory result format.
It also generates the conformance suite that lives in ``tests/conformance``.

Setup (a virtual environment OUTSIDE the repository; PyPI, a few minutes):

    python3 -m venv /tmp/venv-keras
    /tmp/venv-keras/bin/pip install tensorflow-cpu==2.15.1 tf-keras==2.15.1

Usage:

    # replay CASES.json and write the results to OUT.json
    /tmp/venv-keras/bin/python tools/keras_reference.py run CASES.json OUT.json [--only ID ...]

    # regenerate the conformance suite: writes OUTDIR/cases.json (deterministic, fixed seed),
    # then replays it into OUTDIR/expected.json; prints one line per case (id: description)
    /tmp/venv-keras/bin/python tools/keras_reference.py generate tests/conformance

    # print the generated case ids with their descriptions (does not import TensorFlow)
    /tmp/venv-keras/bin/python tools/keras_reference.py list

    # check the replayer against the smoke pair (must be 0 ulp; adamw-compare: cargo build --release)
    /tmp/venv-keras/bin/python tools/keras_reference.py run \\
        tests/conformance/smoke_cases.json /tmp/smoke_out.json
    target/release/adamw-compare tests/conformance/smoke_expected.json /tmp/smoke_out.json

Semantics of the replay (per case, with one fresh optimizer and fresh ``tf.Variable``s):

1. ``AdamW.from_config(config)`` builds the optimizer (a dict ``learning_rate`` is deserialized into a
   schedule). An exception here (or in steps 2-4) is reported as ``{"at": "config", ...}``.
2. ``exclude_from_weight_decay`` -> ``opt.exclude_from_weight_decay(var_list=..., var_names=...)``.
3. ``iterations`` -> ``opt.iterations = tf.Variable(N, dtype=tf.int64)`` (the setter Keras provides).
4. ``build_first`` -> ``opt.build(variables)``; otherwise the first ``apply_gradients`` builds.
5. Each step is one ``opt.apply_gradients(zip(grads, variables))`` (``null`` -> ``None``, a sparse
   gradient -> ``tf.IndexedSlices``) or ``{"op": "finalize"}`` -> ``opt.finalize_variable_values``.
   An exception inside a step stops the case and is reported with ``"at": STEP_INDEX``; the
   results of the steps before it are kept.
6. ``final.optimizer_variables`` is ``opt.variables`` in Keras order, EXCEPT that index 0 is the LIVE
   counter ``opt.iterations``: with a preset counter Keras' ``variables[0]`` is a stale counter that
   stays 0 (docs/numerics.md §15); libadamw keeps one counter, so we report the live one.

Numbers: every value is written as the exact float64 of the stored value (float32 -> the float64 of
the float32); NaN/+inf/-inf are the strings "NaN"/"Infinity"/"-Infinity" (accepted in inputs too).
Input values are Python floats handed to TF as nested lists, so TF converts them to the variable's
dtype (round to nearest, subnormals kept; the kernels then treat subnormals as zero, FTZ/DAZ).
"""

import argparse
import copy
import json
import math
import os
import sys
import time

# TensorFlow must see no GPU (jit_compile is then forced off and the CPU kernels are the reference)
# and must be quiet. Both must be set before TensorFlow is imported (lazily, see _tf()).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import numpy as np  # noqa: E402  (numpy comes with the venv)

_TF = None


def _tf():
    """Import TensorFlow and tf-keras once, silencing Keras' Python-side warnings."""
    global _TF
    if _TF is None:
        import logging

        import tensorflow as tf
        import tf_keras

        tf.get_logger().setLevel(logging.ERROR)
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass
        _TF = (tf, tf_keras)
    return _TF


# --------------------------------------------------------------------------------------------------
# Numbers and JSON
# --------------------------------------------------------------------------------------------------

_SPECIAL_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def num_in(x):
    """Parse one input number: a JSON number or one of the strings NaN/Infinity/-Infinity."""
    if isinstance(x, str):
        return _SPECIAL_IN[x]
    return float(x)


def flat_in(x):
    """Flatten a (possibly nested) list of input numbers to a flat list of Python floats."""
    if isinstance(x, list):
        out = []
        for e in x:
            out.extend(flat_in(e))
        return out
    return [num_in(x)]


def num_out(x):
    """One output number: a Python float (exact) or a special string for NaN/inf."""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def tensor_out(t):
    """A tensor (tf or numpy) as a flat row-major list of output numbers.

    ``ndarray.tolist()`` turns float32 elements into the Python float (float64) of the exact
    float32 value, and int64 counters into ints (converted to float like the reference data).
    """
    arr = np.asarray(t.numpy() if hasattr(t, "numpy") else t).ravel()
    return [num_out(v) for v in arr.tolist()]


def json_clean(obj):
    """get_config() output -> plain JSON values (numpy scalars unwrapped, exact floats, NaN strings)."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return num_out(obj)  # numpy float32 -> float64 of the exact float32 value
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)  # should not happen for AdamW configs


def dumps(obj, indent=0, width=110):
    """Compact but readable JSON: small containers and every list of plain numbers on one line."""
    flat = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    scalar_list = isinstance(obj, list) and all(not isinstance(e, (list, dict)) for e in obj)
    if len(flat) + indent <= width or scalar_list or not isinstance(obj, (list, dict)) or not obj:
        return flat
    pad = " " * (indent + 1)
    if isinstance(obj, list):
        items = [pad + dumps(e, indent + 1, width) for e in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [pad + json.dumps(k) + ":" + dumps(v, indent + 1, width) for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def write_json(path, obj):
    with open(path, "w") as f:
        f.write(dumps(obj))
        f.write("\n")


# --------------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------------

def _error(at, exc):
    return {"at": at, "type": type(exc).__name__, "message": str(exc)}


def make_variables(tf, specs):
    """Fresh tf.Variables from the case's variable specs (Keras name = NAME + ':0')."""
    out = []
    for spec in specs:
        dtype = {"float32": tf.float32, "float64": tf.float64, "bfloat16": tf.bfloat16, "float16": tf.float16}[
            spec["dtype"]
        ]
        shape = list(spec["shape"])
        values = flat_in(spec["value"])
        # A Python list of Python floats is converted by TF itself (static_cast per element, no
        # kernel), then reshaped (a byte copy); this is how a user's literal reaches the variable.
        init = tf.constant(values, dtype=dtype, shape=shape)
        out.append(tf.Variable(init, dtype=dtype, name=spec["name"]))
    return out


def make_gradient(tf, grad, var):
    """One gradient of the trajectory format -> None, a dense tf.Tensor or a tf.IndexedSlices."""
    if grad is None:
        return None
    shape = var.shape.as_list()
    if "dense" in grad:
        return tf.constant(flat_in(grad["dense"]), dtype=var.dtype, shape=shape)
    indices = [int(i) for i in grad["indices"]]
    values = flat_in(grad["values"])  # rows may be numbers (1-D variable) or nested lists
    vshape = [len(indices)] + shape[1:]
    return tf.IndexedSlices(
        values=tf.constant(values, dtype=var.dtype, shape=vshape),
        indices=tf.constant(indices, dtype=tf.int64),
        dense_shape=tf.constant(shape, dtype=tf.int64),
    )


def run_master_case(case):
    """A case with libadamw's ``master_weights``: by its contract, Keras' float32 trajectory from
    the widened initial values and gradients, each 16-bit variable reported as its master rounded
    to nearest even, and one master per 16-bit variable after Keras' optimizer variables."""
    import ml_dtypes

    np_dtype = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
    twin = copy.deepcopy(case)
    twin["config"] = {k: v for k, v in twin["config"].items() if k != "master_weights"}
    sixteen = [v["dtype"] if v["dtype"] in np_dtype else None for v in case["variables"]]
    for v in twin["variables"]:
        if v["dtype"] in np_dtype:
            v["dtype"] = "float32"
    result = run_case(twin)

    def rounded(values, dtype):
        if dtype is None:
            return values
        return [num_out(x) for x in np.asarray([num_in(x) for x in values], dtype=np.float32).astype(np_dtype[dtype])
                .astype(np.float64).tolist()]

    for step in result.get("steps", []):
        step["variables"] = [rounded(v, d) for v, d in zip(step["variables"], sixteen)]
    if "final" in result:
        final = result["final"]
        masters = [final_value for final_value, d in zip(result["_final_variables"], sixteen) if d is not None]
        final["optimizer_variables"] = final["optimizer_variables"] + masters
        # An AdamW option: in AdamW's own config, also inside a LossScaleOptimizer's.
        config = final["config"]
        if "inner_optimizer" in config:
            config = config["inner_optimizer"]["config"]
        config["master_weights"] = True
    result.pop("_final_variables", None)
    return result


def run_case(case):
    """Replay one case and return its result dict."""
    if case.get("config", {}).get("master_weights"):
        return run_master_case(case)
    tf, tf_keras = _tf()
    result = {"id": case.get("id")}
    variables = make_variables(tf, case["variables"])

    # --- optimizer construction and preparation: any exception here is a "config" error ---------
    try:
        # from_config deserializes a dict learning_rate IN PLACE, so give it a private copy.
        opt = tf_keras.optimizers.AdamW.from_config(copy.deepcopy(case.get("config", {})))
        # A loss-scaled case: Keras' LossScaleOptimizer around that AdamW (built directly: its
        # from_config cannot deserialize an AdamW in tf-keras 2.15.1).
        lso = None
        if case.get("loss_scale") is not None:
            lso = tf_keras.mixed_precision.LossScaleOptimizer(opt, **case["loss_scale"])
        excl = case.get("exclude_from_weight_decay")
        if excl is not None:
            var_list = [variables[i] for i in excl.get("variables", [])]
            opt.exclude_from_weight_decay(
                var_list=var_list or None, var_names=excl.get("var_names") or None
            )
        if case.get("iterations") is not None:
            # Keras' setter only rebinds opt._iterations (variables[0] stays the old counter).
            opt.iterations = tf.Variable(int(case["iterations"]), dtype=tf.int64)
        if case.get("build_first"):
            opt.build(variables)
    except Exception as exc:  # noqa: BLE001  (every Keras exception is data here)
        result["error"] = _error("config", exc)
        return result

    # --- steps -------------------------------------------------------------------------------------
    steps_out = []
    result["steps"] = steps_out
    for index, step in enumerate(case.get("steps", [])):
        if step.get("op") == "finalize":
            try:
                opt.finalize_variable_values(variables)
            except Exception as exc:  # noqa: BLE001
                result["error"] = _error(index, exc)
                return result
            steps_out.append({"op": "finalize", "variables": [tensor_out(v) for v in variables]})
            continue
        if "op" in step:
            raise ValueError(f"case {case.get('id')}: unknown step op {step['op']!r}")
        grads = step["grads"]
        if len(grads) != len(variables):
            raise ValueError(f"case {case.get('id')} step {index}: {len(grads)} grads for {len(variables)} variables")
        tf_grads = [make_gradient(tf, g, v) for g, v in zip(grads, variables)]
        try:
            if lso is not None:
                lso.apply_gradients(list(zip(lso.get_unscaled_gradients(tf_grads), variables)))
            else:
                opt.apply_gradients(list(zip(tf_grads, variables)))
        except Exception as exc:  # noqa: BLE001
            result["error"] = _error(index, exc)
            return result
        # For a schedule, opt.learning_rate is the variable holding schedule(pre-increment
        # iterations) of this call; for a float lr it is the float32 lr variable.
        step_out = {
            "iterations": int(opt.iterations.numpy()),
            "learning_rate": num_out(np.asarray(opt.learning_rate.numpy()).item()),
            "variables": [tensor_out(v) for v in variables],
        }
        if lso is not None:
            step_out["loss_scale"] = num_out(lso.loss_scale.numpy())
        steps_out.append(step_out)

    # --- final state -------------------------------------------------------------------------------
    opt_vars = [tensor_out(v) for v in opt.variables]
    # libadamw keeps ONE counter (docs/numerics.md §2.6): report the live counter as variables[0], not
    # Keras' stale variables[0] (they differ only when `iterations` was preset).
    opt_vars[0] = [float(opt.iterations.numpy())]
    result["final"] = {
        "iterations": int(opt.iterations.numpy()),
        "optimizer_variables": opt_vars,
        "config": json_clean((lso or opt).get_config()),
    }
    if lso is not None:
        counter = lso.dynamic_counter
        result["final"]["loss_scale"] = {
            "current_loss_scale": num_out(lso.loss_scale.numpy()),
            "counter": int(counter.numpy()) if counter is not None else 0,
        }
    # The variables' own final values, for run_master_case (which removes them).
    result["_final_variables"] = [tensor_out(v) for v in variables]
    return result


def run_file(cases_path, out_path, only=None):
    with open(cases_path) as f:
        cases = json.load(f)
    if only:
        cases = [c for c in cases if c.get("id") in set(only)]
    results = []
    for case in cases:
        result = run_case(case)
        result.pop("_final_variables", None)
        results.append(result)
    write_json(out_path, results)
    return results


# --------------------------------------------------------------------------------------------------
# Conformance-suite generator
# --------------------------------------------------------------------------------------------------

SEED = 20250611
SCHED_MODULE = "keras.optimizers.schedules"


def sched(class_name, **config):
    """A serialized learning-rate schedule as it appears in an optimizer config."""
    return {"module": SCHED_MODULE, "class_name": class_name, "config": config, "registered_name": None}


def _eigen_sum_f32(x, first=0, n=None, split=True):
    """float32 sum in the order of Eigen's full reducer on x86-64/AVX (docs/numerics.md §8).

    Used ONLY to pick big test tensors whose sum depends on that order (the expected values always
    come from TensorFlow itself). split=False is the plausible mistake of skipping the tree split.
    """
    f32 = np.float32
    n = len(x) if n is None else n
    if split and n > 8 * 1024:
        half = 8 * (-(-(first + -(-n // 2)) // 8))
        nl = min(half - first, n)
        acc = f32(0.0) + _eigen_sum_f32(x, first, nl)
        if nl < n:
            acc = f32(acc + _eigen_sum_f32(x, half, n - nl))
        return f32(acc)
    p = [np.zeros(8, f32) for _ in range(4)]
    start = 0
    if n >= 32:
        v4 = (n // 32) * 32
        for j in range(first, first + v4, 32):
            for q in range(4):
                p[q] = p[q] + x[j + 8 * q: j + 8 * q + 8]
        p[0] = p[0] + p[1]
        p[0] = p[0] + p[2]
        p[0] = p[0] + p[3]
        start = v4
    if start <= n - 8:
        vs = (n // 8) * 8
        for j in range(first + start, first + vs, 8):
            p[0] = p[0] + x[j: j + 8]
        start = vs
    acc = f32(0.0)
    for j in range(first + start, first + n):
        acc = f32(acc + x[j])
    s = [f32(p[0][i] + p[0][i + 4]) for i in range(4)]
    return f32(acc + f32(f32(s[0] + s[2]) + f32(s[1] + s[3])))


def _order_sensitive_f32(values):
    """True when sum(g*g) and l2_loss's sum((g*g)*0.5) of these float32 values come out differently
    in Eigen's order than both without the tree split and in plain sequential order."""
    g = np.asarray(values, dtype=np.float32)
    for terms in (g * g, (g * g) * np.float32(0.5)):
        ref = _eigen_sum_f32(terms)
        seq = np.float32(0.0)
        for t in terms[terms != 0]:
            seq = np.float32(seq + t)
        if ref == _eigen_sum_f32(terms, split=False) or ref == seq:
            return False
    return True


class Gen:
    """Deterministic builder of conformance cases (numpy RandomState with a fixed seed)."""

    def __init__(self, seed=SEED):
        self.rng = np.random.RandomState(seed)
        self.cases = []
        self.descriptions = {}

    # ---- random numbers with short decimal spellings (they are converted to the dtype by TF) ---
    def normal(self, n, scale=1.0, digits=4):
        return [round(float(x), digits) for x in self.rng.standard_normal(n) * scale]

    def values(self, shape, scale=1.0, digits=4):
        return self.normal(int(np.prod(shape, dtype=np.int64)), scale, digits)

    # ---- pieces -------------------------------------------------------------------------------
    def var(self, name, shape, dtype="float32", value=None, scale=1.0):
        value = self.values(shape, scale) if value is None else value
        assert len(value) == int(np.prod(shape, dtype=np.int64)), name
        return {"name": name, "dtype": dtype, "shape": list(shape), "value": value}

    def dense(self, var, scale=1.0, digits=4):
        return {"dense": self.values(var["shape"], scale, digits)}

    def sparse(self, var, indices, scale=1.0):
        row = int(np.prod(var["shape"][1:], dtype=np.int64))
        if len(var["shape"]) == 1:
            rows = self.normal(len(indices), scale)
        else:
            rows = [self.normal(row, scale) for _ in indices]
        return {"indices": list(indices), "values": rows}

    def dense_steps(self, variables, n, scale=1.0):
        return [{"grads": [self.dense(v, scale) for v in variables]} for _ in range(n)]

    def add(self, cid, desc, config, variables, steps, **extra):
        assert cid not in self.descriptions, cid
        case = {"id": cid, "config": config, "variables": variables}
        for key in ("exclude_from_weight_decay", "iterations", "build_first", "loss_scale"):
            if key in extra:
                case[key] = extra.pop(key)
        assert not extra, extra
        case["steps"] = steps
        self.cases.append(case)
        self.descriptions[cid] = desc

    def kb(self):
        """The usual two-variable model: dense/kernel [4,3] and dense/bias [3]."""
        return [self.var("dense/kernel", [4, 3]), self.var("dense/bias", [3], scale=0.1)]

    def positions(self, n, density):
        """Sorted random positions of the nonzero elements of a big, mostly-zero tensor."""
        k = max(1, int(n * density))
        return [int(p) for p in np.sort(self.rng.choice(n, size=k, replace=False))]

    def spread(self, k):
        """k numbers with magnitudes spread over ~2 decades (e^-4..e^1), random signs, 4 digits:
        with such a spread the float32 sum of their squares depends on the summation order."""
        mags = np.exp(self.rng.uniform(-4.0, 1.0, size=k)) * self.rng.choice([-1.0, 1.0], size=k)
        return [float("%.4g" % x) for x in mags]


def build_cases():
    """All conformance cases, in file order. Returns (cases, {id: description})."""
    g = Gen()

    # ---------------------------------------------------------------- defaults & hyperparameters
    x = g.var("x", [3], value=[0.5, -1.5, 2.0])
    g.add("defaults_dense", "AdamW() defaults, one [3] variable, 5 dense steps", {},
          [x], g.dense_steps([x], 5))
    kb = g.kb()
    g.add("defaults_kernel_bias", "AdamW() defaults, kernel [4,3] + bias [3], 6 dense steps", {},
          kb, g.dense_steps(kb, 6))
    kb = g.kb()
    g.add("lr_0p1_wd_0p2", "learning_rate=0.1, weight_decay=0.2: large decoupled decay", {"learning_rate": 0.1, "weight_decay": 0.2},
          kb, g.dense_steps(kb, 6))
    kb = g.kb()
    g.add("weight_decay_zero", "weight_decay=0.0 (decay still runs: v - (v*0)*lr)", {"learning_rate": 0.05, "weight_decay": 0.0},
          kb, g.dense_steps(kb, 5))
    kb = g.kb()
    g.add("weight_decay_negative", "weight_decay=-0.3 (accepted, grows the weights)", {"learning_rate": 0.05, "weight_decay": -0.3},
          kb, g.dense_steps(kb, 5))
    v = g.var("w", [2, 2], value=[1.0, "Infinity", -2.0, "-Infinity"])
    g.add("weight_decay_zero_inf_variable", "weight_decay=0 on a variable holding +-inf: inf - (inf*0)*lr = NaN",
          {"learning_rate": 0.01, "weight_decay": 0.0}, [v], g.dense_steps([v], 2))
    kb = g.kb()
    g.add("lr_int_1", "integer learning_rate=1 (stored as float32 1.0) and weight_decay=0.004", {"learning_rate": 1},
          kb, g.dense_steps(kb, 4))
    kb = g.kb()
    g.add("lr_zero", "learning_rate=0.0: no decay and no Adam movement, moments still update", {"learning_rate": 0.0},
          kb, g.dense_steps(kb, 3))
    kb = g.kb()
    g.add("lr_tiny_3e-5", "learning_rate=3e-5 (not float32-exact)", {"learning_rate": 3e-5, "weight_decay": 0.01},
          kb, g.dense_steps(kb, 4))
    kb = g.kb()
    g.add("beta_0p5_0p95", "beta_1=0.5, beta_2=0.95", {"learning_rate": 0.02, "beta_1": 0.5, "beta_2": 0.95},
          kb, g.dense_steps(kb, 8))
    kb = g.kb()
    g.add("beta_0p95_0p99", "beta_1=0.95, beta_2=0.99", {"learning_rate": 0.02, "beta_1": 0.95, "beta_2": 0.99},
          kb, g.dense_steps(kb, 8))
    kb = g.kb()
    g.add("beta_0p99_0p9999", "beta_1=0.99, beta_2=0.9999", {"learning_rate": 0.02, "beta_1": 0.99, "beta_2": 0.9999},
          kb, g.dense_steps(kb, 8))
    kb = g.kb()
    g.add("beta1_zero", "beta_1=0.0 (m is the last gradient), beta_2=0.9", {"learning_rate": 0.02, "beta_1": 0.0, "beta_2": 0.9},
          kb, g.dense_steps(kb, 5))
    kb = g.kb()
    g.add("epsilon_1e-3", "epsilon=1e-3", {"learning_rate": 0.02, "epsilon": 1e-3}, kb, g.dense_steps(kb, 5))
    v = g.var("w", [4], value=[0.5, -0.25, 1.0, 2.0])
    g.add("epsilon_zero_zero_grad", "epsilon=0 with zero gradient elements: 0/0 = NaN in those elements",
          {"learning_rate": 0.01, "epsilon": 0.0}, [v],
          [{"grads": [{"dense": [0.0, 0.3, 0.0, -0.2]}]}, {"grads": [{"dense": [0.1, 0.0, 0.0, 0.5]}]},
           {"grads": [{"dense": [0.0, 0.0, 0.0, 0.0]}]}])
    v = g.var("w", [3], value=[0.3, -0.7, 1.1])
    g.add("long_100_steps", "100 dense steps on a [3] variable (lr 0.01, wd 0.01)", {"learning_rate": 0.01, "weight_decay": 0.01},
          [v], g.dense_steps([v], 100))
    s = g.var("scalar", [], value=[1.5])
    t3 = g.var("t3", [2, 3, 4])
    g.add("scalar_and_3d", "a scalar variable (shape []) and a 3-D [2,3,4] variable, 5 steps", {"learning_rate": 0.03},
          [s, t3], g.dense_steps([s, t3], 5))
    s = g.var("scalar", [], value=[-0.75])
    g.add("scalar_only_build_first", "a single scalar variable, build_first, 4 steps", {"learning_rate": 0.1, "weight_decay": 0.1},
          [s], g.dense_steps([s], 4), build_first=True)
    kb = g.kb()
    g.add("build_first_true", "defaults with build_first=true (explicit opt.build before step 1)", {"learning_rate": 0.01},
          kb, g.dense_steps(kb, 4), build_first=True)
    kb = g.kb()
    g.add("build_first_false", "defaults with build_first=false (the first apply_gradients builds)", {"learning_rate": 0.01},
          kb, g.dense_steps(kb, 4), build_first=False)
    kb = g.kb()
    g.add("config_all_keys", "every config key given (name, jit_compile=true -> false, is_legacy_optimizer, ema off)",
          {"name": "my_adamw", "learning_rate": 0.004, "weight_decay": 0.02, "clipnorm": None, "global_clipnorm": None,
           "clipvalue": None, "use_ema": False, "ema_momentum": 0.5, "ema_overwrite_frequency": None, "jit_compile": True,
           "is_legacy_optimizer": False, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6, "amsgrad": False},
          kb, g.dense_steps(kb, 3))

    # ---------------------------------------------------------------------------- schedules
    def tiny():
        return [g.var("w", [3], scale=0.5)]

    vs = tiny()
    g.add("sched_exponential", "ExponentialDecay(0.1, decay_steps=4, decay_rate=0.7), 15 steps",
          {"learning_rate": sched("ExponentialDecay", initial_learning_rate=0.1, decay_steps=4, decay_rate=0.7,
                                  staircase=False, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 15))
    vs = tiny()
    g.add("sched_exponential_staircase", "ExponentialDecay staircase (0.1, 3, 0.5), 15 steps",
          {"learning_rate": sched("ExponentialDecay", initial_learning_rate=0.1, decay_steps=3, decay_rate=0.5,
                                  staircase=True, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 15))
    vs = tiny()
    g.add("sched_piecewise_int", "PiecewiseConstantDecay boundaries [3, 8, 12] (ints), 4 values, 16 steps",
          {"learning_rate": sched("PiecewiseConstantDecay", boundaries=[3, 8, 12], values=[0.1, 0.05, 0.02, 0.01], name=None),
           "weight_decay": 0.1}, vs, g.dense_steps(vs, 16))
    vs = tiny()
    g.add("sched_piecewise_float", "PiecewiseConstantDecay float boundaries [2.5, 7.9] (cast to int64: truncated to 2, 7), 12 steps",
          {"learning_rate": sched("PiecewiseConstantDecay", boundaries=[2.5, 7.9], values=[0.1, 0.03, 0.005], name=None),
           "weight_decay": 0.1}, vs, g.dense_steps(vs, 12))
    vs = tiny()
    g.add("sched_piecewise_int_values", "PiecewiseConstantDecay with Python-int values [1, 0] (an int32 lr tensor), boundary 2, 5 steps",
          {"learning_rate": sched("PiecewiseConstantDecay", boundaries=[2], values=[1, 0], name=None), "weight_decay": 0.01},
          vs, g.dense_steps(vs, 5, 0.1))
    vs = tiny()
    g.add("sched_polynomial_power2", "PolynomialDecay(0.1, 10, end 0.001, power=2, cycle=False), 15 steps (past the end)",
          {"learning_rate": sched("PolynomialDecay", initial_learning_rate=0.1, decay_steps=10, end_learning_rate=0.001,
                                  power=2.0, cycle=False, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 15))
    vs = tiny()
    g.add("sched_polynomial_cycle", "PolynomialDecay(0.1, 5, end 0.01, power=0.5, cycle=True), 20 steps",
          {"learning_rate": sched("PolynomialDecay", initial_learning_rate=0.1, decay_steps=5, end_learning_rate=0.01,
                                  power=0.5, cycle=True, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 20))
    vs = tiny()
    g.add("sched_polynomial_defaults", "PolynomialDecay(0.05, 7) with default end 1e-4, power 1, 10 steps",
          {"learning_rate": sched("PolynomialDecay", initial_learning_rate=0.05, decay_steps=7, end_learning_rate=0.0001,
                                  power=1.0, cycle=False, name=None)}, vs, g.dense_steps(vs, 10))
    vs = tiny()
    g.add("sched_inverse_time", "InverseTimeDecay(0.1, 3, 0.5), 15 steps",
          {"learning_rate": sched("InverseTimeDecay", initial_learning_rate=0.1, decay_steps=3, decay_rate=0.5,
                                  staircase=False, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 15))
    vs = tiny()
    g.add("sched_inverse_time_staircase", "InverseTimeDecay staircase (0.1, 4, 1.5), 15 steps",
          {"learning_rate": sched("InverseTimeDecay", initial_learning_rate=0.1, decay_steps=4, decay_rate=1.5,
                                  staircase=True, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 15))
    vs = tiny()
    g.add("sched_cosine_alpha", "CosineDecay(0.1, 12, alpha=0.1), no warmup, 18 steps (past the end)",
          {"learning_rate": sched("CosineDecay", initial_learning_rate=0.1, decay_steps=12, alpha=0.1, name=None,
                                  warmup_target=None, warmup_steps=0), "weight_decay": 0.1}, vs, g.dense_steps(vs, 18))
    vs = tiny()
    g.add("sched_cosine_warmup", "CosineDecay(0.01, 10, alpha=0.05, warmup_target=0.1, warmup_steps=5), 20 steps",
          {"learning_rate": sched("CosineDecay", initial_learning_rate=0.01, decay_steps=10, alpha=0.05, name=None,
                                  warmup_target=0.1, warmup_steps=5), "weight_decay": 0.1}, vs, g.dense_steps(vs, 20))
    vs = tiny()
    g.add("sched_cosine_restarts_tmul1", "CosineDecayRestarts(0.1, 5, t_mul=1.0, m_mul=0.7, alpha=0.05), 30 steps (5 restarts)",
          {"learning_rate": sched("CosineDecayRestarts", initial_learning_rate=0.1, first_decay_steps=5, t_mul=1.0,
                                  m_mul=0.7, alpha=0.05, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 30))
    vs = tiny()
    g.add("sched_cosine_restarts_tmul2", "CosineDecayRestarts(0.1, 3, t_mul=2.0, m_mul=0.8, alpha=0.1), 40 steps (restarts at 3, 9, 21)",
          {"learning_rate": sched("CosineDecayRestarts", initial_learning_rate=0.1, first_decay_steps=3, t_mul=2.0,
                                  m_mul=0.8, alpha=0.1, name=None), "weight_decay": 0.1}, vs, g.dense_steps(vs, 40))
    vs = tiny()
    g.add("sched_cosine_restarts_defaults", "CosineDecayRestarts(0.05, 4) defaults t_mul=2, m_mul=1, alpha=0, 16 steps",
          {"learning_rate": sched("CosineDecayRestarts", initial_learning_rate=0.05, first_decay_steps=4, t_mul=2.0,
                                  m_mul=1.0, alpha=0.0, name=None)}, vs, g.dense_steps(vs, 16))

    # ---------------------------------------------------------------------------- sparse
    emb = g.var("embedding", [8, 3])
    g.add("sparse_duplicates_untouched", "IndexedSlices on [8,3]: unsorted duplicate indices, untouched rows still decay and move",
          {"learning_rate": 0.05},
          [emb], [{"grads": [g.sparse(emb, idx)]} for idx in ([5, 1, 5, 2], [0, 0, 0], [7, 3, 1, 3, 7, 7], [2], [6, 4, 6])])
    e1 = g.var("emb1d", [10])
    g.add("sparse_1d", "IndexedSlices on a 1-D [10] variable (rows are numbers), duplicates", {"learning_rate": 0.05, "weight_decay": 0.05},
          [e1], [{"grads": [g.sparse(e1, idx)]} for idx in ([3, 9, 3], [0, 1, 2, 3], [9, 9], [5, 3, 5, 3])])
    t3 = g.var("table3d", [4, 2, 3])
    g.add("sparse_3d", "IndexedSlices on a 3-D [4,2,3] variable: each row is a nested [2,3] list; duplicates",
          {"learning_rate": 0.05}, [t3],
          [{"grads": [{"indices": idx, "values": [[g.normal(3), g.normal(3)] for _ in idx]}]} for idx in ([3, 0, 3], [1], [2, 2, 0])])
    emb = g.var("embedding", [6, 2])
    g.add("sparse_clipnorm", "IndexedSlices + clipnorm=0.5 (values clipped BEFORE dedup; duplicates count twice in the norm)",
          {"learning_rate": 0.05, "clipnorm": 0.5},
          [emb], [{"grads": [g.sparse(emb, idx, 1.5)]} for idx in ([1, 4, 1], [0, 0, 5], [2, 3, 2, 3], [5])])
    emb = g.var("embedding", [6, 2])
    kern = g.var("dense/kernel", [3, 2])
    g.add("sparse_global_clipnorm", "IndexedSlices [6,2] + dense [3,2] with global_clipnorm=1.0 (one norm over both)",
          {"learning_rate": 0.05, "global_clipnorm": 1.0},
          [emb, kern], [{"grads": [g.sparse(emb, idx, 1.5), g.dense(kern)]} for idx in ([1, 4, 1], [0, 0, 5], [2, 3, 2, 3], [5])])
    emb = g.var("embedding", [6, 2])
    g.add("sparse_clipvalue", "IndexedSlices + clipvalue=0.4: duplicates clipped before summing (summed row can exceed 0.4)",
          {"learning_rate": 0.05, "clipvalue": 0.4},
          [emb], [{"grads": [g.sparse(emb, idx, 1.0)]} for idx in ([1, 4, 1], [0, 0, 0, 5], [2, 3, 2, 3], [5, 5])])
    emb = g.var("embedding", [5, 2])
    kern = g.var("dense/kernel", [2, 3])
    steps = []
    for i in range(6):
        if i % 3 == 2:
            ge = g.dense(emb)  # the same variable receives a dense gradient at some steps
        else:
            ge = g.sparse(emb, [int(j) for j in g.rng.randint(0, 5, size=3)])
        steps.append({"grads": [ge, g.dense(kern)]})
    g.add("sparse_mixed_dense", "one step holds a sparse grad (embedding) and a dense grad (kernel); the embedding gets dense grads at steps 2, 5",
          {"learning_rate": 0.05, "weight_decay": 0.02}, [emb, kern], steps)
    emb = g.var("embedding", [6, 2])
    g.add("sparse_amsgrad", "IndexedSlices with amsgrad=True (vhat over all rows)", {"learning_rate": 0.05, "amsgrad": True},
          [emb], [{"grads": [g.sparse(emb, idx, s)]} for idx, s in (([1, 4, 1], 2.0), ([0, 1], 0.1), ([4, 4, 2], 1.0), ([3], 0.01), ([1, 2], 0.5))])
    emb = g.var("embedding", [5, 2])
    g.add("sparse_ema", "IndexedSlices with use_ema (momentum 0.8, overwrite every 2) then finalize",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": 2},
          [emb], [{"grads": [g.sparse(emb, idx)]} for idx in ([0, 2, 0], [4], [1, 1], [3, 0])] + [{"op": "finalize"}])

    # ---------------------------------------------------------------------------- EMA
    kb = g.kb()
    g.add("ema_no_overwrite", "use_ema=True, ema_momentum=0.9, no overwrite, 6 steps then finalize",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.9}, kb, g.dense_steps(kb, 6) + [{"op": "finalize"}])
    kb = g.kb()
    g.add("ema_default_momentum", "use_ema=True with default ema_momentum=0.99, 5 steps (no finalize)",
          {"learning_rate": 0.05, "use_ema": True}, kb, g.dense_steps(kb, 5))
    kb = g.kb()
    g.add("ema_overwrite_2_finalize", "use_ema, ema_momentum=0.7, overwrite every 2 steps, finalize at the end",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.7, "ema_overwrite_frequency": 2},
          kb, g.dense_steps(kb, 7) + [{"op": "finalize"}])
    kb = g.kb()
    g.add("ema_overwrite_1", "use_ema, ema_momentum=0.5, overwrite every step (frequency 1 is accepted)",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.5, "ema_overwrite_frequency": 1},
          kb, g.dense_steps(kb, 4))
    kb = g.kb()
    g.add("ema_overwrite_0", "use_ema with ema_overwrite_frequency=0 (treated as never)",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.6, "ema_overwrite_frequency": 0},
          kb, g.dense_steps(kb, 4))
    kb = g.kb()
    g.add("ema_finalize_midway", "use_ema momentum 0.8: finalize after step 3, then 3 more steps from the averaged values, finalize again",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.8},
          kb, g.dense_steps(kb, 3) + [{"op": "finalize"}] + g.dense_steps(kb, 3) + [{"op": "finalize"}])
    kb = g.kb()
    steps = g.dense_steps(kb, 6)
    steps[1]["grads"][1] = None
    steps[2]["grads"][0] = None
    steps[4]["grads"][1] = None
    g.add("ema_build_first_none_grads", "use_ema, build_first (averages copied at build), None grads at some steps (their averages and values stay), overwrite every 3",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.75, "ema_overwrite_frequency": 3},
          kb, steps + [{"op": "finalize"}], build_first=True)
    kb = g.kb()
    g.add("ema_momentum_1", "use_ema with ema_momentum=1.0 (averages frozen at the initial values), finalize",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 1.0}, kb, g.dense_steps(kb, 3) + [{"op": "finalize"}])
    kb = g.kb()
    g.add("ema_momentum_0", "use_ema with ema_momentum=0.0 (average = current value), overwrite every 2",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.0, "ema_overwrite_frequency": 2}, kb, g.dense_steps(kb, 4))
    kb = g.kb()
    g.add("ema_amsgrad_order", "use_ema + amsgrad: optimizer_variables order counter, averages, m/v pairs, vhats",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.9, "amsgrad": True}, kb, g.dense_steps(kb, 4))
    kb = g.kb()
    g.add("finalize_without_ema", "finalize_variable_values without EMA is a no-op", {"learning_rate": 0.05},
          kb, g.dense_steps(kb, 2) + [{"op": "finalize"}] + g.dense_steps(kb, 1))
    kb = g.kb()
    g.add("ema_off_momentum_out_of_range", "use_ema=False with ema_momentum=1.5 is accepted (only checked when use_ema)",
          {"learning_rate": 0.05, "use_ema": False, "ema_momentum": 1.5}, kb, g.dense_steps(kb, 2))

    # ---------------------------------------------------------------------------- clipping
    def clip_vars():
        return [g.var("dense/kernel", [4, 3]), g.var("dense/bias", [3], scale=0.1), g.var("scale", [])]

    vs = clip_vars()
    g.add("clipnorm", "clipnorm=0.5 per tensor, three variables (incl. a scalar), 5 steps",
          {"learning_rate": 0.02, "clipnorm": 0.5}, vs, g.dense_steps(vs, 5, 1.5))
    vs = clip_vars()
    g.add("clipnorm_no_clip", "clipnorm=100 (norm below the clip: still (g*c)/c, which may move a value 1 ulp)",
          {"learning_rate": 0.02, "clipnorm": 100.0}, vs, g.dense_steps(vs, 5))
    vs = clip_vars()
    g.add("clipnorm_zero_grad", "clipnorm=0.5 with an all-zero gradient tensor at some steps (norm 0)",
          {"learning_rate": 0.02, "clipnorm": 0.5}, vs,
          [{"grads": [g.dense(vs[0]), {"dense": [0.0, 0.0, 0.0]}, g.dense(vs[2])]}, {"grads": [{"dense": [0.0] * 12}, g.dense(vs[1]), {"dense": [0.0]}]},
           {"grads": [g.dense(vs[0]), g.dense(vs[1]), g.dense(vs[2])]}])
    vs = clip_vars()
    g.add("global_clipnorm", "global_clipnorm=1.0 over three variables, 5 steps",
          {"learning_rate": 0.02, "global_clipnorm": 1.0}, vs, g.dense_steps(vs, 5, 1.5))
    vs = clip_vars()
    g.add("global_clipnorm_no_clip", "global_clipnorm=100 (norm below: scale = GCN*(1/GCN) may differ from 1)",
          {"learning_rate": 0.02, "global_clipnorm": 100.0}, vs, g.dense_steps(vs, 5))
    vs = clip_vars()
    g.add("global_clipnorm_0p3_no_clip", "global_clipnorm=0.3 with tiny gradients (below the clip; 1/0.3 inexact)",
          {"learning_rate": 0.02, "global_clipnorm": 0.3}, vs, g.dense_steps(vs, 4, 0.01))
    vs = clip_vars()
    g.add("clipvalue", "clipvalue=0.3, three variables, 5 steps", {"learning_rate": 0.02, "clipvalue": 0.3}, vs, g.dense_steps(vs, 5))
    vs = clip_vars()
    g.add("clipvalue_no_clip", "clipvalue=10 (no element reaches it)", {"learning_rate": 0.02, "clipvalue": 10.0}, vs, g.dense_steps(vs, 4))
    vs = clip_vars()
    g.add("clipnorm_and_clipvalue", "clipnorm=0.5 together with clipvalue=0.01: clipvalue is silently ignored",
          {"learning_rate": 0.02, "clipnorm": 0.5, "clipvalue": 0.01}, vs, g.dense_steps(vs, 4, 1.5))
    vs = clip_vars()
    g.add("global_clipnorm_and_clipvalue", "global_clipnorm=1.0 together with clipvalue=0.01: clipvalue is silently ignored",
          {"learning_rate": 0.02, "global_clipnorm": 1.0, "clipvalue": 0.01}, vs, g.dense_steps(vs, 4, 1.5))
    vs = clip_vars()
    g.add("clip_nonpositive_clipnorm", "clipnorm=0.0 and clipvalue=-1.0: both mean no clipping",
          {"learning_rate": 0.02, "clipnorm": 0.0, "clipvalue": -1.0}, vs, g.dense_steps(vs, 3, 1.5))
    vs = clip_vars()
    g.add("clip_nonpositive_global", "global_clipnorm=-0.5 and clipvalue=0.0: no clipping",
          {"learning_rate": 0.02, "global_clipnorm": -0.5, "clipvalue": 0.0}, vs, g.dense_steps(vs, 3, 1.5))
    vs = clip_vars()
    g.add("clipnorm_negative_with_clipvalue", "clipnorm=-1.0 (disabled) so clipvalue=0.2 applies",
          {"learning_rate": 0.02, "clipnorm": -1.0, "clipvalue": 0.2}, vs, g.dense_steps(vs, 3, 1.5))

    # big tensors: Eigen's tree-shaped reduction (>8192 elements split recursively)
    def big_case(cid, desc, config, n_list, density, dtype="float32", nsteps=2):
        # Big 1-D tensors, zero except at a few percent of random positions (the zeros keep the
        # JSON small; the nonzeros, spread over the whole tensor, still make the sum order matter).
        variables, steps = [], [{"grads": []} for _ in range(nsteps)]
        for k, n in enumerate(n_list):
            pos = g.positions(n, density)  # the same positions at every step
            init = [0.0] * n
            for p, val in zip(pos, g.normal(len(pos), 0.5, 3)):
                init[p] = val
            variables.append({"name": f"big{k}_{n}", "dtype": dtype, "shape": [n], "value": init})
            for st in steps:
                # redraw (deterministically) until the sum order is visible in the result
                for _attempt in range(1000):
                    grad = [0.0] * n
                    for p, val in zip(pos, g.spread(len(pos))):
                        grad[p] = val
                    if dtype != "float32" or n <= 8 * 1024 or _order_sensitive_f32(grad):
                        break
                else:
                    raise RuntimeError(f"{cid}: no order-sensitive gradient found")
                st["grads"].append({"dense": grad})
        small = g.var("small", [3], dtype=dtype)
        variables.append(small)
        for st in steps:
            st["grads"].append(g.dense(small))
        g.add(cid, desc, config, variables, steps)

    big_case("clipnorm_big_9000_20000", "clipnorm=1.0 on [9000] and [20000] tensors (3% nonzero) + a [3], 2 steps; Eigen tree order",
             {"learning_rate": 0.01, "clipnorm": 1.0}, [9000, 20000], 0.03)
    big_case("global_clipnorm_big_9000_20000", "global_clipnorm=1.0 over [9000], [20000] and [3]; Eigen tree order in each l2_loss and the sum",
             {"learning_rate": 0.01, "global_clipnorm": 1.0}, [9000, 20000], 0.03)
    big_case("clipvalue_big_9000_20000", "clipvalue=0.5 on [9000] and [20000] tensors (+ [3]), 1 step (no reduction involved)",
             {"learning_rate": 0.01, "clipvalue": 0.5}, [9000, 20000], 0.03, nsteps=1)
    big_case("f64_clipnorm_big_9000", "float64 [9000] (+ [3]) with clipnorm=1.0 (double-precision Eigen reduction order)",
             {"learning_rate": 0.01, "clipnorm": 1.0}, [9000], 0.05, dtype="float64")

    # ---------------------------------------------------------------------------- amsgrad
    kb = g.kb()
    steps = [{"grads": [g.dense(kb[0], s), g.dense(kb[1], s)]} for s in (2.0, 0.1, 1.0, 0.05, 0.5, 0.01)]
    g.add("amsgrad_dense", "amsgrad=True, gradient scale alternating large/small so vhat != v", {"learning_rate": 0.02, "amsgrad": True},
          kb, steps)
    kb = g.kb()
    g.add("amsgrad_build_first", "amsgrad=True with build_first and a None grad", {"learning_rate": 0.02, "amsgrad": True},
          kb, [{"grads": [g.dense(kb[0], 1.0), g.dense(kb[1])]}, {"grads": [g.dense(kb[0], 0.1), None]},
               {"grads": [None, g.dense(kb[1], 0.01)]}, {"grads": [g.dense(kb[0], 0.5), g.dense(kb[1], 0.5)]}], build_first=True)

    # ---------------------------------------------------------------------------- exclusion
    def model4():
        return [g.var("dense/kernel", [3, 2]), g.var("dense/bias", [2], scale=0.5),
                g.var("dense_1/kernel", [2, 2]), g.var("dense_1/bias", [2], scale=0.5)]

    vs = model4()
    g.add("exclude_name_bias", "exclude_from_weight_decay(var_names=['bias'])", {"learning_rate": 0.1, "weight_decay": 0.2},
          vs, g.dense_steps(vs, 4), exclude_from_weight_decay={"var_names": ["bias"]})
    vs = model4()
    g.add("exclude_name_anchored", "var_names=['^dense/'] excludes dense/* but not dense_1/*", {"learning_rate": 0.1, "weight_decay": 0.2},
          vs, g.dense_steps(vs, 4), exclude_from_weight_decay={"var_names": ["^dense/"]})
    vs = model4()
    g.add("exclude_name_suffix", "var_names=['kernel:0$'] (regex searched in the full name with ':0')",
          {"learning_rate": 0.1, "weight_decay": 0.2}, vs, g.dense_steps(vs, 4),
          exclude_from_weight_decay={"var_names": ["kernel:0$"]})
    vs = model4()
    g.add("exclude_by_index", "exclude_from_weight_decay(var_list=[variables 0 and 3])", {"learning_rate": 0.1, "weight_decay": 0.2},
          vs, g.dense_steps(vs, 4), exclude_from_weight_decay={"variables": [0, 3]})
    vs = model4()
    g.add("exclude_both", "var_names=['_1/k'] and variables=[1] together, build_first", {"learning_rate": 0.1, "weight_decay": 0.2},
          vs, g.dense_steps(vs, 4), exclude_from_weight_decay={"var_names": ["_1/k"], "variables": [1]}, build_first=True)
    vs = model4()
    g.add("exclude_no_match", "var_names=['^bias'] matches nothing (search, not a match on the suffix)",
          {"learning_rate": 0.1, "weight_decay": 0.2}, vs, g.dense_steps(vs, 3), exclude_from_weight_decay={"var_names": ["^bias"]})

    # ---------------------------------------------------------------------------- None gradients
    vs = model4()
    steps = g.dense_steps(vs, 6)
    steps[0]["grads"][3] = None
    steps[1]["grads"][0] = None
    steps[1]["grads"][1] = None
    steps[3]["grads"][2] = None
    steps[4]["grads"][0] = None
    steps[4]["grads"][3] = None
    g.add("none_grads", "None gradients for some variables at some steps (no decay, no update, counter still advances)",
          {"learning_rate": 0.05, "weight_decay": 0.1}, vs, steps)
    vs = model4()
    steps = g.dense_steps(vs, 3)
    for st in steps:
        st["grads"][2] = None
    g.add("none_grads_never_built_slot", "a variable that never receives a gradient (slots stay zero, value untouched)",
          {"learning_rate": 0.05, "weight_decay": 0.1}, vs, steps)

    # ---------------------------------------------------------------------------- preset iterations
    kb = g.kb()
    g.add("preset_iterations_5", "iterations preset to 5 (bias correction from t=6); final counter 5+4",
          {"learning_rate": 0.05}, kb, g.dense_steps(kb, 4), iterations=5)
    kb = g.kb()
    g.add("preset_iterations_1000", "iterations preset to 1000 (float32 beta_1^t = 0.9^1001 underflows to 0, bias correction 1 - 0 = 1)",
          {"learning_rate": 0.05}, kb, g.dense_steps(kb, 3), iterations=1000)
    kb = g.kb()
    g.add("preset_iterations_5_schedule", "iterations=5 with ExponentialDecay(0.1, 2, 0.5): the schedule starts at step 5",
          {"learning_rate": sched("ExponentialDecay", initial_learning_rate=0.1, decay_steps=2, decay_rate=0.5,
                                  staircase=False, name=None)}, kb, g.dense_steps(kb, 4), iterations=5)
    kb = g.kb()
    g.add("preset_iterations_1000_cosine", "iterations=1000 with CosineDecay(0.1, 1003, alpha 0.2): crosses the end of the decay",
          {"learning_rate": sched("CosineDecay", initial_learning_rate=0.1, decay_steps=1003, alpha=0.2, name=None,
                                  warmup_target=None, warmup_steps=0)}, kb, g.dense_steps(kb, 5), iterations=1000)
    kb = g.kb()
    g.add("preset_iterations_5_ema_overwrite", "iterations=5 with EMA overwrite every 3: (iterations+1)%3 uses the live counter",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": 3},
          kb, g.dense_steps(kb, 5) + [{"op": "finalize"}], iterations=5)
    kb = g.kb()
    g.add("preset_iterations_7_build_first", "iterations=7 then build_first, amsgrad",
          {"learning_rate": 0.05, "amsgrad": True}, kb, g.dense_steps(kb, 3), iterations=7, build_first=True)
    kb = g.kb()
    g.add("preset_iterations_872_powf", "iterations=872, beta_2=0.999: step 1 uses t=873 where glibc powf != f32(pow f64)",
          {"learning_rate": 0.05}, kb, g.dense_steps(kb, 3), iterations=872)
    kb = g.kb()
    g.add("preset_iterations_55_beta1_0p95", "iterations=55, beta_1=0.95, beta_2=0.99: t=58 is a powf exception for 0.95",
          {"learning_rate": 0.05, "beta_1": 0.95, "beta_2": 0.99}, kb, g.dense_steps(kb, 5), iterations=55)
    kb = g.kb()
    g.add("preset_iterations_684_beta1_0p9", "iterations=684: t=685 is a powf exception for beta_1=0.9",
          {"learning_rate": 0.05}, kb, g.dense_steps(kb, 3), iterations=684)
    kb = g.kb()
    g.add("preset_iterations_0", "iterations explicitly preset to 0 (a fresh counter variable)", {"learning_rate": 0.05},
          kb, g.dense_steps(kb, 2), iterations=0)

    # ---------------------------------------------------------------------------- float64
    w = g.var("w64", [2, 3], dtype="float64")
    g.add("f64_dense", "float64 variable, dense, lr 0.01 (cast via float32), wd 0.004", {"learning_rate": 0.01},
          [w], g.dense_steps([w], 6))
    w = g.var("w64", [5], dtype="float64", value=[1.0, -1.0, 0.5, 2.0, -3.0])
    g.add("f64_spec_example", "float64 AdamW(0.1, weight_decay=0) on [1.0,...] (spec example: 0.9000012985311475)",
          {"learning_rate": 0.1, "weight_decay": 0.0}, [w], [{"grads": [{"dense": [0.5, 0.5, -0.25, 1.0, 0.0]}]}] + g.dense_steps([w], 2))
    e64 = g.var("emb64", [6, 2], dtype="float64")
    g.add("f64_sparse", "float64 IndexedSlices with duplicates", {"learning_rate": 0.05},
          [e64], [{"grads": [g.sparse(e64, idx)]} for idx in ([1, 4, 1], [0, 5], [2, 2, 2], [3])])
    w = g.var("w64", [4], dtype="float64")
    g.add("f64_amsgrad", "float64 amsgrad", {"learning_rate": 0.05, "amsgrad": True},
          [w], [{"grads": [g.dense(w, s)]} for s in (1.0, 0.1, 2.0, 0.01, 0.5)])
    w = g.var("w64", [2, 2], dtype="float64")
    g.add("f64_ema", "float64 with EMA (momentum 0.9, overwrite every 2) and finalize",
          {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 2},
          [w], g.dense_steps([w], 5) + [{"op": "finalize"}])
    w = g.var("w64", [2, 3], dtype="float64")
    g.add("f64_clipnorm", "float64 with clipnorm=0.5", {"learning_rate": 0.05, "clipnorm": 0.5}, [w], g.dense_steps([w], 4, 1.5))
    w = [g.var("w64", [2, 3], dtype="float64"), g.var("b64", [2], dtype="float64")]
    g.add("f64_global_clipnorm", "float64 (two variables) with global_clipnorm=0.7", {"learning_rate": 0.05, "global_clipnorm": 0.7},
          w, g.dense_steps(w, 4, 1.5))
    w = g.var("w64", [2, 3], dtype="float64")
    g.add("f64_clipvalue", "float64 with clipvalue=0.3 (bounds converted exactly to float64)", {"learning_rate": 0.05, "clipvalue": 0.3},
          [w], g.dense_steps([w], 4))
    w = g.var("w64", [3], dtype="float64")
    g.add("f64_schedule", "float64 variable with PiecewiseConstantDecay (float32 lr cast to float64)",
          {"learning_rate": sched("PiecewiseConstantDecay", boundaries=[2], values=[0.1, 0.03], name=None), "weight_decay": 0.05},
          [w], g.dense_steps([w], 5))
    w = g.var("w64", [3], dtype="float64")
    g.add("f64_betas_eps", "float64 with beta_1=0.8, beta_2=0.95, epsilon=1e-5, wd=0.3",
          {"learning_rate": 0.05, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-5, "weight_decay": 0.3}, [w], g.dense_steps([w], 5))
    mixed = [g.var("w32", [2, 2]), g.var("w64", [3], dtype="float64"), g.var("b32", [2])]
    g.add("mixed_f32_f64", "float32 and float64 variables in one optimizer (dense)", {"learning_rate": 0.05, "weight_decay": 0.02},
          mixed, g.dense_steps(mixed, 5))
    mixed = [g.var("w32", [2, 2]), g.var("w64", [3], dtype="float64")]
    g.add("mixed_f32_f64_clipnorm", "mixed float32/float64 with clipnorm=0.5", {"learning_rate": 0.05, "clipnorm": 0.5},
          mixed, g.dense_steps(mixed, 4, 1.5))
    mixed = [g.var("w32", [2, 2]), g.var("w64", [3], dtype="float64")]
    g.add("mixed_f32_f64_clipvalue", "mixed float32/float64 with clipvalue=0.3", {"learning_rate": 0.05, "clipvalue": 0.3},
          mixed, g.dense_steps(mixed, 4, 1.5))
    mixed = [g.var("emb32", [4, 2]), g.var("w64", [3], dtype="float64")]
    g.add("mixed_f32_f64_sparse_ema_amsgrad", "mixed float32 (sparse) / float64 (dense) with EMA and amsgrad",
          {"learning_rate": 0.05, "amsgrad": True, "use_ema": True, "ema_momentum": 0.9},
          mixed, [{"grads": [g.sparse(mixed[0], idx), g.dense(mixed[1])]} for idx in ([0, 3, 0], [2], [1, 1])])

    # ---------------------------------------------------------------------------- non-finite
    v = g.var("w", [2, 3])
    nf = [{"dense": [0.1, "NaN", -0.2, 0.3, 0.0, 0.5]}, {"dense": [0.2, 0.1, "Infinity", -0.1, 0.4, 0.2]},
          {"dense": [-0.3, 0.2, 0.1, "-Infinity", 0.1, -0.1]}, {"dense": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}]
    g.add("nonfinite_dense", "dense grads with NaN, +inf, -inf elements (element-wise NaN/inf propagation)",
          {"learning_rate": 0.05}, [v], [{"grads": [x]} for x in nf])
    v = [g.var("w", [2, 3]), g.var("b", [3])]
    g.add("nonfinite_clipnorm", "clipnorm=1.0: a NaN element makes the whole tensor NaN, an inf element gives 0 and NaN",
          {"learning_rate": 0.05, "clipnorm": 1.0}, v, [{"grads": [x, g.dense(v[1])]} for x in nf])
    v = [g.var("w", [2, 3]), g.var("b", [3])]
    g.add("nonfinite_global_clipnorm", "global_clipnorm=1.0 with a NaN/inf element: every gradient becomes NaN",
          {"learning_rate": 0.05, "global_clipnorm": 1.0}, v,
          [{"grads": [g.dense(v[0]), g.dense(v[1])]}, {"grads": [nf[1], g.dense(v[1])]}])
    v = [g.var("w", [2, 3]), g.var("b", [3])]
    g.add("nonfinite_global_clipnorm_nan", "global_clipnorm=1.0 with a NaN element",
          {"learning_rate": 0.05, "global_clipnorm": 1.0}, v, [{"grads": [nf[0], g.dense(v[1])]}])
    v = g.var("w", [2, 3])
    g.add("nonfinite_clipvalue", "clipvalue=0.25: NaN propagates, +-inf clipped to +-0.25",
          {"learning_rate": 0.05, "clipvalue": 0.25}, [v], [{"grads": [x]} for x in nf])
    v = g.var("w64", [2, 3], dtype="float64")
    g.add("nonfinite_f64", "float64 dense grads with NaN/inf", {"learning_rate": 0.05}, [v], [{"grads": [x]} for x in nf])

    # ---------------------------------------------------------------------------- subnormals (FTZ/DAZ)
    v = g.var("w", [6], value=[0.5, -0.5, 1.0, 1e-3, -2.0, 0.25])
    tiny_g = [{"dense": [1e-30, -1e-30, 1e-20, -1e-20, 1e-38, 5e-39]}] * 3
    g.add("subnormal_moments", "grads 1e-30, 1e-20, 1e-38: g*g underflows / is subnormal (flushed), 1e-38 input is itself subnormal (DAZ)",
          {"learning_rate": 0.01}, [v], [{"grads": [x]} for x in tiny_g])
    v = g.var("w", [6], value=[0.5, -0.5, 1.0, 1e-3, -2.0, 0.25])
    g.add("subnormal_moments_eps0", "as subnormal_moments with epsilon=0: flushed v=0 turns the update into +-inf or NaN",
          {"learning_rate": 0.01, "epsilon": 0.0}, [v], [{"grads": [x]} for x in tiny_g])
    v = g.var("w", [6], value=[0.5, -0.5, 1.0, 1e-3, -2.0, 0.25])
    g.add("subnormal_moments_eps_1e-30", "tiny grads with epsilon=1e-30",
          {"learning_rate": 0.01, "epsilon": 1e-30}, [v], [{"grads": [x]} for x in tiny_g])
    v = g.var("tiny", [6], value=[1e-38, -1e-38, 2e-38, 5e-39, 1.2e-38, -3e-38])
    frozen = g.var("frozen", [3], value=[1e-39, -1e-40, 1e-45])
    g.add("subnormal_variables", "variable values near 1e-38 (some subnormal) with wd: v*wd*lr flushes; a null-grad variable keeps its subnormals",
          {"learning_rate": 0.01, "weight_decay": 0.5}, [v, frozen],
          [{"grads": [{"dense": [1e-3, 0.0, -1e-3, 0.0, 1e-38, 0.0]}, None]}, {"grads": [{"dense": [0.0] * 6}, None]},
           {"grads": [{"dense": [1e-30, 1e-30, 0.0, 1e-20, 0.0, 1.0]}, None]}])
    v = g.var("w", [4], value=[1e-3, 2e-3, -1e-3, 1e-2])
    g.add("subnormal_long_zero_grads", "beta 0.5, eps 0, then 40 zero gradients: m, v halve each step; once v*C2 is subnormal it flushes, so v sticks just above 1.18e-38 (IEEE would keep shrinking)",
          {"learning_rate": 0.001, "beta_1": 0.5, "beta_2": 0.5, "epsilon": 0.0, "weight_decay": 0.0}, [v],
          [{"grads": [{"dense": [1e-10, 1e-15, -1e-12, 1e-5]}]}] + [{"grads": [{"dense": [0.0, 0.0, 0.0, 0.0]}]}] * 40)
    v = g.var("w64", [4], dtype="float64", value=[0.5, -0.5, 1.0, 2.0])
    g.add("f64_subnormal_moments_eps0", "float64 grads 1e-160 / 1e-310 with epsilon=0: g*g (subnormal) flushes, update becomes inf",
          {"learning_rate": 0.01, "epsilon": 0.0}, [v], [{"grads": [{"dense": [1e-160, -1e-170, 1e-310, 0.5]}]}] * 2)

    # ---------------------------------------------------------------------------- Keras' errors
    kb = g.kb()
    err_steps = g.dense_steps(kb, 1)
    g.add("error_clipnorm_and_global", "clipnorm=1.0 and global_clipnorm=1.0 together: ValueError at config",
          {"clipnorm": 1.0, "global_clipnorm": 1.0}, kb, err_steps)
    g.add("error_clipnorm_and_global_zero", "clipnorm=0.0 and global_clipnorm=0.0 (both 'not None'): ValueError at config",
          {"clipnorm": 0.0, "global_clipnorm": 0.0}, kb, err_steps)
    g.add("error_ema_momentum_1p5", "use_ema with ema_momentum=1.5: ValueError at config",
          {"use_ema": True, "ema_momentum": 1.5}, kb, err_steps)
    g.add("error_ema_momentum_negative", "use_ema with ema_momentum=-0.1: ValueError at config",
          {"use_ema": True, "ema_momentum": -0.1}, kb, err_steps)
    g.add("error_ema_overwrite_negative", "use_ema with ema_overwrite_frequency=-1: ValueError at config",
          {"use_ema": True, "ema_overwrite_frequency": -1}, kb, err_steps)
    g.add("error_ema_overwrite_float", "use_ema with ema_overwrite_frequency=2.5 (not an int): ValueError at config",
          {"use_ema": True, "ema_overwrite_frequency": 2.5}, kb, err_steps)
    g.add("error_weight_decay_none", "weight_decay=None: ValueError at config", {"weight_decay": None}, kb, err_steps)
    g.add("error_unknown_key", "unknown config key 'foo': TypeError at config", {"foo": 1}, kb, err_steps)
    g.add("error_decay_kwarg", "legacy kwarg 'decay': ValueError at config", {"decay": 0.1}, kb, err_steps)
    g.add("error_piecewise_lengths", "PiecewiseConstantDecay with len(boundaries) == len(values): ValueError at config",
          {"learning_rate": sched("PiecewiseConstantDecay", boundaries=[1, 2], values=[1.0, 2.0], name=None)}, kb, err_steps)
    kb = g.kb()
    steps = g.dense_steps(kb, 4)
    steps[2] = {"grads": [None, None]}
    g.add("error_all_grads_none_at_step_2", "every gradient null at step index 2: ValueError at 2 (steps 0, 1 listed)",
          {"learning_rate": 0.05}, kb, steps)
    return g.cases, g.descriptions


def build_16bit_cases():
    """The 16-bit suite: Keras' own bfloat16 and float16 semantics (slots in the variable's dtype,
    every operation rounded to it) for every feature, the clip norms included; float32 master
    weights (every mode); Keras' LossScaleOptimizer. Every input value is exactly a value of the
    dtype."""
    g = Gen(seed=SEED + 16)
    import ml_dtypes

    np_dtype = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}

    def exact(dtype, x):
        """x as TF stores a Python float in dtype (through float32), back as a Python float."""
        if isinstance(x, list):
            return [exact(dtype, e) for e in x]
        if isinstance(x, str):
            return x
        return float(np.asarray(np.float32(x)).astype(np_dtype[dtype]).astype(np.float64))

    def add(cid, desc, config, variables, steps, **extra):
        """Adds the case with every value of a 16-bit variable rounded to its dtype."""
        for v in variables:
            if v["dtype"] in np_dtype:
                v["value"] = exact(v["dtype"], v["value"])
        for step in steps:
            for grad, v in zip(step.get("grads", []), variables):
                if grad is None or v["dtype"] not in np_dtype:
                    continue
                for key in ("dense", "values"):
                    if key in grad:
                        grad[key] = exact(v["dtype"], grad[key])
        g.add(cid, desc, config, variables, steps, **extra)

    for dt in ("bfloat16", "float16"):
        def kb(scale=1.0):
            return [g.var("dense/kernel", [4, 3], dtype=dt, scale=scale), g.var("dense/bias", [3], dtype=dt, scale=0.1)]

        vs = kb()
        add(f"{dt}_defaults", f"{dt} AdamW() defaults, 6 steps", {}, vs, g.dense_steps(vs, 6))
        vs = kb()
        add(f"{dt}_lr_wd", f"{dt} learning_rate=0.05, weight_decay=0.1, beta_2=0.99, 8 steps",
            {"learning_rate": 0.05, "weight_decay": 0.1, "beta_2": 0.99}, vs, g.dense_steps(vs, 8))
        vs = kb()
        add(f"{dt}_amsgrad", f"{dt} amsgrad, 8 steps", {"learning_rate": 0.02, "amsgrad": True}, vs, g.dense_steps(vs, 8))
        vs = kb()
        add(f"{dt}_clipvalue", f"{dt} clipvalue=0.5 (element-wise)",
            {"learning_rate": 0.02, "beta_2": 0.99, "clipvalue": 0.5}, vs, g.dense_steps(vs, 5, scale=2.0))
        vs = kb()
        add(f"{dt}_ema_overwrite_finalize", f"{dt} use_ema (momentum 0.9, overwrite every 3), then finalize",
            {"learning_rate": 0.02, "use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 3}, vs,
            g.dense_steps(vs, 7) + [{"op": "finalize"}], build_first=True)
        vs = kb()
        add(f"{dt}_schedule_cosine_warmup", f"{dt} CosineDecay with warmup as learning rate, 10 steps",
            {"learning_rate": sched("CosineDecay", initial_learning_rate=0.01, decay_steps=8, alpha=0.1, name=None,
                                    warmup_target=0.05, warmup_steps=3)}, vs, g.dense_steps(vs, 10))
        vs = kb()
        add(f"{dt}_schedule_exponential", f"{dt} ExponentialDecay(0.05, 3, 0.8) as learning rate, 8 steps",
            {"learning_rate": sched("ExponentialDecay", initial_learning_rate=0.05, decay_steps=3, decay_rate=0.8,
                                    staircase=False, name=None)}, vs, g.dense_steps(vs, 8))
        emb = [g.var("embedding", [6, 2], dtype=dt)]
        add(f"{dt}_sparse_duplicates", f"{dt} sparse gradients with duplicate rows, untouched rows decay",
            {"learning_rate": 0.05}, emb,
            [{"grads": [g.sparse(emb[0], [1, 4, 1])]}, {"grads": [g.sparse(emb[0], [0, 0, 5, 2])]},
             {"grads": [g.sparse(emb[0], [3])]}, {"grads": [g.dense(emb[0])]}])
        vs = kb()
        add(f"{dt}_none_gradients", f"{dt} a None gradient on one variable in some steps",
            {"learning_rate": 0.02}, vs,
            [{"grads": [g.dense(vs[0]), None]}, {"grads": [g.dense(vs[0]), g.dense(vs[1])]}, {"grads": [None, g.dense(vs[1])]}])
        vs = kb()
        add(f"{dt}_exclude_bias", f"{dt} bias excluded from weight decay by name", {"learning_rate": 0.02, "weight_decay": 0.2},
            vs, g.dense_steps(vs, 4), exclude_from_weight_decay={"var_names": ["bias"]})
        # The step count in 16 bits: bfloat16 holds integers exactly only up to 256, float16 up to 2048.
        for preset in (300, 2500):
            vs = kb()
            add(f"{dt}_preset_iterations_{preset}", f"{dt} iterations preset to {preset}: the cast step rounds in {dt}",
                {"learning_rate": 0.01}, vs, g.dense_steps(vs, 5), iterations=preset)
        vs = kb()
        steps = g.dense_steps(vs, 4)
        steps[1]["grads"][0]["dense"][2] = "NaN"
        steps[2]["grads"][1]["dense"][0] = "Infinity"
        add(f"{dt}_non_finite_gradients", f"{dt} NaN and infinite gradient elements propagate", {"learning_rate": 0.02}, vs, steps)
    # float32 master weights (libadamw's extension): Keras' float32 trajectory, rounded.
    for dt in ("bfloat16", "float16"):
        def kb(scale=1.0):
            return [g.var("dense/kernel", [4, 3], dtype=dt, scale=scale), g.var("dense/bias", [3], dtype=dt, scale=0.1)]

        def master(config):
            return dict(config, master_weights=True)

        vs = kb()
        add(f"master_{dt}_defaults", f"{dt} with float32 master weights, AdamW() defaults, 6 steps", master({}), vs,
            g.dense_steps(vs, 6))
        for name, clip in (("clipnorm", {"clipnorm": 1.0}), ("global_clipnorm", {"global_clipnorm": 1.5}),
                           ("clipvalue", {"clipvalue": 0.5})):
            vs = kb()
            add(f"master_{dt}_{name}", f"{dt} with float32 master weights and {name}", master(dict(clip, learning_rate=0.02)),
                vs, g.dense_steps(vs, 5, scale=2.0))
        vs = kb()
        add(f"master_{dt}_amsgrad", f"{dt} with float32 master weights and amsgrad", master({"learning_rate": 0.02, "amsgrad": True}),
            vs, g.dense_steps(vs, 6))
        vs = kb()
        add(f"master_{dt}_ema_overwrite_finalize", f"{dt} with float32 master weights, EMA with overwrite, finalize",
            master({"learning_rate": 0.02, "use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 3}), vs,
            g.dense_steps(vs, 7) + [{"op": "finalize"}], build_first=True)
        emb = [g.var("embedding", [6, 2], dtype=dt)]
        add(f"master_{dt}_sparse_duplicates", f"{dt} with float32 master weights, sparse gradients with duplicates",
            master({"learning_rate": 0.05}), emb,
            [{"grads": [g.sparse(emb[0], [1, 4, 1])]}, {"grads": [g.sparse(emb[0], [0, 0, 5, 2])]}, {"grads": [g.dense(emb[0])]}])
        vs = kb()
        add(f"master_{dt}_none_and_schedule", f"{dt} with float32 master weights, None gradients and ExponentialDecay",
            master({"learning_rate": sched("ExponentialDecay", initial_learning_rate=0.05, decay_steps=2, decay_rate=0.7,
                                           staircase=False, name=None)}), vs,
            [{"grads": [g.dense(vs[0]), None]}, {"grads": [g.dense(vs[0]), g.dense(vs[1])]}, {"grads": [None, g.dense(vs[1])]}])
        vs = kb()
        add(f"master_{dt}_preset_iterations_2500", f"{dt} with float32 master weights, iterations preset to 2500 (float32 step count)",
            master({"learning_rate": 0.01}), vs, g.dense_steps(vs, 4), iterations=2500)
        vs = kb()
        steps = g.dense_steps(vs, 3)
        steps[1]["grads"][0]["dense"][4] = "NaN"
        add(f"master_{dt}_non_finite_gradients", f"{dt} with float32 master weights, a NaN gradient element",
            master({"learning_rate": 0.02}), vs, steps)
    vs = [g.var("dense/kernel", [4, 3]), g.var("dense/bias", [3], dtype="bfloat16", scale=0.1)]
    add("master_mixed_float32_and_bfloat16", "a float32 kernel (no master) and a bfloat16 bias with a float32 master, global_clipnorm",
        {"learning_rate": 0.02, "global_clipnorm": 1.0, "master_weights": True}, vs, g.dense_steps(vs, 5))
    # Keras' LossScaleOptimizer around AdamW: the gradients are scaled ones.
    def scaled_steps(variables, n, scale, bad=()):
        steps = g.dense_steps(variables, n, scale)
        for step_index, var_index, element, value in bad:
            steps[step_index]["grads"][var_index]["dense"][element] = value
        return steps

    vs = [g.var("w", [6])]
    add("loss_scale_float32_growth_and_backoff", "float32, dynamic scale 4096, growth every 3 steps, inf and NaN steps skipped",
        {"learning_rate": 0.01}, vs, scaled_steps(vs, 9, 3000.0, [(3, 0, 1, "Infinity"), (6, 0, 4, "NaN")]),
        loss_scale={"dynamic": True, "initial_scale": 4096.0, "dynamic_growth_steps": 3})
    vs = [g.var("w", [6])]
    add("loss_scale_float32_fixed_3", "float32, fixed scale 3.0 (1/3 is not exact: g * f32(1/3), not g / 3)",
        {"learning_rate": 0.01}, vs, scaled_steps(vs, 4, 3.0), loss_scale={"dynamic": False, "initial_scale": 3.0})
    vs = g.kb()
    add("loss_scale_clipnorm_global", "float32, dynamic scale with global_clipnorm on the unscaled gradients",
        {"learning_rate": 0.02, "global_clipnorm": 0.5}, vs, scaled_steps(vs, 5, 500.0, [(2, 1, 0, "-Infinity")]),
        loss_scale={"dynamic": True, "initial_scale": 1024.0, "dynamic_growth_steps": 2})
    vs = [g.var("w", [4], value=[0.5, -1.0, 1.5, 2.0])]
    add("loss_scale_ema_schedule_skip", "float32, EMA with overwrite and ExponentialDecay: a skipped step advances the counter only",
        {"learning_rate": sched("ExponentialDecay", initial_learning_rate=0.05, decay_steps=1, decay_rate=0.5, staircase=False,
                                name=None), "use_ema": True, "ema_momentum": 0.5, "ema_overwrite_frequency": 2}, vs,
        scaled_steps(vs, 6, 100.0, [(1, 0, 0, "Infinity"), (4, 0, 2, "NaN")]) + [{"op": "finalize"}],
        loss_scale={"dynamic": True, "initial_scale": 256.0, "dynamic_growth_steps": 10}, build_first=True)
    emb = [g.var("embedding", [5, 2])]
    steps = [{"grads": [g.sparse(emb[0], [1, 3, 1], 200.0)]} for _ in range(4)]
    steps[2]["grads"][0]["values"][1][0] = "NaN"
    add("loss_scale_sparse", "float32 sparse gradients with duplicates, scaled; a NaN row skips the step",
        {"learning_rate": 0.05}, emb, steps, loss_scale={"dynamic": True, "initial_scale": 512.0, "dynamic_growth_steps": 2})
    for dt in ("float16", "bfloat16"):
        vs = [g.var("w", [4], dtype=dt, value=[0.5, -1.0, 1.5, 2.0])]
        add(f"loss_scale_{dt}", f"{dt} variable and gradients, dynamic scale 1024: large scaled gradients overflow {dt}",
            {"learning_rate": 0.01, "beta_2": 0.99}, vs,
            [{"grads": [{"dense": [100.0, -200.0, 50.0, 25.0]}]}, {"grads": [{"dense": [60000.0, 1.0, 2.0, 3.0]}]},
             {"grads": [{"dense": ["Infinity", 1.0, 2.0, 3.0]}]}, {"grads": [{"dense": [100.0, -200.0, 50.0, 25.0]}]},
             {"grads": [{"dense": [10.0, 20.0, 30.0, 40.0]}]}],
            loss_scale={"dynamic": True, "initial_scale": 1024.0, "dynamic_growth_steps": 2})
        vs = [g.var("w", [4], dtype=dt, value=[0.5, -1.0, 1.5, 2.0])]
        add(f"loss_scale_master_{dt}", f"{dt} with float32 master weights and a dynamic scale (unscaled in float32)",
            {"learning_rate": 0.01, "master_weights": True}, vs,
            [{"grads": [{"dense": [100.0, -200.0, 50.0, 25.0]}]}, {"grads": [{"dense": ["NaN", 1.0, 2.0, 3.0]}]},
             {"grads": [{"dense": [100.0, -200.0, 50.0, 25.0]}]}, {"grads": [{"dense": [10.0, 20.0, 30.0, 40.0]}]}],
            loss_scale={"dynamic": True, "initial_scale": 64.0, "dynamic_growth_steps": 2})
    # float16's own edges: subnormal values and gradients, and gradients whose square overflows.
    vs = [g.var("w", [6], dtype="float16", value=[3e-6, -5e-7, 6e-5, 1e-4, -2e-8, 0.5])]
    add("float16_subnormals", "float16 subnormal values and gradients (float16 keeps them)", {"learning_rate": 1e-4, "epsilon": 1e-4},
        vs, [{"grads": [{"dense": [1e-6, -3e-7, 2e-5, -4e-6, 5e-8, 1e-7]}]} for _ in range(4)])
    vs = [g.var("w", [5], dtype="float16", value=[1.0, -2.0, 0.5, 3.0, -1.0])]
    add("float16_overflow", "float16 gradients of 300 and 60000: g*g overflows to inf, so v does",
        {"learning_rate": 0.01}, vs,
        [{"grads": [{"dense": [300.0, -60000.0, 0.5, 256.0, -1.0]}]}, {"grads": [{"dense": [1.0, 2.0, -65504.0, 0.25, 3.0]}]},
         {"grads": [{"dense": [0.1, 0.1, 0.1, 0.1, 0.1]}]}])
    vs = [g.var("w", [4], dtype="float16", value=[1.0, 2.0, 3.0, 4.0])]
    add("float16_preset_iterations_70000", "float16 iterations preset to 70000: the cast step is inf, beta^inf = 0",
        {"learning_rate": 0.01}, vs, g.dense_steps(vs, 3), iterations=70000)
    # The clip norms in Keras' 16-bit semantics: tf.reduce_sum sums bfloat16 in float32 and
    # float16 in float16 (Eigen's leaves of 200 packets), tf.nn.l2_loss sums both in their own
    # dtype (bfloat16's leaves of 128 packets); Eigen adds a packet's lanes in float32.
    for dt in ("bfloat16", "float16"):
        def kb(scale=1.0):
            return [g.var("dense/kernel", [4, 3], dtype=dt, scale=scale), g.var("dense/bias", [3], dtype=dt, scale=0.1)]

        vs = kb()
        add(f"{dt}_clipnorm", f"{dt} clipnorm=1.0 per tensor, 5 steps", {"learning_rate": 0.02, "clipnorm": 1.0}, vs,
            g.dense_steps(vs, 5, scale=2.0))
        vs = kb()
        add(f"{dt}_clipnorm_no_clip", f"{dt} clipnorm=100 (the norm below the clip: still (g*c)/c in {dt})",
            {"learning_rate": 0.02, "clipnorm": 100.0}, vs, g.dense_steps(vs, 4))
        vs = kb()
        add(f"{dt}_global_clipnorm", f"{dt} global_clipnorm=1.5 over both tensors, 5 steps",
            {"learning_rate": 0.02, "global_clipnorm": 1.5}, vs, g.dense_steps(vs, 5, scale=2.0))
        vs = [g.var("dense/kernel", [40, 64], dtype=dt, scale=0.1), g.var("dense_1/kernel", [30, 100], dtype=dt, scale=0.1),
              g.var("dense/bias", [7], dtype=dt, scale=0.1)]
        add(f"{dt}_clipnorm_large", f"{dt} clipnorm=1.0 on 2560 and 3000 elements (Eigen's trees of 16-bit leaves)",
            {"learning_rate": 0.01, "clipnorm": 1.0}, vs, g.dense_steps(vs, 2, scale=0.3))
        vs = [g.var("dense/kernel", [40, 64], dtype=dt, scale=0.1), g.var("dense_1/kernel", [30, 100], dtype=dt, scale=0.1),
              g.var("dense/bias", [7], dtype=dt, scale=0.1)]
        add(f"{dt}_global_clipnorm_large", f"{dt} global_clipnorm=2.0 over 2560, 3000 and 7 elements",
            {"learning_rate": 0.01, "global_clipnorm": 2.0}, vs, g.dense_steps(vs, 2, scale=0.3))
        emb = [g.var("embedding", [6, 2], dtype=dt), g.var("dense/bias", [3], dtype=dt, scale=0.1)]
        add(f"{dt}_sparse_clipnorm", f"{dt} IndexedSlices with duplicates and clipnorm=0.5 (clipped before the sum)",
            {"learning_rate": 0.05, "clipnorm": 0.5}, emb,
            [{"grads": [g.sparse(emb[0], [1, 4, 1], 2.0), g.dense(emb[1])]},
             {"grads": [g.sparse(emb[0], [0, 0, 5, 2], 2.0), g.dense(emb[1])]}])
        emb = [g.var("embedding", [6, 2], dtype=dt), g.var("dense/bias", [3], dtype=dt, scale=0.1)]
        add(f"{dt}_sparse_global_clipnorm", f"{dt} IndexedSlices with duplicates and a dense bias, global_clipnorm=1.0",
            {"learning_rate": 0.05, "global_clipnorm": 1.0}, emb,
            [{"grads": [g.sparse(emb[0], [1, 4, 1], 2.0), g.dense(emb[1])]},
             {"grads": [g.sparse(emb[0], [0, 0, 5, 2], 2.0), g.dense(emb[1])]}])
        vs = kb()
        add(f"loss_scale_{dt}_clipnorm", f"{dt} with a dynamic loss scale, clipnorm=1.0 on the unscaled gradients",
            {"learning_rate": 0.02, "clipnorm": 1.0}, vs, scaled_steps(vs, 4, 64.0, [(2, 0, 3, "Infinity")]),
            loss_scale={"dynamic": True, "initial_scale": 256.0, "dynamic_growth_steps": 2})
    return g.cases, g.descriptions


def generate(outdir, build=None, suffix=""):
    t0 = time.time()
    cases, desc = (build or build_cases)()
    os.makedirs(outdir, exist_ok=True)
    cases_path = os.path.join(outdir, f"cases{suffix}.json")
    expected_path = os.path.join(outdir, f"expected{suffix}.json")
    write_json(cases_path, cases)
    results = run_file(cases_path, expected_path)
    for case, res in zip(cases, results):
        err = res.get("error")
        tag = f"  [error at {err['at']}: {err['type']}]" if err else ""
        print(f"{case['id']}: {desc[case['id']]}{tag}")
    print(f"{len(cases)} cases; {cases_path}: {os.path.getsize(cases_path)} bytes, "
          f"{expected_path}: {os.path.getsize(expected_path)} bytes; {time.time() - t0:.1f} s", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="replay CASES.json through tf_keras AdamW, write OUT.json")
    p_run.add_argument("cases")
    p_run.add_argument("out")
    p_run.add_argument("--only", nargs="+", help="replay only these case ids")
    p_gen = sub.add_parser("generate", help="write OUTDIR/cases.json and OUTDIR/expected.json")
    p_gen.add_argument("outdir")
    p_16 = sub.add_parser("generate16", help="write OUTDIR/cases_16bit.json and OUTDIR/expected_16bit.json")
    p_16.add_argument("outdir")
    sub.add_parser("list", help="print the generated case ids and descriptions")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        t0 = time.time()
        results = run_file(args.cases, args.out, args.only)
        print(f"{len(results)} cases replayed in {time.time() - t0:.1f} s -> {args.out}", file=sys.stderr)
    elif args.cmd == "generate":
        generate(args.outdir)
    elif args.cmd == "generate16":
        generate(args.outdir, build_16bit_cases, "_16bit")
    else:
        cases, desc = build_cases()
        for case in cases:
            print(f"{case['id']}: {desc[case['id']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
