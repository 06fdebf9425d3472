"""The bag-of-words baseline and the side-by-side quality table of scripts/quality.sh.

    quality_table.py DEV.csv TEST.csv [--task binary|multiclass] [--columns ID,LABEL,TEXT]
                     [--model NAME=PREDICTIONS.csv:SECONDS[:PREDICT_SECONDS] ...]

Fits a character n-gram TF-IDF + logistic regression (balanced class weights; one-vs-rest for
several classes) on DEV, scores TEST, and prints one table with every model. Binary: F1 at
the model's own threshold (the baseline's: the best F1 over 5-fold cross-validated
probabilities on DEV, so TEST is never looked at), precision, recall, average precision,
ROC-AUC. Multi-class: macro F1 (of each model's own decision: rnnsweep's `label` column, the
argmax after its per-class offsets; the baseline's argmax), weighted F1, accuracy, one-vs-rest macro
ROC-AUC and average precision, log loss, and each class's F1. Each `--model` is a
`rnnsweep predict` output (`id,probability,label` for binary, `id,label,` then one column per
class otherwise), its wall time (search and training) and, when given, the seconds `rnnsweep
predict` took on TEST, shown as TEST rows per second (the baseline's: its transform and
predict_proba on TEST). Binary labels that are not 0/1 are read as the sorted
class names (the second is the positive class, as rnnsweep reads them).
"""
import argparse
import csv
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import label_binarize


def read(path):
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return list(csv.DictReader(f))


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


def pipeline(classes):
    lr = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced")
    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
        OneVsRestClassifier(lr) if classes > 2 else lr,
    )


def classes_of(values):
    distinct = sorted(set(values))
    if set(distinct) <= {"0", "1"}:
        return ["0", "1"]
    if all(v.lstrip("-").isdigit() for v in distinct):
        distinct.sort(key=int)
    return distinct


def parse_model(spec):
    """NAME=PATH:SECONDS[:PREDICT_SECONDS] -> (name, path, seconds, predict seconds or None)."""
    name, rest = spec.split("=", 1)
    parts = rest.split(":")
    numbers = []
    while len(parts) > 1 and len(numbers) < 2:
        try:
            numbers.insert(0, float(parts[-1]))
        except ValueError:
            break
        parts.pop()
    if not numbers:
        raise SystemExit(f"--model {spec}: expected NAME=PREDICTIONS.csv:SECONDS[:PREDICT_SECONDS]")
    return name, ":".join(parts), numbers[0], numbers[1] if len(numbers) == 2 else None


def throughput(rows, predict_seconds):
    if not predict_seconds:
        return "      -"
    return f"{rows / predict_seconds:>7.0f}"


def binary_rows(args, dev, test, texts, y_dev, y_test):
    rows = []
    by_id = {r[args.id]: i for i, r in enumerate(test)}
    for spec in args.model:
        name, path, seconds, predict_seconds = parse_model(spec)
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
        rows.append((name, probabilities, predicted, seconds, threshold, predict_seconds))
    started = time.time()
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    cv = cross_val_predict(pipeline(2), texts, y_dev, cv=folds, method="predict_proba")[:, 1]
    threshold = best_f1_threshold(cv, y_dev)
    fitted = pipeline(2).fit(texts, y_dev)
    scoring = time.time()
    p = fitted.predict_proba([r[args.text] for r in test])[:, 1]
    scored = time.time()
    rows.append(("tf-idf char 2-5 + logistic regression", p, p >= threshold, scored - started, threshold, scored - scoring))
    header = f"| {'model':<48} | F1 (own threshold) | precision | recall |   AP   | ROC-AUC | threshold | wall time | TEST rows/s |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for name, probabilities, predicted, seconds, threshold, predict_seconds in rows:
        print(
            f"| {name:<48} | {f1_score(y_test, predicted):>18.4f} "
            f"| {precision_score(y_test, predicted, zero_division=0):>9.4f} "
            f"| {recall_score(y_test, predicted):>6.4f} "
            f"| {average_precision_score(y_test, probabilities):.4f} "
            f"| {roc_auc_score(y_test, probabilities):>7.4f} | {threshold:>9.4f} | {seconds:>7.0f} s "
            f"| {throughput(len(test), predict_seconds):>11} |"
        )


def multiclass_rows(args, dev, test, texts, y_dev, y_test, classes):
    k = len(classes)
    rows = []
    by_id = {r[args.id]: i for i, r in enumerate(test)}
    for spec in args.model:
        name, path, seconds, predict_seconds = parse_model(spec)
        probabilities = np.zeros((len(test), k))
        decided = np.zeros(len(test), dtype=int)
        seen = 0
        for r in read(path):
            i = by_id[r["id"]]
            probabilities[i] = [float(r[c]) for c in classes]
            # The model's own decision (argmax after its per-class offsets, if it has them).
            decided[i] = classes.index(r["label"])
            seen += 1
        if seen != len(test):
            raise SystemExit(f"{path}: {seen} predictions for {len(test)} test rows")
        rows.append((name, probabilities / probabilities.sum(axis=1, keepdims=True), decided, seconds, predict_seconds))
    started = time.time()
    fitted = pipeline(k).fit(texts, y_dev)
    scoring = time.time()
    p = fitted.predict_proba([r[args.text] for r in test])
    scored = time.time()
    p = p / p.sum(axis=1, keepdims=True)
    rows.append(("tf-idf char 2-5 + logistic regression (ovr)", p, p.argmax(axis=1), scored - started, scored - scoring))
    per_class = " | ".join(f"F1 {c}" for c in classes)
    header = f"| {'model':<48} | macro F1 | weighted F1 | accuracy | macro AP | macro ROC-AUC | log loss | {per_class} | wall time | TEST rows/s |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    onehot = label_binarize(y_test, classes=list(range(k)))
    for name, probabilities, predicted, seconds, predict_seconds in rows:
        f1s = f1_score(y_test, predicted, average=None, labels=list(range(k)), zero_division=0)
        print(
            f"| {name:<48} | {f1_score(y_test, predicted, average='macro', labels=list(range(k)), zero_division=0):.4f} "
            f"| {f1_score(y_test, predicted, average='weighted', zero_division=0):.4f} "
            f"| {accuracy_score(y_test, predicted):.4f} "
            f"| {average_precision_score(onehot, probabilities, average='macro'):.4f} "
            f"| {roc_auc_score(y_test, probabilities, multi_class='ovr', labels=list(range(k))):.4f} "
            f"| {log_loss(y_test, np.clip(probabilities, 1e-7, 1), labels=list(range(k))):.4f} | "
            + " | ".join(f"{v:.4f}" for v in f1s)
            + f" | {seconds:>7.0f} s | {throughput(len(test), predict_seconds):>11} |"
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dev")
    parser.add_argument("test")
    parser.add_argument("--task", choices=["binary", "multiclass"], default="binary")
    parser.add_argument("--columns", default="id,label,tweet", help="ID,LABEL,TEXT")
    parser.add_argument("--model", action="append", default=[])
    args = parser.parse_args()
    args.id, args.label, args.text = args.columns.split(",")
    dev, test = read(args.dev), read(args.test)
    if args.id not in dev[0]:
        # No id column: rnnsweep numbers the rows from 0.
        for rows in (dev, test):
            for i, r in enumerate(rows):
                r[args.id] = str(i)
    classes = classes_of([r[args.label] for r in dev])
    index = {c: i for i, c in enumerate(classes)}
    y_dev = np.array([index[r[args.label]] for r in dev])
    y_test = np.array([index[r[args.label]] for r in test])
    texts = [r[args.text] for r in dev]
    counts = lambda y: ", ".join(f"{c} {int((y == i).sum())}" for i, c in enumerate(classes))
    print(f"DEV {args.dev}: {len(dev)} rows ({counts(y_dev)}); TEST {args.test}: {len(test)} rows ({counts(y_test)})")
    print()
    if args.task == "binary":
        if len(classes) != 2:
            raise SystemExit(f"--task binary: the label column has {len(classes)} classes")
        binary_rows(args, dev, test, texts, y_dev, y_test)
    else:
        multiclass_rows(args, dev, test, texts, y_dev, y_test, classes)


if __name__ == "__main__":
    main()
