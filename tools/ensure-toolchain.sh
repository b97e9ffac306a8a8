#!/usr/bin/env bash
# Makes sure the tools the build and tests need are present, installing what is missing on a
# Debian machine (apt-get, as root). Fails loudly when something cannot be had.
set -euo pipefail
missing=()
command -v cargo >/dev/null || { echo "error: cargo (Rust) is required: install it with rustup" >&2; exit 1; }
command -v cc >/dev/null || missing+=(build-essential)
command -v c++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3)
command -v go >/dev/null || missing+=(golang-go)
command -v cmake >/dev/null || missing+=(cmake)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v mpicc >/dev/null || missing+=(libopenmpi-dev)
command -v mpirun >/dev/null || missing+=(openmpi-bin)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "installing: ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "error: missing ${missing[*]}; install them and retry" >&2
        exit 1
    fi
fi
