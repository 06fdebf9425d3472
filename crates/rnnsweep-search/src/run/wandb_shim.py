"""rnnsweep's stand-in for the `wandb` package, put first on a W&B script's PYTHONPATH so the
script runs unchanged as an rnnsweep trial.

- `wandb.init(config=...)` returns a run whose `config` holds the values passed, overridden by
  the trial's parameters (nested as W&B nests them; also readable as attributes).
- `wandb.log(dict, step=None, commit=None)` prints one epoch line of rnnsweep's worker protocol
  per step (numbers only); the study's metric is read from it by name.
- `run.summary[...]` sets final values; `wandb.finish()` or the script's end prints the final
  line (each metric's last logged value, then the summary). An uncaught exception prints an
  error line instead.
- Anything else is a no-op that warns once on stderr.
"""
import atexit
import json
import os
import sys

__version__ = "0.0.0+rnnsweep"

_task_path = os.environ.get("RNNSWEEP_TRIAL")
_task = {}
if _task_path:
    with open(_task_path) as _f:
        _task = json.load(_f)


def _nest(flat):
    root = {}
    for name, value in flat.items():
        node = root
        keys = name.split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    return root


def _merge(into, values):
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


_warned = set()


def _warn(name):
    if name not in _warned:
        _warned.add(name)
        print(f"rnnsweep's wandb stand-in: `{name}` does nothing here", file=sys.stderr)


class _NoOp:
    """What an unsupported call returns: callable, any attribute, iterable as nothing."""

    def __init__(self, name="wandb"):
        self._name = name

    def __call__(self, *args, **kwargs):
        _warn(self._name)
        return _NoOp(self._name)

    def __getattr__(self, name):
        return _NoOp(f"{self._name}.{name}")

    def __iter__(self):
        return iter(())

    def __bool__(self):
        return False


class Config(dict):
    """W&B's config: a dict whose keys are attributes too."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def update(self, values=None, allow_val_change=None, **kwargs):
        values = _as_dict(values)
        values.update(kwargs)
        # The sweep's values win, as W&B's agent makes them win.
        _merge(self, values)
        _merge(self, _sweep_values)

    def setdefaults(self, values):
        for key, value in _as_dict(values).items():
            self.setdefault(key, value)

    def as_dict(self):
        return dict(self)


def _as_dict(values):
    if values is None:
        return {}
    if isinstance(values, dict):
        return dict(values)
    if hasattr(values, "__dict__"):  # argparse.Namespace and the like
        return dict(vars(values))
    return dict(values)


_sweep_values = _nest(_task.get("params", {}))
config = Config()
config.update({})
summary = {}
run = None
_step = 0
_pending = {}
_last = {}
_finished = False
_failed = False


def _emit(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _numbers(values):
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)):
            out[key] = float(value)
        elif hasattr(value, "item"):  # numpy and torch scalars
            try:
                out[key] = float(value.item())
            except Exception:
                pass
    return out


def _flush_step(step=None):
    global _step, _pending
    if not _pending:
        return
    # Epochs count committed steps from 1; an explicit step (W&B's counts from 0) may skip.
    _step = max(_step + 1, step + 1 if step is not None else 0)
    _emit({"type": "epoch", "epoch": _step, "metrics": _pending})
    _pending = {}


def log(data, step=None, commit=None, sync=None):
    numbers = _numbers(data)
    _pending.update(numbers)
    _last.update(numbers)
    if commit is not False:
        _flush_step(None if step is None else int(step))


def finish(exit_code=None, quiet=None):
    global _finished
    if _finished:
        return
    _finished = True
    if _failed:
        return  # the exception hook has said why
    _flush_step()
    if exit_code not in (None, 0):
        _emit({"type": "error", "message": "the script failed (see its stderr)"})
        return
    metrics = dict(_last)
    metrics.update(_numbers(summary))
    _emit({"type": "final", "metrics": metrics, "epochs": _step})


class Run:
    def __init__(self, name=None, project=None):
        self.config = config
        self.summary = summary
        self.name = name or f"trial-{_task.get('number', 0)}"
        self.id = str(_task.get("number", 0))
        self.project = project
        self.dir = str(_task.get("trial_dir", "."))

    def log(self, data, step=None, commit=None, sync=None):
        log(data, step=step, commit=commit)

    def finish(self, exit_code=None, quiet=None):
        finish(exit_code)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        finish(1 if kind is not None else 0)
        return False

    def __getattr__(self, name):
        return _NoOp(f"run.{name}")


def init(*args, config=None, project=None, name=None, **kwargs):
    global run
    globals()["config"].update(_as_dict(config))
    run = Run(name=name, project=project)
    return run


def _hook(kind, value, traceback):
    global _failed
    _failed = True
    _emit({"type": "error", "message": f"{kind.__name__}: {value}"})
    sys.__excepthook__(kind, value, traceback)


sys.excepthook = _hook
atexit.register(finish)


def login(*args, **kwargs):
    return True


def __getattr__(name):
    return _NoOp(f"wandb.{name}")
