#!/usr/bin/env bash
# Makes sure the tools the build and tests need are present, installing what is missing on a
# Debian machine (apt-get, as root). Fails loudly when something cannot be had.
set -euo pipefail
missing=()
command -v cargo >/dev/null || { echo "error: cargo (Rust) is required: install it with rustup" >&2; exit 1; }
command -v cc >/dev/null || missing+=(build-essential)
command -v c++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3)
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
# The Go package needs Go 1.21 or newer (runtime.Pinner); Debian bookworm's own is 1.19, so Go
# comes from bookworm-backports (golang-1.23-go, in /usr/lib/go-1.23/bin; tools/go-env.sh finds it).
go_env="$(dirname "$0")/go-env.sh"
if ! (source "$go_env") 2>/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && grep -qx 'VERSION_CODENAME=bookworm' /etc/os-release; then
        echo "installing: golang-1.23-go (bookworm-backports)"
        list=/etc/apt/sources.list.d/adamw-bookworm-backports.list
        echo "deb http://deb.debian.org/debian bookworm-backports main" >"$list"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports golang-1.23-go; }; then
            rm -f "$list"
            echo "error: could not install golang-1.23-go from bookworm-backports" >&2
            exit 1
        fi
    fi
    (source "$go_env") || { echo "error: install Go 1.21 or newer and retry" >&2; exit 1; }
fi
