#!/usr/bin/env bash
# Makes sure the tools the build and tests need are present, installing what is missing on a
# Debian machine (apt-get, as root, from the machine's configured package sources). Fails loudly
# when something cannot be had.
#   bash tools/ensure-toolchain.sh            everything the test command needs
#   bash tools/ensure-toolchain.sh --minimal  what the main job needs: cargo and a C compiler
set -euo pipefail
minimal=0
[ "${1:-}" = --minimal ] && minimal=1

# Installs Debian packages, or fails naming them.
install_packages() {
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "installing: $*"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else
        echo "error: missing $*; install them and retry" >&2
        exit 1
    fi
}

command -v cargo >/dev/null || { echo "error: cargo (Rust) is required: install it with rustup" >&2; exit 1; }
missing=()
command -v cc >/dev/null || missing+=(build-essential)
if [ $minimal = 0 ]; then
    command -v c++ >/dev/null || missing+=(g++)
    command -v python3 >/dev/null || missing+=(python3)
    command -v cmake >/dev/null || missing+=(cmake)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v valgrind >/dev/null || missing+=(valgrind)
    command -v mpicc >/dev/null || missing+=(libopenmpi-dev)
    command -v mpirun >/dev/null || missing+=(openmpi-bin)
fi
[ ${#missing[@]} -eq 0 ] || install_packages "${missing[@]}"
[ $minimal = 1 ] && exit 0

# The Go package needs Go 1.21 or newer (runtime.Pinner); Debian bookworm's own is 1.19, so Go
# comes from bookworm-backports (golang-1.23-go, in /usr/lib/go-1.23/bin; tools/go-env.sh finds
# it), taken from the mirror the machine already uses for bookworm.
go_env="$(dirname "$0")/go-env.sh"
if ! (source "$go_env") 2>/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && grep -qx 'VERSION_CODENAME=bookworm' /etc/os-release; then
        mirror=$(python3 "$(dirname "$0")/debian_mirror.py" bookworm) ||
            { echo "error: no configured package source serves bookworm; add bookworm-backports and retry" >&2; exit 1; }
        echo "installing: golang-1.23-go (bookworm-backports from $mirror)"
        list=/etc/apt/sources.list.d/adamw-bookworm-backports.list
        echo "deb $mirror bookworm-backports main" >"$list"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports golang-1.23-go; }; then
            rm -f "$list"
            echo "error: could not install golang-1.23-go from bookworm-backports" >&2
            exit 1
        fi
    fi
    (source "$go_env") || { echo "error: install Go 1.21 or newer and retry" >&2; exit 1; }
fi
