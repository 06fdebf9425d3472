"""The bag-of-words baseline and the side-by-side quality table of scripts/quality.sh.

    quality_table.py DEV.csv TEST.csv [--model NAME=PREDICTIONS.csv:SECONDS ...]

Fits a character n-gram TF-IDF + logistic regression on DEV (its threshold: the best F1 over
5-fold cross-validated probabilities on DEV, so TEST is never looked at), scores TEST, and
prints one table with every model: F1 at the model's own threshold, precision, recall,
average precision, ROC-AUC and wall time. Each `--model` is a `rnnsweep predict` output
(`id,probability,label`, the label at the model's own threshold) and its wall time.
"""
import argparse
import csv
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline


def read(path):
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(f))
    return rows


def best_f1_threshold(probabilities, labels):
    """The threshold with the best F1, halfway to the next lower score (as rnnsweep does)."""
    order = np.argsort(-probabilities, kind="stable")
    p, y = probabilities[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    last = np.r_[p[1:] != p[:-1], True]
    tp, fp, cut = tp[last], fp[last], p[last]
    f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
    k = int(np.argmax(f1))
    return (cut[k] + cut[k + 1]) / 2 if k + 1 < len(cut) else cut[k]


def baseline(dev, test):
    started = time.time()
    texts = [r["tweet"] for r in dev]
    labels = np.array([int(r["label"]) for r in dev])

    def model():
        return make_pipeline(
            TfidfVectorizer(
                analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True
            ),
            LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced"),
        )

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    cv = cross_val_predict(model(), texts, labels, cv=folds, method="predict_proba")[:, 1]
    threshold = best_f1_threshold(cv, labels)
    fitted = model().fit(texts, labels)
    probabilities = fitted.predict_proba([r["tweet"] for r in test])[:, 1]
    return probabilities, probabilities >= threshold, time.time() - started, threshold


def scores(name, probabilities, predicted, labels, seconds, threshold):
    return {
        "model": name,
        "f1": f1_score(labels, predicted),
        "precision": precision_score(labels, predicted, zero_division=0),
        "recall": recall_score(labels, predicted),
        "ap": average_precision_score(labels, probabilities),
        "roc_auc": roc_auc_score(labels, probabilities),
        "threshold": threshold,
        "seconds": seconds,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dev")
    parser.add_argument("test")
    parser.add_argument("--model", action="append", default=[])
    args = parser.parse_args()
    dev, test = read(args.dev), read(args.test)
    labels = np.array([int(r["label"]) for r in test])
    by_id = {r["id"]: i for i, r in enumerate(test)}
    rows = []
    for spec in args.model:
        name, rest = spec.split("=", 1)
        path, seconds = rest.rsplit(":", 1)
        probabilities = np.zeros(len(test))
        predicted = np.zeros(len(test), dtype=bool)
        seen = 0
        for r in read(path):
            i = by_id[r["id"]]
            probabilities[i] = float(r["probability"])
            predicted[i] = r["label"] == "1"
            seen += 1
        if seen != len(test):
            raise SystemExit(f"{path}: {seen} predictions for {len(test)} test rows")
        flagged = probabilities[predicted]
        threshold = flagged.min() if len(flagged) else float("nan")
        rows.append(scores(name, probabilities, predicted, labels, float(seconds), threshold))
    p, predicted, seconds, threshold = baseline(dev, test)
    rows.append(scores("tf-idf char 2-5 + logistic regression", p, predicted, labels, seconds, threshold))
    print(
        f"DEV {args.dev}: {len(dev)} rows ({sum(r['label'] == '1' for r in dev)} hateful); "
        f"TEST {args.test}: {len(test)} rows ({int(labels.sum())} hateful)"
    )
    print()
    header = f"| {'model':<40} | F1 (own threshold) | precision | recall |   AP   | ROC-AUC | threshold | wall time |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r['model']:<40} | {r['f1']:>18.4f} | {r['precision']:>9.4f} | {r['recall']:>6.4f} "
            f"| {r['ap']:.4f} | {r['roc_auc']:>7.4f} | {r['threshold']:>9.4f} | {r['seconds']:>7.0f} s |"
        )


if __name__ == "__main__":
    main()
