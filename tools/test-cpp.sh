#!/usr/bin/env bash
# Builds the C++ wrapper's tests as C++17 and as C++20 (std::span), with -Wall -Wextra -Werror
# and AddressSanitizer + UBSan, and runs them against Keras' smoke trajectories.
# Expects `cargo build --release` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/cpp-tests
mkdir -p "$out"
python3 tools/smoke_to_text.py tests/conformance/smoke_cases.json tests/conformance/smoke_expected.json > "$out/smoke.txt"
cxx=${CXX:-g++}
for std in c++17 c++20; do
    echo "-- $cxx -std=$std"
    "$cxx" -std=$std -g -O1 -Wall -Wextra -Wpedantic -Werror -Iinclude -Ibindings/cpp/include \
        -fsanitize=address,undefined -fno-sanitize-recover=all \
        tests/cpp/test_wrapper.cpp tests/cpp/second_tu.cpp target/release/libadamw.a -lm -ldl -lpthread \
        -o "$out/test_wrapper_$std"
    "$out/test_wrapper_$std" "$out/smoke.txt"
done
