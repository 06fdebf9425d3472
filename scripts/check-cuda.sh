#!/usr/bin/env bash
# Type-checks the `cuda` feature (the three crates with their tests and examples) on a machine
# without a GPU: the CUDA toolkit comes from PyPI into a venv (no system CUDA). There is no
# device to ask for its compute capability, so it is set (90 = H100/H200), and cudarc is told
# the toolkit version it knows (it stops on newer ones). Linking needs the NVIDIA driver's
# libcuda, which only a machine with the NVIDIA driver has, so the build is linked there.
#   bash scripts/check-cuda.sh            (CUDA_VENV=.venv-cuda by default)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CUDA_VENV:-.venv-cuda}
if ! ls "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cublas nvidia-curand
fi
toolkit=$(cd "$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)" && pwd)
chmod +x "$toolkit"/bin/* 2>/dev/null || true
export PATH="$toolkit/bin:$PATH" CUDA_ROOT="$toolkit" CUDA_PATH="$toolkit" CUDA_HOME="$toolkit"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13040}
nvcc --version | tail -n 1
cargo check -p rnnsweep -p rnnsweep-model -p rnnsweep-search --all-targets --features cuda
