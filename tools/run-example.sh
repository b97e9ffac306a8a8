#!/usr/bin/env bash
# The main job: builds libadamw (release) and runs the main C example, which trains a linear
# regression and prints the loss falling.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/ensure-toolchain.sh --minimal # cargo and a C compiler: all the main job needs
cargo build --release
mkdir -p target/examples
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude examples/c/train_linear.c \
    target/release/libadamw.a -lm -ldl -lpthread -o target/examples/train_linear
target/examples/train_linear
