"""A run folder in object storage (results.storage), on a real S3 endpoint (moto's server): a search
and its final stage keep every record in the bucket and write nothing in the working folder, a
kill is resumed from another machine's empty scratch folder, the readers read an s3:// run, and
each URI no run can live at is one line before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from buckets import ACCESS_KEY, SECRET_KEY, files_holding
from cli import (
    ROOT,
    command,
    final_command,
    free_port,
    in_process,
    kill,
    output,
    run,
    start,
    tiny_space,
    wait_for,
    wait_for_port,
)
from conftest import make_tree

from results.run_folder import RunFolder
from results.storage import Uploads


def _epochs(bucket, key: str) -> list[int]:
    """The epochs of a metrics.jsonl in the bucket (none while it is not there)."""
    if key not in bucket.keys():
        return []
    return [json.loads(line)["epoch"] for line in bucket.read(key).decode().splitlines() if line.endswith("}")]


def test_push_uploads_what_changed_and_pull_brings_what_is_newer(bucket, tmp_path):
    run = RunFolder.at(f"{bucket.uri}/runs/r")
    assert run.path.is_relative_to(tmp_path / "scratch")  # this node's mirror, under $CVAE_SCRATCH
    (run.path / "a").mkdir(parents=True)
    (run.path / "a" / "metrics.jsonl").write_text("1\n")
    (run.path / "a" / ".checkpoint.pt.0123.tmp").write_text("half written")
    run.push()
    assert bucket.keys("runs/r") == ["a/metrics.jsonl"]  # a file being written is never uploaded

    bucket.write("runs/r/a/metrics.jsonl", b"1\n2\n")  # another node went on since
    bucket.write("runs/r/b/scores.jsonl", b"{}\n")
    (run.path / "a" / "notes.txt").write_text("newer here")
    run.pull()
    assert (run.path / "a" / "metrics.jsonl").read_text() == "1\n2\n" and (run.path / "b" / "scores.jsonl").exists()

    run.remove(run.path / "b" / "scores.jsonl")
    assert not (run.path / "b" / "scores.jsonl").exists() and "b/scores.jsonl" not in bucket.keys("runs/r")
    run.push()
    assert bucket.read("runs/r/a/notes.txt") == b"newer here"
    assert bucket.read("runs/r/a/metrics.jsonl") == b"1\n2\n"  # pulled, unchanged: not uploaded again


def test_any_scheme_pyarrow_resolves_is_mirrored_alike(tmp_path, monkeypatch):
    """file:// here, as gs:// or hdfs:// would be: the same mirror, pushes and pulls."""
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "scratch"))
    run = RunFolder.at(f"file://{tmp_path}/bucket/runs/r")
    assert run.path == tmp_path / "scratch" / "file" / str(tmp_path).lstrip("/") / "bucket" / "runs" / "r"
    run.trial("a").mkdir(parents=True)
    (run.trial("a") / "metrics.jsonl").write_text("1\n")
    run.push()
    assert (tmp_path / "bucket" / "runs" / "r" / "a" / "metrics.jsonl").read_text() == "1\n"
    elsewhere = tmp_path / "other-machine"
    monkeypatch.setenv("CVAE_SCRATCH", str(elsewhere))
    RunFolder.at(run.location).pull()
    assert (elsewhere / "file" / str(tmp_path).lstrip("/") / "bucket/runs/r/a/metrics.jsonl").read_text() == "1\n"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _made_anew_on_another_node(uri: str, tmp_path, monkeypatch, mark: bool = True) -> None:
    """search.run --fresh on another node: the run in the bucket deleted and made anew (`mark`:
    marked; else the prefix left empty of runs)."""
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "elsewhere"))
    elsewhere = RunFolder.at(uri)
    elsewhere.path.mkdir(parents=True)
    elsewhere.delete()
    elsewhere.path.mkdir(parents=True)
    if mark:
        elsewhere.mark()
    elsewhere.trials_table.write_text("the new run's")
    elsewhere.push()
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "here"))


def _an_old_run(uri: str, tmp_path, monkeypatch) -> None:
    """A run at `uri`, with a leaderboard, a finalist's row and a report, read on this node."""
    from results.run_folder import open_run

    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "here"))
    old = RunFolder.at(uri)
    _write(old.path, {"leaderboard.parquet": "the old run's", "final/cnn_old_s0/rows/prior.json": "{}",
                      "report/report.md": "the old run's"})
    old.mark()
    old.push()
    open_run(uri).pull()


def test_a_reader_does_not_read_a_run_made_anew_since_as_the_old_one(tmp_path, monkeypatch):
    from results.run_folder import open_run

    uri = f"file://{tmp_path}/bucket/runs/r"
    _an_old_run(uri, tmp_path, monkeypatch)
    _made_anew_on_another_node(uri, tmp_path, monkeypatch)
    live = RunFolder.at(uri).trial("cnn_new") / "metrics.jsonl"  # a trial of the new run, running here
    _write(live.parent, {live.name: "not pushed yet"})
    run = open_run(uri)
    run.pull()
    assert run.trials_table.read_text() == "the new run's"
    assert not run.leaderboard.exists() and not run.report_dir.exists() and not run.row_files()
    assert live.read_text() == "not pushed yet"  # the trial's mirror is not the reader's


@pytest.mark.parametrize("case", ["made anew", "deleted"])
def test_a_driver_forgets_a_mirror_of_another_run(case, tmp_path, monkeypatch):
    """search.final (and search.run) on a node whose mirror holds an old run's finalists' rows,
    which the final stage would merge into the new run's leaderboard."""
    from results.run_folder import open_run
    from search.run import _check_remote_run

    uri = f"file://{tmp_path}/bucket/runs/r"
    _an_old_run(uri, tmp_path, monkeypatch)
    _write(RunFolder.at(uri).path, {"final/cnn_old_s0/rows/prior.json": "{}"})
    _made_anew_on_another_node(uri, tmp_path, monkeypatch, mark=case == "made anew")
    if case == "made anew":
        assert _check_remote_run(RunFolder.at(uri))
    run = open_run(uri, reader=False)
    assert not run.row_files() and not run.leaderboard.exists() and run.is_run() == (case == "made anew")


def test_a_driver_forgets_a_workers_mirror_that_shows_no_run(tmp_path, monkeypatch):
    """A worker pulls its trials' and finalists' folders only, never the marker."""
    from results.run_folder import open_run

    uri = f"file://{tmp_path}/bucket/runs/r"
    _made_anew_on_another_node(uri, tmp_path, monkeypatch)
    _write(RunFolder.at(uri).path, {"final/cnn_old_s0/rows/prior.json": "{}"})
    assert not open_run(uri, reader=False).row_files()


def test_a_uri_that_holds_no_run_leaves_the_mirrors_under_it(tmp_path, monkeypatch):
    """search.final given the --storage prefix (or a folder inside a run) by mistake."""
    from results.run_folder import open_run

    uri = f"file://{tmp_path}/bucket/runs/r"
    _an_old_run(uri, tmp_path, monkeypatch)
    live = RunFolder.at(uri).trial("cnn_old") / "metrics.jsonl"
    _write(live.parent, {live.name: "not pushed yet"})
    for wrong in (f"file://{tmp_path}/bucket/runs", f"{uri}/final"):
        open_run(wrong, reader=False)
        assert live.read_text() == "not pushed yet" and RunFolder.at(uri).row_files()


def test_a_driver_keeps_this_nodes_mirror_of_the_same_run(tmp_path, monkeypatch):
    from results.run_folder import open_run
    from search.run import _check_remote_run

    uri = f"file://{tmp_path}/bucket/runs/r"
    _an_old_run(uri, tmp_path, monkeypatch)
    old = RunFolder.at(uri)
    open_run(uri, reader=False)
    _write(old.trial("cnn_old"), {"metrics.jsonl": "not pushed yet"})
    assert _check_remote_run(old)
    run = open_run(uri, reader=False)
    assert run.leaderboard.exists() and run.row_files() and (run.trial("cnn_old") / "metrics.jsonl").exists()


def test_a_push_cut_short_on_a_file_uri_leaves_the_runs_file_whole(tmp_path, monkeypatch):
    """A file system writes in place, where an object store replaces an object whole: a kill
    mid-upload must not leave the run's journal cut short (and the newest, so pulled everywhere)."""
    import results.storage

    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "scratch"))
    run = RunFolder.at(f"file://{tmp_path}/bucket/runs/r")
    run.path.mkdir(parents=True)
    run.study_journal.write_text("first\n")
    run.push()
    run.study_journal.write_text("first\nsecond\n")

    class Killed:  # the file a push reads, killed half way through
        def __init__(self, path):
            self.file = open(path, "rb")

        def fileno(self):
            return self.file.fileno()

        def read(self):
            raise KeyboardInterrupt

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(results.storage, "_open", Killed)
    with pytest.raises(KeyboardInterrupt):
        run.push()
    there = tmp_path / "bucket" / "runs" / "r"
    assert (there / "optuna.journal").read_text() == "first\n" and [p.name for p in there.iterdir()] == [
        "optuna.journal"]
    # a temp file a kill left there is never pulled
    (there / ".optuna.journal.0123ab.tmp").write_text("half")
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "other-machine"))
    elsewhere = RunFolder.at(run.location)
    elsewhere.pull()
    assert sorted(p.name for p in elsewhere.path.iterdir()) == ["optuna.journal"]


def test_a_trial_reads_ashas_stops_from_the_bucket_leaving_this_nodes_file_alone(tmp_path, monkeypatch):
    """A trial on the driver's node must not replace the state file the driver appends to with
    the bucket's copy, older by the records appended since the last push."""
    import results.storage
    from search.trainable import _stopped_by_asha

    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "scratch"))
    run = RunFolder.at(f"file://{tmp_path}/bucket/runs/r")
    run.path.mkdir(parents=True)
    run.asha_state.write_text(json.dumps({"trial": "a", "stopped": 5}) + "\n")
    run.push()
    here = run.asha_state.read_text() + json.dumps({"trial": "b", "stopped": 15}) + "\n"
    run.asha_state.write_text(here)  # appended since the push
    os.utime(run.asha_state, (0, 0))  # ... and looking older than the bucket's copy
    monkeypatch.setattr(results.storage, "_synced", {})  # to a trial's process, which never synced it
    assert _stopped_by_asha(run, "a") and _stopped_by_asha(run, "b") and not _stopped_by_asha(run, "c")
    assert run.asha_state.read_text() == here
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "other-machine"))  # a node the driver never ran on
    assert _stopped_by_asha(RunFolder.at(run.location), "a")
    assert not RunFolder.at(run.location).asha_state.exists()


def test_a_run_is_deleted_from_the_bucket_its_marker_last(bucket, monkeypatch):
    """--fresh on a run in a bucket: every object goes, the space file, data record and marker
    last, so that a kill part way leaves a prefix still known as a run."""
    from results.storage import Remote

    run = RunFolder.at(f"{bucket.uri}/runs/r")
    run.path.mkdir(parents=True)
    run.mark()
    run.space_file.write_text("space: {}")
    (run.path / "data.json").write_text("{}")
    (run.trial("mlp_a") / "grids").mkdir(parents=True)
    (run.trial("mlp_a") / "grids" / "x.png").write_bytes(b"png")
    run.asha_state.write_text("{}\n")
    run.push()
    deleted, real = [], Remote.filesystem.fget(run.remote)

    class Recording:  # pyarrow's filesystem, its deletions recorded
        def __getattr__(self, name):
            attr = getattr(real, name)
            if name in ("delete_file", "delete_dir"):
                return lambda path, *a: deleted.append(path.rsplit("runs/r/", 1)[-1]) or attr(path, *a)
            return attr

    monkeypatch.setattr(Remote, "filesystem", property(lambda self: Recording()))
    run.delete()
    assert bucket.keys("runs/r") == [] and not run.path.exists()
    assert deleted[-3:] == ["space.yaml", "data.json", ".cvae-search-run"]
    assert set(deleted[:-3]) == {"mlp_a", "asha_state.jsonl"}


def test_background_uploads_raise_their_error_when_waited_for():
    uploads = Uploads()

    def fail():
        raise OSError("endpoint gone")

    uploads.later(fail)
    with pytest.raises(OSError, match="endpoint gone"):
        uploads.wait()
    uploads.wait()  # once: a later push has nothing of it to answer for
    uploads.later(fail)
    pushed = []
    uploads.finish(lambda: pushed.append("all"))  # a whole push uploads what the failed one missed
    assert pushed == ["all"]


def test_a_local_run_folder_neither_pushes_nor_pulls(tmp_path):
    run = RunFolder.at(tmp_path / "runs" / "t")
    assert run.remote is None and run.location == str(tmp_path / "runs" / "t") and run.storage == str(tmp_path / "runs")
    run.push()
    run.pull()
    assert not run.path.exists()


def _save_through(callbacks: list, trials: list) -> None:
    """A save of Tune's state as the callbacks new_tuner installs (search.tuning.run_callbacks) see
    it: set up, told the trials at a step, asked for their state."""
    for callback in callbacks:
        callback.setup()
        callback.on_step_begin(iteration=1, trials=trials)
        callback.get_state()


def test_a_local_runs_saves_drop_finished_trials_empty_staging_folders(tmp_path):
    """Tune copies its staging folder to a local run folder on every save too (search.state_upload)."""
    from search.tuning import run_callbacks

    folders = {status: tmp_path / "staging" / status for status in ("TERMINATED", "RUNNING")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    _save_through(run_callbacks(RunFolder.at(tmp_path / "runs" / "r")),
                  [SimpleNamespace(trial_id=status, status=status, local_path=str(f)) for status, f in folders.items()])
    assert not folders["TERMINATED"].exists() and folders["RUNNING"].is_dir()


def test_tunes_state_uploads_carry_the_driver_files_first_and_no_finished_trials_empty_folders(bucket, tmp_path):
    """A save (get_state, in Tune's save) leaves Tune's driver staging folder without a finished
    trial's empty folder (Tune uploads it whole, a request per folder); Tune's upload of it, in its
    own thread, first uploads the driver's files."""
    from ray.train._internal.storage import StorageContext

    from search import private_api
    from search.state_upload import upload_state
    from search.tuning import run_callbacks

    run = RunFolder.at(f"{bucket.uri}/runs/r")
    run.path.mkdir(parents=True)
    (run.path / "asha_state.jsonl").write_text("{}\n")
    staging = tmp_path / "staging"
    folders = {name: staging / name for name in ("done", "running", "failed")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["failed"] / "error.txt").write_text("Failure # 1")
    (staging / "experiment_state.json").write_text("{}")
    trials = [SimpleNamespace(trial_id=name, status=status, local_path=str(folders[name]))
              for name, status in (("done", "TERMINATED"), ("running", "RUNNING"), ("failed", "ERROR"))]
    private_api.upload_states_through(upload_state)  # as search.tuning.configure_tune sets it
    _save_through(run_callbacks(run), trials)
    assert not folders["done"].exists() and folders["running"].is_dir() and (folders["failed"] / "error.txt").exists()
    assert bucket.keys("runs/r") == []  # the driver does not wait for an upload

    # as new_tuner's RunConfig has Tune build it
    tune_storage = StorageContext(run.storage, run.name, storage_filesystem=run.filesystem)
    tune_storage.syncer.sync_up(str(staging), tune_storage.experiment_fs_path)
    tune_storage.syncer.wait()
    assert {"asha_state.jsonl", "experiment_state.json", "failed/error.txt"} <= set(bucket.keys("runs/r"))


@pytest.fixture(params=["s3", "gs"])
def any_bucket(request):
    """A bucket on each store the tests have a real endpoint for."""
    return request.getfixturevalue("bucket" if request.param == "s3" else "gcs_bucket")


@pytest.mark.slow
def test_a_search_and_final_stage_keep_every_record_in_the_bucket(any_bucket, tmp_path, monkeypatch):
    bucket = any_bucket
    from results.sample import main as sample
    from results.show import main as show
    from results.study import load_study

    work = tmp_path / "work"
    work.mkdir()
    runs = f"{bucket.uri}/runs"
    proc = run(command(tiny_space(tmp_path), make_tree(tmp_path / "tree", per_class=4), runs), 600, work, bucket.env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(work.iterdir()) == []  # nothing under the working folder

    keys = set(bucket.keys("runs/t"))
    assert {"space.yaml", "data.json", "feature_extractor.json", "asha_state.jsonl", "optuna.journal",
            "trials.parquet", "leaderboard.parquet"} <= keys
    trials = pd.read_parquet(f"{runs}/t/trials.parquet")  # as the README reads it
    assert len(trials) == 3 and set(trials["status"]) == {"TERMINATED"}
    for row in trials.itertuples():
        name = row.trial_dir.rsplit("/", 1)[1]
        assert row.trial_dir == f"{runs}/t/{name}"
        assert _epochs(bucket, f"runs/t/{name}/metrics.jsonl")[-1] == row.epochs
        assert {f"{name}/checkpoint.pt", f"{name}/scores.jsonl"} <= keys
        assert any(k.startswith(f"{name}/events.out.tfevents.") for k in keys)
    board = pd.read_parquet(f"{runs}/t/leaderboard.parquet")
    assert len(board) == 2 and board["checkpoint"].str.startswith(f"{runs}/t/final/").all()
    assert board["checkpoint"][0][len(f"{runs}/t/"):] in keys

    # Read from another machine: an empty scratch folder.
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "elsewhere"))
    assert len(load_study(f"{runs}/t").trials) == 3
    assert show([f"{runs}/t"]) == 0 and "report/report.md" in bucket.keys("runs/t")
    assert show([f"{runs}/t", "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "per_class.png").stat().st_size > 0
    assert sample([f"{runs}/t", "--n", "2", "--out", str(tmp_path / "drawn.png")]) == 0

    # The README's first command for optuna-dashboard: copy the journal down (the second opens it).
    [copy] = [line for line in (ROOT / "README.md").read_text().splitlines() if "fs.copy_files(" in line]
    copied = run(["bash", "-c", copy.replace("s3://bucket/runs/cnn", f"{runs}/t")], 600, tmp_path, bucket.env)
    assert copied.returncode == 0, copied.stderr
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "cnn.journal")))
    assert [s.study_name for s in storage.get_all_studies()] == ["t"]

    for secret in bucket.secrets:  # no credential in a log, the bucket or any scratch folder
        assert secret not in proc.stdout + proc.stderr
        assert not [k for k in bucket.keys() if secret.encode() in bucket.read(k)]
        assert files_holding(tmp_path, secret) == []


def _cnn_space(tmp_path):
    """Two trials of 8 epochs, one at a time, and a final stage of 40: room to kill mid-training."""
    space = tiny_space(tmp_path, num_samples=2, asha={"max_t": 8, "grace_period": 8, "reduction_factor": 2})
    raw = yaml.safe_load(space.read_text())
    raw["space"] = {"family": "cnn", "conv": {"layers": 2, "channels": 16, "kernel_size": 4, "stride": 2,
                    "padding": 1}, "h": 64, "latent": 8, "lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": 20}
    raw["final"].update(max_epochs=40, patience=40)
    space.write_text(yaml.safe_dump(raw))
    return space


def _finalist_epochs(bucket) -> tuple[str, list[int]]:
    """A finalist's metrics.jsonl in the bucket and its epochs, once its checkpoint is there too."""
    keys = bucket.keys("runs/t")
    metrics = next((k for k in keys if k.startswith("final/") and k.endswith("metrics.jsonl")), None)
    if metrics is None or metrics.replace("metrics.jsonl", "checkpoint.pt") not in keys:
        return "", []
    return f"runs/t/{metrics}", _epochs(bucket, f"runs/t/{metrics}")


def _running_trial(bucket) -> tuple[str, list[int]] | None:
    """The trial that is running after one has finished, once the bucket holds 2 of its epochs and
    Tune's state there knows it. (A kill before that save resumes as before the trial started, a
    new trial in its place: search.schedulers.SavesOnEvents.)"""
    folders = {k.split("/")[2] for k in bucket.keys() if k.startswith("runs/t/cnn_") and k.endswith("metrics.jsonl")}
    ended = {f for f in folders if json.loads(bucket.read(f"runs/t/{f}/metrics.jsonl").splitlines()[-1])["stop"]}
    running = [(f, _epochs(bucket, f"runs/t/{f}/metrics.jsonl")) for f in folders - ended]
    if ended and running and len(running[0][1]) >= 2 and f"{running[0][0]}/checkpoint.pt" in bucket.keys("runs/t"):
        trial_id = running[0][0].split("_", 1)[1]
        states = [k for k in bucket.keys("runs/t") if k.startswith("experiment_state-")]
        if any(trial_id.encode() in bucket.read(f"runs/t/{k}") for k in states):
            return running[0]
    return None


def _settled(bucket, quiet: float = 2.0, timeout: float = 60.0) -> None:
    """Once no object under runs/t has changed for `quiet` seconds: the server may still be storing
    an upload it received whole before the kill. (CI once read a trial's records before their last
    upload landed and its checkpoint after, so the resumed trial looked as if it went back an epoch.)"""
    def snapshot() -> dict[str, bytes]:
        return {k: bucket.read(f"runs/t/{k}") for k in bucket.keys("runs/t")}

    t0, last = time.monotonic(), snapshot()
    while time.monotonic() - t0 < timeout:
        time.sleep(quiet)
        now = snapshot()
        if now == last:
            return
        last = now
    raise AssertionError(f"the bucket still changed {timeout:.0f} s after the kill")


@pytest.mark.slow
def test_killed_runs_resume_from_the_bucket_on_another_machine(bucket, tmp_path):
    """SIGKILL mid-trial, then the same command with an empty scratch folder (another machine):
    the finished trial is untouched and the killed one goes on from its checkpoint. Then SIGKILL in
    the final stage, and search.final from a third scratch folder: the finalist goes on too."""
    import torch

    work, runs = tmp_path / "work", f"{bucket.uri}/runs"
    work.mkdir()
    cmd = command(_cnn_space(tmp_path), make_tree(tmp_path / "tree", per_class=40), runs)
    # Tune's own timer saves every second: SavesOnEvents's budget counts the upload of the search's
    # last save (0.45 s to moto on a loaded host) and so put off saving the second trial's start
    # past its end, and the kill point never came (what this test checks is the resume, not when).
    saves = {"TUNE_GLOBAL_CHECKPOINT_S": "1"}
    scratch = {name: {**bucket.env, **saves, "CVAE_SCRATCH": str(tmp_path / name)} for name in ("a", "b", "c")}

    proc = start(cmd, work, scratch["a"])
    wait_for(lambda: _running_trial(bucket) is not None, proc, timeout=300)
    kill(proc)
    _settled(bucket)
    killed, epochs_before = _running_trial(bucket)
    records_before = bucket.read(f"runs/t/{killed}/metrics.jsonl").decode().splitlines()
    finished = {k: bucket.read(k) for k in bucket.keys() if k.startswith("runs/t/cnn_") and killed not in k}
    with open(tmp_path / "ckpt.pt", "wb") as f:
        f.write(bucket.read(f"runs/t/{killed}/checkpoint.pt"))
    resumed_from = torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"]

    proc = start(cmd, work, scratch["b"])  # interrupted again once a finalist has checkpointed twice
    wait_for(lambda: len(_finalist_epochs(bucket)[1]) >= 2, proc, timeout=300,
             what="a finalist's second epoch in the bucket")
    kill(proc)
    _settled(bucket)
    assert {k: bucket.read(k) for k in finished} == finished  # the finished trial, untouched
    records = bucket.read(f"runs/t/{killed}/metrics.jsonl").decode().splitlines()
    # the first attempt's records up to its checkpoint kept (each epoch's time is its own), the
    # epochs it ran past the checkpoint trained again from there, not from epoch 1
    assert records[:resumed_from] == records_before[:resumed_from] and len(epochs_before) >= resumed_from
    assert _epochs(bucket, f"runs/t/{killed}/metrics.jsonl") == list(range(1, 9))
    final_key, _ = _finalist_epochs(bucket)
    final_before = bucket.read(final_key).decode().splitlines()
    with open(tmp_path / "final-ckpt.pt", "wb") as f:
        f.write(bucket.read(final_key.replace("metrics.jsonl", "checkpoint.pt")))
    final_from = torch.load(tmp_path / "final-ckpt.pt", weights_only=True)["epoch"]

    done = run(final_command(f"{runs}/t", tmp_path / "tree"), 600, work, scratch["c"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    final_records = bucket.read(final_key).decode().splitlines()  # went on from its checkpoint
    assert final_from >= 1 and final_records[:final_from] == final_before[:final_from]
    assert _epochs(bucket, final_key)[0] == 1 and _epochs(bucket, final_key).count(1) == 1
    assert len(pd.read_parquet(f"{runs}/t/leaderboard.parquet")) == 2
    assert list(work.iterdir()) == [], output(proc)[-2000:]


@pytest.mark.parametrize("uri, problem", [
    ("foo://x/runs", "--storage foo://x/runs: unknown scheme foo:// (give a folder, or a URI such as "
                     "s3://bucket/prefix, gs://bucket/prefix, file:///path)"),
    ("s3://no-such-bucket/runs", "--storage s3://no-such-bucket/runs: the bucket no-such-bucket does not exist"),
    (f"s3://{ACCESS_KEY}:{SECRET_KEY}@BUCKET/runs", "--storage s3://BUCKET/runs: holds credentials; give them in "
                                                    "the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never "
                                                    "in the URI"),
    ("s3://BUCKET/runs?endpoint_override=x", "--storage s3://BUCKET/runs?endpoint_override=x: takes no options"),
    ("s3://BUCKET/notes", "s3://BUCKET/notes/t: holds files and is not a search run; nothing was deleted; pass "
                          "another --name or --storage"),
    ("s3://BUCKET/runs DEAD", "--storage s3://BUCKET/runs: the endpoint does not answer (http://127.0.0.1:PORT)"),
    ("s3://BUCKET/notes#2", "--storage s3://BUCKET/notes#2: '#' would end its path there"),
    # the mirror would be SCRATCH/s3/BUCKET/../../../notes/t: outside SCRATCH, and cleared when the bucket is empty
    ("s3://BUCKET/../../../notes", "--storage s3://BUCKET/../../../notes: '..' is not a folder in a bucket"),
    ("file://TMP/space.yaml/runs", "--storage file://TMP/space.yaml/runs: TMP/space.yaml is a file, not a folder"),
])
def test_a_storage_uri_no_run_can_live_at_is_one_line_before_anything_is_written(uri, problem, bucket, tmp_path,
                                                                                   tree, monkeypatch):
    bucket.write("notes/t/notes.txt", b"the user's own")
    if uri.endswith(" DEAD"):
        port = free_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        uri, problem = uri.removesuffix(" DEAD"), problem.replace("PORT", str(port))
    uri, problem = uri.replace("BUCKET", bucket.name), problem.replace("BUCKET", bucket.name)
    uri, problem = uri.replace("TMP", str(tmp_path)), problem.replace("TMP", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    proc = in_process(command(tiny_space(tmp_path), tree, uri))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith(f"error: {problem}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and SECRET_KEY not in proc.stderr + proc.stdout
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.env["AWS_ENDPOINT_URL"])
    assert bucket.keys() == ["notes/t/notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml", "tree"]  # no scratch, no runs/


def test_a_run_name_a_uri_would_cut_short_is_refused_and_the_run_it_would_reach_is_kept(bucket, tmp_path, tree,
                                                                                      monkeypatch):
    bucket.write("runs/t/space.yaml", b"name: t")  # a run t; in a URI, t#2 is t with a fragment
    monkeypatch.chdir(tmp_path)
    proc = in_process(command(tiny_space(tmp_path), tree, f"s3://{bucket.name}/runs", "--name", "t#2", "--fresh"))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: run name 't#2': a run at a URI (s3://{bucket.name}/runs) is named with letters, digits, '.', '_', "
        "'-' and '~' only; pass --name")
    assert bucket.keys() == ["runs/t/space.yaml"]

_NO_GOOGLE_CREDENTIALS = ("no credentials found: set GOOGLE_APPLICATION_CREDENTIALS, or gcloud auth "
                          "application-default login")
_GS_PROBLEMS = {
    "no bucket": "--storage gs://no-such-bucket/runs: the bucket no-such-bucket does not exist (at ENDPOINT)",
    "key file missing": f"--storage gs://BUCKET/runs: {_NO_GOOGLE_CREDENTIALS}",
    "no credentials": f"--storage gs://BUCKET/runs: {_NO_GOOGLE_CREDENTIALS}",
    "dead endpoint": "--storage gs://BUCKET/runs: the endpoint does not answer (ENDPOINT)",
}


@pytest.mark.parametrize("case", ["no bucket", "key file missing",  # the others wait out Google's client's retries
                                  pytest.param("no credentials", marks=pytest.mark.slow),
                                  pytest.param("dead endpoint", marks=pytest.mark.slow)])
def test_a_gs_uri_no_run_can_live_at_is_one_line_before_anything_is_written(case, gcs_bucket, tmp_path, tree,
                                                                              monkeypatch):
    uri = "gs://no-such-bucket/runs" if case == "no bucket" else f"{gcs_bucket.uri}/runs"
    endpoint = gcs_bucket.env["CLOUD_STORAGE_EMULATOR_ENDPOINT"]
    if case == "key file missing":
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    if case == "no credentials":  # nor gcloud's own file; Google's client then asks a metadata server
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
        monkeypatch.setenv("HOME", str(tmp_path))
    if case == "dead endpoint":
        endpoint = f"http://127.0.0.1:{free_port()}"
        monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", endpoint)
    problem = _GS_PROBLEMS[case].replace("BUCKET", gcs_bucket.name).replace("ENDPOINT", endpoint)
    monkeypatch.chdir(tmp_path)
    proc = in_process(command(tiny_space(tmp_path), tree, uri))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {problem}"], proc.stderr
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", gcs_bucket.env["CLOUD_STORAGE_EMULATOR_ENDPOINT"])
    assert gcs_bucket.keys() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml", "tree"]  # no scratch, no runs/


def test_the_readers_name_a_uri_no_run_can_live_at_in_one_line(bucket, capsys):
    from results.show import main as show
    from search.final import main as final

    assert final(["s3://no-such-bucket/runs/t"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: RUN_DIR s3://no-such-bucket/runs/t: the bucket no-such-bucket does not exist (at "
        f"{bucket.env['AWS_ENDPOINT_URL']})"]
    assert show([f"{bucket.uri}/runs/none"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {bucket.uri}/runs/none: no run folder there"]


@pytest.mark.slow
@pytest.mark.parametrize("credentials, problem", [
    ({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
     "access denied: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"),
    ({}, "no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (the endpoint "
         "answered: "),
])
def test_credentials_the_endpoint_refuses_or_none_are_one_line(credentials, problem, tmp_path, tree, monkeypatch):
    """An endpoint that checks credentials (moto's server with authentication on), given refused
    ones, or none anywhere AWS's chain looks (the environment, ~/.aws)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, timeout=30)
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true",
               "HOME": str(tmp_path / "home"), **credentials}
        proc = run(command(tiny_space(tmp_path), tree, "s3://some-bucket/runs"), 120, tmp_path, env)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --storage s3://some-bucket/runs: {problem}"), proc.stderr
    assert not list(tmp_path.glob("runs*")) and not (tmp_path / "home").exists()  # nothing written


def _ray_start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`ray start ... --block` as the `ray` script runs it, with `env` added (a node's own)."""
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus=1", "--block", *args],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_for_nodes(address: str, count: int, env: dict[str, str], timeout: float = 120.0) -> None:
    """Until `count` nodes are alive in the cluster at `address` and the scheduler sees each one's CPU
    free: a node registers some seconds after `ray start` returns, more on a loaded machine, and its
    resources reach the scheduler after that."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1]); "
             "print(min(sum(n['Alive'] for n in ray.nodes()), int(ray.available_resources().get('CPU', 0))))")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        out = subprocess.run([sys.executable, "-c", probe, address], env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=120)
        if out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    raise AssertionError(f"{count} nodes never alive at {address}")


@pytest.mark.slow
def test_two_nodes_that_share_no_folder_keep_every_record_in_the_bucket(bucket, tmp_path):
    """Two `ray start` nodes, each with its own temp, cache and scratch folder, and a driver with
    a third: trials run on both, and every trial's records are in the bucket."""
    port = free_port()
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "c" * 32}  # as docs/clusters.md has every node set it
    nodes = {name: {**bucket.env, **token, "CVAE_SCRATCH": str(tmp_path / f"scratch-{name}"),
                    "CVAE_CACHE": str(tmp_path / f"cache-{name}")} for name in ("head", "worker", "driver")}
    temp = {name: tempfile.mkdtemp(prefix=f"ray{name[0]}", dir="/tmp") for name in ("head", "worker")}
    started = [_ray_start(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp['head']}"],
                          nodes["head"])]
    try:
        wait_for_port(port)
        started.append(_ray_start([f"--address=127.0.0.1:{port}", f"--temp-dir={temp['worker']}"], nodes["worker"]))
        _wait_for_nodes(f"127.0.0.1:{port}", 2, nodes["driver"])
        # Tune gives a pending trial to a finished trial's actor (reuse_actors) rather than wait for
        # its own to start: trials shorter than a new actor's start on a loaded host (about 10 s in
        # a CI run) all ran on the node whose actor started first.
        space = tiny_space(tmp_path, num_samples=4, max_concurrent=2,
                           asha={"max_t": 60, "grace_period": 60, "reduction_factor": 2})
        work = tmp_path / "work"
        work.mkdir()
        proc = run(command(space, make_tree(tmp_path / "tree", per_class=8), f"{bucket.uri}/runs", "--address",
                           f"127.0.0.1:{port}"), 600, work, nodes["driver"])
    finally:
        for node in reversed(started):
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(f"{bucket.uri}/runs/t/trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"} and trials["node_id"].nunique() == 2
    keys = set(bucket.keys("runs/t"))
    ran_on = {}
    for row in trials.itertuples():
        name = row.trial_dir.rsplit("/", 1)[1]
        assert {f"{name}/metrics.jsonl", f"{name}/scores.jsonl", f"{name}/checkpoint.pt"} <= keys
        assert _epochs(bucket, f"runs/t/{name}/metrics.jsonl")[-1] == row.epochs
        # Trained on one node, in that node's scratch folder alone.
        [ran_on[name]] = [node for node in ("head", "worker")
                          if any((tmp_path / f"scratch-{node}").rglob(f"{name}/checkpoint.pt"))]
    assert set(ran_on.values()) == {"head", "worker"}
    assert list(work.iterdir()) == []
