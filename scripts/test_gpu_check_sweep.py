"""Tests of scripts/gpu_check_sweep.py on hand-made study files: it passes only when every
trial completed on the expected device with enough of them at once.

    python3 -m unittest discover -s scripts -p 'test_gpu_check_sweep.py'
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import unittest

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_check_sweep.py")


def study(path, trials):
    """trials: (state, start second, end second, device) per trial."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE trials (trial_id INTEGER PRIMARY KEY, number INTEGER, study_id INTEGER,"
               " state TEXT, datetime_start DATETIME, datetime_complete DATETIME)")
    db.execute("CREATE TABLE trial_user_attributes (trial_user_attribute_id INTEGER PRIMARY KEY,"
               " trial_id INTEGER, key TEXT, value_json TEXT)")
    for number, (state, start, end, device) in enumerate(trials):
        db.execute("INSERT INTO trials VALUES (?, ?, 1, ?, ?, ?)",
                   (number + 1, number, state, f"2026-11-30 12:00:{start:02d}.000000",
                    f"2026-11-30 12:00:{end:02d}.500000"))
        db.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, 'device', ?)",
                   (number + 1, json.dumps(device)))
    db.commit()
    db.close()


def check(trials, expected=4):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.db")
        study(path, trials)
        r = subprocess.run([sys.executable, CHECKER, path, "--trials", str(expected),
                            "--device", "cuda:0", "--together", "2"],
                           capture_output=True, text=True)
        return r.returncode, r.stdout.strip()


class GpuCheckSweep(unittest.TestCase):
    def test_two_at_a_time_on_the_gpu_passes(self):
        code, out = check([("COMPLETE", 0, 5, "cuda:0"), ("COMPLETE", 1, 6, "cuda:0"),
                           ("COMPLETE", 6, 9, "cuda:0"), ("COMPLETE", 7, 9, "cuda:0")])
        self.assertEqual((code, out), (0, "4 trials complete on cuda:0, 2 at once"))

    def test_one_at_a_time_fails(self):
        code, out = check([("COMPLETE", 0, 1, "cuda:0"), ("COMPLETE", 2, 3, "cuda:0"),
                           ("COMPLETE", 4, 5, "cuda:0"), ("COMPLETE", 6, 7, "cuda:0")])
        self.assertEqual((code, out), (1, "at most 1 trial(s) ran at once, expected 2"))

    def test_a_trial_on_the_cpu_or_a_failed_one_fails(self):
        code, out = check([("COMPLETE", 0, 5, "cuda:0"), ("COMPLETE", 1, 6, "cpu"),
                           ("FAIL", 6, 9, "cuda:0"), ("COMPLETE", 7, 9, "cuda:0")])
        self.assertEqual(code, 1)
        self.assertEqual(out, "trial 1 ran on 'cpu', expected 'cuda:0'; trial 2 is FAIL")

    def test_missing_trials_fail(self):
        code, out = check([("COMPLETE", 0, 5, "cuda:0"), ("COMPLETE", 1, 6, "cuda:0")])
        self.assertEqual((code, out), (1, "2 trials, expected 4"))


if __name__ == "__main__":
    unittest.main()
