"""Writes tests/data/loss_scale_loads/*.keras: copies of a tf-keras 2.15 archive compiled with a
LossScaleOptimizer around AdamW (tests/data/keras_files/loss_scale_dense.libadamw.keras) whose
config.json is changed to what Keras' constructor accepts but libadamw refuses: a
LossScaleOptimizer around another, and hostile loss-scale numbers (the C tests read them with
adamw_keras_file_optimizer_config). The optimizer's state is the original's. No TensorFlow needed:

    python3 tools/hostile_keras_archives.py
"""
import json
import os
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tests", "data", "keras_files", "loss_scale_dense.libadamw.keras")
OUT = os.path.join(ROOT, "tests", "data", "loss_scale_loads")


def nested(optimizer):
    """The LossScaleOptimizer's config wrapped in another LossScaleOptimizer."""
    inner = {"module": optimizer["module"], "class_name": optimizer["class_name"],
             "config": optimizer["config"], "registered_name": None}
    optimizer["config"] = dict(optimizer["config"], inner_optimizer=inner)


def setting(key, value):
    def change(optimizer):
        optimizer["config"][key] = value
    return change


CASES = {
    "nested": nested,
    "initial_scale_0": setting("initial_scale", 0.0),
    "initial_scale_negative": setting("initial_scale", -4.0),
    "initial_scale_nan": setting("initial_scale", "NaN"),
    "initial_scale_infinity": setting("initial_scale", "Infinity"),
    "initial_scale_2e200": setting("initial_scale", 2.0**200),
    "dynamic_growth_steps_0": setting("dynamic_growth_steps", 0),
    "dynamic_growth_steps_negative": setting("dynamic_growth_steps", -3),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    with zipfile.ZipFile(SOURCE) as source:
        entries = [(info, source.read(info.filename)) for info in source.infolist()]
    for name, change in CASES.items():
        with zipfile.ZipFile(os.path.join(OUT, name + ".keras"), "w", zipfile.ZIP_STORED) as out:
            for info, data in entries:
                if info.filename == "config.json":
                    config = json.loads(data)
                    change(config["compile_config"]["optimizer"])
                    data = json.dumps(config).encode()
                out.writestr(info, data)
        print("wrote", name + ".keras")


if __name__ == "__main__":
    main()
