#!/usr/bin/env bash
# Builds the C test programs against libadamw.a with warnings as errors and AddressSanitizer +
# UndefinedBehaviorSanitizer, then runs them. Expects `cargo build --release` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/c-tests
mkdir -p "$out"
cc=${CC:-cc}
flags=(-std=c11 -g -O1 -Wall -Wextra -Wpedantic -Werror -ffp-contract=off -Iinclude -fsanitize=address,undefined -fno-sanitize-recover=all)
for program in test_api test_loads test_statuses test_parallel_for; do
    echo "-- tests/c/$program.c"
    "$cc" "${flags[@]}" "tests/c/$program.c" target/release/libadamw.a -lm -ldl -lpthread -o "$out/$program"
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$out/$program"
done
