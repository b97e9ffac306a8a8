#!/usr/bin/env bash
# Builds and runs every example: the main C example, the game-loop example (whose checksum must
# not change across runs or thread counts), the OpenMP trainer (its hook must give libadamw's
# own bits), the float16 loss-scale example, the Keras round trip (0 ulp from Keras' own
# continuations), the ZeRO-1 example under mpirun, the C++ network, the Go service, and the CUDA
# trainer (on the host-kernels device where there is no GPU: it builds the library with
# `--features host-kernels` last, so target/release is left with that feature). examples/cmake
# is built and run by tools/test-packaging.sh, against an installed libadamw.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/examples
mkdir -p "$out"
libs=(target/release/libadamw.a -lm -ldl -lpthread)

echo "-- C: train_linear"
bash tools/run-example.sh | tail -n 3

# The other examples link the release build of this checkout.
cargo build --release --locked 2>&1 | tail -n 1

echo "-- C: game_loop"
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude examples/c/game_loop.c "${libs[@]}" \
    -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign -o "$out/game_loop"
"$out/game_loop" 1 | tail -n 2
sums=$(for threads in 1 2 4 0; do "$out/game_loop" $threads | sed -n 's/^weights checksum: \([0-9a-f]*\).*/\1/p'; done | sort -u)
[ "$(echo "$sums" | wc -l)" = 1 ] || { echo "error: the checksum differs across thread settings: $sums"; exit 1; }
echo "same checksum with threads = 1, 2, 4 and 0 (shared pool): $sums"

echo "-- C: openmp_trainer (libadamw's tasks on the engine's OpenMP threads; same bits as its own)"
cc -std=c11 -O2 -fopenmp -Wall -Wextra -Wpedantic -Werror -Iinclude examples/c/openmp_trainer.c "${libs[@]}" \
    -o "$out/openmp_trainer"
"$out/openmp_trainer" | tail -n 3

echo "-- C: float16_loss_scale"
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude examples/c/float16_loss_scale.c "${libs[@]}" \
    -o "$out/float16_loss_scale"
"$out/float16_loss_scale" | tail -n 4

echo "-- C: keras_round_trip (train in Keras, continue in C, back to Keras)"
python3 tools/keras_example_data.py --check
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude examples/c/keras_round_trip.c "${libs[@]}" \
    -o "$out/keras_round_trip"
"$out/keras_round_trip" tests/data/keras_files "$out"

echo "-- MPI: zero1 (2 and 3 ranks)"
mpicc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude examples/mpi/zero1.c "${libs[@]}" -o "$out/zero1"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # containers and CI run as root
timeout 120 mpirun -np 2 "$out/zero1" | tail -n 2
timeout 120 mpirun -np 3 --oversubscribe "$out/zero1" | tail -n 2

echo "-- C++: two_layer (with exceptions, and without: the Result API)"
for mode in -fexceptions -fno-exceptions; do
    c++ -std=c++17 -O2 $mode -Wall -Wextra -Werror -Iinclude -Ibindings/cpp/include examples/cpp/two_layer.cpp \
        "${libs[@]}" -o "$out/two_layer${mode#-f}"
    "$out/two_layer${mode#-f}" | tail -n 3
done

echo "-- Go: service"
source tools/go-env.sh
(cd examples/go/service && go vet . && GOEXPERIMENT=cgocheck2 go run .) | tail -n 3

echo "-- C: cuda_trainer (the caller's stream; the host-kernels device where there is no GPU)"
cargo build --release --locked --features host-kernels 2>&1 | tail -n 1
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude examples/c/cuda_trainer.c "${libs[@]}" \
    -o "$out/cuda_trainer"
"$out/cuda_trainer"
