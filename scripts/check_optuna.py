"""Checks that a study written by rnnsweep opens in Optuna as it is.

Usage: python check_optuna.py STORAGE_URL STUDY LEADERBOARD_JSON
"""
import json
import sys

import optuna

storage, name, leaderboard_path = sys.argv[1:4]
with open(leaderboard_path) as f:
    leaderboard = json.load(f)

study = optuna.load_study(study_name=name, storage=storage)
trials = study.get_trials(deepcopy=False)
df = study.trials_dataframe()
print(f"optuna {optuna.__version__}: study {name!r}, direction {study.direction.name}, {len(trials)} trials")
print(df.head(20).to_string())

assert len(df) == len(leaderboard), f"{len(df)} trials in Optuna, {len(leaderboard)} in the leaderboard"
by_number = {t.number: t for t in trials}
for row in leaderboard:
    t = by_number[row["trial"]]
    assert t.state.name == row["state"], (t.number, t.state, row["state"])
    assert set(t.params) == set(row["params"]), (t.number, t.params, row["params"])
    for key, value in row["params"].items():
        stored = t.params[key]
        assert stored == value or abs(float(stored) - float(value)) < 1e-9, (t.number, key, stored, value)
        assert f"params_{key}" in df.columns, key
    if t.state == optuna.trial.TrialState.COMPLETE:
        assert t.intermediate_values, f"trial {t.number} has no intermediate values"
        assert len(t.intermediate_values) == row["epochs"], (t.number, t.intermediate_values, row["epochs"])
        assert "val_f1" in t.user_attrs and "device" in t.user_attrs, t.user_attrs

top = next(r for r in leaderboard if r["rank"] == 1)
assert study.best_trial.number == top["trial"], (study.best_trial.number, top["trial"])
metric = [k for k in top if k not in ("rank", "trial", "state", "metrics", "params", "epochs", "duration_s", "device")][0]
assert abs(study.best_value - top[metric]) < 1e-12, (study.best_value, top[metric])
print(f"OK: {len(trials)} trials, best trial {study.best_trial.number} ({metric} {study.best_value:.4f}) matches the leaderboard")
