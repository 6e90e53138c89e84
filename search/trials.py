"""RUN/trials.parquet: one row per trial, read from what each trial reported to Tune (its last
result) and, for a trial that failed, its failure file. The columns are fixed: see SCHEMA and
docs/run-folder.md."""

from __future__ import annotations

import json
from math import nan
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import ExperimentAnalysis

from cvae_core.atomic import atomic_write
from results.leaderboard import config_schema
from results.pareto import on_front
from results.run_folder import FAILURE_FILE, RunFolder, trial_name
from results.study import ASHA_STOP

from .space import trial_config

SCHEMA = pa.schema([
    ("trial_id", pa.string()),
    ("trial_dir", pa.string()),
    ("status", pa.string()),  # Tune's: TERMINATED, ERROR, or another while unfinished
    ("stop_reason", pa.string()),  # see stop_reason
    ("error", pa.string()),
    ("epochs", pa.int64()),
    ("objective", pa.string()),  # the metric that ranked it
    ("score", pa.float64()),  # lower is better
    ("fid", pa.float64()),
    ("kid", pa.float64()),
    ("score_epoch", pa.int64()),  # the epoch of the latest score
    ("best_val_loss", pa.float64()),
    ("best_epoch", pa.int64()),
    ("params", pa.int64()),
    ("node_id", pa.string()),
    ("seed", pa.int64()),  # its training seed (search.seeds)
    ("config", pa.string()),  # TrialConfig.to_dict() as JSON: what the final stage retrains
    ("preset", pa.string()),
    *config_schema(),
    ("pareto", pa.bool_()),  # on the front of the search's objectives
])
DERIVED = ("pareto",)  # computed over the whole table when it is written, not from one trial


def stop_reason(status: str, last: dict, failure: dict | None) -> str:
    """Why a trial ended, from Tune's status, its last result and its failure record."""
    if status == "ERROR":
        return failure["kind"] if failure else "error"
    if status != "TERMINATED":
        return "unfinished"
    return last.get("stop") or ASHA_STOP  # the training loop says why it stopped; else ASHA stopped it


def _tune_error(trial) -> str | None:
    if trial.error_file and Path(trial.error_file).exists():
        lines = Path(trial.error_file).read_text().strip().splitlines()
        return lines[-1] if lines else "error"
    return None


def trial_row(run: RunFolder, trial) -> dict:
    """A trial's row: the columns of SCHEMA but `pareto`."""
    name = trial_name(trial.config, trial.trial_id)
    last = trial.last_result or {}
    failure = run.read_failure(name)
    config = trial_config(trial.config)
    return {
        "trial_id": trial.trial_id,
        "trial_dir": run.address(run.trial(name)),
        "status": trial.status,
        "stop_reason": stop_reason(trial.status, last, failure),
        "error": failure["reason"] if failure else _tune_error(trial),
        "epochs": max(int(last.get("epoch", 0)), (failure or {}).get("epoch", 0)),
        "objective": last.get("objective"),
        "score": float(last.get("score", nan)),
        "fid": float(last.get("fid", nan)),
        "kid": float(last.get("kid", nan)),
        "score_epoch": int(last.get("score_epoch", 0)),
        "best_val_loss": float(last.get("best_val_loss", nan)),
        "best_epoch": int(last.get("best_epoch", 0)),
        "params": last.get("params"),
        "node_id": last.get("node_id"),
        "seed": last.get("seed"),
        "config": json.dumps(config.to_dict()),
        "preset": trial.config.get("preset"),
        **config.columns(),
    }


def trials_table(run: RunFolder) -> pd.DataFrame:
    """One row per trial, best score first (the finished ones first): status, stop reason, epochs,
    score, params and the config."""
    run.pull(keep=lambda path: path.name == FAILURE_FILE)  # a run at a URI: written on the trials' nodes
    tune_trials = ExperimentAnalysis(run.tune_path, storage_filesystem=run.filesystem).trials
    rows = [trial_row(run, trial) for trial in tune_trials]
    df = pd.DataFrame(rows, columns=[name for name in SCHEMA.names if name not in DERIVED])
    if len(df):  # a trial that failed, or never finished, after a good milestone is not the best
        unfinished = (df["status"] != "TERMINATED").rename("unfinished")
        order = pd.concat([unfinished, df[["score", "best_val_loss"]]], axis=1).sort_values(
            ["unfinished", "score", "best_val_loss"], na_position="last").index
        df = df.loc[order].reset_index(drop=True)
    return df


def write_trials_table(run: RunFolder, keys: list[str]) -> pd.DataFrame:
    """trials.parquet, with `pareto`: whether a finished trial is on the front of the objectives'
    columns `keys` (for one objective: the best score)."""
    df = trials_table(run)
    finished = df["status"] == "TERMINATED"
    df["pareto"] = False
    if finished.any():
        df.loc[finished, "pareto"] = on_front(df[finished], keys)
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    atomic_write(run.trials_table, lambda tmp: pq.write_table(table, tmp))
    return df
