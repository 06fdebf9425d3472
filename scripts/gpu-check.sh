#!/usr/bin/env bash
# The GPU check, in one go (about 10 minutes on a machine with one NVIDIA GPU and 16 cores):
#   1. builds rnnsweep with `--features cuda` (the system's CUDA toolkit, or PyPI's: see
#      scripts/cuda-env.sh; the compute capability is asked of nvidia-smi);
#   2. runs the reference LSTM on the GPU against the f64 oracle on the CPU, outputs and every
#      gradient (crates/rnnsweep-model/tests/model/device.rs);
#   3. runs a 4-trial quickstart sweep with `devices: [cuda:0], trials_per_device: 2` and checks
#      in the study file that every trial completed on cuda:0 and two ran at once;
#   4. times the benchmark model of scripts/bench-trainer.sh (training and inference) on the GPU
#      beside PyTorch's cuDNN LSTM, when a Python with CUDA PyTorch is found (TORCH_PYTHON, or
#      .venv-bench, or python3);
# and prints one table. Exits non-zero if a step fails.
#
#   bash scripts/gpu-check.sh
#   GPU_CHECK_DEVICE=cpu bash scripts/gpu-check.sh
#
# With GPU_CHECK_DEVICE=cpu every step runs on the CPU instead (the sweep on RNNSWEEP_FAKE_CUDA,
# which schedules cuda:0 slots but trains on the CPU), with the default features and the dev
# profile unless GPU_CHECK_FEATURES / GPU_CHECK_PROFILE say otherwise: that is how CI tests this
# script. Other settings: GPU_CHECK_UNITS ("128 256"), GPU_CHECK_ROWS (31962; 2048 on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
device=${GPU_CHECK_DEVICE:-cuda:0}
units=${GPU_CHECK_UNITS:-"128 256"}
if [ "$device" = cpu ]; then
    profile=${GPU_CHECK_PROFILE:-dev}
    features=${GPU_CHECK_FEATURES:-}
    rows=${GPU_CHECK_ROWS:-2048}
    sweep_env=(RNNSWEEP_FAKE_CUDA=1)
    torch_device=cpu
else
    profile=${GPU_CHECK_PROFILE:-release}
    features=${GPU_CHECK_FEATURES:-cuda}
    rows=${GPU_CHECK_ROWS:-31962}
    sweep_env=()
    torch_device=cuda
fi
if [ "$features" = cuda ]; then
    # shellcheck source=scripts/cuda-env.sh
    source scripts/cuda-env.sh
    if [ "$device" != cpu ] && [ "$RNNSWEEP_CUDA_DRIVER" != real ]; then
        echo "gpu-check: no NVIDIA driver on this machine (nvidia-smi -L fails); GPU_CHECK_DEVICE=cpu checks the rest" >&2
        exit 2
    fi
fi
cargo_flags=(--profile "$profile")
[ -n "$features" ] && cargo_flags+=(--features "$features")
out_dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=()
failed=0
record() { # step, ok|FAILED, detail
    results+=("| $1 | $2 | $3 |")
    [ "$2" != FAILED ] || failed=1
}

# 1. Build.
started=$SECONDS
# One build of the binary, the bench example and the tests, with the features `cargo test` of
# the three crates resolves (as scripts/check-cuda.sh builds them): separate `cargo build`s
# would resolve candle's features without the dev-dependencies and compile it again.
if cargo test -q "${cargo_flags[@]}" -p rnnsweep -p rnnsweep-model -p rnnsweep-search --no-run 2>/dev/null; then
    record "build (${features:-default features}, $profile)" ok "$((SECONDS - started)) s"
else
    record "build (${features:-default features}, $profile)" FAILED "see the cargo output above"
    printf '%s\n' "${results[@]}"
    exit 1
fi

# 2. The reference LSTM on the device against the f64 oracle on the CPU.
test_name=device::reference_lstm_on_the_device_matches_the_f64_oracle
if RNNSWEEP_TEST_DEVICE=$device cargo test -q "${cargo_flags[@]}" -p rnnsweep-model --test model \
    -- --exact "$test_name" >"$work/oracle.log" 2>&1 \
    && grep -q "1 passed" "$work/oracle.log"; then
    record "reference LSTM on $device vs f64 CPU oracle" ok "outputs within 1e-5, gradients within 1e-4"
else
    tail -n 20 "$work/oracle.log" >&2
    record "reference LSTM on $device vs f64 CPU oracle" FAILED "$(grep -m1 -o 'panicked.*' "$work/oracle.log" || echo 'see above')"
fi

# 3. Four quickstart trials, two at a time on one GPU.
cat >"$work/sweep.yaml" <<YAML
name: gpu-check
storage: gpu-check.db
data:
  train: $root/experiments/data/sample.csv
  validation_split: 0.1
  max_words: 5000
  seed: 6464
method: random
seed: 2021
metric: {name: val_f1, goal: maximize}
run_cap: 4
training: {epochs: 3, batch_size: 64, batch_norm_momentum: 0.9}
parameters:
  optimizer: {values: [adam, rmsprop]}
  learning_rate: {distribution: log_uniform_values, min: 0.001, max: 0.01}
  lstm_units: {values: [16, 32]}
resources: {devices: [cuda:0], trials_per_device: 2}
YAML
started=$SECONDS
if env "${sweep_env[@]}" "$out_dir/rnnsweep" run "$work/sweep.yaml" >"$work/sweep.log" 2>&1 \
    && python3 scripts/gpu_check_sweep.py "$work/gpu-check.db" --trials 4 --device cuda:0 \
        --together 2 >"$work/sweep-check.txt" 2>&1; then
    record "sweep: 4 trials, devices [cuda:0], trials_per_device 2" ok \
        "$(cat "$work/sweep-check.txt"), $((SECONDS - started)) s"
else
    tail -n 20 "$work/sweep.log" >&2
    record "sweep: 4 trials, devices [cuda:0], trials_per_device 2" FAILED \
        "$(cat "$work/sweep-check.txt" 2>/dev/null || tail -n 1 "$work/sweep.log")"
fi

# 4. The benchmark model beside PyTorch.
torch_python=""
for candidate in "${TORCH_PYTHON:-}" .venv-bench/bin/python python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c "import torch, sys; sys.exit(0 if '$torch_device' == 'cpu' or torch.cuda.is_available() else 1)" 2>/dev/null; then
        torch_python=$candidate
        break
    fi
done
bench=$work/bench.jsonl
for u in $units; do
    for mode in train infer; do
        flags=(--units "$u" --rows "$rows" --warmup 3)
        [ "$mode" = infer ] && flags+=(--inference)
        if ! "$out_dir/examples/bench_trainer" "${flags[@]}" --device "$device" >>"$bench" 2>"$work/bench.err"; then
            record "bench U=$u $mode on $device" FAILED "$(tail -n 1 "$work/bench.err")"
        fi
        if [ -n "$torch_python" ]; then
            "$torch_python" scripts/bench_trainer_torch.py "${flags[@]}" --device "$torch_device" \
                >>"$bench" 2>"$work/torch.err" \
                || record "PyTorch U=$u $mode on $torch_device" FAILED "$(tail -n 1 "$work/torch.err")"
        fi
    done
done
[ -n "$torch_python" ] || record "PyTorch beside it" skipped \
    "no Python with PyTorch for $torch_device (set TORCH_PYTHON)"

echo
echo "GPU check on $device ($(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || echo 'no nvidia-smi'))"
echo
echo "| step | result | detail |"
echo "|---|---|---|"
printf '%s\n' "${results[@]}"
echo
python3 - "$bench" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def rate(units, trainer_prefix, infer):
    for r in rows:
        t = r["trainer"]
        if r["units"] == units and t.startswith(trainer_prefix) and t.endswith("-infer") == infer:
            return r["samples_per_s"], r.get("device", "cpu")
    return None, None
print("| U | mode | rnnsweep samples/s | device | PyTorch samples/s | device | rnnsweep ÷ PyTorch |")
print("|---|---|---|---|---|---|---|")
for units in sorted({r["units"] for r in rows}):
    for infer in (False, True):
        ours, d1 = rate(units, "rnnsweep", infer)
        theirs, d2 = rate(units, "pytorch", infer)
        ratio = f"{ours / theirs:.2f}×" if ours and theirs else "-"
        print(f"| {units} | {'inference' if infer else 'training'} | {ours or '-'} | {d1 or '-'} | "
              f"{theirs or '-'} | {d2 or '-'} | {ratio} |")
PY
exit $failed
