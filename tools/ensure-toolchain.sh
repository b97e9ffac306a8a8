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
if ! (source tools/go-env.sh) 2>/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "installing: golang-1.23-go (bookworm-backports)"
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
        echo "deb http://deb.debian.org/debian ${codename}-backports main" >/etc/apt/sources.list.d/adamw-backports.list
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t "${codename}-backports" golang-1.23-go
    fi
    (source tools/go-env.sh) || { echo "error: install Go 1.21 or newer and retry" >&2; exit 1; }
fi
