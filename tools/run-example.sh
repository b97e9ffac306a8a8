#!/usr/bin/env bash
# The main job: builds and installs libadamw and runs the main C example, which trains a linear
# regression and prints the loss falling.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/ensure-toolchain.sh --minimal # cargo and a C compiler: all the main job needs
# Built and installed as a user gets it (tools/install.sh), into target/example-prefix, and
# linked statically as the README says: -Wl,--gc-sections leaves out what the program never calls.
prefix="$PWD/target/example-prefix"
bash tools/install.sh "$prefix"
mkdir -p target/examples
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -I"$prefix/include" examples/c/train_linear.c \
    "$prefix/lib/libadamw.a" -lm -ldl -lpthread -Wl,--gc-sections -o target/examples/train_linear
echo "target/examples/train_linear: $(wc -c < target/examples/train_linear) bytes, statically linked"
target/examples/train_linear
