#!/usr/bin/env bash
# The `cuda` build on a machine without a GPU: the CUDA toolkit from PyPI (scripts/cuda-env.sh,
# CUDA 13.0; compute capability 90 when there is no GPU to ask), the three crates linted, then
# built, linked (against a stand-in libcuda when the NVIDIA driver is absent) and their
# device-free tests run in the `gpu-check` profile; that same build becomes the GPU check's
# folder (scripts/gpu-check.sh build: no second compile), which is then run in CPU mode with no
# cargo on the PATH, as a GPU machine without a registry would run it.
#   bash scripts/check-cuda.sh            (CUDA_VENV=.venv-cuda by default)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
nvcc --version | tail -n 1
crates=(-p rnnsweep -p rnnsweep-model -p rnnsweep-search)
# One profile for lint, tests and the folder: candle's kernels are compiled to PTX once.
cargo clippy "${crates[@]}" --all-targets --profile gpu-check --features cuda -- -D warnings
cargo test "${crates[@]}" --profile gpu-check --features cuda
python3 -m unittest discover -s scripts -p 'test_gpu_check*.py'
folder=target/gpu-check-folder
bash scripts/gpu-check.sh build "$folder"
# The PATH without any folder that holds cargo or rustc: the run must not need them.
no_cargo_path=$(python3 - <<'PY'
import os
keep = [d for d in os.environ["PATH"].split(":")
        if d and not any(os.access(os.path.join(d, tool), os.X_OK) for tool in ("cargo", "rustc"))]
print(":".join(keep))
PY
)
if PATH=$no_cargo_path command -v cargo >/dev/null 2>&1; then
    echo "check-cuda: cargo is still on the PATH for the run" >&2
    exit 1
fi
OUT=target/gpu-check-out PATH=$no_cargo_path GPU_CHECK_DEVICE=cpu GPU_CHECK_PYTHON="${CUDA_VENV_PYTHON:-python3}" \
    GPU_CHECK_UNITS=32 GPU_CHECK_BATCHES=256 GPU_CHECK_TRIALS=4 \
    bash "$folder/scripts/gpu-check.sh" run "$folder"
