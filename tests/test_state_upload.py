"""search.state_upload: Tune's experiment state, uploaded through Tune's own syncer as a search does,
lands whole and after the searcher's state, so that an upload a kill cuts short leaves a state to
resume from (a cut one made Tune's restore start the search over with one trial)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from results.run_folder import RunFolder
from search import private_api
from search.state_upload import upload_state

STATE = "experiment_state-2026-01-02_00-00-00.json"
SEARCHER = ("search_gen_state-2026-01-02_00-00-00.json", "searcher-state-2026-01-02_00-00-00.pkl")


def staging(root: Path, version: str) -> Path:
    """Tune's staging folder after a save: its experiment state, its searcher's state, and a failed
    trial's folder with its error file; each file's text names `version`."""
    (root / "trial_1").mkdir(parents=True)
    for name in (STATE, *SEARCHER, "trial_1/error.txt"):
        (root / name).write_text(f"{version} {name} " + "x" * 10_000)
    return root


def sync_up(local: Path, run: RunFolder) -> None:
    """Tune's upload of its staging folder to the run folder, as a search makes it."""
    from ray.train._internal.storage import StorageContext

    private_api.upload_states_through(upload_state)  # what search.tuning.configure_tune sets
    storage = StorageContext(run.storage, run.name, storage_filesystem=run.filesystem)
    storage.syncer.sync_up(str(local), storage.experiment_fs_path)
    storage.syncer.wait()


def files(run: RunFolder) -> dict[str, str]:
    """The run folder's files and their texts, but for the marker Tune leaves on checking a storage path."""
    return {path.relative_to(run.path).as_posix(): path.read_text() for path in run.path.rglob("*")
            if path.is_file() and path.name != ".validate_storage_marker"}


def test_an_upload_a_kill_cuts_short_leaves_every_file_whole_and_the_state_of_the_last_save(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "runs" / "r")
    sync_up(staging(tmp_path / "first", "first"), run)
    copied, copy = [], shutil.copyfile

    def killed_on_the_third_file(source, target):
        if len(copied) == 2:
            Path(target).write_text(Path(source).read_text()[:4096])  # half written when the kill comes
            raise OSError("killed")
        copied.append(Path(source).name)
        return copy(source, target)

    monkeypatch.setattr(shutil, "copyfile", killed_on_the_third_file)
    with pytest.raises(Exception, match="killed"):  # Tune's syncer hands on the upload's end
        sync_up(staging(tmp_path / "second", "second"), run)
    texts = files(run)
    assert set(texts) == {STATE, *SEARCHER, "trial_1/error.txt"}  # no file half written, none beside
    assert all(text.split()[1] == name and len(text) > 10_000 for name, text in texts.items())
    assert texts[STATE].startswith("first")  # the save cut short is not the one a restore starts from

    monkeypatch.setattr(shutil, "copyfile", copy)
    sync_up(tmp_path / "second", run)  # the next save lands whole
    assert {name: text.split()[0] for name, text in files(run).items()} == {
        name: "second" for name in (STATE, *SEARCHER, "trial_1/error.txt")}


def test_the_experiment_state_is_uploaded_after_the_searchers_state(tmp_path, monkeypatch):
    order, copy = [], shutil.copyfile

    def recorded(source, target):
        order.append(Path(source).name)
        return copy(source, target)

    monkeypatch.setattr(shutil, "copyfile", recorded)
    sync_up(staging(tmp_path / "staging", "one"), RunFolder(tmp_path / "runs" / "r"))
    assert sorted(order) == sorted([STATE, *SEARCHER, "error.txt"]) and order[-1] == STATE


def test_in_a_bucket_the_experiment_state_is_uploaded_after_the_searchers_state(bucket, tmp_path, monkeypatch):
    from ray.train._internal import storage

    def keys() -> set[str]:
        return set(bucket.keys("runs/r")) - {".validate_storage_marker"}

    uploads, upload = [], storage._upload_to_fs_path
    monkeypatch.setattr(storage, "_upload_to_fs_path", lambda **kw: (uploads.append(keys()), upload(**kw)))
    sync_up(staging(tmp_path / "staging", "one"), RunFolder.at(f"{bucket.uri}/runs/r"))
    assert uploads[-1] == {*SEARCHER, "trial_1/error.txt"}  # all there before the state's own upload
    assert keys() == {STATE, *SEARCHER, "trial_1/error.txt"}
    assert bucket.read(f"runs/r/{STATE}").decode().startswith("one")
