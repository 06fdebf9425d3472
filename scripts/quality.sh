#!/usr/bin/env bash
# Does the search find a model that holds up on tweets nobody selected on? Runs
# experiments/tweets-cpu.yaml on DEV, builds its final model (`best --retrain`: the spec's
# ensemble), scores TEST with it, fits a character n-gram TF-IDF + logistic regression baseline
# on DEV (threshold by 5-fold cross-validation on DEV), and prints one side-by-side table.
#
#   bash scripts/quality.sh DEV.csv TEST.csv
#
# DEV and TEST are `id,label,tweet` files with no rows in common; TEST is only ever scored.
# To measure without a test split of your own, split a labelled file in two (e.g. 70/30,
# stratified). Environment: MAX_DURATION (the spec's 60m), ENSEMBLE (the spec's), WORK (a
# folder for the study, the model and the predictions; default results/quality-<time>),
# VENV (.venv-quality: created with scikit-learn from the package index when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bash scripts/quality.sh DEV.csv TEST.csv" >&2; exit 2; }
DEV=$(realpath "$1")
TEST=$(realpath "$2")
for f in "$DEV" "$TEST"; do
    [ -f "$f" ] || { echo "$f: no such file" >&2; exit 2; }
done
WORK=${WORK:-results/quality-$(date +%Y%m%d-%H%M%S)}
VENV=${VENV:-.venv-quality}
mkdir -p "$WORK"
WORK=$(realpath "$WORK")

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import sklearn" 2>/dev/null; then
    echo "creating $VENV with scikit-learn" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q scikit-learn
fi
cargo build --release -q -p rnnsweep
BIN=$(realpath target/release/rnnsweep)

# The spec as users run it, pointed at DEV and at a study of its own.
spec="$WORK/tweets-cpu.yaml"
sed -e "s|^  train: .*|  train: $DEV|" -e "s|^storage: .*|storage: $WORK/tweets-cpu.db|" \
    experiments/tweets-cpu.yaml >"$spec"
if [ -n "${MAX_DURATION:-}" ]; then
    sed -i "s|^max_duration: .*|max_duration: $MAX_DURATION|" "$spec"
fi
grep -q "^  train: $DEV\$" "$spec" || { echo "could not point the spec at $DEV" >&2; exit 1; }

started=$(date +%s)
"$BIN" run "$spec" | tail -n 25
searched=$(date +%s)
ensemble=()
[ -z "${ENSEMBLE:-}" ] || ensemble=(--ensemble "$ENSEMBLE")
"$BIN" best "$WORK/tweets-cpu.db" --retrain --out "$WORK/model" "${ensemble[@]}" | grep -v '^epoch'
trained=$(date +%s)
"$BIN" predict --model "$WORK/model" --input "$TEST" --out "$WORK/test-predictions.csv"
predicted=$(date +%s)
echo "search $((searched - started)) s, final model $((trained - searched)) s, scoring TEST $((predicted - trained)) s"
# The single best configuration beside it: is the ensemble worth its training time?
"$BIN" best "$WORK/tweets-cpu.db" --retrain --ensemble 1 --out "$WORK/single" | grep -v '^epoch'
"$BIN" predict --model "$WORK/single" --input "$TEST" --out "$WORK/test-predictions-single.csv"
single=$(date +%s)
echo
"$VENV/bin/python" scripts/quality_table.py "$DEV" "$TEST" \
    --model "rnnsweep: search + final model (spec)=$WORK/test-predictions.csv:$((predicted - started))" \
    --model "rnnsweep: search + single best=$WORK/test-predictions-single.csv:$((searched - started + single - predicted))" \
    | tee "$WORK/table.md"
