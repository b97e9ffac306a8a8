#!/usr/bin/env bash
# Makes NVRTC (libnvrtc.so.12) and ptxas available without a GPU or a CUDA toolkit, from PyPI's
# NVIDIA wheels, in a virtual environment under target/ (once; later runs reuse it). Source it:
# it exports LD_LIBRARY_PATH (for NVRTC, which cudarc loads at run time) and ADAMW_PTXAS.
# Fails loudly when they cannot be had.
set -euo pipefail
tools_dir="${ADAMW_CUDA_TOOLS:-$(pwd)/target/cuda-tools}"
wheels=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86)
find_nvidia() { ls -d "$tools_dir"/lib/python3*/site-packages/nvidia 2>/dev/null | head -n 1 || true; }
nvidia="$(find_nvidia)"
if [ -z "$nvidia" ] || [ ! -e "$nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ] || [ ! -x "$nvidia/cuda_nvcc/bin/ptxas" ]; then
    # Debian's python3 runs `-m venv` without python3-venv but cannot make one: ensurepip is missing.
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        else
            echo "error: python3 -m venv is missing (Debian: apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    echo "installing NVRTC and ptxas from PyPI into $tools_dir"
    rm -rf "$tools_dir" # a half-made environment from an interrupted run
    python3 -m venv "$tools_dir"
    "$tools_dir/bin/pip" install -q --disable-pip-version-check "${wheels[@]}"
    nvidia="$(find_nvidia)"
fi
if [ ! -e "$nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ] || [ ! -x "$nvidia/cuda_nvcc/bin/ptxas" ]; then
    echo "error: NVRTC or ptxas missing after installing ${wheels[*]}" >&2
    exit 1
fi
export LD_LIBRARY_PATH="$nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ADAMW_PTXAS="$nvidia/cuda_nvcc/bin/ptxas"
