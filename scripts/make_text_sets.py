"""Two labelled text sets from other domains than hate speech, for measuring the general
recipe (experiments/text-cpu.yaml) with scripts/quality.sh. Reads the npm packages that
scripts/make-text-sets.sh unpacked and writes DEV/TEST CSV pairs (70/30) to OUT:

- spam-{dev,test}.csv: the SpamAssassin public corpus (binary: `spam` vs `ham`, easy and
  hard ham together), `id,label,text`; the text is the Subject line and the first 300 words
  of the body, HTML tags and headers dropped; exact duplicates removed; stratified split.
- sotu-{dev,test}.csv: State of the Union addresses 1790-2018 cut into passages of about
  40 words, labelled by the president's party (3 classes: Democratic, Republican, and
  `earlier` for the parties before 1861 and the non-partisan addresses), `id,label,text`.
  Split by address (stratified by class), so no address gives passages to both sides; then
  at most 10,000 DEV and 4,000 TEST passages are kept, seeded.

Usage: python3 make_text_sets.py PACKAGES_DIR OUT_DIR
"""
import csv
import glob
import html
import json
import os
import random
import re
import sys

SEED = 2021


def stratified(rows, label, share, rng):
    by = {}
    for r in rows:
        by.setdefault(label(r), []).append(r)
    a, b = [], []
    for _, members in sorted(by.items()):
        rng.shuffle(members)
        k = round(len(members) * share)
        b += members[:k]
        a += members[k:]
    rng.shuffle(a)
    rng.shuffle(b)
    return a, b


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "label", "text"])
        for r in rows:
            w.writerow([r["id"], r["label"], r["text"]])
    counts = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    print(f"{path}: {len(rows)} rows {dict(sorted(counts.items()))}")


def email_text(raw):
    head, _, body = raw.partition("\n\n")
    subject = ""
    for line in head.splitlines():
        if line.lower().startswith("subject:"):
            subject = line[8:].strip()
    body = re.sub(r"<[^>]+>", " ", body)
    body = html.unescape(body)
    words = body.split()[:300]
    return (subject + " . " + " ".join(words)).strip()


def spam(packages, out, rng):
    rows, seen = [], set()
    for path in sorted(glob.glob(f"{packages}/spam-assassin/package/data/*/*.json")):
        d = json.load(open(path, encoding="utf-8"))
        text = email_text(d["text"])
        if text in seen:
            continue
        seen.add(text)
        label = "spam" if d["group"].startswith("spam") else "ham"
        rows.append({"id": f"{d['group']}-{d['id']}", "label": label, "text": text})
    dev, test = stratified(rows, lambda r: r["label"], 0.3, rng)
    write(f"{out}/spam-dev.csv", dev)
    write(f"{out}/spam-test.csv", test)


def party(p):
    return p if p in ("Democratic", "Republican") else "earlier"


def sotu(packages, out, rng):
    speeches = []
    for path in sorted(glob.glob(f"{packages}/sotu/package/data/*.json")):
        d = json.load(open(path, encoding="utf-8"))
        speeches.append({"key": os.path.basename(path)[:-5], "label": party(d["party"]), "text": d["text"]})
    dev_speeches, test_speeches = stratified(speeches, lambda s: s["label"], 0.3, rng)

    def passages(group):
        rows = []
        for s in group:
            sentences = re.split(r"(?<=[.!?])\s+", s["text"])
            chunk = []
            for sentence in sentences:
                chunk += sentence.split()
                if len(chunk) >= 40:
                    rows.append({"id": f"{s['key']}-{len(rows)}", "label": s["label"], "text": " ".join(chunk)})
                    chunk = []
        rng.shuffle(rows)
        return rows

    write(f"{out}/sotu-dev.csv", passages(dev_speeches)[:10000])
    write(f"{out}/sotu-test.csv", passages(test_speeches)[:4000])


def main():
    packages, out = sys.argv[1:3]
    os.makedirs(out, exist_ok=True)
    spam(packages, out, random.Random(SEED))
    sotu(packages, out, random.Random(SEED))


if __name__ == "__main__":
    main()
