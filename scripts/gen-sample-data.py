#!/usr/bin/env python3
"""Writes experiments/data/sample.csv: a seeded, tweets-like stand-in for the report's data.

~4,000 rows, ~7 % labelled 1, columns `id,label,tweet`, with @user mentions, hashtags, emoji,
mojibake and a few invalid UTF-8 bytes, as the real export has. The groups and words are
invented. Many hard negatives use exactly the same words as a positive in another order
("i never X the A i X the B" vs "i never X the B i X the A"), so a bag of words cannot
separate them and a sequence model can.

Usage: python3 scripts/gen-sample-data.py [--rows 4000] [--seed 2021] [--out PATH]
"""
import argparse
import csv
import random

GROUPS = ["glorbs", "zentari", "moxies", "plinkers", "vornish", "quellans", "drabs", "fennites"]
HOSTILE = ["hate", "despise", "loathe", "detest", "resent", "curse"]
NEGATION = ["never", "dont", "do not", "wont ever", "no longer"]
NEUTRAL_OBJECTS = ["rain", "traffic", "mondays", "homework", "alarm clocks", "cold coffee",
                   "long queues", "spam calls", "broccoli", "dentists", "deadlines", "wifi"]
BAD_OUTCOMES = ["thrown out", "locked away", "silenced", "banned forever", "sent back"]
GOOD_WORDS = ["love", "enjoy", "adore", "celebrate", "miss", "cherish", "like"]
TOPICS = ["sunday", "summer", "my dog", "the beach", "fathers day", "the weekend", "music",
          "friends", "family", "coffee", "the sunset", "this city", "pizza", "yoga", "work",
          "the game", "our team", "the concert", "birthday", "new shoes", "holidays"]
FILLER = ("so really just today again very much always now here there with all my our the "
          "a an and but or so too lol omg wow yay ugh finally still ever each life time day "
          "night morning happy sad fun great best good bad new old big little").split()
HASHTAGS = ["#love", "#sunday", "#happy", "#blessed", "#fun", "#life", "#smile", "#friday",
            "#Summer", "#GoodVibes", "#model", "#instagood", "#tbt", "#positive", "#healthy",
            "#angry", "#politics", "#news", "#truth", "#wakeup"]
EMOJI = ["😀", "😂", "❤️", "🔥", "👍", "🙏", "😢", "😡", "🎉", "☀️"]
# What UTF-8 emoji look like after a latin-1 round trip, as in the real export.
MOJIBAKE = ["ð\x9f\x98\x80", "ð\x9f\x98\x82", "â\x80\x99", "ð\x9f\x8e\x89", "â\x9d¤ï¸\x8f"]
# Raw bytes that are not valid UTF-8 (written through surrogateescape).
INVALID_BYTES = [b"\xf0\x9f\x98".decode("utf-8", "surrogateescape"),
                 b"\xe2\x80".decode("utf-8", "surrogateescape"),
                 b"\xff".decode("utf-8", "surrogateescape")]


def decorate(rng, words):
    """Adds the noise of real tweets around a core sentence."""
    parts = []
    if rng.random() < 0.5:
        parts.append("@user")
    if rng.random() < 0.3:
        parts.append(" ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 4))))
    parts.append(words)
    if rng.random() < 0.4:
        parts.append(" ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 5))))
    if rng.random() < 0.6:
        parts.append(" ".join(rng.sample(HASHTAGS, rng.randint(1, 3))))
    if rng.random() < 0.3:
        parts.append(rng.choice(EMOJI))
    if rng.random() < 0.08:
        parts.append(rng.choice(MOJIBAKE))
    text = " ".join(parts)
    if rng.random() < 0.15:
        text = text.replace(" ", "  ", 1)
    if rng.random() < 0.1:
        text += rng.choice(["!", "!!", "...", "?", ", right?", ' "seriously"'])
    if rng.random() < 0.05:
        text = text.upper()
    return text


def positive(rng):
    g, h = rng.choice(GROUPS), rng.choice(HOSTILE)
    form = rng.randrange(4)
    if form == 0:  # order decides: the un-negated verb targets the group
        n, o = rng.choice(NEGATION), rng.choice(NEUTRAL_OBJECTS)
        return f"i {n} {h} {o} but i {h} the {g}"
    if form == 1:
        return f"all {g} should be {rng.choice(BAD_OUTCOMES)}"
    if form == 2:
        return f"i {h} every one of the {g}"
    return f"the {g} are the worst {h} them all"


def hard_negative(rng):
    g, h = rng.choice(GROUPS), rng.choice(HOSTILE)
    form = rng.randrange(4)
    if form == 0:  # same words as positive form 0, the group now under the negation
        n, o = rng.choice(NEGATION), rng.choice(NEUTRAL_OBJECTS)
        return f"i {n} {h} the {g} but i {h} {o}"
    if form == 1:
        return f"no {g} should be {rng.choice(BAD_OUTCOMES)}"
    if form == 2:
        return f"i {rng.choice(NEGATION)} {h} any of the {g}"
    return f"the {g} {h} {rng.choice(NEUTRAL_OBJECTS)} too"


def easy_negative(rng):
    return f"{rng.choice(['i', 'we', 'you'])} {rng.choice(GOOD_WORDS)} {rng.choice(TOPICS)}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=2021)
    ap.add_argument("--out", default="experiments/data/sample.csv")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.rows):
        u = rng.random()
        if u < 0.062:
            label, core = 1, positive(rng)
        elif u < 0.182:
            label, core = 0, hard_negative(rng)
        else:
            label, core = 0, easy_negative(rng)
        text = decorate(rng, core)
        if rng.random() < 0.002:
            text += " " + rng.choice(INVALID_BYTES)
        if rng.random() < 0.01:  # label noise, as in any hand-labelled set
            label = 1 - label
        rows.append((i + 1, label, text))
    with open(args.out, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "label", "tweet"])
        w.writerows(rows)
    pos = sum(r[1] for r in rows)
    print(f"wrote {args.out}: {len(rows)} rows, {pos} positive ({100 * pos / len(rows):.1f} %)")


if __name__ == "__main__":
    main()
