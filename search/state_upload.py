"""Tune's experiment state reaches the run folder whole, the file a restore starts from last.

Tune saves its experiment state into a staging folder on the driver and uploads that folder to the
run folder in a background thread. Its upload writes each file in place, so a kill during one (the
first save comes as a search starts) left experiment_state-*.json cut short, and Tune's restore,
failing to read it, started the search over with one trial (Tuner.restore passes it no
num_samples). Here each file lands whole: on a file system every one is written beside its place
and then all are renamed into place together (cvae_core.atomic); in object storage an upload is
whole by itself. And the experiment state, which a restore reads first, lands after the searcher's
state that goes with it. (In object storage a kill during the experiment state's own upload leaves
the searcher's state one save ahead of it; on a file system only one between two renames does.)
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from cvae_core.atomic import atomic_write_all
from results.run_folder import TUNE_EXPERIMENT_STATE


def upload_state(upload, local_path: str, fs, fs_path: str, exclude: list[str] | None = None) -> None:
    """Upload Tune's staging folder `local_path` to `fs_path` on `fs`, the arguments of Tune's own
    `upload` (ray.train._internal.storage._upload_to_fs_path), each file whole and the experiment
    state last. To object storage Tune's upload does it; to a local disk it would write each file in
    place, so the copy is made here."""
    import pyarrow.fs

    exclude = list(exclude or [])
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        _copy_whole(Path(local_path), Path(fs_path), exclude)
        return
    upload(local_path=local_path, fs=fs, fs_path=fs_path, exclude=[*exclude, TUNE_EXPERIMENT_STATE])
    for state in sorted(Path(local_path).glob(TUNE_EXPERIMENT_STATE)):
        upload(local_path=str(state), fs=fs, fs_path=f"{fs_path}/{state.name}")


def _copy_whole(source: Path, target: Path, exclude: list[str]) -> None:
    """Copy the folder `source` into `target`: every file written beside its place, then all renamed
    into place, the experiment state last (cvae_core.atomic.atomic_write_all), leaving out each path
    `exclude` matches as Tune does (fnmatch on the path relative to `source`, a folder's also with a
    trailing slash)."""
    def excluded(path: Path) -> bool:
        relative = path.relative_to(source).as_posix()
        candidates = [relative, relative + "/"] if path.is_dir() else [relative]
        return any(fnmatch.fnmatch(c, pattern) for c in candidates for pattern in exclude)

    paths = sorted((p for p in source.rglob("*") if not excluded(p)), key=lambda p: len(p.parts))
    for folder in (p for p in paths if p.is_dir()):
        (target / folder.relative_to(source)).mkdir(parents=True, exist_ok=True)
    last = [p for p in paths if p.is_file() and fnmatch.fnmatch(p.name, TUNE_EXPERIMENT_STATE)]
    atomic_write_all([(target / p.relative_to(source), lambda tmp, p=p: shutil.copyfile(p, tmp))
                      for p in [*(p for p in paths if p.is_file() and p not in last), *last]])
