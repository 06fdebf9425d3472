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
#
# Last, one line per U with the time of a whole trial epoch as a sweep runs it (`rnnsweep train`
# with one epoch on synthetic full-length tweets: training, validation metrics, checkpoint), so
# the cost outside the kernel stays visible.
#
# Real lengths: LENGTHS_CSV=path/to/tweets.csv takes the token count of every row of that file
# (the report's tokenizer, 5,000 words, cut at 37) and adds, beside the full-length runs,
# rnnsweep on rows of those lengths (`-real`: shuffled batches; `-real-bucket`: length
# bucketing) and PyTorch with pack_padded_sequence (`pytorch-packed`), then times one whole
# trial epoch (`rnnsweep train`, validation included) on the file as it is and on the same rows
# made full length (each tweet repeated to 37+ tokens). Nothing needs the file by default.
# With the file, a character-level model's lengths too (Keras's char_level tokenizer: one token
# per character of the lowercased `TEXT_COLUMN`, default `tweet`; padded to the longest row):
# `-char-real`, `-char-real-bucket` against `pytorch-packed-char-kept-memory`, at the units in
# CHAR_UNITS ("64", the size the tweet search's character models mostly win with: these rows
# are the slow ones). Both length lists take the file's first ROWS rows.
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
real=()
if [ -n "${LENGTHS_CSV:-}" ]; then
    cargo build --release -q -p rnnsweep
    work=$(mktemp -d)
    target/release/rnnsweep data inspect --input "$LENGTHS_CSV" --max-words 5000 --seq-len 37 \
        --out "$work/ids.csv" >/dev/null
    python3 - "$work/ids.csv" "$work/lengths.txt" <<'PY'
import csv, sys
with open(sys.argv[1], newline="") as f, open(sys.argv[2], "w") as out:
    for row in csv.reader(f):
        out.write(f"{sum(1 for t in row[1].split() if t != '0')}\n")
PY
    python3 - "$LENGTHS_CSV" "${TEXT_COLUMN:-tweet}" "$work/char-lengths.txt" <<'PY'
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8", errors="replace") as f, open(sys.argv[3], "w") as out:
    for row in csv.DictReader(f):
        out.write(f"{max(1, len(row[sys.argv[2]].lower()))}\n")
PY
    for list in lengths char-lengths; do
        head -n "$ROWS" "$work/$list.txt" > "$work/$list.rows" && mv "$work/$list.rows" "$work/$list.txt"
    done
    real=(--lengths "$work/lengths.txt")
    char_time=$(sort -n "$work/char-lengths.txt" | tail -1)
    char=(--lengths "$work/char-lengths.txt" --time "$char_time")
    python3 -c "import sys; l=[int(x) for x in open(sys.argv[1])]; print(f'{len(l)} rows, mean length {sum(l)/len(l):.1f} of 37', file=sys.stderr)" "$work/lengths.txt"
    python3 -c "import sys; l=[int(x) for x in open(sys.argv[1])]; print(f'characters: mean length {sum(l)/len(l):.1f} of {max(l)}', file=sys.stderr)" "$work/char-lengths.txt"
fi
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
            # Inference (the predict path, batch 1024) against PyTorch's inference_mode.
            RAYON_NUM_THREADS=$threads "$BENCH" "${common[@]}" --inference >> "$RESULTS"
            "$PY" scripts/bench_trainer_torch.py "${common[@]}" --inference --threads "$threads" \
                >> "$RESULTS"
            MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 \
                "$PY" scripts/bench_trainer_torch.py "${common[@]}" --inference --threads "$threads" \
                | sed 's/"pytorch-infer"/"pytorch-infer-kept-memory"/' >> "$RESULTS"
            if [ ${#real[@]} -gt 0 ]; then
                for batching in shuffle bucket; do
                    RAYON_NUM_THREADS=$threads "$BENCH" "${common[@]}" "${real[@]}" \
                        --batching "$batching" >> "$RESULTS"
                done
                MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 \
                    "$PY" scripts/bench_trainer_torch.py "${common[@]}" "${real[@]}" --packed \
                    --threads "$threads" \
                    | sed 's/"pytorch-packed"/"pytorch-packed-kept-memory"/' >> "$RESULTS"
                # The same network over characters: about 85 steps a tweet.
                [[ " ${CHAR_UNITS:-64} " == *" $units "* ]] || continue
                for batching in shuffle bucket; do
                    RAYON_NUM_THREADS=$threads "$BENCH" "${common[@]}" "${char[@]}" \
                        --batching "$batching" \
                        | sed 's/"rnnsweep-fused-real/"rnnsweep-fused-char-real/' >> "$RESULTS"
                done
                MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 \
                    "$PY" scripts/bench_trainer_torch.py "${common[@]}" "${char[@]}" --packed \
                    --threads "$threads" \
                    | sed 's/"pytorch-packed"/"pytorch-packed-char-kept-memory"/' >> "$RESULTS"
            fi
        done
    done
done
python3 scripts/bench_trainer_table.py "$RESULTS"
echo "raw results: $RESULTS" >&2

# One whole trial epoch as a sweep's worker runs it, 1 thread: `rnnsweep train` with one epoch
# (data read and tokenized, training, validation metrics, checkpoint, model saved), on synthetic
# tweets that fill the 37 steps (so the kernel rows above are comparable) and, with
# LENGTHS_CSV, on that file as it is and on the same rows made full length.
work=${work:-$(mktemp -d)}
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p rnnsweep
python3 - "$work/synthetic.csv" "$ROWS" <<'PY'
import csv, random, sys
rng = random.Random(7)
with open(sys.argv[1], "w", newline="") as out:
    w = csv.writer(out)
    w.writerow(["id", "label", "tweet"])
    for i in range(int(sys.argv[2])):
        words = [f"w{rng.randrange(1, 6000)}" for _ in range(40)]
        w.writerow([i + 1, int(rng.random() < 0.07), " ".join(words)])
PY
datasets=("$work/synthetic.csv")
if [ ${#real[@]} -gt 0 ]; then
    python3 - "$LENGTHS_CSV" "$work/full.csv" <<'PY'
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8", errors="replace") as f, open(sys.argv[2], "w", newline="") as out:
    rows = csv.DictReader(f)
    w = csv.writer(out)
    w.writerow(["id", "label", "tweet"])
    for r in rows:
        words = r["tweet"].split() or ["x"]
        w.writerow([r["id"], r["label"], " ".join((words * (37 // len(words) + 2))[:40])])
PY
    datasets+=("$LENGTHS_CSV" "$work/full.csv")
fi
for units in "${UNITS[@]}"; do
    for data in "${datasets[@]}"; do
        for batching in shuffle bucket; do
            [ "$data" = "$work/synthetic.csv" ] && [ "$batching" = bucket ] && continue
            out="$work/model-$units-$batching"
            rm -rf "$out"
            started=$(date +%s.%N)
            RAYON_NUM_THREADS=1 target/release/rnnsweep train --data "$data" --out "$out" \
                --set "lstm_units=[$units,$units]" --set "dense=[{units: 128, activation: relu}]" \
                --set embedding_dim=88 --set sequence_length=37 --set epochs=1 \
                --set lstm_dropout=0 --set batch_norm=false --set dense_dropout=0 \
                --set batch_size=256 --set batching.mode=$batching >/dev/null
            ended=$(date +%s.%N)
            case "$data" in
                "$work/synthetic.csv") label="synthetic, full length" ;;
                "$LENGTHS_CSV") label="real tweets" ;;
                *) label="same rows, full length" ;;
            esac
            python3 - "$out/history.csv" "$RESULTS" "$units" "$label" "$batching" "$started" "$ended" "$ROWS" <<'PY'
import csv, json, statistics, sys
history, results, units, label, batching, started, ended, rows = sys.argv[1:]
h = list(csv.DictReader(open(history)))[0]
train_rows = round(int(rows) * 0.9)
kernel = [json.loads(l) for l in open(results) if '"rnnsweep-fused"' in l]
kernel = [r["seconds"] for r in kernel if r.get("units") == int(units) and r.get("threads") == 1]
kernel_s = f"{statistics.median(kernel) * train_rows / int(rows):.1f}" if kernel and "synthetic" in label else "-"
whole = float(ended) - float(started)
print(f"| {units} | {label} | {batching} | {kernel_s} | {float(h['seconds']):.1f} | {whole:.1f} |")
PY
        done
    done
done | { echo; echo "Whole trial epoch, 1 thread (rnnsweep train, one epoch: the kernel's share from the rows above, scaled to the 90 % that train; train + validation from history.csv; the whole process adds reading, tokenizing, the checkpoint and the saved model):"; echo; \
         echo "| U | rows | batching | kernel only (s) | train + validation (s) | whole process (s) |"; echo "|---|---|---|---|---|---|"; cat; }
