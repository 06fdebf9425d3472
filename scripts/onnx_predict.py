#!/usr/bin/env python3
"""Scores a CSV with a model exported by `rnnsweep export-model`, without rnnsweep: the
reference way to use the ONNX file (onnxruntime and numpy only).

    python3 scripts/onnx_predict.py MODEL.onnx INPUT.csv OUT.csv [--batch 256]

Writes what `rnnsweep predict` writes: `id,probability,label` for a binary model, `id,label,`
and a probability per class for a K-class one, `id,labels,` and a probability per label for a
multi-label one. The text is tokenised as Keras's Tokenizer does (`texts_to_sequences`), with
the options and word index of `MODEL.tokenizer.json` (Keras's own tokenizer file: also read by
`keras.preprocessing.text.tokenizer_from_json`), and for a model that reads more views of the text
with each view's own file: `MODEL.char.tokenizer.json` into the input `char_ids`,
`MODEL.ngram.tokenizer.json` (its words' character n-grams, the file's `ngrams` lengths, each word
bounded by < and >) into `ngram_ids`. The model applies its own vocabulary limit,
sequence length and truncation, so the ids go in whole, padded with zeros to the longest row.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import onnxruntime


class KerasTokenizer:
    """Keras's `Tokenizer.texts_to_sequences` (keras.preprocessing.text, Keras 2 and 3)."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            config = json.load(f)["config"]
        self.num_words = config["num_words"]
        self.filters = config["filters"]
        self.lower = config["lower"]
        self.split = config["split"]
        self.char_level = config["char_level"]
        self.oov_token = config["oov_token"]
        self.word_index = json.loads(config["word_index"])
        # rnnsweep's n-gram view (not a Keras option): [shortest, longest].
        self.ngrams = config.get("ngrams")

    def words(self, text):
        if self.lower:
            text = text.lower()
        if self.char_level:
            return list(text)
        table = str.maketrans({c: self.split for c in self.filters})
        words = [w for w in text.translate(table).split(self.split) if w]
        if self.ngrams is None:
            return words
        grams = []
        for w in words:
            bounded = "<" + w + ">"
            for n in range(self.ngrams[0], self.ngrams[1] + 1):
                if len(bounded) <= n:
                    # scikit-learn's char_wb: a word shorter than n is one n-gram, once.
                    grams.append(bounded)
                    break
                grams.extend(bounded[i : i + n] for i in range(len(bounded) - n + 1))
        return grams

    def sequence(self, text):
        oov = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        out = []
        for w in self.words(text):
            i = self.word_index.get(w)
            if i is not None and (self.num_words is None or i < self.num_words):
                out.append(i)
            elif oov is not None:
                out.append(oov)
        return out


def read_rows(path, columns):
    """(id, text) per record, read as rnnsweep reads the file: a header naming the columns, a
    missing `id` column numbering rows from 0, blank lines skipped."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        if columns["text"] not in header:
            sys.exit(f"{path}: no column `{columns['text']}` (header: {','.join(header)})")
        text_col = header.index(columns["text"])
        id_col = header.index(columns["id"]) if columns["id"] in header else None
        if id_col is None and columns["id"] != "id":
            sys.exit(f"{path}: no column `{columns['id']}` (header: {','.join(header)})")
        rows = []
        for fields in reader:
            if fields in ([], [""]):
                continue
            if len(fields) != len(header):
                sys.exit(
                    f"{path}: line {reader.line_num}: {len(fields)} fields, the header has {len(header)}"
                )
            row_id = fields[id_col].strip() if id_col is not None else str(len(rows))
            rows.append((row_id, fields[text_col]))
    return rows


def padded(sequences):
    width = max(1, max(len(s) for s in sequences))
    ids = np.zeros((len(sequences), width), dtype=np.int64)
    for r, s in enumerate(sequences):
        ids[r, : len(s)] = s
    return ids


def probabilities(session, tokenizers, texts, batch):
    """`tokenizers` maps each graph input (`ids`, and `char_ids` or `ngram_ids` for a model that
    reads more views) to the tokenizer whose indices it takes."""
    sequences = {name: [t.sequence(x) for x in texts] for name, t in tokenizers.items()}
    out = []
    for start in range(0, len(texts), batch):
        feed = {name: padded(s[start : start + batch]) for name, s in sequences.items()}
        out.append(session.run(None, feed)[0])
    return np.concatenate(out, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("out")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if "rnnsweep.task" not in meta:
        sys.exit(f"{args.model}: not a model written by `rnnsweep export-model`")
    task = meta["rnnsweep.task"]
    classes = json.loads(meta["rnnsweep.classes"])
    columns = json.loads(meta["rnnsweep.columns"])
    here = os.path.dirname(os.path.abspath(args.model))
    tokenizers = {"ids": KerasTokenizer(os.path.join(here, meta["rnnsweep.tokenizer_file"]))}
    for view in ("char", "ngram"):
        key = f"rnnsweep.{view}_tokenizer_file"
        if key in meta:
            tokenizers[f"{view}_ids"] = KerasTokenizer(os.path.join(here, meta[key]))
    rows = read_rows(args.input, columns)
    p = probabilities(session, tokenizers, [t for _, t in rows], args.batch)
    threshold = float(meta["rnnsweep.threshold"])

    with open(args.out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if task == "binary":
            # rnnsweep compares in f32.
            t = np.float32(threshold)
            w.writerow(["id", "probability", "label"])
            for (row_id, _), v in zip(rows, p):
                w.writerow([row_id, f"{float(v):.6f}", int(np.float32(v) >= t)])
        elif task == "multi_class":
            offsets = json.loads(meta.get("rnnsweep.class_offsets", "[]"))
            w.writerow(["id", "label", *classes])
            for (row_id, _), v in zip(rows, p):
                if offsets:
                    scores = [math.log(max(float(x), sys.float_info.min)) + o for x, o in zip(v, offsets)]
                else:
                    scores = [float(x) for x in v]
                best = 0
                for c in range(1, len(scores)):
                    if scores[c] > scores[best]:
                        best = c
                w.writerow([row_id, classes[best], *(f"{float(x):.6f}" for x in v)])
        else:
            thresholds = json.loads(meta.get("rnnsweep.label_thresholds", "[]"))
            if len(thresholds) != len(classes):
                thresholds = [threshold] * len(classes)
            w.writerow(["id", "labels", *classes])
            for (row_id, _), v in zip(rows, p):
                chosen = [c for c, x in enumerate(v) if float(x) >= thresholds[c]]
                w.writerow([row_id, "|".join(classes[c] for c in chosen), *(f"{float(x):.6f}" for x in v)])
    print(f"{len(rows)} rows scored with {args.model}; written to {args.out}")


if __name__ == "__main__":
    main()
