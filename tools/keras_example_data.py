"""Writes the data of examples/c/keras_round_trip.c: Keras' own numbers for the dense_amsgrad case
(tests/data/keras_files/dense_amsgrad.json, made by tools/keras_files.py with tf-keras 2.15) as a
text file that a C program reads without a JSON parser: one line per array,
`LABEL COUNT HEX...`, each value's bits in hexadecimal.

    python3 tools/keras_example_data.py          # writes tests/data/keras_files/dense_amsgrad.steps.txt
    python3 tools/keras_example_data.py --check  # fails if the committed file differs (the test command)

Labels: `saved/V` (the model's weights when Keras saved dense_amsgrad.keras), `continuation/S/V`
(the gradient of variable V at Keras' continuation step S), `continuation/V` (the weights after
Keras' continuation from the file), and the same under `round_trip` (Keras' steps from the file
that libadamw wrote after that continuation, and the weights Keras reached).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "keras_files")


def lines(case):
    out = ["# Keras' numbers for examples/c/keras_round_trip.c (tools/keras_example_data.py; do not edit)",
           "# " + ", ".join(f"{v['name']} {v['dtype']} {v['shape']}" for v in case["variables"])]

    def emit(label, words):
        out.append(f"{label} {len(words)} " + " ".join(f"{w:08x}" for w in words))

    for i, words in enumerate(case["saved"]["variables"]):
        emit(f"saved/{i}", words)
    for part in ("continuation", "round_trip"):
        for step, gradients in enumerate(case[part]["gradients"]):
            for i, gradient in enumerate(gradients):
                emit(f"{part}/{step}/{i}", gradient["dense"])
        for i, words in enumerate(case[part]["variables"]):
            emit(f"{part}/{i}", words)
    return "\n".join(out) + "\n"


def main():
    with open(os.path.join(DATA, "dense_amsgrad.json")) as f:
        case = json.load(f)
    assert all(v["dtype"] == "float32" for v in case["variables"])
    text = lines(case)
    path = os.path.join(DATA, "dense_amsgrad.steps.txt")
    if "--check" in sys.argv:
        with open(path) as f:
            if f.read() != text:
                sys.exit(f"error: {path} is stale: run python3 tools/keras_example_data.py")
        print(f"{os.path.relpath(path, ROOT)} is Keras' numbers from dense_amsgrad.json")
    else:
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
