#!/usr/bin/env bash
# The Go package's step against the same step in C, side by side: for each case, ROUNDS rounds
# (default 9), each running the C loop (tools/bench/go_peer.c) and the Go benchmark
# (bindings/go/adamw/bench_test.go) in processes of their own, taking turns (who goes first
# alternates from round to round), with the same
# iteration count. Prints a Markdown table of the medians and the ratio Go / C. It measures; it
# asserts nothing.
#
#   tools/bench_go.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/go-env.sh
rounds=${1:-9}
cargo build --release --locked
out=target/bench-go
mkdir -p "$out"
cc -std=c11 -O2 -Wall -Iinclude tools/bench/go_peer.c target/release/libadamw.a -lm -ldl -lpthread -o "$out/go_peer"
(cd bindings/go && go test -c -o "../../$out/adamw.test" ./adamw)

# name, Go benchmark, elements per variable, variables, global_clipnorm, iterations
cases=(
    "1K dense|^BenchmarkDense\$/^1K\$|1024|1|0|20000"
    "64K dense|^BenchmarkDense\$/^64K\$|65536|1|0|2000"
    "1M dense|^BenchmarkDense\$/^1M\$|1048576|1|0|500"
    "16M dense|^BenchmarkDense\$/^16M\$|16777216|1|0|10"
    "100 x 1K, global clipnorm|^BenchmarkManyVariables\$|1024|100|1|2000"
)
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "machine: nproc $(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1), $(go version | cut -d' ' -f3)"
echo
echo "| step | C (µs) | Go (µs) | Go / C |"
echo "|---|---|---|---|"
for c in "${cases[@]}"; do
    IFS='|' read -r name bench n count clip iterations <<<"$c"
    : >"$out/c.txt"
    : >"$out/go.txt"
    run_c() { "$out/go_peer" "$n" "$count" "$clip" "$iterations" >>"$out/c.txt"; }
    run_go() {
        "$out/adamw.test" -test.run '^$' -test.bench "$bench" -test.benchtime "${iterations}x" |
            awk '/ns\/op/ {for (i = 1; i < NF; i++) if ($(i + 1) == "ns/op") print $i}' >>"$out/go.txt"
    }
    for ((r = 0; r < rounds; r++)); do
        if ((r % 2 == 0)); then run_c && run_go; else run_go && run_c; fi # who goes first alternates
    done
    c_ns=$(median <"$out/c.txt")
    go_ns=$(median <"$out/go.txt")
    awk -v name="$name" -v c="$c_ns" -v g="$go_ns" \
        'BEGIN {printf "| %s | %.1f | %.1f | %.3f |\n", name, c / 1000, g / 1000, g / c}'
done
