#!/usr/bin/env bash
# Builds libadamw (the `dist` profile: release, linked as one unit) and installs it under PREFIX (default /usr/local):
#   PREFIX/include/adamw.h, PREFIX/include/adamw/adamw.hpp
#   PREFIX/lib/libadamw.a, libadamw.so.VERSION (+ libadamw.so.ABI and libadamw.so links)
#   PREFIX/lib/pkgconfig/adamw.pc and adamw-static.pc (static linking: the Go package's), PREFIX/lib/cmake/adamw/adamwConfig*.cmake
# usage: tools/install.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
# The first line of `file` that matches `pattern` (a bash regex with one group): its group.
# Bash alone, so that installing needs only cargo, a C compiler and coreutils.
first_match() {
    local line
    while IFS= read -r line; do
        if [[ $line =~ $2 ]]; then
            echo "${BASH_REMATCH[1]}"
            return
        fi
    done < "$1"
    echo "error: nothing in $1 matches $2" >&2
    exit 1
}
version=$(first_match Cargo.toml '^version = "(.*)"')
abi=$(first_match include/adamw.h '^#define ADAMW_ABI_VERSION ([0-9]+)')
# The `dist` profile: the release build linked as one unit (Cargo.toml).
cargo build --profile dist --locked --lib
mkdir -p "$prefix/include/adamw" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/adamw"
install -m 644 include/adamw.h "$prefix/include/adamw.h"
install -m 644 bindings/cpp/include/adamw/adamw.hpp "$prefix/include/adamw/adamw.hpp"
install -m 644 target/dist/libadamw.a "$prefix/lib/libadamw.a"
# The archive carries the Rust standard library's objects with their own debug info, every
# object's local symbols (long generic names, about 5 MB of a static program) and each crate's
# LLVM bitcode (for link-time optimization, done already): the shipped archive keeps only the
# code and the symbols linking needs (21 MB instead of 64 MB), as the shared library does.
if command -v strip >/dev/null; then
    strip --strip-unneeded --remove-section=.llvmbc --remove-section=.llvmcmd "$prefix/lib/libadamw.a"
fi
install -m 755 target/dist/libadamw.so "$prefix/lib/libadamw.so.$version"
ln -sf "libadamw.so.$version" "$prefix/lib/libadamw.so.$abi"
ln -sf "libadamw.so.$abi" "$prefix/lib/libadamw.so"
subst() {
    local text
    text=$(< "$1")
    text=${text//@PREFIX@/$prefix}
    text=${text//@VERSION@/$version}
    printf '%s\n' "${text//@ABI@/$abi}" > "$2"
}
subst packaging/adamw.pc.in "$prefix/lib/pkgconfig/adamw.pc"
subst packaging/adamw-static.pc.in "$prefix/lib/pkgconfig/adamw-static.pc"
subst packaging/adamwConfig.cmake "$prefix/lib/cmake/adamw/adamwConfig.cmake"
subst packaging/adamwConfigVersion.cmake "$prefix/lib/cmake/adamw/adamwConfigVersion.cmake"
echo "installed libadamw $version (ABI $abi) under $prefix"
