#!/usr/bin/env bash
# Orchestration overhead per trial: a sweep of N trivial trials (a worker that prints one
# final line at once), timed end to end, so the figure is the driver's own cost per trial
# (claim in an exclusive transaction, task file, process start, result, finish).
#   scripts/bench-overhead.sh [N=200] [REPEATS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
repeats=${2:-3}
cargo build --release -q -p rnnsweep
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "id,label,tweet" >"$work/t.csv"
echo "1,0,x" >>"$work/t.csv"
cat >"$work/worker.sh" <<'SH'
#!/bin/sh
echo '{"type":"epoch","epoch":1,"metrics":{"val_f1":0.5}}'
echo '{"type":"final","metrics":{"val_f1":0.5}}'
SH
chmod +x "$work/worker.sh"
for r in $(seq "$repeats"); do
  cat >"$work/s$r.yaml" <<YAML
name: overhead$r
storage: overhead$r.db
data: {train: t.csv}
method: random
run_cap: $n
trial: {command: [$work/worker.sh]}
parameters:
  x: {distribution: uniform, min: 0, max: 1}
YAML
  start=$(date +%s.%N)
  target/release/rnnsweep run "$work/s$r.yaml" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'run $r: $n trials in {($end-$start):.2f} s = {1000*($end-$start)/$n:.1f} ms per trial')"
done
