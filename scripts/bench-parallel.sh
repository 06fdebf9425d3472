#!/usr/bin/env bash
# Parallel trials vs one at a time, side by side in one run: the quickstart sweep (real BiLSTM
# trials on the bundled sample) with 1 CPU slot, then with 2 slots, 1 thread per trial in both.
# Repeats each REPEATS times (alternating) and prints min and median wall time and the ratio.
#   scripts/bench-parallel.sh [REPEATS=3] [RUN_CAP=8]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
run_cap=${2:-8}
cargo build --release -q -p rnnsweep
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r experiments/data "$work/data"
declare -A times
for r in $(seq "$repeats"); do
  for slots in 1 2; do
    name="par${slots}_$r"
    sed -e "s/^name: .*/name: $name/" -e "s/^run_cap: .*/run_cap: $run_cap/" -e '/^max_duration/d' \
      experiments/quickstart.yaml >"$work/$name.yaml"
    printf 'storage: %s.db\nresources: {devices: [cpu], trials_per_device: %s, threads_per_trial: 1}\n' "$name" "$slots" >>"$work/$name.yaml"
    start=$(date +%s.%N)
    target/release/rnnsweep run "$work/$name.yaml" >"$work/$name.log"
    end=$(date +%s.%N)
    times[$slots]="${times[$slots]:-} $(python3 -c "print(f'{$end-$start:.2f}')")"
    echo "repeat $r, $slots slot(s): $(echo "${times[$slots]}" | awk '{print $NF}') s"
  done
done
python3 - "${times[1]}" "${times[2]}" "$run_cap" <<'PY'
import statistics, sys
one = [float(x) for x in sys.argv[1].split()]
two = [float(x) for x in sys.argv[2].split()]
print(f"\n{sys.argv[3]} trials | 1 slot: min {min(one):.2f} s, median {statistics.median(one):.2f} s"
      f" | 2 slots: min {min(two):.2f} s, median {statistics.median(two):.2f} s")
print(f"speed-up with 2 slots: {min(one)/min(two):.2f}x (min), {statistics.median(one)/statistics.median(two):.2f}x (median)")
PY
