"""Measures what tf-keras 2.15 does with a LossScaleOptimizer's loss scale when an optimizer's
state is loaded into another: for every pair of kinds (none: a bare AdamW; fixed; dynamic),
saved from one and loaded into the other, through each of Keras' two ways of persisting an
optimizer:

- `checkpoint`: `tf.train.Checkpoint(optimizer=...)` save and restore, the only Keras format
  that holds a loss scale (a dynamic LossScaleOptimizer tracks `current_loss_scale` and
  `good_steps`; a fixed one tracks nothing, its scale is a Python float);
- `store`: `optimizer.save_own_variables(store)` / `load_own_variables(store)`, what `.keras`
  archives and `.weights.h5` files hold (the inner AdamW's `variables`).

It also records a load whose variable count differs (Keras' `load_own_variables` warns and skips
it) and the constructor's answer to a LossScaleOptimizer around another and to hostile numbers.
The result, tests/data/loss_scale_loads/keras.json, is what docs/numerics.md §19 and the C tests
of loads follow.

    python3 -m venv /tmp/keras && /tmp/keras/bin/pip install tensorflow-cpu==2.15.1 tf-keras==2.15.1
    /tmp/keras/bin/python tools/keras_loss_scale_loads.py
"""
import json
import logging
import math
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "loss_scale_loads", "keras.json")
LSO = keras.mixed_precision.LossScaleOptimizer


def make(kind, scale):
    """An AdamW over one float32 variable of 3, wrapped as `kind` says."""
    opt = keras.optimizers.AdamW(learning_rate=0.01)
    if kind == "dynamic":
        opt = LSO(opt, dynamic=True, initial_scale=scale, dynamic_growth_steps=2)
    elif kind == "fixed":
        opt = LSO(opt, dynamic=False, initial_scale=scale)
    var = tf.Variable([0.5, -1.5, 2.0], dtype=tf.float32, name="kernel")
    opt.build([var])
    return opt, var


def state(opt):
    scale = float(opt.loss_scale.numpy()) if hasattr(opt, "loss_scale") else None
    counter = opt.dynamic_counter if hasattr(opt, "dynamic_counter") else None
    return {
        "loss_scale": scale,
        "counter": None if counter is None else int(counter.numpy()),
        "iterations": int(opt.iterations.numpy()),
        "m": [float(x) for x in opt.variables[1].numpy()],
    }


def trained(kind):
    """Saved side: three finite steps (a dynamic scale of 512 doubles after two: 1024, count 1)."""
    opt, var = make(kind, 512.0 if kind == "dynamic" else 8.0)
    for step in range(3):
        scale = float(opt.loss_scale.numpy()) if kind != "none" else 1.0
        grad = tf.constant([0.25, -0.5, float(step)], dtype=tf.float32) * scale
        if kind != "none":
            opt.get_scaled_loss(tf.constant(1.0))  # as a training loop does (else Keras warns)
            (grad,) = opt.get_unscaled_gradients([grad])
        opt.apply_gradients([(grad, var)])
    return opt


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_pair(saved_kind, loaded_kind, way):
    saved = trained(saved_kind)
    loaded, _ = make(loaded_kind, 4.0)
    before = state(loaded)
    handler = Warnings()
    logging.getLogger().addHandler(handler)
    tf.get_logger().addHandler(handler)
    error = None
    try:
        if way == "checkpoint":
            with tempfile.TemporaryDirectory() as d:
                path = tf.train.Checkpoint(optimizer=saved).write(os.path.join(d, "ckpt"))
                tf.train.Checkpoint(optimizer=loaded).read(path).expect_partial()
        else:
            store = {}
            saved.save_own_variables(store)
            loaded.load_own_variables(store)
    except Exception as e:  # noqa: BLE001 - recorded, not raised
        error = f"{type(e).__name__}: {e}"
    finally:
        logging.getLogger().removeHandler(handler)
        tf.get_logger().removeHandler(handler)
    after = state(loaded)
    return {
        "saved": saved_kind,
        "loaded_into": loaded_kind,
        "way": way,
        "saved_state": state(saved),
        "before": before,
        "after": after,
        "slots_loaded": after["m"] == state(saved)["m"],
        "loss_scale_changed": after["loss_scale"] != before["loss_scale"] or after["counter"] != before["counter"],
        "error": error,
        "warnings": [w for w in handler.messages if "Skipping" in w or "loss" in w.lower()],
    }


def count_mismatch(kind):
    """A store of one variable's state loaded into an optimizer (`kind`) built over two."""
    saved = trained(kind)
    opt = keras.optimizers.AdamW(learning_rate=0.01)
    if kind == "dynamic":
        opt = LSO(opt, dynamic=True, initial_scale=4.0)
    opt.build([tf.Variable([1.0, 2.0, 3.0]), tf.Variable([4.0])])
    before = state(opt)
    handler = Warnings()
    logging.getLogger().addHandler(handler)
    tf.get_logger().addHandler(handler)
    store = {}
    saved.save_own_variables(store)
    error = None
    try:
        opt.load_own_variables(store)
    except Exception as e:  # noqa: BLE001
        error = f"{type(e).__name__}: {e}"
    logging.getLogger().removeHandler(handler)
    tf.get_logger().removeHandler(handler)
    return {"before": before, "after": state(opt), "warnings": handler.messages, "error": error}


def constructor(**kwargs):
    try:
        inner = kwargs.pop("inner", None) or keras.optimizers.AdamW()
        opt = LSO(inner, **kwargs)
        return {"accepted": True, "loss_scale": float(opt.loss_scale.numpy())}
    except Exception as e:  # noqa: BLE001
        return {"accepted": False, "error": f"{type(e).__name__}: {e}"}


def main():
    pairs = [
        load_pair(s, l, way)
        for way in ("checkpoint", "store")
        for s in ("none", "fixed", "dynamic")
        for l in ("none", "fixed", "dynamic")
    ]
    nested = constructor(inner=LSO(keras.optimizers.AdamW()))
    try:
        config = LSO(keras.optimizers.AdamW()).get_config()
        config["inner_optimizer"] = keras.optimizers.serialize(LSO(keras.optimizers.AdamW()))
        keras.optimizers.deserialize({"class_name": "LossScaleOptimizerV3", "config": config},
                                     use_legacy_optimizer=False)
        nested_config = {"accepted": True}
    except Exception as e:  # noqa: BLE001
        nested_config = {"accepted": False, "error": f"{type(e).__name__}: {e}"}
    hostile = {
        name: constructor(**kwargs)
        for name, kwargs in {
            "initial_scale 0": {"initial_scale": 0.0},
            "initial_scale -4": {"initial_scale": -4.0},
            "initial_scale nan": {"initial_scale": math.nan},
            "initial_scale inf": {"initial_scale": math.inf},
            "initial_scale 2**200": {"initial_scale": 2.0**200},
            "dynamic_growth_steps 0": {"dynamic_growth_steps": 0},
            "dynamic_growth_steps -3": {"dynamic_growth_steps": -3},
            "fixed initial_scale 0": {"dynamic": False, "initial_scale": 0.0},
        }.items()
    }
    result = {
        "tf_keras": keras.__version__,
        "tensorflow": tf.__version__,
        "loads": pairs,
        "count_mismatch": {kind: count_mismatch(kind) for kind in ("none", "dynamic")},
        "nested_constructor": nested,
        "nested_from_config": nested_config,
        "hostile_constructor": hostile,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    for p in pairs:
        print(f'{p["way"]:10} {p["saved"]:8} -> {p["loaded_into"]:8} scale {p["before"]["loss_scale"]} -> '
              f'{p["after"]["loss_scale"]} counter {p["before"]["counter"]} -> {p["after"]["counter"]} '
              f'slots {p["slots_loaded"]} error {p["error"]} warnings {p["warnings"]}')
    print("count mismatch:", result["count_mismatch"])
    print("nested:", nested, nested_config)
    for k, v in hostile.items():
        print(k, v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
