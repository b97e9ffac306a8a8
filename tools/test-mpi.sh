#!/usr/bin/env bash
# Sharded state on real MPI ranks (OpenMPI): builds tests/mpi/test_sharded.c against
# libadamw.a and runs it under `mpirun -np 2` and `mpirun -np 3 --oversubscribe` (more ranks
# than this machine's cores). Each rank checks its shards against a one-process optimizer after
# every step. Expects `cargo build --release` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/mpi-tests
mkdir -p "$out"
mpicc -std=c11 -g -O1 -Wall -Wextra -Wpedantic -Werror -Iinclude tests/mpi/test_sharded.c target/release/libadamw.a \
    -lm -ldl -lpthread -o "$out/test_sharded"
# OpenMPI refuses to start as root unless told; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
timeout 300 mpirun -np 2 "$out/test_sharded"
timeout 300 mpirun -np 3 --oversubscribe "$out/test_sharded"
