"""search.state_upload: Tune's experiment state, uploaded through Tune's own syncer as a search does,
lands whole and after the searcher's state, so that an upload a kill cuts short, or one that reads
a save Tune is still writing, leaves a state to resume from (a cut one made Tune's restore start the
search over with one trial)."""

from __future__ import annotations

import json
import pickle
import shutil
import threading
from pathlib import Path

import pytest

from results.run_folder import RunFolder
from search import private_api
from search.state_upload import upload_state

STATE = "experiment_state-2026-01-02_00-00-00.json"
SEARCHER = ("search_gen_state-2026-01-02_00-00-00.json", "searcher-state-2026-01-02_00-00-00.pkl")
ERROR = "trial_1/error.txt"


def contents(version: str) -> dict[str, bytes]:
    """A save's files as Tune writes them (its experiment state JSON, its searchers' states pickles,
    a failed trial's error file), each naming `version` and large enough to be written in parts."""
    filler = "x" * 10_000
    return {STATE: json.dumps({"version": version, "trial_data": [filler]}).encode(),
            **{name: pickle.dumps({"version": version, "state": filler}) for name in SEARCHER},
            ERROR: f"{version} {filler}".encode()}


def staging(root: Path, version: str) -> Path:
    """Tune's staging folder after a save."""
    (root / "trial_1").mkdir(parents=True)
    for name, data in contents(version).items():
        (root / name).write_bytes(data)
    return root


def sync_up(local: Path, run: RunFolder) -> None:
    """Tune's upload of its staging folder to the run folder, as a search makes it."""
    from ray.train._internal.storage import StorageContext

    private_api.upload_states_through(upload_state)  # what search.tuning.configure_tune sets
    storage = StorageContext(run.storage, run.name, storage_filesystem=run.filesystem)
    storage.syncer.sync_up(str(local), storage.experiment_fs_path)
    storage.syncer.wait()


def files(run: RunFolder) -> dict[str, bytes]:
    """The run folder's files, but for the marker Tune leaves on checking a storage path."""
    return {path.relative_to(run.path).as_posix(): path.read_bytes() for path in run.path.rglob("*")
            if path.is_file() and path.name != ".validate_storage_marker"}


def test_an_upload_a_kill_cuts_short_leaves_every_file_whole_and_the_state_of_the_last_save(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "runs" / "r")
    sync_up(staging(tmp_path / "first", "first"), run)
    written, copy = [], shutil.copyfile

    def killed_on_the_third_file_in_the_run_folder(source, target, **kwargs):
        if run.path in Path(target).parents:
            if len(written) == 2:
                Path(target).write_bytes(Path(source).read_bytes()[:4096])  # half written when the kill comes
                raise OSError("killed")
            written.append(target)
        return copy(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", killed_on_the_third_file_in_the_run_folder)
    with pytest.raises(OSError, match="^killed$"):
        sync_up(staging(tmp_path / "second", "second"), run)
    assert files(run) == contents("first")  # every file whole, none beside: the last save's, as it landed

    monkeypatch.setattr(shutil, "copyfile", copy)
    sync_up(tmp_path / "second", run)  # the next save lands whole
    assert files(run) == contents("second")


def test_the_experiment_state_is_written_into_the_run_folder_after_the_searchers_state(tmp_path, monkeypatch):
    run, order, copy = RunFolder(tmp_path / "runs" / "r"), [], shutil.copyfile

    def recorded(source, target, **kwargs):
        if run.path in Path(target).parents:
            order.append(Path(source).name)
        return copy(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", recorded)
    sync_up(staging(tmp_path / "staging", "one"), run)
    assert sorted(order) == sorted([STATE, *SEARCHER, "error.txt"]) and order[-1] == STATE


def test_a_save_tune_is_still_writing_is_uploaded_once_written(tmp_path):
    """Tune writes its next save into the staging folder while an upload may read it."""
    run = RunFolder(tmp_path / "runs" / "r")
    sync_up(staging(tmp_path / "first", "first"), run)
    local = staging(tmp_path / "second", "second")
    whole = (local / STATE).read_bytes()
    (local / STATE).write_bytes(whole[:4096])
    writer = threading.Timer(0.05, (local / STATE).write_bytes, [whole])  # the rest of Tune's write
    writer.start()
    sync_up(local, run)
    writer.join()
    assert files(run) == contents("second")


def test_a_file_that_goes_while_the_staging_folder_is_copied_is_copied_again(tmp_path, monkeypatch):
    """The driver removes a finished trial's empty staging folder as it saves (DropsFinishedTrialFolders)."""
    run, copy, gone = RunFolder(tmp_path / "runs" / "r"), shutil.copyfile, []

    def goes_once(source, target, **kwargs):
        if not gone:
            gone.append(source)
            raise FileNotFoundError(source)
        return copy(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", goes_once)
    sync_up(staging(tmp_path / "staging", "one"), run)
    assert gone and files(run) == contents("one")


def test_a_save_that_never_reads_back_is_not_uploaded(tmp_path):
    run = RunFolder(tmp_path / "runs" / "r")
    sync_up(staging(tmp_path / "first", "first"), run)
    local = staging(tmp_path / "second", "second")
    (local / SEARCHER[1]).write_bytes((local / SEARCHER[1]).read_bytes()[:4096])
    with pytest.raises(Exception, match=rf"{local / SEARCHER[1]}: Tune's saved state does not read back whole .*, "
                                        "in each of 5 copies"):
        sync_up(local, run)
    assert files(run) == contents("first")


def test_in_a_bucket_the_experiment_state_is_uploaded_after_the_searchers_state(bucket, tmp_path, monkeypatch):
    from ray.train._internal import storage

    def keys() -> set[str]:
        return set(bucket.keys("runs/r")) - {".validate_storage_marker"}

    uploads, upload = [], storage._upload_to_fs_path
    monkeypatch.setattr(storage, "_upload_to_fs_path", lambda **kw: (uploads.append(keys()), upload(**kw)))
    sync_up(staging(tmp_path / "staging", "one"), RunFolder.at(f"{bucket.uri}/runs/r"))
    assert uploads[-1] == {*SEARCHER, ERROR}  # all there before the state's own upload
    assert {key: bucket.read(f"runs/r/{key}") for key in keys()} == contents("one")


def test_the_runs_own_files_go_up_after_the_state_is_copied_aside_so_they_are_never_older(tmp_path):
    """Tune may write its next save while the run's journal and ASHA records upload: the state that
    lands is the one copied before them, never one naming trials and stops they lack."""
    from ray.train._internal.storage import StorageContext

    run = RunFolder(tmp_path / "runs" / "r")
    local = staging(tmp_path / "staging", "first")
    seen = []

    def push_the_runs_files():  # meanwhile Tune saves again
        seen.append((run.path / STATE).exists())
        for name, data in contents("second").items():
            (local / name).write_bytes(data)

    storage = StorageContext(run.storage, run.name)
    private_api.before_state_uploads(storage.experiment_fs_path, push_the_runs_files)
    sync_up(local, run)
    assert seen == [False] and files(run) == contents("first")
