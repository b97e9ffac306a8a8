#!/usr/bin/env bash
# Memory checks of the C surface: the C API test program and the C examples under valgrind
# (--leak-check=full; the shared pool's idle worker threads are "possibly lost", so only definite leaks
# fail), and the C examples under AddressSanitizer + UBSan (the test program already runs under
# them in tools/test-c.sh). Expects `cargo build --release` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "error: valgrind is required (apt-get install valgrind)"; exit 1; }
out=target/memcheck
mkdir -p "$out" target/c-tests
libs=(target/release/libadamw.a -lm -ldl -lpthread)
wrap=-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign
vg=(valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1)

cc -std=c11 -g -O1 -Iinclude tests/c/test_api.c "${libs[@]}" -o "$out/test_api"
cc -std=c11 -g -O1 -Iinclude examples/c/train_linear.c "${libs[@]}" -o "$out/train_linear"
cc -std=c11 -g -O1 -Iinclude examples/c/game_loop.c "${libs[@]}" $wrap -o "$out/game_loop"
for program in test_api train_linear game_loop; do
    echo "-- valgrind $program"
    "${vg[@]}" "$out/$program" > "$out/$program.log" 2>&1 || { tail -n 40 "$out/$program.log"; exit 1; }
    grep -E "passed, |resumed from|weights checksum|definitely lost|ERROR SUMMARY" "$out/$program.log" | sed 's/^==[0-9]*== *//'
done

for example in train_linear game_loop keras_round_trip; do
    echo "-- ASan + UBSan $example"
    extra=(); [ $example = game_loop ] && extra=($wrap)
    cc -std=c11 -g -O1 -Wall -Wextra -Werror -Iinclude -fsanitize=address,undefined -fno-sanitize-recover=all \
        "examples/c/$example.c" "${libs[@]}" "${extra[@]}" -o "$out/${example}_asan"
    "$out/${example}_asan" | tail -n 1
done
