#!/usr/bin/env bash
# The GPU check, built on a machine with the package registries and run on a GPU machine that
# has none (no cargo, no pip, no network: bash, python3 and the NVIDIA driver are enough).
#
#   bash scripts/gpu-check.sh build DIR    # here: the `cuda` build, into a folder of ≤ 40 MiB
#   bash scripts/gpu-check.sh run DIR      # there: preflight, oracles, sweeps, bench, one table
#
# `build` compiles the three crates' tests, the rnnsweep binary and the bench example in one
# `cargo test --no-run --profile gpu-check --features cuda` (CUDA 13.0 from PyPI, cudarc told
# 13.0's API, compute capability 90 unless CUDA_COMPUTE_CAP says otherwise: see
# scripts/cuda-env.sh), and copies what the run needs, stripped and xz-packed (candle's PTX is
# text), with a manifest of sizes, checksums and build facts. scripts/check-cuda.sh runs the same cargo command first, so in CI
# this build costs nothing.
#
# `run` writes every log, the bench lines and the final table (gpu-check.md) into $OUT when set,
# else DIR/out, and exits non-zero when any step fails. Its steps:
#   0. the folder against its manifest; preflight: nvidia-smi, `ldd -r` on each binary, one
#      tiny training step on the device (candle's kernels, cuBLAS and ours);
#   1. the recurrent layers on the device against the f64 CPU oracle, and the whole network on
#      the device against the CPU for every setting (tests/model/device.rs, net_device.rs);
#   2. a 4-trial sweep two at a time on cuda:0, checked in its study file;
#   3. trials per minute: sweeps of GPU_CHECK_TRIALS (8) short trials with trials_per_device
#      1, 2 and 4 on cuda:0;
#   4. the benchmark model of scripts/bench-trainer.sh (training and inference, U = 128 and
#      256, batch 256 and 1024) on the device, beside PyTorch's cuDNN LSTM (this machine's
#      python3, when it has CUDA PyTorch) and the fused CPU path on all cores.
# CUDA libraries (runtime, cuBLAS, cuRAND, NVRTC) come from the NVIDIA wheels of
# GPU_CHECK_PYTHON (python3 by default: PyTorch's own), the driver from the system.
#
# GPU_CHECK_DEVICE=cpu runs every step on the CPU (the sweeps on RNNSWEEP_FAKE_CUDA, which
# schedules cuda:0 slots but trains on the CPU): that is how CI runs this script, from the built
# folder with no cargo on the PATH. Other settings: GPU_CHECK_UNITS ("128 256"),
# GPU_CHECK_BATCHES ("256 1024"), GPU_CHECK_ROWS (31962; 2048 on the CPU), GPU_CHECK_CPU_ROWS
# (8192), GPU_CHECK_TRIALS (8).
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" >&2
    exit 2
}

max_bytes=$((40 * 1024 * 1024))

build() {
    local dir root
    dir=$(realpath -m "$1")
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    cd "$root"
    # shellcheck source=scripts/cuda-env.sh
    source scripts/cuda-env.sh
    local json
    json=$(mktemp)
    # The diagnostics go to the terminal as cargo renders them; only the artifact lines are kept.
    if ! cargo test --profile gpu-check --features cuda -p rnnsweep -p rnnsweep-model \
        -p rnnsweep-search --no-run --message-format=json-render-diagnostics >"$json"; then
        echo "gpu-check build: cargo failed (its messages are above)" >&2
        exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir/bin" "$dir/scripts" "$dir/data"
    local stripped
    stripped=$(mktemp)
    while read -r name path; do
        cp "$path" "$stripped"
        # The profile strips already; a second pass costs nothing where `strip` exists.
        if command -v strip >/dev/null 2>&1; then strip --strip-all "$stripped"; fi
        # Each binary carries candle's PTX (text): packed, the three fit in the 40 MiB.
        python3 scripts/gpu_check.py pack "$stripped" "$dir/bin/$name.xz"
    done < <(python3 scripts/gpu_check.py artifacts "$json")
    rm -f "$json" "$stripped"
    cp scripts/gpu-check.sh scripts/gpu_check.py scripts/gpu_check_sweep.py \
        scripts/bench_trainer_torch.py "$dir/scripts/"
    cp experiments/data/sample.csv "$dir/data/"
    python3 scripts/gpu_check.py manifest "$dir" \
        "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "cuda_toolkit=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')" \
        "cudarc_api=$CUDARC_CUDA_VERSION" "compute_capability=$CUDA_COMPUTE_CAP" \
        "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local bytes
    bytes=$(du -sb "$dir" | cut -f1)
    if [ "$bytes" -gt "$max_bytes" ]; then
        echo "gpu-check build: $dir is $((bytes / 1024 / 1024)) MiB, over the 40 MiB that may travel" >&2
        exit 1
    fi
    echo "gpu-check build: $dir ($((bytes / 1024 / 1024)) MiB); run it with: bash $dir/scripts/gpu-check.sh run $dir"
}

run() {
    local dir
    dir=$(cd "$1" && pwd)
    local device=${GPU_CHECK_DEVICE:-cuda:0}
    local out=${OUT:-$dir/out}
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    local python=${GPU_CHECK_PYTHON:-python3}
    local units=${GPU_CHECK_UNITS:-"128 256"}
    local batches=${GPU_CHECK_BATCHES:-"256 1024"}
    local trials=${GPU_CHECK_TRIALS:-8}
    local rows sweep_env torch_device cpu_rows=${GPU_CHECK_CPU_ROWS:-8192}
    if [ "$device" = cpu ]; then
        rows=${GPU_CHECK_ROWS:-2048}
        sweep_env=(RNNSWEEP_FAKE_CUDA=1)
        torch_device=cpu
    else
        rows=${GPU_CHECK_ROWS:-31962}
        sweep_env=()
        torch_device=cuda
    fi
    local results=() failed=0 started
    record() { # step, ok|FAILED|skipped, detail
        results+=("| $1 | $2 | $3 |")
        [ "$2" != FAILED ] || failed=1
    }
    finish() {
        {
            echo "GPU check on $device ($(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || echo 'no nvidia-smi')), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
            echo
            echo "| step | result | detail |"
            echo "|---|---|---|"
            printf '%s\n' "${results[@]}"
            if [ -s "$out/bench.jsonl" ]; then
                echo
                python3 "$dir/scripts/gpu_check.py" table "$out/bench.jsonl"
            fi
        } >"$out/gpu-check.md"
        echo
        cat "$out/gpu-check.md"
        echo
        echo "logs and table: $out"
        exit $failed
    }

    # 0. The folder and the machine.
    if facts=$(python3 "$dir/scripts/gpu_check.py" verify "$dir" 2>&1); then
        record "folder matches its manifest" ok "$facts"
    else
        record "folder matches its manifest" FAILED "$facts"
        finish
    fi
    local bins=$dir/.unpacked packed
    rm -rf "$bins"
    mkdir -p "$bins"
    for packed in "$dir"/bin/*.xz; do
        python3 "$dir/scripts/gpu_check.py" unpack "$packed" "$bins/$(basename "$packed" .xz)"
    done
    local libs
    libs=$("$python" "$dir/scripts/gpu_check.py" libs 2>"$out/libs.log" || true)
    export LD_LIBRARY_PATH="${libs:+$libs:}${LD_LIBRARY_PATH:-}"
    echo "$LD_LIBRARY_PATH" >"$out/ld_library_path.txt"
    if [ "$device" = cpu ]; then
        record "nvidia-smi" skipped "CPU mode"
    elif nvidia-smi >"$out/nvidia-smi.log" 2>&1; then
        record "nvidia-smi" ok "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
    else
        record "nvidia-smi" FAILED "$(tail -n 1 "$out/nvidia-smi.log")"
    fi
    local bin unresolved
    for bin in "$bins"/*; do
        ldd -r "$bin" >"$out/ldd-$(basename "$bin").log" 2>&1 || true
        unresolved=$(grep -E 'not found|undefined symbol' "$out/ldd-$(basename "$bin").log" | head -n 3 | tr '\n' ' ' || true)
        if [ -n "$unresolved" ]; then
            record "ldd -r $(basename "$bin")" FAILED "$unresolved"
        else
            record "ldd -r $(basename "$bin")" ok "every library and symbol resolved"
        fi
    done
    if "$bins/bench_trainer" --units 8 --rows 16 --time 4 --batch 8 --warmup 1 \
        --device "$device" >"$out/tiny.log" 2>&1; then
        if [ "$device" = cpu ]; then
            record "one training step on $device" ok "the CPU trainer ran"
        else
            record "one training step on $device" ok "candle's kernels, cuBLAS and rnnsweep's kernels ran"
        fi
    else
        record "one training step on $device" FAILED "$(tail -n 1 "$out/tiny.log")"
    fi
    [ "$failed" = 0 ] || finish

    # 1. The oracles.
    started=$SECONDS
    if RNNSWEEP_TEST_DEVICE=$device "$bins/model" --test-threads 1 device:: net_device:: \
        >"$out/oracle.log" 2>&1 && grep -q "test result: ok" "$out/oracle.log"; then
        record "recurrent layers and whole network on $device vs the CPU oracles" ok \
            "$(grep -o '[0-9]* passed' "$out/oracle.log" | tail -n 1), $((SECONDS - started)) s"
    else
        record "recurrent layers and whole network on $device vs the CPU oracles" FAILED \
            "$(grep -m1 -o 'panicked.*' "$out/oracle.log" || tail -n 1 "$out/oracle.log")"
    fi

    # 2. Four trials, two at a time on one GPU.
    sweep_spec() { # name, trials, trials_per_device, epochs
        cat <<YAML
name: $1
storage: $1.db
data:
  train: $dir/data/sample.csv
  validation_split: 0.1
  max_words: 5000
  seed: 6464
method: random
seed: 2021
metric: {name: val_f1, goal: maximize}
run_cap: $2
training: {epochs: $4, batch_size: 64, batch_norm_momentum: 0.9}
parameters:
  optimizer: {values: [adam, rmsprop]}
  learning_rate: {distribution: log_uniform_values, min: 0.001, max: 0.01}
  lstm_units: {values: [16, 32]}
resources: {devices: [cuda:0], trials_per_device: $3}
YAML
    }
    local work=$out/sweeps
    rm -rf "$work"
    mkdir -p "$work"
    sweep_spec together 4 2 3 >"$work/together.yaml"
    started=$SECONDS
    if (cd "$work" && env "${sweep_env[@]}" "$bins/rnnsweep" run together.yaml) >"$out/sweep.log" 2>&1 \
        && python3 "$dir/scripts/gpu_check_sweep.py" "$work/together.db" --trials 4 --device cuda:0 \
            --together 2 >"$out/sweep-check.txt" 2>&1; then
        record "sweep: 4 trials, devices [cuda:0], trials_per_device 2" ok \
            "$(cat "$out/sweep-check.txt"), $((SECONDS - started)) s"
    else
        record "sweep: 4 trials, devices [cuda:0], trials_per_device 2" FAILED \
            "$(cat "$out/sweep-check.txt" 2>/dev/null || tail -n 1 "$out/sweep.log")"
    fi

    # 3. Trials per minute with 1, 2 and 4 trials at once on one GPU.
    local per_device seconds rate rate_one=""
    for per_device in 1 2 4; do
        sweep_spec "per-device-$per_device" "$trials" "$per_device" 2 >"$work/per-device-$per_device.yaml"
        started=$(date +%s.%N)
        if (cd "$work" && env "${sweep_env[@]}" "$bins/rnnsweep" run "per-device-$per_device.yaml") \
            >"$out/sweep-per-device-$per_device.log" 2>&1 \
            && python3 "$dir/scripts/gpu_check_sweep.py" "$work/per-device-$per_device.db" \
                --trials "$trials" --device cuda:0 --together "$per_device" \
                >>"$out/sweep-check.txt" 2>&1; then
            seconds=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
            rate=$(python3 -c "import sys; print(f'{60 * int(sys.argv[1]) / float(sys.argv[2]):.1f}')" "$trials" "$seconds")
            [ -n "$rate_one" ] || rate_one=$rate
            record "trials per minute, trials_per_device $per_device" ok \
                "$trials trials in $seconds s: $rate/min ($(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$rate" "$rate_one")× of 1 at once)"
        else
            record "trials per minute, trials_per_device $per_device" FAILED \
                "$(tail -n 1 "$out/sweep-per-device-$per_device.log")"
        fi
    done

    # 4. The benchmark model on the device, PyTorch's cuDNN LSTM, the fused CPU path.
    local torch_python=""
    if "$python" -c "import torch, sys; sys.exit(0 if '$torch_device' == 'cpu' or torch.cuda.is_available() else 1)" 2>/dev/null; then
        torch_python=$python
    fi
    local bench=$out/bench.jsonl u b mode flags cores
    : >"$bench"
    cores=$(nproc)
    for u in $units; do
        for b in $batches; do
            for mode in train infer; do
                flags=()
                [ "$mode" = infer ] && flags+=(--inference)
                flags+=(--units "$u" --batch "$b" --warmup 3)
                if ! "$bins/bench_trainer" "${flags[@]}" --rows "$rows" --device "$device" \
                    >>"$bench" 2>>"$out/bench.err"; then
                    record "bench U=$u batch $b $mode on $device" FAILED "$(tail -n 1 "$out/bench.err")"
                fi
                if [ -n "$torch_python" ]; then
                    "$torch_python" "$dir/scripts/bench_trainer_torch.py" "${flags[@]}" --rows "$rows" \
                        --device "$torch_device" >>"$bench" 2>>"$out/torch.err" \
                        || record "PyTorch U=$u batch $b $mode on $torch_device" FAILED "$(tail -n 1 "$out/torch.err")"
                fi
                if [ "$device" != cpu ] && ! RAYON_NUM_THREADS=$cores "$bins/bench_trainer" "${flags[@]}" \
                    --rows "$cpu_rows" --device cpu >>"$bench" 2>>"$out/bench.err"; then
                    record "bench U=$u batch $b $mode on the CPU ($cores threads)" FAILED "$(tail -n 1 "$out/bench.err")"
                fi
            done
        done
    done
    if [ -n "$torch_python" ]; then
        record "PyTorch beside it" ok "$("$torch_python" -c 'import torch; print("torch", torch.__version__, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null)"
    else
        record "PyTorch beside it" skipped "no PyTorch with CUDA in $python (set GPU_CHECK_PYTHON)"
    fi
    finish
}

case "${1:-}" in
    build) [ $# -eq 2 ] || usage; build "$2" ;;
    run) [ $# -eq 2 ] || usage; run "$2" ;;
    *) usage ;;
esac
