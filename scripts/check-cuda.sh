#!/usr/bin/env bash
# The `cuda` build on a machine without a GPU: the CUDA toolkit from PyPI (scripts/cuda-env.sh;
# compute capability 90 when there is no GPU to ask), the three crates linted, built and linked
# with `--features cuda` (against a stand-in libcuda when the NVIDIA driver is absent), every
# test that needs no device run on that build, and scripts/gpu-check.sh's CPU-side steps run
# with it (its sweep schedules cuda:0 slots on RNNSWEEP_FAKE_CUDA).
#   bash scripts/check-cuda.sh            (CUDA_VENV=.venv-cuda by default)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
nvcc --version | tail -n 1
crates=(-p rnnsweep -p rnnsweep-model -p rnnsweep-search)
cargo clippy "${crates[@]}" --all-targets --features cuda -- -D warnings
cargo test "${crates[@]}" --features cuda
python3 -m unittest discover -s scripts -p test_gpu_check_sweep.py
GPU_CHECK_DEVICE=cpu GPU_CHECK_FEATURES=cuda GPU_CHECK_UNITS=32 bash scripts/gpu-check.sh
