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

    def position(self, value: float) -> float:
        """Where `value` lies in the range, 0 to 1, on the setting's scale."""
        if self.log:
            return math.log(value / self.low) / math.log(self.high / self.low)
        return (value - self.low) / (self.high - self.low)

    def value_at(self, position: float) -> float | int:
        """The value at `position` (0 to 1) on the setting's scale; an integer setting's rounded."""
        if self.log:
            value = self.low * (self.high / self.low) ** position
        else:
            value = self.low + position * (self.high - self.low)
        return min(int(self.high), max(int(self.low), round(value))) if self.integer else float(value)


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


TABLE_SEED = 0  # one draw of the table's configurations, the same for every task, search and method


@cache
def _table(settings: tuple[Setting, ...], points: int):
    """`points` configurations drawn at random over the space (uniform, on a log scale where the
    setting has one), as LCBench drew the 2,000 it trained on each task; with each one's position
    in the unit cube, for finding the nearest. An integer setting's draw is rounded, so its two end
    values come about half as often as the others (ConfigSpace draws each integer alike): kept, as
    every --points figure (stops 54 and 55) was measured on this table."""
    import numpy as np

    rng = np.random.default_rng(TABLE_SEED)
    unit = rng.random((points, len(settings)))
    configs = [{s.name: s.value_at(u) for s, u in zip(settings, row)} for row in unit]
    return configs, np.array([[s.position(c[s.name]) for s in settings] for c in configs])


def nearest(folder: Folder, points: int, config: dict) -> dict:
    """The one of the table's `points` configurations (_table) nearest `config` in the unit cube."""
    import numpy as np

    configs, positions = _table(folder.settings, points)
    at = np.array([s.position(config[s.name]) for s in folder.settings])
    return configs[int(np.argmin(((positions - at) ** 2).sum(axis=1)))]


def curve(folder: Folder, task: str, config: dict, points: int | None = None) -> tuple[list[float], list[float]]:
    """The configuration's validation error (100 - accuracy, percent; lower is better) and
    cumulative training seconds at every epoch 1-EPOCHS, in one call of the surrogate. With
    `points`, the nearest of that many random configurations stands in for it (nearest): the
    surrogate is read only where LCBench's own random draw puts data, never at the corners of the
    space where it extrapolates."""
    import numpy as np

    if points:
        config = nearest(folder, points, config)
    x_cont = np.array([[epoch, *(config[s] for s in SETTINGS)] for epoch in range(1, EPOCHS + 1)], np.float32)
    x_cat = np.full((EPOCHS, 1), folder.task_codes[task], np.int32)
    out = _session(str(folder.model)).run(None, {"x_cat": x_cat, "x_cont": x_cont})[0]
    error = [100.0 - float(a) for a in out[:, VAL_ACCURACY]]
    if not all(map(math.isfinite, error)):
        raise LCBenchError(f"{folder.model}: the surrogate gave a non-finite accuracy for {config}")
    return error, [float(t) for t in out[:, TIME]]
