"""Checks the sweep of scripts/gpu-check.sh in its study file: every trial complete, each one
recorded on the expected device, and at least `--together` of them running at the same time
(trials_per_device: 2 puts two trials on one GPU at once). Prints one line; exits 1 if not so.

    python3 scripts/gpu_check_sweep.py STUDY.db --trials 4 --device cuda:0 --together 2
"""

import argparse
import datetime
import json
import sqlite3
import sys


def parse_time(text):
    return datetime.datetime.fromisoformat(text)


def most_at_once(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                    key=lambda e: (e[0], e[1]))
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--together", type=int, default=2)
    a = p.parse_args()
    db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    trials = db.execute(
        "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials ORDER BY number"
    ).fetchall()
    devices = dict(db.execute(
        "SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'device'"
    ).fetchall())
    problems = []
    if len(trials) != a.trials:
        problems.append(f"{len(trials)} trials, expected {a.trials}")
    spans = []
    for trial_id, number, state, start, end in trials:
        device = json.loads(devices.get(trial_id, "null"))
        if state != "COMPLETE":
            problems.append(f"trial {number} is {state}")
        if device != a.device:
            problems.append(f"trial {number} ran on {device!r}, expected {a.device!r}")
        if start and end:
            spans.append((parse_time(start), parse_time(end)))
    together = most_at_once(spans)
    if together < a.together:
        problems.append(f"at most {together} trial(s) ran at once, expected {a.together}")
    if problems:
        print("; ".join(problems))
        sys.exit(1)
    print(f"{len(trials)} trials complete on {a.device}, {together} at once")


if __name__ == "__main__":
    main()
