#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests (Keras conformance at 0 ulp, header sync),
# the C API test program and the C++ wrapper's tests under AddressSanitizer + UBSan, sharded
# state under mpirun, the Go package's tests under the strict cgo pointer checker (GOEXPERIMENT=cgocheck2), and the
# examples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/ensure-toolchain.sh
source tools/go-env.sh # a Go with runtime.Pinner (1.21+), installed by ensure-toolchain.sh
echo "== NVRTC and ptxas (PyPI wheels: the CUDA kernels are compiled and assembled without a GPU)"
source tools/ensure-cuda-tools.sh
export ADAMW_REQUIRE_NVRTC=1 # the kernels' NVRTC test fails rather than skips
# The tests build the library with the CUDA engine (a default feature) and with its kernels
# compiled for the host too (`host-kernels`), so that the device engine runs here.
features=(--features host-kernels)
echo "== build (release)"
cargo build --release --locked "${features[@]}"
echo "== format and lints (also without the CUDA engine)"
cargo fmt --check
cargo clippy --release --locked --all-targets "${features[@]}" -- -D warnings
cargo clippy --release --locked --lib --no-default-features -- -D warnings
echo "== API documentation as docs.rs builds it (Cargo.toml's package.metadata.docs.rs; warnings are errors)"
DOCS_RS=1 RUSTDOCFLAGS="--cfg docsrs -D warnings" cargo doc --no-deps --locked
echo "== Rust tests (the kernels through NVRTC and ptxas; on the host against the CPU engine)"
cargo test --release --locked "${features[@]}"
echo "== benchmarks compile (measured separately: cargo bench, tools/bench_peers.py)"
cargo bench --locked --no-run "${features[@]}"
echo "== C API tests (ASan + UBSan)"
bash tools/test-c.sh
echo "== sharded state on MPI ranks (mpirun -np 2, -np 3)"
bash tools/test-mpi.sh
echo "== valgrind (C tests and examples) and the C examples under ASan + UBSan"
bash tools/test-memcheck.sh
echo "== fuzzing, 30 s per target (cargo-fuzz, AddressSanitizer)"
bash tools/test-fuzz.sh 30
echo "== C++ wrapper tests (C++17 and C++20, ASan + UBSan; without exceptions; threads under ThreadSanitizer)"
bash tools/test-cpp.sh
echo "== Go package tests (the strict pointer checker, GOEXPERIMENT=cgocheck2; examples; 0 allocations a step)"
test -z "$(gofmt -l bindings/go examples/go)" || { gofmt -l bindings/go examples/go; echo "error: gofmt" >&2; exit 1; }
(cd bindings/go && go vet ./... && GOEXPERIMENT=cgocheck2 ADAMW_REQUIRE_CGOCHECK2=1 go test -count=1 ./... &&
    go test -count=1 -run '^$' -bench . -benchtime 3x ./adamw | grep -E 'allocs/op|^ok')
echo "== the README's and docs' C, C++ and Go snippets compile (the Rust ones ran as doctests)"
python3 tools/check_snippets.py
echo "== packaging (install, CMake and pkg-config consumers, exported symbols)"
bash tools/test-packaging.sh
echo "== examples"
bash tools/run-examples.sh
echo "== all tests passed"
