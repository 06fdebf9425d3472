"""Formats the JSON lines of scripts/bench-trainer.sh as a Markdown table."""

import json
import statistics
import sys

EMBEDDING, TIME, BATCH = 88, 37, 256


def training_flops_per_sample(units):
    # 2·4U·(in+U) per step and direction for the forward matrix multiplies, 3× for training.
    forward = sum(2 * 4 * units * (inp + units) for inp in (EMBEDDING, 2 * units)) * 2 * TIME
    return 3 * forward


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    peak = {}
    for r in rows:
        if "peak_gflops" in r:
            peak[r["threads"]] = max(peak.get(r["threads"], 0.0), r["peak_gflops"])
    runs = {}
    for r in rows:
        if "trainer" in r:
            runs.setdefault((r["units"], r["threads"], r["trainer"]), []).append(r)
    print("matmul peak (2048³, candle's gemm): "
          + ", ".join(f"{t} thread(s) {g:.0f} GFLOP/s" for t, g in sorted(peak.items())))
    print()
    print("| U | threads | trainer | runs | ms/batch (median run) | ms/batch (best run) | samples/s (median) | GFLOP/s (median) | % of peak | rnnsweep ÷ this |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for units, threads in sorted({(u, t) for u, t, _ in runs}):
        flops = training_flops_per_sample(units)
        ours = runs.get((units, threads, "rnnsweep-fused"))
        ours_rate = statistics.median(r["samples_per_s"] for r in ours) if ours else None
        for trainer in ("rnnsweep-fused", "rnnsweep-reference", "pytorch", "pytorch-kept-memory"):
            rs = runs.get((units, threads, trainer))
            if not rs:
                continue
            # Epoch averages: seconds for the epoch over its batches, one figure per run.
            rate = statistics.median(r["samples_per_s"] for r in rs)
            ms = statistics.median(1e3 * r["seconds"] / r["batches"] for r in rs)
            best = min(1e3 * r["seconds"] / r["batches"] for r in rs)
            gflops = rate * flops / 1e9
            pct = 100 * gflops / peak[threads] if threads in peak else float("nan")
            ratio = f"{ours_rate / rate:.2f}×" if ours_rate and trainer != "rnnsweep-fused" else ""
            print(f"| {units} | {threads} | {trainer} | {len(rs)} | {ms:.1f} | {best:.1f} | {rate:.0f} | {gflops:.1f} | {pct:.0f} % | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1])
