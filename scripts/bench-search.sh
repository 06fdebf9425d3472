#!/usr/bin/env bash
# Search efficiency, in one run:
#  (a) best value after 50/100/200 trials on Branin and Hartmann-6, random vs TPE, rnnsweep and
#      Optuna (5.0.0 from PyPI, in a venv) side by side, averaged over SEEDS seeds;
#  (b) orchestration overhead per trial at 10,000 trials with SQLite (scripts/bench-overhead.sh);
#  (c) on the bundled sample, random search with and without ASHA: epochs trained, wall time and
#      best val F1.
#   scripts/bench-search.sh [SEEDS=10] [TRIALS=200] [OVERHEAD_TRIALS=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-10}
trials=${2:-200}
overhead=${3:-10000}
venv=${OPTUNA_VENV:-.venv-optuna}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import optuna, pandas, sys; sys.exit(optuna.__version__ != "5.0.0")' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "optuna==5.0.0" pandas
fi
cargo build --release -q -p rnnsweep
bin=$PWD/target/release/rnnsweep
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== (a) samplers on synthetic functions: $seeds seeds x $trials trials"
: >"$work/curves.jsonl"
for fn in branin hartmann6; do
  if [ $fn = branin ]; then
    params='  x0: {distribution: uniform, min: -5, max: 10}
  x1: {distribution: uniform, min: 0, max: 15}'
  else
    params=$(for i in 0 1 2 3 4 5; do echo "  x$i: {distribution: uniform, min: 0, max: 1}"; done)
  fi
  for method in random tpe; do
    for seed in $(seq 0 $((seeds - 1))); do
      name="${fn}_${method}_$seed"
      printf 'name: %s\nstorage: %s.db\nmethod: %s\nseed: %s\nrun_cap: %s\ntrial: {kind: function, name: %s, epochs: 1}\nresources: {trials_per_device: 2, threads_per_trial: 1}\nparameters:\n%s\n' \
        "$name" "$name" "$method" "$seed" "$trials" "$fn" "$params" >"$work/$name.yaml"
      "$bin" run "$work/$name.yaml" >/dev/null
      python3 - "$work/$name.db" "$fn" "$method" "$seed" >>"$work/curves.jsonl" <<'PY'
import json, math, sqlite3, sys
db, fn, method, seed = sys.argv[1:5]
rows = sqlite3.connect(db).execute(
    "SELECT v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE' ORDER BY t.number").fetchall()
best, running = math.inf, []
for (v,) in rows:
    best = min(best, v)
    running.append(best)
print(json.dumps({"tool": "rnnsweep", "function": fn, "sampler": method, "seed": int(seed), "best": running}))
PY
    done
  done
done
"$venv/bin/python" scripts/bench_search_optuna.py "$trials" "$seeds" >>"$work/curves.jsonl"
python3 - "$work/curves.jsonl" "$trials" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = int(sys.argv[2])
marks = [m for m in (50, 100, 200) if m <= n]
minimum = {"branin": 0.397887, "hartmann6": -3.322368}
print(f"{'function':<10} {'tool':<9} {'sampler':<7} " + " ".join(f"{'best@'+str(m):>16}" for m in marks) + "   (mean ± sd over seeds; lower is better)")
for fn in ("branin", "hartmann6"):
    for tool in ("rnnsweep", "optuna"):
        for sampler in ("random", "tpe"):
            sel = [r["best"] for r in rows if r["function"] == fn and r["tool"] == tool and r["sampler"] == sampler]
            cells = []
            for m in marks:
                vals = [b[m - 1] for b in sel if len(b) >= m]
                cells.append(f"{statistics.mean(vals):>8.4f} ± {statistics.pstdev(vals):<5.3f}" if vals else f"{'-':>16}")
            print(f"{fn:<10} {tool:<9} {sampler:<7} " + " ".join(cells))
    print(f"{'':<10} (global minimum {minimum[fn]})")
PY

echo
echo "== (b) orchestration overhead at $overhead trials (SQLite, trivial trial)"
bash scripts/bench-overhead.sh "$overhead" 1

echo
echo "== (c) random search on the sample with and without ASHA"
cp -r experiments/data "$work/data"
for variant in plain asha; do
  sed -e "s/^name: .*/name: $variant/" -e '/^max_duration/d' -e 's/^run_cap: .*/run_cap: 16/' -e 's/^  epochs: .*/  epochs: 9/' \
    -e 's/^  early_stopping: .*/  early_stopping: {enabled: false}/' experiments/quickstart.yaml >"$work/$variant.yaml"
  printf 'storage: %s.db\nresources: {devices: [cpu], trials_per_device: 2, threads_per_trial: 1}\n' "$variant" >>"$work/$variant.yaml"
  if [ $variant = asha ]; then echo 'early_terminate: {type: hyperband, min_iter: 1, max_iter: 9, eta: 3}' >>"$work/$variant.yaml"; fi
  start=$(date +%s.%N)
  "$bin" run "$work/$variant.yaml" >/dev/null
  end=$(date +%s.%N)
  echo "$variant $(python3 -c "print($end-$start)")" >>"$work/times"
done
python3 - "$work" <<'PY'
import sqlite3, sys
work = sys.argv[1]
times = dict(l.split() for l in open(f"{work}/times"))
print(f"{'search':<8} {'trials':>6} {'pruned':>6} {'epochs':>7} {'wall s':>7} {'best val_f1':>11} {'epochs to reach the plain best':>31}")
res = {}
for v in ("plain", "asha"):
    c = sqlite3.connect(f"{work}/{v}.db")
    trials = c.execute("SELECT t.trial_id, t.state, v.value FROM trials t LEFT JOIN trial_values v ON v.trial_id = t.trial_id ORDER BY t.number").fetchall()
    epochs_each = {tid: n for tid, n in c.execute("SELECT trial_id, count(*) FROM trial_intermediate_values GROUP BY trial_id")}
    done = [(tid, s, val) for tid, s, val in trials if s in ("COMPLETE", "PRUNED")]
    best = max((val for _, s, val in done if s == "COMPLETE" and val is not None), default=float("nan"))
    res[v] = (done, epochs_each, best)
target = res["plain"][2]
for v in ("plain", "asha"):
    done, epochs_each, best = res[v]
    spent, reached = 0, None
    for tid, s, val in done:
        spent += epochs_each.get(tid, 0)
        if reached is None and s == "COMPLETE" and val is not None and val >= target - 1e-12:
            reached = spent
    total = sum(epochs_each.get(tid, 0) for tid, _, _ in done)
    pruned = sum(1 for _, s, _ in done if s == "PRUNED")
    print(f"{v:<8} {len(done):>6} {pruned:>6} {total:>7} {float(times[v]):>7.1f} {best:>11.4f} {str(reached if reached is not None else 'not reached'):>31}")
PY
