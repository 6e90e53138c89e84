"""`python -m search.run`: its checks in-process, then end to end (real Ray, real Optuna): in a
subprocess as a user runs it where the command is killed or needs a Ray of its own, else its main in
this process on the session's Ray cluster."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from cli import (
    TINY_OBJECTIVE,
    assert_study_matches_trials,
    command,
    free_port,
    in_process,
    kill,
    records,
    run,
    start,
    tiny_space,
    wait_for,
)
from conftest import CLASSES, CNN_RESNET_SPACE, TINY_TWO_STAGE, make_tree

from cvae_core.atomic import read_records
from cvae_core.config import TrialConfig, column_types
from results.run_folder import RunFolder
from search.run import main
from search.settings import load_spec

DIVERGING_LR = 1e6  # the loss is NaN or astronomical after one epoch, whatever the likelihood


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree", per_class=8)


def trials(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "trials.parquet")


def converged(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that did not diverge."""
    return df[df["lr"] != DIVERGING_LR]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One real search as a user runs it (python -m search.run in a subprocess: Ray, TPE, ASHA at
    epochs 2, 4 and 8, ranked by FID with the tiny extractor) over two likelihood families and four
    learning rates, one of which (1e6) diverges, and its final stage: the 2 best trials x 2 seeds,
    each scored with both samplers. Seed 5 samples one diverging trial and both families among
    the other three. Its tests are all here, so that run in parallel (pytest-xdist's --dist
    loadfile) they share one worker: one search, and a test that redoes part of it (then checks
    it unchanged) races no reader; a test that changes it otherwise works on a copy."""
    tmp = tmp_path_factory.mktemp("searched")
    data = make_tree(tmp / "tree", per_class=8)
    space = tiny_space(tmp, final={"top_k": 2, "seeds": 2, "max_epochs": 3}, num_samples=4, seed=5,
                       searcher={"n_startup_trials": 4}, patience=3,
                       asha={"max_t": 8, "grace_period": 2, "reduction_factor": 2})
    raw = yaml.safe_load(space.read_text())
    raw["space"]["likelihood"] = {"choice": ["bernoulli", "gaussian_learned"]}
    raw["space"]["lr"] = {"choice": [1e-3, 3e-3, 1e-2, DIVERGING_LR]}
    space.write_text(yaml.safe_dump(raw))
    proc = run(command(space, data, tmp / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return SimpleNamespace(run_dir=tmp / "runs" / "t", space=space, proc=proc, storage=tmp / "runs", data=data)


def test_a_batch_larger_than_the_training_set_is_refused_before_anything_starts(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    space.write_text(space.read_text().replace("batch_size: 40", "batch_size: {choice: [40, 100]}"))
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    assert "space.batch_size: 100 is more than the 80 training images" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_int_range_of_batch_sizes_is_checked_at_its_top_without_listing_it(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    space.write_text(space.read_text().replace("batch_size: 40", "batch_size: {int: [40, 4000000000]}"))
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    assert "space.batch_size: 4000000000 is more than the 80 training images" in capsys.readouterr().err


def test_a_run_is_not_resumed_on_other_data(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "space.yaml").write_text(space.read_text())
    RunFolder(run_dir).record_data("/somewhere/else.zip", SimpleNamespace(image_size=32, channels=3, classes=CLASSES))
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    assert f"--data {data_dir}: this run started with /somewhere/else.zip" in capsys.readouterr().err


def test_a_resumed_run_with_a_damaged_table_is_one_line_before_anything_runs(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(space.read_text())
    run.record_data(str(data_dir), SimpleNamespace(image_size=32, channels=3, classes=CLASSES))
    run.leaderboard.write_text("cut short")
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {run.leaderboard}: does not read back as a table")


@pytest.mark.parametrize("given", [True, False])  # --data checked against the record, or the record read for it
def test_a_resumed_run_with_a_damaged_data_record_is_one_line_before_the_data_loads(tmp_path, data_dir, capsys,
                                                                                     monkeypatch, given):
    import cvae_core.data

    def load_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(cvae_core.data, "load_data", load_data)
    space = tiny_space(tmp_path)
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(space.read_text())
    (run.path / "data.json").write_text(json.dumps({"source": str(data_dir), "classes": ["a", "b"]}))
    data = ["--data", str(data_dir)] if given else []
    assert main(["--space", str(space), *data, "--storage", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == f"error: {run.path / 'data.json'}: holds no image_size\n"


def test_a_run_resumed_without_data_goes_on_with_the_data_it_recorded(tmp_path, capsys):
    space = tiny_space(tmp_path)
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "space.yaml").write_text(space.read_text())
    RunFolder(run_dir).record_data("/somewhere/else.zip", SimpleNamespace(image_size=32, channels=3, classes=CLASSES))
    assert main(["--space", str(space), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "/somewhere/else.zip" in err and "this run started with" not in err  # read, not refused


@pytest.mark.parametrize("space_file", [False, True])
def test_fresh_deletes_only_a_run_folder(tmp_path, data_dir, capsys, space_file):
    """A folder of the user's, even one holding a space file of that name (--space exp/cnn/space.yaml
    --storage exp --name cnn), is not a run: a run also has its data record."""
    precious = tmp_path / "runs" / "precious"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    space = tiny_space(tmp_path)
    if space_file:
        space = precious / "space.yaml"
        space.write_text(tiny_space(tmp_path).read_text())
    args = command(space, data_dir, tmp_path / "runs", "--name", "precious", "--fresh")[3:]
    assert main(args) == 2
    assert f"{precious}: exists and is not a search run; nothing was deleted" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work" and space.exists()


def test_a_run_whose_start_a_kill_cut_short_starts_over(tmp_path, data_dir, monkeypatch, ray_session):
    """Killed after the run folder was marked, before its space file was written: the next command
    starts over (the folder is the program's), where it refused the folder as not a run."""
    import search.run
    import search.tuning

    space = tiny_space(tmp_path)
    run = RunFolder(tmp_path / "runs" / "t")
    monkeypatch.setattr(search.run, "atomic_write_text", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        main(command(space, data_dir, tmp_path / "runs")[3:])
    assert run.is_run() and not run.space_file.exists() and sorted(p.name for p in run.path.iterdir()) == [
        ".cvae-search-run"]
    monkeypatch.undo()
    monkeypatch.setattr(search.tuning, "run_search", lambda *a: False)  # the folder made, no search
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 130
    assert run.is_run() and run.space_file.read_text() and run.recorded_data() is not None


def test_a_run_folder_fresh_cannot_delete_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    space = tiny_space(tmp_path)
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(space.read_text())
    (run.path / "data.json").write_text(json.dumps({"source": str(data_dir)}))

    def refused(self):
        raise PermissionError(13, "Permission denied", str(self.path / "aaaa0001"))

    monkeypatch.setattr(RunFolder, "delete", refused)
    assert main(command(space, data_dir, tmp_path / "runs", "--fresh")[3:]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {run.path}: could not be prepared ([Errno 13] Permission denied: '{run.path / 'aaaa0001'}')")


def test_an_extractor_that_cannot_load_is_one_line_and_fresh_deletes_nothing(tmp_path, data_dir, ray_session):
    """A damaged --inception-weights file is found loading the extractor, which is done before the
    run folder is made, or deleted for --fresh: the run there is kept whole."""
    objective = {**TINY_OBJECTIVE, "feature_extractor": "inception-v3-compat"}
    space = tiny_space(tmp_path, objective=objective)
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(space.read_text())
    (run.path / "data.json").write_text(json.dumps({"source": str(data_dir)}))
    (run.path / "leaderboard.parquet").write_text("a finished run's")
    before = sorted(run.path.iterdir())
    weights = tmp_path / "pt_inception-2015-12-05.pth"
    weights.write_text("not a weights file")
    proc = in_process(command(space, data_dir, tmp_path / "runs", "--fresh", "--inception-weights", str(weights)))
    assert proc.returncode == 2
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert line.startswith("error: search.objective: ") and "Traceback" not in proc.stderr
    assert sorted(run.path.iterdir()) == before and (run.path / "leaderboard.parquet").read_text() == "a finished run's"


def test_an_empty_storage_is_one_line_not_the_working_folder(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--space", str(tiny_space(tmp_path)), "--data", str(data_dir), "--storage", ""]) == 2
    assert capsys.readouterr().err == "error: --storage: an empty path; name a folder (default: runs)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_name_must_be_a_plain_folder_name(tmp_path, data_dir, capsys, name):
    (tmp_path / "runs").mkdir()
    (tmp_path / "keep.txt").write_text("x")
    assert main(command(tiny_space(tmp_path), data_dir, tmp_path / "runs", "--name", name, "--fresh")[3:]) == 2
    assert capsys.readouterr().err.startswith(f"error: --name: {name!r} must be")
    assert (tmp_path / "keep.txt").exists() and not any((tmp_path / "runs").iterdir())


def test_storage_that_is_a_file_or_under_a_file_is_refused_before_ray(tmp_path, data_dir, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    space = tiny_space(tmp_path)
    assert main(command(space, data_dir, afile)[3:]) == 2
    assert capsys.readouterr().err.strip() == f"error: --storage {afile}: is a file, not a folder"
    assert main(command(space, data_dir, afile / "runs")[3:]) == 2
    assert f"error: --storage {afile / 'runs'}: cannot be created ({afile} is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("storage", ["/proc/runs", "/proc"])
def test_storage_where_no_folder_can_be_made_is_one_line_before_ray(tmp_path, data_dir, capsys, storage):
    """/proc passes a permission check as root, yet no folder can be made in it (the message then
    names the folder that could not be made; as another user, /proc itself)."""
    assert main(command(tiny_space(tmp_path), data_dir, Path(storage))[3:]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --storage {storage}: cannot ") and err.count("\n") == 1, err


def test_a_refused_command_leaves_no_storage_folder_behind(tmp_path, data_dir, capsys):
    """The storage folder is made to prove it can be, then removed: the cluster's refusal comes after."""
    storage = tmp_path / "new" / "runs"
    assert main(command(tiny_space(tmp_path), data_dir, storage, "--address", "127.0.0.1:1")[3:]) == 2
    assert "error: --address 127.0.0.1:1: cannot reach" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_flag_that_is_wrong_is_named(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    assert main(command(space, data_dir, tmp_path / "runs", "--num-samples", "0")[3:]) == 2
    assert capsys.readouterr().err.strip() == "error: --num-samples 0: must be >= 1"
    with pytest.raises(SystemExit) as exit_:
        main(command(space, data_dir, tmp_path / "runs", "--num-samples", "many")[3:])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: argument --num-samples: invalid int value: 'many'"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("address, message", [
    ("not-a-host", "--address not-a-host: expected 'auto' or HOST:PORT"),
    ("127.0.0.1:1", "--address 127.0.0.1:1: cannot reach 127.0.0.1:1 (Connection refused)"),
    ("no-such-host.invalid:6379", "--address no-such-host.invalid:6379: unknown host 'no-such-host.invalid'"),
])
def test_an_unreachable_cluster_is_one_line_at_once(tmp_path, capsys, address, message):
    t0 = time.monotonic()  # before the data is loaded: here there is none to load
    assert main(command(tiny_space(tmp_path), tmp_path / "no-data", tmp_path / "runs", "--address", address)[3:]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert time.monotonic() - t0 < 30 and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_trial_larger_than_every_node_is_refused_with_nothing_written(tmp_path, data_dir, ray_session):
    space = tiny_space(tmp_path, resources={"cpu": 64})
    proc = in_process(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"error: {space}: search.resources: a trial needs 64 CPU + 0 GPU and no node" in proc.stderr
    assert not (tmp_path / "runs").exists()


MILESTONES = {2, 4, 8}


@pytest.mark.slow
def test_a_search_says_what_it_does_without_optunas_and_rays_notices(searched):
    out = searched.proc.stdout + searched.proc.stderr
    assert f"starting {searched.run_dir}" in out and "search objective: fid of 30 samples" in out
    for notice in ("A new study created", "Using an existing study", "will be ignored", "Resume experiment with"):
        assert notice not in out, notice


@pytest.mark.slow
def test_tensorboard_reads_every_trials_curves_from_the_run_folder(searched):
    """What `tensorboard --logdir runs/NAME` shows (TensorBoard is in the default install): a run per
    trial with its losses, learning rate and scores, epoch by epoch."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    tensorboard = EventMultiplexer().AddRunsFromDirectory(str(searched.run_dir)).Reload()
    df = trials(searched.run_dir)
    assert set(tensorboard.Runs()) >= {Path(d).name for d in df["trial_dir"]}
    for row in converged(df).itertuples():
        run = Path(row.trial_dir).name
        assert {"train_loss", "val_loss", "best_val_loss", "lr", "score"} <= set(tensorboard.Runs()[run]["scalars"])
        assert [e.step for e in tensorboard.Scalars(run, "val_loss")] == list(range(1, row.epochs + 1))
        assert [e.value for e in tensorboard.Scalars(run, "lr")] == pytest.approx([row.lr] * row.epochs)


@pytest.mark.slow
def test_a_search_writes_each_trials_record_into_the_run_folder(searched):
    run_dir, df = searched.run_dir, converged(trials(searched.run_dir))
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}
    assert set(df["likelihood"]) == {"bernoulli", "gaussian_learned"}
    assert set(df["stop_reason"]) <= {"patience", "max_epochs", "asha"}
    assert yaml.safe_load((run_dir / "space.yaml").read_text()) == yaml.safe_load(searched.space.read_text())
    for row in df.itertuples():
        assert row.trial_dir.startswith(str(run_dir / "mlp_"))
        epochs = records(row.trial_dir)
        assert [e["epoch"] for e in epochs] == list(range(1, row.epochs + 1))
        assert (epochs[-1]["stop"] is not None) == (row.stop_reason != "asha")  # the loop says why it stopped
        assert (Path(row.trial_dir) / "checkpoint.pt").exists() and list((Path(row.trial_dir) / "grids").glob("*"))
        assert list(Path(row.trial_dir).glob("events.out.tfevents.*"))  # TensorBoard
        assert row.params > 0 and json.loads(row.config)["model"]["likelihood"] == row.likelihood
    # The final stage ran on the best trials (its own tests are in test_final.py), saying so.
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["trial_id"]) == set(df["trial_id"].iloc[:2]) and len(board) == 8
    assert set(board["search_score"]) == set(df["score"].iloc[:2]) and set(board["search_objective"]) == {"fid"}
    out = searched.proc.stdout
    assert "final stage: retraining 2 trial(s) x 2 seed(s), scoring with tiny-random" in out
    assert re.search(r"mlp_\w+_s0: epoch +1 +train ", out) and "gmm sampler: FID " in out
    extractors = json.loads((run_dir / "feature_extractor.json").read_text())
    assert extractors == {"search": "tiny-random", "final": "tiny-random"}


@pytest.mark.slow
def test_asha_the_table_and_the_finalists_follow_each_trials_score(searched):
    """A real search hands them the score (that they follow it where the validation loss
    disagrees: test_schedulers.py, test_final.py)."""
    run_dir, df = searched.run_dir, converged(trials(searched.run_dir))
    assert df["score"].notna().all() and df["score"].is_monotonic_increasing
    assert set(df["objective"]) == {"fid"} and (df["score"] == df["fid"]).all() and df["kid"].notna().all()
    rungs = {}  # (milestone, trial) -> what ASHA recorded, from its append-only file
    stops = {}  # trial -> on what ASHA stopped it
    for record in read_records(run_dir / "asha_state.jsonl"):
        if "rung" in record:  # a rung record, not a stop
            rungs[record["milestone"], record["trial"]] = record["value"]
        elif "milestone" in record:
            stops[record["trial"]] = record
    assert rungs, "ASHA recorded something"
    assert set(stops) == set(df.loc[df["stop_reason"] == "asha", "trial_id"])
    for trial_id, stop in stops.items():  # stopped at a milestone for a score worse than its cutoff
        assert stop["score"] > stop["cutoff"] and rungs[stop["milestone"], trial_id] == -stop["score"]
    for row in df.itertuples():
        scores = records(row.trial_dir, "scores.jsonl")
        # scored at the milestones it reached and at its last epoch, nowhere else, each once
        assert [s["score_epoch"] for s in scores] == sorted({m for m in MILESTONES if m <= row.epochs} | {row.epochs})
        assert all(s["score"] == s["fid"] for s in scores)
        assert row.score == scores[-1]["score"] and row.score_epoch == row.epochs
        for s in scores:  # ASHA compared these scores (negated: it maximises), not validation losses
            if (s["score_epoch"], row.trial_id) in rungs:
                assert rungs[s["score_epoch"], row.trial_id] == pytest.approx(-s["score"])


@pytest.mark.slow
def test_leaderboard_scores_the_top_trials_with_every_seed_and_sampler(searched):
    searched = searched.run_dir
    trials = pd.read_parquet(searched / "trials.parquet")
    board = pd.read_parquet(searched / "leaderboard.parquet")
    assert len(board) == 2 * 2 * 2
    assert set(board["trial_id"]) == set(trials["trial_id"].iloc[:2])
    assert set(zip(board["seed"], board["sampler"])) == {(s, m) for s in (0, 1) for m in ("prior", "gmm")}
    assert board["fid"].is_monotonic_increasing and board["fid"].notna().all()
    assert board["is_mean"].notna().all() and board["is_missing_reason"].isna().all()  # tiny-random has logits
    assert set(board["n_samples"]) == {30} and set(board["feature_extractor"]) == {"tiny-random"}
    assert set(board["reference"]) == {"tree:train"}
    assert (board["epochs_trained"] <= 3).all() and (board["best_epoch"] <= board["epochs_trained"]).all()
    for r in board.itertuples():
        assert Path(r.checkpoint).is_file() and Path(r.sample_grid).is_file()
        assert r.params > 0 and r.run == "t" and r.family == "mlp" and list(r.hidden) == [32]
        epochs = [json.loads(x) for x in (Path(r.checkpoint).parent / "metrics.jsonl").read_text().splitlines()]
        assert len(epochs) == r.epochs_trained and r.train_seconds == pytest.approx(
            sum(e["epoch_seconds"] for e in epochs))
    # trial config columns agree with the search's table
    merged = board.merge(trials, on="trial_id", suffixes=("", "_search"))
    assert (merged["lr"] == merged["lr_search"]).all()
    # seeds really are separate trainings
    a = board[(board["trial_id"] == board["trial_id"].iloc[0]) & (board["sampler"] == "prior")]
    assert a["best_val_loss"].nunique() == 2


@pytest.mark.slow
def test_the_same_command_resumes_and_a_changed_one_is_refused(searched, tmp_path, ray_session):
    run_dir, space, storage, data = searched.run_dir, searched.space, searched.storage, searched.data
    before = {d: (Path(d) / "metrics.jsonl").read_text() for d in trials(run_dir)["trial_dir"]}
    rows = sorted(run_dir.glob("final/*/rows/*.json"))
    gone, kept = rows[0], {p: p.read_text() for p in rows[1:]}
    trained = {p: p.stat().st_mtime_ns for p in run_dir.glob("final/*/train.json")}
    gone.unlink()
    again = in_process(command(space, data, storage))  # no second experiment: only the missing row is redone
    assert again.returncode == 0 and "resuming" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    # A retried trial that diverged is not trained again (resume_errored retries errored trials).
    assert {d: (Path(d) / "metrics.jsonl").read_text() for d in trials(run_dir)["trial_dir"]} == before
    df = trials(run_dir)
    assert set(df[df["lr"] == DIVERGING_LR]["stop_reason"]) == {"diverged"}
    assert gone.exists() and {p: p.read_text() for p in rows[1:]} == kept
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("final/*/train.json")} == trained  # no retraining
    assert len(pd.read_parquet(run_dir / "leaderboard.parquet")) == 8

    other = in_process(command(space, make_tree(tmp_path / "other", per_class=8), storage))
    assert other.returncode == 2 and "this run started with" in other.stderr
    changed = tmp_path / "changed.yaml"
    changed.write_text(space.read_text().replace("latent: 4", "latent: 5"))
    refused = in_process(command(changed, data, storage, "--name", "t"))
    assert refused.returncode == 2 and "differs from" in refused.stderr

    # --fresh deletes the run and starts over (stopped here once the old trials are gone), on a copy.
    copy = Path(shutil.copytree(run_dir, tmp_path / "runs" / "t"))
    old = [copy / Path(d).name for d in before]
    proc = start(command(changed, data, tmp_path / "runs", "--name", "t", "--fresh"))

    def new_space_written():  # the old file may vanish between a look and a read: --fresh is deleting it
        try:
            return "latent: 5" in RunFolder(copy).space_file.read_text()
        except FileNotFoundError:
            return False

    try:  # the new space file is written once the old run is deleted
        wait_for(new_space_written, proc)
    finally:
        kill(proc)
    assert not any(d.exists() for d in old)


@pytest.mark.slow
def test_rays_own_api_reads_each_trials_config_and_last_result_and_no_more(searched):
    """What docs/run-folder.md (Ray's own API) says ExperimentAnalysis and Tuner.restore show."""
    from ray.tune import ExperimentAnalysis, Tuner

    from search.trainable import run_trial

    table = trials(searched.run_dir).set_index("trial_id")
    analysis = ExperimentAnalysis(str(searched.run_dir))
    assert sorted(t.trial_id for t in analysis.trials) == sorted(table.index)
    for t in analysis.trials:
        row = table.loc[t.trial_id]
        assert (t.path, t.status, t.config["lr"]) == (row.trial_dir, row.status, row.lr)
        if row.status == "TERMINATED":
            assert (t.last_result["epoch"], t.last_result["score"]) == (row.epochs, row.score)
    assert analysis.get_best_trial("score", "min").trial_id == converged(table)["score"].idxmin()
    assert analysis.results_df.index.sort_values().tolist() == sorted(table.index)
    # no history and no checkpoint through Tune: they are in each trial's folder
    assert analysis.dataframe().empty and all(df.empty for df in analysis.trial_dataframes.values())
    results = Tuner.restore(str(searched.run_dir), run_trial).get_results()
    assert sorted(r.metrics["trial_id"] for r in results) == sorted(table.index)
    assert results.get_dataframe().empty and all(r.checkpoint is None and r.metrics_dataframe.empty for r in results)
    assert all((Path(r.path) / "metrics.jsonl").exists() for r in results)


@pytest.mark.slow
def test_a_diverging_trial_fails_with_its_reason_and_the_search_finishes(searched):
    df = trials(searched.run_dir)
    bad, good = df[df["lr"] == DIVERGING_LR], converged(df)
    assert len(bad) == 1 and len(good) == 3
    assert set(bad["status"]) == {"ERROR"} and set(bad["stop_reason"]) == {"diverged"}
    assert all("diverged at epoch" in e for e in bad["error"])
    for d in bad["trial_dir"]:  # Ray's own record of the error is the divergence too, not a pickling error
        assert "loss diverged at epoch" in (Path(d) / "error.txt").read_text()
    assert set(good["status"]) == {"TERMINATED"}
    assert good["best_val_loss"].notna().all() and (bad["epochs"] >= 1).all()


@pytest.mark.slow
def test_the_search_keeps_its_optuna_study_in_the_run_folder(searched):
    """Each trial is a study trial labelled with its Tune trial, with its last sample grid attached;
    the diverged one failed."""
    import optuna

    from results import study as study_files

    assert_study_matches_trials(searched.run_dir)
    study = study_files.load_study(searched.run_dir)
    assert study.study_name == "t" and study.metric_names == ["fid"]
    storage = study_files.journal_storage(RunFolder(searched.run_dir))
    for t in study.trials:
        assert Path(t.user_attrs[study_files.TRIAL_DIR]).name.endswith(t.user_attrs[study_files.TUNE_TRIAL_ID])
        if t.state != optuna.trial.TrialState.FAIL:  # its last grid, as Optuna's artifact
            [meta] = optuna.artifacts.get_all_artifact_meta(t, storage=storage)
            grids = sorted(Path(t.user_attrs[study_files.TRIAL_DIR]).glob("grids/epoch*_samples.png"))
            attached = RunFolder(searched.run_dir).study_artifacts / meta.artifact_id
            assert attached.read_bytes() == grids[-1].read_bytes()


def test_a_run_an_earlier_version_started_is_refused_in_one_line(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(space.read_text())
    (run.path / "data.json").write_text(json.dumps({"source": str(data_dir)}))
    (run.path / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {run.path}: started by an earlier version, which kept no optuna.journal; its searcher cannot be "
        "continued: pass --fresh to start over or --name for a new run")


@pytest.mark.parametrize("cut", ["experiment_state-2026-01-02_00-00-00.json", "searcher-state-2026-01-02_00-00-00.pkl"])
def test_a_run_whose_last_saved_state_is_cut_short_is_refused_in_one_line_changing_nothing(tmp_path, data_dir, capsys,
                                                                                         cut):
    """Tune's restore, failing to read its newest state, would start the search over with one trial."""
    import pickle

    space = tiny_space(tmp_path)
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(space.read_text())
    (run.path / "data.json").write_text(json.dumps({"source": str(data_dir)}))
    run.study_journal.write_text("")
    for session in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):  # an earlier command's save, and the last
        (run.path / f"experiment_state-{session}.json").write_text(json.dumps({"trial_data": [["x" * 5000, {}]]}))
        (run.path / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"trials": ["x" * 5000]}))
    whole = (run.path / cut).read_bytes()
    (run.path / cut).write_bytes(whole[:4096])  # as a kill leaves a file written in place
    before = {p: p.read_bytes() for p in run.path.iterdir()}
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {run.path / cut}: Tune's saved state does not read back whole (4096 bytes")
    assert line.endswith("the search cannot be resumed from it: nothing was changed; pass --fresh to start over or "
                         "--name for a new run")
    assert {p: p.read_bytes() for p in run.path.iterdir()} == before
    (run.path / cut).write_bytes(whole)
    assert run.unreadable_tune_state() is None


@pytest.mark.slow
def test_a_search_killed_before_tunes_first_save_starts_again_and_runs_every_trial(tmp_path, data_dir, ray_session):
    """Tune writes tuner.pkl as the search starts and its experiment state a moment later; restored
    from tuner.pkl alone, Tune would start the search over with one trial, and every later command
    would run none and say "interrupted"."""
    space = tiny_space(tmp_path, num_samples=2, asha={"max_t": 2, "grace_period": 2, "reduction_factor": 2})
    cmd = command(space, data_dir, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "t"
    proc = start(cmd)
    try:
        wait_for(lambda: (run_dir / "tuner.pkl").exists(), proc)
    finally:
        kill(proc)
    for state in run_dir.glob("experiment_state-*.json"):  # as a kill a moment earlier leaves the folder
        state.unlink()
    resumed = in_process(cmd)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = pd.read_parquet(run_dir / "trials.parquet")
    assert len(df) == 2 and set(df["status"]) == {"TERMINATED"}, df[["trial_id", "status"]]
    assert_study_matches_trials(run_dir)


def _saved_trials(state: Path) -> int:
    """How many trials Tune's experiment state file holds (0 while it is being written)."""
    try:
        return len(json.loads(state.read_text())["trial_data"])
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("num_samples,behind", [(2, ["experiment_state"]),
                                                (3, ["experiment_state", "search_gen_state"])],
                         ids=["the-last-trial", "a-trial-before-the-last-wrappers-behind-too"])
def test_a_search_whose_searcher_was_saved_a_trial_ahead_of_tune_runs_that_trial_again(tmp_path, data_dir,
                                                                                     num_samples, behind):
    """Tune saves its experiment state, its searcher's and the searcher's wrappers' (the trial count,
    the concurrency limit's places) in three files, and a kill while they are uploaded (object
    storage) or renamed in (a local disk) can leave them from different saves: the searcher has
    handed out a trial the restored Tune never heard of. Where that was the last trial, Tune ended
    one trial short and every later command said "interrupted"; before the last, Tune waited for it
    forever (the space runs one trial at a time, and the lost trial held the place), and with the
    wrappers' file behind too, the search ran a trial too many."""
    space = tiny_space(tmp_path, num_samples=num_samples,
                       asha={"max_t": 20, "grace_period": 20, "reduction_factor": 2})
    cmd = command(space, data_dir, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "t"
    proc = start(cmd)
    try:
        wait_for(lambda: any(_saved_trials(s) == 1 for s in run_dir.glob("experiment_state-*.json")), proc)
        [state] = run_dir.glob("experiment_state-*.json")
        earlier = {f: f.read_bytes() for name in behind for f in run_dir.glob(f"{name}-*.json")}
        wait_for(lambda: _saved_trials(state) == 2, proc)
    finally:
        kill(proc)
    for f, saved in earlier.items():  # the second trial's save reached the searcher's own state alone
        f.write_bytes(saved)
    resumed = run(cmd)  # in a process of its own, which a search that waits forever cannot hang
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = pd.read_parquet(run_dir / "trials.parquet")
    assert len(df) == num_samples and set(df["status"]) == {"TERMINATED"}, df[["trial_id", "status"]]
    assert_study_matches_trials(run_dir)


@pytest.mark.slow
def test_a_cnn_or_resnet_search_scores_every_finalist_with_every_sampler(tmp_path, data_dir, ray_session):
    """Both families searched (seed 4 samples a cnn trial and two resnet ones, with and without EMA),
    all three retrained and scored with prior, gmm and two_stage samplers; trials.parquet and the
    leaderboard carry every field of their configuration."""
    space = tiny_space(tmp_path, num_samples=3, seed=4, asha={"max_t": 2, "grace_period": 2, "reduction_factor": 2},
                       final={"top_k": 3, "samplers": ["prior", "gmm", "two_stage"], "two_stage": TINY_TWO_STAGE})
    raw = yaml.safe_load(space.read_text())
    raw["space"] = {**CNN_RESNET_SPACE, "latent": 4}
    space.write_text(yaml.safe_dump(raw))
    proc = in_process(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = trials(tmp_path / "runs" / "t")
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"} and set(df["family"]) == {"cnn", "resnet"}
    assert set(df["ema"]) == {0.0, 0.9}
    board = pd.read_parquet(tmp_path / "runs" / "t" / "leaderboard.parquet")
    assert len(board) == 3 * 3 and set(board["sampler"]) == {"prior", "gmm", "two_stage"}
    config_columns = list(column_types())
    merged = board.merge(df, on="trial_id", suffixes=("", "_trial"))
    for column in config_columns:  # the leaderboard's configuration is the trial's, column by column
        assert merged[column].astype(str).tolist() == merged[f"{column}_trial"].astype(str).tolist(), column
    for r in board.itertuples():
        trial = TrialConfig.from_dict(json.loads(df.set_index("trial_id").loc[r.trial_id, "config"]))
        assert trial.model.family == r.family and trial.recipe.ema == r.ema
        if r.family == "resnet":
            assert (r.width, r.scales, r.blocks, r.activation) == (trial.model.width, trial.model.scales, 1, "silu")
            assert r.norm in ("batch", "group") and r.upsample in ("nearest", "transposed") and pd.isna(r.label)
        else:
            assert r.label in ("index", "onehot") and r.width == 0 and pd.isna(r.upsample) and r.norm == "batch"
        assert Path(r.sample_grid).is_file() and np.isfinite(r.fid)
        assert (Path(r.checkpoint).parent / "two_stage.pt").is_file()


def get_json(url: str, timeout: float = 60.0):
    """The JSON at `url`, waiting for the server to answer."""
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() - t0 > timeout:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_optuna_dashboard_shows_the_search(searched, tmp_path):
    """optuna-dashboard on the run's journal, as docs/run-folder.md starts it: its JSON API has the study
    and every trial with its settings and score, and its page, in headless Chromium, names them."""
    run = RunFolder(searched.run_dir)
    table = trials(run.path)
    port = free_port()
    dashboard = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")), str(run.study_journal),
                                  "--artifact-dir", str(run.study_artifacts), "--host", "127.0.0.1",
                                  "--port", str(port), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        [summary] = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert summary["study_name"] == "t"
        study = get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
        assert len(study["trials"]) == len(table)
        scores = sorted(t["values"][0] for t in study["trials"] if t.get("values"))  # a failed trial has none
        assert scores == sorted(table.loc[table["status"] == "TERMINATED", "score"])
        assert all({p["name"] for p in t["params"]} >= {"lr", "likelihood"} for t in study["trials"])
        chromium = shutil.which("chromium")
        if chromium is None:
            pytest.skip("no Chromium to load the page in (Debian: apt install chromium; .ci/run installs it)")
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000", "--dump-dom",
             f"http://127.0.0.1:{port}/dashboard/studies/{summary['study_id']}/trials"],
            capture_output=True, text=True, timeout=120).stdout
        body = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom[dom.find("<body"):], flags=re.S)
        page = " ".join(re.sub(r"<[^>]+>", " ", body).split())  # the text the page shows
        assert f"t (id={summary['study_id']})" in page and f"{len(table)} Trials" in page, page[:2000]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


@pytest.mark.slow
def test_a_search_of_quality_against_size_keeps_its_front_and_retrains_from_it(tmp_path, data_dir, ray_session):
    """objective [fid, params]: trials.parquet marks the Pareto front of (score, params) among
    finished trials (checked by brute force), the study is multi-objective, the final stage
    retrains trials from the front, and the leaderboard marks each sampler's front of (fid, params)."""
    # trials 4 and 5 sampled by spaces/cnn.yaml's searcher, a GP told last scores, from both objectives
    space = tiny_space(tmp_path, num_samples=5, asha={"max_t": 2, "grace_period": 2, "reduction_factor": 2},
                       searcher={"model": "gp", "n_startup_trials": 3, "fit_on": "last"},
                       objective={**TINY_OBJECTIVE, "metric": ["fid", "params"]},
                       final={"top_k": 2, "samplers": ["prior"]})
    raw = yaml.safe_load(space.read_text())
    raw["space"]["mlp"] = {"layers": 1, "width": {"choice": [8, 16, 32, 64]}}
    raw["space"]["latent"] = {"choice": [2, 4, 8]}
    space.write_text(yaml.safe_dump(raw))
    proc = in_process(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"
    df = trials(run_dir)
    done = df[df["status"] == "TERMINATED"]
    points = list(zip(done["score"], done["params"]))

    def beaten(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)

    assert done["pareto"].tolist() == [not beaten(p) for p in points]
    front = set(done.loc[done["pareto"], "trial_id"])
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    retrained = set(board["trial_id"])
    assert len(retrained) == 2 and (retrained <= front if len(front) >= 2 else front <= retrained)
    assert board["pareto"].dtype == bool and board["pareto"].any()
    from results import study as study_files

    study = study_files.load_study(run_dir)
    assert study.metric_names == ["fid", "params"] and len(study.directions) == 2
    by_id = {t.user_attrs[study_files.TUNE_TRIAL_ID]: t.values for t in study.trials}
    for row in done.itertuples():
        assert by_id[row.trial_id] == [row.score, row.params]
    from results.show import main as show

    assert show([str(run_dir)]) == 0  # draws the study's front and the leaderboard's
    md = (run_dir / "report" / "report.md").read_text()
    assert "](search_pareto.png)" in md and (run_dir / "report" / "search_pareto.png").stat().st_size > 0


def test_a_run_resumed_from_another_checkout_is_not_refused_for_where_its_weights_lie(tmp_path, data_dir):
    spaces = {}
    for machine in ("a", "b"):  # the same checkout in two places, the weights beside each
        (tmp_path / machine / "spaces").mkdir(parents=True)
        (tmp_path / machine / "w.pth").write_bytes(b"weights")
        raw = yaml.safe_load(tiny_space(tmp_path).read_text())
        raw["final"]["inception_weights"] = "../w.pth"
        spaces[machine] = tmp_path / machine / "spaces" / "t.yaml"
        spaces[machine].write_text(yaml.safe_dump(raw))
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(yaml.safe_dump(load_spec(spaces["a"]).raw))  # as a's search.run stored it
    (run.path / "data.json").write_text(json.dumps({"source": "/elsewhere"}))  # the next check stops the command
    proc = in_process(command(spaces["b"], data_dir, tmp_path / "runs"))
    assert proc.returncode == 2 and "this run started with /elsewhere" in proc.stderr, proc.stderr


@pytest.mark.parametrize("flag, problem", [
    ("32", "this run started with /elsewhere"),  # the default, by flag rather than file: the next check
    ("5", "search.num_samples: this run started with 32 trials, not 5; resume it with 32 (in the space file or "
          "--num-samples), or pass --name for a new run"),
])
def test_resuming_with_another_number_of_trials_names_it(tmp_path, data_dir, flag, problem):
    space = tiny_space(tmp_path)
    raw = yaml.safe_load(space.read_text())
    del raw["search"]["num_samples"]  # the default, 32
    space.write_text(yaml.safe_dump(raw))
    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(space.read_text())
    (run.path / "data.json").write_text(json.dumps({"source": "/elsewhere"}))
    proc = in_process(command(space, data_dir, tmp_path / "runs", "--num-samples", flag))
    assert proc.returncode == 2 and problem in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_inception_weights_given_by_flag_stand_in_for_a_space_files_missing_ones(tmp_path):
    raw = yaml.safe_load(tiny_space(tmp_path).read_text())
    raw["final"]["inception_weights"] = "/elsewhere/w.pth"  # a file written on another machine
    space = tmp_path / "other.yaml"
    space.write_text(yaml.safe_dump(raw))
    (tmp_path / "w.pth").write_bytes(b"weights")
    proc = in_process(command(space, tmp_path / "no-data", tmp_path / "runs", "--inception-weights",
                              str(tmp_path / "w.pth")))
    assert proc.returncode == 2 and "no-data" in proc.stderr and "w.pth" not in proc.stderr, proc.stderr
