# Sourced by the scripts that run Go: puts a Go with runtime.Pinner (1.21 or newer) first on PATH.
# tools/ensure-toolchain.sh installs one (Debian's bookworm-backports) where the system's is older.
go_ok() { "$1" version 2>/dev/null | awk '{split(substr($3, 3), v, "."); exit !(v[1] > 1 || (v[1] == 1 && v[2] >= 21))}'; }
if ! command -v go >/dev/null || ! go_ok go; then
    for dir in /usr/lib/go-1.2[1-9]/bin /usr/local/go/bin; do
        if [ -x "$dir/go" ] && go_ok "$dir/go"; then
            export PATH="$dir:$PATH"
            break
        fi
    done
fi
if ! command -v go >/dev/null || ! go_ok go; then
    echo "error: the Go package needs Go 1.21 or newer (runtime.Pinner); tools/ensure-toolchain.sh installs it" >&2
    return 1 2>/dev/null || exit 1
fi
unset -f go_ok
# The Go package finds libadamw through pkg-config (adamw-static): this checkout's first.
checkout_pc="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bindings/go/pkgconfig"
export PKG_CONFIG_PATH="$checkout_pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
unset checkout_pc
