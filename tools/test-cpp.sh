#!/usr/bin/env bash
# Builds and runs the C++ wrapper's tests and example, all with -Wall -Wextra -Wpedantic -Werror:
#  - test_wrapper.cpp (the throwing API, against Keras' smoke trajectories) as C++17 and as
#    C++20 (std::span), with AddressSanitizer + UBSan;
#  - test_result.cpp (the Result API) without exceptions (-fno-exceptions: the header's whole
#    API) and with them, ASan + UBSan; both programs link second_tu.cpp (the two-TU include test);
#  - test_threads.cpp (threads sharing one optimizer) under ThreadSanitizer: a race it reports
#    in the wrapper or the test fails the run;
#  - examples/cpp/two_layer.cpp with and without exceptions.
# Expects `cargo build --release` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/cpp-tests
mkdir -p "$out"
python3 tools/smoke_to_text.py tests/conformance/smoke_cases.json tests/conformance/smoke_expected.json > "$out/smoke.txt"
cxx=${CXX:-g++}
flags=(-Wall -Wextra -Wpedantic -Werror -Iinclude -Ibindings/cpp/include)
asan=(-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all)
libs=(target/release/libadamw.a -lm -ldl -lpthread)
for std in c++17 c++20; do
    echo "-- $cxx -std=$std: test_wrapper"
    "$cxx" -std=$std "${flags[@]}" "${asan[@]}" tests/cpp/test_wrapper.cpp tests/cpp/second_tu.cpp "${libs[@]}" \
        -o "$out/test_wrapper_$std"
    "$out/test_wrapper_$std" "$out/smoke.txt"
done
for mode in -fno-exceptions -fexceptions; do
    echo "-- $cxx -std=c++17 $mode: test_result"
    "$cxx" -std=c++17 $mode "${flags[@]}" "${asan[@]}" tests/cpp/test_result.cpp tests/cpp/second_tu.cpp "${libs[@]}" \
        -o "$out/test_result${mode#-f}"
    "$out/test_result${mode#-f}"
done

echo "-- $cxx -fsanitize=thread: test_threads"
# Linked to libadamw.so, found by its SONAME through the rpath: the suppressions name the
# library's own module (see tests/cpp/tsan.supp), which a static link would merge into the test.
soname=$(readelf -d target/release/libadamw.so | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
mkdir -p "$out/lib"
ln -sf "$PWD/target/release/libadamw.so" "$out/lib/$soname"
"$cxx" -std=c++17 -g -O1 -fsanitize=thread "${flags[@]}" tests/cpp/test_threads.cpp \
    -L"$out/lib" -l:"$soname" -Wl,-rpath,"$PWD/$out/lib" -lpthread -o "$out/test_threads"
TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$PWD/tests/cpp/tsan.supp" "$out/test_threads"

for mode in -fexceptions -fno-exceptions; do
    echo "-- $cxx $mode: examples/cpp/two_layer.cpp"
    "$cxx" -std=c++17 -O2 $mode "${flags[@]}" examples/cpp/two_layer.cpp "${libs[@]}" -o "$out/two_layer${mode#-f}"
    "$out/two_layer${mode#-f}" | tail -n 1
done
