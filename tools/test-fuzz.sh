#!/usr/bin/env bash
# Short fuzz runs (cargo-fuzz / libFuzzer with AddressSanitizer) of the four targets in fuzz/:
# from_config, load_own_variables, keras_file, api_sequence. Each runs SECONDS (default 30) from the
# committed seeds in fuzz/corpus/ plus a working corpus in fuzz/target/corpus/. A crash fails.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
# Long runs: tools/test-fuzz.sh 3600 (or a single target: TARGETS=api_sequence tools/test-fuzz.sh 3600).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build
for target in ${TARGETS:-from_config load_own_variables keras_file api_sequence}; do
    mkdir -p "target/corpus/$target"
    log="target/fuzz-$target.log"
    if ! cargo fuzz run "$target" "target/corpus/$target" "corpus/$target" -- -max_total_time="$seconds" > "$log" 2>&1; then
        tail -n 40 "$log"
        echo "error: fuzz target $target failed (the crashing input is in fuzz/artifacts/$target/)"
        exit 1
    fi
    echo "$target: $(grep -aE '^Done [0-9]+ runs' "$log"), $(grep -aE 'DONE' "$log" | grep -aoE 'cov: [0-9]+' | head -n 1), no crash"
done
