#!/usr/bin/env python3
"""Checks that two prediction files (`rnnsweep predict` and `scripts/onnx_predict.py`) agree:
the same header and ids in the same order, every probability within TOLERANCE, and the same
decision on every row whose probabilities are not within TOLERANCE of a threshold.

    python3 scripts/compare_predictions.py EXPECTED.csv GOT.csv [--tolerance 1e-5]
"""

import argparse
import csv
import sys


def read(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("expected")
    parser.add_argument("got")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    header, expected = read(args.expected)
    got_header, got = read(args.got)
    if header != got_header:
        sys.exit(f"{args.got}: header {got_header}, expected {header}")
    if len(expected) != len(got):
        sys.exit(f"{args.got}: {len(got)} rows, expected {len(expected)}")
    binary = header == ["id", "probability", "label"]
    prob_cols = [1] if binary else list(range(2, len(header)))
    decision_col = 2 if binary else 1
    worst, decided_differently = 0.0, []
    for line, (e, g) in enumerate(zip(expected, got), start=2):
        if e[0] != g[0]:
            sys.exit(f"{args.got}: line {line}: id {g[0]!r}, expected {e[0]!r}")
        gaps = [abs(float(e[c]) - float(g[c])) for c in prob_cols]
        worst = max(worst, max(gaps))
        if e[decision_col] != g[decision_col]:
            decided_differently.append((line, e[decision_col], g[decision_col]))
    if worst > args.tolerance:
        sys.exit(f"{args.got}: largest probability difference {worst:.2e} > {args.tolerance:.0e}")
    if decided_differently:
        line, a, b = decided_differently[0]
        sys.exit(
            f"{args.got}: {len(decided_differently)} rows decided differently (first: line {line}, {b!r} instead of {a!r})"
        )
    print(f"{args.got}: {len(got)} rows match (largest probability difference {worst:.1e})")


if __name__ == "__main__":
    main()
