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
    print("| U | threads | trainer | runs | ms/batch (median run) | ms/batch (best run) | samples/s (median) | GFLOP/s (median) | % of peak | ÷ pytorch | ÷ pytorch-kept-memory | ÷ pytorch-packed-kept-memory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for units, threads in sorted({(u, t) for u, t, _ in runs}):
        flops = training_flops_per_sample(units)
        def median_rate(trainer):
            rs = runs.get((units, threads, trainer))
            return statistics.median(r["samples_per_s"] for r in rs) if rs else None

        for trainer in TRAINERS:
            rs = runs.get((units, threads, trainer))
            if not rs:
                continue
            # Epoch averages: seconds for the epoch over its batches, one figure per run.
            rate = statistics.median(r["samples_per_s"] for r in rs)
            ms = statistics.median(1e3 * r["seconds"] / r["batches"] for r in rs)
            best = min(1e3 * r["seconds"] / r["batches"] for r in rs)
            # GFLOP/s only where every row is full length (the FLOP count assumes it).
            full = "real" not in trainer and "packed" not in trainer
            gflops = rate * flops / 1e9
            pct = 100 * gflops / peak[threads] if threads in peak else float("nan")
            ratios = []
            for other in ("pytorch", "pytorch-kept-memory", "pytorch-packed-kept-memory"):
                # Character rows compare to PyTorch on the same character lengths only.
                if "char" in trainer:
                    other = other.replace("pytorch-packed", "pytorch-packed-char")
                    if "char" not in other:
                        ratios.append("")
                        continue
                theirs = median_rate(other)
                # Full-length PyTorch is the cost a masked model pays, the baseline for every
                # row; packed PyTorch trains the real-length rows, so only those compare to it.
                comparable = "packed" not in other or "real" in trainer
                ratios.append(
                    f"{rate / theirs:.2f}×"
                    if trainer.startswith("rnnsweep") and theirs and comparable
                    else ""
                )
            print(f"| {units} | {threads} | {trainer} | {len(rs)} | {ms:.1f} | {best:.1f} | {rate:.0f} | "
                  + (f"{gflops:.1f} | {pct:.0f} % | " if full else "- | - | ")
                  + " | ".join(ratios) + " |")
    inference_table(runs)


def inference_table(runs):
    keys = sorted({(u, t) for u, t, tr in runs if tr.endswith("-infer")})
    if not keys:
        return
    print()
    print("Inference (the predict path, batches of 1024; PyTorch in inference_mode, as installed and"
          " with the allocator setting):")
    print()
    print("| U | threads | rnnsweep samples/s | pytorch samples/s | pytorch-kept-memory samples/s"
          " | ÷ pytorch | ÷ pytorch-kept-memory |")
    print("|---|---|---|---|---|---|---|")
    for units, threads in keys:
        def median(trainer):
            rs = runs.get((units, threads, trainer))
            return statistics.median(r["samples_per_s"] for r in rs) if rs else None

        ours = median("rnnsweep-fused-infer")
        plain = median("pytorch-infer")
        kept = median("pytorch-infer-kept-memory")
        if not ours:
            continue
        cell = lambda v: f"{v:.0f}" if v else "-"
        ratio = lambda v: f"{ours / v:.2f}×" if v else "-"
        print(f"| {units} | {threads} | {ours:.0f} | {cell(plain)} | {cell(kept)} | {ratio(plain)} | {ratio(kept)} |")


TRAINERS = (
    "rnnsweep-fused",
    "rnnsweep-fused-real",
    "rnnsweep-fused-real-bucket",
    "rnnsweep-fused-char-real",
    "rnnsweep-fused-char-real-bucket",
    "rnnsweep-reference",
    "pytorch",
    "pytorch-kept-memory",
    "pytorch-packed",
    "pytorch-packed-kept-memory",
    "pytorch-packed-char-kept-memory",
)

if __name__ == "__main__":
    main(sys.argv[1])
