"""Tune's experiment state reaches the run folder whole, the file a restore starts from last.

Tune saves its experiment state into a staging folder on the driver and uploads that folder to the
run folder in a background thread. Its upload writes each file in place, so a kill during one (the
first save comes as a search starts) left experiment_state-*.json cut short, and Tune's restore,
failing to read it, started the search over with one trial (Tuner.restore passes it no
num_samples). And Tune may write its next save into the staging folder while an upload reads it.

So each upload first copies the staging folder aside and checks that every file of Tune's state in
the copy reads back whole (results.run_folder.tune_state_problem), copying again while one does
not. From that copy each file lands whole: on a file system every one is written beside its place
and then all are renamed into place together (cvae_core.atomic); in object storage an upload is
whole by itself. The experiment state, which a restore reads first, lands after the searcher's
state that goes with it. A kill between two renames, or in object storage between two uploads,
can still leave the files from different saves; a resumed search reconciles them
(search.searcher.take_up_tunes_trials).
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
import time
from pathlib import Path

from cvae_core.atomic import atomic_write_all
from results.run_folder import TUNE_EXPERIMENT_STATE, TUNE_SEARCHER_STATES, tune_state_problem

COPIES = 5  # tries at a staging folder whose state does not read back whole (Tune writing into it)


def upload_state(upload, local_path: str, fs, fs_path: str, exclude: list[str] | None = None,
                 before=lambda: None) -> None:
    """Upload Tune's staging folder `local_path` to `fs_path` on `fs`, the arguments of Tune's own
    `upload` (ray.train._internal.storage._upload_to_fs_path), each file whole and the experiment
    state last; before() once the folder is copied aside, before its copy goes up (private_api.
    before_state_uploads). To object storage Tune's upload does it; to a local disk it would write
    each file in place, so the copy is made here."""
    import pyarrow.fs

    if exclude:  # Tune excludes nothing from its experiment state; anything else goes as Tune sends it
        before()
        upload(local_path=local_path, fs=fs, fs_path=fs_path, exclude=exclude)
        return
    with tempfile.TemporaryDirectory(prefix="tune-state-") as folder:
        snapshot = _whole_copy(Path(local_path), Path(folder) / "state")
        before()
        if isinstance(fs, pyarrow.fs.LocalFileSystem):
            _move_in(snapshot, Path(fs_path))
            return
        upload(local_path=str(snapshot), fs=fs, fs_path=fs_path, exclude=[TUNE_EXPERIMENT_STATE])
        for state in sorted(snapshot.glob(TUNE_EXPERIMENT_STATE)):
            upload(local_path=str(state), fs=fs, fs_path=f"{fs_path}/{state.name}")


def _whole_copy(source: Path, target: Path) -> Path:
    """`source` copied to `target`, copied again while a file of Tune's state in it does not read
    back whole, or a file or folder went during the copy (the driver removes a finished trial's
    empty folder as it saves: search.tuning.DropsFinishedTrialFolders); raises after COPIES tries."""
    for attempt in range(COPIES):
        shutil.rmtree(target, ignore_errors=True)
        try:
            shutil.copytree(source, target)
        except (shutil.Error, FileNotFoundError) as e:  # a file or folder went while it was copied
            problems = [("", str(e))]
        else:
            problems = [(state.name, p) for pattern in (TUNE_EXPERIMENT_STATE, *TUNE_SEARCHER_STATES)
                        for state in target.glob(pattern) if (p := tune_state_problem(state))]
        if not problems:
            return target
        time.sleep(0.05 * (attempt + 1))  # Tune is writing its next save into the folder
    name, problem = problems[0]
    raise RuntimeError(f"{source / name}: {problem}, in each of {COPIES} copies; the next save uploads it again")


def _move_in(source: Path, target: Path) -> None:
    """Copy the folder `source` into `target`: every file written beside its place, then all renamed
    into place, the experiment state last (cvae_core.atomic.atomic_write_all)."""
    paths = sorted(source.rglob("*"), key=lambda p: len(p.parts))
    for folder in (p for p in paths if p.is_dir()):
        (target / folder.relative_to(source)).mkdir(parents=True, exist_ok=True)
    last = [p for p in paths if p.is_file() and fnmatch.fnmatch(p.name, TUNE_EXPERIMENT_STATE)]
    atomic_write_all([(target / p.relative_to(source), lambda tmp, p=p: shutil.copyfile(p, tmp))
                      for p in [*(p for p in paths if p.is_file() and p not in last), *last]])
