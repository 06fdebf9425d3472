#!/usr/bin/env bash
# Runs a small sweep, then checks with Optuna 5.0.0 itself (from PyPI, in a venv) that the
# study opens as it is: load_study, trials_dataframe, best_trial, intermediate values; then
# that trials enqueued with Optuna's enqueue_trial run with exactly their values. With
# RNNSWEEP_TEST_POSTGRES set, the same sweep is also run into PostgreSQL and checked there.
#   scripts/check-optuna.sh [STUDY.db STUDY_NAME]   (default: a fresh run of a tiny spec)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${OPTUNA_VENV:-.venv-optuna}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import optuna, pandas, psycopg, sys; sys.exit(optuna.__version__ != "5.0.0")' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "optuna==5.0.0" pandas "psycopg[binary]"
fi
cargo build --release -q -p rnnsweep
bin=target/release/rnnsweep
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -ge 2 ]; then
  db=$1 name=$2
else
  cp -r experiments/data "$work/data"
  cat >"$work/spec.yaml" <<'YAML'
name: optuna-check
storage: optuna-check.db
data: {train: data/sample.csv}
method: random
seed: 5
metric: {name: val_f1, goal: maximize}
run_cap: 4
training: {epochs: 2, batch_size: 64, batch_norm_momentum: 0.9, lstm_units: [8], dense: [{units: 8}], embedding_dim: 8}
parameters:
  optimizer: {values: [adam, rmsprop]}
  learning_rate: {distribution: log_uniform_values, min: 0.001, max: 0.02}
  lstm_units: {values: [8, [8, 8]]}
  dense_layers: {values: [1, 2]}
  dense.1.units: {distribution: int_uniform, min: 4, max: 16}
  lstm_dropout: {distribution: q_uniform, min: 0.0, max: 0.3, q: 0.1}
YAML
  RAYON_NUM_THREADS=1 "$bin" run "$work/spec.yaml" >"$work/run.log"
  db=$work/optuna-check.db name=optuna-check
fi
"$bin" leaderboard "$db" --study "$name" --format json >"$work/leaderboard.json"
"$venv/bin/python" scripts/check_optuna.py "sqlite:///$db" "$name" "$work/leaderboard.json"
if [ $# -lt 2 ]; then
  # Trials enqueued from Optuna run with exactly their values; one outside the space fails.
  "$venv/bin/python" scripts/check_optuna_enqueue.py enqueue "sqlite:///$db" "$name"
  sed -i 's/^run_cap: 4$/run_cap: 6/' "$work/spec.yaml"
  RAYON_NUM_THREADS=1 "$bin" run "$work/spec.yaml" >"$work/run-enqueued.log"
  "$venv/bin/python" scripts/check_optuna_enqueue.py verify "sqlite:///$db" "$name"
  "$bin" leaderboard "sqlite:///$db" --study "$name" --format json >"$work/leaderboard.json"
  "$venv/bin/python" scripts/check_optuna.py "sqlite:///$db" "$name" "$work/leaderboard.json"
fi
if [ $# -lt 2 ]; then
  # A three-class study (labels written as words, an unnamed id column) reads the same way,
  # with its macro F1 as the objective and the per-class scores as attributes.
  cat >"$work/topics.yaml" <<'YAML'
name: topics-check
storage: topics-check.db
data: {train: data/topics.csv, columns: {id: '', label: class, text: text}}
method: random
seed: 5
metric: {name: val_macro_f1, goal: maximize}
run_cap: 3
training: {epochs: 2, batch_size: 32, batch_norm_momentum: 0.9, lstm_units: [8], dense: [{units: 8}], embedding_dim: 8, threshold: {mode: max_macro_f1}}
parameters:
  optimizer: {values: [adam, nadam]}
  learning_rate: {distribution: log_uniform_values, min: 0.002, max: 0.02}
YAML
  RAYON_NUM_THREADS=1 "$bin" run "$work/topics.yaml" >"$work/run-topics.log"
  "$bin" leaderboard "$work/topics-check.db" --study topics-check --format json >"$work/leaderboard-topics.json"
  "$venv/bin/python" scripts/check_optuna.py "sqlite:///$work/topics-check.db" topics-check "$work/leaderboard-topics.json"
  "$venv/bin/python" - "sqlite:///$work/topics-check.db" <<'PY'
import sys, optuna
study = optuna.load_study(study_name="topics-check", storage=sys.argv[1])
best = study.best_trial
assert best.value == best.user_attrs["val_macro_f1"], (best.value, best.user_attrs)
classes = [c["class"] for c in best.user_attrs["val_per_class"]]
assert classes == ["politics", "sport", "tech"], classes
matrix = best.user_attrs["val_confusion_matrix"]
assert len(matrix) == 3 and all(len(r) == 3 for r in matrix), matrix
print(f"OK: three-class study, best macro F1 {study.best_value:.4f}, classes {classes}")
PY
fi
if [ -n "${RNNSWEEP_TEST_POSTGRES:-}" ] && [ $# -lt 2 ]; then
  # A fresh database for the check, next to the test server's own.
  pgdb="optuna_check_$$"
  "$venv/bin/python" - "$RNNSWEEP_TEST_POSTGRES" "$pgdb" <<'PY'
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute(f"DROP DATABASE IF EXISTS {sys.argv[2]}")
    c.execute(f"CREATE DATABASE {sys.argv[2]}")
PY
  pgurl="${RNNSWEEP_TEST_POSTGRES%/*}/$pgdb"
  RAYON_NUM_THREADS=1 "$bin" run "$work/spec.yaml" --storage "$pgurl" >"$work/run-pg.log"
  "$bin" leaderboard "$pgurl" --study "$name" --format json >"$work/leaderboard-pg.json"
  "$venv/bin/python" scripts/check_optuna.py "$pgurl" "$name" "$work/leaderboard-pg.json"
fi
