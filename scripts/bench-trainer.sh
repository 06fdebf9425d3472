#!/usr/bin/env bash
# Training throughput of rnnsweep's trainer against PyTorch on the same CPU, side by side.
#
#   bash scripts/bench-trainer.sh [UNITS...]        (default: 32 64 128 256)
#
# Model: Embedding(5000, 88) → BiLSTM(U) → BiLSTM(U) → Dense(128, relu) → Dense(1), Adam,
# batch 256, sequence length 37, synthetic 31,962 × 37 ids; a warm-up, then one full epoch per
# run. For each U and thread count the runs alternate: rnnsweep (fused kernel), PyTorch as
# installed, PyTorch with the allocator settings rnnsweep makes for itself (see
# crates/rnnsweep-model/src/alloc.rs), so that difference is visible, not hidden.
#
# Environment: THREADS ("1 2"), REPEATS (1; with more, the table shows the median and the best
# run), ROWS (31962), WARMUP (3), REFERENCE=1 also times rnnsweep's reference layer,
# VENV (.venv-bench: created with PyTorch from the package index when missing). The raw JSON
# lines are kept in results/bench-trainer-<time>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

UNITS=("$@")
[ ${#UNITS[@]} -gt 0 ] || UNITS=(32 64 128 256)
THREADS=${THREADS:-"1 2"}
REPEATS=${REPEATS:-1}
ROWS=${ROWS:-31962}
WARMUP=${WARMUP:-3}
VENV=${VENV:-.venv-bench}

cargo build --release -q -p rnnsweep-model --example bench_trainer
BENCH=target/release/examples/bench_trainer

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "creating $VENV with PyTorch (a few GB, once)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch numpy
fi
PY="$VENV/bin/python"

mkdir -p results
RESULTS="results/bench-trainer-$(date +%Y%m%d-%H%M%S).jsonl"
for threads in $THREADS; do
    RAYON_NUM_THREADS=$threads "$BENCH" --peak >> "$RESULTS"
done
for units in "${UNITS[@]}"; do
    for threads in $THREADS; do
        for ((rep = 0; rep < REPEATS; rep++)); do
            echo "U=$units threads=$threads run $((rep + 1))/$REPEATS" >&2
            common=(--units "$units" --rows "$ROWS" --warmup "$WARMUP")
            RAYON_NUM_THREADS=$threads "$BENCH" "${common[@]}" >> "$RESULTS"
            if [ "${REFERENCE:-0}" = 1 ]; then
                RAYON_NUM_THREADS=$threads "$BENCH" "${common[@]}" --impl reference >> "$RESULTS"
            fi
            "$PY" scripts/bench_trainer_torch.py "${common[@]}" --threads "$threads" >> "$RESULTS"
            MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 \
                "$PY" scripts/bench_trainer_torch.py "${common[@]}" --threads "$threads" \
                | sed 's/"pytorch"/"pytorch-kept-memory"/' >> "$RESULTS"
        done
    done
done
python3 scripts/bench_trainer_table.py "$RESULTS"
echo "raw results: $RESULTS" >&2
