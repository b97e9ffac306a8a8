#!/usr/bin/env python3
"""Measures how TensorFlow sums bfloat16 and float16 tensors on the CPU (docs/numerics.md §17):
for random gradients of 3 to 20,000 elements it compares `tf.reduce_sum(tf.square(g))` and
`tf.nn.l2_loss(g)` with candidate models of Eigen's reduction and prints, per model, how many of
the trials it reproduces bit for bit. It measures; it asserts nothing.

Run (the tf-keras venv of tools/keras_reference.py, about 5 minutes):
    /tmp/keras/bin/python tools/probe_16bit_sums.py [--trials 60]
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def eigen_sum(x, add, zero, packet=8, leaf=1024, predux=None):
    """Eigen's full reducer order: halves split on packet boundaries down to leaves of
    `packet * leaf` elements, each summed with four interleaved packet accumulators, one more
    packet, a scalar tail, and the packet's lanes added pairwise (`predux`, by default in the
    same arithmetic)."""

    def pairwise(lanes):
        while len(lanes) > 1:
            h = len(lanes) // 2
            lanes = [add(lanes[i], lanes[i + h]) for i in range(h)]
        return lanes[0]

    def rec(first, n):
        if n > packet * leaf:
            split = packet * -(-(first + -(-n // 2)) // packet)
            n_left = min(split - first, n)
            acc = add(zero, rec(first, n_left))
            return add(acc, rec(split, n - n_left)) if n_left < n else acc
        acc4 = [[zero] * packet for _ in range(4)]
        start = 0
        if n >= 4 * packet:
            unrolled = n // (4 * packet) * (4 * packet)
            for j in range(0, unrolled, 4 * packet):
                for k in range(4):
                    for lane in range(packet):
                        acc4[k][lane] = add(acc4[k][lane], x[first + j + k * packet + lane])
            for k in range(1, 4):
                for lane in range(packet):
                    acc4[0][lane] = add(acc4[0][lane], acc4[k][lane])
            start = unrolled
        if start + packet <= n:
            vectorized = n // packet * packet
            for j in range(start, vectorized, packet):
                for lane in range(packet):
                    acc4[0][lane] = add(acc4[0][lane], x[first + j + lane])
            start = vectorized
        tail = zero
        for j in range(start, n):
            tail = add(tail, x[first + j])
        return add(tail, (predux or pairwise)(acc4[0]))

    return rec(0, len(x))


def models(terms, np, T):
    """Each candidate model's sum of `terms` (values of dtype T)."""
    f32 = np.float32
    wide = [f32(v) for v in terms.astype(np.float32)]
    narrow = [T(v) for v in terms]
    add_t = lambda a, b: T(f32(a) + f32(b))  # noqa: E731  one operation of the dtype
    add_f32 = lambda a, b: f32(a + b)  # noqa: E731

    def predux_f32(lanes):
        return T(_pairwise_f32(lanes, f32))

    out = {"float32 sum, rounded once": T(eigen_sum(wide, add_f32, f32(0)))}
    for leaf in (1024, 200, 128):
        out[f"dtype sum, leaf {leaf}"] = eigen_sum(narrow, add_t, T(0), leaf=leaf)
        out[f"dtype sum, leaf {leaf}, predux in float32"] = eigen_sum(narrow, add_t, T(0), leaf=leaf, predux=predux_f32)
    return out


def _pairwise_f32(lanes, f32):
    lanes = [f32(v) for v in lanes]
    while len(lanes) > 1:
        h = len(lanes) // 2
        lanes = [f32(lanes[i] + lanes[i + h]) for i in range(h)]
    return lanes[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=60)
    args = ap.parse_args()
    import ml_dtypes
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(1)
    sizes = [3, 7, 17, 33, 64, 100, 257, 1000, 1700, 3300, 5000, 9000, 20000]
    for name, T, tf_dtype in [("bfloat16", ml_dtypes.bfloat16, tf.bfloat16), ("float16", np.float16, tf.float16)]:
        wins = {}
        for _ in range(args.trials):
            n = int(rng.choice(sizes))
            g = tf.constant((rng.standard_normal(n) * rng.choice([0.01, 0.3, 3.0])).astype(np.float32), dtype=tf_dtype)
            square = tf.square(g)
            probes = [("tf.reduce_sum(tf.square(g))", tf.reduce_sum(square).numpy(), square.numpy()),
                      ("tf.nn.l2_loss(g)", tf.nn.l2_loss(g).numpy(), (square * tf.constant(0.5, tf_dtype)).numpy())]
            for op, target, terms in probes:
                with np.errstate(over="ignore"):
                    candidates = models(terms, np, T)
                for model, value in candidates.items():
                    key = (op, model)
                    same = np.asarray(value, T).view(np.uint16) == np.asarray(target, T).view(np.uint16)
                    wins[key] = wins.get(key, 0) + int(same)
        print(name)
        for (op, model), count in sorted(wins.items()):
            print(f"  {op:<28} {model:<40} {count:>3} / {args.trials}")


if __name__ == "__main__":
    main()
