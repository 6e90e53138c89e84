"""How a trial that fails ends: a scoring failure and an out-of-memory step are recorded as such
(trials.parquet's stop_reason), and the search goes on with the other trials."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from cli import assert_study_matches_trials, command, in_process, records, tiny_space
from conftest import make_tree

import search.trainable as trainable
from cvae_core.data import load_data
from results.run_folder import RunFolder, trial_name
from search.settings import Objective
from search.trials import stop_reason

CONFIG = {"family": "mlp", "latent": 4, "mlp_layers": 1, "mlp_width": 8, "lr": 1e-3, "batch_size": 10,
          "trial_number": 0}  # as the searcher suggests it (search.seeds)


@pytest.fixture
def trial(tmp_path, monkeypatch):
    """run_trial in this process, as Tune's worker runs it: its reports are collected."""
    reports = []
    monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "abc"))
    monkeypatch.setattr(trainable.tune, "report", reports.append)
    monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n1"))
    run = RunFolder(tmp_path / "run")
    return SimpleNamespace(run=run, name=trial_name(CONFIG, "abc"), reports=reports)


def damaged_weights(folder: Path) -> Path:
    path = folder / "pt_inception-2015-12-05.pth"
    path.write_text("not a weights file")
    return path


def test_a_trial_whose_scoring_fails_ends_as_scoring_failed(tree, tmp_path, trial):
    """The extractor cannot load (a damaged weights file): the trial records why, and the error
    reaches Tune (the trial ends as ERROR, trials.parquet says scoring_failed)."""
    objective = Objective(metric="fid", samples_per_class=2, feature_extractor="inception-v3-compat")
    with pytest.raises(Exception) as raised:
        trainable.run_trial(CONFIG, load_data(tree), str(trial.run.path), max_t=3, objective=objective,
                            inception_weights=str(damaged_weights(tmp_path)), score_at=frozenset({2}), grid_every=0)
    failure = trial.run.read_failure(trial.name)
    assert failure["kind"] == "scoring_failed" and failure["reason"] == str(raised.value)
    assert stop_reason("ERROR", {}, failure) == "scoring_failed"
    # Epoch 1 was reported; epoch 2, whose score failed, was not, and no score was recorded.
    assert [r["epoch"] for r in trial.reports] == [1]
    assert not trial.run.scores_file(trial.name).exists()


def test_a_step_that_runs_out_of_memory_ends_as_out_of_memory_and_may_be_retried(tree, trial, monkeypatch):
    steps = []
    adam_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):  # the 5th step, the second of epoch 2 (3 steps per epoch)
        steps.append(1)
        if len(steps) == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(torch.OutOfMemoryError):
        trainable.run_trial(CONFIG, load_data(tree), str(trial.run.path), max_t=4, grid_every=0)
    failure = trial.run.read_failure(trial.name)
    assert failure == {"kind": "out_of_memory", "reason": "CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert stop_reason("ERROR", {}, failure) == "out_of_memory"
    assert [r["epoch"] for r in trial.reports] == [1]

    # Unlike a divergence, a retry (Tune's resume_errored) trains on: memory may be free by then.
    monkeypatch.setattr(torch.optim.Adam, "step", adam_step)
    trainable.run_trial(CONFIG, load_data(tree), str(trial.run.path), max_t=4, grid_every=0)
    assert trial.run.read_failure(trial.name) is None
    assert trial.reports[-1]["epoch"] == 4


@pytest.mark.slow
def test_a_search_whose_trials_fail_to_score_records_each_and_runs_them_all(tmp_path, ray_session, monkeypatch):
    """The trials' nodes cannot load the extractor the driver resolved and primed the reference
    with (here: the driver's objective is switched, after priming, to torch-fidelity's Inception
    with a damaged weights file). Each trial fails at its first score, as ERROR with
    stop_reason scoring_failed, and the search runs the next one; with no finished trial the final
    stage says so in one line."""
    import search.tuning as tuning

    data = make_tree(tmp_path / "tree", per_class=4)
    space = tiny_space(tmp_path, num_samples=2, asha={"max_t": 3, "grace_period": 2, "reduction_factor": 2})
    raw = yaml.safe_load(space.read_text())
    raw["final"]["inception_weights"] = str(damaged_weights(tmp_path))
    space.write_text(yaml.safe_dump(raw))
    prepare = tuning.prepare_objective

    def unloadable_on_the_trials_nodes(run, spec, data, resuming):
        return prepare(run, spec, data, resuming).model_copy(update={"feature_extractor": "inception-v3-compat"})

    monkeypatch.setattr(tuning, "prepare_objective", unloadable_on_the_trials_nodes)
    proc = in_process(command(space, data, tmp_path / "runs"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2/2 trials finished, 2 failed" in proc.stdout
    assert "no finished trial to retrain" in proc.stderr and "Traceback" not in proc.stderr

    run_dir = tmp_path / "runs" / "t"
    df = pd.read_parquet(run_dir / "trials.parquet")
    assert len(df) == 2 and set(df["status"]) == {"ERROR"} and set(df["stop_reason"]) == {"scoring_failed"}
    for row in df.itertuples():
        assert row.error and "Traceback" not in row.error
        assert [e["epoch"] for e in records(row.trial_dir)] == [1, 2]  # trained up to its first score, at 2
        assert records(row.trial_dir, "scores.jsonl") == []
    assert_study_matches_trials(run_dir)


@pytest.mark.slow
def test_train_on_all_trains_trials_and_finalists_on_train_and_test(tmp_path, ray_session):
    """`search.train_on: all`: every epoch of a trial and of a finalist steps through the train and
    test splits together (80 + 80 images, batches of 40: 4 optimiser steps an epoch, not 2)."""
    data = make_tree(tmp_path / "tree", per_class=8)
    space = tiny_space(tmp_path, num_samples=1, train_on="all")
    proc = in_process(command(space, data, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"

    def steps_per_epoch(folder: Path) -> float:
        checkpoint = torch.load(Path(folder) / "checkpoint.pt", map_location="cpu", weights_only=True)
        steps = {float(s["step"]) for s in checkpoint["optimizer"]["state"].values()}
        assert len(steps) == 1 and checkpoint["epoch"] >= 1
        return steps.pop() / checkpoint["epoch"]

    [trial_dir] = pd.read_parquet(run_dir / "trials.parquet")["trial_dir"]
    assert steps_per_epoch(trial_dir) == (80 + 80) // 40
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["train_on"]) == {"all"}
    for checkpoint in set(board["checkpoint"]):
        assert steps_per_epoch(Path(checkpoint).parent) == (80 + 80) // 40
