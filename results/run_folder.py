"""A search's run folder: every file in it named once, and the run-level records read and written here.

    RUN/.cvae-search-run              marks the folder a run, written first (--fresh deletes only a run)
    RUN/space.yaml                    the space file as run (compared on resume)
    RUN/data.json                     the data source and its shape (image size, channels, class names),
                                      so later commands need no --data (recorded_data)
    RUN/feature_extractor.json        the network each scoring stage resolved `auto` to, once
    RUN/asha_state.jsonl              ASHA's rung records, appended as they are made
    RUN/optuna.journal                the search's Optuna study (results.study), appended as it goes
    RUN/optuna_artifacts/             files attached to its trials: each one's last sample grid
    RUN/<trial>/                      a trial: a training folder (cvae_core.layout), scores.jsonl
                                      (its scores, appended), failure.json, TensorBoard events
    RUN/trials.parquet                one row per trial
    RUN/final/<trial>_s<seed>/        a finalist: a training folder + train.json, two_stage.pt (the
                                      two_stage sampler's fit), samples_<sampler>.png, rows/<sampler>.json
    RUN/leaderboard.parquet           one row per (trial, seed, sampler)
    RUN/report/                       what results.show writes

Tune writes its own experiment state beside these (experiment_state-*.json, searcher state).
A record a trial or the driver adds to again and again (an epoch, a score, a rung) is appended to
its file, never rewritten whole; a file that holds one state (a checkpoint, trials.parquet) is
replaced whole, atomically.

A run folder at a URI (s3://bucket/prefix/NAME, results.storage) is worked on in this node's
mirror of it: `path` is the mirror, and whoever writes there pushes, whoever reads what another
node wrote pulls. For a local run folder push and pull do nothing.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cvae_core.atomic import atomic_write_text, read_records
from cvae_core.cli import first_line
from cvae_core.config import CHANNELS, data_shape, describe_shape, image_size_problem
from cvae_core.layout import grids_after, read_metrics
from cvae_core.sources import DataError, absolute_source

from .names import AUTO, resolve_extractor
from .storage import Remote, StorageError, check_uri, is_uri

if TYPE_CHECKING:  # the run folder is read without torch (and pandas, until a table is read)
    import pandas as pd

    from cvae_core.data import ImageData

RUN_MARKER = ".cvae-search-run"  # what makes a folder a run (RunFolder.marker)
SPACE_FILE = "space.yaml"
FINAL_DIR = "final"  # RUN/final/<trial>_s<seed>/: the final stage's retrainings
ROWS_DIR = "rows"  # RUN/final/<trial>_s<seed>/rows/<sampler>.json: a finalist's scored rows
REPORT_FILE = "report.md"  # RUN/report/report.md, or in results.show's --out
LEADERBOARD_FILE = "leaderboard.parquet"
FAILURE_FILE = "failure.json"  # RUN/<trial>/failure.json
# Tune's own names for the files of its saved state, one of each per command that ran the search:
# its experiment state (JSON), which a restore reads first, and its searchers' states (pickles).
TUNE_EXPERIMENT_STATE = "experiment_state-*.json"
TUNE_SEARCHER_STATES = ("search_gen_state-*.json", "searcher-state-*.pkl", "basic-variant-state-*.json")


class RunFileError(ValueError):
    """A file of a run folder that does not read back (cut short, or not what its name says)."""


def read_table(path: Path) -> pd.DataFrame:
    """A run's Parquet table (trials.parquet, leaderboard.parquet); RunFileError for one that does not read back."""
    import pandas as pd

    if path.is_dir():  # pandas would read a folder as a dataset of its Parquet files: here, none, an empty table
        raise RunFileError(f"{path}: is a folder, not a table")
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid (cut short), OSError (damaged inside)
        raise RunFileError(f"{path}: does not read back as a table ({type(e).__name__}: {first_line(e)})") from None


def trial_name(config: dict, trial_id: str) -> str:
    """A trial's folder name (RUN/<trial>), short and readable: cnn_1a2b3c4d, cnn-arch3-M3_5e6f7a8b."""
    kind = config.get("preset") or config.get("family", "trial")
    return f"{kind}_{trial_id}"


@dataclass(frozen=True)
class DataRecord:
    """RUN/data.json: the data a run started with, and the shape its models are built for."""

    source: str
    image_size: int
    channels: int  # 1 grayscale, 3 RGB
    classes: tuple[str, ...]  # the class names, in label order

    @property
    def shape(self) -> dict[str, int]:
        """As ImageData.shape: what a model is built for (image size, channels, number of classes)."""
        return data_shape(self.image_size, self.channels, len(self.classes))


@dataclass(frozen=True)
class Finalist:
    """RUN/final/<trial>_s<seed>/: one retraining of a finalist, and its scored rows."""

    path: Path

    @property
    def summary(self) -> Path:  # written once training is done
        return self.path / "train.json"

    @property
    def two_stage(self) -> Path:  # the two_stage sampler's second VAE, fitted once (results.two_stage)
        return self.path / "two_stage.pt"

    def row(self, sampler: str) -> Path:
        return self.path / ROWS_DIR / f"{sampler}.json"

    def sample_grid(self, sampler: str) -> Path:
        return self.path / f"samples_{sampler}.png"


@dataclass(frozen=True)
class RunFolder:
    path: Path  # where this node reads and writes it: the run folder, or its mirror
    remote: Remote | None = None  # where it lives, when at a URI

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path).resolve())

    @classmethod
    def at(cls, location: str | Path, reader: bool = False) -> RunFolder:
        """The run folder at a path or a URI (then `path` is this node's mirror of it; `reader`: the
        mirror of the commands that only read it)."""
        if is_uri(location):
            remote = Remote(str(location), reader)
            return cls(remote.scratch, remote)
        return cls(Path(location).expanduser())

    @property
    def location(self) -> str:
        """Where the run lives, the same on every node: its URI, or its folder."""
        return self.remote.uri if self.remote else str(self.path)

    @property
    def storage(self) -> str:
        """Where the run lives, less its name, as Tune's storage_path: the parent folder, or the
        prefix's path in `filesystem`."""
        return self.remote.fs_path.rsplit("/", 1)[0] if self.remote else str(self.path.parent)

    @property
    def filesystem(self):
        """Tune's storage_filesystem: for a run at a URI, the pyarrow filesystem its own files go
        through (results.storage), so that Tune's uploads take the same options; else None."""
        return self.remote.filesystem if self.remote else None

    @property
    def tune_path(self) -> str:
        """The run's folder as Tune reads it back (Tuner.restore, ExperimentAnalysis), with `filesystem`."""
        return self.remote.fs_path if self.remote else str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def address(self, path: Path) -> str:
        """Where a file of the run lives, as records name it: its path, or its URI."""
        return f"{self.location}/{path.relative_to(self.path).as_posix()}" if self.remote else str(path)

    def pull(self, local: Path | None = None, recursive: bool = True, keep=lambda path: True) -> None:
        """Bring the files under `local` (default: the whole run) from the bucket to this node."""
        if self.remote:
            self.remote.pull(local, recursive, keep)

    def fetch(self, path: Path, to: Path) -> bool:
        """The bucket's copy of the run's file `path` into `to`, this node's own left alone; False
        for a run in a folder, or a file the bucket lacks."""
        return bool(self.remote) and self.remote.fetch(path, to)

    def push(self, local: Path | None = None, recursive: bool = True) -> None:
        """Upload the files under `local` that changed here (default: the whole run)."""
        if self.remote:
            self.remote.push(local, recursive)

    def remove(self, path: Path) -> None:
        """Delete a file of the run, here and in the bucket."""
        path.unlink(missing_ok=True)
        if self.remote:
            self.remote.remove(path)

    @property
    def space_file(self) -> Path:
        return self.path / SPACE_FILE

    @property
    def asha_state(self) -> Path:
        return self.path / "asha_state.jsonl"

    @property
    def study_journal(self) -> Path:
        return self.path / "optuna.journal"

    @property
    def study_artifacts(self) -> Path:
        return self.path / "optuna_artifacts"

    @property
    def trials_table(self) -> Path:
        return self.path / "trials.parquet"

    @property
    def leaderboard(self) -> Path:
        return self.path / LEADERBOARD_FILE

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    def has_tune_state(self) -> bool:
        """Whether Tune saved its experiment state here (its own file name)."""
        return any(self.path.glob(TUNE_EXPERIMENT_STATE))

    def unreadable_tune_state(self) -> str | None:
        """The newest file of each kind of Tune's saved state that does not read back whole (what
        a restore would read; a write cut short by a kill), with why, or None. Tune's restore,
        failing to read one, would start the search over with one trial."""
        for pattern in (TUNE_EXPERIMENT_STATE, *TUNE_SEARCHER_STATES):
            newest = max(self.path.glob(pattern), default=None)  # Tune reads the latest name
            if newest is not None and (problem := tune_state_problem(newest)):
                return f"{self.address(newest)}: {problem}"
        return None

    @property
    def marker(self) -> Path:
        """The file that makes a folder a run, written before anything else in it (a folder of the
        user's may well hold a space.yaml): --fresh deletes a run, never a folder of the user's."""
        return self.path / RUN_MARKER

    def mark(self) -> None:
        """Mark the folder a run, here and in the bucket, before anything else is written; the
        marker names this run apart from any other made at its place before or after it."""
        atomic_write_text(self.marker, "a cvae-search run folder: python -m search.run --fresh may delete it\n"
                                       f"run {secrets.token_hex(8)}\n")
        self.push(self.marker)

    def forget_another_run(self) -> None:
        """A run at a URI: forget this node's mirror of it where the bucket holds another run than
        the mirror (deleted and made anew since, maybe on another node: search.run --fresh; the
        markers differ), or none while the mirror holds one, so that no old file reads as the run's
        or is pushed into it. Called by a command that opens the run (search.run, search.final, a
        reader, in its own mirror) before it pulls, when no trial of the run can be writing in that
        mirror; the trials' and the driver's pushed work is in the bucket (what a killed trial had not
        pushed is lost, as on a resume on another node), and a mirror is this program's scratch. A
        mirror without a marker, filled by a trial (one pulls its own folder only) or for a run an
        earlier version started, cannot show which run it is of, and is forgotten too."""
        if not self.remote or not self.path.is_dir() or self._holds_buckets_marker():
            return  # the same run (one request: the common case)
        names = {Path(info.path).name for info in self.remote.listing(recursive=False, folders=True)}
        if not (self.holds_run(names) or self.is_run()):
            return  # no run in the bucket, nor in the mirror (a mistyped URI: a prefix of runs)
        try:
            shutil.rmtree(self.path)
        except OSError as e:  # a trial of the previous search, not yet ended, writing here
            raise StorageError(f"{self.path}: this node's copy of {self.location} holds another run's files and "
                               f"could not be cleared ({e.strerror}); try again once its trials have ended") from None

    def _holds_buckets_marker(self) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            there = Path(tmp) / RUN_MARKER
            return (self.marker.exists() and self.fetch(self.marker, there)
                    and there.read_bytes() == self.marker.read_bytes())

    @property
    def _deleted_last(self) -> tuple[Path, ...]:
        """What a delete takes last, in this order, the marker at the very end: a kill part way
        leaves a folder still known as a run, which --fresh deletes again."""
        return self.space_file, self._data_file, self.marker

    def is_run(self) -> bool:
        """Whether the folder holds a run (so --fresh may delete it): its marker, or for a run an
        earlier version started, its space file and data record."""
        return self.marker.exists() or (self.space_file.exists() and self._data_file.exists())

    def holds_run(self, names: set[str]) -> bool:
        """is_run, for the names of the files a bucket holds at the run's top."""
        return self.marker.name in names or {self.space_file.name, self._data_file.name} <= names

    def delete(self) -> None:
        """Delete the run, here and in the bucket (_deleted_last last)."""
        if self.path.is_dir():
            for path in self.path.iterdir():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path not in self._deleted_last:
                    path.unlink()
        if self.remote:
            self.remote.delete(last=self._deleted_last)
        if self.path.is_dir():
            for path in self._deleted_last:
                path.unlink(missing_ok=True)
            self.path.rmdir()

    def trial(self, name: str) -> Path:
        return self.path / name

    def failure_file(self, trial_name: str) -> Path:
        return self.trial(trial_name) / FAILURE_FILE

    def read_failure(self, trial_name: str) -> dict | None:
        """A failed trial's record (kind, reason, and the epoch of a divergence), or None."""
        path = self.failure_file(trial_name)
        return json.loads(path.read_text()) if path.exists() else None

    def scores_file(self, trial_name: str) -> Path:
        return self.trial(trial_name) / "scores.jsonl"

    def scores(self, trial_name: str, objective: str) -> dict[int, float]:
        """A trial's scores by the epoch they were computed at (a resumed trial's last word on each,
        an attempt's scores after the checkpoint the next one started from forgotten): its
        scores.jsonl, or for a trial ranked by val_loss, which scores no samples, its best
        validation loss at every epoch (what it reported, search.trainable)."""
        if objective == "val_loss":
            return {r["epoch"]: r["best_val_loss"] for r in read_metrics(self.trial(trial_name))}
        return {r["score_epoch"]: r["score"] for r in read_records(self.scores_file(trial_name))}

    def forget_grids_after(self, folder: Path, epoch: int) -> None:
        """The grids a killed attempt drew after `epoch`, where the next attempt starts, deleted here
        and in the bucket: train() forgets them locally, and a bucket keeps every file it was given."""
        for grid in grids_after(folder, epoch):
            self.remove(grid)

    def finalist(self, trial_name: str, seed: int) -> Finalist:
        return Finalist(self.path / FINAL_DIR / f"{trial_name}_s{seed}")

    def finalist_file(self, recorded: str) -> Path:
        """A finalist's file as a leaderboard row recorded it (checkpoint, sample_grid), in this run
        folder wherever it is now: the row holds the path it was written at, which a run folder
        moved or copied elsewhere (another disk, another machine) no longer has."""
        parts = Path(recorded).parts
        below = [i for i, part in enumerate(parts[:-2]) if part == FINAL_DIR]
        return self.path.joinpath(*parts[below[-1]:]) if below else Path(recorded)

    def row_files(self) -> list[Path]:
        return sorted(self.path.glob(f"{FINAL_DIR}/*/{ROWS_DIR}/*.json"))

    # ------------------------------------------------------------------ run-level records

    @property
    def _data_file(self) -> Path:
        return self.path / "data.json"

    @property
    def _extractor_file(self) -> Path:
        return self.path / "feature_extractor.json"

    def _read_data_file(self) -> dict | None:
        """RUN/data.json as record_data wrote it, or an earlier version (the source alone); None
        before a record. Checked whole here, where every reader reads it, so that a damaged one is
        one RunFileError before any data is loaded."""
        path = self._data_file
        if not path.exists():
            return None
        if path.is_dir():
            raise RunFileError(f"{path}: is a folder, not a data record")
        try:
            record = json.loads(path.read_text())
        except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise RunFileError(f"{path}: does not read back ({e})") from None
        if not isinstance(record, dict) or not isinstance(record.get("source"), str):
            raise RunFileError(f"{path}: holds no data source")
        if problem := _shape_problem(record):
            raise RunFileError(f"{path}: {problem}")
        return record

    def check_tables(self) -> None:
        """RunFileError for a table of the run that does not read back, before a command that reads
        it spends anything."""
        for table in (self.trials_table, self.leaderboard):
            if table.exists():
                read_table(table)

    def record_data(self, source: str, data: ImageData) -> None:
        """Record the data the run starts with and its shape, once: a resumed run
        keeps the first record, and gains the shape if an earlier version recorded the source alone."""
        if self.recorded_data() is None:
            record = DataRecord(source, data.image_size, data.channels, tuple(data.classes))
            atomic_write_text(self._data_file, json.dumps(asdict(record)))

    def recorded_data(self) -> DataRecord | None:
        """The data the run started with and its shape; None before a record, or when an earlier
        version recorded the source alone (source() reads that)."""
        recorded = self._read_data_file()
        if recorded is None or "classes" not in recorded:
            return None
        return DataRecord(recorded["source"], recorded["image_size"], recorded["channels"],
                          tuple(recorded["classes"]))

    def check_data(self, data: ImageData) -> None:
        """Refuse to resume a run whose source now holds other images than it started with (its
        models are built for the recorded shape and classes)."""
        recorded = self.recorded_data()
        if recorded is not None and (recorded.shape, recorded.classes) != (data.shape, tuple(data.classes)):
            raise DataError(f"--data {data.source}: holds {describe_shape(data.shape)} now; this run started with "
                            f"{describe_shape(recorded.shape)} (classes {list(recorded.classes)}, in "
                            f"{self._data_file}): give --data the images it started with, or start a new run "
                            "(search.run --fresh or --name)")

    def check_source(self, source: str) -> None:
        """Refuse to resume a run on other data than it started with."""
        recorded = self._read_data_file()
        # absolute_source: a torchvision NAME:ROOT recorded before its ROOT was made absolute
        if recorded is not None and absolute_source(recorded["source"]) != source:
            raise DataError(f"--data {source}: this run started with {recorded['source']} (in {self._data_file}); "
                            "pass that, or --fresh to start over")

    def source(self, given: str | None = None) -> str:
        """--data when given, else the data the run recorded, else the default. The record is read
        either way: check_data compares the data with it once loaded, and a damaged one is met now."""
        recorded = self._read_data_file()
        if given is not None:
            return absolute_source(given)
        return recorded["source"] if recorded is not None else absolute_source(None)

    def extractor(self, stage: str, requested: str, inception_weights: str | None) -> str:
        """The feature extractor `stage` scores with: the one the run recorded, else `requested`
        resolved on this machine and recorded (scores of two networks do not compare, so a run
        keeps one). Raises ValueError for an explicit other one."""
        recorded = json.loads(self._extractor_file.read_text()) if self._extractor_file.exists() else {}
        if stage in recorded:
            if requested not in (AUTO, recorded[stage]):
                raise ValueError(f"{stage}.feature_extractor: {requested} differs from {recorded[stage]}, which "
                                 f"this run's {stage} scores were computed with (in {self._extractor_file}); "
                                 "scores of two networks do not compare")
            return recorded[stage]
        name = resolve_extractor(requested, inception_weights)
        atomic_write_text(self._extractor_file, json.dumps({**recorded, stage: name}))
        return name


def _shape_problem(record: dict) -> str | None:
    """Why a data record's shape (image_size, channels, classes) is not one record_data writes, or
    None; a record without any of them is an earlier version's, the source alone."""
    keys = ("image_size", "channels", "classes")
    if not any(key in record for key in keys):
        return None
    if missing := [key for key in keys if key not in record]:
        return f"holds no {missing[0]}"
    if type(record["image_size"]) is not int:  # type(): a bool is an int
        return "image_size: must be a whole number of pixels"
    if problem := image_size_problem(record["image_size"]):
        return f"image_size: {problem}"
    if type(record["channels"]) is not int or record["channels"] not in CHANNELS:
        return f"channels: must be one of {list(CHANNELS)}"
    classes = record["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(name, str) for name in classes):
        return "classes: must be a list of at least 2 names"  # as a model's num_classes
    return None


def tune_state_problem(path: Path) -> str | None:
    """Why a file of Tune's saved state does not read back whole (a write cut short), or None: its
    experiment state is JSON, its searchers' states are pickles (read, never unpickled)."""
    import pickletools

    data = path.read_bytes()
    try:
        if fnmatch.fnmatch(path.name, TUNE_EXPERIMENT_STATE):
            json.loads(data)
        else:
            for _ in pickletools.genops(data):  # each opcode and its argument, up to the pickle's end
                pass
    except ValueError as e:  # JSONDecodeError is one
        return f"Tune's saved state does not read back whole ({len(data)} bytes: {e})"
    return None


def open_run(location: str | Path, reader: bool = True) -> RunFolder:
    """A run folder to read (`reader`: a URI's in the readers' own mirror) or go on with (search.final),
    at a path or a URI (its own files, not its trials' or finalists', are pulled into this node's
    mirror, a mirror of another run forgotten first). Raises StorageError for a URI no run can be at."""
    if not is_uri(location):
        return RunFolder.at(location)
    check_uri(str(location), "RUN_DIR")
    run = RunFolder.at(location, reader)
    run.forget_another_run()
    run.pull(run.path, recursive=False)
    return run
