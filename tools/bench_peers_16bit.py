#!/usr/bin/env python3
"""Side-by-side benchmark of one AdamW step on bfloat16 parameters: libadamw (through its C ABI,
with ctypes) in Keras' bfloat16 semantics and with float32 master weights, against
torch.optim.AdamW(fused=True) on bfloat16 parameters, on the CPU. It measures; it asserts nothing.

Each optimizer runs in a process of its own (torch starts a thread pool of its own, which would
disturb the others), and the processes take turns: every round starts each one afresh, times
`--steps` steps after two warm-up steps, and reports seconds per step; the median round counts.
Bytes moved per parameter: 14 for the bfloat16 step (value, m and v read and written, the
gradient read, 2 bytes each; torch keeps its state in the parameter's dtype too) and 30 with
float32 master weights (a float32 master, m and v read and written, the bfloat16 gradient read
and the bfloat16 value written).

Setup (a venv outside the repository; torch from PyPI brings its CUDA libraries, a few GB):
    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch "numpy<2"
    cargo build --release
Run:
    /tmp/torchenv/bin/python tools/bench_peers_16bit.py [--sizes 1M,16M] [--threads 2] [--rounds 5]
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_peers as peers  # noqa: E402  (the C structures, the library loader, cpu_model)

BFLOAT16 = 4
HYPER = {"learning_rate": 1e-3, "weight_decay": 0.004, "epsilon": 1e-7, "beta_1": 0.9, "beta_2": 0.99}
BYTES = {"libadamw bfloat16": 14, "libadamw bfloat16 + master": 30, "torch fused bfloat16": 14}


def bf16_bits(np, x):
    """float32 values rounded to bfloat16 (ties to even), as uint16 bits."""
    b = x.astype(np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


class LibAdamW16:
    def __init__(self, p_bits, g_bits, threads, master):
        self.lib = peers.load_libadamw()
        self.p, self.g = p_bits, g_bits
        self.h = ctypes.c_void_p()
        cfg = json.dumps(dict(HYPER, master_weights=master)).encode()
        assert self.lib.adamw_optimizer_from_config_json(cfg, len(cfg), ctypes.byref(self.h)) == 0
        assert self.lib.adamw_optimizer_set_threads(self.h, threads) == 0
        self.shape = (ctypes.c_size_t * 1)(p_bits.size)
        var = peers.Variable(b"w", BFLOAT16, 1, self.shape, p_bits.ctypes.data, 0, 0, 0)
        assert self.lib.adamw_optimizer_build(self.h, ctypes.byref(var), 1) == 0
        self.entry = peers.Gradient(0, BFLOAT16, p_bits.ctypes.data, p_bits.size, g_bits.ctypes.data, None, 0, None, 0)

    def step(self):
        self.lib.adamw_optimizer_apply_gradients(self.h, ctypes.byref(self.entry), 1, None)


class TorchFused16:
    def __init__(self, torch, p, g):
        self.param = torch.nn.Parameter(torch.from_numpy(p).to(torch.bfloat16))
        self.param.grad = torch.from_numpy(g).to(torch.bfloat16)
        self.opt = torch.optim.AdamW([self.param], lr=HYPER["learning_rate"], betas=(HYPER["beta_1"], HYPER["beta_2"]),
                                     eps=HYPER["epsilon"], weight_decay=HYPER["weight_decay"], fused=True)

    def step(self):
        self.opt.step()


def one_round(which, n, threads, steps):
    """Runs in the child: builds `which` over n parameters, returns seconds per step."""
    import numpy as np

    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 0.1).astype(np.float32)
    if which.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
        opt = TorchFused16(torch, p, g)
    else:
        opt = LibAdamW16(bf16_bits(np, p), bf16_bits(np, g), threads, master=which.endswith("master"))
    opt.step()
    opt.step()
    t = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1M,16M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", nargs=3, metavar=("WHICH", "N", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        which, n, steps = args.child
        print(one_round(which, int(n), args.threads, int(steps)))
        return
    print(f"cpu: {peers.cpu_model()}, nproc {os.cpu_count()}, threads {args.threads}, "
          f"flags {' '.join(peers.cpu_flags())}")
    summary = {"cpu": peers.cpu_model(), "nproc": os.cpu_count(), "threads": args.threads}
    for n in [peers.parse_size(s) for s in args.sizes.split(",")]:
        steps = max(3, (1 << 26) // n)
        times = {which: [] for which in BYTES}
        for _ in range(args.rounds):
            for which in BYTES:
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", which, str(n),
                                      str(steps)], capture_output=True, text=True, check=True)
                times[which].append(float(out.stdout.strip().splitlines()[-1]))
        torch_s = statistics.median(times["torch fused bfloat16"])
        print(f"\n{n:>10} parameters   params/s     GB/s moved   speed over torch fused")
        for which, bytes_per in BYTES.items():
            s = statistics.median(times[which])
            print(f"  {which:<28} {n / s / 1e9:7.3f} G   {n * bytes_per / s / 1e9:7.2f}      {torch_s / s:6.2f}x")
            summary[f"{which} {n}"] = {"gparams_s": round(n / s / 1e9, 3), "vs_torch_fused": round(torch_s / s, 3)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
