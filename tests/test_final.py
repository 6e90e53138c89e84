"""The final stage: `python -m search.final RUN_DIR` and its part at the end of `search.run`."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cli import command, epochs_done, final_command, in_process, kill, run, start, wait_for
from conftest import final_in_process, finished_search, make_tree

from results.run_folder import RunFolder
from search.finalists import finalists


def test_finalists_are_the_best_finished_trials_by_score():
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "status": ["TERMINATED", "ERROR", "TERMINATED", "TERMINATED", "TERMINATED"],
        "score": [3.0, 1.0, 2.0, None, 4.0],
        "best_val_loss": [1.0, 1.0, 5.0, 0.5, 2.0],  # not what ranks them
    })
    assert finalists(trials, 2)["trial_id"].tolist() == ["c", "a"]
    assert finalists(trials, 10)["trial_id"].tolist() == ["c", "a", "e"]


def test_final_alone_needs_a_search_run(tmp_path, capsys):
    from search.final import main

    assert main([str(tmp_path)]) == 2
    assert "no trials.parquet; run python -m search.run first" in capsys.readouterr().err


@pytest.mark.parametrize("damaged, problem", [("leaderboard.parquet", "does not read back as a table (ArrowInvalid: "),
                                               ("trials.parquet", "does not read back as a table (ArrowInvalid: "),
                                               ("data.json", "does not read back (Expecting value")])
def test_a_damaged_run_file_is_one_line_before_anything_is_retrained(scored_run_copy, capsys, damaged, problem):
    from search.final import main

    (scored_run_copy / damaged).write_text("cut short")
    before = {p: p.stat().st_mtime_ns for p in scored_run_copy.rglob("*")}
    assert main([str(scored_run_copy)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {scored_run_copy / damaged}: {problem}")
    assert {p: p.stat().st_mtime_ns for p in scored_run_copy.rglob("*")} == before


@pytest.fixture
def nothing_loaded(monkeypatch):
    """The final stage's heavy part, data then Ray, refused: a test that it never gets that far."""
    import cvae_core.data

    def load_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(cvae_core.data, "load_data", load_data)


@pytest.mark.parametrize("table", ["leaderboard.parquet", "trials.parquet"])
def test_a_table_that_is_a_folder_is_one_line_before_the_data_loads(scored_run_copy, capsys, nothing_loaded, table):
    from search.final import main

    (scored_run_copy / table).unlink()
    (scored_run_copy / table).mkdir()
    before = {p: p.stat().st_mtime_ns for p in scored_run_copy.rglob("*")}
    assert main([str(scored_run_copy)]) == 2
    assert capsys.readouterr().err == f"error: {scored_run_copy / table}: is a folder, not a table\n"
    assert {p: p.stat().st_mtime_ns for p in scored_run_copy.rglob("*")} == before


@pytest.mark.parametrize("data", [[], ["--data", "elsewhere.zip"]])  # --data given, the record is read too
@pytest.mark.parametrize("record, problem", [
    (None, "is a folder, not a data record"),
    ({"source": "/d.zip", "classes": ["a", "b"]}, "holds no image_size"),
    ({"source": "/d.zip", "image_size": 32, "channels": 3, "classes": 5},
     "classes: must be a list of at least 2 names"),
])
def test_a_damaged_data_record_is_one_line_before_the_data_loads(scored_run_copy, capsys, nothing_loaded, data,
                                                                 record, problem):
    from search.final import main

    path = scored_run_copy / "data.json"
    path.unlink()
    if record is None:
        path.mkdir()
    else:
        path.write_text(json.dumps(record))
    before = {p: p.stat().st_mtime_ns for p in scored_run_copy.rglob("*")}
    assert main([str(scored_run_copy), *data]) == 2
    assert capsys.readouterr().err == f"error: {path}: {problem}\n"
    assert {p: p.stat().st_mtime_ns for p in scored_run_copy.rglob("*")} == before


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree", per_class=30)


@pytest.mark.slow
def test_sigkill_during_the_final_stage_loses_no_finished_row(tmp_path, ray_session):
    data_dir = make_tree(tmp_path / "tree", per_class=60)
    final = {"top_k": 2, "max_epochs": 8, "patience": 8}
    board = final_in_process(finished_search(tmp_path / "uninterrupted", data_dir, final), data_dir)
    run_dir = finished_search(tmp_path, data_dir, final)

    # Kill once mid-training (after a checkpoint), then again once some row is written.
    for moment in (lambda: any(len(v) >= 3 for v in epochs_done(run_dir / "final").values()),
                   lambda: any(run_dir.glob("final/*/rows/*.json"))):
        proc = start(final_command(run_dir, data_dir))
        try:
            wait_for(moment, proc)
        finally:
            kill(proc)
    written = {p: p.read_text() for p in run_dir.glob("final/*/rows/*.json")}

    done = in_process(final_command(run_dir, data_dir))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert all(p.read_text() == text for p, text in written.items())
    again = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert len(again) == len(board) == 4
    for name, epochs in epochs_done(run_dir / "final").items():  # training resumed, not restarted
        assert sorted(set(epochs)) == list(range(1, 9)), (name, epochs)
        # An epoch's record is written before its checkpoint: each kill may cut one epoch's
        # checkpoint, which is then trained again; a restart would redo the 3 or more before it.
        assert len(epochs) - len(set(epochs)) <= 2, (name, epochs)
    # the same trainings give the same models: a kill changes nothing in the results
    key = ["trial_id", "seed", "sampler"]
    cols = [*key, "best_val_loss", "fid"]
    pd.testing.assert_frame_equal(again[cols].sort_values(key).reset_index(drop=True),
                                  board[cols].sort_values(key).reset_index(drop=True))


# What a finalist says, in the order it does it (one epoch line: the next would come 30 s later).
FINALIST_STEPS = ("training on cpu", "epoch    1 ", "trained ", "prior sampler: scoring", "prior sampler: FID",
                  "gmm sampler: scoring", "gmm sampler: FID")


@pytest.mark.slow
def test_finalists_at_once_print_their_progress_in_order_and_unmangled(tmp_path, data_dir):
    """Four finalists at once say lines alike but for their numbers: Ray's log streaming held such
    lines back, printed them late (after the leaderboard) and suffixed "[repeated 3x across
    cluster] ...". As a user runs it (a Ray of its own, the user's environment)."""
    import yaml

    run_dir = finished_search(tmp_path, data_dir, final={"top_k": 2, "seeds": 2})
    space = RunFolder(run_dir).space_file
    raw = yaml.safe_load(space.read_text())
    raw["search"]["resources"] = {"cpu": 0.5}  # all four at once on two cores
    space.write_text(yaml.safe_dump(raw))
    proc = run(final_command(run_dir, data_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "repeated" not in proc.stdout and "RAY_DEDUP_LOGS" not in proc.stdout, proc.stdout
    names = sorted(p.name for p in (run_dir / "final").iterdir())
    assert len(names) == 4
    lines = proc.stdout.splitlines()
    board = next(i for i, line in enumerate(lines) if line.startswith("leaderboard: "))
    for name in names:  # printed by the driver, in order, once each, all before the leaderboard
        said = [(i, line.split(": ", 1)[1]) for i, line in enumerate(lines) if line.startswith(f"{name}: ")]
        steps = [next((s for s in FINALIST_STEPS if line.startswith(s)), line) for _, line in said]
        assert steps == list(FINALIST_STEPS)
        assert all(i < board for i, _ in said)


def test_finalist_job_scores_what_is_missing_without_retraining(scored_run_copy):
    folder = next((scored_run_copy / "final").iterdir())
    gmm, prior = folder / "rows" / "gmm.json", folder / "rows" / "prior.json"
    kept, best = prior.read_text(), (folder / "best.pt").stat().st_mtime_ns
    fitted = (folder / "two_stage.pt").stat().st_mtime_ns
    gmm.unlink()
    left = folder / ".checkpoint.pt.0a1b2c.tmp"  # a killed attempt was saving it
    left.write_bytes(b"half")
    rows = rerun_finalist(scored_run_copy, folder)
    assert not left.exists()
    assert [r["sampler"] for r in rows] == ["prior", "gmm", "two_stage"] and gmm.exists()
    assert prior.read_text() == kept and (folder / "best.pt").stat().st_mtime_ns == best
    assert (folder / "two_stage.pt").stat().st_mtime_ns == fitted  # not fitted again for another sampler


@pytest.mark.slow
def test_a_tiny_seed_space_scores_the_named_presets(tmp_path, data_dir, ray_session):
    """spaces/seed.yaml on CPU: the same path with two of the report's presets and tiny counts."""
    import yaml

    from cvae_core import PRESETS, preset
    from cvae_core.models import count_params

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "spaces" / "seed.yaml").read_text())
    raw["space"]["presets"] = ["mlp-M1", "cnn-arch1-M1"]
    raw["search"] = {**raw["search"], "asha": {"max_t": 2, "grace_period": 2, "reduction_factor": 2},
                     "resources": {"cpu": 1}, "max_concurrent": 1}  # one trial process, not one per trial
    raw["final"] = {**raw["final"], "top_k": 16, "max_epochs": 2, "samples_per_class": 3,
                    "feature_extractor": "tiny-random"}
    space = tmp_path / "seed.yaml"
    space.write_text(yaml.safe_dump(raw))
    proc = in_process(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    board = pd.read_parquet(tmp_path / "runs" / "seed" / "leaderboard.parquet")
    assert len(board) == 2 * 3 and set(board["preset"]) == {"mlp-M1", "cnn-arch1-M1"}  # every sampler
    for r in board.itertuples():
        assert r.preset in PRESETS and r.params == count_params(preset(r.preset))
        assert r.lr == 1e-4 and r.batch_size == 512


def test_a_finalist_shows_its_training_and_each_score_as_it_goes(scored_run_copy, capsys):
    folder = next((scored_run_copy / "final").iterdir())
    shutil.rmtree(folder)
    rerun_finalist(scored_run_copy, folder)
    out = capsys.readouterr().out
    name = folder.name
    for expected in (f"{name}: training on cpu", f"{name}: epoch    1  train ",
                     f"{name}: trained 2 epochs (max_epochs), best val ",
                     f"{name}: prior sampler: scoring 30 images with tiny-random",
                     f"{name}: gmm sampler: scoring 30 images with tiny-random",
                     f"{name}: two_stage sampler: second VAE (2 x 16) fitted on 40 encoder means, 5 epochs, loss "):
        assert expected in out, out
    line = (rf"^{name}: (prior|gmm|two_stage) sampler: FID [\d.]+, intra-FID [\d.]+, class accuracy [\d.]+ "
            rf"\(real [\d.]+\), precision [\d.]+, recall [\d.]+, IS [\d.]+ \(\d+ s\)$")
    assert len(re.findall(line, out, re.M)) == 3, out


def test_epoch_lines_come_at_most_once_per_period():
    from search.finalists import _progress

    def lines(every_s):
        buf = io.StringIO()
        show = _progress("mlp_x_s0", every_s)
        with contextlib.redirect_stdout(buf):
            for epoch in range(1, 6):
                show({"epoch": epoch, "train_loss": 1.0, "val_loss": 2.0, "best_val_loss": 2.0, "best_epoch": epoch},
                     None)
        return buf.getvalue().splitlines()

    assert [line.split()[2] for line in lines(3600)] == ["1"]  # the first epoch, then quiet
    assert len(lines(0)) == 5


def test_rescore_fills_in_the_columns_of_rows_written_before_they_existed(scored_run_copy):
    folder = next((scored_run_copy / "final").iterdir())
    prior, gmm = folder / "rows" / "prior.json", folder / "rows" / "gmm.json"
    old = {k: v for k, v in json.loads(prior.read_text()).items() if k not in ("intra_fid", "data_source")}
    prior.write_text(json.dumps(old))  # as an earlier version wrote it
    kept, best = gmm.read_text(), (folder / "best.pt").stat().st_mtime_ns
    rerun_finalist(scored_run_copy, folder)
    assert json.loads(prior.read_text()) == old  # without --rescore a scored row stays
    rerun_finalist(scored_run_copy, folder, rescore=True)
    new = json.loads(prior.read_text())
    assert new["intra_fid"] > 0 and new["data_source"] and new["fid"] == pytest.approx(old["fid"])
    assert gmm.read_text() == kept and (folder / "best.pt").stat().st_mtime_ns == best  # nothing else redone


@pytest.mark.parametrize("missing", [("train.json", "best.pt", "two_stage.pt", "rows", "samples_prior.png",
                                      "samples_gmm.png", "samples_two_stage.png"),
                                     ("two_stage.pt", "rows/two_stage.json", "samples_two_stage.png"),
                                     ("best.pt", "rows/gmm.json", "samples_gmm.png")])  # an earlier version's
def test_a_finalist_in_a_bucket_uploads_nothing_before_what_it_names(missing, scored_run_copy, monkeypatch):
    """A kill mid-upload must not leave the bucket a training summary without its weights (a rerun
    would load them) nor a row without its sample grid and two_stage fit (a rerun keeps the row)."""
    from results.storage import Remote

    folder = next((scored_run_copy / "final").iterdir())
    for name in missing:  # what the finalist has still to do
        shutil.rmtree(folder / name) if (folder / name).is_dir() else (folder / name).unlink()
    upload = Remote._upload

    def checked(remote, path, src):
        there = folder / path.relative_to(remote.scratch / "final" / folder.name)
        before = there.stat().st_mtime_ns if there.exists() else None
        upload(remote, path, src)
        if there.stat().st_mtime_ns == before:
            return  # unchanged since its last upload: skipped
        if path.name == "train.json":
            assert (folder / "best.pt").exists()
        if path.parent.name == "rows":
            assert (folder / f"samples_{path.stem}.png").exists()
            assert path.stem != "two_stage" or (folder / "two_stage.pt").exists()

    monkeypatch.setattr(Remote, "_upload", checked)
    monkeypatch.setenv("CVAE_SCRATCH", str(scored_run_copy.parent / "node"))
    rows = rerun_finalist(scored_run_copy, folder, location=f"file://{scored_run_copy}")
    assert [r["sampler"] for r in rows] == ["prior", "gmm", "two_stage"] and (folder / "rows" / "gmm.json").exists()


def rerun_finalist(run_dir, folder, location: str | None = None, **kw):
    """finalist_job again for the finalist in `folder` of a scored run, as the final stage calls it
    (`location`: the run's URI, when `run_dir` is its bucket)."""
    from cvae_core.data import load_data
    from search.finalists import finalist_job
    from search.settings import load_spec

    run = RunFolder(run_dir)
    trials = pd.read_parquet(run.trials_table)
    [trial] = trials[trials["trial_id"] == folder.name.split("_")[1]].to_dict("records")
    final = load_spec(run.space_file).final
    return finalist_job(trial, 0, load_data(run.source()), "train", final, location or str(run.path), **kw)
