#!/usr/bin/env python3
"""Writes the dense-gradient cases of a trajectory file (cases + expected results) as plain text,
for tests in languages without a JSON parser at hand (the C++ wrapper's tests).

usage: smoke_to_text.py CASES.json EXPECTED.json > OUT.txt

Format, whitespace-separated tokens (floats as Python repr, exact for float32 and float64):
  CASE <id> <config JSON without spaces>
  VARS <n>   then per variable: <name> <dtype> <ndim> <dims...> <count> <values...>
  STEP <n>   then per variable: D <count> <values...> | N     (dense gradient or none)
  EXPECT <iterations> <learning_rate> then per variable: <count> <values...>
  END
Cases with sparse gradients, finalize steps, exclusions, presets or errors are left out.
"""
import json
import sys


def number(x):
    return repr(float(x)) if not isinstance(x, str) else {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[x]


def main():
    cases = json.load(open(sys.argv[1]))
    expected = {c["id"]: c for c in json.load(open(sys.argv[2]))}
    out = []
    for case in cases:
        exp = expected[case["id"]]
        simple = not any(k in case for k in ("exclude_from_weight_decay", "iterations")) and "error" not in exp
        steps = case["steps"]
        if not simple or any("op" in s or any(g is not None and "dense" not in g for g in s["grads"]) for s in steps):
            continue
        out.append(f"CASE {case['id']} {json.dumps(case['config'], separators=(',', ':'))}")
        out.append(f"VARS {len(case['variables'])}")
        for v in case["variables"]:
            dims = " ".join(str(d) for d in v["shape"])
            out.append(f"{v['name']} {v['dtype']} {len(v['shape'])} {dims} {len(v['value'])} " + " ".join(map(number, v["value"])))
        for step, result in zip(steps, exp["steps"]):
            out.append(f"STEP {len(step['grads'])}")
            for g in step["grads"]:
                out.append("N" if g is None else f"D {len(g['dense'])} " + " ".join(map(number, g["dense"])))
            out.append(f"EXPECT {result['iterations']} {number(result['learning_rate'])}")
            for values in result["variables"]:
                out.append(f"{len(values)} " + " ".join(map(number, values)))
        out.append("END")
    print("\n".join(out))


if __name__ == "__main__":
    main()
