"""bench/lcbench.py and the benchmark's LCBench trainable: real curves from the surrogate, and a
missing or corrupt folder as one line naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from cli import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import lcbench  # noqa: E402
import search_efficiency  # noqa: E402

pytestmark = pytest.mark.skipif(not lcbench.DEFAULT_DIR.is_dir(), reason=f"no LCBench at {lcbench.DEFAULT_DIR}")

CONFIG = {"batch_size": 64, "learning_rate": 1e-2, "momentum": 0.9, "weight_decay": 1e-3, "num_layers": 3,
          "max_units": 256, "max_dropout": 0.2}


def test_the_trainable_reports_every_epoch_of_the_surrogates_curve(monkeypatch, tmp_path):
    from ray import tune

    folder = lcbench.read_folder(lcbench.DEFAULT_DIR)
    reports = []
    monkeypatch.setattr(tune, "report", reports.append)
    monkeypatch.setattr(tune, "get_context", lambda: type("Context", (), {"get_trial_id": lambda self: "t1"})())
    search_efficiency.lcbench_trial(CONFIG, str(tmp_path), folder, "7593", 52, frozenset({5, 15, 45}), 0.0)
    error, seconds = lcbench.curve(folder, "7593", CONFIG)
    assert [r["epoch"] for r in reports] == list(range(1, 53))
    assert [r["val_error"] for r in reports] == error and [r["seconds"] for r in reports] == seconds
    # the score, as a trial's FID: computed at the milestones and the last epoch, carried between them
    assert sorted({r["score_epoch"] for r in reports if "score_epoch" in r}) == [5, 15, 45, 52]
    assert all(r["score"] == error[r["score_epoch"] - 1] for r in reports if "score" in r)
    assert 0 < error[-1] < error[0] <= 100  # it learns
    assert seconds == sorted(seconds)  # the surrogate's time is cumulative
    assert [r["stop"] for r in reports][-2:] == [None, "max_epochs"]


def test_the_space_samples_lcbench_settings_within_their_ranges():
    import optuna

    space = lcbench.Space(lcbench.read_folder(lcbench.DEFAULT_DIR))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        config = space(study.ask())
        assert 16 <= config["batch_size"] <= 512 and isinstance(config["num_layers"], int)
        assert 1e-4 <= config["learning_rate"] <= 0.1


def _bench(*args):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "search_efficiency.py"), "--benchmark", "lcbench",
                           *args], capture_output=True, text=True, timeout=60)


def _one_line(out, *words):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_a_missing_folder_is_one_line(tmp_path):
    _one_line(_bench("--lcbench", str(tmp_path / "nope")), "--lcbench", str(tmp_path / "nope"), "no lcbench folder")


@pytest.mark.parametrize("damage", ["model.onnx", "config_space.json", "SHA256"])
def test_a_corrupt_folder_is_one_line(tmp_path, damage):
    folder = tmp_path / "lcbench"
    shutil.copytree(lcbench.DEFAULT_DIR, folder)
    target = folder / damage
    target.chmod(0o644)
    if damage == "SHA256":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    _one_line(_bench("--lcbench", str(folder)), "--lcbench", str(folder))


def test_an_unknown_task_is_one_line():
    _one_line(_bench("--tasks", "7593,42"), "--tasks", "'42'")
