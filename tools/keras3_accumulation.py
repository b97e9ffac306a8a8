#!/usr/bin/env python3
"""Keras 3 reference for libadamw's gradient accumulation (docs/numerics.md §25).

Generates the cases of ``tests/conformance/accumulation_cases.json`` and replays them through
``keras.optimizers.AdamW`` of Keras 3 (keras 3.15.1 on tensorflow-cpu 2.20.0, the TensorFlow
backend), eagerly on the CPU, writing ``accumulation_expected.json`` in the trajectory format
(docs/trajectory_format.md) with these differences, which are Keras 3's:

- each case's ``config`` is Keras 3's own ``get_config()`` of the optimizer the case describes,
  so the suite also shows that libadamw reads Keras 3's config JSON;
- a step's ``iterations`` is Keras 3's ``optimizer.iterations`` (calls // steps), and its
  ``learning_rate`` Keras 3's ``optimizer.learning_rate`` after the call (a schedule at the new
  call count);
- ``final.optimizer_variables`` is libadamw's order: the call counter (``_iterations``), the
  EMA averages, m and v per variable, the vhats, then the gradient accumulators;
- ``final`` has no ``config`` (Keras 3 writes other keys than Keras 2; tests/accumulation.rs
  checks libadamw's own).

Variables are ``keras.Variable``s named as the case says (Keras 3 names carry no ``:0``, which
libadamw's exclusion patterns see: the cases use patterns that match either way).

Setup (a virtual environment OUTSIDE the repository; PyPI, a few minutes):

    python3 -m venv /tmp/venv-keras3
    /tmp/venv-keras3/bin/pip install tensorflow-cpu==2.20.0 keras==3.15.1

Usage:

    /tmp/venv-keras3/bin/python tools/keras3_accumulation.py generate tests/conformance
"""

import argparse
import copy
import os
import sys
import time

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["KERAS_BACKEND"] = "tensorflow"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keras_reference import _error, flat_in, json_clean, num_out, tensor_out, write_json  # noqa: E402

import numpy as np  # noqa: E402

_KERAS = None


def _keras():
    global _KERAS
    if _KERAS is None:
        import logging
        import warnings

        import keras
        import tensorflow as tf

        tf.get_logger().setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        assert keras.__version__ == "3.15.1" and keras.backend.backend() == "tensorflow", keras.__version__
        _KERAS = (tf, keras)
    return _KERAS


DTYPES = {"float32": "float32", "float64": "float64", "bfloat16": "bfloat16", "float16": "float16"}


def make_variables(tf, keras, specs):
    out = []
    for spec in specs:
        init = tf.constant(flat_in(spec["value"]), dtype=DTYPES[spec["dtype"]], shape=list(spec["shape"]))
        out.append(keras.Variable(init, dtype=DTYPES[spec["dtype"]], name=spec["name"]))
    return out


def make_gradient(tf, grad, var):
    if grad is None:
        return None
    shape = list(var.shape)
    if "dense" in grad:
        return tf.constant(flat_in(grad["dense"]), dtype=var.dtype, shape=shape)
    indices = [int(i) for i in grad["indices"]]
    values = flat_in(grad["values"])
    return tf.IndexedSlices(
        values=tf.constant(values, dtype=var.dtype, shape=[len(indices)] + shape[1:]),
        indices=tf.constant(indices, dtype=tf.int64),
        dense_shape=tf.constant(shape, dtype=tf.int64),
    )


def optimizer_variables(opt, n):
    """libadamw's order: calls, averages, m and v per variable, vhats, accumulators."""
    out = [[float(int(opt._iterations.numpy()))]]
    if opt.use_ema:
        out += [tensor_out(a.value) for a in opt._model_variables_moving_average]
    for i in range(n):
        out += [tensor_out(opt._momentums[i].value), tensor_out(opt._velocities[i].value)]
    if opt.amsgrad:
        out += [tensor_out(v.value) for v in opt._velocity_hats]
    out += [tensor_out(a.value) for a in opt._accumulated_gradients]
    return out


def run_case(case):
    tf, keras = _keras()
    result = {"id": case["id"]}
    variables = make_variables(tf, keras, case["variables"])
    try:
        opt = keras.optimizers.AdamW.from_config(copy.deepcopy(case["config"]))
        ex = case.get("exclude_from_weight_decay")
        if ex:
            opt.exclude_from_weight_decay(
                var_list=[variables[i] for i in ex.get("variables", [])] or None, var_names=ex.get("var_names")
            )
        opt.build(variables)
    except Exception as e:  # noqa: BLE001
        result["error"] = _error("config", e)
        return result
    steps = []
    result["steps"] = steps
    for at, step in enumerate(case["steps"]):
        try:
            if step.get("op") == "finalize":
                opt.finalize_variable_values(variables)
                steps.append({"op": "finalize", "variables": [tensor_out(v.value) for v in variables]})
                continue
            grads = [make_gradient(tf, g, v) for g, v in zip(step["grads"], variables)]
            opt.apply_gradients(zip(grads, variables))
        except Exception as e:  # noqa: BLE001
            result["error"] = _error(at, e)
            return result
        steps.append(
            {
                "iterations": int(opt.iterations.numpy()),
                "learning_rate": num_out(np.float32(opt.learning_rate.numpy())),
                "variables": [tensor_out(v.value) for v in variables],
            }
        )
    result["final"] = {
        "iterations": int(opt.iterations.numpy()),
        "optimizer_variables": optimizer_variables(opt, len(variables)),
    }
    return result


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


def keras3_config(**kwargs):
    """Keras 3's get_config() of AdamW(**kwargs): what libadamw must read."""
    _, keras = _keras()
    config = keras.optimizers.AdamW(**kwargs).get_config()
    return json_clean(config)


def schedule(class_name, **config):
    _, keras = _keras()
    cls = getattr(keras.optimizers.schedules, class_name)
    return cls(**config)


def build_cases():
    rng = np.random.default_rng(20261206)

    def values(shape, dtype="float32", scale=1.0):
        x = rng.normal(0.0, scale, size=shape).astype(np.float64)
        if dtype == "float32":
            x = x.astype(np.float32).astype(np.float64)
        return [num_out(v) for v in x.ravel().tolist()]

    def var(name, shape, dtype="float32"):
        return {"name": name, "dtype": dtype, "shape": list(shape), "value": values(shape, dtype)}

    def dense(shape, dtype="float32", scale=1.0):
        return {"dense": values(shape, dtype, scale)}

    cases, desc = [], {}

    def add(cid, text, config, variables, steps, **extra):
        case = {"id": cid, "config": config, "variables": variables, "steps": steps}
        case.update(extra)
        cases.append(case)
        desc[cid] = text

    kb = [var("kernel", (3, 4)), var("bias", (4,))]

    def kb_steps(n, dtype="float32", scale=1.0):
        return [{"grads": [dense((3, 4), dtype, scale), dense((4,), dtype, scale)]} for _ in range(n)]

    add("acc2_defaults", "two calls a window, Keras' defaults otherwise, 7 calls (ends mid-window)",
        keras3_config(gradient_accumulation_steps=2), kb, kb_steps(7))
    add("acc3_lr_wd", "three calls a window, learning_rate 0.05, weight_decay 0.1",
        keras3_config(learning_rate=0.05, weight_decay=0.1, gradient_accumulation_steps=3), kb, kb_steps(9))
    add("acc2_float64", "float64 variables, two calls a window",
        keras3_config(learning_rate=0.01, gradient_accumulation_steps=2),
        [var("kernel", (3, 4), "float64"), var("bias", (4,), "float64")], kb_steps(6, "float64"))
    add("acc4_amsgrad", "amsgrad, four calls a window",
        keras3_config(learning_rate=0.02, amsgrad=True, gradient_accumulation_steps=4), kb, kb_steps(12))
    add("acc2_clipnorm", "clipnorm 0.5 on the averaged gradients",
        keras3_config(learning_rate=0.01, clipnorm=0.5, gradient_accumulation_steps=2), kb, kb_steps(6, scale=2.0))
    add("acc2_global_clipnorm", "global_clipnorm 0.3 (Keras 3's clip_by_global_norm)",
        keras3_config(learning_rate=0.01, global_clipnorm=0.3, gradient_accumulation_steps=2), kb,
        kb_steps(6, scale=2.0))
    add("acc3_global_clipnorm_unclipped", "global_clipnorm 9.3 above the norm: Keras 3's scale is "
        "9.3 * f32(1/9.3 in float64) = 1 exactly, where TF's float32 quotient gives 0.99999994",
        keras3_config(learning_rate=0.01, global_clipnorm=9.3, gradient_accumulation_steps=3), kb, kb_steps(9))
    add("acc2_clipvalue", "clipvalue 0.4",
        keras3_config(learning_rate=0.01, clipvalue=0.4, gradient_accumulation_steps=2), kb, kb_steps(6))
    add("acc2_ema", "EMA (momentum 0.9) moved on every call",
        keras3_config(learning_rate=0.05, use_ema=True, ema_momentum=0.9, gradient_accumulation_steps=2), kb,
        kb_steps(7) + [{"op": "finalize"}])
    add("acc2_ema_overwrite", "EMA with ema_overwrite_frequency 2 (checked every call against the updates)",
        keras3_config(learning_rate=0.05, use_ema=True, ema_momentum=0.8, ema_overwrite_frequency=2,
                      gradient_accumulation_steps=2), kb, kb_steps(10))
    add("acc3_ema_none_gradient", "EMA, the bias without a gradient on some calls (its average moves anyway)",
        keras3_config(learning_rate=0.05, use_ema=True, gradient_accumulation_steps=3), kb,
        [{"grads": [dense((3, 4)), None if k % 2 else dense((4,))]} for k in range(9)])
    add("acc2_exponential_decay", "ExponentialDecay seen at the call count",
        keras3_config(learning_rate=schedule("ExponentialDecay", initial_learning_rate=0.1, decay_steps=3,
                                             decay_rate=0.5), gradient_accumulation_steps=2), kb, kb_steps(8))
    add("acc3_cosine_warmup", "CosineDecay with warmup",
        keras3_config(learning_rate=schedule("CosineDecay", initial_learning_rate=0.01, decay_steps=10,
                                             warmup_target=0.1, warmup_steps=4), gradient_accumulation_steps=3),
        kb, kb_steps(9))
    add("acc2_exclude_bias", "bias excluded from weight decay by name",
        keras3_config(learning_rate=0.05, weight_decay=0.2, gradient_accumulation_steps=2), kb, kb_steps(6),
        exclude_from_weight_decay={"var_names": ["bias"]})
    add("acc2_none_on_update", "the bias has no gradient on an update call: its accumulator is dropped",
        keras3_config(learning_rate=0.05, gradient_accumulation_steps=2), kb,
        [{"grads": [dense((3, 4)), dense((4,))]}, {"grads": [dense((3, 4)), None]},
         {"grads": [dense((3, 4)), dense((4,))]}, {"grads": [dense((3, 4)), dense((4,))]}])
    emb = [var("embedding", (6, 2)), var("bias", (2,))]

    def sparse(indices, scale=1.0):
        return {"indices": indices, "values": [values((2,), scale=scale) for _ in indices]}

    add("acc2_sparse", "sparse rows with duplicates, densified as TF adds IndexedSlices to a tensor",
        keras3_config(learning_rate=0.05, gradient_accumulation_steps=2), emb,
        [{"grads": [sparse([1, 4, 1]), dense((2,))]}, {"grads": [sparse([0, 4]), dense((2,))]},
         {"grads": [sparse([5, 5, 5, 2]), None]}, {"grads": [sparse([3]), dense((2,))]},
         {"grads": [dense((6, 2)), dense((2,))]}, {"grads": [sparse([2, 1]), dense((2,))]}])
    add("acc2_sparse_signed_zeros", "negative zeros in sparse and dense gradients",
        keras3_config(learning_rate=0.05, gradient_accumulation_steps=2), emb,
        [{"grads": [{"indices": [1, 1, 3], "values": [[-0.0, 0.5], [-0.0, -0.5], [-0.0, -0.0]]},
                    {"dense": [-0.0, -0.0]}]},
         {"grads": [{"dense": [-0.0] * 12}, {"dense": [-0.0, 0.25]}]},
         {"grads": [{"dense": [-0.0] * 12}, {"dense": [-0.0, -0.0]}]},
         {"grads": [{"indices": [0], "values": [[-0.0, -0.0]]}, {"dense": [-0.0, -0.0]}]}])
    add("acc2_clipnorm_sparse", "clipnorm over averaged sparse gradients",
        keras3_config(learning_rate=0.05, clipnorm=0.2, gradient_accumulation_steps=2), emb,
        [{"grads": [sparse([1, 4, 1], 3.0), dense((2,))]}, {"grads": [sparse([0, 4], 3.0), dense((2,))]}] * 2)
    add("acc2_bfloat16", "bfloat16 variables: Keras' own bfloat16 arithmetic",
        keras3_config(learning_rate=0.01, gradient_accumulation_steps=2),
        [var("kernel", (3, 4), "bfloat16"), var("bias", (4,), "bfloat16")], kb_steps(6, "bfloat16"))
    add("acc3_float16", "float16 variables, three calls a window",
        keras3_config(learning_rate=0.01, gradient_accumulation_steps=3),
        [var("kernel", (3, 4), "float16"), var("bias", (4,), "float16")], kb_steps(6, "float16"))
    add("acc2_no_gradients", "a call with no gradient at all: Keras 3's ValueError, nothing counted",
        keras3_config(gradient_accumulation_steps=2), kb,
        [{"grads": [dense((3, 4)), dense((4,))]}, {"grads": [None, None]}])
    return cases, desc


def generate(outdir):
    t0 = time.time()
    cases, desc = build_cases()
    os.makedirs(outdir, exist_ok=True)
    cases_path = os.path.join(outdir, "accumulation_cases.json")
    expected_path = os.path.join(outdir, "accumulation_expected.json")
    write_json(cases_path, cases)
    results = [run_case(case) for case in cases]
    write_json(expected_path, results)
    for case, res in zip(cases, results):
        err = res.get("error")
        tag = f"  [error at {err['at']}: {err['type']}]" if err else ""
        print(f"{case['id']}: {desc[case['id']]}{tag}")
    print(f"{len(cases)} cases in {time.time() - t0:.1f} s", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_gen = sub.add_parser("generate", help="write OUTDIR/accumulation_cases.json and accumulation_expected.json")
    p_gen.add_argument("outdir")
    args = parser.parse_args(argv)
    if args.cmd == "generate":
        generate(args.outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
