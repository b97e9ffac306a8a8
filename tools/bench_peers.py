#!/usr/bin/env python3
"""Side-by-side benchmark of one AdamW step: libadamw (through its C ABI, with ctypes) against
torch.optim.AdamW (foreach and fused=True), tf_keras.optimizers.AdamW (eager) and optax.adamw
under jax.jit, on the same float32 data, interleaved in one process, next to a memory probe (a
pass that reads the four arrays and writes three, with no division or square root, in C with
OpenMP). It measures; it asserts nothing.

Setup (a venv outside the repository; torch from PyPI brings several GB):
    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install tensorflow-cpu==2.15.1 tf-keras==2.15.1 \
        torch matplotlib "numpy<2" && /tmp/peers/bin/pip install "jax[cpu]<0.5" "optax<0.3" "numpy<2"
    cargo build --release
Run:
    /tmp/peers/bin/python tools/bench_peers.py [--sizes 1K,64K,1M,16M,32M] [--threads 2] [--out target/bench]

Prints a table per size (parameters per second, and libadamw's speed over each peer's), the
added peak RSS of each optimizer over its state at 16M parameters, the per-call cost of small
steps, writes a plot (PNG) of parameters/s against size, and ends with one JSON line.
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from libadamw_ctypes import Gradient, Variable  # noqa: F401 (bench_peers_16bit uses them too)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_flags():
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            return [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "sse4"))]
    return []


# ---------------------------------------------------------------- libadamw through the C ABI
class LibAdamW:
    name = "libadamw"

    def __init__(self, lib, p, g, threads):
        self.lib, self.p, self.g = lib, p, g
        self.h = ctypes.c_void_p()
        cfg = json.dumps({}).encode()
        assert lib.adamw_optimizer_from_config_json(cfg, len(cfg), ctypes.byref(self.h)) == 0
        assert lib.adamw_optimizer_set_threads(self.h, threads) == 0
        self.shape = (ctypes.c_size_t * 1)(p.size)
        var = Variable(b"w", 1, 1, self.shape, p.ctypes.data, 0, 0, 0)
        assert lib.adamw_optimizer_build(self.h, ctypes.byref(var), 1) == 0
        self.entry = Gradient(0, 1, p.ctypes.data, p.size, g.ctypes.data, None, 0, None, 0)

    def step(self):
        self.lib.adamw_optimizer_apply_gradients(self.h, ctypes.byref(self.entry), 1, None)

    def close(self):
        self.lib.adamw_optimizer_free(self.h)


def load_libadamw():
    lib = ctypes.CDLL(os.path.join(ROOT, "target", "release", "libadamw.so"))
    lib.adamw_optimizer_from_config_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
    lib.adamw_optimizer_set_threads.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.adamw_optimizer_build.argtypes = [ctypes.c_void_p, ctypes.POINTER(Variable), ctypes.c_size_t]
    lib.adamw_optimizer_apply_gradients.argtypes = [ctypes.c_void_p, ctypes.POINTER(Gradient), ctypes.c_size_t, ctypes.c_void_p]
    lib.adamw_optimizer_free.argtypes = [ctypes.c_void_p]
    return lib


# ---------------------------------------------------------------- the memory probe (C, OpenMP)
class Probe:
    name = "memory probe"

    def __init__(self, lib, np, p, g):
        self.lib = lib
        self.p, self.g = p.copy(), g
        self.m, self.v = np.zeros_like(p), np.zeros_like(p)

    def step(self):
        self.lib.memory_probe(self.p.ctypes.data, self.g.ctypes.data, self.m.ctypes.data, self.v.ctypes.data, self.p.size)

    def close(self):
        pass


def build_native(threads):
    out = os.path.join(ROOT, "target", "bench")
    os.makedirs(out, exist_ok=True)
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", os.path.join(HERE, "bench", "probe.c"),
                    "-o", os.path.join(out, "libprobe.so")], check=True)
    subprocess.run(["cc", "-std=c11", "-O2", "-I" + os.path.join(ROOT, "include"), os.path.join(HERE, "bench", "calls.c"),
                    os.path.join(ROOT, "target", "release", "libadamw.a"), "-lm", "-ldl", "-lpthread",
                    "-o", os.path.join(out, "calls")], check=True)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    probe = ctypes.CDLL(os.path.join(out, "libprobe.so"))
    probe.memory_probe.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long]
    return probe, os.path.join(out, "calls")


# ---------------------------------------------------------------- peers
class Torch:
    def __init__(self, torch, p, g, mode):
        self.name = f"torch {mode}"
        self.torch = torch
        self.param = torch.nn.Parameter(torch.from_numpy(p.copy()))
        self.param.grad = torch.from_numpy(g.copy())
        kw = {"fused": True} if mode == "fused" else {"foreach": True}
        self.opt = torch.optim.AdamW([self.param], lr=1e-3, weight_decay=0.004, eps=1e-7, **kw)

    def step(self):
        self.opt.step()

    def close(self):
        pass


class Keras:
    name = "tf.keras"

    def __init__(self, tf, tf_keras, p, g):
        self.var = tf.Variable(p.copy())
        self.grad = tf.constant(g)
        self.opt = tf_keras.optimizers.AdamW()
        self.opt.build([self.var])

    def step(self):
        self.opt.apply_gradients([(self.grad, self.var)])

    def close(self):
        pass


class Optax:
    name = "optax (jax.jit)"

    def __init__(self, jax, optax, p, g):
        self.jax = jax
        self.opt = optax.adamw(1e-3, eps=1e-7, weight_decay=0.004)
        self.params = jax.device_put(p.copy())
        self.grads = jax.device_put(g.copy())
        self.state = self.opt.init(self.params)

        def update(params, state, grads):
            updates, state = self.opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        self.update = jax.jit(update, donate_argnums=(0, 1))

    def step(self):
        self.params, self.state = self.update(self.params, self.state, self.grads)
        self.params.block_until_ready()

    def close(self):
        pass


def time_round(opt, n):
    """Seconds per step, timing enough steps to cover about 20 ms."""
    reps = max(1, min(2000, (1 << 22) // max(n, 1)))
    t = time.perf_counter()
    for _ in range(reps):
        opt.step()
    return (time.perf_counter() - t) / reps


def added_rss(which, n, threads):
    """Runs one optimizer in a fresh process; returns its added peak RSS in bytes: the peak after
    creating it and taking 3 steps, over the resident size just before (inputs already touched)."""
    code = f"""
import sys, numpy as np
sys.path.insert(0, {HERE!r})
import bench_peers as b
n, threads = {n}, {threads}
p = np.full(n, 0.5, np.float32); g = np.full(n, 0.01, np.float32)
which = {which!r}
if which.startswith('torch'):
    import torch; torch.set_num_threads(threads)
    make = lambda: b.Torch(torch, p, g, which.split()[1])
elif which == 'tf.keras':
    import os; os.environ['CUDA_VISIBLE_DEVICES'] = ''
    import tensorflow as tf, tf_keras
    make = lambda: b.Keras(tf, tf_keras, p, g)
elif which == 'optax':
    import jax, optax
    make = lambda: b.Optax(jax, optax, p, g)
else:
    lib = b.load_libadamw()
    make = lambda: b.LibAdamW(lib, p, g, threads)
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1])
p[:] = 0.5; g[:] = 0.01  # touch the inputs before measuring
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
before = status('VmRSS')
opt = make()
for _ in range(3): opt.step()
print(status('VmHWM') - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode != 0:
        return None
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1K,64K,1M,16M,32M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    args = ap.parse_args()
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    probe_lib, calls_bin = build_native(args.threads)
    lib = load_libadamw()
    peers = {}
    try:
        import torch
        torch.set_num_threads(args.threads)
        peers["torch"] = torch
    except ImportError:
        print("torch: not installed")
    try:
        import tensorflow as tf
        import tf_keras
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        peers["tf"] = (tf, tf_keras)
    except ImportError:
        print("tf_keras: not installed")
    try:
        import jax
        import optax
        peers["jax"] = (jax, optax)
    except ImportError:
        print("optax/jax: not installed")

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    results = {}
    print(f"cpu: {cpu_model()}, nproc {os.cpu_count()}, threads {args.threads}, flags {' '.join(cpu_flags())}")
    for n in sizes:
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n).astype(np.float32)
        g = (rng.standard_normal(n) * 0.1).astype(np.float32)
        opts = [LibAdamW(lib, p.copy(), g, 0), Probe(probe_lib, np, p, g)]
        if "torch" in peers:
            opts += [Torch(peers["torch"], p, g, "fused"), Torch(peers["torch"], p, g, "foreach")]
        if "tf" in peers and n <= (32 << 20):
            opts.append(Keras(*peers["tf"], p, g))
        if "jax" in peers:
            opts.append(Optax(*peers["jax"], p, g))
        for o in opts:  # warm up (jit, pool start, page faults)
            o.step()
            o.step()
        times = {o.name: [] for o in opts}
        for _ in range(args.rounds):  # interleaved rounds
            for o in opts:
                times[o.name].append(time_round(o, n))
        rate = {name: n / statistics.median(t) for name, t in times.items()}
        results[n] = rate
        ours = rate["libadamw"]
        print(f"\n{n:>10} parameters   params/s      libadamw / this")
        for name, r in sorted(rate.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<18} {r / 1e9:8.3f} G   {ours / r:8.2f}x")
        for o in opts:
            o.close()
        del opts

    # memory: added peak RSS over the state (m and v: 8 bytes per parameter) at 16M parameters
    mem_n = 16 << 20
    state = 8 * mem_n
    memory = {}
    for which in ["libadamw", "torch fused", "torch foreach", "tf.keras", "optax"]:
        added = added_rss(which, mem_n, args.threads)
        if added is not None:
            memory[which] = added
    print(f"\nadded peak RSS at {mem_n} parameters (state m+v = {state / 2**20:.0f} MiB):")
    for which, added in memory.items():
        print(f"  {which:<16} {added / 2**20:8.0f} MiB   {added / state:5.2f}x the state   {(added - state) / 2**20:+8.0f} MiB beyond it")

    # per-call cost of small steps
    calls = json.loads(subprocess.run([calls_bin], capture_output=True, text=True, check=True).stdout)
    torch_call = {}
    if "torch" in peers:
        torch = peers["torch"]
        for label, shapes in [("1k", [(1024,)]), ("mlp10k", [(48, 48), (48,)] * 4 + [(48, 12), (12,)])]:
            params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
            for q in params:
                q.grad = torch.full(q.shape, 0.01)
            opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.004, eps=1e-7, fused=True)
            for _ in range(200):
                opt.step()
            best = min(timed_calls(opt.step, 2000) for _ in range(5))
            torch_call[label] = best * 1e9
    print(f"\nper call (native C loop for libadamw; Python for torch): libadamw 1K {calls['per_call_ns_1k']:.0f} ns "
          f"(threads=1: {calls['per_call_ns_1k_threads1']:.0f} ns), 10-variable MLP of {calls['mlp_params']} params "
          f"{calls['per_call_ns_mlp10k']:.0f} ns; torch fused 1K {torch_call.get('1k', float('nan')):.0f} ns, "
          f"MLP {torch_call.get('mlp10k', float('nan')):.0f} ns")

    plot(results, args.out)
    n32 = 32 << 20
    r32, r1m = results.get(n32, {}), results.get(1 << 20, {})
    ratio = lambda r, k: round(r["libadamw"] / r[k], 3) if k in r else None
    summary = {
        "cpu": cpu_model(), "nproc": os.cpu_count(), "threads": args.threads, "n": n32,
        "libadamw_gparams_s": round(r32.get("libadamw", 0) / 1e9, 3),
        "fraction_of_bandwidth_probe": ratio(r32, "memory probe"),
        "vs_torch_fused": ratio(r32, "torch fused"), "vs_torch_fused_1m": ratio(r1m, "torch fused"),
        "vs_torch_fused_64k": ratio(results.get(1 << 16, {}), "torch fused"),
        "vs_torch_foreach": ratio(r32, "torch foreach"), "vs_tf_keras": ratio(r32, "tf.keras"),
        "vs_optax": ratio(r32, "optax (jax.jit)"),
        "per_call_ns_1k": calls["per_call_ns_1k"], "per_call_ns_mlp10k": calls["per_call_ns_mlp10k"],
        "torch_fused_per_call_ns_1k": round(torch_call.get("1k", 0), 1),
        "added_rss_over_state_mib": {k: round((v - state) / 2**20) for k, v in memory.items()},
    }
    print(json.dumps(summary))


def timed_calls(fn, reps):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def plot(results, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    os.makedirs(out, exist_ok=True)
    sizes = sorted(results)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in sorted({k for r in results.values() for k in r}):
        xs = [n for n in sizes if name in results[n]]
        ys = [results[n][name] / 1e9 for n in xs]
        style = "--" if name == "memory probe" else "-o"
        ax.plot(xs, ys, style, label=name, linewidth=2.5 if name == "libadamw" else 1.2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("parameters (float32)")
    ax.set_ylabel("G parameters / s (one step)")
    ax.set_title(f"AdamW step, {cpu_model()}, {os.cpu_count()} cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = os.path.join(out, "bench_peers.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
