"""Run a search: `python -m search.run --space spaces/cnn.yaml [--data PATH] [--storage DIR|URI] ...`.

The run folder STORAGE/NAME (results.run_folder; STORAGE a folder, or a URI such as
s3://bucket/prefix: results.storage) holds the space file as run, Tune's experiment
state, one folder per trial and trials.parquet, then the final stage's leaderboard. Running the
same command again resumes an interrupted search; --fresh starts over. Every input is checked
before anything is written; the command line and the space file before torch or Ray is imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path

import yaml

from cvae_core.atomic import atomic_write_text, is_temp
from cvae_core.cli import ArgumentParser, as_typed, local_path, path, show_logs, stop_on_sigterm
from cvae_core.config import batch_size_problem
from cvae_core.sources import TORCHVISION_NAMES, DataError, absolute_source, default_source
from results.run_folder import RunFileError, RunFolder
from results.storage import StorageError, check_uri, is_uri

from .cluster import ClusterError, check_address
from .distributions import IntRange
from .settings import (
    URI_NAME,
    RunFolderError,
    Spec,
    for_data,
    load_spec,
    parse_spec,
    run_name_problem,
    with_overrides,
    without_inception_weights,
)
from .validation import SpaceError


def _check_storage(storage: Path, run_path: Path) -> None:
    """The run folder can be made under `storage`, before anything starts."""
    if storage.exists():
        if not storage.is_dir():
            raise RunFolderError(f"--storage {storage}: is a file, not a folder")
        if not os.access(storage, os.W_OK | os.X_OK):
            raise RunFolderError(f"--storage {storage}: this user cannot write in it")
    else:
        ancestor = next(p for p in storage.parents if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise RunFolderError(f"--storage {storage}: cannot be created ({ancestor} is not a folder this user "
                                 "can write in)")
    if not run_path.exists():
        _try_to_make(run_path, storage)


def _try_to_make(folder: Path, storage: Path) -> None:
    """Make `folder` and remove again what was made: os.access passes folders no one can make
    anything in (/proc as root), and a refusal later on must leave nothing behind."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True)
    except OSError as e:
        raise RunFolderError(f"--storage {storage}: cannot create {e.filename or folder} ({e.strerror})") from None
    finally:
        for p in made:  # deepest first; rmdir removes only a folder still empty
            with contextlib.suppress(OSError):
                p.rmdir()


def _run_folder(storage: str, name: str) -> RunFolder:
    """The run folder STORAGE/NAME, checked to be one that can be made, before anything starts."""
    if not storage.strip():  # Path("") is the working folder
        raise RunFolderError("--storage: an empty path; name a folder (default: runs)")
    if is_uri(storage):
        check_uri(storage, "--storage")
        if not re.fullmatch(URI_NAME, name):  # '#', '?', ' ' would end the URI's path elsewhere: another run
            raise RunFolderError(f"run name {name!r}: a run at a URI ({storage}) is named with letters, digits, '.', "
                                 "'_', '-' and '~' only; pass --name")
        return RunFolder.at(f"{storage.rstrip('/')}/{name}")
    folder = Path(storage).expanduser().resolve()
    run = RunFolder(folder / name)
    _check_storage(folder, run.path)
    return run


def _check_remote_run(run: RunFolder) -> bool:
    """A run folder at a URI: whether it holds a run (then its own files are pulled into this
    node's mirror), or nothing (then a mirror left from a run deleted since is cleared)."""
    held = {name for info in run.remote.listing(recursive=False, folders=True)
            if not is_temp(name := Path(info.path).name)}  # a kill mid-upload's, on a file system
    if not held:
        shutil.rmtree(run.path, ignore_errors=True)  # the mirror is this program's scratch, not the user's
        return False
    if not run.holds_run(held):
        raise RunFolderError(f"{run.location}: holds files and is not a search run; nothing was deleted; pass "
                             "another --name or --storage")
    run.forget_another_run()
    run.pull(run.path, recursive=False)
    return True


def _space_problem(spec: Spec, run: RunFolder) -> str | None:
    """Why this space is not the one the run started with, or None: the same file, wherever its
    inception weights lie, and the same number of trials however it is given (file or flag)."""
    started, now = (without_inception_weights(raw) for raw in (yaml.safe_load(run.space_file.read_text()), spec.raw))
    if started == now:
        return None
    try:
        was = parse_spec(started, str(run.space_file), default_name=spec.name).search.num_samples
    except SpaceError:  # written by a version that read it otherwise
        was = None
    if was is not None and _without_num_samples(started) == _without_num_samples(now):
        if was == spec.search.num_samples:
            return None
        return (f"search.num_samples: this run started with {was} trials, not {spec.search.num_samples}; resume it "
                f"with {was} (in the space file or --num-samples), or pass --name for a new run")
    return (f"{spec.path}: differs from {run.location}/{run.space_file.name}, which this run started with; "
            "pass --fresh to start over or --name for a new run")


def _without_num_samples(raw: dict) -> dict:
    search = {k: v for k, v in (raw.get("search") or {}).items() if k != "num_samples"}
    return {**raw, "search": search}


def _check_run_folder(spec: Spec, run: RunFolder, fresh: bool, data: str | None) -> bool:
    """Check an existing run folder against this command (`data`: its --data), changing nothing;
    True if it holds a run to continue."""
    if run.remote and not _check_remote_run(run):
        return False
    if not run.path.exists():
        return False
    if not run.path.is_dir():
        raise RunFolderError(f"{run.path}: exists and is not a folder; pass another --name")
    if not any(run.path.iterdir()):
        return False
    if not run.is_run():
        # --fresh deletes a run folder, never a folder of the user's that happens to have the name
        raise RunFolderError(f"{run.path}: exists and is not a search run; nothing was deleted; pass another "
                             "--name or --storage")
    if fresh or not run.space_file.exists():  # a run whose start a kill cut short starts over
        return False
    if problem := _space_problem(spec, run):
        raise RunFolderError(problem)
    if data is not None:  # without it the run goes on with the data it recorded
        run.check_source(absolute_source(data))
    run.check_tables()  # a damaged one would be met only at the end, after the final stage's retraining
    if not spec.space.presets and run.has_tune_state() and not run.study_journal.exists():
        raise RunFolderError(f"{run.path}: started by an earlier version, which kept no {run.study_journal.name}; "
                             "its searcher cannot be continued: pass --fresh to start over or --name for a new run")
    if problem := run.unreadable_tune_state():
        raise RunFolderError(f"{problem}; the search cannot be resumed from it: nothing was changed; "
                             "pass --fresh to start over or --name for a new run")
    return True


def _check_batch_size(spec: Spec, n_train: int) -> None:
    sizes = spec.space.top["batch_size"]
    if problem := batch_size_problem(sizes.high if isinstance(sizes, IntRange) else max(sizes.values()), n_train):
        raise SpaceError(f"{spec.path}: space.batch_size: {problem}")


def _create_run_folder(spec: Spec, run: RunFolder, resuming: bool, source: str, data) -> None:
    if not resuming and run.is_run():  # --fresh, or a start cut short (_check_run_folder)
        run.delete()
    if not resuming:
        run.path.mkdir(parents=True, exist_ok=True)
        run.mark()
        atomic_write_text(run.space_file, yaml.safe_dump(spec.raw, sort_keys=False))
    run.record_data(source, data)
    run.push(run.path, recursive=False)


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    p.add_argument("--space", required=True, type=local_path, help="search space YAML (spaces/*.yaml)")
    p.add_argument("--data", type=path, default=None,
                   help=f"zip, image folder, or {'|'.join(TORCHVISION_NAMES)}[:ROOT] (default: what a run "
                        f"resumed recorded, else {default_source()})")
    p.add_argument("--storage", type=path, default="runs",
                   help="parent folder of run folders, or a URI such as s3://bucket/prefix (docs/clusters.md)")
    p.add_argument("--name", type=as_typed, default=None, help="run folder name (default: the space's name)")
    p.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or HOST:PORT)")
    p.add_argument("--fresh", action="store_true", help="delete an existing run folder and start over")
    p.add_argument("--inception-weights", type=path, default=None,
                   help="torch-fidelity's Inception weights file (pt_inception-2015-12-05), for FID and IS offline")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    show_logs()

    try:
        if args.name is not None and (problem := run_name_problem(args.name)):
            raise RunFolderError(f"--name: {problem}")
        check_address(args.address)
        spec = with_overrides(load_spec(args.space, args.inception_weights), args.num_samples)
        run = _run_folder(args.storage, args.name or spec.name)
        resuming = _check_run_folder(spec, run, args.fresh, args.data)
        source = run.source(args.data) if resuming else absolute_source(args.data)

        from cvae_core.data import load_data, split  # the heavy part starts here

        from .cluster import check_capacity, connect

        data = load_data(source)
        _check_batch_size(spec, len(split(data, spec.search.train_on)[0]))
        spec = for_data(spec, data.shape)
        if resuming:
            run.check_data(data)
        res = spec.search.resources
        connect(args.address)
        check_capacity(res.cpu, res.gpu, f"{spec.path}: search.resources")
    except (SpaceError, RunFolderError, RunFileError, DataError, ClusterError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for notice in spec.notices:
        print(f"notice: {spec.path}: {notice}", file=sys.stderr)

    from .finalists import run_and_report
    from .tuning import prepare_objective, run_search
    from .workers import task_error

    stop_on_sigterm()
    try:
        objective = prepare_objective(run, spec, data, resuming)
    except KeyboardInterrupt:
        print("interrupted before the search started: run the same command to start it", file=sys.stderr)
        return 130
    except Exception as e:  # the extractor cannot load, the reference cannot be computed
        print(f"error: search.objective: {task_error(e)}", file=sys.stderr)
        return 2
    try:
        _create_run_folder(spec, run, resuming, source, data)
    except OSError as e:  # a file --fresh cannot delete, a full disk, a bucket that stopped answering
        print(f"error: {run.location}: could not be prepared ({e})", file=sys.stderr)
        return 2
    try:
        finished = run_search(spec, run, data, resuming, objective)
    except KeyboardInterrupt:  # before Tune took over Ctrl-C: nothing is lost
        finished = False
    if not finished:
        print(f"interrupted: run the same command to resume {run.location}")
        return 130
    return run_and_report(run, spec, data)


if __name__ == "__main__":
    sys.exit(main())
