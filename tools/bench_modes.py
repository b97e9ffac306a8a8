#!/usr/bin/env python3
"""Every step mode of libadamw next to torch's fused AdamW in the matching mode. It measures; it
asserts nothing.

libadamw's figures come from `cargo bench --bench modes` (benches/modes.rs: G parameters per
second and the fraction of memory speed against a memory probe that moves the same bytes,
alternating in that process). torch runs in a process of its own (it starts a thread pool of its
own, which would disturb the other), and the two processes take turns, `--rounds` times; the
median round counts. torch's modes: `AdamW(fused=True)` on float32, bfloat16 and float16
parameters, with `amsgrad=True`, and float32 after `torch.nn.utils.clip_grad_norm_` (a global
clip norm; with one tensor it is also the per-tensor clip).

Setup (a venv outside the repository; torch from PyPI):
    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch "numpy<2"
Run (from the repository root):
    /tmp/torchenv/bin/python tools/bench_modes.py [--sizes 64K,1M,16M] [--threads 2] [--rounds 3]
Prints a Markdown table and, with --json FILE, writes every figure.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# libadamw's mode -> torch's matching mode (None: torch has no such mode).
TORCH_MODE = {
    "f32": "f32",
    "f32_clipnorm": "f32_clip",
    "f32_global_clipnorm": "f32_clip",
    "f32_clipvalue": None,
    "f32_amsgrad": "f32_amsgrad",
    "f32_ema": None,
    "f32_loss_scale": None,
    "f64": None,
    "bf16": "bf16",
    "f16": "f16",
    "bf16_master": None,
    "f16_master_loss_scale": None,
    "bf16_master_global_clipnorm": None,
    "f32_sparse_10pct": None,
}


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def torch_worker(modes, sizes, threads):
    """Seconds per step of torch's fused AdamW for each (mode, size), printed as JSON."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for mode in modes:
        dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(mode, torch.float32)
        for label in sizes:
            n = parse_size(label)
            p = torch.nn.Parameter((torch.rand(n) - 0.5).to(dtype))
            p.grad = ((torch.arange(n) % 13).float() * 0.01 - 0.06).to(dtype)
            opt = torch.optim.AdamW(
                [p], lr=1e-3, weight_decay=0.004, eps=1e-7, amsgrad=(mode == "f32_amsgrad"), fused=True
            )

            def step():
                if mode == "f32_clip":
                    torch.nn.utils.clip_grad_norm_([p], 1e-3)
                opt.step()

            step()
            step()
            reps = max(4, min(4096, (1 << 25) // n))
            times = []
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(reps):
                    step()
                times.append((time.perf_counter() - t) / reps)
            out[f"{mode}/{label}"] = statistics.median(times)
    print(json.dumps(out))


def libadamw_round(modes, sizes, threads):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = ["cargo", "bench", "--locked", "--bench", "modes", "--", "--sizes", ",".join(sizes), "--threads",
           str(threads), "--rounds", "5", "--modes", ",".join(modes), "--json", path]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        data = json.load(f)
    os.unlink(path)
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64K,1M,16M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default=",".join(TORCH_MODE))
    ap.add_argument("--json")
    ap.add_argument("--torch-worker", action="store_true")
    args = ap.parse_args()
    sizes, modes = args.sizes.split(","), args.modes.split(",")
    if args.torch_worker:
        return torch_worker(modes, sizes, args.threads)
    torch_modes = sorted({TORCH_MODE[m] for m in modes if TORCH_MODE.get(m)})
    ours, theirs, machine = {}, {}, {}
    for _ in range(args.rounds):
        data = libadamw_round(modes, sizes, args.threads)
        machine = {k: data[k] for k in ("cpu", "nproc", "simd")}
        for r in data["results"]:
            ours.setdefault((r["mode"], r["n"]), []).append(r)
        if torch_modes:
            cmd = [sys.executable, __file__, "--torch-worker", "--modes", ",".join(torch_modes), "--sizes",
                   ",".join(sizes), "--threads", str(args.threads)]
            got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            for key, seconds in got.items():
                theirs.setdefault(key, []).append(seconds)
    print(f"cpu \"{machine['cpu']}\", nproc {machine['nproc']}, threads {args.threads}, libadamw simd {machine['simd']}, "
          f"median of {args.rounds} alternating rounds\n")
    print("| mode | size | libadamw G params/s | of memory speed | torch fused G params/s | libadamw ÷ torch |")
    print("|---|---|---|---|---|---|")
    rows = []
    for mode in modes:
        for label in sizes:
            n = parse_size(label)
            runs = ours.get((mode, n), [])
            if not runs:
                continue
            rate = statistics.median(r["gparams_s"] for r in runs)
            fraction = statistics.median(r["of_memory_speed"] for r in runs)
            peer = TORCH_MODE.get(mode)
            seconds = theirs.get(f"{peer}/{label}") if peer else None
            torch_rate = n / statistics.median(seconds) / 1e9 if seconds else None
            ratio = rate / torch_rate if torch_rate else None
            rows.append({"mode": mode, "n": n, "gparams_s": rate, "of_memory_speed": fraction,
                         "torch_mode": peer, "torch_gparams_s": torch_rate, "ratio": ratio})
            t = f"{torch_rate:.3f} ({peer})" if torch_rate else "—"
            q = f"{ratio:.2f}×" if ratio else "—"
            print(f"| {mode} | {label} | {rate:.3f} | {fraction:.2f} | {t} | {q} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**machine, "threads": args.threads, "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
