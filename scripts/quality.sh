#!/usr/bin/env bash
# Does the search find a model that holds up on rows nobody selected on? Runs a spec
# (experiments/tweets-cpu.yaml by default, experiments/text-cpu.yaml for any labelled CSV) on
# DEV, builds its final model (`best --retrain`: the spec's ensemble) and a distilled student of
# that ensemble (`--distill`: one network, the best configuration taught by the ensemble), the
# single best configuration retrained alone, scores TEST with each (timing `predict`),
# fits a character n-gram TF-IDF + logistic regression baseline on DEV (balanced class
# weights; one-vs-rest for several classes; a binary threshold by 5-fold cross-validation on
# DEV), and prints one side-by-side table: F1, AP, ROC-AUC for a binary task, macro F1 (and
# weighted F1, accuracy, per-class F1) for a multi-class one, with each model's whole wall time
# (search included) and its TEST rows per second.
#
#   bash scripts/quality.sh DEV.csv TEST.csv [--spec SPEC.yaml] [--task binary|multiclass]
#
# DEV and TEST have the spec's columns and no rows in common; TEST is only ever scored. Only the
# spec's `train:` and `storage:` lines are changed (its columns and labels are used as written),
# and with UNLABELLED its `final:` asks for the distilled student with those rows, so that
# `max_duration` keeps time for the student as well as the ensemble.
# To measure without a test split of your own, split a labelled file in two (e.g. 70/30,
# stratified). Environment: MAX_DURATION (the spec's), ENSEMBLE (the spec's), UNLABELLED (a CSV
# of rows without labels the student also learns from, e.g. TEST's texts as a competition's
# test file gives them; default none), WORK (a folder
# for the study, the model and the predictions; default results/quality-<time>), VENV
# (.venv-quality: created with scikit-learn and PyYAML from the package index when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash scripts/quality.sh DEV.csv TEST.csv [--spec SPEC.yaml] [--task binary|multiclass]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
DEV=$(realpath "$1")
TEST=$(realpath "$2")
shift 2
SPEC=experiments/tweets-cpu.yaml
TASK=binary
while [ $# -gt 0 ]; do
    case "$1" in
        --spec) SPEC=$2; shift 2 ;;
        --task) TASK=$2; shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
case "$TASK" in binary|multiclass) ;; *) echo "--task $TASK: binary or multiclass" >&2; exit 2 ;; esac
for f in "$DEV" "$TEST" "$SPEC"; do
    [ -f "$f" ] || { echo "$f: no such file" >&2; exit 2; }
done
name=$(basename "$SPEC" .yaml)
WORK=${WORK:-results/quality-$(date +%Y%m%d-%H%M%S)}
VENV=${VENV:-.venv-quality}
mkdir -p "$WORK"
WORK=$(realpath "$WORK")

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import sklearn, yaml" 2>/dev/null; then
    echo "creating $VENV with scikit-learn and PyYAML" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q scikit-learn pyyaml
fi
cargo build --release -q -p rnnsweep
# A copy, so a rebuild while the search runs cannot change the binary halfway.
cp target/release/rnnsweep "$WORK/rnnsweep"
BIN=$WORK/rnnsweep

# The spec as users run it, pointed at DEV and at a study of its own.
spec="$WORK/$name.yaml"
sed -e "s|^  train: .*|  train: $DEV|" -e "s|^storage: .*|storage: $WORK/$name.db|" \
    "$SPEC" >"$spec"
grep -q "^storage: " "$spec" || sed -i "1i storage: $WORK/$name.db" "$spec"
if [ -n "${MAX_DURATION:-}" ]; then
    sed -i "s|^max_duration: .*|max_duration: $MAX_DURATION|" "$spec"
fi
grep -q "^  train: $DEV\$" "$spec" || { echo "could not point the spec at $DEV (it needs a \`  train:\` line under \`data:\`)" >&2; exit 1; }
if [ -n "${UNLABELLED:-}" ]; then
    # The student and its unlabelled rows in the spec's `final:` (one flow-style line in place
    # of the section), where the search's time reserve reads them.
    "$VENV/bin/python" - "$spec" "$(realpath "$UNLABELLED")" <<'PY'
import json, sys, yaml
path, unlabelled = sys.argv[1:]
text = open(path).read()
final = yaml.safe_load(text).get("final") or {}
distill = final.get("distill")
final["distill"] = {**(distill if isinstance(distill, dict) else {}), "unlabelled": unlabelled}
lines, out, skipping = text.splitlines(), [], False
for line in lines:
    if skipping and (line.startswith((" ", "\t")) or not line.strip()):
        continue
    skipping = False
    if line.startswith("final:"):
        out.append("final: " + json.dumps(final))
        skipping = True
        continue
    out.append(line)
if not any(l.startswith("final:") for l in lines):
    out.append("final: " + json.dumps(final))
open(path, "w").write("\n".join(out) + "\n")
PY
fi
columns=$("$VENV/bin/python" -c '
import sys, yaml
c = (yaml.safe_load(open(sys.argv[1]))["data"].get("columns") or {})
print(",".join(str(c.get(k, d)) for k, d in (("id", "id"), ("label", "label"), ("text", "tweet"))))
' "$spec")

now() { date +%s.%N; }
elapsed() { python3 -c "print(round($2 - $1, 1))"; }
started=$(now)
"$BIN" run "$spec" | tail -n 25
searched=$(now)
ensemble=()
[ -z "${ENSEMBLE:-}" ] || ensemble=(--ensemble "$ENSEMBLE")
unlabelled=()
[ -z "${UNLABELLED:-}" ] || unlabelled=(--unlabelled "$(realpath "$UNLABELLED")")
# The spec's ensemble and its distilled student in one run: the ensemble trains once and is
# kept in student/teacher.
"$BIN" best "$WORK/$name.db" --retrain --distill --out "$WORK/student" "${ensemble[@]}" \
    "${unlabelled[@]}" | grep -v '^epoch'
trained=$(now)
# The student's own training time, from its history (the rest of the run is the ensemble's).
student_s=$(python3 -c "import csv,sys; print(round(sum(float(r['seconds']) for r in csv.DictReader(open(sys.argv[1]))), 1))" "$WORK/student/history.csv")
timed_predict() { # MODEL OUT: prints the seconds predict took
    local t0; t0=$(now)
    "$BIN" predict --model "$1" --input "$TEST" --out "$2" >/dev/null
    elapsed "$t0" "$(now)"
}
ensemble_predict=$(timed_predict "$WORK/student/teacher" "$WORK/test-predictions.csv")
student_predict=$(timed_predict "$WORK/student" "$WORK/test-predictions-student.csv")
search_s=$(elapsed "$started" "$searched")
# What the hour bought: trials by state and per hour of search.
"$VENV/bin/python" - "$WORK/$name.db" "$search_s" <<'PY'
import sqlite3, sys
db, seconds = sys.argv[1], float(sys.argv[2])
counts = dict(sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
    "SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
total = sum(counts.values())
states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
print(f"search: {total} trials ({states}) in {seconds:.0f} s: {total * 3600 / seconds:.0f} trials per hour")
PY
final_s=$(elapsed "$searched" "$trained")
members_s=$(python3 -c "print(round($final_s - $student_s, 1))")
echo "search ${search_s} s; final models ${final_s} s (the ensemble's members ${members_s} s, the student ${student_s} s); predict on TEST: ensemble ${ensemble_predict} s, student ${student_predict} s"
# The single best configuration beside them: is the ensemble worth its training time?
single_started=$(now)
"$BIN" best "$WORK/$name.db" --retrain --ensemble 1 --no-distill --out "$WORK/single" | grep -v '^epoch'
single_s=$(elapsed "$single_started" "$(now)")
single_predict=$(timed_predict "$WORK/single" "$WORK/test-predictions-single.csv")
echo "single best retrained in ${single_s} s; predict on TEST ${single_predict} s"
seconds() { python3 -c "print(round(sum(float(x) for x in '$*'.split()), 1))"; }
echo
"$VENV/bin/python" scripts/quality_table.py "$DEV" "$TEST" --task "$TASK" --columns "$columns" \
    --model "rnnsweep: search + final ensemble (spec)=$WORK/test-predictions.csv:$(seconds "$search_s" "$members_s" "$ensemble_predict"):$ensemble_predict" \
    --model "rnnsweep: search + ensemble + distilled student=$WORK/test-predictions-student.csv:$(seconds "$search_s" "$final_s" "$student_predict"):$student_predict" \
    --model "rnnsweep: search + single best=$WORK/test-predictions-single.csv:$(seconds "$search_s" "$single_s" "$single_predict"):$single_predict" \
    | tee "$WORK/table.md"
