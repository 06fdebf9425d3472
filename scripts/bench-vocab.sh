#!/usr/bin/env bash
# What a large vocabulary costs per epoch: max_words 5,000 against 50,000 for the same model
# (1×BiLSTM(32), embedding 128, Adam, batch 128), with the embedding updated densely (Keras's
# way: the whole table's gradient and optimizer update every step) and sparsely
# (`embedding_update: sparse`: only the batch's rows). Each run is a whole `rnnsweep train`
# as a sweep trial runs it (validation metrics and a checkpoint after every epoch), one thread.
#
#   bash scripts/bench-vocab.sh [DATA.csv]
#
# Without DATA: synthetic tweets, 28,000 rows of 12 words on average drawn from a Zipf law
# over 120,000 word types (so 50,000 ids are really used; the real tweets have ~36,000 words).
# Environment: REPEATS (3; runs alternate, the table shows the best and the median epoch),
# EPOCHS (3; the first epoch is left out of the epoch times).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3}
EPOCHS=${EPOCHS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p rnnsweep
BIN=target/release/rnnsweep

DATA=${1:-}
if [ -z "$DATA" ]; then
    DATA="$work/zipf.csv"
    python3 - "$DATA" <<'EOF'
import random, sys
rng = random.Random(5)
types = 120_000
weights = [1.0 / (k + 1) ** 1.05 for k in range(types)]
cum, total = [], 0.0
for w in weights:
    total += w
    cum.append(total)
words = [f"w{k}" for k in range(types)]
with open(sys.argv[1], "w") as f:
    f.write("id,label,tweet\n")
    for i in range(28_000):
        n = max(1, int(rng.gauss(12, 4)))
        text = " ".join(rng.choices(words, cum_weights=cum, k=n))
        f.write(f"{i},{int(rng.random() < 0.07)},{text}\n")
EOF
fi
echo "data: $DATA ($(($(wc -l <"$DATA") - 1)) rows)"

run() { # update words repeat
    local out="$work/$1-$2-$3"
    local started ended
    started=$(date +%s.%N)
    RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 "$BIN" train --data "$DATA" --out "$out" --checkpoint \
        --set max_words="$2" --set embedding_dim=128 --set lstm_units=[32] --set dense=[] \
        --set batch_size=128 --set epochs="$EPOCHS" --set early_stopping.enabled=false \
        --set embedding_update="$1" --set batch_norm=false >/dev/null
    ended=$(date +%s.%N)
    # Epoch seconds after the first (warm-up) epoch, and the whole run's wall time.
    python3 - "$out/history.csv" "$started" "$ended" "$1" "$2" >>"$work/runs.txt" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
epochs = [float(r["seconds"]) for r in rows[1:]] or [float(rows[0]["seconds"])]
print(sys.argv[4], sys.argv[5], sum(epochs) / len(epochs), float(sys.argv[3]) - float(sys.argv[2]))
EOF
    rm -rf "$out"
}

for r in $(seq "$REPEATS"); do
    for update in dense sparse; do
        for words in 5000 50000; do
            run "$update" "$words" "$r"
        done
    done
done

python3 - "$work/runs.txt" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    update, words, epoch, wall = line.split()
    runs.setdefault((update, int(words)), []).append((float(epoch), float(wall)))
print()
print("| embedding update | max_words | epoch s (best) | epoch s (median) | run s (median) | epoch ÷ 5,000 words (median) |")
print("|---|---|---|---|---|---|")
for update in ("dense", "sparse"):
    base = statistics.median(e for e, _ in runs[(update, 5000)])
    for words in (5000, 50000):
        epochs = [e for e, _ in runs[(update, words)]]
        walls = [w for _, w in runs[(update, words)]]
        median = statistics.median(epochs)
        print(f"| {update} | {words:,} | {min(epochs):.2f} | {median:.2f} | {statistics.median(walls):.1f} | {median / base:.2f}× |")
EOF
