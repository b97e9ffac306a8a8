#!/usr/bin/env bash
# Installs libadamw into a temporary prefix; checks the size of the main example linked
# statically against it; builds examples/cmake against it with CMake
# (find_package, shared and static) and with pkg-config; checks that the shared library exports
# only adamw_* symbols and has the SONAME libadamw.so.<ABI>; copies the Go package out of the
# tree and builds, vets and tests it and a consumer module against the installed library;
# packages the Rust crate and builds it from the package alone.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
bash tools/install.sh "$prefix" > /dev/null

echo "-- the main example linked statically against the installed archive: at most 4 MB, unstripped"
cc -std=c11 -O2 -I"$prefix/include" examples/c/train_linear.c "$prefix/lib/libadamw.a" -lm -ldl -lpthread \
    -Wl,--gc-sections -o "$work/train_linear"
bytes=$(wc -c < "$work/train_linear")
[ "$bytes" -le 4000000 ] || { echo "error: the static main example is $bytes bytes, over 4 MB"; exit 1; }
echo "$bytes bytes"

echo "-- exported symbols and SONAME"
others=$(nm -D --defined-only "$prefix/lib/libadamw.so" | awk '{print $3}' | grep -v '^adamw_' || true)
if [ -n "$others" ]; then echo "error: libadamw.so exports non-adamw symbols:"; echo "$others"; exit 1; fi
count=$(nm -D --defined-only "$prefix/lib/libadamw.so" | grep -c ' adamw_')
abi=$(sed -n 's/^#define ADAMW_ABI_VERSION \([0-9]*\)/\1/p' include/adamw.h)
soname=$(readelf -d "$prefix/lib/libadamw.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libadamw.so.$abi" ] || { echo "error: SONAME is '$soname', expected libadamw.so.$abi"; exit 1; }
echo "exports $count adamw_* symbols and nothing else; SONAME $soname"

for kind in shared static; do
    echo "-- CMake consumer ($kind)"
    static=OFF; [ $kind = static ] && static=ON
    cmake -S "$root/examples/cmake" -B "$work/build-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
        -DADAMW_USE_STATIC_LIBS=$static -DCMAKE_BUILD_TYPE=Release > "$work/cmake-$kind.log"
    cmake --build "$work/build-$kind" > "$work/build-$kind.log"
    "$work/build-$kind/consumer_c"
    "$work/build-$kind/consumer_cpp"
done
# ldd's output is read whole before grep -q looks at it: with pipefail, grep -q leaving early
# would fail the pipeline whenever ldd is still writing (SIGPIPE).
static_deps=$(ldd "$work/build-static/consumer_c")
shared_deps=$(ldd "$work/build-shared/consumer_c")
if grep -q libadamw <<< "$static_deps"; then echo "error: the static consumer loads libadamw.so"; exit 1; fi
grep -q "libadamw.so.$abi" <<< "$shared_deps" || { echo "error: the shared consumer does not load libadamw.so.$abi"; echo "$shared_deps"; exit 1; }

echo "-- pkg-config consumer"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -std=c11 -Wall -Werror "$root/examples/cmake/main.c" $(pkg-config --cflags --libs adamw) -o "$work/pc_consumer"
LD_LIBRARY_PATH="$prefix/lib" "$work/pc_consumer"
echo "-- Go: the package copied out of the tree, against the installed library (pkg-config)"
source tools/go-env.sh
cp -r bindings/go "$work/go-package"
rm -rf "$work/go-package/pkgconfig" # the checkout's .pc: the copy must find the installed one
mkdir -p "$work/go-consumer"
printf 'module consumer\n\ngo 1.21\n\nrequire libadamw/go v0.0.0\n\nreplace libadamw/go => %s\n' \
    "$work/go-package" > "$work/go-consumer/go.mod"
cp tests/packaging/go_consumer.go "$work/go-consumer/main.go"
(
    # Only the installed library's .pc; the tests read Keras' data from the checkout.
    export PKG_CONFIG_PATH="$prefix/lib/pkgconfig" ADAMW_CHECKOUT="$root"
    cd "$work/go-package" && go vet ./... && go test -count=1 ./... | grep -E '^(ok|FAIL)'
    cd "$work/go-consumer" && go vet . && go run .
)
echo "-- the Rust crate: cargo package (the files crates.io would get, built on their own)"
extra=$(cargo package --list --locked --allow-dirty 2>/dev/null | grep -E '^(tests|tools|fuzz|bindings|examples|benches)/' || true)
[ -z "$extra" ] || { echo "error: the crate would carry files it does not need:"; echo "$extra"; exit 1; }
rm -f target/package/adamw-*.crate
cargo package --locked --allow-dirty > "$work/package.log" 2>&1 || { cat "$work/package.log"; echo "error: cargo package failed"; exit 1; }
ls target/package/adamw-*.crate
echo "packaging: 3 C/C++ consumers, a Go consumer and the crate built and ran"
