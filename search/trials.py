"""trials.parquet: one row per trial, built from Tune's experiment state and the trial folders."""

from __future__ import annotations

import json
from math import nan
from pathlib import Path

import pandas as pd
import torch
from ray.tune import ExperimentAnalysis

from cvae_core.atomic import atomic_write
from cvae_core.models import build_model, count_params
from cvae_core.training import read_metrics

from .space import model_config
from .trainable import FAILURE_FILE, trial_dir_name

TRIALS_FILE = "trials.parquet"


def _error_text(trial, trial_dir: Path) -> str | None:
    failure = trial_dir / FAILURE_FILE
    if failure.exists():
        return json.loads(failure.read_text())["reason"]
    if trial.error_file and Path(trial.error_file).exists():
        lines = Path(trial.error_file).read_text().strip().splitlines()
        return lines[-1] if lines else "error"
    return None


def _stop_reason(status: str, last: dict, patience: int, max_t: int, trial_dir: Path) -> str:
    if status == "ERROR":
        failure = trial_dir / FAILURE_FILE
        return json.loads(failure.read_text())["kind"] if failure.exists() else "error"
    if status != "TERMINATED":
        return "unfinished"
    if last.get("epochs_since_best", 0) >= patience:
        return "patience"
    if last.get("epoch", 0) >= max_t:
        return "max_t"
    return "asha"


def trials_table(run_dir: str | Path, patience: int, max_t: int) -> pd.DataFrame:
    """One row per trial, best score first: status, stop reason, epochs, score, params and the config."""
    run_dir = Path(run_dir)
    rows = []
    for trial in ExperimentAnalysis(str(run_dir)).trials:
        trial_dir = run_dir / trial_dir_name(trial.config, trial.trial_id)
        metrics = read_metrics(trial_dir / "metrics.jsonl")
        last = metrics[-1] if metrics else {}
        result = trial.last_result or {}
        cfg = model_config(trial.config)
        with torch.device("meta"):
            params = count_params(build_model(cfg))
        rows.append({
            "trial_id": trial.trial_id,
            "trial_dir": str(trial_dir),
            "status": trial.status,
            "stop_reason": _stop_reason(trial.status, last, patience, max_t, trial_dir),
            "error": _error_text(trial, trial_dir),
            "epochs": int(last.get("epoch", 0)),
            "objective": result.get("objective"),
            "score": float(result.get("score", nan)),
            "fid": float(result.get("fid", nan)),
            "kid": float(result.get("kid", nan)),
            "score_epoch": int(result.get("score_epoch", 0)),
            "best_val_loss": float(last.get("best_val_loss", nan)),
            "best_epoch": int(last.get("best_epoch", 0)),
            "params": params,
            "node_id": result.get("node_id"),
            "preset": trial.config.get("preset"),
            "lr": float(trial.config["lr"]),
            "batch_size": int(trial.config["batch_size"]),
            **cfg.to_dict(),
        })
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["score", "best_val_loss"], na_position="last").reset_index(drop=True)
    return df


def write_trials_table(run_dir: str | Path, patience: int, max_t: int) -> pd.DataFrame:
    df = trials_table(run_dir, patience, max_t)
    atomic_write(Path(run_dir) / TRIALS_FILE, lambda tmp: df.to_parquet(tmp, index=False))
    return df
