"""RUN/leaderboard.parquet: one row per (trial, seed, sampler), sorted by FID.

A row is made by `make_row`, beside its schema, and kept as a JSON file in the finalist's folder
until the leaderboard is built from the row files, merged with the rows an earlier leaderboard
already holds (a row file wins over an older row with the same key), and written atomically.
The schema is fixed: see SCHEMA and docs/run-folder.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cvae_core.atomic import atomic_write
from cvae_core.config import TrialConfig, column_defaults, column_types

from .pareto import on_front
from .run_folder import RunFolder, read_table

NO_ROWS = "The leaderboard has no rows: no finalist has finished"  # every finalist failed

if TYPE_CHECKING:  # results.metrics imports torch; results.show reads the leaderboard without it
    from .metrics import Score

# A row's identity in its run's leaderboard. Not the run's name: that is the folder's, and a run
# folder renamed and scored again would keep its old rows beside the new ones.
KEY = ["trial_id", "seed", "sampler"]
# The columns the commands print (search.run, search.final, results.show).
SHOWN = ["trial_id", "seed", "sampler", "family", "params", "fid", "intra_fid", "class_accuracy", "precision", "recall"]

# The arrow type of each annotation a configuration field has (cvae_core.config.column_types).
ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "str": pa.string(),
    "str | None": pa.string(),
    "tuple[int, ...]": pa.list_(pa.int64()),
    "tuple[ConvLayer, ...]": pa.list_(pa.list_(pa.int64())),  # [out_channels, kernel, stride, padding] per layer
}


def config_schema() -> list[tuple[str, pa.DataType]]:
    """The configuration columns: every field of the trial's model and recipe (TrialConfig)."""
    columns = []
    for name, annotation in column_types().items():
        if annotation not in ARROW_TYPES:
            raise TypeError(f"configuration field {name}: {annotation} has no leaderboard column type in ARROW_TYPES")
        columns.append((name, ARROW_TYPES[annotation]))
    return columns


SCHEMA = pa.schema([
    ("run", pa.string()),
    ("trial_id", pa.string()),
    ("seed", pa.int64()),
    ("sampler", pa.string()),  # results.names.SAMPLERS
    ("search_objective", pa.string()),  # fid | kid | val_loss: what the search ranked the trial by
    ("search_score", pa.float64()),  # the trial's score in the search (a smaller sample: not this row's fid)
    ("fid", pa.float64()),
    ("pareto", pa.bool_()),  # on its sampler's front of (fid, params): no row of it smaller and better
    ("intra_fid", pa.float64()),  # mean of fid_per_class
    ("fid_per_class", pa.list_(pa.float64())),  # class order; each class's samples vs its real images
    ("class_accuracy", pa.float64()),  # mean of class_accuracy_per_class
    ("class_accuracy_per_class", pa.list_(pa.float64())),  # share of class-c samples the probe calls c
    ("classes", pa.list_(pa.string())),  # the class names, in the order of the per-class lists
    ("probe_accuracy_real", pa.float64()),  # the probe on real test images: the ceiling
    ("kid_mean", pa.float64()),
    ("kid_std", pa.float64()),
    ("precision", pa.float64()),
    ("recall", pa.float64()),
    ("is_mean", pa.float64()),  # null when the feature extractor has no logits
    ("is_std", pa.float64()),
    ("is_missing_reason", pa.string()),
    ("preset", pa.string()),
    *config_schema(),
    ("params", pa.int64()),
    ("epochs_trained", pa.int64()),
    ("best_epoch", pa.int64()),
    ("best_val_loss", pa.float64()),
    ("n_samples", pa.int64()),
    ("reference", pa.string()),
    ("feature_extractor", pa.string()),
    ("checkpoint", pa.string()),
    ("sample_grid", pa.string()),
    ("data_source", pa.string()),  # what regenerating the row's images needs: the data (for gmm),
    ("train_on", pa.string()),  # the images it was trained on,
    ("gmm_components", pa.int64()),  # and the gmm sampler's setting
    ("train_seconds", pa.float64()),
    ("score_seconds", pa.float64()),  # features and every measure of this row, generating excluded
    ("device", pa.string()),
    ("created_at", pa.timestamp("ms", tz="UTC")),  # Parquet has no seconds unit
])
DERIVED = ("pareto",)  # computed over the whole leaderboard when it is written, not kept in a row
FRONT = ["fid", "params"]  # quality against size: the trade-off `pareto` marks


def make_row(*, run: str, trial_id: str, seed: int, sampler: str, search_objective: str, search_score: float,
             preset: str | None, trial: TrialConfig, params: int, training: dict[str, Any], score: Score,
             classes: tuple[str, ...], checkpoint: str | Path, sample_grid: str | Path, data_source: str, train_on: str,
             gmm_components: int) -> dict[str, Any]:
    """One leaderboard row, as a JSON-able dict with exactly SCHEMA's columns. `training` holds
    epochs_trained, best_epoch, best_val_loss, train_seconds and device."""
    row = {
        "run": run, "trial_id": trial_id, "seed": seed, "sampler": sampler,
        "search_objective": search_objective, "search_score": search_score,
        "preset": preset, **trial.columns(), "params": params,
        **{k: training[k] for k in ("epochs_trained", "best_epoch", "best_val_loss", "train_seconds", "device")},
        **asdict(score), "classes": list(classes), "checkpoint": str(checkpoint), "sample_grid": str(sample_grid),
        "data_source": data_source, "train_on": train_on, "gmm_components": gmm_components,
        "created_at": time.time(),  # the schema keeps milliseconds: see read_rows
    }
    expected = set(SCHEMA.names) - set(DERIVED)
    if set(row) != expected:
        raise ValueError(f"a leaderboard row's columns differ from SCHEMA: {sorted(set(row) ^ expected)}")
    return row


def missing_columns(row: dict[str, Any]) -> list[str]:
    """The columns a row file lacks: it was written before they existed (IS may be null by design)."""
    optional = {"is_mean", "is_std", "is_missing_reason", "preset", *DERIVED, *column_defaults()}
    return [c for c in SCHEMA.names if c not in optional and row.get(c) is None]


def read_rows(run_dir: str | Path) -> pd.DataFrame:
    # A row written before a configuration field existed reads its default (before models took the
    # data's shape: CIFAR-10's, the only data then, which ModelConfig's data fields default to).
    defaults = column_defaults()
    rows = [{**defaults, **json.loads(p.read_text())} for p in RunFolder(run_dir).row_files()]
    df = pd.DataFrame(rows, columns=SCHEMA.names)
    # Row files hold float epoch seconds; the schema keeps milliseconds.
    df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True).dt.floor("ms")
    return df


def write_leaderboard(run_dir: str | Path) -> pd.DataFrame:
    path = RunFolder(run_dir).leaderboard
    df = read_rows(run_dir)
    if path.exists():
        df = pd.concat([read_leaderboard(run_dir), df], ignore_index=True)  # its missing columns: defaults
        df = df.drop_duplicates(KEY, keep="last")
    extractors = sorted(df["feature_extractor"].dropna().unique())
    if len(extractors) > 1:
        raise ValueError(f"{path}: rows scored with {extractors} cannot share a leaderboard: FIDs from different "
                         "feature extractors do not compare; score this run again with one of them in a new run")
    df = df.sort_values(["fid", *KEY], na_position="last").reset_index(drop=True)
    df["pareto"] = False
    for _, rows in df.groupby("sampler"):
        df.loc[rows.index, "pareto"] = on_front(rows, FRONT)
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return read_leaderboard(run_dir)


def read_leaderboard(run_dir: str | Path) -> pd.DataFrame:
    """The leaderboard, with every column of SCHEMA: one an earlier version wrote before a column
    existed reads a configuration field's default there, as read_rows does (CIFAR-10's shape), and
    null for a measure (search.final --rescore fills it in)."""
    board = read_table(RunFolder(run_dir).leaderboard)
    defaults = column_defaults()
    return board.assign(**{c: [defaults.get(c)] * len(board) for c in SCHEMA.names if c not in board})
