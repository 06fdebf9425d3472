"""Optuna-made trials are honoured: a trial enqueued with Optuna runs in rnnsweep with exactly
its values, and one whose value lies outside the space fails with the parameter named and never
runs.

Usage: python check_optuna_enqueue.py enqueue|verify STORAGE_URL STUDY
"""
import sys

import optuna

GOOD = {
    "optimizer": "rmsprop",
    "learning_rate": 0.0042,
    "lstm_units": "[8,8]",
    "dense_layers": 2,
    "dense.1.units": 12,
    "lstm_dropout": 0.2,
}
BAD = dict(GOOD, optimizer="sgd")

mode, storage, name = sys.argv[1:4]
study = optuna.load_study(study_name=name, storage=storage)
if mode == "enqueue":
    study.enqueue_trial(GOOD)
    study.enqueue_trial(BAD)
    waiting = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 2, waiting
    print(f"enqueued trials {[t.number for t in waiting]} with Optuna {optuna.__version__}")
    sys.exit(0)

trials = {t.number: t for t in study.get_trials(deepcopy=False)}
enqueued = [t for t in trials.values() if t.system_attrs.get("fixed_params") in (GOOD, BAD)]
assert len(enqueued) == 2, [(t.number, t.system_attrs) for t in trials.values()]
good = next(t for t in enqueued if t.system_attrs["fixed_params"] == GOOD)
bad = next(t for t in enqueued if t.system_attrs["fixed_params"] == BAD)
assert good.state == optuna.trial.TrialState.COMPLETE, good
for key, value in GOOD.items():
    got = good.params[key]
    assert got == value or abs(float(got) - float(value)) < 1e-12, (key, got, value)
assert set(good.params) == set(GOOD), good.params
assert good.value is not None and good.intermediate_values, good
assert bad.state == optuna.trial.TrialState.FAIL, bad
reason = bad.system_attrs.get("fail_reason", "")
assert "`optimizer`" in reason and "sgd" in reason, reason
assert not bad.params, bad.params
assert "val_f1" not in bad.user_attrs, bad.user_attrs
print(f"OK: trial {good.number} ran with exactly the enqueued values; trial {bad.number} failed: {reason}")
