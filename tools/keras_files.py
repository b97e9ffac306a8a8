"""Generates tests/data/keras_files/: Keras' own files with an optimizer's state, and Keras'
continuations, for tests/keras_files.rs.

For each case a small model is trained with tf-keras 2.15's AdamW for a few steps of fixed
gradients (optimizer.apply_gradients: dense, and IndexedSlices for an Embedding), then saved
three ways: `model.save(CASE.keras)`, `model.save_weights(CASE.weights.h5)`, and a plain
safetensors store of `optimizer.variables` (`safetensors.numpy.save_file`, keys "0".."N-1").
Keras then continues for a few more steps from the archive (load_model) and from the weights file
(a new model, load_weights), which must agree: the expected values of libadamw's continuation.
Two cases have a LossScaleOptimizer around AdamW, one explicit and one that the mixed_float16
policy adds at compile (its saved config is the AdamW's; libadamw reads the LossScaleOptimizer's
from the file's layout);
their files hold no loss scale, and Keras continues from them with the initial scale. The initial
weights come from a seed per case, so that a new run writes the same JSON.

The other direction: libadamw (the release library, through its C ABI with ctypes) loads
CASE.keras, takes the same continuation steps, and writes its state into copies of both files
(CASE.libadamw.keras, CASE.libadamw.weights.h5). Keras loads each (`load_model`,
`model.load_weights`), takes the model's weights from libadamw and continues for more steps;
those values are the expected values of libadamw continuing from the files it wrote (and, without
a loss scale, from its own state in memory). The script fails
if libadamw's continuation differs from Keras' by a bit, or the two files continue differently.

    python3 -m venv /tmp/keras && /tmp/keras/bin/pip install tensorflow-cpu==2.15.1 tf-keras==2.15.1 safetensors
    cargo build --release
    /tmp/keras/bin/python tools/keras_files.py

Values are stored as their bits (uint32 for float32, uint16 for float16, uint64 for float64 and
int64), so that the JSON carries them exactly.
"""
import ctypes
import json
import os
import shutil
import sys
import zipfile

from libadamw_ctypes import Gradient, Variable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import safetensors.numpy  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "keras_files")
BITS = {"float32": np.uint32, "float16": np.uint16, "float64": np.uint64, "int64": np.uint64}
DTYPE_CODE = {"float32": 1, "float64": 2, "float16": 5}


def bits(array):
    array = np.asarray(array)
    return array.reshape(-1).view(BITS[array.dtype.name]).tolist()


# ---------------------------------------------------------------- the cases
def dense_amsgrad():
    model = keras.Sequential([keras.layers.Dense(3, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    model.build((None, 4))
    return model, keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.01, amsgrad=True), set()


def embedding_ema():
    model = keras.Sequential([keras.layers.Embedding(16, 4, input_length=3, name="embedding"), keras.layers.Flatten(),
                              keras.layers.Dense(2, name="head")])
    model.build((None, 3))
    optimizer = keras.optimizers.AdamW(learning_rate=0.02, use_ema=True, ema_momentum=0.9)
    return model, optimizer, {0}  # the embedding's gradients are IndexedSlices


def float64_clipnorm():
    model = keras.Sequential([keras.layers.Dense(3, dtype="float64", name="wide")])
    model.build((None, 5))
    return model, keras.optimizers.AdamW(learning_rate=0.005, clipnorm=0.5, weight_decay=0.02), set()


def float16_global_clipnorm():
    model = keras.Sequential([keras.layers.Dense(4, dtype="float16", name="half")])
    model.build((None, 3))
    return model, keras.optimizers.AdamW(learning_rate=0.01, global_clipnorm=1.0), set()


def loss_scale_dense():
    # Keras' LossScaleOptimizer around AdamW: the gradients are scaled ones, unscaled by
    # get_unscaled_gradients; one step before the save overflows (skipped, the scale halves) and
    # the scale grows every two finite steps. Keras' files hold the inner AdamW's variables, twice
    # (optimizer/vars and optimizer/inner_optimizer/vars), and not the scale: Keras continues
    # from a file with the initial scale.
    model = keras.Sequential([keras.layers.Dense(3, name="hidden"), keras.layers.Dense(2, name="out")])
    model.build((None, 4))
    inner = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.01)
    return model, keras.mixed_precision.LossScaleOptimizer(inner, initial_scale=64.0, dynamic_growth_steps=2), set()


def mixed_float16_policy():
    # Under Keras' mixed_float16 policy (float32 variables, float16 computation) model.compile
    # puts its AdamW inside a LossScaleOptimizer with Keras' defaults, which the saved config does
    # not show (Keras wraps it again when it loads under the policy); libadamw tells it from the
    # file's two groups. The policy is Keras' global one, in force from here to the case's end.
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.layers.Dense(3, name="hidden"), keras.layers.Dense(2, name="out")])
    model.build((None, 4))
    return model, keras.optimizers.AdamW(learning_rate=0.01, clipnorm=1.0), set()


CASES = [dense_amsgrad, embedding_ema, float64_clipnorm, float16_global_clipnorm, loss_scale_dense,
         mixed_float16_policy]
# Keras 2.15.1's load_model cannot deserialize the AdamW inside a LossScaleOptimizer by itself.
CUSTOM_OBJECTS = {"AdamW": keras.optimizers.AdamW}


def is_loss_scaled(optimizer):
    return isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
SAVED_AFTER, CONTINUED, ROUND_TRIP = 3, 2, 2


def gradients(model, sparse, rng, overflow=False):
    """One step's gradients: a dict per trainable variable (dense bits, or indices and rows);
    `overflow` puts an infinity into the first."""
    out = []
    for i, v in enumerate(model.trainable_variables):
        dtype = v.dtype.name
        if i in sparse:
            indices = rng.integers(0, v.shape[0], size=5).astype(np.int64)
            indices[3] = indices[1]  # a repeated row
            rows = (rng.standard_normal((5,) + tuple(v.shape[1:])) * 0.1).astype(dtype)
            out.append({"indices": indices.tolist(), "rows": rows})
        else:
            out.append({"dense": (rng.standard_normal(tuple(v.shape)) * 0.1).astype(dtype)})
    if overflow:
        out[0]["dense"].reshape(-1)[1] = np.inf
    return out


def keras_step(model, grads):
    pairs = []
    for g, v in zip(grads, model.trainable_variables):
        if "dense" in g:
            pairs.append((tf.constant(g["dense"]), v))
        else:
            pairs.append((tf.IndexedSlices(tf.constant(g["rows"]), tf.constant(g["indices"], tf.int64),
                                           tf.constant(v.shape, tf.int64)), v))
    optimizer = model.optimizer
    if is_loss_scaled(optimizer):  # the given gradients are scaled ones
        unscaled = optimizer.get_unscaled_gradients([g for g, _ in pairs])
        pairs = list(zip(unscaled, [v for _, v in pairs]))
    optimizer.apply_gradients(pairs)


def to_json(grads):
    return [{"dense": bits(g["dense"])} if "dense" in g else {"indices": g["indices"], "rows": bits(g["rows"])}
            for g in grads]


def state(model):
    out = {"variables": [bits(v.numpy()) for v in model.trainable_variables],
           "optimizer": [bits(v.numpy()) for v in model.optimizer.variables]}
    if is_loss_scaled(model.optimizer):
        out["loss_scale"] = {"scale": bits(np.float32(model.optimizer.loss_scale.numpy()))[0],
                             "counter": int(model.optimizer.dynamic_counter.numpy())}
    return out


# ---------------------------------------------------------------- libadamw through the C ABI
def check(lib, status):
    if status != 0:
        n = ctypes.c_size_t()
        lib.adamw_last_error(None, 0, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value + 1)
        lib.adamw_last_error(buf, n.value + 1, ctypes.byref(n))
        sys.exit(f"libadamw: status {status}: {buf.value.decode()}")


def libadamw_continuation(lib, archive, names, values, steps, outputs):
    """libadamw loads `archive` (the optimizer from the archive's config as libadamw reads it),
    applies `steps` to copies of `values`, writes its state into `outputs` (template -> out) and
    returns the new values."""
    config_len = ctypes.c_size_t()
    check(lib, lib.adamw_keras_file_optimizer_config(archive.encode(), None, 0, ctypes.byref(config_len)))
    config = ctypes.create_string_buffer(config_len.value + 1)
    check(lib, lib.adamw_keras_file_optimizer_config(archive.encode(), config, len(config), ctypes.byref(config_len)))
    h = ctypes.c_void_p()
    check(lib, lib.adamw_optimizer_from_config_json(config.value, config_len.value, ctypes.byref(h)))
    values = [np.array(v) for v in values]
    shapes = [(ctypes.c_size_t * max(1, v.ndim))(*v.shape) for v in values]
    specs = (Variable * len(values))(*[
        Variable(n.encode(), DTYPE_CODE[v.dtype.name], v.ndim, s, v.ctypes.data, 0, 0, 0)
        for n, v, s in zip(names, values, shapes)])
    check(lib, lib.adamw_optimizer_build(h, specs, len(values)))
    check(lib, lib.adamw_optimizer_load_keras_file(h, archive.encode()))
    for grads in steps:
        keep = []
        entries = (Gradient * len(values))()
        for i, (g, v) in enumerate(zip(grads, values)):
            e = entries[i]
            e.variable, e.dtype, e.data, e.len = i, DTYPE_CODE[v.dtype.name], v.ctypes.data, v.size
            if "dense" in g:
                e.dense = g["dense"].ctypes.data
            else:
                idx = np.array(g["indices"], np.int64)
                keep.append(idx)
                e.indices, e.num_indices = idx.ctypes.data, idx.size
                e.values, e.num_values = g["rows"].ctypes.data, g["rows"].size
        check(lib, lib.adamw_optimizer_apply_gradients(h, entries, len(values), None))
    for template, out in outputs:
        check(lib, lib.adamw_optimizer_save_keras_file(h, template.encode(), out.encode()))
    lib.adamw_optimizer_free(h)
    return values


def continue_in_keras(model, values, steps):
    for v, value in zip(model.trainable_variables, values):
        v.assign(value)
    for grads in steps:
        keras_step(model, grads)
    return state(model)


def continue_from_files(make, archive, weights, values, steps):
    """Keras continues from `archive` (load_model) and from `weights` (a new model and optimizer,
    load_weights): both must take the same steps to the same bits, which are returned."""
    from_archive = keras.models.load_model(archive, custom_objects=CUSTOM_OBJECTS)
    expected = continue_in_keras(from_archive, values, steps)
    weights_model, optimizer, _ = make()
    weights_model.compile(optimizer=optimizer, loss="mse")
    weights_model.optimizer.build(weights_model.trainable_variables)
    weights_model.load_weights(weights)
    if continue_in_keras(weights_model, values, steps) != expected:
        sys.exit(f"Keras continues differently from {archive} and {weights}")
    return expected


def main():
    lib = ctypes.CDLL(os.path.join(ROOT, "target", "release", "libadamw.so"))
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    for make in CASES:
        name = make.__name__
        rng = np.random.default_rng(sum(map(ord, name)))
        keras.utils.set_random_seed(sum(map(ord, name)))  # the initial weights, the same every run
        model, optimizer, sparse = make()
        model.compile(optimizer=optimizer, loss="mse")
        for k in range(SAVED_AFTER):
            keras_step(model, gradients(model, sparse, rng, overflow=is_loss_scaled(model.optimizer) and k == 1))
        path = lambda suffix: os.path.join(OUT, name + suffix)  # noqa: E731
        model.save(path(".keras"))
        model.save_weights(path(".weights.h5"))
        safetensors.numpy.save_file({str(i): np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)},
                                    path(".store.safetensors"))
        with zipfile.ZipFile(path(".keras")) as archive:  # the config as Keras saved it
            config = json.load(archive.open("config.json"))["compile_config"]["optimizer"]["config"]
        names = [v.name.removesuffix(":0") for v in model.trainable_variables]
        saved = [v.numpy() for v in model.trainable_variables]
        case = {
            "name": name,
            "config": config,
            "policy": keras.mixed_precision.global_policy().name,
            "variables": [{"name": n, "shape": list(v.shape), "dtype": v.dtype.name} for n, v in zip(names, saved)],
            "saved_after": SAVED_AFTER,
            "saved": {"variables": [bits(v) for v in saved], "optimizer": [bits(v.numpy()) for v in optimizer.variables]},
        }
        # Keras continues from its files. Without a loss scale that is also the continuation of
        # the model in memory; with one, the files hold no scale and Keras starts again from the
        # initial scale.
        steps = [gradients(model, sparse, rng) for _ in range(CONTINUED)]
        from_files = continue_from_files(make, path(".keras"), path(".weights.h5"), saved, steps)
        if not is_loss_scaled(model.optimizer) and continue_in_keras(model, saved, steps) != from_files:
            sys.exit(f"{name}: Keras continues differently in memory and from its files")
        case["continuation"] = {"gradients": [to_json(g) for g in steps], **from_files}

        # libadamw continues from the archive and writes its state back into both files.
        written = [(path(".keras"), path(".libadamw.keras")), (path(".weights.h5"), path(".libadamw.weights.h5"))]
        ours = libadamw_continuation(lib, path(".keras"), names, saved, steps, written)
        if [bits(v) for v in ours] != case["continuation"]["variables"]:
            sys.exit(f"{name}: libadamw's continuation differs from Keras'")
        round_trip = [gradients(model, sparse, rng) for _ in range(ROUND_TRIP)]
        expected = continue_from_files(make, path(".libadamw.keras"), path(".libadamw.weights.h5"), ours, round_trip)
        case["round_trip"] = {"gradients": [to_json(g) for g in round_trip], **expected}
        with open(path(".json"), "w") as f:
            json.dump(case, f, separators=(",", ":"))
            f.write("\n")
        print(f"{name}: saved after {SAVED_AFTER} steps, {len(optimizer.variables)} optimizer variables; "
              f"libadamw's continuation is Keras' bit for bit; Keras continues from libadamw's files")
        keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
