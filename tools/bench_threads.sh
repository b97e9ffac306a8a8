#!/usr/bin/env bash
# libadamw's threads against an OpenMP program's own AdamW loop, and libadamw on that program's
# OpenMP threads through the parallel-for hook (tools/bench/threads.c). Usage:
#   bash tools/bench_threads.sh [seconds per round, default 0.05] [way: 0, 1 or 2] [shape filter]
# Extra environment (OMP_WAIT_POLICY, OMP_NUM_THREADS) is passed through. It measures only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --lib
out=target/bench-threads
mkdir -p "$out"
gcc -O3 -march=native -fno-math-errno -fopenmp -Iinclude tools/bench/threads.c target/release/libadamw.a -lm -ldl -lpthread -o "$out/threads"
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc), OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}"
"$out/threads" "$@"
