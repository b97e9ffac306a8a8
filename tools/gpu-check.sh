#!/usr/bin/env bash
# The CUDA engine on a real GPU, in one run of under 8 minutes (a machine with an NVIDIA GPU and
# its driver; nothing is downloaded):
#   1. every conformance case through the C ABI on the GPU (adamw-replay --device cuda), compared
#      at 0 ulp with Keras' results, which the CPU engine reproduces;
#   2. the device sections of the Rust tests, on CUDA (ADAMW_TEST_DEVICE=cuda);
#   3. examples/c/cuda_trainer.c on the GPU (the caller's stream; the CPU engine's bits);
#   4. the benchmark (benches/device.rs): GB/s of a step against a device-to-device copy for 1M
#      to 256M parameters, and the host time of a step over 100 variables of 1K; then
#      torch.optim.AdamW(fused=True) at the same sizes, if torch with CUDA is importable.
# NVRTC (libnvrtc.so.12) must be loadable: from a CUDA toolkit, or the nvidia-cuda-nvrtc-cu12
# wheel in a Python environment (torch's), both looked for below. Builds with cargo when it is
# there; otherwise uses binaries built beforehand in target/release (carried with the tree).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

# NVRTC: LD_LIBRARY_PATH as given, a toolkit, or a Python environment's wheel.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import site,glob; print(" ".join(glob.glob(p + "/nvidia/cuda_nvrtc/lib") for p in site.getsitepackages()))' 2>/dev/null) \
    target/cuda-tools/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib; do
    [ -e "$dir/libnvrtc.so.12" ] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

if command -v cargo >/dev/null; then
    cargo build --release --locked --bins
    cargo bench --locked --bench device --no-run
fi
bin=target/release
bench=$(ls -t target/release/deps/device-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)

echo "== conformance on the GPU"
status=0
for pair in cases:expected cases_16bit:expected_16bit smoke_cases:smoke_expected \
    mixed_precision_cases:mixed_precision_expected; do
    cases="tests/conformance/${pair%%:*}.json"
    expected="tests/conformance/${pair##*:}.json"
    "$bin/adamw-replay" --device cuda "$cases" > "$out/${pair%%:*}.cuda.json"
    # The device reports jit_compile true where Keras on a CPU reports false.
    python3 - "$out/${pair%%:*}.cuda.json" <<'PY'
import json, sys
def fix(x):
    if isinstance(x, dict):
        return {k: (False if k == "jit_compile" else fix(v)) for k, v in x.items()}
    return [fix(v) for v in x] if isinstance(x, list) else x
path = sys.argv[1]
json.dump(fix(json.load(open(path))), open(path, "w"))
PY
    if "$bin/adamw-compare" "$expected" "$out/${pair%%:*}.cuda.json" | tee "$out/${pair%%:*}.compare.txt" | tail -n 1; then
        :
    else
        status=1
    fi
done

if command -v cargo >/dev/null; then
    echo "== Rust tests of the device engine on CUDA"
    ADAMW_TEST_DEVICE=cuda cargo test --release --locked --features host-kernels --test device 2>&1 | tee "$out/device-tests.txt" | tail -n 3 || status=1
fi

echo "== examples/c/cuda_trainer.c: a training loop on the caller's stream, the CPU engine's bits"
if command -v cc >/dev/null && [ -e "$bin/libadamw.a" ]; then
    cc -std=c11 -O2 -Iinclude examples/c/cuda_trainer.c "$bin/libadamw.a" -lm -ldl -lpthread \
        -o "$out/cuda_trainer" && "$out/cuda_trainer" | tee "$out/cuda_trainer.txt" || status=1
else
    echo "no C compiler or no $bin/libadamw.a: the example is not run" | tee "$out/cuda_trainer.txt"
fi

echo "== benchmark"
if [ -n "$bench" ]; then
    "$bench" | tee "$out/bench.txt"
else
    echo "error: no benchmark binary (cargo bench --bench device --no-run)" >&2
    status=1
fi
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    python3 tools/bench_torch_cuda.py | tee "$out/torch.txt"
else
    echo "torch with CUDA is not importable here: no torch comparison" | tee "$out/torch.txt"
fi
exit $status
