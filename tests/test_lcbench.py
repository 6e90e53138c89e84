"""bench/lcbench.py and the benchmark's LCBench trainable: real curves from the surrogate, and a
missing or corrupt folder as one line naming it."""

from __future__ import annotations

import json
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
    search_efficiency.lcbench_trial(CONFIG, str(tmp_path), folder, "7593", None, 52, frozenset({5, 15, 45}), 0.0)
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


def test_with_points_a_corner_of_the_space_reads_the_nearest_random_configuration():
    """The surrogate's lowest errors lie at corners of the space, where LCBench trained almost
    nothing: with --points a search sampling such a corner is given the nearest of the random
    configurations instead, a point of the table, within the ranges."""
    folder = lcbench.read_folder(lcbench.DEFAULT_DIR)
    corner = {"batch_size": 16, "learning_rate": 0.1, "momentum": 0.99, "weight_decay": 1e-5, "num_layers": 5,
              "max_units": 64, "max_dropout": 0.0}
    near = lcbench.nearest(folder, 2000, corner)
    assert near != corner and near == lcbench.nearest(folder, 2000, {**corner, "max_dropout": 1e-3})
    assert lcbench.curve(folder, "167200", corner, 2000) == lcbench.curve(folder, "167200", near)
    # where the GP's searches on 167200 ended (stop 53): an error far below anything the table
    # holds; its nearest point's is not
    table_best = min(lcbench.curve(folder, "167200", c)[0][-1] for c in lcbench._table(folder.settings, 2000)[0])
    assert lcbench.curve(folder, "167200", corner)[0][-1] < table_best - 4
    assert lcbench.curve(folder, "167200", near)[0][-1] >= table_best
    for s in folder.settings:
        assert s.low <= near[s.name] <= s.high and isinstance(near[s.name], int) == s.integer


def test_points_is_lcbenchs_alone_and_positive():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "search_efficiency.py"), "--points", "20"],
                         capture_output=True, text=True, timeout=60)
    _one_line(out, "--points", "lcbench")
    _one_line(_bench("--points", "0"), "--points", "0")


def test_a_search_runs_on_the_table(tmp_path):
    out = _bench("--points", "200", "--emulate", "--seeds", "1", "--trials", "12", "--methods", "random,configured",
                 "--json", str(tmp_path / "figures.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the nearest of 200 random points" in out.stdout
    table = {round(lcbench.curve(lcbench.read_folder(lcbench.DEFAULT_DIR), "7593", c)[0][-1], 6)
             for c in lcbench._table(lcbench.read_folder(lcbench.DEFAULT_DIR).settings, 200)[0]}
    figures = json.loads((tmp_path / "figures.json").read_text())["tasks"]["7593"]
    assert all(round(f["final_best"], 6) in table for f in figures.values() if f["final_best"] is not None)
