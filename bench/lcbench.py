"""LCBench's real learning curves as a search benchmark (YAHPO Gym v1.0.2's `lcbench` surrogate).

An ONNX model fitted to LCBench (2,000 funnel-shaped MLPs trained for 50 epochs on each of 34
OpenML tasks) gives a configuration's validation accuracy and cumulative training time at every
epoch 1-52, so a search over real curves costs no training. Get the folder from the
`slds-lmu/yahpo_data` repository, release v1.0.2, folder `lcbench/` (Apache 2.0); the project
looks for it at ../shared/benchmarks/lcbench beside the repository. Read with onnxruntime (the
`yahpo-gym` package pins numpy < 2): inputs `x_cat` (the task's code) and `x_cont` (the epoch,
then the seven settings), outputs `time` and `val_accuracy` among others.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "lcbench"
EPOCHS = 52  # the surrogate's last epoch
# x_cont's columns after the epoch, in the model's order (the folder's README)
SETTINGS = ("batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
TIME, VAL_ACCURACY = 0, 1  # the output columns used: cumulative seconds, percent


class LCBenchError(ValueError):
    """The lcbench folder cannot be used: one line naming it and the problem."""


@dataclass(frozen=True)
class Setting:
    """One of LCBench's settings, as its config_space.json gives it."""

    name: str
    low: float
    high: float
    log: bool
    integer: bool

    def suggest(self, trial) -> float | int:
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Folder:
    """A checked lcbench folder: the settings' ranges, and each task's code for the model."""

    path: Path
    settings: tuple[Setting, ...]
    task_codes: dict[str, int]

    @property
    def model(self) -> Path:
        return self.path / "model.onnx"


def read_folder(path: str | Path) -> Folder:
    """The folder's settings and tasks; LCBenchError when a file is missing, unreadable or not
    what release v1.0.2 holds (model.onnx against its SHA256 file)."""
    path = Path(path)
    if not path.is_dir():
        raise LCBenchError(f"{path}: no lcbench folder there (get slds-lmu/yahpo_data v1.0.2's lcbench/)")
    for name in ("model.onnx", "config_space.json", "encoding.json", "SHA256"):
        if not (path / name).is_file():
            raise LCBenchError(f"{path}: {name} is missing (the folder is yahpo_data v1.0.2's lcbench/)")
    expected = (path / "SHA256").read_text().split()[:1]
    if [hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()] != expected:
        raise LCBenchError(f"{path / 'model.onnx'}: its checksum is not the one in {path / 'SHA256'}: "
                           "the file is corrupt or another version")
    try:
        space = {h["name"]: h for h in json.loads((path / "config_space.json").read_text())["hyperparameters"]}
        codes = json.loads((path / "encoding.json").read_text())["OpenML_task_id"]
        settings = tuple(Setting(n, float(space[n]["lower"]), float(space[n]["upper"]), bool(space[n]["log"]),
                                 space[n]["type"] == "uniform_int") for n in SETTINGS)
        tasks = {t: int(codes[t]) for t in space["OpenML_task_id"]["choices"]}
    except (ValueError, KeyError, TypeError) as e:
        raise LCBenchError(f"{path}: config_space.json or encoding.json is not LCBench's ({type(e).__name__}: {e})")
    return Folder(path, settings, tasks)


def check_tasks(folder: Folder, tasks: list[str]) -> None:
    """LCBenchError naming the first of `tasks` the folder does not hold, with the tasks it holds."""
    for task in tasks:
        if task not in folder.task_codes:
            raise LCBenchError(f"{task!r} is not an LCBench task; the tasks are {', '.join(sorted(folder.task_codes))}")


class Space:
    """Optuna's define-by-run space over LCBench's seven settings (their ranges and log scales)."""

    def __init__(self, folder: Folder):
        self.settings = folder.settings

    def __call__(self, trial) -> dict[str, float | int]:
        return {s.name: s.suggest(trial) for s in self.settings}

    def params(self, config: dict) -> None:
        return None  # the surrogate's networks have no parameter count to show


@cache
def _session(model: str):
    """The surrogate's ONNX session, built once per process, on one thread (trials run side by side)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def curve(folder: Folder, task: str, config: dict) -> tuple[list[float], list[float]]:
    """The configuration's validation error (100 - accuracy, percent; lower is better) and
    cumulative training seconds at every epoch 1-EPOCHS, in one call of the surrogate."""
    import numpy as np

    x_cont = np.array([[epoch, *(config[s] for s in SETTINGS)] for epoch in range(1, EPOCHS + 1)], np.float32)
    x_cat = np.full((EPOCHS, 1), folder.task_codes[task], np.int32)
    out = _session(str(folder.model)).run(None, {"x_cat": x_cat, "x_cont": x_cont})[0]
    error = [100.0 - float(a) for a in out[:, VAL_ACCURACY]]
    if not all(map(math.isfinite, error)):
        raise LCBenchError(f"{folder.model}: the surrogate gave a non-finite accuracy for {config}")
    return error, [float(t) for t in out[:, TIME]]
