#!/usr/bin/env python3
"""Writes experiments/data/topics.csv: a seeded three-class stand-in for people's own data,
and experiments/data/topics-multilabel.csv: the same messages with one 0/1 column per topic
(`id,text,sport,politics,tech`: every topic a message talks about, so a fifth have two; a
topic only denied does not count).

~1,500 short messages about sport, politics or technology (invented words and phrases),
labelled with words in a column `class`, an unnamed first column as pandas writes its index,
the text in `text`. Classes are unbalanced (about 50 / 30 / 20 %). A fifth of the rows
borrow a phrase of another class, and some rows mention a topic only to deny it ("this is
not about the election, the match was great"), so a bag of words is not enough to be right
on every row.

Usage: python3 scripts/gen-topics-sample.py [--rows 1500] [--seed 7] [--out PATH]
"""
import argparse
import csv
import random

TOPICS = {
    "sport": ["the match", "our striker", "the league", "a late goal", "the coach", "the derby",
              "penalty kicks", "the final whistle", "the away fans", "a clean sheet"],
    "politics": ["the election", "the senate vote", "the new bill", "the minister", "a recount",
                 "the campaign", "the coalition", "tax reform", "the debate", "the ballot"],
    "tech": ["the new chip", "a software update", "the compiler", "our servers", "the app",
             "a data leak", "the battery", "open source code", "the robot", "cloud storage"],
}
VERBS = ["was great", "went badly", "surprised everyone", "is all anyone talks about",
         "looked shaky", "changed everything", "was a disaster", "made my day", "is overrated"]
FILLER = ("honestly today really just so again lol wow yesterday tonight still never always "
          "my friend said i think we all know").split()
SHARES = [("sport", 0.5), ("politics", 0.3), ("tech", 0.2)]


def message(rng: random.Random, label: str) -> tuple[str, set[str]]:
    words = [rng.choice(FILLER) for _ in range(rng.randint(0, 3))]
    words += [rng.choice(TOPICS[label]), rng.choice(VERBS)]
    other = rng.choice([c for c in TOPICS if c != label])
    about = {label}
    r = rng.random()
    if r < 0.2:
        words += ["and", rng.choice(TOPICS[other]), rng.choice(VERBS)]
        about.add(other)
    elif r < 0.3:
        words = ["this is not about", rng.choice(TOPICS[other]) + ","] + words
    words += [rng.choice(FILLER) for _ in range(rng.randint(0, 2))]
    return " ".join(words), about


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="experiments/data/topics.csv")
    ap.add_argument("--multi-label-out", default="experiments/data/topics-multilabel.csv")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    names = [n for n, _ in SHARES]
    weights = [w for _, w in SHARES]
    with open(args.out, "w", newline="") as f, open(args.multi_label_out, "w", newline="") as g:
        w = csv.writer(f, lineterminator="\n")
        m = csv.writer(g, lineterminator="\n")
        w.writerow(["", "class", "text"])
        m.writerow(["id", "text"] + names)
        for i in range(args.rows):
            label = rng.choices(names, weights)[0]
            text, about = message(rng, label)
            w.writerow([i, label, text])
            m.writerow([f"m{i}", text] + [int(n in about) for n in names])


if __name__ == "__main__":
    main()
